//! What keeps a web page in the user's browser from using the server (with no `--api-key`,
//! anything that can reach the port can): a foreign `Origin` may not change anything (a page
//! can POST `text/plain` cross-origin without a preflight), and on a loopback address the
//! `Host` must name this machine (DNS rebinding: a page at `attacker.example` whose name now
//! resolves to 127.0.0.1). Clients that are not browsers send no `Origin` and a numeric or
//! `localhost` Host, and pass. Also: axum's own plain-text errors (413, 405, ...) become JSON
//! in the API's shape.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::Shared;

/// Origins every server allows: pages served from this machine.
pub fn local_origin(origin: &str) -> bool {
    ["http://localhost", "https://localhost", "http://127.0.0.1", "https://127.0.0.1", "http://[::1]", "https://[::1]"]
        .iter()
        .any(|l| origin == *l || origin.strip_prefix(l).is_some_and(|rest| rest.starts_with(':')))
}

/// Whether a browser page at `origin` may call the API.
pub fn origin_allowed(origin: &str, extra: &[String]) -> bool {
    local_origin(origin) || extra.iter().any(|e| e.trim_end_matches('/') == origin)
}

/// The host part of a `Host` header (`name:port`, `[v6]:port`, `name`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h)
}

fn machine_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty())
}

/// Whether a server listening on loopback should answer a request for `host`: an address, a
/// `localhost` name, this machine's name, or the host of an allowed origin.
pub fn host_allowed(host: &str, extra_origins: &[String]) -> bool {
    let name = host_name(host).to_ascii_lowercase();
    if name.is_empty() || name.parse::<IpAddr>().is_ok() || name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if machine_name().is_some_and(|m| m == name) {
        return true;
    }
    extra_origins.iter().any(|o| {
        let h = o.split_once("://").map_or(o.as_str(), |(_, h)| h).trim_end_matches('/');
        host_name(h).eq_ignore_ascii_case(&name)
    })
}

fn refuse(path: &str, status: StatusCode, message: String) -> Response {
    let e = ApiError::new(status, "invalid_request_error", message);
    if path.starts_with("/v1/") {
        e.openai()
    } else {
        e.ollama()
    }
}

/// The middleware: `listen` is the server's own address (the `Host` check applies when it is
/// a loopback address, as Ollama does).
pub async fn browser_guard(State((s, listen)): State<(Shared, Option<SocketAddr>)>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let extra = &s.config.cors_origins;
    if listen.is_some_and(|a| a.ip().is_loopback()) {
        let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().host()).unwrap_or("");
        if !host_allowed(host, extra) {
            let msg = format!("this server answers for localhost, not for Host {host:?} (a page that rebinds its name to 127.0.0.1?); to serve that name, add its origin with --cors-origin");
            return refuse(&path, StatusCode::FORBIDDEN, msg);
        }
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            if !origin_allowed(origin, extra) {
                let msg = format!("a page at {origin} may not use this server; allow it with --cors-origin {origin} (or HEARTH_ORIGINS)");
                return refuse(&path, StatusCode::FORBIDDEN, msg);
            }
        }
    }
    json_errors(&path, s.runtime.store.root(), next.run(req).await).await
}

/// Error answers: axum's own rejections (a body over the limit, a wrong method) are plain
/// text, and clients of both APIs expect JSON; and no error tells a client where the store is
/// on this machine (its path becomes `<store>`).
async fn json_errors(path: &str, store_root: &std::path::Path, resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let store_root = store_root.display().to_string();
    let ctype = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (plain, json) = (ctype.starts_with("text/plain"), ctype.starts_with("application/json"));
    if !plain && !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let text = axum::body::to_bytes(body, 64 << 10).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let text = if store_root.len() > 1 { text.replace(&store_root, "<store>") } else { text };
    if json {
        return Response::from_parts(parts, axum::body::Body::from(text));
    }
    let text = text.trim();
    let text = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text.to_string() };
    refuse(path, status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["127.0.0.1:11434", "localhost:11434", "localhost", "[::1]:11434", "10.0.0.5:1", "app.localhost:8080", ""] {
            assert!(host_allowed(ok, &[]), "{ok}");
        }
        for bad in ["attacker.example", "attacker.example:11434", "localhost.attacker.example"] {
            assert!(!host_allowed(bad, &[]), "{bad}");
        }
        assert!(host_allowed("webui.lan:11434", &["http://webui.lan:3000".into()]));
    }

    #[test]
    fn origins() {
        assert!(origin_allowed("http://localhost:8080", &[]));
        assert!(origin_allowed("http://127.0.0.1", &[]));
        assert!(!origin_allowed("http://localhost.evil.example", &[]));
        assert!(!origin_allowed("https://evil.example", &[]));
        assert!(origin_allowed("https://webui.lan", &["https://webui.lan/".into()]));
    }
}
