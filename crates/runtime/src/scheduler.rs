//! The scheduler: which models are loaded, in which runner, for how long.
//!
//! Models load on first use. Each has `parallel` sequences and a bounded queue beyond them
//! (past it: [`RuntimeError::Overloaded`]). Loading a model first unloads idle models, least
//! recently used first, until its estimate fits the memory budget and the `max_loaded` count;
//! a model whose estimate exceeds the whole budget is [`RuntimeError::TooLarge`] at once (it
//! would never fit). A model stays loaded for its keep-alive after its last request. A runner
//! that died is dropped and the next request starts a fresh one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hearth_protocol::runner::Spec;
use hearth_protocol::LoadSettings;

use crate::gpus::{for_load, plan_devices, Gpu, RAM};
use crate::model::{context_plan, split, Model};
use crate::placement::Cluster;
use crate::runner::{socket_path, Runner};
use crate::{KeepAlive, RuntimeError};

/// How long a client should wait before retrying an [`RuntimeError::Overloaded`] request.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The scheduler's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The binary that runs runners, as `EXE runner --spec JSON`.
    pub exe: PathBuf,
    /// Where the runners' sockets go: a private directory is made inside it.
    pub socket_parent: PathBuf,
    /// Sequences decoded together per model.
    pub parallel: u32,
    /// How models load; `ctx_size` is the context per sequence unless a request sets one.
    pub load: LoadSettings,
    pub max_loaded: usize,
    /// Requests waiting beyond the `parallel` running ones, per model.
    pub max_queue: usize,
    /// Bytes all loaded models may use together (this machine's share when placed over workers).
    pub memory_budget: u64,
    pub keep_alive: KeepAlive,
    pub load_timeout: Duration,
    /// Workers to place models over (`--workers`).
    pub cluster: Option<Arc<Cluster>>,
    /// This machine's GPUs with their budgets (empty: a CPU-only machine or build).
    pub gpus: Vec<Gpu>,
}

/// See [`Scheduler::grown_ctx`]: `flag` is the server's `-c`, `train` the model's training
/// context (0: unknown).
fn grown_ctx(flag: Option<u32>, loaded: u32, train: u32, tokens: u32) -> Option<u32> {
    if flag.is_some() {
        return None;
    }
    let want = tokens.saturating_add(tokens / 4).max(8192).checked_next_power_of_two().unwrap_or(u32::MAX);
    let ctx = if train > 0 { want.min(train) } else { want };
    (ctx > loaded && ctx > tokens).then_some(ctx)
}

/// Options a request may set for loading.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Context per sequence (Ollama's `num_ctx`).
    pub num_ctx: Option<u32>,
    pub keep_alive: Option<KeepAlive>,
}

/// A loaded model.
pub struct Loaded {
    pub name: String,
    pub digest: String,
    pub runner: Runner,
    pub ctx_per_seq: u32,
    /// Bytes of RAM it uses on this machine (weights, KV cache, compute; its share when placed
    /// over workers or GPUs; integrated GPUs' share included).
    pub estimate: u64,
    /// Bytes it holds per local budget: [`RAM`] and each GPU it uses.
    pub usage: Vec<(String, u64)>,
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
    /// Bytes of the whole model wherever it is (this machine, its GPUs, the workers).
    pub fn size(&self) -> u64 {
        self.placement.as_ref().map_or(self.estimate, |p| p.devices.iter().map(|d| d.total).sum())
    }

    /// Bytes of it on GPUs, this machine's and the workers' (Ollama's `size_vram`; a worker's
    /// CPU is not one).
    pub fn size_vram(&self) -> u64 {
        self.placement.as_ref().map_or(0, |p| p.devices.iter().skip(1).filter(|d| !d.name.ends_with(" CPU")).map(|d| d.total).sum())
    }

