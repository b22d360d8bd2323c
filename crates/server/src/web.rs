//! The web page: `GET /` for a browser, its assets under `/ui/<version>/`, and the JSON API of
//! its conversations under `/hearth/conversations` (kept by [`crate::conversations`]).
//!
//! Everything the page needs is embedded in the binary from `crates/server/web/` (no CDN: it
//! works offline). The page itself is plain HTML, CSS and JavaScript modules; `web/vendor/`
//! holds pinned third-party builds (markdown, sanitizer, highlighting) that `web/vendor.sh`
//! re-fetches. Chat and models go through the server's Ollama API like any other client.
//!
//! `/` stays Ollama's "hearth is running" for everything but a browser (a request whose
//! `Accept` names `text/html`): clients detect a server by that body. The page and its assets
//! are served without the API key; the conversations API needs it, like every other API route.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use sha2::Digest;

use crate::conversations::{Conversations, DbError, NewMessage, Update};
use crate::error::{parse, ApiError};
use crate::state::Shared;

/// Files served under `/ui/<version>/`, embedded at build time from `web/`.
macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $path)) as &[u8])),*]
    };
}

static ASSETS: &[(&str, &[u8])] = assets![
    "app.css",
    "app.js",
    "api.js",
    "ui.js",
    "render.js",
    "chat.js",
    "models.js",
    "cluster.js",
    "icon.svg",
    "vendor/marked.umd.js",
    "vendor/purify.min.js",
    "vendor/highlight.min.js",
    "vendor/hljs-light.min.css",
    "vendor/hljs-dark.min.css",
    "vendor/LICENSE.marked",
    "vendor/LICENSE.dompurify",
    "vendor/LICENSE.highlightjs",
    "vendor/VERSIONS",
];

static INDEX: &str = include_str!("../web/index.html");

/// Where the page's assets are: in `index.html`, `{{ui}}` becomes `/ui/<version>`.
const UI_PLACEHOLDER: &str = "{{ui}}";

/// The page's policy: its own scripts only, nothing inline, no requests elsewhere. Model
/// output is sanitized before it reaches the DOM; this is the second line of defence.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Most conversations one list returns.
const LIST_LIMIT: usize = 500;

/// A hash of every asset: part of their URLs, so a new build's page never gets old assets
/// from a browser's cache, and assets can be cached for good.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut h = sha2::Sha256::new();
        for (path, bytes) in ASSETS {
            h.update(path.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        hex::encode(&h.finalize()[..6])
    })
}

fn index_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| INDEX.replace(UI_PLACEHOLDER, &format!("/ui/{}", version())))
}

/// Paths served without the API key: the page's assets (`/` itself is open already).
pub fn is_public(path: &str) -> bool {
    path.starts_with("/ui/")
}

/// The routes of the page's assets and of the conversations API.
pub fn routes(state: &Shared) -> Router<Shared> {
    let db = Arc::new(Conversations::new(state.config.db.clone()));
    Router::new()
        .route("/ui/{*path}", get(asset))
        .route("/hearth/conversations", get(list).post(create))
        .route("/hearth/conversations/{id}", get(get_one).patch(update).delete(remove))
        .route("/hearth/conversations/{id}/messages", post(set_messages))
        .layer(Extension(db))
}

fn wants_html(req: &Request) -> bool {
    req.headers().get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}

/// Middleware: `GET /` from a browser gets the page; every other client gets what the route
/// answers ("hearth is running"). Both vary by `Accept`.
pub async fn page(req: Request, next: Next) -> Response {
    if req.uri().path() != "/" {
        return next.run(req).await;
    }
    let mut resp = if req.method() == Method::GET && wants_html(&req) {
        let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], index_html()).into_response();
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        r
    } else {
        next.run(req).await
    };
    resp.headers_mut().append(header::VARY, HeaderValue::from_static("accept"));
    resp
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// `/ui/<version>/<file>`: cached for good when `version` is this build's; another
/// version's URL (a page from before an upgrade) gets this build's file, not cached.
async fn asset(Path(path): Path<String>) -> Response {
    let (v, file) = path.split_once('/').unwrap_or(("", path.as_str()));
    let Some((_, bytes)) = ASSETS.iter().find(|(p, _)| *p == file) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("no asset {file:?}")).into_response();
    };
    let cache = if v == version() { "public, max-age=31536000, immutable" } else { "no-cache" };
    (
        [
            (header::CONTENT_TYPE, content_type(file)),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Bytes::from_static(bytes),
    )
        .into_response()
}

type Db = Extension<Arc<Conversations>>;

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::NotFound(_) => ApiError::not_found(e.to_string()),
            DbError::Invalid(m) => ApiError::bad_request(m),
            other => {
                tracing::warn!("{other}");
                ApiError::internal(other.to_string())
            }
        }
    }
}

