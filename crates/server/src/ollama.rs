//! The Ollama API (`/api/*`), as Ollama's own clients and Open WebUI call it.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, head, post};
use axum::Router;
use hearth_store::progress::short_id;
use hearth_store::{Layer, LayerKind, Manifest, Reporter, Source};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

use crate::core::{self, ApiError, Event};
use crate::runner::{Message, PromptSpec, Reply, Request, Sampling};
use crate::scheduler::{KeepAlive, LoadOptions};
use crate::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(root).head(root))
        .route("/api/version", get(version).head(version))
        .route("/api/tags", get(tags).head(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/pull", post(pull))
        .route("/api/delete", delete(remove))
        .route("/api/copy", post(copy))
        .route("/api/create", post(create))
        .route("/api/blobs/{digest}", head(blob_head).post(blob_upload))
        .route("/api/generate", post(generate))
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
        .route("/api/embeddings", post(embeddings))
}

async fn root() -> &'static str {
    "hearth is running"
}

async fn version() -> Response {
    axum::Json(json!({ "version": env!("CARGO_PKG_VERSION") })).into_response()
}

fn ndjson_line(v: &Value) -> String {
    let mut s = serde_json::to_string(v).expect("values serialize");
    s.push('\n');
    s
}

fn ndjson_response(rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], crate::stream_body(rx)).into_response()
}

/// The sampling settings: Ollama's defaults, then the model's `params` layer, then the
/// request's `options`. Unknown options are ignored (as Ollama does).
struct Options {
    sampling: Sampling,
    max_tokens: Option<u32>,
    stop: Vec<String>,
    num_ctx: Option<u32>,
}

fn options(state: &Shared, model: &str, request: Option<&Value>) -> Result<Options, ApiError> {
    let mut o = Options {
        sampling: Sampling { temperature: 0.8, top_k: 40, top_p: 0.9, min_p: 0.0, ..Sampling::default() },
        max_tokens: None,
        stop: Vec::new(),
        num_ctx: None,
    };
    if let Ok(m) = state.store.get(model) {
        if let Some(p) = m.layer(LayerKind::Params).and_then(|l| state.store.read_text(l).ok()) {
            if let Ok(v) = serde_json::from_str::<Value>(&p) {
                apply_options(&mut o, &v, true)?;
            }
        }
    }
    if let Some(v) = request {
        apply_options(&mut o, v, false)?;
    }
    Ok(o)
}

fn apply_options(o: &mut Options, v: &Value, from_model: bool) -> Result<(), ApiError> {
    let Some(map) = v.as_object() else {
        return if v.is_null() { Ok(()) } else { Err(ApiError::bad_request("invalid field `options`: expected an object")) };
    };
    let num = |k: &str, x: &Value| -> Result<f64, ApiError> {
        x.as_f64().ok_or_else(|| ApiError::bad_request(format!("invalid field `options.{k}`: expected a number, got {x}")))
    };
    for (k, x) in map {
        if x.is_null() {
            continue;
        }
        match k.as_str() {
            "temperature" => o.sampling.temperature = num(k, x)? as f32,
            "top_k" => o.sampling.top_k = num(k, x)? as i32,
            "top_p" => o.sampling.top_p = num(k, x)? as f32,
            "min_p" => o.sampling.min_p = num(k, x)? as f32,
            "typical_p" => o.sampling.typical_p = num(k, x)? as f32,
            "repeat_penalty" => o.sampling.repeat_penalty = num(k, x)? as f32,
            "repeat_last_n" => o.sampling.repeat_last_n = num(k, x)? as i32,
            "presence_penalty" => o.sampling.presence_penalty = num(k, x)? as f32,
            "frequency_penalty" => o.sampling.frequency_penalty = num(k, x)? as f32,
            "seed" => {
                let s = num(k, x)?;
                o.sampling.seed = (s >= 0.0).then_some(s as u32);
            }
            "num_predict" => {
                let n = num(k, x)?;
                o.max_tokens = (n >= 0.0).then_some(n as u32);
            }
            "num_ctx" => {
                let n = num(k, x)?;
                if n < 1.0 {
                    return Err(ApiError::bad_request(format!("invalid field `options.num_ctx`: {n} is not a positive number")));
                }
                o.num_ctx = Some(n as u32);
            }
            "stop" => {
                let stops: Vec<String> = match x {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
                    _ => return Err(ApiError::bad_request("invalid field `options.stop`: expected a string or a list of strings")),
                };
                if from_model {
                    o.stop.extend(stops);
                } else {
                    o.stop = stops;
                }
            }
            // Load settings the server decides for all (documented in the README).
            "num_batch" | "num_gpu" | "num_thread" | "use_mmap" | "main_gpu" | "num_keep" | "use_mlock" | "low_vram" | "numa" => {
                tracing::debug!("option {k} is set per server (hearth serve flags); ignored for this request")
            }
            other => tracing::debug!("unknown option {other} ignored"),
        }
    }
    Ok(())
}

