//! What the two APIs share: request bodies parsed with the failing field named, errors, and
//! running a job on a model's runner as a stream of events.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::runner::client::{ReplyStream, RunnerError};
use crate::runner::{ErrorKind, Reply, Request, Timings};
use crate::scheduler::{Lease, LoadOptions, SchedError};
use crate::Shared;

/// An error with the HTTP status it maps to.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's error type.
    pub kind: &'static str,
    /// Seconds for a Retry-After header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", retry_after: None }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into(), kind: "not_found_error", retry_after: None }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), kind: "server_error", retry_after: None }
    }
}

impl From<SchedError> for ApiError {
    fn from(e: SchedError) -> ApiError {
        match e {
            SchedError::NotFound(_) => ApiError::not_found(e.to_string()),
            SchedError::BadRequest(m) => ApiError::bad_request(m),
            SchedError::Busy(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: e.to_string(),
                kind: "server_busy",
                retry_after: Some(1),
            },
            SchedError::Runner(r) => ApiError::internal(r.to_string()),
            SchedError::Store(m) => ApiError::internal(m),
            SchedError::TooLarge(m) => ApiError::internal(m),
        }
    }
}

impl From<RunnerError> for ApiError {
    fn from(e: RunnerError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

/// `{"error": "..."}`, Ollama's error shape.
pub fn ollama_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// `{"error": {"message", "type", "code"}}`, OpenAI's error shape.
pub fn openai_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
}

impl ApiError {
    pub fn ollama(&self) -> Response {
        with_retry_after(ollama_error(self.status, &self.message), self.retry_after)
    }

    pub fn openai(&self) -> Response {
        with_retry_after(openai_error(self.status, &self.message, self.kind, None), self.retry_after)
    }
}

fn with_retry_after(mut r: Response, secs: Option<u64>) -> Response {
    if let Some(s) = secs {
        if let Ok(v) = axum::http::HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
    }
    r
}

/// Parses a JSON body; errors name the field (`messages[0].content: invalid type ...`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty; expected a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" || inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid field `{path}`: {inner}"))
        }
    })
}

/// A label for metrics that does not explode with model names.
pub fn route_label(path: &str) -> String {
    let known = [
        "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/tags", "/api/ps", "/api/show", "/api/pull",
        "/api/delete", "/api/copy", "/api/create", "/api/version", "/v1/chat/completions", "/v1/completions",
        "/v1/embeddings", "/health", "/metrics",
    ];
    if let Some(k) = known.iter().find(|k| path == **k) {
        return k.to_string();
    }
    if path.starts_with("/api/blobs/") {
        return "/api/blobs".into();
    }
    if path.starts_with("/v1/models") {
        return "/v1/models".into();
    }
    if path == "/" { "/".into() } else { "other".into() }
}

/// What a generation streams to an API adapter.
#[derive(Debug)]
pub enum Event {
    Text(String),
    /// A token's log-probabilities (only when the request asked), before its text.
    Logprobs(crate::runner::Logprobs),
    Done { reason: String, timings: Timings },
    /// After streaming started; becomes a last error line / frame.
    Error(String),
}

/// Why a runner died, naming the worker it lost when that is the reason (the model is then
/// marked unavailable until it loads again).
pub async fn why_died(state: &Shared, model: &crate::scheduler::Loaded, died: String) -> String {
    let Some(cluster) = state.sched.config.cluster.as_ref().filter(|_| !model.workers.is_empty()) else { return died };
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
    state.sched.mark_unavailable(&model.name, &why);
    tracing::warn!("{why}");
    why
}

/// A started generation: events, plus what the final chunk reports.
pub struct Running {
    pub events: mpsc::Receiver<Event>,
    /// Time spent loading the model for this request (zero when it was loaded).
    pub load: Duration,
    pub started: Instant,
    pub n_ctx: u32,
}

