//! The downloader: one URL into one file, never hanging silently, never leaving a corrupt file.
//!
//! - The file is split into byte ranges fetched over several connections at once. Progress
//!   survives a killed process: `<dest>.partial` holds the bytes (sparse, full size) and
//!   `<dest>.partial.json` which part of each range is done, so the next run fetches only what
//!   is missing.
//! - A connection that delivers no byte for `stall_timeout` is dropped and its range resumed
//!   where it stopped; failures back off (honouring `Retry-After`); a range that fails
//!   `max_attempts` times in a row without progress fails the download with a message naming the
//!   URL and the bytes done.
//! - The sha256 is checked before the file is renamed into place. On a mismatch every range is
//!   fetched again and compared, and only ranges that differ are rewritten; a second mismatch
//!   discards the download.
//! - A server that ignores `Range` (answers 200) is read as one stream; a changed ETag or a 416
//!   means the file changed on the server, and the download starts over.
//! - `<dest>.lock` (an flock) makes concurrent downloads of the same file, from two processes
//!   or two requests, wait for one another instead of writing the same file twice.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, ETAG, RANGE, RETRY_AFTER};
use reqwest::{Client, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::progress::Reporter;
use crate::store::write_replace;
use crate::StoreError;

/// How downloads behave. Defaults suit real networks; tests shorten the times.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Parallel connections per file.
    pub connections: usize,
    /// A connection silent for this long is dropped and its range resumed.
    pub stall_timeout: Duration,
    /// Failures in a row, without any progress, before a range (and the download) gives up.
    pub max_attempts: u32,
    /// First backoff after a failure; doubles each time, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Range size bounds: ranges are about size / (2 × connections), within these.
    pub min_range: u64,
    pub max_range: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            connections: 4,
            stall_timeout: Duration::from_secs(30),
            max_attempts: 6,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            min_range: 1 << 20,
            max_range: 512 << 20,
        }
    }
}

/// One file to download.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// Sent on the first hop only (a redirect to another host drops them).
    pub headers: HeaderMap,
    /// The expected sha256 in hex, when the source says it.
    pub sha256: Option<String>,
    /// The expected size, when the source says it.
    pub size: Option<u64>,
    /// Where the complete file goes.
    pub dest: PathBuf,
    /// Names the transfer in progress reports.
    pub id: String,
}

/// What one range of the file has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Range {
    start: u64,
    /// Inclusive end.
    end: u64,
    /// Bytes done from `start`.
    done: u64,
}

impl Range {
    fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    fn complete(&self) -> bool {
        self.done >= self.len()
    }
}

/// What survives a killed process, beside the `.partial` file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    url: String,
    total: u64,
    etag: Option<String>,
    ranges: Vec<Range>,
}

/// How a server answered, as far as the downloader cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 206 with the range it covers.
    Partial { start: u64, end: u64, total: Option<u64> },
    /// 200: the whole file (a Range request was ignored).
    Full { total: Option<u64> },
    /// 416: the range is past the end (the file is shorter than we think).
    NotSatisfiable { total: Option<u64> },
    /// 408, 429, 5xx: try again, after this long when the server said.
    Retry { after: Option<Duration> },
    /// 401 or 403.
    Denied(u16),
    NotFound,
    /// Anything else.
    Fatal(u16),
}

/// Classifies a response from its status and headers. Pure, so it is table-tested.
pub fn classify(status: u16, content_range: Option<&str>, content_length: Option<u64>, retry_after: Option<&str>) -> Reply {
    match status {
        206 => match content_range.and_then(parse_content_range) {
            Some((start, end, total)) => Reply::Partial { start, end, total },
            None => Reply::Fatal(206),
        },
        200 => Reply::Full { total: content_length },
        416 => Reply::NotSatisfiable {
            total: content_range.and_then(|c| c.strip_prefix("bytes */")).and_then(|t| t.trim().parse().ok()),
        },
        408 | 429 | 500..=599 => Reply::Retry {
            after: retry_after.and_then(|s| s.trim().parse::<u64>().ok()).map(Duration::from_secs),
        },
        401 | 403 => Reply::Denied(status),
        404 | 410 => Reply::NotFound,
        s => Reply::Fatal(s),
    }
}

