//! The store and what is loaded, in Ollama's shapes: `/api/tags`, `/api/show`, `/api/ps`,
//! `/api/pull`, `/api/delete`, `/api/copy`, `/api/create`, `/api/blobs`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_store::progress::short_id;
use hearth_store::{Layer, LayerKind, Manifest, Reporter, Source};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use super::{ndjson_line, ndjson_response};
use crate::error::{ApiError, OllamaError, OllamaJson};
use hearth_runtime::RuntimeError;
use crate::state::Shared;

/// Runs `f` on a blocking thread (header reads, file checks).
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| ApiError::internal(format!("the request's worker thread failed: {e}")).ollama())
}

/// Ollama's `details` object for a model.
pub fn details(s: &Shared, m: &Manifest) -> Value {
    let summary = m
        .model_layers()
        .next()
        .and_then(|l| s.runtime.store.blob_path(&l.digest).ok())
        .and_then(|p| hearth_gguf::Gguf::open_lean(&p).ok())
        .map(|g| g.summary());
    match summary {
        Some(d) => json!({
            "parent_model": "",
            "format": "gguf",
            "family": d.architecture,
            "families": [d.architecture],
            "parameter_size": d.parameter_size,
            "quantization_level": d.quantization,
        }),
        None => json!({"parent_model": "", "format": "gguf", "family": "", "families": null, "parameter_size": "", "quantization_level": ""}),
    }
}

/// Ollama's digest of a model: the sha256 of its manifest.
fn manifest_digest(m: &Manifest) -> String {
    hex::encode(sha2::Sha256::digest(serde_json::to_vec(m).unwrap_or_default()))
}

/// Off the async threads: it reads model headers.
pub async fn tags(State(s): State<Shared>) -> Response {
    blocking(move || tags_now(s)).await
}

fn tags_now(s: Shared) -> Response {
    let entries = match s.runtime.store.list() {
        Ok(e) => e,
        Err(e) => return ApiError::internal(e.to_string()).ollama(),
    };
    let models: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "name": e.manifest.name,
                "model": e.manifest.name,
                "modified_at": crate::wire::rfc3339(e.modified),
                "size": e.manifest.size(),
                "digest": manifest_digest(&e.manifest),
                "details": details(&s, &e.manifest),
            })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// Off the async threads: it reads model headers.
pub async fn ps(State(s): State<Shared>) -> Response {
    blocking(move || ps_now(s)).await
}

fn ps_now(s: Shared) -> Response {
    let models: Vec<Value> = s
        .runtime
        .sched
        .loaded()
        .iter()
        .map(|m| {
            let manifest = s.runtime.store.get(&m.name).ok();
            json!({
                "name": m.name,
                "model": m.name,
                "size": m.size(),
                "digest": manifest.as_ref().map(manifest_digest).unwrap_or_default(),
                "details": manifest.as_ref().map(|x| details(&s, x)).unwrap_or(Value::Null),
                "expires_at": crate::wire::rfc3339(m.expires_at()),
                // The GPUs' and workers' share (the host is first in a placement).
                "size_vram": m.size_vram(),
                "context_length": m.ctx_per_seq,
                "workers": m.workers,
                "status": if m.runner.alive() { "loaded" } else { "unavailable" },
            })
        })
        .collect();
    let mut models = models;
    // Models that lost a worker: listed until they load again (hearth's addition).
    for (name, why) in s.runtime.sched.unavailable() {
        if let Some(m) = models.iter_mut().find(|m| m["name"] == name.as_str()) {
            m["status"] = "unavailable".into();
            m["error"] = why.clone().into();
        }
        if !models.iter().any(|m| m["name"] == name.as_str()) {
            models.push(json!({"name": name, "model": name, "size": 0, "size_vram": 0, "status": "unavailable", "error": why}));
        }
    }
    axum::Json(json!({ "models": models })).into_response()
}

