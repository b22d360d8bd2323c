//! The request log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Which of the fixture's two listeners a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// [`crate::Fixture::base_url`]: Hugging Face, the Ollama registry and plain URLs.
    Main,
    /// [`crate::Fixture::cdn_url`]: where redirects for LFS files and registry blobs land.
    Cdn,
}

/// One request, as [`crate::Fixture::requests`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The listener it came to.
    pub listener: Listener,
    /// That listener's port.
    pub port: u16,
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `If-Range` header.
    pub if_range: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The status answered (0 while the answer is still being made, e.g. during a `Delay`).
    pub status: u16,
    /// Body bytes sent so far (handed to the connection; a client that stops reading may not
    /// have received them all).
    pub body_bytes: u64,
    /// Names of the faults that hit this request ([`crate::FaultKind::name`]).
    pub faults: Vec<&'static str>,
}

/// A log entry while its request is served.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) fixed: LoggedRequest,
    pub(crate) answer: Mutex<(u16, Vec<&'static str>)>,
    pub(crate) body_bytes: Arc<AtomicU64>,
}

impl Record {
    pub(crate) fn snapshot(&self) -> LoggedRequest {
        let answer = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        LoggedRequest {
            status: answer.0,
            faults: answer.1.clone(),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            ..self.fixed.clone()
        }
    }
}