/// Acquires the model and sends `request` to its runner; returns the lease, the stream and
/// its first reply, and how long loading took. A runner that died since its last request is
/// found out here: it is marked dead, and a second attempt starts a fresh one. An error reply
/// becomes an [`ApiError`] with the right status.
async fn open(state: &Shared, model: &str, load: &LoadOptions, request: &Request) -> Result<(Lease, ReplyStream, Reply, Duration), ApiError> {
    let started = Instant::now();
    let was_loaded = state.sched.loaded().iter().any(|m| hearth_store::reference::normalize_name(model).is_ok_and(|n| n == m.name));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let lease = state.sched.acquire(model, load).await?;
        let mut stream = match lease.model.runner.request(request).await {
            Ok(s) => s,
            Err(_) if attempt == 1 => continue,
            Err(e) => return Err(e.into()),
        };
        match stream.next().await {
            Some(Ok(Reply::Error { kind, message })) => {
                return Err(match kind {
                    ErrorKind::BadRequest => ApiError::bad_request(message),
                    ErrorKind::Internal => ApiError::internal(message),
                })
            }
            Some(Ok(r)) => {
                let load_time = if was_loaded { Duration::ZERO } else { started.elapsed() };
                return Ok((lease, stream, r, load_time));
            }
            Some(Err(e)) => return Err(e.into()),
            None if attempt == 1 => {
                let _ = stream.died();
            }
            None => return Err(stream.died().into()),
        }
    }
}

/// Loads the model (if needed) and starts `request` on it. Errors that come before the first
/// token (unknown model, prompt too long, bad values) are returned here so the API can answer
/// with a status code; later ones arrive as [`Event::Error`].
pub async fn start(state: &Shared, model: &str, load: &LoadOptions, request: Request) -> Result<Running, ApiError> {
    let started = Instant::now();
    let (lease, mut stream, first, load_time) = open(state, model, load, &request).await?;
    let (tx, rx) = mpsc::channel(64);
    let metrics = state.metrics.clone();
    let state2 = state.clone();
    let n_ctx = lease.model.ctx_per_seq;
    tokio::spawn(async move {
        // The lease lives as long as the stream: the model stays loaded and counted as busy.
        let _lease: Lease = lease;
        let mut reply = Some(first);
        let mut last = Instant::now();
        let mut first_token = true;
        loop {
            let r = match reply.take() {
                Some(r) => r,
                None => match stream.next().await {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        let _ = tx.send(Event::Error(e.to_string())).await;
                        return;
                    }
                    None => {
                        let died = stream.died().to_string();
                        let _ = tx.send(Event::Error(why_died(&state2, &_lease.model, died).await)).await;
                        return;
                    }
                },
            };
            let event = match r {
                Reply::Token { text, logprobs, .. } => {
                    if let Some(l) = logprobs {
                        if tx.send(Event::Logprobs(l)).await.is_err() {
                            return;
                        }
                    }
                    let now = Instant::now();
                    if first_token {
                        metrics.ttft(now.duration_since(started));
                        first_token = false;
                    } else {
                        metrics.token_latency(now.duration_since(last));
                    }
                    last = now;
                    Event::Text(text)
                }
                Reply::Done { text, reason, timings } => {
                    if !text.is_empty() && tx.send(Event::Text(text)).await.is_err() {
                        return;
                    }
                    metrics.tokens(timings.prompt_tokens as u64, timings.generated_tokens as u64);
                    let _ = tx.send(Event::Done { reason, timings }).await;
                    return;
                }
                Reply::Error { message, .. } => {
                    let _ = tx.send(Event::Error(message)).await;
                    return;
                }
                other => {
                    let _ = tx.send(Event::Error(format!("unexpected runner reply {other:?}"))).await;
                    return;
                }
            };
            // A closed receiver means the client went away: dropping the stream cancels.
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    Ok(Running { events: rx, load: load_time, started, n_ctx })
}

/// Runs a request that has one reply (embeddings, render), holding the model meanwhile.
pub async fn one_reply(state: &Shared, model: &str, load: &LoadOptions, request: Request) -> Result<(Reply, Duration), ApiError> {
    let (_lease, _stream, reply, load_time) = open(state, model, load, &request).await?;
    Ok((reply, load_time))
}

/// Now, as RFC 3339 with nanoseconds (Ollama's `created_at`).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn ms_to_ns(ms: f64) -> u64 {
    (ms * 1e6).max(0.0) as u64
}