#[derive(Deserialize)]
pub struct ModelBody {
    #[serde(alias = "name")]
    model: String,
    #[serde(default)]
    verbose: bool,
}

/// Off the async threads: it reads model headers.
pub async fn show(State(s): State<Shared>, OllamaJson(b): OllamaJson<ModelBody>) -> Response {
    blocking(move || show_now(s, b)).await
}

fn show_now(s: Shared, b: ModelBody) -> Response {
    let m = match s.runtime.resolve(&b.model) {
        Ok(m) => m.manifest,
        Err(e) => return OllamaError::from(e).into_response(),
    };
    let Some(g) = m
        .model_layers()
        .next()
        .and_then(|l| s.runtime.store.blob_path(&l.digest).ok())
        .and_then(|p| hearth_gguf::Gguf::open_lean(&p).ok())
    else {
        return ApiError::internal(format!("the model file of {} is missing or unreadable", m.name)).ollama();
    };
    let text = |k: LayerKind| m.layer(k).and_then(|l| s.runtime.store.read_text(l).ok());
    let template = g.get_str("tokenizer.chat_template").map(str::to_string).or_else(|| text(LayerKind::Template)).unwrap_or_default();
    let system = text(LayerKind::System);
    let license = text(LayerKind::License).or_else(|| g.get_str("general.license").map(str::to_string)).unwrap_or_default();
    let params: Value = text(LayerKind::Params).and_then(|p| serde_json::from_str(&p).ok()).unwrap_or(Value::Null);
    let mut parameters = String::new();
    if let Some(map) = params.as_object() {
        for (k, v) in map {
            match v {
                Value::Array(a) => a.iter().for_each(|x| parameters.push_str(&format!("{k:<30} {x}\n"))),
                other => parameters.push_str(&format!("{k:<30} {other}\n")),
            }
        }
    }
    let mut model_info = serde_json::Map::new();
    for (k, v) in &g.metadata {
        let value = match v {
            hearth_gguf::Value::Array(a) if !b.verbose && a.len() > 16 => Value::Null,
            other => gguf_json(other),
        };
        model_info.insert(k.clone(), value);
    }
    model_info.insert("general.parameter_count".into(), json!(g.summary().parameters));
    let arch = g.architecture().unwrap_or("");
    let embedding_only = matches!(arch, "bert" | "nomic-bert" | "jina-bert-v2" | "t5encoder") || g.arch_u64("pooling_type").is_some_and(|p| p > 0);
    let capabilities = capabilities(embedding_only, &template);
    // Where it came from, unless that is a path on this machine (not a client's business).
    let from = if m.source.kind == "file" { m.name.clone() } else { m.source.reference.clone() };
    let modelfile = format!(
        "# Modelfile generated by hearth\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n{}{}",
        from,
        template,
        system.as_ref().map(|x| format!("SYSTEM \"\"\"{x}\"\"\"\n")).unwrap_or_default(),
        parameters.lines().map(|l| format!("PARAMETER {l}\n")).collect::<String>()
    );
    let modified = s.runtime.store.list().ok().and_then(|l| l.into_iter().find(|e| e.manifest.name == m.name)).map(|e| crate::wire::rfc3339(e.modified));
    axum::Json(json!({
        "license": license,
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "system": system,
        "details": details(&s, &m),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": modified,
    }))
    .into_response()
}

/// What clients may ask of a model, as Ollama lists it: every chat model takes tools (through
/// its template's own syntax, or hearth's generic format for a template without one);
/// thinking when its template has a reasoning syntax llama.cpp's chat code splits off.
fn capabilities(embedding_only: bool, template: &str) -> Value {
    if embedding_only {
        return json!(["embedding"]);
    }
    let mut c = vec!["completion", "tools"];
    let thinks = ["<think>", "enable_thinking", "reasoning_content", "<|channel|>", "[THINK]", "<seed:think>"];
    if thinks.iter().any(|m| template.contains(m)) {
        c.push("thinking");
    }
    c.push("embedding");
    json!(c)
}