    /// Bytes it holds on `device` ([`RAM`] or a GPU's name).
    pub fn uses(&self, device: &str) -> u64 {
        self.usage.iter().filter(|(d, _)| d == device).map(|(_, b)| *b).sum()
    }

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

/// A model file's header, read lean (long arrays skipped) off the async threads: any file,
/// however hostile, costs bounded memory and blocks no request.
async fn lean_header(path: &std::path::Path) -> Result<hearth_gguf::Gguf, hearth_gguf::GgufError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || hearth_gguf::Gguf::open_lean(&path))
        .await
        .unwrap_or_else(|e| Err(hearth_gguf::GgufError::Malformed { offset: 0, message: format!("the header reader failed: {e}") }))
}

/// Counts one in an atomic while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(n: &'a AtomicUsize) -> Counted<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Scheduler {
    pub config: Config,
    /// The runners' sockets: made by us, mode 0700, an unpredictable name; removed on drop.
    socket_dir: tempfile::TempDir,
    models: Mutex<HashMap<String, Arc<Loaded>>>,
    /// One load at a time: loads compete for memory and CPU.
    load_lock: tokio::sync::Mutex<()>,
    /// Models being loaded right now (for /health).
    loading: AtomicUsize,
    /// Models whose runner died with a worker, and why; until they load again.
    unavailable: Mutex<HashMap<String, String>>,
}

