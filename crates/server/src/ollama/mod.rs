//! The Ollama API (`/api/*`), as Ollama's own clients and Open WebUI call it.
//!
//! - [`generate`]: `/api/generate`, `/api/chat`, `/api/embed`, `/api/embeddings`.
//! - [`models`]: the store and what is loaded: tags, show, ps, pull, delete, copy, create, blobs.
//! - [`options`]: Ollama's request options and the model's stored defaults, as the runtime's
//!   request.

mod generate;
mod models;
mod options;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, head, post};
use axum::Router;
use serde_json::{json, Value};

use crate::state::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(root).head(root))
        .route("/api/version", get(version).head(version))
        .route("/api/tags", get(models::tags).head(models::tags))
        .route("/api/ps", get(models::ps))
        .route("/api/show", post(models::show))
        .route("/api/pull", post(models::pull))
        .route("/api/delete", delete(models::remove))
        .route("/api/copy", post(models::copy))
        .route("/api/create", post(models::create))
        .route("/api/blobs/{digest}", head(models::blob_head).post(models::blob_upload))
        .route("/api/generate", post(generate::generate))
        .route("/api/chat", post(generate::chat))
        .route("/api/embed", post(generate::embed))
        .route("/api/embeddings", post(generate::embeddings))
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

fn ndjson_response(body: axum::body::Body) -> Response {
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
