//! The store commands: pull, add, list, show, rm, cp, import, export; and resolving a model
//! argument (a store name or a path) for `run`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use hearth_gguf::Gguf;
use hearth_store::download::DownloadOptions;
use hearth_store::{interop, LayerKind, Manifest, PullOptions, Store};
use serde::Serialize;

use crate::args::{AddArgs, CpArgs, ExportArgs, ImportArgs, ListArgs, PullArgs, RmArgs, ShowArgs, Tool};
use crate::progress::Progress;

/// The directory of the model store: `$HEARTH_MODELS` (or the config file's `models`), else
/// `~/.hearth/models`.
pub fn store_root() -> PathBuf {
    crate::env::var(crate::env::MODELS).map(PathBuf::from).unwrap_or_else(Store::default_root)
}

pub fn store() -> Result<Store> {
    let root = store_root();
    Store::open(&root).with_context(|| format!("cannot open the model store at {}", root.display()))
}

fn env_parse<T: std::str::FromStr>(var: &str) -> Result<Option<T>> {
    match crate::env::var(var) {
        Some(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| anyhow::anyhow!("{var}={v:?} is not a valid number")),
        _ => Ok(None),
    }
}

/// Flag, then environment, then default.
fn download_options(a: &PullArgs) -> Result<DownloadOptions> {
    let mut o = DownloadOptions::default();
    if let Some(n) = a.connections.or(env_parse(crate::env::PULL_CONNECTIONS)?) {
        if n == 0 || n > 64 {
            bail!("--connections must be between 1 and 64, not {n}");
        }
        o.connections = n;
    }
    if let Some(s) = a.stall_timeout.or(env_parse(crate::env::STALL_TIMEOUT)?) {
        if !(s > 0.0 && s.is_finite()) {
            bail!("--stall-timeout must be a positive number of seconds, not {s}");
        }
        o.stall_timeout = Duration::from_secs_f64(s);
        // Short stall timeouts (tests, fast local mirrors) get short backoffs too.
        o.backoff = o.backoff.min(o.stall_timeout / 4);
    }
    if let Some(n) = a.retries.or(env_parse(crate::env::PULL_RETRIES)?) {
        o.max_attempts = n.max(1);
    }
    Ok(o)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn pull(a: PullArgs) -> Result<()> {
    let store = store()?;
    let opts = PullOptions { download: download_options(&a)?, insecure: a.insecure, name: a.name.clone() };
    let progress = Progress::new(a.no_progress);
    let manifest = runtime()?.block_on(hearth_store::pull(&store, &a.reference, &opts, &progress))?;
    eprintln!("pulled {} ({})", manifest.name, indicatif::HumanBytes(manifest.size()));
    warn_if_unsupported(&store, &manifest);
    Ok(())
}

/// Says so when this build's llama.cpp cannot load the model (an unknown architecture), before
/// anyone tries to run it.
fn warn_if_unsupported(store: &Store, manifest: &Manifest) {
    let Ok(path) = store.model_file(manifest) else { return };
    if let Err(e) = hearth_engine::Model::probe(&path) {
        eprintln!("warning: the llama.cpp in this build cannot load {}: {e}", manifest.name);
    }
}

pub fn add(a: AddArgs) -> Result<()> {
    let store = store()?;
    let progress = Progress::new(a.no_progress);
    let m = hearth_store::pull::add_local(&store, &a.path, a.name.as_deref(), &progress)?;
    eprintln!("added {} ({})", m.name, indicatif::HumanBytes(m.size()));
    warn_if_unsupported(&store, &m);
    Ok(())
}

/// A GGUF file given to `hearth run --workers`, added to the store (hardlinked) under its file
/// name; the name of a model that came from another file is not taken over.
pub fn add_for_run(path: &Path) -> Result<String> {
    let store = store()?;
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let name = hearth_store::ModelRef::Url(format!("file:///{file_name}")).default_name();
    let canonical = path.canonicalize().with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(existing) = store.get(&name) {
        let same = Path::new(&existing.source.reference).canonicalize().is_ok_and(|p| p == canonical);
        if !same {
            bail!("the store has another model named {name}; add this file under a name of its own: hearth add {} --name NAME", path.display());
        }
        // Added before, and unchanged since (same size, blob still there): no hashing again.
        let size = std::fs::metadata(&canonical).map(|m| m.len()).unwrap_or(0);
        if existing.model_layers().next().is_some_and(|l| l.size == size && store.has_blob(&l.digest, l.size)) {
            return Ok(existing.name);
        }
    }
    let m = hearth_store::pull::add_local(&store, &canonical, Some(&name), &Progress::new(true))?;
    eprintln!("added {} to the store as {} (for the workers)", path.display(), m.name);
    Ok(m.name)
}

pub fn details(g: &Gguf) -> hearth_gguf::Summary {
    g.summary()
}

fn ago(t: SystemTime) -> String {
    let s = SystemTime::now().duration_since(t).map_or(0, |d| d.as_secs());
    match s {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

pub fn list(a: ListArgs) -> Result<()> {
    let store = store()?;
    let entries = store.list()?;
    #[derive(Serialize)]
    struct Row {
        name: String,
        id: String,
        size: u64,
        modified: u64,
        source: String,
        details: Option<hearth_gguf::Summary>,
    }
    let mut rows = Vec::new();
    for e in entries {
        let m = &e.manifest;
        let first = m.model_layers().next();
        let details = first
            .and_then(|l| store.blob_path(&l.digest).ok())
            .and_then(|p| Gguf::open(&p).ok())
            .map(|g| details(&g));
        rows.push(Row {
            name: m.name.clone(),
            id: first.map(|l| l.digest.trim_start_matches("sha256:")[..12].to_string()).unwrap_or_default(),
            size: m.size(),
            modified: e.modified.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            source: m.source.reference.clone(),
            details,
        });
    }
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if a.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    writeln!(out, "{:width$}  {:12}  {:>9}  {:8}  {:>8}  MODIFIED", "NAME", "ID", "SIZE", "QUANT", "PARAMS")?;
    for r in rows {
        let (q, p) = r.details.as_ref().map_or(("?".into(), "?".into()), |d| (d.quantization.clone(), d.parameter_size.clone()));
        let modified = ago(SystemTime::UNIX_EPOCH + Duration::from_secs(r.modified));
        writeln!(out, "{:width$}  {:12}  {:>9}  {:8}  {:>8}  {}", r.name, r.id, indicatif::HumanBytes(r.size).to_string(), q, p, modified)?;
    }
    Ok(())
}

/// What `hearth run` and `hearth show` load: a path as given, else a model of the store.
pub struct Resolved {
    pub path: PathBuf,
    pub manifest: Option<Manifest>,
    pub store: Option<Store>,
}

pub fn resolve(model: &str) -> Result<Resolved> {
    let p = Path::new(model);
    if p.exists() || model.ends_with(".gguf") || model.starts_with('/') || model.starts_with("./") {
        return Ok(Resolved { path: p.to_path_buf(), manifest: None, store: None });
    }
    let store = store()?;
    let manifest = store.get(model)?;
    let path = store.model_file(&manifest)?;
    Ok(Resolved { path, manifest: Some(manifest), store: Some(store) })
}

impl Resolved {
    /// The text of a layer of the model's manifest (Ollama's template, system, params).
    pub fn layer_text(&self, kind: LayerKind) -> Option<String> {
        let m = self.manifest.as_ref()?;
        let l = m.layer(kind)?;
        self.store.as_ref()?.read_text(l).ok()
    }
}

pub fn show(a: ShowArgs) -> Result<()> {
    let r = resolve(&a.model)?;
    let g = Gguf::open(&r.path).with_context(|| format!("cannot read {}", r.path.display()))?;
    let d = details(&g);
    let supported = hearth_engine::Model::probe(&r.path);
    let template = g.get_str("tokenizer.chat_template").map(str::to_string).or_else(|| r.layer_text(LayerKind::Template));
    let license = g.get_str("general.license").map(str::to_string).or_else(|| r.layer_text(LayerKind::License));
    let embedding_only = matches!(d.architecture.as_str(), "bert" | "nomic-bert" | "jina-bert-v2" | "t5encoder" | "modern-bert")
        || g.arch_u64("pooling_type").is_some_and(|p| p > 0);
    let mut capabilities = vec![if embedding_only { "embedding" } else { "completion" }];
    if !embedding_only {
        capabilities.push("embedding");
    }
    if template.as_deref().is_some_and(|t| t.contains("tools")) {
        capabilities.push("tools");
    }
    if a.json {
        let v = serde_json::json!({
            "name": r.manifest.as_ref().map(|m| m.name.clone()),
            "path": r.path,
            "details": d,
            "template": template,
            "license": license,
            "capabilities": capabilities,
            "split_count": g.split_count(),
            "supported": supported.is_ok(),
            "unsupported_reason": supported.as_ref().err().map(|e| e.to_string()),
            "metadata": g.metadata.iter().filter(|(_, v)| !matches!(v, hearth_gguf::Value::Array(a) if a.len() > 16)).map(|(k, v)| (k.clone(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let opt = |v: Option<u64>| v.map_or("?".into(), |x| x.to_string());
    println!("  Model");
    println!("    architecture        {}", d.architecture);
    println!("    parameters          {}", d.parameter_size);
    println!("    context length      {}", opt(d.context_length));
    println!("    embedding length    {}", opt(d.embedding_length));
    println!("    layers              {}", opt(d.block_count));
    println!("    heads               {} (kv {})", opt(d.head_count), opt(d.head_count_kv));
    println!("    quantization        {}", d.quantization);
    if let Some(n) = g.split_count() {
        println!("    split into          {n} files");
    }
    println!("    llama.cpp           {}", match &supported {
        Ok(()) => "supported by this build".to_string(),
        Err(e) => format!("NOT supported by this build: {e}"),
    });
    println!();
    println!("  Capabilities");
    for c in &capabilities {
        println!("    {c}");
    }
    if let Some(t) = &template {
        println!();
        println!("  Template");
        for line in t.lines().take(12) {
            println!("    {line}");
        }
        if t.lines().count() > 12 {
            println!("    ...");
        }
    }
    if let Some(l) = &license {
        println!();
        println!("  License");
        for line in l.lines().take(4) {
            println!("    {line}");
        }
    }
    Ok(())
}

pub fn rm(a: RmArgs) -> Result<()> {
    let store = store()?;
    for m in &a.models {
        let freed = store.remove(m)?;
        eprintln!("deleted {m} (freed {})", indicatif::HumanBytes(freed));
    }
    Ok(())
}

pub fn cp(a: CpArgs) -> Result<()> {
    let store = store()?;
    store.copy(&a.source, &a.destination)?;
    eprintln!("copied {} to {}", a.source, a.destination);
    Ok(())
}

pub fn import(a: ImportArgs) -> Result<()> {
    let store = store()?;
    let Tool::Ollama = a.tool;
    let from = a.from.unwrap_or_else(interop::ollama_dir);
    let progress = Progress::new(a.no_progress);
    let names = interop::import_ollama(&store, &from, &progress)?;
    for n in &names {
        println!("{n}");
    }
    eprintln!("imported {} model(s) from {}", names.len(), from.display());
    Ok(())
}

pub fn export(a: ExportArgs) -> Result<()> {
    let store = store()?;
    let Tool::Ollama = a.tool;
    let to = a.to.unwrap_or_else(interop::ollama_dir);
    let progress = Progress::new(a.no_progress);
    let path = interop::export_ollama(&store, &a.model, &to, &progress)?;
    eprintln!("exported {} to {}", a.model, path.display());
    Ok(())
}