impl Scheduler {
    /// A scheduler with no model loaded. Fails only when its private socket directory cannot
    /// be made.
    pub fn new(config: Config) -> Result<Scheduler, RuntimeError> {
        use std::os::unix::fs::PermissionsExt;
        let socket_dir = tempfile::Builder::new()
            .prefix("hearth-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&config.socket_parent)
            .map_err(|e| RuntimeError::Internal(format!("cannot make a private directory for runner sockets in {}: {e}", config.socket_parent.display())))?;
        Ok(Scheduler {
            config,
            socket_dir,
            models: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            loading: AtomicUsize::new(0),
            unavailable: Mutex::new(HashMap::new()),
        })
    }

    /// The private directory of the runners' sockets.
    pub fn socket_dir(&self) -> &std::path::Path {
        self.socket_dir.path()
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

    /// Whether `name` (normalized) is loaded with a live runner.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.models.lock().expect("not poisoned").get(name).is_some_and(|m| m.runner.alive())
    }

    /// The model (loading it if needed) for one request. A context asked for (the request's
    /// `num_ctx`, else the server's `-c`) must be the loaded one's; without either, whatever
    /// context the model is loaded with serves (the default, or one grown for a long prompt:
    /// see [`grown_ctx`](Self::grown_ctx)).
    pub async fn acquire(&self, model: &Model, opts: &LoadOptions) -> Result<Lease, RuntimeError> {
        let name: &str = &model.name;
        let wanted = opts.num_ctx.or(self.config.load.ctx_size).map(|c| c.max(64));
        let ctx = wanted.unwrap_or(LoadSettings::DEFAULT_CTX);
        if let Some(lease) = self.try_lease(name, &model.digest, wanted, opts)? {
            return Ok(lease);
        }
        let _guard = self.load_lock.lock().await;
        // Someone may have loaded it while we waited.
        if let Some(lease) = self.try_lease(name, &model.digest, wanted, opts)? {
            return Ok(lease);
        }
        let parallel = self.config.parallel.max(1);
        // The settings this model loads with: the server's, then what is stored with it.
        let mut load = self.config.load.clone();
        load.ctx_size = Some(ctx);
        if let Some(p) = &model.params {
            crate::options::apply_load_params(p, model.draft_file.as_deref(), &mut load).map_err(|e| match e {
                RuntimeError::Invalid { field, why } => RuntimeError::Invalid { field: format!("{field} (stored with the model {name})"), why },
                other => other,
            })?;
        }
        let plan = context_plan(&load, ctx, parallel);
        let store_err = |e: hearth_gguf::GgufError| RuntimeError::Store(format!("{name}: {e}"));
        // Whether it can ever fit, before anything is unloaded for it (a request for a huge
        // context must not evict the model that serves everyone else, then fail).
        let local_estimate = {
            let gguf = lean_header(&model.path).await.map_err(store_err)?;
            // The weights of every shard (the header read is the first one's), plus KV and compute.
            let e = hearth_gguf::fit::estimate(std::slice::from_ref(&gguf), &plan);
            e.kv_cache + e.compute + model.manifest.model_layers().map(|l| l.size).sum::<u64>()
        };
        let gpus = for_load(&self.config.gpus, &load)?;
        let clustered = self.config.cluster.as_ref().is_some_and(|c| !c.workers.is_empty());
        // On GPUs: the plan over this machine's RAM and GPUs, each with its whole budget (what
        // it needs when it has the machine to itself); others are unloaded for it below.
        let mut shards = Vec::new();
        if clustered || !gpus.is_empty() {
            for p in &model.shards {
                shards.push(lean_header(p).await.map_err(store_err)?);
            }
        }
        let local_plan = if !clustered && !gpus.is_empty() {
            let mut devices = vec![hearth_gguf::plan::Device::new("this machine", self.config.memory_budget)];
            devices.extend(plan_devices(&gpus));
            let p = hearth_gguf::plan::place(&shards, &plan, &devices, &split(&load));
            if !p.fits {
                return Err(RuntimeError::TooLarge {
                    model: name.to_string(),
                    needed: p.devices.iter().map(|d| d.total).sum(),
                    available: devices.iter().filter(|d| !d.shared).map(|d| d.available).sum(),
                    per_device: Some(format!(
                        "it does not fit in this machine's RAM and GPUs (raise --memory-budget or --device-memory, use a smaller context or quantization, or add workers):\n{}",
                        p.table().trim_end()
                    )),
                });
            }
            Some(p)
        } else {
            None
        };
        if !clustered && local_plan.is_none() {
            self.check_fits(name, local_estimate)?;
        }
        // A different context, or a dead runner: unload the old one now.
        let old = self.models.lock().expect("not poisoned").remove(name);
        if let Some(old) = old {
            if old.in_flight() > 0 && old.runner.alive() {
                self.models.lock().expect("not poisoned").insert(name.to_string(), old);
                return Err(RuntimeError::Overloaded {
                    why: format!("{name} is loaded with another context size and busy; try again shortly"),
                    retry_after: RETRY_AFTER,
                });
            }
            old.runner.stop().await;
        }
        let placed = match self.config.cluster.as_ref().filter(|c| !c.workers.is_empty()) {
            Some(cluster) => {
                let digests: Vec<String> = model.manifest.model_layers().map(|l| l.digest.clone()).collect();
                let mut split = split(&load);
                // With MTP drafts and no GPU here, the engine keeps the block and the output
                // head on this machine (`hearth_engine`'s `mtp_units_here`): count them in RAM.
                if load.spec() == hearth_protocol::Spec::Mtp && gpus.is_empty() {
                    split.cpu_tensors.extend(shards.first().map(hearth_gguf::plan::mtp_on_host).unwrap_or_default());
                }
                Some(cluster.place(name, &digests, &shards, &plan, self.config.memory_budget, &plan_devices(&gpus), &split).await?)
            }
            None => None,
        };
        let placement = placed.as_ref().map(|p| &p.placement).or(local_plan.as_ref());
        // What it holds of each local budget: RAM (the host's share and what integrated GPUs
        // hold), and each GPU.
        let usage: Vec<(String, u64)> = match placement {
            Some(p) => {
                let mut u = vec![(RAM.to_string(), p.devices[0].total + p.devices[0].shared_ram)];
                for d in p.devices.iter().filter(|d| d.gpu && d.total > 0) {
                    u.push((d.name.clone(), d.total));
                }
                u
            }
            None => vec![(RAM.to_string(), local_estimate)],
        };
        // A draft model is loaded beside it, on this machine: on its first GPU, else in RAM.
        let mut usage = usage;
        if let Some(d) = load.model_draft.as_deref().filter(|_| load.spec() == hearth_protocol::Spec::Draft) {
            let g = lean_header(std::path::Path::new(d)).await.map_err(|e| RuntimeError::Store(format!("the draft model {d}: {e}")))?;
            let need = hearth_gguf::fit::estimate(std::slice::from_ref(&g), &plan).total;
            let at = usage.iter().position(|(dev, _)| gpus.first().is_some_and(|g| &g.name == dev)).unwrap_or(0);
            usage[at].1 += need;
            if at != 0 && gpus[0].shared {
                usage[0].1 += need;
            }
        }
        let estimate = usage[0].1;
        self.make_room(name, &usage).await?;
        if let Some(p) = &placed {
            load.rpc = p.tunnels.iter().map(|t| t.local_addr().to_string()).collect();
            load.gpu_layers = Some(p.gpu_layers);
            load.tensor_split = p.tensor_split.clone();
            tracing::info!(model = %name, workers = ?p.workers, "placement:\n{}", p.placement.table());
        }
        if let Some(p) = &local_plan {
            load.gpu_layers = Some(p.gpu_layers as i32);
            load.tensor_split = p.tensor_split.clone();
            tracing::info!(model = %name, "placement:\n{}", p.table());
        }
        if let Some(p) = placement.filter(|p| p.n_cpu_moe > 0) {
            load.n_cpu_moe = p.n_cpu_moe;
        }
        let spec = Spec {
            model: model.path.clone(),
            socket: socket_path(self.socket_dir(), name),
            parallel,
            load,
            go_template: model.go_template.clone(),
        };
        tracing::info!(model = %name, ctx, parallel, estimate, "loading");
        let runner = {
            // Counted while loading, even when the request that started the load goes away
            // and this future is dropped mid-way.
            let _loading = Counted::new(&self.loading);
            Runner::spawn(&self.config.exe, name, spec, self.config.load_timeout).await?
        };
        self.unavailable.lock().expect("not poisoned").remove(name);
        let (workers, placement, tunnels) = match placed {
            Some(p) => (p.workers, Some(p.placement), p.tunnels),
            None => (Vec::new(), local_plan, Vec::new()),
        };
        let loaded = Arc::new(Loaded {
            name: name.to_string(),
            digest: model.digest.clone(),
            runner,
            ctx_per_seq: ctx,
            estimate,
            usage,
            loaded_at: SystemTime::now(),
            workers,
            placement,
            tunnels,
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(LoadedState { last_used: Instant::now(), keep_alive: self.config.keep_alive, expires: None }),
        });
        self.models.lock().expect("not poisoned").insert(name.to_string(), loaded);
        self.try_lease(name, "", None, opts)?
            .ok_or_else(|| RuntimeError::Overloaded { why: "the model was unloaded while loading".into(), retry_after: RETRY_AFTER })
    }

    fn try_lease(&self, name: &str, digest: &str, ctx: Option<u32>, opts: &LoadOptions) -> Result<Option<Lease>, RuntimeError> {
        let models = self.models.lock().expect("not poisoned");
        let Some(m) = models.get(name) else { return Ok(None) };
        if !m.runner.alive() || (!digest.is_empty() && m.digest != digest) || ctx.is_some_and(|c| c != m.ctx_per_seq) {
            return Ok(None);
        }
        let limit = m.runner.info.parallel.max(1) as usize + self.config.max_queue;
        let now = m.in_flight.fetch_add(1, Ordering::Relaxed);
        if now >= limit {
            m.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(RuntimeError::Overloaded { why: format!("{name} has {now} requests running or queued (limit {limit})"), retry_after: RETRY_AFTER });
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

    /// The context to load `loaded` with again for a prompt of `tokens` that does not fit in
    /// it, when the server chose its context (no `-c`): the next power of two with a quarter
    /// to spare for the answer and the turns that follow (at least 8192), at most the model's
    /// training context. `None` when that is no larger than the loaded one, or `-c` was given.
    pub fn grown_ctx(&self, loaded: &Loaded, tokens: u32) -> Option<u32> {
        grown_ctx(self.config.load.ctx_size, loaded.ctx_per_seq, loaded.runner.info.n_ctx_train, tokens)
    }

    /// More than the whole budget never fits: that is not worth waiting (or evicting) for.
    fn check_fits(&self, name: &str, need: u64) -> Result<(), RuntimeError> {
        let budget = self.config.memory_budget;
        if need > budget {
            return Err(RuntimeError::TooLarge {
                model: name.to_string(),
                needed: need,
                available: budget,
                per_device: Some(
                    "the memory budget is this machine's (raise --memory-budget, use a smaller context or quantization, or add workers)".into(),
                ),
            });
        }
        Ok(())
    }

    /// Every local budget: [`RAM`], then each GPU, with the bytes models may use there.
    pub fn budgets(&self) -> Vec<(String, u64)> {
        let mut v = vec![(RAM.to_string(), self.config.memory_budget)];
        v.extend(self.config.gpus.iter().map(|g| (g.name.clone(), g.budget)));
        v
    }

    /// The budget of a local device: [`RAM`] or a GPU.
    fn budget(&self, device: &str) -> u64 {
        if device == RAM {
            return self.config.memory_budget;
        }
        self.config.gpus.iter().find(|g| g.name == device).map_or(0, |g| g.budget)
    }

    /// Unloads idle models, least recently used first, until `need` (bytes per device) and one
    /// more model fit. Only models holding memory on a device that lacks room are unloaded for
    /// it (any idle one when only the count of loaded models is the limit).
    async fn make_room(&self, name: &str, need: &[(String, u64)]) -> Result<(), RuntimeError> {
        for (device, bytes) in need {
            let budget = self.budget(device);
            if *bytes > budget {
                if device == RAM {
                    self.check_fits(name, *bytes)?;
                }
                return Err(RuntimeError::TooLarge {
                    model: name.to_string(),
                    needed: *bytes,
                    available: budget,
                    per_device: Some(format!("{device} has {} for models (--device-memory)", crate::gib(budget))),
                });
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (lacking, count, victim) = {
                let models = self.models.lock().expect("not poisoned");
                let lacking: Vec<&str> = need
                    .iter()
                    .filter(|(d, b)| *b > 0 && models.values().map(|m| m.uses(d)).sum::<u64>() + b > self.budget(d))
                    .map(|(d, _)| d.as_str())
                    .collect();
                let victim = models
                    .values()
                    .filter(|m| m.in_flight() == 0)
                    .filter(|m| lacking.is_empty() || lacking.iter().any(|d| m.uses(d) > 0))
                    .min_by_key(|m| m.state.lock().expect("not poisoned").last_used)
                    .cloned();
                (lacking.iter().map(|d| d.to_string()).collect::<Vec<_>>(), models.len(), victim)
            };
            if lacking.is_empty() && count < self.config.max_loaded.max(1) {
                return Ok(());
            }
            match victim {
                Some(v) => {
                    tracing::info!(model = %v.name, for_model = %name, lacking = ?lacking, "unloading to make room");
                    self.models.lock().expect("not poisoned").remove(&v.name);
                    v.runner.stop().await;
                }
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                None => {
                    return Err(RuntimeError::Overloaded {
                        why: format!(
                            "no memory for {name} on {} while the models there are all busy; try again shortly",
                            if lacking.is_empty() { "this machine".to_string() } else { lacking.join(", ") }
                        ),
                        retry_after: RETRY_AFTER,
                    })
                }
            }
        }
    }

    /// Unloads `name` (normalized) now (if idle) or when its last request ends.
    pub async fn unload(&self, name: &str) -> bool {
        let m = self.models.lock().expect("not poisoned").get(name).cloned();
        let Some(m) = m else { return false };
        if m.in_flight() == 0 {
            self.models.lock().expect("not poisoned").remove(name);
            m.runner.stop().await;
        } else {
            let mut s = m.state.lock().expect("not poisoned");
            s.keep_alive = KeepAlive::For(Duration::ZERO);
        }
        true
    }

    /// Why `model`'s runner died, naming the worker it lost when that is the reason (the model
    /// is then marked unavailable until it loads again).
    pub async fn why_died(&self, model: &Loaded, died: String) -> String {
        let Some(cluster) = self.config.cluster.as_ref().filter(|_| !model.workers.is_empty()) else { return died };
        let lost = cluster.unreachable(&model.workers).await;
        if lost.is_empty() {
            return died;
        }
        let names: Vec<String> = lost.iter().map(|(w, e)| format!("worker {w} ({e})")).collect();
        let why = format!(
            "{} lost {}: the request was cut off; the server is fine and the next request re-plans without it, or reloads once it is back",
            model.name,
            names.join(", ")
        );
        self.mark_unavailable(&model.name, &why);
        tracing::warn!("{why}");
        why
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
    fn a_context_the_server_chose_grows_for_a_long_prompt_up_to_the_models_own() {
        // A quarter to spare, a power of two, at least 8192, at most the training context.
        assert_eq!(grown_ctx(None, 4096, 131072, 4500), Some(8192));
        assert_eq!(grown_ctx(None, 4096, 131072, 9539), Some(16384));
        assert_eq!(grown_ctx(None, 4096, 131072, 21075), Some(32768));
        assert_eq!(grown_ctx(None, 4096, 8192, 21075), None); // beyond the model's own
        assert_eq!(grown_ctx(None, 4096, 8192, 7000), Some(8192));
        assert_eq!(grown_ctx(None, 8192, 8192, 8100), None); // already as large as it gets
        assert_eq!(grown_ctx(None, 4096, 0, 5000), Some(8192)); // training context unknown
        assert_eq!(grown_ctx(None, 4096, 4096, 5000), None);
        // -c is the user's choice: kept.
        assert_eq!(grown_ctx(Some(4096), 4096, 131072, 4500), None);
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn config(parent: &std::path::Path) -> Config {
        Config {
            exe: "/nonexistent".into(),
            socket_parent: parent.to_path_buf(),
            parallel: 1,
            load: LoadSettings::default(),
            max_loaded: 1,
            max_queue: 0,
            memory_budget: 1 << 30,
            keep_alive: KeepAlive::For(Duration::ZERO),
            load_timeout: Duration::from_secs(1),
            cluster: None,
            gpus: Vec::new(),
        }
    }

    /// Another local user must not be able to pre-create (and so read and answer) the runner
    /// sockets: the directory is new, unpredictable, ours and 0700, and goes away with us.
    #[test]
    fn the_runner_socket_directory_is_private_and_unpredictable() {
        let parent = tempfile::tempdir().unwrap();
        let (a, b) = (Scheduler::new(config(parent.path())).unwrap(), Scheduler::new(config(parent.path())).unwrap());
        assert_ne!(a.socket_dir(), b.socket_dir());
        for s in [&a, &b] {
            let m = std::fs::metadata(s.socket_dir()).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o700, "{}", s.socket_dir().display());
            assert_eq!(m.uid(), nix::unistd::getuid().as_raw());
            let name = s.socket_dir().file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.contains(&std::process::id().to_string()), "the name does not derive from the pid: {name}");
        }
        let dir = a.socket_dir().to_path_buf();
        drop(a);
        assert!(!dir.exists(), "removed with the scheduler");
    }
}
