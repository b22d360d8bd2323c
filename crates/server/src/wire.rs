//! What both APIs put on the wire besides their own shapes: streamed bodies, dates and times.

use axum::body::Body;

/// A streamed body: each item of `stream` is one NDJSON line or SSE frame. Dropping the body
/// (the client went away) drops the stream and with it the generation, which cancels it.
pub fn stream_body<S>(stream: S) -> Body
where
    S: futures_util::Stream<Item = String> + Send + 'static,
{
    use futures_util::StreamExt;
    Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>))
}

/// Now, as RFC 3339 with nanoseconds (Ollama's `created_at`).
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    dt.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds as nanoseconds (Ollama's durations).
pub fn ms_to_ns(ms: f64) -> u64 {
    (ms * 1e6).max(0.0) as u64
}

/// A random number for ids (`chatcmpl-..`, `msg_..`, `resp_..`): not a secret.
pub fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_secs());
    h.finish()
}
