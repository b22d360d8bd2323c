//! `hearth serve` (the server) and `hearth runner` (the child process that holds one model).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_runtime::placement::Cluster;
use hearth_runtime::{Config as SchedulerConfig, KeepAlive, Runtime, Scheduler};
use hearth_server::{AppState, ServerConfig};

use crate::args::ServeArgs;
use crate::units::{parse_bytes, parse_host, parse_host_port};

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024)
}

/// The workers from `--workers` / `HEARTH_WORKERS`, if any.
pub fn cluster(w: &crate::args::WorkersArgs) -> Result<Option<Arc<Cluster>>> {
    let workers: Vec<String> = w.workers.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if workers.is_empty() {
        return Ok(None);
    }
    let mut addrs = Vec::new();
    for w in &workers {
        addrs.push(parse_host_port(w, crate::units::WORKER_PORT).with_context(|| format!("--workers: {w:?}"))?.to_string());
    }
    let token = hearth_cluster::ClusterToken::from_option(w.token.as_deref().filter(|t| !t.is_empty()));
    Ok(Some(Arc::new(Cluster::new(addrs, token, crate::units::versions()))))
}

/// The GPUs among `devices`, each with its free memory as its budget.
pub fn gpu_budgets(devices: Vec<hearth_engine::devices::Device>) -> Vec<hearth_runtime::gpus::Gpu> {
    devices
        .into_iter()
        .filter(|d| d.is_gpu())
        .map(|d| hearth_runtime::gpus::Gpu { name: d.name, kind: d.kind, shared: d.shared, budget: d.free })
        .collect()
}

/// This machine's GPUs with what models may use of each: free memory now, capped by
/// `--device-memory NAME=SIZE` items. Asked of a child process (`hearth devices --json`), as
/// the runners load models in theirs: a GPU backend initialised in the server would hold
/// memory on every GPU for nothing (a CUDA context is hundreds of MB).
pub fn gpus(caps: &[String]) -> Result<Vec<hearth_runtime::gpus::Gpu>> {
    let exe = std::env::current_exe().context("cannot find the hearth binary to list devices")?;
    let out = std::process::Command::new(exe)
        .args(["devices", "--json"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .context("cannot run `hearth devices`")?;
    #[derive(serde::Deserialize)]
    struct Listed {
        devices: Vec<hearth_engine::devices::Device>,
    }
    // A GPU driver that crashes while listing must not keep the server from serving on the CPU.
    let listed: Listed = match serde_json::from_slice(&out.stdout) {
        Ok(l) if out.status.success() => l,
        _ => {
            tracing::warn!(status = %out.status, "`hearth devices --json` failed: serving without GPUs (run `hearth devices` to see why)");
            Listed { devices: Vec::new() }
        }
    };
    let mut gpus = gpu_budgets(listed.devices);
    let mut parsed = Vec::new();
    for c in caps {
        let (name, size) = c.split_once('=').with_context(|| format!("--device-memory: {c:?} is not NAME=SIZE (e.g. Vulkan0=6G)"))?;
        parsed.push((name.trim().to_string(), parse_bytes(size).with_context(|| format!("--device-memory: {c:?}"))?));
    }
    hearth_runtime::gpus::apply_caps(&mut gpus, &parsed)?;
    Ok(gpus)
}

/// The server's state from the flags.
fn state(a: &ServeArgs) -> Result<Arc<AppState>> {
    let keep_alive = KeepAlive::parse_str(&a.keep_alive).map_err(|e| anyhow::anyhow!("--keep-alive: {e}"))?;
    let memory_budget = match &a.memory_budget {
        Some(b) => parse_bytes(b)?,
        None => total_memory() / 10 * 8,
    };
    let store = crate::models::store()?;
    let exe = std::env::current_exe().context("cannot find the hearth binary to start runners")?;
    let sched = Scheduler::new(SchedulerConfig {
        exe,
        socket_parent: std::env::temp_dir(),
        parallel: a.parallel.max(1),
        load: {
            let mut load = a.load.clone();
            if let Some(d) = &load.model_draft {
                load.model_draft = Some(crate::models::resolve(d).with_context(|| format!("--model-draft {d}"))?.path.to_string_lossy().into_owned());
            }
            load
        },
        max_loaded: a.max_loaded_models.max(1),
        max_queue: a.max_queue,
        memory_budget,
        keep_alive,
        load_timeout: Duration::from_secs(a.load_timeout),
        cluster: cluster(&a.cluster)?,
        gpus: {
            let g = gpus(&a.device_memory)?;
            hearth_runtime::gpus::for_load(&g, &a.load)?;
            for x in &g {
                tracing::info!(gpu = %x.name, kind = %x.kind, shared = x.shared, budget = x.budget, "GPU");
            }
            g
        },
    })?;
    let db = match crate::env::var(crate::env::DB) {
        Some(p) => std::path::PathBuf::from(p),
        None => hearth_server::conversations::default_path(store.root()),
    };
    Ok(Arc::new(AppState {
        runtime: Runtime::new(sched, store),
        config: ServerConfig { api_key: a.api_key.clone(), cors_origins: a.cors_origin.clone(), max_body: a.max_body, ..ServerConfig::new(db) },
        metrics: hearth_server::metrics::Metrics::new(),
        started: Instant::now(),
    }))
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let next = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
            bail!("{addr} is already in use (is Ollama or another hearth serving there?); try --host {next}");
        }
        Err(e) => bail!("cannot listen on {addr}: {e}"),
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let addr = parse_host(&a.host)?;
    let state = state(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = bind(addr).await?;
        if !addr.ip().is_loopback() && a.api_key.is_none() {
            tracing::warn!("listening on {addr}, reachable from other machines, without --api-key");
        }
        eprintln!("hearth {} listening on http://{} (Ollama and OpenAI APIs)", env!("CARGO_PKG_VERSION"), listener.local_addr()?);
        if let Some(cluster) = state.runtime.sched.config.cluster.clone() {
            // Say now what the workers answer, in the background: loads ask them again.
            tokio::spawn(async move {
                for w in cluster.status().await {
                    match (w.reachable, &w.error) {
                        (true, _) => eprintln!("worker {}: {} device(s), {:.1} GiB free, {:.1} ms", w.address, w.devices.len(), w.free as f64 / (1u64 << 30) as f64, w.rtt_ms.unwrap_or(0.0)),
                        (false, e) => tracing::warn!("worker {}: {}", w.address, e.as_deref().unwrap_or("unreachable")),
                    }
                }
            });
        }
        hearth_server::run(listener, state, shutdown_signal()).await.context("the server failed")
    })
}

/// `hearth serve`'s settings from these flags and the defaults (for servers started in-process).
pub fn default_args(flags: &[&str]) -> Result<ServeArgs> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let argv = std::iter::once("serve").chain(flags.iter().copied());
    Ok(<Wrap as clap::Parser>::try_parse_from(argv).context("server settings")?.serve)
}

/// A server on a free loopback port, in this process, until the returned handle is dropped
/// (`hearth bench` without `--url`).
pub struct Background {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn background(a: ServeArgs) -> Result<Background> {
    let state = state(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let listener = rt.block_on(bind(SocketAddr::from(([127, 0, 0, 1], 0))))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _ = rt.block_on(hearth_server::run(listener, state, async move {
            let _ = rx.await;
        }));
    });
    Ok(Background { url, stop: Some(tx), thread: Some(thread) })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("shutting down");
}
