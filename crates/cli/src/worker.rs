//! `hearth worker`: lends this machine's devices to a controller (`hearth serve --workers`).
//!
//! Two listeners: ggml's own RPC server from the vendored llama.cpp on a loopback port nobody
//! else can reach, and the public port, where `hearth_cluster`'s gate checks the cluster token
//! over an encrypted channel before a single byte reaches ggml. The gate also answers control
//! requests: `status` (devices, memory, connections) and `preload` (fill ggml's tensor cache
//! from the model in this machine's own store, so a load sends hashes instead of weights).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hearth_cluster::{ClusterToken, Control, ControlContext, Gate};
use crate::units::versions;
use hearth_gguf::Gguf;
use serde_json::{json, Value};

use crate::args::WorkerArgs;

/// The worker's public port unless `--listen` says otherwise.
pub use crate::units::WORKER_PORT as DEFAULT_PORT;

/// ggml RPC sends tensors above this size by hash first (`HASH_THRESHOLD` in ggml-rpc.cpp).
pub const HASH_THRESHOLD: u64 = 10 * 1024 * 1024;

/// ggml RPC's hash of tensor bytes: FNV-1a, 64 bits.
pub fn fnv1a64(data: &[u8], mut hash: u64) -> u64 {
    for &b in data {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

pub const FNV_OFFSET: u64 = 0xcbf29ce484222325;


/// What a preload did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Preloaded {
    pub tensors: usize,
    pub bytes: u64,
    /// Tensors already in the cache.
    pub present: usize,
}

/// Writes ggml's cache file (`cache_dir/<fnv hash, 16 hex digits>`) for every tensor of `gguf`
/// at `path` above the hash threshold that `wanted` selects. An index per file
/// (`cache_dir/hearth-index/<file name>.json`, tensor name -> hash) spares re-hashing.
pub fn preload_file(path: &Path, gguf: &Gguf, cache_dir: &Path, wanted: &dyn Fn(&str) -> bool, progress: &dyn Fn(u64)) -> Result<Preloaded> {
    let index_dir = cache_dir.join("hearth-index");
    std::fs::create_dir_all(&index_dir).with_context(|| format!("cannot create {}", index_dir.display()))?;
    let key = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let index_path = index_dir.join(format!("{key}.json"));
    let mut index: BTreeMap<String, String> = std::fs::read(&index_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Preloaded::default();
    let mut buf = vec![0u8; 4 << 20];
    for t in &gguf.tensors {
        let Some(size) = t.n_bytes() else { continue };
        if size <= HASH_THRESHOLD || !wanted(&t.name) {
            continue;
        }
        if let Some(h) = index.get(&t.name) {
            if cache_dir.join(h).metadata().is_ok_and(|m| m.len() == size) {
                out.present += 1;
                progress(size);
                continue;
            }
        }
        file.seek(SeekFrom::Start(gguf.data_offset + t.offset))?;
        let tmp = tempfile::NamedTempFile::new_in(cache_dir).with_context(|| format!("cannot write in {}", cache_dir.display()))?;
        let mut w = std::io::BufWriter::new(tmp);
        let (mut left, mut hash) = (size, FNV_OFFSET);
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..n]).with_context(|| format!("{} ends inside tensor {}", path.display(), t.name))?;
            hash = fnv1a64(&buf[..n], hash);
            w.write_all(&buf[..n])?;
            left -= n as u64;
            progress(n as u64);
        }
        let name = format!("{hash:016x}");
        let tmp = w.into_inner().map_err(|e| e.into_error())?;
        tmp.persist(cache_dir.join(&name)).map_err(|e| e.error)?;
        index.insert(t.name.clone(), name);
        out.tensors += 1;
        out.bytes += size;
    }
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index)?)?;
    Ok(out)
}

/// Which tensors of a model a device holding `layers` (first, count) and maybe the output gets.
pub fn tensor_filter(first: u32, count: u32, output: bool, tied: bool) -> impl Fn(&str) -> bool {
    move |name: &str| {
        if let Some(i) = name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<u32>().ok()) {
            return i >= first && i < first + count;
        }
        output && (name.starts_with("output") || (tied && name == "token_embd.weight"))
    }
}

/// Preloads the whole model (or the layers asked) from this machine's store.
fn preload_model(store: &hearth_store::Store, model: &str, cache_dir: &Path, filter: Option<&dyn Fn(&str) -> bool>, show: bool) -> Result<Preloaded> {
    let manifest = store.get(model).with_context(|| format!("{model} is not in this machine's store (hearth pull it here first)"))?;
    let paths: Vec<PathBuf> = manifest.model_layers().map(|l| store.blob_path(&l.digest)).collect::<Result<_, _>>()?;
    let bytes: u64 = manifest.model_layers().map(|l| l.size).sum();
    let progress = crate::progress::Progress::new(!show);
    let id = format!("preloading {model}");
    use hearth_store::Reporter;
    progress.start(&id, Some(bytes), 0);
    let total = preload_files(&paths, cache_dir, filter.unwrap_or(&|_| true), &|n| progress.advance(&id, n))?;
    progress.finish(&id);
    Ok(total)
}

