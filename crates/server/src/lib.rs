//! The HTTP server: the Ollama API and the OpenAI API on one port: thin adapters over
//! [`hearth_runtime`], which knows no HTTP.
//!
//! - [`ollama`] and [`openai`]: the two APIs. Siblings that never import each other: each
//!   parses its own request shapes into the runtime's request ([`hearth_runtime::protocol::runner::Generate`])
//!   and renders the runtime's [`hearth_runtime::Event`]s back in its own format.
//! - [`error`]: errors in each API's shape, one mapping of [`hearth_runtime::RuntimeError`]
//!   per API, and the body extractor that names the failing field.
//! - [`observe`]: a generation with its metrics recorded; times in each API's units.
//! - [`cluster`]: `GET /api/cluster`.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`web`]: the web page at `/` and its assets; [`conversations`]: its chats, in SQLite.
//!
//! Invariants: this crate does not link llama.cpp (`cargo tree -p hearth-server` has no
//! `llama-cpp-sys-2`): engines live in runner processes; the server survives any runner's
//! death; `run` takes its shutdown signal as an argument.

pub mod cluster;
pub mod conversations;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod ollama;
pub mod openai;
pub mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hearth_runtime::Runtime;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Server settings beyond the runtime's.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Required as `Authorization: Bearer <key>` on every route but `/`, `/health` and the web
    /// page's assets.
    pub api_key: Option<String>,
    /// Origins allowed by CORS besides localhost.
    pub cors_origins: Vec<String>,
    /// Largest JSON body accepted.
    pub max_body: usize,
    /// The web page's conversation database.
    pub db: std::path::PathBuf,
}

/// Shared by every handler.
pub struct AppState {
    pub runtime: Runtime,
    pub config: ServerConfig,
    pub metrics: metrics::Metrics,
    pub started: Instant,
}

pub type Shared = Arc<AppState>;

/// The application: every route, with auth, CORS, body limits and metrics around them.
pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .merge(ollama::routes())
        .merge(openai::routes())
        .merge(web::routes(&state))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_route))
        .route("/api/cluster", get(cluster::route))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body.max(1 << 20)))
        .layer(axum::middleware::from_fn(web::page))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests));
    let extra: Vec<HeaderValue> = state.config.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            let o = origin.to_str().unwrap_or("");
            let local = ["http://localhost", "https://localhost", "http://127.0.0.1", "https://127.0.0.1", "http://[::1]"]
                .iter()
                .any(|l| o == *l || o.strip_prefix(l).is_some_and(|rest| rest.starts_with(':')));
            local || extra.iter().any(|e| e == origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::HEAD, Method::OPTIONS])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request());
    api.layer(cors).with_state(state)
}

/// Serves on `listener` until `shutdown` resolves; then stops accepting, lets running
/// requests finish (up to a grace period) and stops every runner.
pub async fn run(listener: tokio::net::TcpListener, state: Shared, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let sched = state.runtime.sched.clone();
    let reaper = {
        let sched = sched.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                sched.reap().await;
            }
        })
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let grace = async {
        let _ = rx.await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    tokio::select! {
        r = server => r?,
        _ = grace => tracing::warn!("requests still running after 10 s; stopping anyway"),
    }
    reaper.abort();
    sched.shutdown().await;
    Ok(())
}

async fn health(State(s): State<Shared>) -> Response {
    if s.runtime.sched.is_loading() {
        let body = serde_json::json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    } else {
        axum::Json(serde_json::json!({"status": "ok"})).into_response()
    }
}

async fn metrics_route(State(s): State<Shared>) -> Response {
    let loaded = s.runtime.sched.loaded();
    let text = s.metrics.render(&loaded);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// `Authorization: Bearer <key>` when a key is set; `/`, `/health` and the page's assets stay
/// open.
async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Some(key) = &s.config.api_key else { return next.run(req).await };
    let path = req.uri().path();
    if path == "/" || path == "/health" || web::is_public(path) || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given == Some(key.as_str()) {
        return next.run(req).await;
    }
    let msg = "missing or wrong API key: send Authorization: Bearer <key>";
    let e = error::ApiError { code: Some("invalid_api_key"), ..error::ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", msg) };
    if path.starts_with("/v1/") {
        e.openai()
    } else {
        e.ollama()
    }
}

async fn count_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = metrics::route_label(req.uri().path());
    let resp = next.run(req).await;
    s.metrics.request(&route, resp.status().as_u16());
    resp
}

/// A streamed body: each item of `stream` is one NDJSON line or SSE frame. Dropping the body
/// (the client went away) drops the stream and with it the generation, which cancels it.
pub(crate) fn stream_body<S>(stream: S) -> Body
where
    S: futures_util::Stream<Item = String> + Send + 'static,
{
    use futures_util::StreamExt;
    Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>))
}

/// Now, as RFC 3339 with nanoseconds (Ollama's `created_at`).
pub(crate) fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub(crate) fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
