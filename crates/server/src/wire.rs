//! What both APIs put on the wire besides their own shapes: streamed bodies, dates and times.

use std::future::Future;

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

/// `frames` with `ping` added whenever `every` passes without a frame of its own: a stream
/// whose model works for a long time without visible output (a long tool-call argument, a
/// long prompt) stays alive for clients that give up on a silent stream (Claude Code retries
/// after about a minute of silence). The frame being produced is not cancelled by a ping.
pub fn keep_alive<S>(frames: S, every: std::time::Duration, ping: String) -> KeepAlive<S>
where
    S: futures_util::Stream<Item = String>,
{
    KeepAlive { frames: Box::pin(frames), timer: Box::pin(tokio::time::sleep(every)), every, ping }
}

pub struct KeepAlive<S> {
    frames: std::pin::Pin<Box<S>>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    every: std::time::Duration,
    ping: String,
}

impl<S: futures_util::Stream<Item = String>> futures_util::Stream for KeepAlive<S> {
    type Item = String;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<String>> {
        use std::task::Poll;
        let next = tokio::time::Instant::now() + self.every;
        match self.frames.as_mut().poll_next(cx) {
            Poll::Ready(item) => {
                self.timer.as_mut().reset(next);
                Poll::Ready(item)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.timer.as_mut().reset(next);
                    Poll::Ready(Some(self.ping.clone()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_silent_stream_gets_pings_and_loses_no_frame() {
        // "a", then a frame that takes 300 ms to make (its future must survive the pings), then
        // the end.
        let frames = futures_util::stream::unfold(0, |n| async move {
            match n {
                0 => Some(("a".to_string(), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some(("b".to_string(), 2))
                }
                _ => None,
            }
        });
        let got: Vec<String> = super::keep_alive(frames, Duration::from_millis(50), "ping".into()).collect().await;
        assert_eq!(got.first().map(String::as_str), Some("a"), "{got:?}");
        assert_eq!(got.last().map(String::as_str), Some("b"), "{got:?}");
        let pings = got.iter().filter(|f| *f == "ping").count();
        assert!(pings >= 1 && pings + 2 == got.len(), "{got:?}");
        // A stream that never pauses gets none.
        let busy: Vec<String> = super::keep_alive(futures_util::stream::iter(["x".to_string(), "y".to_string()]), Duration::from_millis(50), "ping".into()).collect().await;
        assert_eq!(busy, ["x", "y"]);
    }
}
