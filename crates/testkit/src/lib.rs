//! A local HTTP fixture that speaks the Hugging Face Hub, Ollama registry and plain-URL download
//! protocols, and fails on demand, so that the model store's downloader can be tested without the
//! network.
//!
//! [`Fixture::start`] binds two listeners on `127.0.0.1` (random ports) and serves them from a
//! tokio runtime on a thread of its own, so the API is blocking and works from a plain `#[test]`
//! (or from async code: nothing blocks for long). Dropping the [`Fixture`] stops everything,
//! connections held open by a stall included.
//!
//! - The **main listener**, [`Fixture::base_url`]: use it as `HF_ENDPOINT`, as the Ollama
//!   registry host (`127.0.0.1:PORT/library/smollm2:latest`, plain HTTP) and for plain URLs.
//! - The **CDN listener**, [`Fixture::cdn_url`]: another port, so another host to a client. LFS
//!   files and registry blobs redirect there, with a fake presigned query the CDN ignores.
//!
//! ```
//! use hearth_testkit::{media_type, Fault, Fixture};
//!
//! let fx = Fixture::start();
//! let gguf = vec![7u8; 4096];
//! let file = fx.add_hf_file("user/repo", "model-Q4_K_M.gguf", &gguf); // LFS: redirects to the CDN
//! fx.add_hf_file("user/repo", "README.md", b"# hello\n"); // plain git file: served directly
//! fx.set_hf_private("user/repo", "secret-token"); // now needs `Authorization: Bearer secret-token`
//! let model = fx.add_ollama_model(
//!     "library",
//!     "smollm2",
//!     "latest",
//!     &[(media_type::MODEL, &gguf), (media_type::TEMPLATE, b"{{ .Prompt }}")],
//! );
//! let url = fx.add_url_file("files/model.gguf", &gguf); // http://127.0.0.1:PORT/files/model.gguf
//!
//! // The next GET of the model's bytes on the CDN stops after 1000 bytes, connection open.
//! fx.inject(Fault::stall(1000).for_blob(&file.sha256).once());
//! // ... run the client against fx.base_url() ...
//! assert_eq!(fx.bytes_served(&file.sha256), 0);
//! assert!(fx.requests().is_empty());
//! # let _ = (model, url);
//! ```
//!
//! # Routes
//!
//! Main listener (GET and HEAD; anything else is 405):
//!
//! | route | answer |
//! | --- | --- |
//! | `/api/models/{user}/{repo}/tree/{rev}[/{dir}][?recursive=true][&cursor=..]` | JSON array of `{type,oid,size,path,lfs?}`, sorted by path, [`Fixture::set_hf_page_size`] per page, `Link: <...>; rel="next"` while more |
//! | `/api/models/{user}/{repo}[/revision/{rev}][?blobs=true]` | model info with `sha` and `siblings` |
//! | `/api/models/{user}/{repo}/refs` | `{branches:[{name:"main",targetCommit}]}` |
//! | `/{user}/{repo}/resolve/{rev}/{path}` | LFS file: 302 to the CDN with `X-Linked-Etag: "<sha256>"`, `X-Linked-Size`, `X-Repo-Commit`, `ETag`; other file: the bytes, `ETag: "<git oid>"`, `X-Repo-Commit` |
//! | `/v2/{ns}/{model}/manifests/{tag or sha256:..}` | the manifest, `Content-Type: application/vnd.docker.distribution.manifest.v2+json`, `Docker-Content-Digest` |
//! | `/v2/{ns}/{model}/blobs/sha256:{hex}` | 307 to the CDN |
//! | any path given to [`Fixture::add_url_file`] | the bytes, `ETag: "<sha256>"` |
//!
//! CDN listener: `/cdn/{sha256hex}?anything`: the bytes, `ETag: "<sha256>"`.
//!
//! Errors as the real services answer them: unknown HF repo 404 `{"error":"Repository not
//! found"}` (`X-Error-Code: RepoNotFound`); private repo without the token 401 `{"error":"Invalid
//! username or password."}` on every route; unknown rev 404 (`RevisionNotFound`); missing file 404
//! `X-Error-Code: EntryNotFound`; unknown manifest 404
//! `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`; unknown blob 404
//! `BLOB_UNKNOWN`. `rev` is `main` or the repo's current commit ([`HfFile::commit`]).
//!
//! Every answer carrying a file's bytes (CDN, plain URL, non-LFS resolve) has `Accept-Ranges:
//! bytes`, `ETag` and `Content-Length`, honours `Range: bytes=a-b`, `bytes=a-` and `bytes=-n` with
//! 206 and `Content-Range: bytes a-b/total`, answers a range starting past the end with 416 and
//! `Content-Range: bytes */total`, ignores an invalid or multi-range `Range` (200, as RFC 9110
//! allows), and ignores `Range` when `If-Range` does not match the ETag (200 with everything).
//! HEAD answers carry the same headers, `Content-Length` included, and no body.
//!
//! # Faults
//!
//! [`Fixture::inject`] adds a [`Fault`]: a [`FaultKind`], a [`Target`] (every request, a path
//! prefix, or a blob by sha256), an optional method, and an optional count after which it clears
//! itself. Faults are matched in the order they were injected; several can hit one request.
//!
//! - `Status` and `Delay` hit (and are used up by) every matching request, HEADs and redirects
//!   included, and `Status` replaces the whole answer.
//! - `ChangeContent` hits every matching request about a file (resolve, CDN, plain URL).
//! - The body faults, `Stall`, `Cut`, `IgnoreRange`, `Throttle` and `Corrupt`, only hit GETs that
//!   answer with the file's bytes: a HEAD, a 302/307 or a listing never uses them up, so
//!   `Fault::cut(100).for_blob(d).once()` cuts the first real download of that blob, wherever the
//!   client was redirected from. `Corrupt` only hits responses whose range covers its offset.
//! - `Stall`/`Cut` count bytes of that response's body, `Corrupt` an absolute file offset.
//!
//! # What the log shows
//!
//! [`Fixture::requests`] lists every request with its listener and port, method, path, `Range`,
//! `If-Range`, `Authorization`, status, body bytes sent so far and the faults that hit it.
//! [`Fixture::bytes_served`] sums body bytes by blob sha256 or by path. Bytes count when handed to
//! the connection; after a client disconnects mid-body a few more may be counted than it read.

