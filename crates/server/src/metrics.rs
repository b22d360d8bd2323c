//! Prometheus metrics at `/metrics`: requests by route and status, tokens, time to first token
//! and per-token latency, loaded models and their memory, requests in flight, speculative
//! decoding's drafted and confirmed tokens per model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use hearth_runtime::Loaded;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device: String,
}

/// Cheap to clone; every clone updates the same metrics.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    requests: Family<RouteLabels, Counter>,
    prompt_tokens: Counter,
    generated_tokens: Counter,
    ttft: Histogram,
    token_latency: Histogram,
    loaded: Gauge,
    memory: Family<ModelLabels, Gauge>,
    in_flight: Family<ModelLabels, Gauge>,
    drafted: Family<ModelLabels, Counter>,
    accepted: Family<ModelLabels, Counter>,
    acceptance: Family<ModelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    device_used: Family<DeviceLabels, Gauge>,
    device_budget: Family<DeviceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hearth");
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        let prompt_tokens = Counter::default();
        registry.register("prompt_tokens", "Prompt tokens processed", prompt_tokens.clone());
        let generated_tokens = Counter::default();
        registry.register("generated_tokens", "Tokens generated", generated_tokens.clone());
        let ttft = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register("time_to_first_token_seconds", "Time from request to first token", ttft.clone());
        let token_latency = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("token_latency_seconds", "Time between generated tokens", token_latency.clone());
        let loaded = Gauge::default();
        registry.register("loaded_models", "Models loaded in runners", loaded.clone());
        let memory = Family::<ModelLabels, Gauge>::default();
        registry.register("model_memory_bytes", "Estimated memory of each loaded model", memory.clone());
        let in_flight = Family::<ModelLabels, Gauge>::default();
        registry.register("queue_depth", "Requests running or waiting, per loaded model", in_flight.clone());
        let drafted = Family::<ModelLabels, Counter>::default();
        registry.register("draft_tokens", "Tokens drafted by speculative decoding, per model", drafted.clone());
        let accepted = Family::<ModelLabels, Counter>::default();
        registry.register("draft_accepted_tokens", "Drafted tokens the model confirmed, per model", accepted.clone());
        let acceptance = Family::<ModelLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("draft_acceptance_ratio", "Share of drafted tokens confirmed since the server started, per model", acceptance.clone());
        let device_used = Family::<DeviceLabels, Gauge>::default();
        registry.register("device_memory_used_bytes", "Memory the loaded models hold per local budget (RAM, each GPU)", device_used.clone());
        let device_budget = Family::<DeviceLabels, Gauge>::default();
        registry.register("device_memory_budget_bytes", "Memory models may use per local budget (--memory-budget, --device-memory)", device_budget.clone());
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                prompt_tokens,
                generated_tokens,
                ttft,
                token_latency,
                loaded,
                memory,
                in_flight,
                drafted,
                accepted,
                acceptance,
                device_used,
                device_budget,
            }),
        }
    }

    pub fn request(&self, route: &str, status: u16) {
        self.inner.requests.get_or_create(&RouteLabels { route: route.to_string(), status }).inc();
    }

    pub fn tokens(&self, prompt: u64, generated: u64) {
        self.inner.prompt_tokens.inc_by(prompt);
        self.inner.generated_tokens.inc_by(generated);
    }

    /// Speculative decoding's counts of one request of `model`.
    pub fn drafts(&self, model: &str, drafted: u64, accepted: u64) {
        if drafted == 0 {
            return;
        }
        let l = ModelLabels { model: model.to_string() };
        let d = self.inner.drafted.get_or_create(&l).inc_by(drafted) + drafted;
        let a = self.inner.accepted.get_or_create(&l).inc_by(accepted) + accepted;
        self.inner.acceptance.get_or_create(&l).set(a as f64 / d as f64);
    }

    pub fn ttft(&self, d: Duration) {
        self.inner.ttft.observe(d.as_secs_f64());
    }

    pub fn token_latency(&self, d: Duration) {
        self.inner.token_latency.observe(d.as_secs_f64());
    }

    /// The text exposition, with the model gauges refreshed from `loaded` and the device
    /// gauges from `budgets` (device, bytes).
    pub fn render(&self, loaded: &[Arc<Loaded>], budgets: &[(String, u64)]) -> String {
        self.inner.device_used.clear();
        self.inner.device_budget.clear();
        for (device, budget) in budgets {
            let l = DeviceLabels { device: device.clone() };
            self.inner.device_budget.get_or_create(&l).set(*budget as i64);
            self.inner.device_used.get_or_create(&l).set(loaded.iter().map(|m| m.uses(device)).sum::<u64>() as i64);
        }
        self.inner.loaded.set(loaded.len() as i64);
        self.inner.memory.clear();
        self.inner.in_flight.clear();
        for m in loaded {
            let l = ModelLabels { model: m.name.clone() };
            self.inner.memory.get_or_create(&l).set(m.estimate as i64);
            self.inner.in_flight.get_or_create(&l).set(m.in_flight() as i64);
        }
        let mut out = String::new();
        let registry = self.inner.registry.lock().expect("not poisoned");
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// A label for metrics that does not explode with model names.
pub fn route_label(path: &str) -> String {
    let known = [
        "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/tags", "/api/ps", "/api/show", "/api/pull",
        "/api/delete", "/api/copy", "/api/create", "/api/version", "/v1/chat/completions", "/v1/completions",
        "/v1/embeddings", "/health", "/metrics",
    ];
    if let Some(k) = known.iter().find(|k| path == **k) {
        return k.to_string();
    }
    if path.starts_with("/api/blobs/") {
        return "/api/blobs".into();
    }
    if path.starts_with("/v1/models") {
        return "/v1/models".into();
    }
    if path == "/" { "/".into() } else { "other".into() }
}
