//! Progress reporting. The store prints nothing: it tells a [`Reporter`], which the CLI draws
//! as progress bars (or plain lines) and the server streams as Ollama `/api/pull` status lines.

/// Receives progress events. Every method has a default that ignores the event.
pub trait Reporter: Send + Sync {
    /// A step without a byte count: "pulling manifest", "verifying sha256 digest", ...
    fn status(&self, _status: &str) {}
    /// A transfer starts: `id` names it ("pulling sha256:<64 hex>" for a blob whose digest is
    /// known; see [`short_id`] for display), `total` is its size when known,
    /// `done` the bytes already there (a resumed download).
    fn start(&self, _id: &str, _total: Option<u64>, _done: u64) {}
    /// `n` more bytes of transfer `id` arrived.
    fn advance(&self, _id: &str, _n: u64) {}
    /// Something the user should know while it goes on: a retry, a stall, a re-check.
    fn note(&self, _id: &str, _message: &str) {}
    /// Transfer `id` is complete.
    fn finish(&self, _id: &str) {}
}

/// Ignores everything.
pub struct NoProgress;

impl Reporter for NoProgress {}

/// An id for people: a blob's digest shortened to 12 hex digits, as Ollama shows it
/// ("pulling sha256:2a6f…" → "pulling 2a6f30c232c3").
pub fn short_id(id: &str) -> String {
    match id.split_once("sha256:") {
        Some((head, hex)) if hex.len() >= 12 => format!("{head}{}", &hex[..12]),
        _ => id.to_string(),
    }
}
