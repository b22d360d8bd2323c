//! llama-server's own endpoints that agents and tools use to size context and count tokens:
//! `GET /props`, `POST /apply-template`, `POST /tokenize`, `POST /detokenize`. llama-server
//! serves one model; here the request's `model` names it (or the only model loaded, or the
//! only model in the store, when it names none).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hearth_runtime::protocol::runner::Message;
use hearth_runtime::protocol::{ChatOptions, SamplingParams as Sampling};
use hearth_runtime::{LoadOptions, Model};
use serde::Deserialize;
use serde_json::json;

use crate::error::{parse, ApiError, OpenAiError};
use crate::state::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/props", get(props))
        .route("/apply-template", post(apply_template))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
}

#[derive(Deserialize, Default)]
struct Named {
    #[serde(default)]
    model: Option<String>,
}

/// The model a request names, else the only one loaded, else the only one stored.
fn pick(s: &Shared, name: Option<&str>) -> Result<Model, OpenAiError> {
    if let Some(n) = name {
        return Ok(s.runtime.resolve(n)?);
    }
    let loaded = s.runtime.sched.loaded();
    if let [one] = loaded.as_slice() {
        return Ok(s.runtime.resolve(&one.name)?);
    }
    let stored = s.runtime.store.list().map_err(|e| OpenAiError(ApiError::internal(e.to_string())))?;
    match stored.as_slice() {
        [one] => Ok(s.runtime.resolve(&one.manifest.name)?),
        _ => Err(ApiError::bad_request("name the model with `model` (hearth serves several)").into()),
    }
}

async fn load_options(model: &Model) -> Result<LoadOptions, OpenAiError> {
    let o = model.options(Sampling::default())?;
    Ok(LoadOptions { num_ctx: o.num_ctx, keep_alive: None })
}

/// `GET /props[?model=NAME]`: the context, slots, chat template and modalities (loads it).
async fn props(State(s): State<Shared>, Query(q): Query<Named>) -> Result<Response, OpenAiError> {
    let model = pick(&s, q.model.as_deref())?;
    let info = s.runtime.info(&model, &load_options(&model).await?).await?;
    Ok(axum::Json(json!({
        "model_alias": model.name.to_string(),
        "model_path": model.name.to_string(),
        "n_ctx": info.n_ctx_seq,
        "total_slots": info.parallel,
        "default_generation_settings": {"n_ctx": info.n_ctx_seq, "params": {}},
        "chat_template": info.chat_template,
        "chat_template_caps": {"supports_tools": true, "supports_thinking": info.thinking, "tool_format": info.tool_format},
        "modalities": {"vision": false, "audio": false},
        "build_info": format!("hearth {}", env!("CARGO_PKG_VERSION")),
    }))
    .into_response())
}

/// `POST /apply-template`: the prompt a chat (with tools) renders to, as llama-server answers.
async fn apply_template(State(s): State<Shared>, body: Bytes) -> Result<Response, OpenAiError> {
    let named: Named = parse(&body)?;
    let (messages, chat): (Vec<Message>, ChatOptions) = crate::openai::chat_request(&body)?;
    let model = pick(&s, named.model.as_deref())?;
    let r = s.runtime.render(&model, &load_options(&model).await?, messages, chat).await?;
    Ok(axum::Json(json!({"prompt": r.prompt})).into_response())
}

#[derive(Deserialize)]
struct TokenizeBody {
    #[serde(default)]
    model: Option<String>,
    content: String,
    #[serde(default)]
    with_pieces: bool,
    /// Special-token text (`<|im_start|>`) becomes those tokens.
    #[serde(default = "yes")]
    parse_special: bool,
}

fn yes() -> bool {
    true
}

/// `POST /tokenize`: `{"tokens": [..]}`, or with pieces `[{"id", "piece"}]`.
async fn tokenize(State(s): State<Shared>, body: Bytes) -> Result<Response, OpenAiError> {
    let b: TokenizeBody = parse(&body)?;
    let model = pick(&s, b.model.as_deref())?;
    let load = load_options(&model).await?;
    let tokens = s.runtime.tokenize(&model, &load, b.content, b.parse_special).await?;
    if !b.with_pieces {
        return Ok(axum::Json(json!({ "tokens": tokens })).into_response());
    }
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        let piece = s.runtime.detokenize(&model, &load, vec![t]).await?;
        out.push(json!({"id": t, "piece": piece}));
    }
    Ok(axum::Json(json!({ "tokens": out })).into_response())
}

#[derive(Deserialize)]
struct DetokenizeBody {
    #[serde(default)]
    model: Option<String>,
    tokens: Vec<i32>,
}

/// `POST /detokenize`: `{"content": ".."}`.
async fn detokenize(State(s): State<Shared>, body: Bytes) -> Result<Response, OpenAiError> {
    let b: DetokenizeBody = parse(&body)?;
    let model = pick(&s, b.model.as_deref())?;
    let content = s.runtime.detokenize(&model, &load_options(&model).await?, b.tokens).await?;
    Ok(axum::Json(json!({ "content": content })).into_response())
}