mod body;
mod fault;
mod hf;
mod log;
mod ollama;
mod range;
mod server;
mod util;
pub mod synthetic;

use std::io;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;

pub use fault::{Fault, FaultId, FaultKind, Target};
pub use hf::HfFile;
pub use log::{Listener, LoggedRequest};
pub use ollama::{media_type, OllamaLayer, OllamaModel, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};

use fault::ActiveFault;
use hf::{lfs_by_default, HfEntry};
use server::{Shared, State, UrlEntry};
use util::{normalize_digest, rooted, sha256_hex};

/// The default number of entries per page of a Hugging Face tree listing.
pub const DEFAULT_HF_PAGE_SIZE: usize = 1000;

/// How to start a [`Fixture`].
#[derive(Debug, Clone, Default)]
pub struct FixtureOptions {
    /// The main listener's port; 0 picks a free one.
    pub port: u16,
    /// The CDN listener's port; 0 picks a free one.
    pub cdn_port: u16,
}

/// The running fixture: two listeners on 127.0.0.1 and what they serve. See the crate docs.
pub struct Fixture {
    /// State and addresses, shared with the server tasks.
    shared: Arc<Shared>,
    /// Dropping it tells the runtime thread to shut down.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The runtime thread, joined on drop.
    thread: Option<JoinHandle<()>>,
    /// The main listener's port.
    port: u16,
    /// The CDN listener's port.
    cdn_port: u16,
}