fn gguf_json(v: &hearth_gguf::Value) -> Value {
    use hearth_gguf::Value as G;
    match v {
        G::U8(x) => json!(x),
        G::I8(x) => json!(x),
        G::U16(x) => json!(x),
        G::I16(x) => json!(x),
        G::U32(x) => json!(x),
        G::I32(x) => json!(x),
        G::F32(x) => json!(x),
        G::Bool(x) => json!(x),
        G::String(x) => json!(x),
        G::U64(x) => json!(x),
        G::I64(x) => json!(x),
        G::F64(x) => json!(x),
        G::Array(a) => Value::Array(a.iter().map(gguf_json).collect()),
        // Longer than a lean read keeps: not shown (a tokenizer's vocabulary).
        G::Skipped { .. } => Value::Null,
    }
}

#[derive(Deserialize)]
pub struct PullBody {
    #[serde(alias = "name")]
    model: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    stream: Option<bool>,
}

/// Turns store progress into Ollama's pull status lines.
struct PullReporter {
    tx: tokio::sync::mpsc::Sender<String>,
    transfers: std::sync::Mutex<HashMap<String, (Option<u64>, u64, std::time::Instant)>>,
}

impl PullReporter {
    fn send(&self, v: Value) {
        let _ = self.tx.try_send(ndjson_line(&v));
    }
}

impl Reporter for PullReporter {
    fn status(&self, status: &str) {
        self.send(json!({ "status": status }));
    }
    fn start(&self, id: &str, total: Option<u64>, done: u64) {
        self.transfers.lock().expect("not poisoned").insert(id.to_string(), (total, done, std::time::Instant::now()));
        self.send(json!({"status": short_id(id), "digest": digest_of(id), "total": total, "completed": done}));
    }
    fn advance(&self, id: &str, n: u64) {
        let mut t = self.transfers.lock().expect("not poisoned");
        if let Some((total, done, last)) = t.get_mut(id) {
            *done += n;
            if last.elapsed() >= Duration::from_millis(100) {
                *last = std::time::Instant::now();
                let v = json!({"status": short_id(id), "digest": digest_of(id), "total": total, "completed": done});
                drop(t);
                self.send(v);
            }
        }
    }
    fn note(&self, id: &str, message: &str) {
        self.send(json!({ "status": format!("{}: {message}", short_id(id)) }));
    }
    fn finish(&self, id: &str) {
        if let Some((total, done, _)) = self.transfers.lock().expect("not poisoned").remove(id) {
            self.send(json!({"status": short_id(id), "digest": digest_of(id), "total": total, "completed": total.unwrap_or(done)}));
        }
    }
}

/// The full digest in a transfer id ("pulling sha256:<hex>"), as Ollama's `digest` field.
fn digest_of(id: &str) -> String {
    id.split_once("sha256:").map(|(_, h)| format!("sha256:{h}")).unwrap_or_default()
}

pub async fn pull(State(s): State<Shared>, OllamaJson(b): OllamaJson<PullBody>) -> Response {
    if let Err(e) = hearth_store::check_remote(&b.model, b.insecure).await {
        return pull_error(&e).ollama();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let reporter = PullReporter { tx: tx.clone(), transfers: Default::default() };
    let store = s.runtime.store.clone();
    let opts = hearth_store::PullOptions { insecure: b.insecure, ..Default::default() };
    let task = tokio::spawn(async move {
        let r = hearth_store::pull(&store, &b.model, &opts, &reporter).await;
        drop(reporter);
        r
    });
    // Only the reporter may hold a sender: the channel closes when the pull ends.
    drop(tx);
    if b.stream == Some(false) {
        while rx.recv().await.is_some() {}
        return match task.await {
            Ok(Ok(_)) => axum::Json(json!({"status": "success"})).into_response(),
            Ok(Err(e)) => pull_error(&e).ollama(),
            Err(e) => ApiError::internal(e.to_string()).ollama(),
        };
    }
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if out_tx.send(line).await.is_err() {
                return;
            }
        }
        if let Ok(Err(e)) = task.await {
            let _ = out_tx.send(ndjson_line(&json!({ "error": e.to_string() }))).await;
        }
    });
    let lines = futures_util::stream::unfold(out_rx, |mut rx| async move { rx.recv().await.map(|l| (l, rx)) });
    ndjson_response(crate::wire::stream_body(lines))
}

