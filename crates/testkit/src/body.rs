//! The response body: a byte slice sent in chunks, counted as it goes, that can be paced,
//! stalled or cut.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The largest chunk handed to hyper at once.
const CHUNK: usize = 64 * 1024;
/// How long a cut body waits after its last bytes before failing, so that hyper has written
/// them to the socket before it drops the connection.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(50);

/// Where a body stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It does not: the whole slice is sent.
    Never,
    /// After this many bytes it sends nothing more, forever.
    Stall(u64),
    /// After this many bytes the connection is closed.
    Cut(u64),
}

/// A response body.
pub(crate) struct FixtureBody {
    /// The bytes to send (already sliced to the range and corrupted as asked).
    data: Bytes,
    /// How many of them were handed to hyper.
    pos: usize,
    /// Where to stop early.
    stop: Stop,
    /// Pacing, in bytes per second.
    throttle: Option<u64>,
    /// A pause in progress (pacing, or the flush before a cut).
    sleep: Option<Pin<Box<Sleep>>>,
    /// Counters that grow with every byte handed over: the request log entry's, the path's and
    /// the blob's.
    counters: Vec<Arc<AtomicU64>>,
    /// The flush pause before a cut has been taken.
    cut_armed: bool,
}

impl FixtureBody {
    pub(crate) fn empty() -> FixtureBody {
        FixtureBody::new(Bytes::new(), Stop::Never, None, Vec::new())
    }

    pub(crate) fn full(data: impl Into<Bytes>) -> FixtureBody {
        FixtureBody::new(data.into(), Stop::Never, None, Vec::new())
    }

    pub(crate) fn new(
        data: Bytes,
        stop: Stop,
        throttle: Option<u64>,
        counters: Vec<Arc<AtomicU64>>,
    ) -> FixtureBody {
        FixtureBody {
            data,
            pos: 0,
            stop,
            throttle: throttle.map(|b| b.max(1)),
            sleep: None,
            counters,
            cut_armed: false,
        }
    }
}

impl Body for FixtureBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
            }
            let len = this.data.len();
            let limit = match this.stop {
                Stop::Never => len,
                Stop::Stall(n) | Stop::Cut(n) => len.min(usize::try_from(n).unwrap_or(usize::MAX)),
            };
            if this.pos >= limit {
                if this.pos >= len {
                    return Poll::Ready(None);
                }
                match this.stop {
                    // Never woken: the connection stays open with nothing more to send until the
                    // client gives up or the runtime is shut down.
                    Stop::Stall(_) => return Poll::Pending,
                    Stop::Cut(_) if !this.cut_armed => {
                        this.cut_armed = true;
                        this.sleep = Some(Box::pin(tokio::time::sleep(FLUSH_BEFORE_CUT)));
                        continue;
                    }
                    _ => {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "hearth-testkit: injected cut",
                        ))))
                    }
                }
            }
            let chunk = match this.throttle {
                Some(bps) => usize::try_from(bps / 20).unwrap_or(CHUNK).clamp(1, CHUNK),
                None => CHUNK,
            };
            let n = chunk.min(limit - this.pos);
            let frame = this.data.slice(this.pos..this.pos + n);
            this.pos += n;
            for c in &this.counters {
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
            if let Some(bps) = this.throttle {
                if this.pos < len {
                    let pause = Duration::from_secs_f64(n as f64 / bps as f64);
                    this.sleep = Some(Box::pin(tokio::time::sleep(pause)));
                }
            }
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.data.len() - self.pos) as u64)
    }
}