fn keep_alive(v: &Option<Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => KeepAlive::parse(v).map(Some).map_err(|e| ApiError::bad_request(format!("invalid field `keep_alive`: {e}"))),
    }
}

fn is_json_format(format: &Option<Value>) -> Result<bool, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(s)) if s.is_empty() => Ok(false),
        Some(Value::String(s)) if s == "json" => Ok(true),
        // A JSON schema: constrained to JSON (the schema's shape is not enforced).
        Some(Value::Object(_)) => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("invalid field `format`: expected \"json\" or a JSON schema, got {other}"))),
    }
}

#[derive(Deserialize)]
struct GenerateBody {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    images: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ChatBody {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

async fn generate(State(s): State<Shared>, body: Bytes) -> Response {
    let b: GenerateBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    if b.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return ApiError::bad_request("images are not supported yet").ollama();
    }
    let mut messages = Vec::new();
    let system = b.system.clone().or_else(|| system_layer(&s, &b.model));
    if let Some(sys) = system {
        messages.push(Message { role: "system".into(), content: sys });
    }
    let prompt = if b.raw {
        PromptSpec::Text(b.prompt.clone())
    } else {
        messages.push(Message { role: "user".into(), content: b.prompt.clone() });
        PromptSpec::Messages(messages)
    };
    respond(s, b.model, b.prompt.is_empty(), prompt, b.stream, b.format, b.options, b.keep_alive, false).await
}

async fn chat(State(s): State<Shared>, body: Bytes) -> Response {
    let b: ChatBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    if b.messages.iter().any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty())) {
        return ApiError::bad_request("images are not supported yet").ollama();
    }
    let mut messages: Vec<Message> = b.messages.iter().map(|m| Message { role: m.role.clone(), content: m.content.clone() }).collect();
    if !messages.iter().any(|m| m.role == "system") {
        if let Some(sys) = system_layer(&s, &b.model) {
            messages.insert(0, Message { role: "system".into(), content: sys });
        }
    }
    let empty = b.messages.is_empty();
    respond(s, b.model, empty, PromptSpec::Messages(messages), b.stream, b.format, b.options, b.keep_alive, true).await
}

