//! The controller's side: a local forwarding port per worker, and one-off control requests.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::hello::{self, Hello, Reply};
use crate::net;
use crate::noise::{self, HandshakeError, SecureReader, SecureWriter};
use crate::pump::{self, Observer, Side};
use crate::{ClusterToken, Error, Versions, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT};

/// Sends one control request to a worker's [`Control`](crate::Control) handler and returns its
/// answer and the round-trip time of the handshake (one network round trip plus the worker's
/// key exchange; not the handler's time). The handler's time is not bounded here: wrap the
/// call in `tokio::time::timeout` where that matters.
pub async fn control(
    worker: &str,
    token: &ClusterToken,
    versions: &Versions,
    request: Value,
) -> Result<(Value, Duration), Error> {
    let dialer = Dialer { worker: worker.to_owned(), token: token.clone(), versions: versions.clone() };
    let opened = dialer.open(hello::CONTROL, Some(request), None).await?;
    Ok((opened.reply.unwrap_or(Value::Null), opened.rtt))
}

/// Checks that a worker is reachable, holds the same token and runs the same versions;
/// returns the handshake's round-trip time.
pub async fn ping(worker: &str, token: &ClusterToken, versions: &Versions) -> Result<Duration, Error> {
    let dialer = Dialer { worker: worker.to_owned(), token: token.clone(), versions: versions.clone() };
    Ok(dialer.open(hello::PING, None, Some(HANDSHAKE_TIMEOUT)).await?.rtt)
}

/// A local forwarding port to one worker: every connection accepted on
/// [`local_addr`](Self::local_addr) (127.0.0.1) is carried, encrypted, to the worker's ggml
/// RPC server. Dropping the tunnel closes the port and every connection through it.
///
/// The tunnel's tasks run on the Tokio runtime that called [`start`](Self::start): keep that
/// runtime running while llama.cpp uses the port (a multi-thread runtime, or a thread of its
/// own blocked in a current-thread runtime; the latter had the lowest latency in
/// `examples/tunnel_bench.rs`).
pub struct Tunnel {
    /// Where llama.cpp connects.
    local_addr: SocketAddr,
    /// The worker, as given.
    worker: String,
    /// The handshake round trip of the ping in [`start`](Self::start).
    rtt: Duration,
    /// Traffic through the tunnel, shared with its connections.
    counters: Arc<TunnelCounters>,
    /// The accept loop; it owns the connections' tasks, so aborting it ends them all.
    accept: JoinHandle<()>,
}

impl Tunnel {
    /// Pings the worker (so that an unreachable worker, a wrong token or a version mismatch is
    /// an error here, before llama.cpp ever connects), then opens the local port.
    pub async fn start(worker: impl Into<String>, token: ClusterToken, versions: Versions) -> Result<Tunnel, Error> {
        let dialer = Arc::new(Dialer { worker: worker.into(), token, versions });
        let worker = dialer.worker.clone();
        let rtt = dialer.open(hello::PING, None, Some(HANDSHAKE_TIMEOUT)).await?.rtt;
        let listen_error = |source| Error::Listen { worker: worker.clone(), source };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let counters = Arc::new(TunnelCounters::default());
        let accept = tokio::spawn(forward_all(listener, dialer, counters.clone()));
        info!(worker, %local_addr, rtt_us = rtt.as_micros() as u64, "tunnel open");
        Ok(Tunnel { local_addr, worker, rtt, counters, accept })
    }

    /// The forwarding port, on 127.0.0.1.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The worker's address, as given to [`start`](Self::start).
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// The handshake round trip measured by [`start`](Self::start).
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// The live counters (clone the `Arc` to read them after the tunnel is gone).
    pub fn counters(&self) -> &Arc<TunnelCounters> {
        &self.counters
    }

