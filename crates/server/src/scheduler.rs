//! The scheduler: which models are loaded, in which runner, for how long.
//!
//! Models load on first use. Each has `parallel` sequences and a bounded queue beyond them
//! (past it: 503 with Retry-After). Loading a model that does not fit the memory budget or
//! the `max_loaded` count first unloads idle models, least recently used first; a model stays
//! loaded for its keep-alive after its last request. A runner that died is dropped and the
//! next request starts a fresh one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hearth_store::{LayerKind, Store};

use crate::runner::client::{socket_path, Runner, RunnerError};
use crate::runner::Spec;

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Ollama's forms: a number of seconds, or a duration string ("5m", "1h30m", "-1", "0").
    pub fn parse(v: &serde_json::Value) -> Result<KeepAlive, String> {
        match v {
            serde_json::Value::Number(n) => {
                let secs = n.as_f64().ok_or("keep_alive is not a number")?;
                Ok(if secs < 0.0 { KeepAlive::Forever } else { KeepAlive::For(Duration::from_secs_f64(secs)) })
            }
            serde_json::Value::String(s) => KeepAlive::parse_str(s),
            _ => Err("keep_alive must be a number of seconds or a duration such as \"5m\"".into()),
        }
    }

    pub fn parse_str(s: &str) -> Result<KeepAlive, String> {
        let s = s.trim();
        if s.starts_with('-') {
            return Ok(KeepAlive::Forever);
        }
        if let Ok(secs) = s.parse::<f64>() {
            return Ok(KeepAlive::For(Duration::from_secs_f64(secs)));
        }
        let mut total = 0f64;
        let mut num = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let mut unit = c.to_string();
            if c == 'm' && chars.peek() == Some(&'s') {
                unit.push(chars.next().expect("peeked"));
            }
            let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as \"5m\" or \"1h\""))?;
            num.clear();
            total += n * match unit.as_str() {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return Err(format!("{s:?} is not a duration such as \"5m\" or \"1h\"")),
            };
        }
        if !num.is_empty() {
            return Err(format!("{s:?} has a number without a unit (s, m, h)"));
        }
        Ok(KeepAlive::For(Duration::from_secs_f64(total)))
    }
}

/// The scheduler's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The binary that runs runners (`hearth runner`).
    pub exe: PathBuf,
    pub socket_dir: PathBuf,
    pub parallel: u32,
    /// Context per sequence unless a request asks for another.
    pub ctx_size: u32,
    pub batch_size: u32,
    pub ubatch_size: u32,
    pub threads: Option<usize>,
    pub gpu_layers: Option<i32>,
    pub flash_attn: String,
    pub mmap: bool,
    pub max_loaded: usize,
    /// Requests waiting beyond the `parallel` running ones, per model.
    pub max_queue: usize,
    /// Bytes all loaded models may use together.
    pub memory_budget: u64,
    pub keep_alive: KeepAlive,
    pub load_timeout: Duration,
    pub rpc_servers: Vec<String>,
    /// `--tensor-split` over the offload devices; empty: planned.
    pub tensor_split: Vec<f32>,
    /// Workers to place models over (`--workers`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("model '{0}' not found, try pulling it first")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("server busy: {0}")]
    Busy(String),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("{0}")]
    Store(String),
    /// The model does not fit on this machine and its workers.
    #[error("{0}")]
    TooLarge(String),
}

/// Options a request may set for loading.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub num_ctx: Option<u32>,
    pub keep_alive: Option<KeepAlive>,
}

/// A loaded model.
pub struct Loaded {
    pub name: String,
    pub digest: String,
    pub runner: Runner,
    pub ctx_per_seq: u32,
    pub estimate: u64,
    pub loaded_at: SystemTime,
    /// Workers holding part of the model, and the tunnels to them (closed on unload).
    pub workers: Vec<String>,
    pub placement: Option<hearth_gguf::plan::Placement>,
    pub tunnels: Vec<hearth_cluster::Tunnel>,
    in_flight: AtomicUsize,
    state: Mutex<LoadedState>,
}

struct LoadedState {
    last_used: Instant,
    keep_alive: KeepAlive,
    /// When an idle model is unloaded; `None` while in use or kept forever.
    expires: Option<SystemTime>,
}

impl Loaded {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// When it will be unloaded if nothing uses it (far future when kept forever).
    pub fn expires_at(&self) -> SystemTime {
        let s = self.state.lock().expect("not poisoned");
        match (s.expires, s.keep_alive) {
            (Some(t), _) => t,
            (None, KeepAlive::Forever) => SystemTime::now() + Duration::from_secs(10 * 365 * 86400),
            (None, KeepAlive::For(d)) => SystemTime::now() + d,
        }
    }
}