fn system_layer(s: &Shared, model: &str) -> Option<String> {
    let m = s.store.get(model).ok()?;
    s.store.read_text(m.layer(LayerKind::System)?).ok()
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    s: Shared,
    model: String,
    empty: bool,
    prompt: PromptSpec,
    stream: Option<bool>,
    format: Option<Value>,
    opts: Option<Value>,
    keep: Option<Value>,
    is_chat: bool,
) -> Response {
    let keep = match keep_alive(&keep) {
        Ok(k) => k,
        Err(e) => return e.ollama(),
    };
    let o = match options(&s, &model, opts.as_ref()) {
        Ok(o) => o,
        Err(e) => return e.ollama(),
    };
    let json_mode = match is_json_format(&format) {
        Ok(j) => j,
        Err(e) => return e.ollama(),
    };
    let load = LoadOptions { num_ctx: o.num_ctx, keep_alive: keep };
    let name = hearth_store::reference::normalize_name(&model).unwrap_or(model.clone());
    // An empty prompt loads the model (or, with keep_alive 0, unloads it).
    if empty {
        let unload = keep == Some(KeepAlive::For(Duration::ZERO));
        if unload {
            s.sched.unload(&model).await;
        } else if let Err(e) = s.sched.acquire(&model, &load).await {
            return ApiError::from(e).ollama();
        }
        let reason = if unload { "unload" } else { "load" };
        let mut v = json!({"model": name, "created_at": core::now_rfc3339(), "done": true, "done_reason": reason});
        if is_chat {
            v["message"] = json!({"role": "assistant", "content": ""});
        } else {
            v["response"] = json!("");
        }
        return axum::Json(v).into_response();
    }
    let request = Request::Generate { prompt, sampling: o.sampling, max_tokens: o.max_tokens, stop: o.stop, json: json_mode, ignore_eos: false, logprobs: None };
    let mut running = match core::start(&s, &model, &load, request).await {
        Ok(r) => r,
        Err(e) => return e.ollama(),
    };
    let chunk = move |text: &str| -> Value {
        if is_chat {
            json!({"model": name, "created_at": core::now_rfc3339(), "message": {"role": "assistant", "content": text}, "done": false})
        } else {
            json!({"model": name, "created_at": core::now_rfc3339(), "response": text, "done": false})
        }
    };
    let last = move |chunk: Value, reason: &str, t: &crate::runner::Timings, load: Duration, total: Duration| -> Value {
        let mut v = chunk;
        v["done"] = json!(true);
        v["done_reason"] = json!(if reason == "cancelled" { "stop" } else { reason });
        v["total_duration"] = json!(total.as_nanos() as u64);
        v["load_duration"] = json!(load.as_nanos() as u64);
        v["prompt_eval_count"] = json!(t.prompt_tokens);
        v["prompt_eval_duration"] = json!(core::ms_to_ns(t.prompt_ms));
        v["eval_count"] = json!(t.generated_tokens);
        v["eval_duration"] = json!(core::ms_to_ns(t.generation_ms));
        v
    };
    if stream == Some(false) {
        let mut text = String::new();
        while let Some(e) = running.events.recv().await {
            match e {
                Event::Text(t) => text.push_str(&t),
                Event::Logprobs(_) => {}
                Event::Done { reason, timings } => {
                    let v = last(chunk(&text), &reason, &timings, running.load, running.started.elapsed());
                    return axum::Json(v).into_response();
                }
                Event::Error(m) => return ApiError::internal(m).ollama(),
            }
        }
        return ApiError::internal("the generation ended without a result").ollama();
    }
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(e) = running.events.recv().await {
            let line = match e {
                Event::Text(t) if t.is_empty() => continue,
                Event::Logprobs(_) => continue,
                Event::Text(t) => ndjson_line(&chunk(&t)),
                Event::Done { reason, timings } => {
                    let v = last(chunk(""), &reason, &timings, running.load, running.started.elapsed());
                    let _ = tx.send(Ok(ndjson_line(&v))).await;
                    return;
                }
                Event::Error(m) => {
                    let _ = tx.send(Ok(ndjson_line(&json!({ "error": m })))).await;
                    return;
                }
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    ndjson_response(rx)
}

#[derive(Deserialize)]
struct EmbedBody {
    model: String,
    input: Value,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

fn inputs(v: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("invalid field `{field}`: expected strings"))))
            .collect(),
        _ => Err(ApiError::bad_request(format!("invalid field `{field}`: expected a string or a list of strings"))),
    }
}