/// [`preload_file`] over every file of a model, summed.
fn preload_files(paths: &[PathBuf], cache_dir: &Path, wanted: &dyn Fn(&str) -> bool, progress: &dyn Fn(u64)) -> Result<Preloaded> {
    let mut total = Preloaded::default();
    for path in paths {
        let gguf = Gguf::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let p = preload_file(path, &gguf, cache_dir, wanted, progress)?;
        total.tensors += p.tensors;
        total.bytes += p.bytes;
        total.present += p.present;
    }
    Ok(total)
}

/// What the worker knows about itself, for `status`.
struct Worker {
    mem_limit: Option<u64>,
    devices: Vec<String>,
    cache_dir: PathBuf,
    threads: usize,
    store: Option<hearth_store::Store>,
    /// Models controllers said they load here (by `preload`), with when.
    hosts: Mutex<BTreeMap<String, Instant>>,
}

impl Worker {
    fn status(&self, connections: usize) -> Value {
        let mut devices: Vec<hearth_engine::rpc::LocalDevice> =
            hearth_engine::rpc::local_devices().into_iter().filter(|d| self.devices.iter().any(|n| n.eq_ignore_ascii_case(&d.name))).collect();
        // ggml reports the CPU's total RAM as free; what is available now is less.
        let available = crate::fit::available_memory();
        for d in devices.iter_mut().filter(|d| d.kind == "cpu" && available > 0) {
            d.free = d.free.min(available);
        }
        if let Some(limit) = self.mem_limit {
            for d in &mut devices {
                d.free = d.free.min(limit);
                d.total = d.total.min(limit);
            }
        }
        let mut hosts = self.hosts.lock().expect("not poisoned");
        if connections == 0 {
            // Nobody holds a model here any more.
            hosts.retain(|_, t| t.elapsed() < Duration::from_secs(60));
        }
        let v = versions();
        json!({
            "hearth_version": v.hearth,
            "rpc_version": v.rpc_proto,
            "free": devices.iter().map(|d| d.free).sum::<u64>(),
            "total": devices.iter().map(|d| d.total).sum::<u64>(),
            "devices": devices,
            "connections": connections,
            "hosts": hosts.keys().collect::<Vec<_>>(),
            "threads": self.threads,
            "cache_dir": self.cache_dir,
        })
    }

    /// `{"op":"preload","model":NAME,"digests":[...],"first_layer":a,"n_layers":n,"output":bool,"tied":bool}`:
    /// fills the cache from the local store when the same files (by digest) are here.
    fn preload(&self, req: &Value, peer: SocketAddr) -> Result<Value, String> {
        let name = req.get("model").and_then(Value::as_str).unwrap_or("?").to_string();
        tracing::info!(controller = %peer, model = %name, first_layer = req["first_layer"].as_u64(), n_layers = req["n_layers"].as_u64(), output = req["output"].as_bool(), "a controller loads a model here");
        self.hosts.lock().expect("not poisoned").insert(name.clone(), Instant::now());
        let Some(store) = &self.store else { return Ok(json!({"found": false})) };
        let digests: Vec<String> = req.get("digests").and_then(Value::as_array).map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect()).unwrap_or_default();
        let num = |k: &str| req.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
        let filter = tensor_filter(num("first_layer"), num("n_layers"), req.get("output").and_then(Value::as_bool).unwrap_or(false), req.get("tied").and_then(Value::as_bool).unwrap_or(false));
        let mut paths = Vec::new();
        for d in &digests {
            match store.blob_path(d) {
                Ok(p) if p.is_file() => paths.push(p),
                _ => return Ok(json!({"found": false})),
            }
        }
        let start = Instant::now();
        let total = preload_files(&paths, &self.cache_dir, &filter, &|_| {}).map_err(|e| format!("{e:#}"))?;
        tracing::info!(model = %name, tensors = total.tensors, present = total.present, mb = total.bytes / 1_000_000, secs = start.elapsed().as_secs_f64(), "preloaded from the local store");
        Ok(json!({"found": !digests.is_empty(), "preloaded": total}))
    }
}

struct WorkerControl(Arc<Worker>);