/// A model in use by one request; dropping it ends the use and starts the keep-alive.
pub struct Lease {
    pub model: Arc<Loaded>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let left = self.model.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        let mut s = self.model.state.lock().expect("not poisoned");
        s.last_used = Instant::now();
        if left == 0 {
            s.expires = match s.keep_alive {
                KeepAlive::Forever => None,
                KeepAlive::For(d) => Some(SystemTime::now() + d),
            };
        }
    }
}

pub struct Scheduler {
    pub config: Config,
    pub store: Store,
    models: Mutex<HashMap<String, Arc<Loaded>>>,
    /// One load at a time: loads compete for memory and CPU.
    load_lock: tokio::sync::Mutex<()>,
    /// Models being loaded right now (for /health).
    loading: AtomicUsize,
    /// Models whose runner died with a worker, and why; until they load again.
    unavailable: Mutex<HashMap<String, String>>,
}

impl Scheduler {
    pub fn new(config: Config, store: Store) -> Arc<Scheduler> {
        let _ = std::fs::create_dir_all(&config.socket_dir);
        Arc::new(Scheduler { config, store, models: Mutex::new(HashMap::new()), load_lock: tokio::sync::Mutex::new(()), loading: AtomicUsize::new(0), unavailable: Mutex::new(HashMap::new()) })
    }

    /// Models that lost a worker, with why (shown by /api/ps and /api/cluster).
    pub fn unavailable(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.unavailable.lock().expect("not poisoned").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort();
        v
    }