/// Runs `f` on the database off the async threads; errors in Ollama's shape.
async fn blocking<T, F>(db: Arc<Conversations>, f: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&Conversations) -> Result<T, DbError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(&db)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => ApiError::from(e).ollama(),
        Err(e) => ApiError::internal(format!("the conversation database task failed: {e}")).ollama(),
    }
}

fn conversation_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().map_err(|_| ApiError::not_found(format!("conversation {s:?} not found (ids are numbers)")))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: Option<String>,
}

/// `GET /hearth/conversations[?q=TEXT]`: `{"conversations": [...]}`, newest first, without
/// messages; `q` keeps those whose title or messages contain it.
async fn list(Extension(db): Db, Query(q): Query<ListQuery>) -> Response {
    blocking(db, move |db| Ok(serde_json::json!({ "conversations": db.list(q.q.as_deref(), LIST_LIMIT)? }))).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    options: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    messages: Vec<NewMessage>,
}

/// `POST /hearth/conversations` `{title?, model?, system?, options?, messages?}`: the new
/// conversation, with its messages.
async fn create(Extension(db): Db, body: Bytes) -> Response {
    // An empty body is an empty conversation.
    let b: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        match parse(&body) {
            Ok(b) => b,
            Err(e) => return e.ollama(),
        }
    };
    let settings = Update { title: b.title, model: b.model, system: b.system, options: b.options };
    let mut r = blocking(db, move |db| db.create(settings, b.messages)).await;
    if r.status() == StatusCode::OK {
        *r.status_mut() = StatusCode::CREATED;
    }
    r
}

/// `GET /hearth/conversations/{id}`: the conversation with its messages.
async fn get_one(Extension(db): Db, Path(id): Path<String>) -> Response {
    match conversation_id(&id) {
        Ok(id) => blocking(db, move |db| db.get(id)).await,
        Err(e) => e.ollama(),
    }
}

/// `PATCH /hearth/conversations/{id}` `{title?, model?, system?, options?}`: rename, or
/// change its settings.
async fn update(Extension(db): Db, Path(id): Path<String>, body: Bytes) -> Response {
    let parsed = conversation_id(&id).and_then(|id| Ok((id, parse::<Update>(&body)?)));
    match parsed {
        Ok((id, u)) => blocking(db, move |db| db.update(id, u)).await,
        Err(e) => e.ollama(),
    }
}

/// `DELETE /hearth/conversations/{id}`.
async fn remove(Extension(db): Db, Path(id): Path<String>) -> Response {
    match conversation_id(&id) {
        Ok(id) => blocking(db, move |db| db.delete(id).map(|()| serde_json::json!({}))).await,
        Err(e) => e.ollama(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesBody {
    /// Replace the messages from this position on; absent: append.
    #[serde(default)]
    from: Option<i64>,
    messages: Vec<NewMessage>,
}

/// `POST /hearth/conversations/{id}/messages` `{from?, messages}`: appends, or replaces the
/// messages from `from` on (regenerate, edit-and-resend); the conversation with its messages.
async fn set_messages(Extension(db): Db, Path(id): Path<String>, body: Bytes) -> Response {
    let parsed = conversation_id(&id).and_then(|id| Ok((id, parse::<MessagesBody>(&body)?)));
    match parsed {
        Ok((id, b)) => blocking(db, move |db| db.set_messages(id, b.from, b.messages)).await,
        Err(e) => e.ollama(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_page_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut missing = Vec::new();
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
                let not_served = ["index.html", "vendor.sh", "vendor/SHA256SUMS"];
                if !not_served.contains(&rel.as_str()) && !ASSETS.iter().any(|(a, _)| *a == rel) {
                    missing.push(rel);
                }
            }
        }
        assert!(missing.is_empty(), "add these to ASSETS in web.rs: {missing:?}");
    }

    #[test]
    fn the_page_points_at_this_builds_assets() {
        let page = index_html();
        assert!(!page.contains(UI_PLACEHOLDER));
        let prefix = format!("/ui/{}/", version());
        for (path, _) in ASSETS.iter().filter(|(p, _)| p.ends_with(".js") || p.ends_with(".css")) {
            let js_module = ["chat.js", "models.js", "cluster.js", "api.js", "ui.js", "render.js"].contains(path);
            assert!(js_module || page.contains(&format!("{prefix}{path}")), "index.html does not load {path}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("vendor/x.min.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("icon.svg"), "image/svg+xml");
        assert_eq!(content_type("vendor/LICENSE.marked"), "text/plain; charset=utf-8");
    }

    #[test]
    fn only_assets_are_public() {
        assert!(is_public("/ui/abc/app.js"));
        assert!(!is_public("/hearth/conversations"));
        assert!(!is_public("/api/tags"));
        assert!(!is_public("/uix"));
    }
}