/// `bytes a-b/total` (total may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes ")?;
    let (range, total) = v.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some(())?;
    Some((a, b, total.trim().parse().ok()))
}

fn split_ranges(total: u64, opts: &DownloadOptions) -> Vec<Range> {
    if total == 0 {
        return Vec::new();
    }
    let want = total / (2 * opts.connections.max(1) as u64);
    let size = want.clamp(opts.min_range.max(1), opts.max_range.max(1));
    let mut out = Vec::new();
    let mut start = 0;
    while start < total {
        let end = (start + size).min(total) - 1;
        out.push(Range { start, end, done: 0 });
        start = end + 1;
    }
    out
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".partial");
    PathBuf::from(s)
}

fn state_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".partial.json");
    PathBuf::from(s)
}

fn lock_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

fn etag_of(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("x-linked-etag").or_else(|| headers.get(ETAG))?;
    let v = v.to_str().ok()?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    Some(v.trim_matches('"').to_string())
}

fn header_str<'a>(h: &'a HeaderMap, name: reqwest::header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn backoff(opts: &DownloadOptions, attempt: u32, after: Option<Duration>) -> Duration {
    let exp = opts.backoff.saturating_mul(1 << attempt.min(16));
    after.map_or(exp.min(opts.max_backoff), |a| a.min(Duration::from_secs(120)))
}

/// The HTTP client used for every download: no overall timeout (stalls are detected per read),
/// a connect timeout, and redirects followed (dropping credentials on another host).
pub fn client() -> Client {
    Client::builder()
        .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .expect("the HTTP client builds")
}