impl Control for WorkerControl {
    fn handle(&self, request: Value, cx: &ControlContext) -> Result<Value, String> {
        match request.get("op").and_then(Value::as_str) {
            Some("status") => Ok(self.0.status(cx.stats.rpc_active)),
            Some("preload") => self.0.preload(&request, cx.peer),
            other => Err(format!("unknown request {other:?} (this worker knows status and preload)")),
        }
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn free_loopback_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub fn worker(a: WorkerArgs) -> Result<()> {
    let token = ClusterToken::from_option(a.token.as_deref().filter(|t| !t.is_empty()));
    let listen = match &a.listen {
        Some(l) => crate::units::parse_host_port(l, DEFAULT_PORT)?,
        None if token.is_authenticated() => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
    };
    if !is_loopback(&listen) && !token.is_authenticated() {
        if !a.insecure {
            bail!(
                "refusing to listen on {listen} without a cluster token: anyone who can reach it could use this machine.\n\
                 Set HEARTH_CLUSTER_TOKEN (or --token) here and on the controller, or listen on 127.0.0.1, or pass --insecure."
            );
        }
        tracing::warn!("listening on {listen} WITHOUT a cluster token (--insecure): any peer that reaches this port can use this machine");
    }
    let mem_limit = a.mem.as_deref().map(crate::units::parse_bytes).transpose()?;
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()));
    let cache_dir = match &a.cache_dir {
        Some(d) => d.clone(),
        None => crate::models::store_root().parent().map(|p| p.join("rpc-cache")).unwrap_or_else(|| PathBuf::from("rpc-cache")),
    };
    std::fs::create_dir_all(&cache_dir).with_context(|| format!("cannot create the cache directory {}", cache_dir.display()))?;
    let devices = if a.devices.is_empty() { hearth_engine::rpc::default_serve_devices() } else { a.devices.clone() };
    let known = hearth_engine::rpc::local_devices();
    for d in &devices {
        if !known.iter().any(|k| k.name.eq_ignore_ascii_case(d)) {
            let names: Vec<&str> = known.iter().map(|k| k.name.as_str()).collect();
            bail!("--devices: no device named {d:?} here (devices: {})", names.join(", "));
        }
    }
    let store = crate::models::store().ok();
    for model in &a.preload {
        let store = store.as_ref().context("--preload needs this machine's model store")?;
        let p = preload_model(store, model, &cache_dir, None, true)?;
        eprintln!("preloaded {model}: {} tensors ({:.1} MB) hashed into {}, {} already there", p.tensors, p.bytes as f64 / 1e6, cache_dir.display(), p.present);
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let public = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen} (is another worker running? choose another port with --listen)"))?;
    let backend = free_loopback_port()?;
    let private = token.is_authenticated();
    {
        let endpoint = backend.to_string();
        let cache = cache_dir.to_string_lossy().into_owned();
        let devices = devices.clone();
        std::thread::Builder::new().name("ggml-rpc".into()).spawn(move || {
            // With a token, nothing but the gate (this process) may reach ggml; without one,
            // the gate lets anyone through anyway.
            if let Err(e) = hearth_engine::rpc::serve(&endpoint, threads, Some(&cache), &devices, private) {
                tracing::error!("{e}");
                std::process::exit(2);
            }
        })?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(backend).is_err() {
        if Instant::now() > deadline {
            bail!("ggml's RPC server did not start on {backend}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let w = Arc::new(Worker {
        mem_limit,
        devices: devices.clone(),
        cache_dir: cache_dir.clone(),
        threads,
        store,
        hosts: Mutex::new(BTreeMap::new()),
    });
    let gate = Gate::new(token, backend, versions(), Arc::new(WorkerControl(w.clone())));
    let status = w.status(0);
    let bound = public.local_addr()?;
    eprintln!(
        "hearth worker {} listening on {bound} ({}), devices {} ({:.1} GiB free), cache {}",
        env!("CARGO_PKG_VERSION"),
        if token_authenticated(&a) { "token required" } else { "no token" },
        devices.join(","),
        status["free"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64,
        cache_dir.display()
    );
    rt.block_on(async move {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        gate.serve(public, shutdown).await
    });
    eprintln!("worker stopped");
    Ok(())
}

/// Whether the worker requires a token: the same rule as the gate's (a whitespace-only token
/// is no token), so the banner never claims more than the gate enforces.
fn token_authenticated(a: &WorkerArgs) -> bool {
    ClusterToken::from_option(a.token.as_deref()).is_authenticated()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // FNV-1a 64 test vectors (Fowler/Noll/Vo).
        assert_eq!(fnv1a64(b"", FNV_OFFSET), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a", FNV_OFFSET), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar", FNV_OFFSET), 0x85944171f73967e8);
        // Chunked hashing equals one pass.
        assert_eq!(fnv1a64(b"bar", fnv1a64(b"foo", FNV_OFFSET)), fnv1a64(b"foobar", FNV_OFFSET));
    }

    #[test]
    fn the_filter_picks_a_devices_share() {
        let f = tensor_filter(4, 2, false, false);
        assert!(f("blk.4.attn_q.weight") && f("blk.5.ffn_up.weight"));
        assert!(!f("blk.6.ffn_up.weight") && !f("blk.3.ffn_up.weight") && !f("output.weight") && !f("token_embd.weight"));
        let f = tensor_filter(6, 2, true, true);
        assert!(f("output.weight") && f("output_norm.weight") && f("token_embd.weight"));
    }
}
