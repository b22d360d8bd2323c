//! `hearth serve` (the server) and `hearth runner` (the child process that holds one model).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_server::{AppState, KeepAlive, Scheduler, SchedulerConfig, ServerConfig};

use crate::args::ServeArgs;

/// `HOST:PORT`, `HOST` (port 11434) or `http://HOST:PORT`.
pub fn parse_host(s: &str) -> Result<SocketAddr> {
    parse_host_port(s, 11434)
}

/// `HOST:PORT`, or `HOST` with `default_port`.
pub fn parse_host_port(s: &str, default_port: u16) -> Result<SocketAddr> {
    let s = s.trim().trim_start_matches("http://").trim_end_matches('/');
    let with_port = if s.parse::<SocketAddr>().is_ok() || s.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        s.to_string()
    } else {
        format!("{s}:{default_port}")
    };
    use std::net::ToSocketAddrs;
    with_port
        .to_socket_addrs()
        .with_context(|| format!("{s:?} is not an address (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("{s:?} resolves to no address"))
}

/// `12G`, `800M`, `1.5G`, or a number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: f64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1.0,
                "K" => 1024.0,
                "M" => 1024.0 * 1024.0,
                "G" => 1024.0 * 1024.0 * 1024.0,
                "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                _ => bail!("{s:?} is not a size (use e.g. 800M or 12G)"),
            };
            (&s[..i], m)
        }
        None => (s, 1.0),
    };
    let n: f64 = num.trim().parse().with_context(|| format!("{s:?} is not a size (use e.g. 800M or 12G)"))?;
    Ok((n * mult) as u64)
}

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
pub fn cluster(w: &crate::args::WorkersArgs) -> Result<Option<Arc<hearth_server::cluster::Cluster>>> {
    let workers: Vec<String> = w.workers.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if workers.is_empty() {
        return Ok(None);
    }
    let mut addrs = Vec::new();
    for w in &workers {
        addrs.push(parse_host_port(w, crate::worker::DEFAULT_PORT).with_context(|| format!("--workers: {w:?}"))?.to_string());
    }
    let token = hearth_cluster::ClusterToken::from_option(w.token.as_deref().filter(|t| !t.is_empty()));
    Ok(Some(Arc::new(hearth_server::cluster::Cluster::new(addrs, token, crate::worker::versions()))))
}

/// The server's state from the flags.
fn state(a: &ServeArgs) -> Result<(Arc<AppState>, std::path::PathBuf)> {
    let keep_alive = KeepAlive::parse_str(&a.keep_alive).map_err(|e| anyhow::anyhow!("--keep-alive: {e}"))?;
    let memory_budget = match &a.memory_budget {
        Some(b) => parse_bytes(b)?,
        None => total_memory() / 10 * 8,
    };
    let store = crate::models::store()?;
    let exe = std::env::current_exe().context("cannot find the hearth binary to start runners")?;
    let socket_dir = std::env::temp_dir().join(format!("hearth-{}-{:x}", std::process::id(), Instant::now().elapsed().as_nanos()));
    let sched = Scheduler::new(
        SchedulerConfig {
            exe,
            socket_dir: socket_dir.clone(),
            parallel: a.parallel.max(1),
            ctx_size: a.ctx_size,
            batch_size: a.batch_size,
            ubatch_size: a.ubatch_size,
            threads: a.threads,
            gpu_layers: a.gpu_layers,
            flash_attn: match a.flash_attn {
                hearth_engine::FlashAttn::On => "on",
                hearth_engine::FlashAttn::Off => "off",
                hearth_engine::FlashAttn::Auto => "auto",
            }
            .into(),
            mmap: !a.no_mmap,
            max_loaded: a.max_loaded_models.max(1),
            max_queue: a.max_queue,
            memory_budget,
            keep_alive,
            load_timeout: Duration::from_secs(a.load_timeout),
            rpc_servers: a.offload.rpc.clone(),
            tensor_split: a.offload.tensor_split.clone(),
            cluster: cluster(&a.offload.cluster)?,
        },
        store.clone(),
    );
    let state = Arc::new(AppState {
        sched,
        store,
        config: ServerConfig { api_key: a.api_key.clone(), cors_origins: a.cors_origin.clone(), max_body: a.max_body },
        metrics: hearth_server::metrics::Metrics::new(),
        started: Instant::now(),
    });
    Ok((state, socket_dir))
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
    let (state, socket_dir) = state(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        let listener = bind(addr).await?;
        if !addr.ip().is_loopback() && a.api_key.is_none() {
            tracing::warn!("listening on {addr}, reachable from other machines, without --api-key");
        }
        eprintln!("hearth {} listening on http://{} (Ollama and OpenAI APIs)", env!("CARGO_PKG_VERSION"), listener.local_addr()?);
        if let Some(cluster) = state.sched.config.cluster.clone() {
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
    });
    let _ = std::fs::remove_dir_all(&socket_dir);
    result
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
    socket_dir: std::path::PathBuf,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

pub fn background(a: ServeArgs) -> Result<Background> {
    let (state, socket_dir) = state(&a)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let listener = rt.block_on(bind(SocketAddr::from(([127, 0, 0, 1], 0))))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _ = rt.block_on(hearth_server::run(listener, state, async move {
            let _ = rx.await;
        }));
    });
    Ok(Background { url, stop: Some(tx), thread: Some(thread), socket_dir })
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

pub fn runner(spec: &str) -> Result<()> {
    hearth_server::runner::child::main(spec).map_err(|e| anyhow::anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_sizes() {
        assert_eq!(parse_host("127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(parse_host("http://127.0.0.1:9/").unwrap().port(), 9);
        assert_eq!(parse_host("127.0.0.1").unwrap().port(), 11434);
        assert!(parse_host("no such host:x").is_err());
        assert_eq!(parse_bytes("800M").unwrap(), 800 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("12GiB").unwrap(), 12 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
    }
}