/// Downloads `t` to `t.dest`, resuming what an earlier run left. Returns the sha256 (hex) and
/// size of the complete file.
pub async fn download(client: &Client, t: &Target, opts: &DownloadOptions, reporter: &dyn Reporter) -> Result<(String, u64), StoreError> {
    let lock = lock_path(&t.dest);
    let lock_file = File::create(&lock).map_err(|e| StoreError::io(&lock, e))?;
    let mut waited = false;
    while lock_file.try_lock().is_err() {
        if !waited {
            reporter.note(&t.id, "another download of the same file is running; waiting for it");
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Another process may have finished it while we waited.
    if let (Some(sha), Ok(meta)) = (&t.sha256, fs::metadata(&t.dest)) {
        if t.size.is_none_or(|s| s == meta.len()) {
            reporter.start(&t.id, Some(meta.len()), meta.len());
            reporter.finish(&t.id);
            return Ok((sha.clone(), meta.len()));
        }
    }
    let result = download_locked(client, t, opts, reporter).await;
    drop(lock_file);
    let _ = fs::remove_file(&lock);
    result
}

async fn download_locked(client: &Client, t: &Target, opts: &DownloadOptions, reporter: &dyn Reporter) -> Result<(String, u64), StoreError> {
    let mut restarts = 0;
    let mut single_stream = false;
    loop {
        match attempt_download(client, t, opts, reporter, single_stream).await {
            Err(Restart::NoRanges) if !single_stream => {
                single_stream = true;
                reporter.note(&t.id, "the server ignores byte ranges; downloading as one stream");
            }
            Err(Restart::NoRanges) => {
                return Err(StoreError::Http { url: t.url.clone(), reason: "the server ignores byte ranges".into() })
            }
            Err(Restart::Changed(reason)) if restarts < 2 => {
                restarts += 1;
                reporter.note(&t.id, &format!("{reason}; starting over"));
                let _ = fs::remove_file(partial_path(&t.dest));
                let _ = fs::remove_file(state_path(&t.dest));
            }
            Err(Restart::Changed(reason)) => {
                return Err(StoreError::DownloadFailed {
                    url: t.url.clone(),
                    attempts: restarts + 1,
                    done: 0,
                    total: t.size.map_or("?".into(), |s| s.to_string()),
                    reason,
                })
            }
            Ok(r) => return r,
        }
    }
}

/// The download must start over from nothing.
enum Restart {
    /// The file changed on the server.
    Changed(String),
    /// The server answered a range request with the whole file.
    NoRanges,
}

struct Probe {
    final_url: String,
    total: Option<u64>,
    etag: Option<String>,
    ranges: bool,
}

async fn probe(client: &Client, t: &Target, opts: &DownloadOptions, reporter: &dyn Reporter) -> Result<Probe, StoreError> {
    let mut attempt = 0;
    // HEAD first (it carries no body, so it costs nothing); a server or presigned URL that
    // refuses HEAD, or does not say the size, gets a GET of the first byte instead.
    let mut use_get = false;
    loop {
        let mut retry_after = None;
        let req = if use_get {
            client.get(&t.url).headers(t.headers.clone()).header(RANGE, HeaderValue::from_static("bytes=0-0"))
        } else {
            client.head(&t.url).headers(t.headers.clone())
        };
        let failure = match tokio::time::timeout(opts.stall_timeout, req.send()).await {
            Err(_) => format!("no answer within {:?}", opts.stall_timeout),
            Ok(Err(e)) => describe(&e),
            Ok(Ok(resp)) => {
                let h = resp.headers();
                let status = resp.status().as_u16();
                let length = header_str(h, CONTENT_LENGTH).and_then(|v| v.parse().ok());
                let reply = classify(status, header_str(h, CONTENT_RANGE), length, header_str(h, RETRY_AFTER));
                let final_url = resp.url().to_string();
                let etag = etag_of(h);
                let accepts_ranges = header_str(h, reqwest::header::ACCEPT_RANGES).is_some_and(|v| v.contains("bytes"));
                match reply {
                    Reply::Full { total: Some(total) } if !use_get => {
                        return Ok(Probe { final_url, total: Some(total), etag, ranges: accepts_ranges })
                    }
                    Reply::Full { .. } | Reply::Denied(403 | 405) | Reply::Fatal(405) | Reply::Fatal(501) if !use_get => {
                        use_get = true;
                        continue;
                    }
                    Reply::Partial { total, .. } => return Ok(Probe { final_url, total, etag, ranges: total.is_some() }),
                    Reply::Full { total } => return Ok(Probe { final_url, total, etag, ranges: false }),
                    Reply::NotSatisfiable { total: Some(0) } => return Ok(Probe { final_url, total: Some(0), etag, ranges: false }),
                    Reply::Denied(status) => {
                        return Err(StoreError::Unauthorized {
                            url: t.url.clone(),
                            status,
                            hint: "access denied; for a private or gated Hugging Face repo set HF_TOKEN to a token that has access".into(),
                        })
                    }
                    Reply::NotFound => {
                        return Err(StoreError::RemoteNotFound { what: "file".into(), url: t.url.clone(), available: Vec::new() })
                    }
                    Reply::Retry { after } => {
                        retry_after = after;
                        format!("the server answered {}", resp.status())
                    }
                    Reply::NotSatisfiable { .. } | Reply::Fatal(_) => {
                        return Err(StoreError::Http { url: t.url.clone(), reason: format!("unexpected answer {}", resp.status()) })
                    }
                }
            }
        };
        attempt += 1;
        if attempt >= opts.max_attempts {
            return Err(StoreError::DownloadFailed {
                url: t.url.clone(),
                attempts: attempt,
                done: 0,
                total: t.size.map_or("?".into(), |s| s.to_string()),
                reason: failure,
            });
        }
        let wait = backoff(opts, attempt - 1, retry_after);
        reporter.note(&t.id, &format!("{failure}; retrying in {wait:.1?}"));
        tokio::time::sleep(wait).await;
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn attempt_download(
    client: &Client,
    t: &Target,
    opts: &DownloadOptions,
    reporter: &dyn Reporter,
    single_stream: bool,
) -> Result<Result<(String, u64), StoreError>, Restart> {
    let mut p = match probe(client, t, opts, reporter).await {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    if single_stream {
        p.ranges = false;
    }
    if let (Some(want), Some(got)) = (t.size, p.total) {
        if want != got {
            return Ok(Err(StoreError::Http {
                url: t.url.clone(),
                reason: format!("the server says the file has {got} bytes, the source said {want}"),
            }));
        }
    }
    let partial = partial_path(&t.dest);
    // Both paths hash the bytes while they arrive (in file order), so verifying costs nothing
    // extra at the end.
    let result = if p.ranges {
        let total = p.total.expect("ranges imply a known total");
        ranged(client, t, opts, reporter, &p, total).await?
    } else {
        single(client, t, opts, reporter, &p).await?
    };
    let hash = match result {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    // Verify, re-check ranges on a mismatch, then move into place.
    reporter.status("verifying sha256 digest");
    let hash = match &t.sha256 {
        Some(want) if *want != hash => {
            if !p.ranges {
                let _ = fs::remove_file(&partial);
                return Ok(Err(StoreError::DigestMismatch { from: t.url.clone(), expected: want.clone(), actual: hash }));
            }
            reporter.note(&t.id, "sha256 mismatch: fetching every range again to find the bad bytes");
            let fixed = match recheck(client, t, opts, reporter, &p).await {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            let again = match hash_file(&partial).await {
                Ok(h) => h,
                Err(e) => return Ok(Err(e)),
            };
            if again != *want {
                let _ = fs::remove_file(&partial);
                let _ = fs::remove_file(state_path(&t.dest));
                return Ok(Err(StoreError::DigestMismatch { from: t.url.clone(),
                    expected: want.clone(),
                    actual: again,
                }));
            }
            reporter.note(&t.id, &format!("repaired {fixed} range(s) that had wrong bytes"));
            again
        }
        _ => hash,
    };
    let size = match fs::metadata(&partial) {
        Ok(m) => m.len(),
        Err(e) => return Ok(Err(StoreError::io(&partial, e))),
    };
    // The blob must be on disk before its name says it is complete.
    if let Err(e) = File::open(&partial).and_then(|f| f.sync_all()) {
        return Ok(Err(StoreError::io(&partial, e)));
    }
    if let Err(e) = fs::rename(&partial, &t.dest) {
        return Ok(Err(StoreError::io(&t.dest, e)));
    }
    let _ = fs::remove_file(state_path(&t.dest));
    reporter.finish(&t.id);
    Ok(Ok((hash, size)))
}

async fn hash_file(path: &Path) -> Result<String, StoreError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::store::sha256_file(&path, |_| {}))
        .await
        .map_err(|e| StoreError::Invalid(format!("hashing failed: {e}")))?
}

/// A server without ranges: one stream from the start; a failure starts it over.
async fn single(client: &Client, t: &Target, opts: &DownloadOptions, reporter: &dyn Reporter, p: &Probe) -> Result<Result<String, StoreError>, Restart> {
    let partial = partial_path(&t.dest);
    let _ = fs::remove_file(state_path(&t.dest));
    reporter.start(&t.id, p.total, 0);
    let mut attempt = 0;
    loop {
        let file = match File::create(&partial) {
            Ok(f) => f,
            Err(e) => return Ok(Err(StoreError::io(&partial, e))),
        };
        let mut written = 0u64;
        let mut hasher = Sha256::new();
        let failure = match tokio::time::timeout(opts.stall_timeout, client.get(&p.final_url).send()).await {
            Err(_) => format!("no answer within {:?}", opts.stall_timeout),
            Ok(Err(e)) => describe(&e),
            Ok(Ok(resp)) if resp.status() != StatusCode::OK => format!("server answered {}", resp.status()),
            Ok(Ok(resp)) => {
                if p.etag.is_some() && etag_of(resp.headers()) != p.etag {
                    return Err(Restart::Changed("the file changed on the server (its ETag changed)".into()));
                }
                let mut stream = resp.bytes_stream();
                loop {
                    match tokio::time::timeout(opts.stall_timeout, stream.next()).await {
                        Err(_) => break format!("no data for {:?}", opts.stall_timeout),
                        Ok(None) => {
                            if p.total.is_none_or(|t| t == written) {
                                return Ok(Ok(hex::encode(hasher.finalize())));
                            }
                            break format!("the connection closed after {written} bytes");
                        }
                        Ok(Some(Err(e))) => break describe(&e),
                        Ok(Some(Ok(chunk))) => {
                            if let Err(e) = file.write_all_at(&chunk, written) {
                                return Ok(Err(StoreError::io(&partial, e)));
                            }
                            hasher.update(&chunk);
                            written += chunk.len() as u64;
                            reporter.advance(&t.id, chunk.len() as u64);
                        }
                    }
                }
            }
        };
        attempt += 1;
        if attempt >= opts.max_attempts {
            return Ok(Err(StoreError::DownloadFailed {
                url: t.url.clone(),
                attempts: attempt,
                done: written,
                total: p.total.map_or("?".into(), |s| s.to_string()),
                reason: failure,
            }));
        }
        reporter.note(&t.id, &format!("{failure}; the server does not support resuming, so starting the file again"));
        reporter.start(&t.id, p.total, 0);
        tokio::time::sleep(backoff(opts, attempt - 1, None)).await;
    }
}

/// Shared between the range workers.
struct Shared {
    state: Mutex<State>,
    saved: Mutex<Instant>,
    /// Set when one worker failed: the others stop.
    failed: AtomicBool,
    /// Set when every worker has returned.
    finished: AtomicBool,
    /// The URL range requests go to; refreshed when a presigned URL expires.
    url: Mutex<String>,
}

impl Shared {
    fn save(&self, path: &Path, force: bool) {
        let mut saved = self.saved.lock().expect("not poisoned");
        if force || saved.elapsed() > Duration::from_millis(200) {
            let state = self.state.lock().expect("not poisoned").clone();
            let text = serde_json::to_vec(&state).expect("state serializes");
            // Not fsynced: after a power loss a stale state only costs bytes fetched again, as
            // the sha256 check at the end catches anything wrong.
            if let Err(e) = write_replace(path, &text, false) {
                tracing::warn!("cannot save download state {}: {e}", path.display());
            }
            *saved = Instant::now();
        }
    }
}

enum RangeEnd {
    Done,
    Failed(StoreError),
    Restart(String),
    /// The server stopped honouring ranges.
    NoRanges,
}

async fn ranged(
    client: &Client,
    t: &Target,
    opts: &DownloadOptions,
    reporter: &dyn Reporter,
    p: &Probe,
    total: u64,
) -> Result<Result<String, StoreError>, Restart> {
    let partial = partial_path(&t.dest);
    let spath = state_path(&t.dest);
    let previous: Option<State> = fs::read(&spath).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let state = match previous {
        Some(s) if s.total == total && s.etag == p.etag && partial.exists() => s,
        Some(_) => {
            reporter.note(&t.id, "the file changed on the server since the last attempt; starting over");
            State { url: t.url.clone(), total, etag: p.etag.clone(), ranges: split_ranges(total, opts) }
        }
        None => State { url: t.url.clone(), total, etag: p.etag.clone(), ranges: split_ranges(total, opts) },
    };
    let file = match fs::OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&partial) {
        Ok(f) => f,
        Err(e) => return Ok(Err(StoreError::io(&partial, e))),
    };
    if let Err(e) = file.set_len(total) {
        return Ok(Err(StoreError::io(&partial, e)));
    }
    let done: u64 = state.ranges.iter().map(|r| r.done).sum();
    reporter.start(&t.id, Some(total), done);
    if done > 0 {
        reporter.note(&t.id, &format!("resuming: {done} of {total} bytes already here"));
    }
    let queue: VecDeque<usize> = state.ranges.iter().enumerate().filter(|(_, r)| !r.complete()).map(|(i, _)| i).collect();
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        saved: Mutex::new(Instant::now()),
        failed: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        url: Mutex::new(p.final_url.clone()),
    });
    shared.save(&spath, true);
    let queue = Arc::new(Mutex::new(queue));
    let file = Arc::new(file);
    let hasher = {
        let shared = shared.clone();
        let file = file.clone();
        std::thread::spawn(move || hash_prefix(&shared, &file, total))
    };
    let workers = (0..opts.connections.max(1)).map(|_| {
        let shared = shared.clone();
        let queue = queue.clone();
        let file = file.clone();
        let spath = spath.clone();
        async move {
            loop {
                if shared.failed.load(Ordering::Relaxed) {
                    return RangeEnd::Done;
                }
                let Some(i) = queue.lock().expect("not poisoned").pop_front() else { return RangeEnd::Done };
                match fetch_range(client, t, opts, reporter, &shared, &file, &spath, i).await {
                    RangeEnd::Done => {}
                    other => {
                        shared.failed.store(true, Ordering::Relaxed);
                        return other;
                    }
                }
            }
        }
    });
    let ends = futures_util::future::join_all(workers).await;
    shared.save(&spath, true);
    let mut outcome = Ok(());
    for end in ends {
        match end {
            RangeEnd::Done => {}
            RangeEnd::Failed(e) => {
                outcome = Err(Ok(e));
                break;
            }
            RangeEnd::Restart(why) => {
                outcome = Err(Err(Restart::Changed(why)));
                break;
            }
            RangeEnd::NoRanges => {
                outcome = Err(Err(Restart::NoRanges));
                break;
            }
        }
    }
    shared.finished.store(true, Ordering::Relaxed);
    let hash = tokio::task::spawn_blocking(move || hasher.join()).await;
    match outcome {
        Err(Ok(e)) => Ok(Err(e)),
        Err(Err(restart)) => Err(restart),
        Ok(()) => match hash {
            Ok(Ok(Ok(h))) => Ok(Ok(h)),
            Ok(Ok(Err(e))) => Ok(Err(StoreError::io(&partial, e))),
            _ => Ok(Err(StoreError::Invalid("the hashing thread failed".into()))),
        },
    }
}

/// Hashes the file in order while the ranges arrive: whenever the contiguous prefix of
/// complete bytes grows, the new part is read back (from the page cache) and hashed. Returns
/// the sha256 once the whole file is hashed, or an error when the download stopped first.
fn hash_prefix(shared: &Shared, file: &File, total: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut hashed = 0u64;
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let prefix = {
            let s = shared.state.lock().expect("not poisoned");
            let mut end = 0;
            for r in &s.ranges {
                if r.start != end {
                    break;
                }
                end = r.start + r.done.min(r.len());
                if !r.complete() {
                    break;
                }
            }
            end
        };
        if prefix > hashed {
            while hashed < prefix {
                let n = ((prefix - hashed) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], hashed)?;
                hasher.update(&buf[..n]);
                hashed += n as u64;
            }
            continue;
        }
        if hashed >= total {
            return Ok(hex::encode(hasher.finalize()));
        }
        if shared.finished.load(Ordering::Relaxed) || shared.failed.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the download stopped before the file was complete"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch_range(
    client: &Client,
    t: &Target,
    opts: &DownloadOptions,
    reporter: &dyn Reporter,
    shared: &Shared,
    file: &File,
    spath: &Path,
    i: usize,
) -> RangeEnd {
    let mut failures = 0u32;
    loop {
        if shared.failed.load(Ordering::Relaxed) {
            return RangeEnd::Done;
        }
        let (start, end, done) = {
            let s = shared.state.lock().expect("not poisoned");
            let r = &s.ranges[i];
            (r.start, r.end, r.done)
        };
        if start + done > end {
            return RangeEnd::Done;
        }
        let from = start + done;
        let url = shared.url.lock().expect("not poisoned").clone();
        let req = client.get(&url).header(RANGE, format!("bytes={from}-{end}"));
        let mut progressed = false;
        let mut retry_after = None;
        let failure = match tokio::time::timeout(opts.stall_timeout, req.send()).await {
            Err(_) => format!("no answer within {:?}", opts.stall_timeout),
            Ok(Err(e)) => describe(&e),
            Ok(Ok(resp)) => {
                let h = resp.headers();
                let reply = classify(resp.status().as_u16(), header_str(h, CONTENT_RANGE), None, header_str(h, RETRY_AFTER));
                let etag = etag_of(h);
                let expected_etag = shared.state.lock().expect("not poisoned").etag.clone();
                match reply {
                    Reply::Partial { start: s, total, .. } if s == from && total.is_none_or(|tt| tt == shared.state.lock().expect("not poisoned").total) => {
                        if expected_etag.is_some() && etag.is_some() && etag != expected_etag {
                            return RangeEnd::Restart("the file changed on the server (its ETag changed)".into());
                        }
                        let mut stream = resp.bytes_stream();
                        let mut pos = from;
                        loop {
                            match tokio::time::timeout(opts.stall_timeout, stream.next()).await {
                                Err(_) => break format!("no data for {:?} on bytes {pos}-{end}", opts.stall_timeout),
                                Ok(None) => {
                                    if pos > end {
                                        shared.save(spath, false);
                                        return RangeEnd::Done;
                                    }
                                    break format!("the connection closed at byte {pos} of range {from}-{end}");
                                }
                                Ok(Some(Err(e))) => break describe(&e),
                                Ok(Some(Ok(chunk))) => {
                                    // Never write past the range, whatever the server sends.
                                    let room = (end + 1 - pos) as usize;
                                    let chunk = &chunk[..chunk.len().min(room)];
                                    if let Err(e) = file.write_all_at(chunk, pos) {
                                        return RangeEnd::Failed(StoreError::io(&partial_path(&t.dest), e));
                                    }
                                    pos += chunk.len() as u64;
                                    progressed = true;
                                    shared.state.lock().expect("not poisoned").ranges[i].done = pos - start;
                                    reporter.advance(&t.id, chunk.len() as u64);
                                    shared.save(spath, false);
                                    if pos > end {
                                        return RangeEnd::Done;
                                    }
                                }
                            }
                        }
                    }
                    Reply::Partial { .. } => "the server sent a different range than asked".to_string(),
                    Reply::Full { .. } => return RangeEnd::NoRanges,
                    Reply::NotSatisfiable { .. } => {
                        return RangeEnd::Restart("the server answered 416: the file is shorter than when the download started".into())
                    }
                    Reply::Denied(status) => {
                        // A presigned redirect URL may have expired: resolve the original again.
                        if url != t.url {
                            match probe(client, t, opts, reporter).await {
                                Ok(p) => {
                                    *shared.url.lock().expect("not poisoned") = p.final_url;
                                    format!("the download URL was refused ({status}); resolved it again")
                                }
                                Err(e) => return RangeEnd::Failed(e),
                            }
                        } else {
                            return RangeEnd::Failed(StoreError::Unauthorized {
                                url: t.url.clone(),
                                status,
                                hint: "access denied; check the token".into(),
                            });
                        }
                    }
                    Reply::NotFound => {
                        return RangeEnd::Failed(StoreError::RemoteNotFound { what: "file".into(), url: url.clone(), available: Vec::new() })
                    }
                    Reply::Retry { after } => {
                        retry_after = after;
                        format!("server answered {}", resp.status())
                    }
                    Reply::Fatal(code) => return RangeEnd::Failed(StoreError::Http { url, reason: format!("unexpected answer {code}") }),
                }
            }
        };
        failures = if progressed { 0 } else { failures + 1 };
        if failures >= opts.max_attempts {
            let done: u64 = shared.state.lock().expect("not poisoned").ranges.iter().map(|r| r.done).sum();
            shared.save(spath, true);
            return RangeEnd::Failed(StoreError::DownloadFailed {
                url: t.url.clone(),
                attempts: failures,
                done,
                total: shared.state.lock().expect("not poisoned").total.to_string(),
                reason: failure,
            });
        }
        let wait = if progressed { Duration::ZERO } else { backoff(opts, failures.saturating_sub(1), retry_after) };
        reporter.note(&t.id, &format!("{failure}; retrying{}", if wait.is_zero() { String::new() } else { format!(" in {wait:.1?}") }));
        tokio::time::sleep(wait).await;
    }
}

/// After a sha256 mismatch: fetches each range again, compares it with the bytes on disk and
/// rewrites the ranges that differ. Returns how many differed.
async fn recheck(client: &Client, t: &Target, opts: &DownloadOptions, reporter: &dyn Reporter, p: &Probe) -> Result<usize, StoreError> {
    let partial = partial_path(&t.dest);
    let total = p.total.unwrap_or(0);
    let ranges = split_ranges(total, opts);
    let mut fixed = 0;
    for r in ranges {
        let local = {
            let partial = partial.clone();
            let (start, len) = (r.start, r.len());
            tokio::task::spawn_blocking(move || -> Result<Vec<u8>, StoreError> {
                let mut f = File::open(&partial).map_err(|e| StoreError::io(&partial, e))?;
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start)).map_err(|e| StoreError::io(&partial, e))?;
                let mut buf = vec![0u8; len as usize];
                f.read_exact(&mut buf).map_err(|e| StoreError::io(&partial, e))?;
                Ok(Sha256::digest(&buf).to_vec())
            })
            .await
            .map_err(|e| StoreError::Invalid(e.to_string()))??
        };
        let mut attempt = 0;
        let fresh = loop {
            match fetch_to_memory(client, &p.final_url, r.start, r.end, opts).await {
                Ok(b) => break b,
                Err(e) => {
                    attempt += 1;
                    if attempt >= opts.max_attempts {
                        return Err(StoreError::DownloadFailed {
                            url: t.url.clone(),
                            attempts: attempt,
                            done: 0,
                            total: total.to_string(),
                            reason: e,
                        });
                    }
                    tokio::time::sleep(backoff(opts, attempt - 1, None)).await;
                }
            }
        };
        if Sha256::digest(&fresh).as_slice() != local.as_slice() {
            reporter.note(&t.id, &format!("bytes {}-{} differed; rewriting them", r.start, r.end));
            let f = fs::OpenOptions::new().write(true).open(&partial).map_err(|e| StoreError::io(&partial, e))?;
            f.write_all_at(&fresh, r.start).map_err(|e| StoreError::io(&partial, e))?;
            fixed += 1;
        }
    }
    Ok(fixed)
}

