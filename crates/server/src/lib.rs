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
//! - [`state`]: what every handler shares; [`wire`]: body streams and times in API units.
//!
//! Invariants: this crate does not link llama.cpp (`cargo tree -p hearth-server` has no
//! `llama-cpp-sys-2`): engines live in runner processes; the server survives any runner's
//! death; `run` takes its shutdown signal as an argument.

pub mod anthropic;
pub mod chat;
pub mod cluster;
pub mod conversations;
pub mod error;
pub mod guard;
pub mod llamacpp;
pub mod metrics;
pub mod observe;
pub mod responses;
pub mod ollama;
pub mod openai;
pub mod state;
pub mod web;
pub mod wire;

pub use state::{AppState, ServerConfig, Shared};

use std::future::Future;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use tower_http::cors::{AllowOrigin, CorsLayer};

/// The application: every route, with auth, CORS, the browser guards, body limits and metrics
/// around them. `listen` is the server's address (the `Host` check applies on loopback).
pub fn router(state: Shared, listen: Option<std::net::SocketAddr>) -> Router {
    let api = Router::new()
        .merge(ollama::routes())
        .merge(openai::routes())
        .merge(anthropic::routes())
        .merge(responses::routes())
        .merge(llamacpp::routes())
        .merge(web::routes(&state))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_route))
        .route("/api/cluster", get(cluster::route))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body))
        .layer(axum::middleware::from_fn(web::page))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::middleware::from_fn_with_state((state.clone(), listen), guard::browser_guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests));
    let extra = state.config.cors_origins.clone();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| origin.to_str().is_ok_and(|o| guard::origin_allowed(o, &extra))))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::PATCH, Method::HEAD, Method::OPTIONS])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request());
    api.layer(cors).with_state(state)
}

/// Serves on `listener` until `shutdown` resolves; then stops accepting, lets running
/// requests finish (up to a grace period) and stops every runner.
///
/// Connections are bounded: at most [`ServerConfig::max_connections`] at once (the rest wait
/// in the kernel's backlog), and a connection that has not sent a request's headers within
/// [`ServerConfig::header_timeout`] (a slowloris, or an idle keep-alive connection) is closed.
pub async fn run(listener: tokio::net::TcpListener, state: Shared, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
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
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(state.config.max_connections.max(1)));
    let header_timeout = state.config.header_timeout;
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let app = router(state, listener.local_addr().ok());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, watcher, header_timeout) = (app.clone(), builder.clone(), graceful.watcher(), header_timeout);
        tokio::spawn(async move {
            // A connection that sends nothing is closed like one that sends its headers too
            // slowly (hyper's header timeout starts at the first byte).
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(header_timeout, stream.peek(&mut first)).await, Ok(Ok(1..))) {
                return;
            }
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("requests still running after 10 s; stopping anyway"),
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
    let text = s.metrics.render(&loaded, &s.runtime.sched.budgets());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// `Authorization: Bearer <key>` (or Anthropic's `x-api-key: <key>`) when a key is set; `/`,
/// `/health` and the page's assets stay open.
async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Some(key) = &s.config.api_key else { return next.run(req).await };
    let path = req.uri().path();
    if path == "/" || path == "/health" || web::is_public(path) || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    // The scheme is case-insensitive (RFC 9110): `bearer KEY` too.
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
        return next.run(req).await;
    }
    let msg = "missing or wrong API key: send Authorization: Bearer <key> (or x-api-key: <key>)";
    let e = error::ApiError { code: Some("invalid_api_key"), ..error::ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", msg) };
    if path.starts_with("/v1/messages") {
        e.anthropic()
    } else if path.starts_with("/v1/") {
        e.openai()
    } else {
        e.ollama()
    }
}

/// Compares keys in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn count_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let route = metrics::route_label(req.uri().path());
    let resp = next.run(req).await;
    s.metrics.request(&route, resp.status().as_u16());
    resp
}
