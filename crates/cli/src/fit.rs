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

/// `--devices "cpu=24GiB,gpu0=120GiB"`: the devices in order, the first being the host.
fn parse_devices(spec: &str) -> Result<Vec<Device>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, size) = part.split_once('=').with_context(|| format!("--devices: {part:?} is not NAME=SIZE (e.g. cpu=24GiB)"))?;
        out.push(Device { name: name.trim().to_string(), available: crate::units::parse_bytes(size).with_context(|| format!("--devices: {part:?}"))? });
    }
    if out.is_empty() {
        bail!("--devices lists no device (e.g. cpu=24GiB,w1=128GiB)");
    }
    Ok(out)
}

/// This machine, then the devices of the workers given (asked for their free memory now).
fn real_devices(a: &FitArgs) -> Result<(Vec<Device>, Vec<String>)> {
    let Some(cluster) = crate::serve::cluster(&a.cluster)? else {
        return Ok((vec![Device { name: "this machine".into(), available: available_memory() }], Vec::new()));
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let statuses = rt.block_on(cluster.status());
    let notes = statuses
        .iter()
        .filter(|w| !w.reachable)
        .map(|w| format!("worker {} is unreachable ({}): planned without it", w.address, w.error.as_deref().unwrap_or("")))
        .collect();
    let up: Vec<_> = statuses.iter().filter(|w| w.reachable).collect();
    Ok((hearth_runtime::placement::devices(available_memory(), &up).0, notes))
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
    let capacity: u64 = devices.iter().map(|d| d.available).sum();
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
        println!("  split: --gpu-layers {} --tensor-split {}", placement.gpu_layers, ts.join(","));
    }
    if fits {
        println!("  fits");
    } else {
        let short: u64 = placement.shortfalls().iter().map(|d| d.total - d.available).sum();
        println!("  does NOT fit (short by {} in all)", gib(short));
    }
    match per_seq_max {
        Some(n) => println!("  largest context that fits: {n} tokens per sequence"),
        None => println!("  no context fits: the weights alone need more"),
    }
    Ok(())
}