async fn fetch_to_memory(client: &Client, url: &str, start: u64, end: u64, opts: &DownloadOptions) -> Result<Vec<u8>, String> {
    let resp = tokio::time::timeout(opts.stall_timeout, client.get(url).header(RANGE, format!("bytes={start}-{end}")).send())
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| describe(&e))?;
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        return Err(format!("server answered {}", resp.status()));
    }
    let mut out = Vec::with_capacity((end - start + 1) as usize);
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(opts.stall_timeout, stream.next()).await.map_err(|_| "stalled".to_string())? {
        out.extend_from_slice(&chunk.map_err(|e| describe(&e))?);
    }
    if out.len() as u64 != end - start + 1 {
        return Err(format!("got {} bytes of {}", out.len(), end - start + 1));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers() {
        let cases: Vec<(u16, Option<&str>, Option<u64>, Option<&str>, Reply)> = vec![
            (206, Some("bytes 0-0/100"), Some(1), None, Reply::Partial { start: 0, end: 0, total: Some(100) }),
            (206, Some("bytes 10-19/*"), None, None, Reply::Partial { start: 10, end: 19, total: None }),
            (206, Some("garbage"), None, None, Reply::Fatal(206)),
            (206, None, None, None, Reply::Fatal(206)),
            (200, None, Some(100), None, Reply::Full { total: Some(100) }),
            (416, Some("bytes */100"), None, None, Reply::NotSatisfiable { total: Some(100) }),
            (429, None, None, Some("3"), Reply::Retry { after: Some(Duration::from_secs(3)) }),
            (503, None, None, None, Reply::Retry { after: None }),
            (500, None, None, Some("soon"), Reply::Retry { after: None }),
            (401, None, None, None, Reply::Denied(401)),
            (403, None, None, None, Reply::Denied(403)),
            (404, None, None, None, Reply::NotFound),
            (418, None, None, None, Reply::Fatal(418)),
        ];
        for (status, cr, cl, ra, want) in cases {
            assert_eq!(classify(status, cr, cl, ra), want, "{status} {cr:?}");
        }
    }

    #[test]
    fn ranges_cover_the_file_exactly() {
        let opts = DownloadOptions { connections: 4, min_range: 10, max_range: 1000, ..Default::default() };
        for total in [1u64, 9, 10, 11, 79, 80, 81, 12345] {
            let r = split_ranges(total, &opts);
            assert_eq!(r[0].start, 0);
            assert_eq!(r.last().unwrap().end, total - 1);
            for w in r.windows(2) {
                assert_eq!(w[0].end + 1, w[1].start);
            }
            assert!(r.iter().all(|x| x.len() <= 1000));
        }
        assert!(split_ranges(0, &opts).is_empty());
        assert_eq!(split_ranges(8000, &opts).len(), 8, "about 2 ranges per connection");
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let o = DownloadOptions { backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1), ..Default::default() };
        assert_eq!(backoff(&o, 0, None), Duration::from_millis(100));
        assert_eq!(backoff(&o, 2, None), Duration::from_millis(400));
        assert_eq!(backoff(&o, 10, None), Duration::from_secs(1));
        assert_eq!(backoff(&o, 0, Some(Duration::from_secs(5))), Duration::from_secs(5));
    }
}
