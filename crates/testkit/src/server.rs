//! The HTTP side: the two listeners, routing, and answers with faults applied.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};

use crate::body::{FixtureBody, Stop};
use crate::fault::{take, ActiveFault, Facts, FaultKind};
use crate::hf::{decode_cursor, encode_cursor, HfRepo};
use crate::log::{Listener, LoggedRequest, Record};
use crate::ollama::MANIFEST_MEDIA_TYPE;
use crate::range::{parse_range, RangeRequest};
use crate::util::{normalize_digest, percent_decode, query_param, sha256_hex};

/// What both listeners share.
pub(crate) struct Shared {
    /// Everything tests set up and everything the fixture records.
    pub(crate) state: Mutex<State>,
    /// `http://127.0.0.1:PORT` of the main listener (for `Link` headers).
    pub(crate) base_url: String,
    /// `http://127.0.0.1:PORT` of the CDN listener (for redirects).
    pub(crate) cdn_url: String,
    /// Makes each presigned redirect URL differ, as real ones do.
    signatures: AtomicU64,
}

impl Shared {
    pub(crate) fn new(state: State, base_url: String, cdn_url: String) -> Shared {
        Shared {
            state: Mutex::new(state),
            base_url,
            cdn_url,
            signatures: AtomicU64::new(0),
        }
    }

    /// The state; a panic elsewhere while it was held does not make it unusable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A CDN URL for a blob, with a fake presigned query that the CDN ignores.
    fn presigned(&self, sha256: &str) -> String {
        let n = self.signatures.fetch_add(1, Ordering::Relaxed);
        let sig = sha256_hex(format!("{sha256}/{n}").as_bytes());
        format!(
            "{}/cdn/{sha256}?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=hearth-fixture%2F20240101%2Fauto%2Fs3%2Faws4_request\
             &X-Amz-Date=20240101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host\
             &X-Amz-Signature={sig}",
            self.cdn_url
        )
    }
}

/// A plain URL source.
#[derive(Debug, Clone)]
pub(crate) enum UrlEntry {
    /// Served directly.
    File { content: Bytes, sha256: String },
    /// Answered with a redirect.
    Redirect { location: String, status: u16 },
}

/// Everything the fixture serves and records.
#[derive(Default)]
pub(crate) struct State {
    /// Hugging Face repositories by `user/repo`.
    pub(crate) hf: HashMap<String, HfRepo>,
    /// Entries per page of a tree listing.
    pub(crate) hf_page_size: usize,
    /// Registry manifests by `ns/model:tag`, lowercase.
    pub(crate) manifests: HashMap<String, Bytes>,
    /// Registry manifests by their sha256 hex.
    pub(crate) manifests_by_digest: HashMap<String, Bytes>,
    /// Blobs the CDN serves, by sha256 hex.
    pub(crate) blobs: HashMap<String, Bytes>,
    /// Plain URL sources by path (with its leading `/`).
    pub(crate) urls: HashMap<String, UrlEntry>,
    /// Faults in force, in order of injection.
    pub(crate) faults: Vec<ActiveFault>,
    /// The id the next fault gets.
    pub(crate) next_fault: u64,
    /// Every request, in order of arrival.
    pub(crate) log: Vec<Arc<Record>>,
    /// Body bytes sent, by `path:/...` and `digest:<hex>`.
    pub(crate) counters: HashMap<String, Arc<AtomicU64>>,
}

impl State {
    /// The counter for `key`, created at zero.
    pub(crate) fn counter(&mut self, key: String) -> Arc<AtomicU64> {
        self.counters.entry(key).or_default().clone()
    }
}