    /// The counters now.
    pub fn stats(&self) -> TunnelStats {
        self.counters.snapshot()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Traffic through a tunnel, live. Bytes are payload (what llama.cpp and the ggml RPC server
/// exchange), not counting encryption or framing.
#[derive(Debug, Default)]
pub struct TunnelCounters {
    to_worker: AtomicU64,
    from_worker: AtomicU64,
    round_trips: AtomicU64,
    connections: AtomicU64,
    broken: AtomicU64,
}

impl TunnelCounters {
    pub fn snapshot(&self) -> TunnelStats {
        TunnelStats {
            bytes_to_worker: self.to_worker.load(Ordering::Relaxed),
            bytes_from_worker: self.from_worker.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            broken: self.broken.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`TunnelCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TunnelStats {
    /// Payload bytes from llama.cpp to the worker.
    pub bytes_to_worker: u64,
    /// Payload bytes from the worker to llama.cpp.
    pub bytes_from_worker: u64,
    /// Request/response round trips: per connection, each time bytes arrive from the worker
    /// after bytes were sent to it (N request/response exchanges count N).
    pub round_trips: u64,
    /// Local connections accepted.
    pub connections: u64,
    /// Connections that failed on the worker's side: it could not be reached, refused, or
    /// the connection broke mid-stream.
    pub broken: u64,
}

impl TunnelStats {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &TunnelStats) -> TunnelStats {
        TunnelStats {
            bytes_to_worker: self.bytes_to_worker.saturating_sub(earlier.bytes_to_worker),
            bytes_from_worker: self.bytes_from_worker.saturating_sub(earlier.bytes_from_worker),
            round_trips: self.round_trips.saturating_sub(earlier.round_trips),
            connections: self.connections.saturating_sub(earlier.connections),
            broken: self.broken.saturating_sub(earlier.broken),
        }
    }
}

/// How to reach one worker.
#[derive(Clone)]
struct Dialer {
    worker: String,
    token: ClusterToken,
    versions: Versions,
}

/// A channel whose hello was answered with ok.
struct Opened {
    reader: SecureReader<OwnedReadHalf>,
    writer: SecureWriter<OwnedWriteHalf>,
    /// The worker's answer (control requests).
    reply: Option<Value>,
    /// The handshake's round trip.
    rtt: Duration,
}

impl Dialer {
    /// Connects, proves the token, says hello with `purpose`, and waits for the answer (at
    /// most `reply_timeout`).
    async fn open(
        &self,
        purpose: &str,
        request: Option<Value>,
        reply_timeout: Option<Duration>,
    ) -> Result<Opened, Error> {
        let worker = || self.worker.clone();
        let timed_out = |what| Error::Timeout { worker: worker(), what, after: HANDSHAKE_TIMEOUT };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.worker))
            .await
            .map_err(|_| Error::Timeout { worker: worker(), what: "the TCP connection", after: CONNECT_TIMEOUT })?
            .map_err(|source| Error::Unreachable { worker: worker(), source })?;
        net::tune(&stream);
        let (read, write) = stream.into_split();
        let (mut reader, mut writer, rtt) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, noise::initiate(read, write, &self.token))
                .await
                .map_err(|_| timed_out("the handshake"))?
                .map_err(|e| self.handshake_error(e))?;
        let lost = |source| Error::Lost { worker: worker(), source };
        writer.send_json(&Hello::new(&self.versions, purpose, request)).await.map_err(lost)?;
        let reply: Reply = match reply_timeout {
            Some(limit) => tokio::time::timeout(limit, reader.recv_json()).await.map_err(|_| Error::Timeout {
                worker: worker(),
                what: "the hello",
                after: limit,
            })?,
            None => reader.recv_json().await,
        }
        .map_err(lost)?;
        let theirs = reply.versions();
        if theirs != self.versions {
            return Err(Error::VersionMismatch { worker: worker(), theirs, ours: self.versions.clone() });
        }
        if !reply.ok {
            let message = reply.error.unwrap_or_else(|| "refused without a reason".into());
            return Err(Error::Worker { worker: worker(), message });
        }
        Ok(Opened { reader, writer, reply: reply.reply, rtt })
    }

    fn handshake_error(&self, e: HandshakeError) -> Error {
        let worker = self.worker.clone();
        match e {
            HandshakeError::WrongKey => {
                Error::WrongToken { worker, controller_has_token: self.token.is_authenticated() }
            }
            HandshakeError::NotHandshake(len) => {
                Error::Handshake { worker, detail: format!("it answered with a {len}-byte message") }
            }
            HandshakeError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Error::Handshake { worker, detail: "it closed the connection".into() }
            }
            HandshakeError::Io(source) => Error::Lost { worker, source },
        }
    }
}

/// Accepts local connections until aborted, which aborts the connections too.
/// Only processes of this user may use the port: it carries the cluster token's authority, and
/// any local user can reach 127.0.0.1.
async fn forward_all(listener: TcpListener, dialer: Arc<Dialer>, counters: Arc<TunnelCounters>) {
    let me = net::own_uid();
    let port = listener.local_addr().ok();
    net::accept_each(&listener, "a forwarding port", |local, peer| {
        let theirs = port.and_then(|p| net::loopback_peer_uid(peer, p));
        if let (Some(me), Some(theirs)) = (me, theirs) {
            if me != theirs {
                warn!(worker = dialer.worker, %peer, uid = theirs, "refused a connection to the forwarding port from another user");
                return None;
            }
        }
        Some(forward(local, dialer.clone(), counters.clone()))
    })
    .await
}

/// Carries one local connection to the worker.
async fn forward(mut local: TcpStream, dialer: Arc<Dialer>, counters: Arc<TunnelCounters>) {
    net::tune(&local);
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let opened = match dialer.open(hello::RPC, None, Some(HANDSHAKE_TIMEOUT)).await {
        Ok(opened) => opened,
        Err(e) => {
            counters.broken.fetch_add(1, Ordering::Relaxed);
            // Dropping `local` closes it: llama.cpp sees the connection fail.
            return warn!("{e}");
        }
    };
    let meter = Meter { counters: &counters, awaiting_reply: AtomicBool::new(false) };
    match pump::pump(&mut local, opened.reader, opened.writer, &meter).await {
        Ok(()) => debug!(worker = dialer.worker, "connection closed"),
        Err((Side::Channel, e)) => {
            counters.broken.fetch_add(1, Ordering::Relaxed);
            let source = match e.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(e.kind(), "the worker closed the connection mid-stream"),
                _ => e,
            };
            warn!("{}", Error::Lost { worker: dialer.worker.clone(), source });
        }
        Err((Side::Plain, e)) => debug!(worker = dialer.worker, "local connection failed: {e}"),
    }
}

/// Counts one connection's traffic into the tunnel's counters.
struct Meter<'a> {
    counters: &'a TunnelCounters,
    /// Bytes went to the worker since it last sent any: its next bytes complete a round trip.
    awaiting_reply: AtomicBool,
}

impl Observer for Meter<'_> {
    fn outgoing(&self, n: usize) {
        self.counters.to_worker.fetch_add(n as u64, Ordering::Relaxed);
        self.awaiting_reply.store(true, Ordering::Relaxed);
    }

    fn incoming(&self, n: usize) {
        self.counters.from_worker.fetch_add(n as u64, Ordering::Relaxed);
        if self.awaiting_reply.swap(false, Ordering::Relaxed) {
            self.counters.round_trips.fetch_add(1, Ordering::Relaxed);
        }
    }
}
