//! `hearth fit`: whether a model fits, before loading (or downloading) it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use hearth_gguf::fit::{estimate, max_context_by};
use hearth_gguf::plan::{place, Device};
use hearth_gguf::Gguf;

use crate::args::FitArgs;

/// The headers of a local model (store name or path) with all its shards, if it is local.
fn local_headers(model: &str) -> Result<Option<Vec<Gguf>>> {
    let p = Path::new(model);
    if p.is_file() {
        let first = Gguf::open(p).with_context(|| format!("cannot read {}", p.display()))?;
        let mut out = vec![first];
        let name = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some((prefix, _, count)) = hearth_store::split::parse_shard_name(&name) {
            for no in 2..=count {
                let shard = p.with_file_name(hearth_store::split::shard_name(prefix, no, count));
                out.push(Gguf::open(&shard).with_context(|| format!("cannot read shard {}", shard.display()))?);
            }
        }
        return Ok(Some(out));
    }
    let store = crate::models::store()?;
    let Ok(manifest) = store.get(model) else { return Ok(None) };
    let mut out = Vec::new();
    for l in manifest.model_layers() {
        let path = store.blob_path(&l.digest)?;
        out.push(Gguf::open(&path).with_context(|| format!("cannot read {}", path.display()))?);
    }
    Ok(Some(out))
}

/// MemAvailable from /proc/meminfo: what this machine can give a model now.
pub(crate) fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn gib(n: u64) -> String {
    format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
}

/// `--devices "cpu=24GiB,gpu0=120GiB"`: the devices in order, the first being the host. A name
/// `gpu:NAME` or one starting with gpu, cuda, vulkan, rocm or metal is a GPU of the host
/// (filled first); `igpu:NAME` an integrated GPU sharing the host's RAM; others are workers'
/// devices.
fn parse_devices(spec: &str) -> Result<Vec<Device>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, size) = part.split_once('=').with_context(|| format!("--devices: {part:?} is not NAME=SIZE (e.g. cpu=24GiB)"))?;
        let available = crate::units::parse_bytes(size).with_context(|| format!("--devices: {part:?}"))?;
        let name = name.trim();
        let lower = name.to_ascii_lowercase();
        let d = if let Some(n) = lower.strip_prefix("igpu:").map(|_| &name[5..]) {
            Device::gpu(n, available, true)
        } else if let Some(n) = lower.strip_prefix("gpu:").map(|_| &name[4..]) {
            Device::gpu(n, available, false)
        } else if !out.is_empty() && ["gpu", "cuda", "vulkan", "rocm", "metal"].iter().any(|p| lower.starts_with(p)) {
            Device::gpu(name, available, false)
        } else {
            Device::new(name, available)
        };
        out.push(d);
    }
    if out.is_empty() {
        bail!("--devices lists no device (e.g. cpu=24GiB,w1=128GiB)");
    }
    Ok(out)
}

/// This machine's GPUs as `--device` picks them, with their free memory now.
pub(crate) fn local_gpus(load: &hearth_protocol::LoadSettings) -> Result<Vec<Device>> {
    let gpus = crate::serve::gpu_budgets(hearth_engine::devices::list());
    Ok(hearth_runtime::gpus::plan_devices(&hearth_runtime::gpus::for_load(&gpus, load)?))
}