impl Fixture {
    /// Starts a fixture on two free ports. Panics if it cannot (no sockets, no threads): it is
    /// for tests. [`Fixture::start_with`] returns the error instead.
    pub fn start() -> Fixture {
        Fixture::start_with(FixtureOptions::default())
            .unwrap_or_else(|e| panic!("hearth-testkit: cannot start the fixture: {e}"))
    }

    /// Starts a fixture with these options.
    pub fn start_with(options: FixtureOptions) -> io::Result<Fixture> {
        let main = TcpListener::bind(("127.0.0.1", options.port))?;
        let cdn = TcpListener::bind(("127.0.0.1", options.cdn_port))?;
        main.set_nonblocking(true)?;
        cdn.set_nonblocking(true)?;
        let port = main.local_addr()?.port();
        let cdn_port = cdn.local_addr()?.port();
        let state = State {
            hf_page_size: DEFAULT_HF_PAGE_SIZE,
            ..State::default()
        };
        let shared = Arc::new(Shared::new(
            state,
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{cdn_port}"),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hearth-fixture")
            .enable_all()
            .build()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hearth-fixture".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listeners = tokio::net::TcpListener::from_std(main)
                        .and_then(|m| Ok((m, tokio::net::TcpListener::from_std(cdn)?)));
                    let (main, cdn) = match listeners {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    tokio::spawn(server::serve(main, Listener::Main, for_thread.clone()));
                    tokio::spawn(server::serve(cdn, Listener::Cdn, for_thread));
                    let _ = ready_tx.send(Ok(()));
                    // Sent or dropped: either way, stop.
                    let _ = stopped.await;
                });
                // Drops every task: listeners close, open connections (stalled ones too) are reset.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the fixture's runtime thread died")))?;
        Ok(Fixture {
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
            port,
            cdn_port,
        })
    }

    /// `http://127.0.0.1:PORT` of the main listener: `HF_ENDPOINT`, the registry, plain URLs.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `http://127.0.0.1:PORT` of the CDN listener, where redirects land.
    pub fn cdn_url(&self) -> String {
        self.shared.cdn_url.clone()
    }

    /// The main listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CDN listener's port.
    pub fn cdn_port(&self) -> u16 {
        self.cdn_port
    }