/// Accepts connections on `listener` until the runtime is shut down.
pub(crate) async fn serve(listener: tokio::net::TcpListener, which: Listener, shared: Arc<Shared>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or similar: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, which, port, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request and logs it.
async fn handle(
    shared: &Shared,
    which: Listener,
    port: u16,
    req: Request<Incoming>,
) -> Response<FixtureBody> {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let fixed = LoggedRequest {
        listener: which,
        port,
        method: req.method().as_str().to_string(),
        path: percent_decode(req.uri().path()),
        query: req.uri().query().map(str::to_string),
        host: header(header::HOST),
        range: header(header::RANGE),
        if_range: header(header::IF_RANGE),
        authorization: header(header::AUTHORIZATION),
        status: 0,
        body_bytes: 0,
        faults: Vec::new(),
    };
    let record = Arc::new(Record {
        fixed,
        answer: Mutex::new((0, Vec::new())),
        body_bytes: Arc::new(AtomicU64::new(0)),
    });
    let (reply, delay) = {
        let mut state = shared.lock();
        state.log.push(record.clone());
        let mut ctx = Ctx {
            shared,
            state: &mut state,
            req: &record.fixed,
            head: req.method() == Method::HEAD,
            get: req.method() == Method::GET,
            applied: Vec::new(),
            body_counter: record.body_bytes.clone(),
        };
        let (reply, delay) = ctx.answer();
        *record.answer.lock().unwrap_or_else(|e| e.into_inner()) = (reply.status, ctx.applied);
        (reply, delay)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    reply.into_response(req.method() == Method::HEAD)
}

/// Where a request goes.
enum Route {
    UrlFile(String),
    HfInfo {
        repo: String,
        rev: String,
    },
    HfRefs {
        repo: String,
    },
    HfTree {
        repo: String,
        rev: String,
        dir: String,
    },
    HfResolve {
        repo: String,
        rev: String,
        file: String,
    },
    RegistryPing,
    Manifest {
        name: String,
        reference: String,
    },
    RegistryBlob {
        digest: String,
    },
    Cdn {
        digest: String,
    },
    NotFound,
    MethodNotAllowed,
}

/// An answer before it becomes a hyper response.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// For the bytes of a file: where to stop, pacing, and the counters to grow.
    stream: Option<(Stop, Option<u64>, Vec<Arc<AtomicU64>>)>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            stream: None,
        }
    }

    fn json(status: u16, v: &Value) -> Reply {
        Reply::new(status)
            .header("content-type", "application/json; charset=utf-8")
            .body(serde_json::to_vec(v).unwrap_or_default())
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    fn into_response(self, head: bool) -> Response<FixtureBody> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder().status(status);
        for (name, value) in &self.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                builder = builder.header(*name, v);
            }
        }
        builder = builder.header(header::CONTENT_LENGTH, self.body.len());
        let body = if head {
            FixtureBody::empty()
        } else if let Some((stop, throttle, counters)) = self.stream {
            FixtureBody::new(self.body, stop, throttle, counters)
        } else {
            FixtureBody::full(self.body)
        };
        builder.body(body).unwrap_or_else(|_| {
            let mut r = Response::new(FixtureBody::empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

/// A file's bytes about to be served.
struct Content {
    bytes: Bytes,
    /// The quoted ETag.
    etag: String,
    /// The sha256 hex it is counted under in [`State::counters`].
    digest: String,
    /// Headers of the protocol on top (`X-Repo-Commit`).
    extra: Vec<(&'static str, String)>,
}

/// One request being answered, with the state locked.
struct Ctx<'a> {
    shared: &'a Shared,
    state: &'a mut State,
    req: &'a LoggedRequest,
    head: bool,
    get: bool,
    /// Names of the faults that hit, for the log.
    applied: Vec<&'static str>,
    /// The log entry's body byte counter.
    body_counter: Arc<AtomicU64>,
}

fn hf_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, &json!({ "error": message }))
        .header("x-error-code", code)
        .header("x-error-message", message)
}

fn registry_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"errors": [{"code": code, "message": message}]}),
    )
}