/// This machine, then the devices of the workers given (asked for their free memory now), then
/// this machine's GPUs.
fn real_devices(a: &FitArgs) -> Result<(Vec<Device>, Vec<String>)> {
    let gpus = local_gpus(&a.load)?;
    let Some(cluster) = crate::serve::cluster(&a.cluster)? else {
        let mut d = vec![Device::new("this machine", available_memory())];
        d.extend(gpus);
        return Ok((d, Vec::new()));
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let statuses = rt.block_on(cluster.status());
    let notes = statuses
        .iter()
        .filter(|w| !w.reachable)
        .map(|w| format!("worker {} is unreachable ({}): planned without it", w.address, w.error.as_deref().unwrap_or("")))
        .collect();
    let up: Vec<_> = statuses.iter().filter(|w| w.reachable).collect();
    Ok((hearth_runtime::placement::devices(available_memory(), &up, &gpus).0, notes))
}

/// `hearth run` on this machine's GPUs: the plan `serve` would make (the RAM available now,
/// each GPU's free memory) written into `load` as llama.cpp's parameters. Nothing changes when
/// the user placed layers (`-ngl`, `-ts`), there is no GPU, or RPC servers are given.
pub(crate) fn plan_for_run(model: &str, load: &mut hearth_protocol::LoadSettings) -> Result<Option<hearth_gguf::plan::Placement>> {
    if load.gpu_layers.is_some() || !load.tensor_split.is_empty() || !load.rpc.is_empty() {
        return Ok(None);
    }
    let gpus = local_gpus(load)?;
    if gpus.is_empty() {
        return Ok(None);
    }
    let Some(shards) = local_headers(model)? else { return Ok(None) };
    let ctx = match load.ctx() {
        0 => shards[0].arch_u64("context_length").unwrap_or(4096) as u32,
        n => n,
    };
    let plan = hearth_runtime::context_plan(load, ctx, 1);
    let mut devices = vec![Device::new("this machine", available_memory())];
    devices.extend(gpus);
    let p = place(&shards, &plan, &devices, &hearth_runtime::split(load));
    if !p.fits {
        tracing::warn!("the model may not fit in this machine's RAM and GPUs:\n{}", p.table());
    }
    load.gpu_layers = Some(p.gpu_layers as i32);
    load.tensor_split = p.tensor_split.clone();
    if p.n_cpu_moe > 0 {
        load.n_cpu_moe = p.n_cpu_moe;
    }
    Ok(Some(p))
}

pub fn fit(a: FitArgs) -> Result<()> {
    let (devices, notes) = match &a.devices {
        Some(d) => (parse_devices(d)?, Vec::new()),
        None => real_devices(&a)?,
    };
    let split = hearth_runtime::split(&a.load);
    if devices.len() == 1 && !split.is_auto() {
        bail!("--gpu-layers/--tensor-split need devices besides the host: list them with --devices (e.g. cpu=24G,gpu0=16G) or give --workers");
    }
    let (shards, read) = match local_headers(&a.model)? {
        Some(h) => (h, None),
        None => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (h, n) = rt.block_on(hearth_store::remote::headers(&a.model, a.insecure))?;
            (h, Some(n))
        }
    };
    let plan = hearth_runtime::context_plan(&a.load, a.load.ctx(), a.parallel);
    let e = estimate(&shards, &plan);
    let placement = place(&shards, &plan, &devices, &split);
    let fits = placement.fits;
    let per_seq_max = max_context_by(&shards, &plan, a.parallel as u64, |p| place(&shards, p, &devices, &split).fits);
    let capacity: u64 = devices.iter().filter(|d| !d.shared).map(|d| d.available).sum();
    let summary = shards[0].summary();
    if a.json {
        let v = serde_json::json!({
            "model": a.model,
            "summary": summary,
            "files": shards.len(),
            "header_bytes_read": read,
            "context_per_sequence": a.load.ctx(),
            "parallel": a.parallel,
            "estimate": e,
            "device": devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(","),
            "available": capacity,
            "fits": fits,
            "max_context_per_sequence": per_seq_max,
            "placement": placement,
            "notes": notes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}: {} {} {} in {} file(s), {} layers", a.model, summary.architecture, summary.parameter_size, summary.quantization, shards.len(), placement.n_layer);
    if let Some(n) = read {
        println!("  (read {:.1} MB of headers, no weights)", n as f64 / 1e6);
    }
    for n in &notes {
        println!("  note: {n}");
    }
    println!("  context         {} tokens x {} sequence(s), KV {}/{}", a.load.ctx(), a.parallel, a.load.cache_type_k, a.load.cache_type_v);
    println!("  weights         {}", gib(e.weights));
    println!("  KV cache        {}", gib(e.kv_cache));
    println!("  compute buffer  {}", gib(e.compute));
    println!("  total           {}", gib(e.total));
    println!();
    for line in placement.table().lines() {
        println!("  {line}");
    }
    println!();
    if devices.len() > 1 {
        let ts: Vec<String> = placement.tensor_split.iter().map(|x| format!("{x}")).collect();
        let moe = if placement.n_cpu_moe > 0 { format!(" --n-cpu-moe {}", placement.n_cpu_moe) } else { String::new() };
        println!("  split: --gpu-layers {} --tensor-split {}{moe}", placement.gpu_layers, ts.join(","));
    }
    if fits {
        println!("  fits");
    } else {
        let short: u64 = placement.shortfalls().iter().filter(|d| !d.shared).map(|d| (d.total + d.shared_ram).saturating_sub(d.available)).sum();
        println!("  does NOT fit (short by {} in all)", gib(short));
    }
    match per_seq_max {
        Some(n) => println!("  largest context that fits: {n} tokens per sequence"),
        None => println!("  no context fits: the weights alone need more"),
    }
    Ok(())
}