    /// Records that `name`'s runner died because of a worker.
    pub fn mark_unavailable(&self, name: &str, why: &str) {
        self.unavailable.lock().expect("not poisoned").insert(name.to_string(), why.to_string());
    }

    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Relaxed) > 0
    }

    /// The loaded models, most recently used first.
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        let mut v: Vec<_> = self.models.lock().expect("not poisoned").values().cloned().collect();
        v.sort_by_key(|m| std::cmp::Reverse(m.state.lock().expect("not poisoned").last_used));
        v
    }

    /// The model `name` (loading it if needed) for one request.
    pub async fn acquire(&self, name: &str, opts: &LoadOptions) -> Result<Lease, SchedError> {
        let name = hearth_store::reference::normalize_name(name).map_err(|e| SchedError::BadRequest(e.to_string()))?;
        let manifest = self.store.get(&name).map_err(|e| match e {
            hearth_store::StoreError::NotFound { .. } => SchedError::NotFound(name.clone()),
            other => SchedError::Store(other.to_string()),
        })?;
        let digest = manifest.model_layers().next().map(|l| l.digest.clone()).unwrap_or_default();
        let ctx = opts.num_ctx.unwrap_or(self.config.ctx_size).max(64);
        if let Some(lease) = self.try_lease(&name, &digest, Some(ctx), opts)? {
            return Ok(lease);
        }
        let _guard = self.load_lock.lock().await;
        // Someone may have loaded it while we waited.
        if let Some(lease) = self.try_lease(&name, &digest, Some(ctx), opts)? {
            return Ok(lease);
        }
        // A different context, or a dead runner: unload the old one first.
        let old = self.models.lock().expect("not poisoned").remove(&name);
        if let Some(old) = old {
            if old.in_flight() > 0 && old.runner.alive() {
                self.models.lock().expect("not poisoned").insert(name.clone(), old);
                return Err(SchedError::Busy(format!("{name} is loaded with another context size and busy; try again shortly")));
            }
            old.runner.stop().await;
        }
        let path = self.store.model_file(&manifest).map_err(|e| SchedError::Store(e.to_string()))?;
        let gguf = hearth_gguf::Gguf::open(&path).map_err(|e| SchedError::Store(format!("{name}: {e}")))?;
        let parallel = self.config.parallel.max(1);
        let plan = hearth_gguf::fit::ContextPlan {
            parallel: parallel as u64,
            flash_attn: self.config.flash_attn != "off",
            ..hearth_gguf::fit::ContextPlan::f16(ctx as u64 * parallel as u64, self.config.ubatch_size as u64)
        };
        let placed = match self.config.cluster.as_ref().filter(|c| !c.workers.is_empty()) {
            Some(cluster) => {
                let mut shards = Vec::new();
                for l in manifest.model_layers() {
                    let p = self.store.blob_path(&l.digest).map_err(|e| SchedError::Store(e.to_string()))?;
                    shards.push(hearth_gguf::Gguf::open(&p).map_err(|e| SchedError::Store(format!("{name}: {e}")))?);
                }
                let digests: Vec<String> = manifest.model_layers().map(|l| l.digest.clone()).collect();
                let split = hearth_gguf::plan::Split {
                    gpu_layers: self.config.gpu_layers.filter(|&n| n >= 0).map(|n| n as u32),
                    tensor_split: self.config.tensor_split.clone(),
                };
                Some(cluster.place(&name, &digests, &shards, &plan, self.config.memory_budget, &split).await.map_err(SchedError::TooLarge)?)
            }
            None => None,
        };
        let estimate = match &placed {
            // This machine's share.
            Some(p) => p.placement.devices[0].total,
            None => {
                // The weights of every shard (the header read is the first one's), plus KV and compute.
                let e = hearth_gguf::fit::estimate(std::slice::from_ref(&gguf), &plan);
                e.kv_cache + e.compute + manifest.model_layers().map(|l| l.size).sum::<u64>()
            }
        };
        self.make_room(&name, estimate).await?;
        let builtin_template = match gguf.get_str("tokenizer.chat_template") {
            Some(_) => None,
            None => manifest
                .layer(LayerKind::Template)
                .and_then(|l| self.store.read_text(l).ok())
                .and_then(|go| match hearth_engine::ChatTemplate::from_go_template(&go) {
                    Some(hearth_engine::ChatTemplate::Builtin(n)) => Some(n),
                    _ => None,
                }),
        };
        let spec = Spec {
            model: path,
            socket: socket_path(&self.config.socket_dir, &name),
            ctx_per_seq: ctx,
            parallel,
            batch_size: self.config.batch_size,
            ubatch_size: self.config.ubatch_size,
            threads: self.config.threads,
            gpu_layers: placed.as_ref().map_or(self.config.gpu_layers, |p| Some(p.gpu_layers)),
            flash_attn: self.config.flash_attn.clone(),
            mmap: self.config.mmap,
            builtin_template,
            rpc_servers: match &placed {
                Some(p) => p.tunnels.iter().map(|t| t.local_addr().to_string()).collect(),
                None => self.config.rpc_servers.clone(),
            },
            tensor_split: placed.as_ref().map_or(self.config.tensor_split.clone(), |p| p.tensor_split.clone()),
        };
        if let Some(p) = &placed {
            tracing::info!(model = %name, workers = ?p.workers, "placement:\n{}", p.placement.table());
        }
        self.loading.fetch_add(1, Ordering::Relaxed);
        tracing::info!(model = %name, ctx, parallel, estimate, "loading");
        let runner = Runner::spawn(&self.config.exe, &name, spec, self.config.load_timeout).await;
        self.loading.fetch_sub(1, Ordering::Relaxed);
        let runner = runner?;
        self.unavailable.lock().expect("not poisoned").remove(&name);
        let (workers, placement, tunnels) = match placed {
            Some(p) => (p.workers, Some(p.placement), p.tunnels),
            None => (Vec::new(), None, Vec::new()),
        };
        let loaded = Arc::new(Loaded {
            name: name.clone(),
            digest,
            runner,
            ctx_per_seq: ctx,
            estimate,
            loaded_at: SystemTime::now(),
            workers,
            placement,
            tunnels,
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(LoadedState { last_used: Instant::now(), keep_alive: self.config.keep_alive, expires: None }),
        });
        self.models.lock().expect("not poisoned").insert(name.clone(), loaded);
        self.try_lease(&name, "", None, opts)?.ok_or_else(|| SchedError::Busy("the model was unloaded while loading".into()))
    }

    fn try_lease(&self, name: &str, digest: &str, ctx: Option<u32>, opts: &LoadOptions) -> Result<Option<Lease>, SchedError> {
        let models = self.models.lock().expect("not poisoned");
        let Some(m) = models.get(name) else { return Ok(None) };
        if !m.runner.alive() || (!digest.is_empty() && m.digest != digest) || ctx.is_some_and(|c| c != m.ctx_per_seq) {
            return Ok(None);
        }
        let limit = m.runner.info.parallel.max(1) as usize + self.config.max_queue;
        let now = m.in_flight.fetch_add(1, Ordering::Relaxed);
        if now >= limit {
            m.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(SchedError::Busy(format!("{name} has {now} requests running or queued (limit {limit})")));
        }
        let mut s = m.state.lock().expect("not poisoned");
        s.last_used = Instant::now();
        s.expires = None;
        if let Some(k) = opts.keep_alive {
            s.keep_alive = k;
        }
        drop(s);
        Ok(Some(Lease { model: m.clone() }))
    }

    /// Unloads idle models, least recently used first, until `need` more bytes and one more
    /// model fit.
    async fn make_room(&self, name: &str, need: u64) -> Result<(), SchedError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (used, count, victim) = {
                let models = self.models.lock().expect("not poisoned");
                let used: u64 = models.values().map(|m| m.estimate).sum();
                let victim = models
                    .values()
                    .filter(|m| m.in_flight() == 0)
                    .min_by_key(|m| m.state.lock().expect("not poisoned").last_used)
                    .cloned();
                (used, models.len(), victim)
            };
            let fits = used + need <= self.config.memory_budget && count < self.config.max_loaded.max(1);
            if fits {
                return Ok(());
            }
            if count == 0 {
                return Err(SchedError::Busy(format!(
                    "{name} needs about {} MiB but the memory budget is {} MiB (raise --memory-budget or use a smaller context)",
                    need >> 20,
                    self.config.memory_budget >> 20
                )));
            }
            match victim {
                Some(v) => {
                    tracing::info!(model = %v.name, for_model = %name, "unloading to make room");
                    self.models.lock().expect("not poisoned").remove(&v.name);
                    v.runner.stop().await;
                }
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                None => {
                    return Err(SchedError::Busy(format!(
                        "no memory for {name} while the loaded models are all busy; try again shortly"
                    )))
                }
            }
        }
    }

    /// Unloads `name` now (if idle) or when its last request ends.
    pub async fn unload(&self, name: &str) -> bool {
        let Ok(name) = hearth_store::reference::normalize_name(name) else { return false };
        let m = self.models.lock().expect("not poisoned").get(&name).cloned();
        let Some(m) = m else { return false };
        if m.in_flight() == 0 {
            self.models.lock().expect("not poisoned").remove(&name);
            m.runner.stop().await;
        } else {
            let mut s = m.state.lock().expect("not poisoned");
            s.keep_alive = KeepAlive::For(Duration::ZERO);
        }
        true
    }

    /// Unloads idle models whose keep-alive ran out, and forgets dead runners. An idle model
    /// whose connection to a worker broke (the worker died or became unreachable) is unloaded
    /// too and shown as unavailable: llama.cpp would only notice at its next use. Run it often.
    pub async fn reap(&self) {
        let now = SystemTime::now();
        let expired: Vec<Arc<Loaded>> = {
            let mut models = self.models.lock().expect("not poisoned");
            for m in models.values().filter(|m| m.in_flight() == 0) {
                let broken: Vec<&str> = m.tunnels.iter().filter(|t| t.stats().broken > 0).map(|t| t.worker()).collect();
                if !broken.is_empty() && m.runner.alive() {
                    let why = format!(
                        "{} lost worker {} (its connection broke); the next request re-plans without it, or reloads once it is back",
                        m.name,
                        broken.join(", ")
                    );
                    tracing::warn!("{why}");
                    self.mark_unavailable(&m.name, &why);
                    m.runner.mark_dead();
                }
            }
            let names: Vec<String> = models
                .values()
                .filter(|m| {
                    let dead = !m.runner.alive();
                    let s = m.state.lock().expect("not poisoned");
                    dead || (m.in_flight() == 0 && s.expires.is_some_and(|t| t <= now))
                })
                .map(|m| m.name.clone())
                .collect();
            names.iter().filter_map(|n| models.remove(n)).collect()
        };
        for m in expired {
            tracing::info!(model = %m.name, "unloading (keep-alive expired or runner gone)");
            m.runner.stop().await;
        }
    }

    /// Stops every runner.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Loaded>> = self.models.lock().expect("not poisoned").drain().map(|(_, m)| m).collect();
        for m in all {
            m.runner.stop().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_forms() {
        let j = |v: serde_json::Value| KeepAlive::parse(&v);
        assert_eq!(j(serde_json::json!(0)), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(j(serde_json::json!(30)), Ok(KeepAlive::For(Duration::from_secs(30))));
        assert_eq!(j(serde_json::json!(-1)), Ok(KeepAlive::Forever));
        assert_eq!(j(serde_json::json!("5m")), Ok(KeepAlive::For(Duration::from_secs(300))));
        assert_eq!(j(serde_json::json!("1h30m")), Ok(KeepAlive::For(Duration::from_secs(5400))));
        assert_eq!(j(serde_json::json!("-1")), Ok(KeepAlive::Forever));
        assert_eq!(j(serde_json::json!("-1m")), Ok(KeepAlive::Forever));
        assert_eq!(j(serde_json::json!("0")), Ok(KeepAlive::For(Duration::ZERO)));
        assert_eq!(j(serde_json::json!("250ms")), Ok(KeepAlive::For(Duration::from_millis(250))));
        assert!(j(serde_json::json!("5 minutes")).is_err());
        assert!(j(serde_json::json!(true)).is_err());
    }
}