impl Ctx<'_> {
    fn route(&self) -> Route {
        let path = self.req.path.as_str();
        if !self.get && !self.head {
            return Route::MethodNotAllowed;
        }
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if self.req.listener == Listener::Cdn {
            return match segs.as_slice() {
                ["cdn", digest] => Route::Cdn {
                    digest: digest.to_string(),
                },
                _ => Route::NotFound,
            };
        }
        if self.state.urls.contains_key(path) {
            return Route::UrlFile(path.to_string());
        }
        let s = |x: &&str| x.to_string();
        match segs.as_slice() {
            ["api", "models", user, repo] => Route::HfInfo {
                repo: format!("{user}/{repo}"),
                rev: "main".into(),
            },
            ["api", "models", user, repo, "revision", rev] => Route::HfInfo {
                repo: format!("{user}/{repo}"),
                rev: s(rev),
            },
            ["api", "models", user, repo, "refs"] => Route::HfRefs {
                repo: format!("{user}/{repo}"),
            },
            ["api", "models", user, repo, "tree", rev, dir @ ..] => Route::HfTree {
                repo: format!("{user}/{repo}"),
                rev: s(rev),
                dir: dir.join("/"),
            },
            ["v2"] | ["v2", ""] => Route::RegistryPing,
            ["v2", ns, model, "manifests", reference] => Route::Manifest {
                name: format!("{ns}/{model}"),
                reference: s(reference),
            },
            ["v2", _, _, "blobs", digest] => Route::RegistryBlob { digest: s(digest) },
            [user, repo, "resolve", rev, file @ ..]
                if !file.is_empty() && file.iter().all(|f| !f.is_empty()) =>
            {
                Route::HfResolve {
                    repo: format!("{user}/{repo}"),
                    rev: s(rev),
                    file: file.join("/"),
                }
            }
            _ => Route::NotFound,
        }
    }

    /// The sha256 of what the request is about, and the content size, if it has content.
    fn subject(&self, route: &Route) -> (Option<String>, Option<u64>) {
        match route {
            Route::UrlFile(path) => match self.state.urls.get(path) {
                Some(UrlEntry::File { content, sha256 }) => {
                    (Some(sha256.clone()), Some(content.len() as u64))
                }
                _ => (None, None),
            },
            Route::HfResolve { repo, file, .. } => {
                match self.state.hf.get(repo).and_then(|r| r.files.get(file)) {
                    Some(e) => (Some(e.sha256.clone()), Some(e.content.len() as u64)),
                    None => (None, None),
                }
            }
            Route::RegistryBlob { digest } => (normalize_digest(digest), None),
            Route::Cdn { digest } => {
                let d = normalize_digest(digest);
                let size = d
                    .as_ref()
                    .and_then(|d| self.state.blobs.get(d))
                    .map(|b| b.len() as u64);
                (d, size)
            }
            _ => (None, None),
        }
    }

    /// The answer and how long to wait before sending it.
    fn answer(&mut self) -> (Reply, u64) {
        let route = self.route();
        let (digest, size) = self.subject(&route);
        let facts = Facts {
            method: &self.req.method,
            path: &self.req.path,
            digest: digest.as_deref(),
        };
        let has_content = size.is_some();
        let first = take(&mut self.state.faults, &facts, |k| match k {
            FaultKind::Delay { .. } | FaultKind::Status { .. } => true,
            FaultKind::ChangeContent { .. } => has_content,
            _ => false,
        });
        let mut delay = 0;
        let mut status = None;
        let mut change = None;
        for kind in first {
            self.applied.push(kind.name());
            match kind {
                FaultKind::Delay { ms } => delay += ms,
                FaultKind::Status { code, retry_after } => {
                    status.get_or_insert((code, retry_after));
                }
                FaultKind::ChangeContent { new_bytes } => change = Some(Bytes::from(new_bytes)),
                _ => {}
            }
        }
        if let Some((code, retry_after)) = status {
            let size = change.as_ref().map(|c| c.len() as u64).or(size);
            let mut reply = Reply::json(
                code,
                &json!({"error": format!("injected fault: status {code}")}),
            );
            if let Some(secs) = retry_after {
                reply = reply.header("retry-after", secs.to_string());
            }
            if let (416, Some(total)) = (code, size) {
                reply = reply.header("content-range", format!("bytes */{total}"));
            }
            return (reply, delay);
        }
        let reply = match route {
            Route::MethodNotAllowed => Reply::json(405, &json!({"error": "method not allowed"}))
                .header("allow", "GET, HEAD"),
            Route::NotFound => Reply::json(404, &json!({"error": "not found"})),
            Route::UrlFile(path) => self.url_file(&path, change, &facts),
            Route::HfInfo { repo, rev } => self.hf_info(&repo, &rev),
            Route::HfRefs { repo } => self.hf_refs(&repo),
            Route::HfTree { repo, rev, dir } => self.hf_tree(&repo, &rev, &dir),
            Route::HfResolve { repo, rev, file } => {
                self.hf_resolve(&repo, &rev, &file, change, &facts)
            }
            Route::RegistryPing => Reply::json(200, &json!({})),
            Route::Manifest { name, reference } => self.manifest(&name, &reference),
            Route::RegistryBlob { digest } => self.registry_blob(&digest),
            Route::Cdn { digest } => self.cdn(&digest, change, &facts),
        };
        (reply, delay)
    }

    fn url_file(&mut self, path: &str, change: Option<Bytes>, facts: &Facts<'_>) -> Reply {
        match self.state.urls.get(path).cloned() {
            Some(UrlEntry::File { content, sha256 }) => {
                let etag = format!("\"{sha256}\"");
                self.content(
                    Content {
                        bytes: content,
                        etag,
                        digest: sha256,
                        extra: Vec::new(),
                    },
                    change,
                    facts,
                )
            }
            Some(UrlEntry::Redirect { location, status }) => {
                Reply::new(status).header("location", location)
            }
            None => Reply::json(404, &json!({"error": "not found"})),
        }
    }

    fn cdn(&mut self, digest: &str, change: Option<Bytes>, facts: &Facts<'_>) -> Reply {
        let Some(hex) = normalize_digest(digest) else {
            return Reply::new(404)
                .header("content-type", "text/plain")
                .body("NoSuchKey");
        };
        let Some(bytes) = self.state.blobs.get(&hex).cloned() else {
            return Reply::new(404)
                .header("content-type", "text/plain")
                .body("NoSuchKey");
        };
        let etag = format!("\"{hex}\"");
        self.content(
            Content {
                bytes,
                etag,
                digest: hex,
                extra: Vec::new(),
            },
            change,
            facts,
        )
    }

    /// Looks up a Hugging Face repository, checking its token: the repo, or the error answer.
    fn hf_repo(&self, repo: &str) -> Result<&HfRepo, Reply> {
        let Some(r) = self.state.hf.get(repo) else {
            return Err(hf_error(404, "RepoNotFound", "Repository not found"));
        };
        if let Some(token) = &r.token {
            if self.req.authorization.as_deref() != Some(format!("Bearer {token}").as_str()) {
                // No X-Error-Code: that would say "not found" (huggingface_hub reads RepoNotFound
                // as such) where the client's fix is a token.
                let message = "Invalid username or password.";
                return Err(Reply::json(401, &json!({ "error": message }))
                    .header("x-error-message", message));
            }
        }
        Ok(r)
    }

    fn hf_rev(&self, repo: &str, rev: &str) -> Result<&HfRepo, Reply> {
        let r = self.hf_repo(repo)?;
        if !r.knows_rev(rev) {
            return Err(hf_error(
                404,
                "RevisionNotFound",
                &format!("Invalid rev id: {rev}"),
            ));
        }
        Ok(r)
    }

    fn hf_info(&self, repo: &str, rev: &str) -> Reply {
        match self.hf_rev(repo, rev) {
            Ok(r) => {
                let blobs = query_param(self.req.query.as_deref(), "blobs")
                    .is_some_and(|v| v == "true" || v == "1");
                Reply::json(200, &r.info(repo, blobs))
            }
            Err(e) => e,
        }
    }

    fn hf_refs(&self, repo: &str) -> Reply {
        match self.hf_repo(repo) {
            Ok(r) => Reply::json(200, &r.refs()),
            Err(e) => e,
        }
    }

    fn hf_tree(&self, repo: &str, rev: &str, dir: &str) -> Reply {
        let r = match self.hf_rev(repo, rev) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let query = self.req.query.as_deref();
        let recursive = query_param(query, "recursive").is_some_and(|v| v == "true" || v == "1");
        let Some(entries) = r.tree(dir, recursive) else {
            return hf_error(
                404,
                "EntryNotFound",
                &format!("{dir} does not exist on \"{rev}\""),
            );
        };
        let offset = match query_param(query, "cursor") {
            None => 0,
            Some(c) => match decode_cursor(&c) {
                Some(n) => n,
                None => return hf_error(400, "BadRequest", "Invalid cursor"),
            },
        };
        let page = self.state.hf_page_size.max(1);
        let end = offset.saturating_add(page).min(entries.len());
        let start = offset.min(end);
        let mut reply = Reply::json(200, &Value::Array(entries[start..end].to_vec()));
        if end < entries.len() {
            let dir = if dir.is_empty() {
                String::new()
            } else {
                format!("/{dir}")
            };
            let recursive = if recursive { "recursive=true&" } else { "" };
            let link = format!(
                "<{}/api/models/{repo}/tree/{rev}{dir}?{recursive}cursor={}>; rel=\"next\"",
                self.shared.base_url,
                encode_cursor(end)
            );
            reply = reply.header("link", link);
        }
        reply
    }

    fn hf_resolve(
        &mut self,
        repo: &str,
        rev: &str,
        file: &str,
        change: Option<Bytes>,
        facts: &Facts<'_>,
    ) -> Reply {
        let (commit, entry) = match self.hf_rev(repo, rev) {
            Ok(r) => match r.files.get(file) {
                Some(e) => (r.commit.clone(), e.clone()),
                None => return hf_error(404, "EntryNotFound", "Entry not found"),
            },
            Err(e) => return e,
        };
        if entry.lfs {
            let (sha, size) = match &change {
                Some(new) => (sha256_hex(new), new.len()),
                None => (entry.sha256.clone(), entry.content.len()),
            };
            return Reply::new(302)
                .header("content-type", "text/plain; charset=utf-8")
                .header("location", self.shared.presigned(&entry.sha256))
                .header("x-repo-commit", commit)
                .header("x-linked-etag", format!("\"{sha}\""))
                .header("x-linked-size", size.to_string())
                .header("etag", format!("\"{}\"", entry.git_oid))
                .header("accept-ranges", "bytes");
        }
        let etag = format!("\"{}\"", entry.git_oid);
        let content = Content {
            bytes: entry.content,
            etag,
            digest: entry.sha256,
            extra: vec![("x-repo-commit", commit)],
        };
        self.content(content, change, facts)
    }

    fn manifest(&self, name: &str, reference: &str) -> Reply {
        let found = match normalize_digest(reference).filter(|_| reference.starts_with("sha256:")) {
            Some(hex) => self.state.manifests_by_digest.get(&hex),
            None => self
                .state
                .manifests
                .get(&format!("{name}:{reference}").to_ascii_lowercase()),
        };
        match found {
            Some(m) => Reply::new(200)
                .header("content-type", MANIFEST_MEDIA_TYPE)
                .header("docker-content-digest", format!("sha256:{}", sha256_hex(m)))
                .body(m.clone()),
            None => registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
        }
    }

    fn registry_blob(&self, digest: &str) -> Reply {
        let Some(hex) = normalize_digest(digest).filter(|_| digest.starts_with("sha256:")) else {
            return registry_error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
            );
        };
        if !self.state.blobs.contains_key(&hex) {
            return registry_error(404, "BLOB_UNKNOWN", "blob unknown to registry");
        }
        Reply::new(307)
            .header("location", self.shared.presigned(&hex))
            .header("docker-content-digest", format!("sha256:{hex}"))
    }

    /// Serves a file's bytes: `ChangeContent`, `If-Range`, `Range`, and the body faults.
    fn content(&mut self, content: Content, change: Option<Bytes>, facts: &Facts<'_>) -> Reply {
        let (bytes, etag) = match change {
            Some(new) => {
                let etag = format!("\"{}\"", sha256_hex(&new));
                (new, etag)
            }
            None => (content.bytes, content.etag),
        };
        let total = bytes.len() as u64;
        let ignore_range = self.get
            && !take(&mut self.state.faults, facts, |k| {
                matches!(k, FaultKind::IgnoreRange)
            })
            .is_empty();
        if ignore_range {
            self.applied.push("ignore-range");
        }
        // A strong comparison: a weak or different validator means "send it all".
        let if_range_ok = self
            .req
            .if_range
            .as_deref()
            .is_none_or(|v| v.trim() == etag);
        let range = if ignore_range || !if_range_ok {
            RangeRequest::Full
        } else {
            parse_range(self.req.range.as_deref(), total)
        };
        let mut reply = Reply::new(200)
            .header("content-type", "application/octet-stream")
            .header("accept-ranges", "bytes")
            .header("etag", etag);
        for (name, value) in content.extra {
            reply = reply.header(name, value);
        }
        let (start, end) = match range {
            RangeRequest::Unsatisfiable => {
                reply.status = 416;
                return reply.header("content-range", format!("bytes */{total}"));
            }
            RangeRequest::Full => (0, total),
            RangeRequest::Partial { start, end } => {
                reply.status = 206;
                reply = reply.header("content-range", format!("bytes {start}-{end}/{total}"));
                (start, end + 1)
            }
        };
        let mut stop = Stop::Never;
        let mut throttle: Option<u64> = None;
        let mut corrupt = Vec::new();
        if self.get {
            let taken = take(&mut self.state.faults, facts, |k| match k {
                FaultKind::Stall { .. } | FaultKind::Cut { .. } | FaultKind::Throttle { .. } => {
                    true
                }
                FaultKind::Corrupt { offset } => (start..end).contains(offset),
                _ => false,
            });
            for kind in taken {
                self.applied.push(kind.name());
                match kind {
                    FaultKind::Stall { after_bytes: n } | FaultKind::Cut { after_bytes: n } => {
                        let earlier = match stop {
                            Stop::Never => true,
                            Stop::Stall(m) | Stop::Cut(m) => n < m,
                        };
                        if earlier {
                            stop = if matches!(kind, FaultKind::Stall { .. }) {
                                Stop::Stall(n)
                            } else {
                                Stop::Cut(n)
                            };
                        }
                    }
                    FaultKind::Throttle { bytes_per_sec } => {
                        throttle = Some(throttle.map_or(bytes_per_sec, |t| t.min(bytes_per_sec)));
                    }
                    FaultKind::Corrupt { offset } => corrupt.push(offset - start),
                    _ => {}
                }
            }
        }
        // Both bounds lie within `bytes` (checked by the range parser), so this cannot panic.
        let mut slice = bytes.slice(start as usize..end as usize);
        if !corrupt.is_empty() {
            let mut v = slice.to_vec();
            for at in corrupt {
                v[at as usize] ^= 0xff;
            }
            slice = Bytes::from(v);
        }
        let counters = vec![
            self.body_counter.clone(),
            self.state.counter(format!("path:{}", self.req.path)),
            self.state.counter(format!("digest:{}", content.digest)),
        ];
        reply.stream = Some((stop, throttle, counters));
        reply.body(slice)
    }
}