async fn embed(State(s): State<Shared>, body: Bytes) -> Response {
    let b: EmbedBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    let run = async {
        let inputs = inputs(&b.input, "input")?;
        let o = options(&s, &b.model, b.options.as_ref())?;
        let load = LoadOptions { num_ctx: o.num_ctx, keep_alive: keep_alive(&b.keep_alive)? };
        let started = std::time::Instant::now();
        let (reply, load_time) = core::one_reply(&s, &b.model, &load, Request::Embed { inputs, normalize: true }).await?;
        let Reply::Embeddings { embeddings, prompt_tokens } = reply else { return Err(ApiError::internal("unexpected runner reply")) };
        Ok(json!({
            "model": hearth_store::reference::normalize_name(&b.model).unwrap_or(b.model.clone()),
            "embeddings": embeddings,
            "total_duration": started.elapsed().as_nanos() as u64,
            "load_duration": load_time.as_nanos() as u64,
            "prompt_eval_count": prompt_tokens,
        }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.ollama(),
    }
}

#[derive(Deserialize)]
struct EmbeddingsBody {
    model: String,
    prompt: String,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

async fn embeddings(State(s): State<Shared>, body: Bytes) -> Response {
    let b: EmbeddingsBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    let run = async {
        let o = options(&s, &b.model, b.options.as_ref())?;
        let load = LoadOptions { num_ctx: o.num_ctx, keep_alive: keep_alive(&b.keep_alive)? };
        let (reply, _) = core::one_reply(&s, &b.model, &load, Request::Embed { inputs: vec![b.prompt.clone()], normalize: false }).await?;
        let Reply::Embeddings { mut embeddings, .. } = reply else { return Err(ApiError::internal("unexpected runner reply")) };
        Ok(json!({ "embedding": embeddings.pop().unwrap_or_default() }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.ollama(),
    }
}

/// Ollama's `details` object for a model.
pub fn details(s: &Shared, m: &Manifest) -> Value {
    let summary = m
        .model_layers()
        .next()
        .and_then(|l| s.store.blob_path(&l.digest).ok())
        .and_then(|p| hearth_gguf::Gguf::open(&p).ok())
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

async fn tags(State(s): State<Shared>) -> Response {
    let entries = match s.store.list() {
        Ok(e) => e,
        Err(e) => return ApiError::internal(e.to_string()).ollama(),
    };
    let models: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "name": e.manifest.name,
                "model": e.manifest.name,
                "modified_at": core::rfc3339(e.modified),
                "size": e.manifest.size(),
                "digest": manifest_digest(&e.manifest),
                "details": details(&s, &e.manifest),
            })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

async fn ps(State(s): State<Shared>) -> Response {
    let models: Vec<Value> = s
        .sched
        .loaded()
        .iter()
        .map(|m| {
            let manifest = s.store.get(&m.name).ok();
            json!({
                "name": m.name,
                "model": m.name,
                "size": m.estimate,
                "digest": manifest.as_ref().map(manifest_digest).unwrap_or_default(),
                "details": manifest.as_ref().map(|x| details(&s, x)).unwrap_or(Value::Null),
                "expires_at": core::rfc3339(m.expires_at()),
                "size_vram": 0,
                "context_length": m.ctx_per_seq,
                "workers": m.workers,
                "status": if m.runner.alive() { "loaded" } else { "unavailable" },
            })
        })
        .collect();
    let mut models = models;
    // Models that lost a worker: listed until they load again (hearth's addition).
    for (name, why) in s.sched.unavailable() {
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
struct ModelBody {
    #[serde(alias = "name")]
    model: String,
    #[serde(default)]
    verbose: bool,
}

async fn show(State(s): State<Shared>, body: Bytes) -> Response {
    let b: ModelBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    let m = match s.store.get(&b.model) {
        Ok(m) => m,
        Err(_) => return ApiError::not_found(format!("model '{}' not found", b.model)).ollama(),
    };
    let Some(g) = m
        .model_layers()
        .next()
        .and_then(|l| s.store.blob_path(&l.digest).ok())
        .and_then(|p| hearth_gguf::Gguf::open(&p).ok())
    else {
        return ApiError::internal(format!("the model file of {} is missing or unreadable", m.name)).ollama();
    };
    let text = |k: LayerKind| m.layer(k).and_then(|l| s.store.read_text(l).ok());
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
    let capabilities = if embedding_only { json!(["embedding"]) } else { json!(["completion", "embedding"]) };
    let modelfile = format!(
        "# Modelfile generated by hearth\nFROM {}\nTEMPLATE \"\"\"{}\"\"\"\n{}{}",
        m.source.reference,
        template,
        system.as_ref().map(|x| format!("SYSTEM \"\"\"{x}\"\"\"\n")).unwrap_or_default(),
        parameters.lines().map(|l| format!("PARAMETER {l}\n")).collect::<String>()
    );
    let modified = s.store.list().ok().and_then(|l| l.into_iter().find(|e| e.manifest.name == m.name)).map(|e| core::rfc3339(e.modified));
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
    }
}

#[derive(Deserialize)]
struct PullBody {
    #[serde(alias = "name")]
    model: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    stream: Option<bool>,
}

/// Turns store progress into Ollama's pull status lines.
struct PullReporter {
    tx: tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
    transfers: std::sync::Mutex<HashMap<String, (Option<u64>, u64, std::time::Instant)>>,
}

impl PullReporter {
    fn send(&self, v: Value) {
        let _ = self.tx.try_send(Ok(ndjson_line(&v)));
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

async fn pull(State(s): State<Shared>, body: Bytes) -> Response {
    let b: PullBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let reporter = PullReporter { tx: tx.clone(), transfers: Default::default() };
    let store = s.store.clone();
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
            let _ = out_tx.send(Ok(ndjson_line(&json!({ "error": e.to_string() })))).await;
        }
    });
    ndjson_response(out_rx)
}

fn pull_error(e: &hearth_store::StoreError) -> ApiError {
    use hearth_store::StoreError as E;
    match e {
        E::BadReference { .. } => ApiError::bad_request(e.to_string()),
        E::RemoteNotFound { .. } | E::NotFound { .. } => ApiError::not_found(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

async fn remove(State(s): State<Shared>, body: Bytes) -> Response {
    let b: ModelBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    s.sched.unload(&b.model).await;
    match s.store.remove(&b.model) {
        Ok(_) => StatusCode::OK.into_response(),
        Err(hearth_store::StoreError::NotFound { .. }) => ApiError::not_found(format!("model '{}' not found", b.model)).ollama(),
        Err(e) => ApiError::internal(e.to_string()).ollama(),
    }
}

#[derive(Deserialize)]
struct CopyBody {
    source: String,
    destination: String,
}

async fn copy(State(s): State<Shared>, body: Bytes) -> Response {
    let b: CopyBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
    match s.store.copy(&b.source, &b.destination) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(hearth_store::StoreError::NotFound { .. }) => ApiError::not_found(format!("model '{}' not found", b.source)).ollama(),
        Err(e @ hearth_store::StoreError::BadReference { .. }) => ApiError::bad_request(e.to_string()).ollama(),
        Err(e) => ApiError::internal(e.to_string()).ollama(),
    }
}

#[derive(Deserialize)]
struct CreateBody {
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

async fn create(State(s): State<Shared>, body: Bytes) -> Response {
    let b: CreateBody = match core::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.ollama(),
    };
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
            let base = s.store.get(from).map_err(|_| ApiError::not_found(format!("model '{from}' not found")))?;
            layers.extend(base.layers);
        }
        if let Some(files) = &b.files {
            let mut names: Vec<&String> = files.keys().collect();
            names.sort();
            for file in names {
                let digest = &files[file];
                let path = s.store.blob_path(digest).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let size = std::fs::metadata(&path)
                    .map_err(|_| ApiError::bad_request(format!("blob {digest} for {file} was not uploaded (POST /api/blobs/{digest} first)")))?
                    .len();
                hearth_gguf::Gguf::open(&path).map_err(|e| ApiError::bad_request(format!("{file} is not a GGUF model: {e}")))?;
                layers.push(Layer { kind: LayerKind::Model, digest: digest.clone(), size, filename: Some(file.clone()) });
            }
        }
        if !layers.iter().any(|l| l.kind == LayerKind::Model) {
            return Err(ApiError::bad_request("create needs `from` (a model) or `files` (uploaded GGUF blobs)"));
        }
        let mut replace = |kind: LayerKind, bytes: Option<Vec<u8>>| -> Result<(), ApiError> {
            if let Some(bytes) = bytes {
                layers.retain(|l| l.kind != kind);
                let (digest, size) = s.store.add_blob_bytes(&bytes).map_err(|e| ApiError::internal(e.to_string()))?;
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
        s.store.commit(&manifest).map_err(|e| ApiError::internal(e.to_string()))?;
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
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        Err(e) => e.ollama(),
    }
}

async fn blob_head(State(s): State<Shared>, Path(digest): Path<String>) -> Response {
    match s.store.blob_path(&digest) {
        Ok(p) if p.is_file() => StatusCode::OK.into_response(),
        Ok(_) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => ApiError::bad_request(e.to_string()).ollama(),
    }
}

/// Streams an upload into the store, hashing it; the blob appears only if the digest matches.
async fn blob_upload(State(s): State<Shared>, Path(digest): Path<String>, body: Body) -> Response {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let dest = match s.store.blob_path(&digest) {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request(e.to_string()).ollama(),
    };
    if dest.is_file() {
        return StatusCode::OK.into_response();
    }
    let tmp = dest.with_extension(format!("upload{}", std::process::id()));
    let mut file = match tokio::fs::File::create(&tmp).await {
        Ok(f) => f,
        Err(e) => return ApiError::internal(e.to_string()).ollama(),
    };
    let mut hasher = sha2::Sha256::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return ApiError::bad_request(format!("upload interrupted: {e}")).ollama();
            }
        };
        hasher.update(&chunk);
        if let Err(e) = file.write_all(&chunk).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return ApiError::internal(e.to_string()).ollama();
        }
    }
    let _ = file.sync_all().await;
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    let want = format!("sha256:{}", hearth_store::store::digest_hex(&digest).unwrap_or(""));
    if actual != want {
        let _ = tokio::fs::remove_file(&tmp).await;
        return ApiError::bad_request(format!("digest mismatch: the body hashes to {actual}, not {want}")).ollama();
    }
    match tokio::fs::rename(&tmp, &dest).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => ApiError::internal(e.to_string()).ollama(),
    }
}