    /// `127.0.0.1:PORT`: the registry host in an Ollama model name
    /// (`127.0.0.1:PORT/library/smollm2:latest`), to be pulled over plain HTTP.
    pub fn registry_host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The main listener's URL for `path` (a leading `/` is optional).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.shared.base_url, rooted(path))
    }

    // ---- Hugging Face ---------------------------------------------------------------------

    /// Adds (or replaces) a file in a Hugging Face repository, creating the repository. Weights
    /// and archives (`.gguf`, `.safetensors`, `.bin`, ...) are stored with LFS, other files in
    /// git; [`Fixture::add_hf_file_lfs`] chooses. The repository's commit changes.
    pub fn add_hf_file(&self, repo: &str, path: &str, bytes: impl AsRef<[u8]>) -> HfFile {
        self.add_hf_file_lfs(repo, path, bytes, lfs_by_default(path))
    }

    /// [`Fixture::add_hf_file`], saying whether the file is stored with LFS.
    pub fn add_hf_file_lfs(
        &self,
        repo: &str,
        path: &str,
        bytes: impl AsRef<[u8]>,
        lfs: bool,
    ) -> HfFile {
        let path = path.trim_start_matches('/').to_string();
        let entry = HfEntry::new(Bytes::copy_from_slice(bytes.as_ref()), lfs);
        let mut state = self.shared.lock();
        if lfs {
            state
                .blobs
                .insert(entry.sha256.clone(), entry.content.clone());
        }
        let r = state.hf.entry(repo.to_string()).or_default();
        r.files.insert(path.clone(), entry.clone());
        r.recommit(repo);
        HfFile {
            repo: repo.to_string(),
            path,
            size: entry.content.len() as u64,
            sha256: entry.sha256,
            git_oid: entry.git_oid,
            lfs,
            commit: r.commit.clone(),
        }
    }

    /// Removes a file from a repository; `false` if it was not there.
    pub fn remove_hf_file(&self, repo: &str, path: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(r) = state.hf.get_mut(repo) else {
            return false;
        };
        let removed = r.files.remove(path.trim_start_matches('/')).is_some();
        r.recommit(repo);
        removed
    }

    /// Makes a repository (created if needed) private: every route wants
    /// `Authorization: Bearer {token}` and answers 401 otherwise.
    pub fn set_hf_private(&self, repo: &str, token: &str) {
        let mut state = self.shared.lock();
        let r = state.hf.entry(repo.to_string()).or_default();
        if r.commit.is_empty() {
            r.recommit(repo);
        }
        r.token = Some(token.to_string());
    }

    /// Makes a repository public again.
    pub fn set_hf_public(&self, repo: &str) {
        if let Some(r) = self.shared.lock().hf.get_mut(repo) {
            r.token = None;
        }
    }

    /// Entries per page of tree listings (default [`DEFAULT_HF_PAGE_SIZE`]; at least 1).
    pub fn set_hf_page_size(&self, n: usize) {
        self.shared.lock().hf_page_size = n.max(1);
    }

    /// The repository's current commit (40 hex), if it exists.
    pub fn hf_commit(&self, repo: &str) -> Option<String> {
        self.shared.lock().hf.get(repo).map(|r| r.commit.clone())
    }

    /// `{base}/{repo}/resolve/main/{path}`.
    pub fn hf_resolve_url(&self, repo: &str, path: &str) -> String {
        format!(
            "{}/{repo}/resolve/main/{}",
            self.shared.base_url,
            path.trim_start_matches('/')
        )
    }

    // ---- Ollama registry --------------------------------------------------------------------

    /// Adds a model `{ns}/{model}:{tag}` (names are matched case-insensitively) with these layers
    /// (media type, bytes), in order, and a generated config blob listing them. Every blob is
    /// served through the CDN.
    pub fn add_ollama_model(
        &self,
        ns: &str,
        model: &str,
        tag: &str,
        layers: &[(&str, &[u8])],
    ) -> OllamaModel {
        let digests: Vec<String> = layers
            .iter()
            .map(|(_, b)| format!("sha256:{}", sha256_hex(b)))
            .collect();
        let config = ollama::default_config(&digests);
        self.add_ollama_model_with_config(ns, model, tag, &config, layers)
    }

    /// [`Fixture::add_ollama_model`] with a config blob of your own.
    pub fn add_ollama_model_with_config(
        &self,
        ns: &str,
        model: &str,
        tag: &str,
        config: &[u8],
        layers: &[(&str, &[u8])],
    ) -> OllamaModel {
        let config_layer = ollama::layer(CONFIG_MEDIA_TYPE, config);
        let entries: Vec<OllamaLayer> = layers.iter().map(|(mt, b)| ollama::layer(mt, b)).collect();
        let manifest = ollama::manifest(&config_layer, &entries);
        let manifest_digest = sha256_hex(manifest.as_bytes());
        let mut state = self.shared.lock();
        state
            .blobs
            .insert(sha256_hex(config), Bytes::copy_from_slice(config));
        for (_, b) in layers {
            state.blobs.insert(sha256_hex(b), Bytes::copy_from_slice(b));
        }
        let body = Bytes::from(manifest.clone());
        state.manifests.insert(
            format!("{ns}/{model}:{tag}").to_ascii_lowercase(),
            body.clone(),
        );
        state
            .manifests_by_digest
            .insert(manifest_digest.clone(), body);
        OllamaModel {
            manifest,
            manifest_digest: format!("sha256:{manifest_digest}"),
            config: config_layer,
            layers: entries,
        }
    }

    /// Serves `bytes` on the CDN (and at `/v2/*/*/blobs/` of the registry); returns
    /// `sha256:<hex>`.
    pub fn add_blob(&self, bytes: impl AsRef<[u8]>) -> String {
        let bytes = bytes.as_ref();
        let hex = sha256_hex(bytes);
        self.shared
            .lock()
            .blobs
            .insert(hex.clone(), Bytes::copy_from_slice(bytes));
        format!("sha256:{hex}")
    }

    /// The CDN URL of a blob (`sha256:<hex>` or `<hex>`), without the presigned query.
    pub fn blob_url(&self, digest: &str) -> String {
        let hex = normalize_digest(digest).unwrap_or_else(|| digest.to_string());
        format!("{}/cdn/{hex}", self.shared.cdn_url)
    }

    // ---- plain URLs -------------------------------------------------------------------------

    /// Serves `bytes` at `path` on the main listener (e.g. `files/model.gguf`; a leading `/` is
    /// optional; such a path wins over the other routes). Returns its URL.
    pub fn add_url_file(&self, path: &str, bytes: impl AsRef<[u8]>) -> String {
        let content = Bytes::copy_from_slice(bytes.as_ref());
        let sha256 = sha256_hex(&content);
        self.shared
            .lock()
            .urls
            .insert(rooted(path), UrlEntry::File { content, sha256 });
        self.url(path)
    }

    /// Answers `path` on the main listener with a 302 to `location` (e.g. a plain URL that
    /// redirects to [`Fixture::blob_url`]). Returns its URL.
    pub fn add_url_redirect(&self, path: &str, location: &str) -> String {
        let entry = UrlEntry::Redirect {
            location: location.to_string(),
            status: 302,
        };
        self.shared.lock().urls.insert(rooted(path), entry);
        self.url(path)
    }

    // ---- faults -----------------------------------------------------------------------------

    /// Adds a fault; see the crate docs for which requests it hits.
    pub fn inject(&self, fault: Fault) -> FaultId {
        let mut state = self.shared.lock();
        let id = FaultId(state.next_fault);
        state.next_fault += 1;
        if fault.times != Some(0) {
            state.faults.push(ActiveFault { id, fault });
        }
        id
    }

    /// Removes one fault; `false` if it had already cleared itself.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        let mut state = self.shared.lock();
        let before = state.faults.len();
        state.faults.retain(|f| f.id != id);
        state.faults.len() != before
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The faults in force, with what is left of their `times`.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared
            .lock()
            .faults
            .iter()
            .map(|f| f.fault.clone())
            .collect()
    }

    // ---- what happened ------------------------------------------------------------------------

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared
            .lock()
            .log
            .iter()
            .map(|r| r.snapshot())
            .collect()
    }

    /// Forgets the request log and the byte counters.
    pub fn clear_requests(&self) {
        let mut state = self.shared.lock();
        state.log.clear();
        state.counters.clear();
    }

    /// Body bytes of file content sent so far for a blob (`sha256:<hex>` or `<hex>`, over every
    /// route that serves those bytes) or for a path (`/cdn/<hex>`, `files/model.gguf`,
    /// `/user/repo/resolve/main/README.md`; a leading `/` is optional).
    pub fn bytes_served(&self, path_or_digest: &str) -> u64 {
        let key = match normalize_digest(path_or_digest) {
            Some(hex) => format!("digest:{hex}"),
            None => format!("path:{}", rooted(path_or_digest)),
        };
        self.shared
            .lock()
            .counters
            .get(&key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Polls `cond` every 5 ms until it holds (`true`) or `timeout` passes (`false`): e.g. wait
    /// until a throttled download is half done before killing the client.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let fx = hearth_testkit::Fixture::start();
    /// let started = fx.wait_for(Duration::from_millis(20), |fx| fx.bytes_served("files/a") > 0);
    /// assert!(!started);
    /// ```
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&Fixture) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the fixture now (what dropping it does).
    pub fn shutdown(self) {}
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Tests share one fixture between the thread that runs the client and the one that checks it.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Fixture>();
};

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("base_url", &self.shared.base_url)
            .field("cdn_url", &self.shared.cdn_url)
            .finish()
    }
}