fn pull_error(e: &hearth_store::StoreError) -> ApiError {
    use hearth_store::StoreError as E;
    match e {
        E::BadReference { .. } => ApiError::bad_request(e.to_string()),
        E::RemoteNotFound { .. } | E::NotFound { .. } => ApiError::not_found(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

pub async fn remove(State(s): State<Shared>, OllamaJson(b): OllamaJson<ModelBody>) -> Response {
    s.runtime.unload(&b.model).await;
    match s.runtime.store.remove(&b.model) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => OllamaError::from(RuntimeError::store(e)).into_response(),
    }
}

#[derive(Deserialize)]
pub struct CopyBody {
    source: String,
    destination: String,
}

pub async fn copy(State(s): State<Shared>, OllamaJson(b): OllamaJson<CopyBody>) -> Response {
    match s.runtime.store.copy(&b.source, &b.destination) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => OllamaError::from(RuntimeError::store(e)).into_response(),
    }
}

#[derive(Deserialize)]
pub struct CreateBody {
    #[serde(alias = "name")]
    model: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    files: Option<HashMap<String, String>>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    license: Option<Value>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    messages: Option<Value>,
    #[serde(default)]
    quantize: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

/// Off the async threads: it reads model headers.
pub async fn create(State(s): State<Shared>, OllamaJson(b): OllamaJson<CreateBody>) -> Response {
    blocking(move || create_now(s, b)).await
}

fn create_now(s: Shared, b: CreateBody) -> Response {
    let build = || -> Result<Manifest, ApiError> {
        if b.quantize.is_some() {
            return Err(ApiError::bad_request("quantize is not supported; pull the quantization you want instead"));
        }
        if b.messages.as_ref().is_some_and(|m| !m.is_null()) {
            tracing::debug!("create: messages are not kept");
        }
        let name = hearth_store::reference::normalize_name(&b.model).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut layers: Vec<Layer> = Vec::new();
        if let Some(from) = &b.from {
            let base = s.runtime.resolve(from).map_err(|e| OllamaError::from(e).0)?;
            layers.extend(base.manifest.layers);
        }
        if let Some(files) = &b.files {
            let mut names: Vec<&String> = files.keys().collect();
            names.sort();
            for file in names {
                let digest = &files[file];
                let path = s.runtime.store.blob_path(digest).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let size = std::fs::metadata(&path)
                    .map_err(|_| ApiError::bad_request(format!("blob {digest} for {file} was not uploaded (POST /api/blobs/{digest} first)")))?
                    .len();
                hearth_gguf::Gguf::open_lean(&path).map_err(|e| ApiError::bad_request(format!("{file} is not a GGUF model: {e}")))?;
                layers.push(Layer { kind: LayerKind::Model, digest: digest.clone(), size, filename: Some(file.clone()) });
            }
        }
        if !layers.iter().any(|l| l.kind == LayerKind::Model) {
            return Err(ApiError::bad_request("create needs `from` (a model) or `files` (uploaded GGUF blobs)"));
        }
        let mut replace = |kind: LayerKind, bytes: Option<Vec<u8>>| -> Result<(), ApiError> {
            if let Some(bytes) = bytes {
                layers.retain(|l| l.kind != kind);
                let (digest, size) = s.runtime.store.add_blob_bytes(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
                layers.push(Layer { kind, digest, size, filename: None });
            }
            Ok(())
        };
        replace(LayerKind::Template, b.template.clone().map(String::into_bytes))?;
        replace(LayerKind::System, b.system.clone().map(String::into_bytes))?;
        let license = match &b.license {
            Some(Value::String(l)) => Some(l.clone()),
            Some(Value::Array(a)) => Some(a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("\n")),
            _ => None,
        };
        replace(LayerKind::License, license.map(String::into_bytes))?;
        replace(LayerKind::Params, b.parameters.as_ref().filter(|p| p.is_object()).map(|p| serde_json::to_vec(p).unwrap_or_default()))?;
        let manifest = Manifest {
            schema_version: 1,
            name,
            source: Source { kind: "create".into(), reference: b.from.clone().unwrap_or_else(|| "files".into()), revision: None },
            layers,
        };
        s.runtime.store.commit(&manifest).map_err(|e| ApiError::internal(e.to_string()))?;
        s.runtime.store.unpin(&manifest);
        Ok(manifest)
    };
    match build() {
        Ok(_) if b.stream == Some(false) => axum::Json(json!({"status": "success"})).into_response(),
        Ok(m) => {
            let mut body = String::new();
            for l in &m.layers {
                body.push_str(&ndjson_line(&json!({ "status": format!("using existing layer {}", l.digest) })));
            }
            body.push_str(&ndjson_line(&json!({"status": "writing manifest"})));
            body.push_str(&ndjson_line(&json!({"status": "success"})));
            ndjson_response(Body::from(body))
        }
        Err(e) => e.ollama(),
    }
}

pub async fn blob_head(State(s): State<Shared>, Path(digest): Path<String>) -> Response {
    match s.runtime.store.blob_path(&digest) {
        Ok(p) if p.is_file() => {
            // The client creates a model from it next: keep it from gc until then.
            let _ = s.runtime.store.pin_upload(&digest);
            StatusCode::OK.into_response()
        }
        Ok(_) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => ApiError::bad_request(e.to_string()).ollama(),
    }
}

/// Streams an upload into the store, hashing it; the blob appears only if the digest matches.
pub async fn blob_upload(State(s): State<Shared>, Path(digest): Path<String>, body: Body) -> Response {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let dest = match s.runtime.store.blob_path(&digest) {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request(e.to_string()).ollama(),
    };
    if dest.is_file() {
        // The client will create a model from it: keep it from gc until then.
        let _ = s.runtime.store.pin_upload(&digest);
        return StatusCode::OK.into_response();
    }
    // A temporary file of this upload's own (concurrent uploads of one digest never share
    // one), removed unless it is verified and renamed into place.
    let dir = dest.parent().unwrap_or(std::path::Path::new("."));
    let (file, tmp) = match tempfile::Builder::new().prefix(".upload-").tempfile_in(dir) {
        Ok(t) => t.into_parts(),
        Err(e) => return ApiError::internal(format!("cannot make a temporary file for the upload: {e}")).ollama(),
    };
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = sha2::Sha256::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return ApiError::bad_request(format!("upload interrupted: {e}")).ollama(),
        };
        hasher.update(&chunk);
        if let Err(e) = file.write_all(&chunk).await {
            return ApiError::internal(format!("cannot write the upload: {e}")).ollama();
        }
    }
    let _ = file.sync_all().await;
    drop(file);
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    let want = format!("sha256:{}", hearth_store::store::digest_hex(&digest).unwrap_or(""));
    if actual != want {
        return ApiError::bad_request(format!("digest mismatch: the body hashes to {actual}, not {want}")).ollama();
    }
    // Verified: the rename is atomic, and another verified upload has the same bytes.
    match tmp.persist(&dest) {
        Ok(()) => {
            let _ = s.runtime.store.pin_upload(&digest);
            StatusCode::CREATED.into_response()
        }
        Err(e) => ApiError::internal(format!("cannot store the blob: {}", e.error)).ollama(),
    }
}
