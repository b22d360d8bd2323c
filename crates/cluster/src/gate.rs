//! The worker's side: the public port in front of the loopback ggml RPC server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::hello::{self, Hello, Reply};
use crate::net;
use crate::noise::{self, HandshakeError, SecureReader, SecureWriter};
use crate::pump::{self, Observer, Side};
use crate::{ClusterToken, Versions, HANDSHAKE_TIMEOUT};

/// Peers allowed to be in their handshake at once: beyond this, new connections are dropped
/// unread, so unauthenticated peers cannot hold unbounded memory or tasks.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// The peers in their handshake, oldest first.
#[derive(Default)]
struct Pending {
    queue: std::sync::Mutex<std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
    next: AtomicU64,
}

impl Pending {
    /// When full, removes the oldest pending peer and returns what wakes it to leave.
    fn make_room(&self) -> Option<Arc<tokio::sync::Notify>> {
        let mut q = self.queue.lock().expect("not poisoned");
        (q.len() >= MAX_PENDING_HANDSHAKES).then(|| q.pop_front().map(|(_, n)| n)).flatten()
    }

    fn enter(self: Arc<Self>) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(tokio::sync::Notify::new());
        self.queue.lock().expect("not poisoned").push_back((id, evicted.clone()));
        Slot { id, evicted, pending: self }
    }
}

/// A peer's place among the pending handshakes; leaving it (dropping) frees the place.
struct Slot {
    id: u64,
    evicted: Arc<tokio::sync::Notify>,
    pending: Arc<Pending>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pending.queue.lock().expect("not poisoned").retain(|(id, _)| *id != self.id);
    }
}

/// Answers a worker's control requests (status, preload, ...). Runs on a blocking thread, so
/// it may block; an `Err` is sent to the controller as the error message.
///
/// Implemented for closures `Fn(Value, &ControlContext) -> Result<Value, String>`.
pub trait Control: Send + Sync + 'static {
    fn handle(&self, request: Value, cx: &ControlContext) -> Result<Value, String>;
}

impl<F> Control for F
where
    F: Fn(Value, &ControlContext) -> Result<Value, String> + Send + Sync + 'static,
{
    fn handle(&self, request: Value, cx: &ControlContext) -> Result<Value, String> {
        self(request, cx)
    }
}

/// A [`Control`] that answers every request with an error.
pub struct NoControl;

impl Control for NoControl {
    fn handle(&self, _: Value, _: &ControlContext) -> Result<Value, String> {
        Err("this worker takes no control requests".into())
    }
}

/// What a control request is handled in.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// The controller that asked.
    pub peer: SocketAddr,
    /// The gate's counters when the request arrived.
    pub stats: GateStats,
}

/// A gate's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GateStats {
    /// RPC connections being forwarded now.
    pub rpc_active: usize,
    /// RPC connections forwarded since the gate started.
    pub rpc_total: u64,
    /// Peers dropped in the handshake (wrong or missing token, not our protocol, too slow).
    pub refused: u64,
}

/// The live counters behind [`GateStats`].
#[derive(Debug, Default)]
pub struct GateCounters {
    rpc_active: AtomicUsize,
    rpc_total: AtomicU64,
    refused: AtomicU64,
}

impl GateCounters {
    pub fn snapshot(&self) -> GateStats {
        GateStats {
            rpc_active: self.rpc_active.load(Ordering::Relaxed),
            rpc_total: self.rpc_total.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// The worker's public port: accepts only peers that prove the cluster token, answers pings
/// and control requests, and forwards RPC connections to the ggml RPC server.
pub struct Gate {
    /// What peers must prove.
    token: ClusterToken,
    /// The ggml RPC server, on loopback: each RPC connection gets its own connection to it.
    backend: SocketAddr,
    /// This worker's versions; a controller must run the same.
    versions: Versions,
    /// The handler of control requests.
    control: Arc<dyn Control>,
    /// Shared with whoever reports on the gate.
    counters: Arc<GateCounters>,
    /// How long a peer has for its handshake and hello.
    handshake_timeout: Duration,
}

impl Gate {
    pub fn new(token: ClusterToken, backend: SocketAddr, versions: Versions, control: Arc<dyn Control>) -> Self {
        Gate { token, backend, versions, control, counters: Arc::default(), handshake_timeout: HANDSHAKE_TIMEOUT }
    }

    /// Changes how long a peer has for its handshake and hello ([`HANDSHAKE_TIMEOUT`] by
    /// default).
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit;
        self
    }

    /// The gate's counters, live.
    pub fn counters(&self) -> Arc<GateCounters> {
        self.counters.clone()
    }

    /// Serves `listener` until `shutdown` completes; then every open connection is closed.
    ///
    /// At most [`MAX_PENDING_HANDSHAKES`] peers may be in their handshake at once; a new one
    /// past that evicts the oldest. Idle connections therefore cannot lock a controller out: its
    /// handshake takes one round trip, so only a flood faster than that could displace it.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let gate = Arc::new(self);
        let pending = Arc::new(Pending::default());
        let accept = net::accept_each(&listener, "the worker's port", |stream, peer| {
            if let Some(oldest) = pending.make_room() {
                debug!(%peer, "{MAX_PENDING_HANDSHAKES} handshakes pending: the oldest is dropped for this one");
                oldest.notify_one();
            }
            let slot = pending.clone().enter();
            Some(gate.clone().connection(stream, peer, slot))
        });
        // Ending the accept loop drops its connections' tasks.
        tokio::select! {
            () = shutdown => {}
            () = accept => {}
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, slot: Slot) {
        net::tune(&stream);
        let (read, write) = stream.into_split();
        let handshake = tokio::time::timeout(self.handshake_timeout, async {
            let (mut reader, writer) = noise::respond(read, write, &self.token).await?;
            let hello: Hello = reader.recv_json().await?;
            Ok::<_, HandshakeError>((reader, writer, hello))
        });
        let opened = tokio::select! {
            r = handshake => Some(r),
            () = slot.evicted.notified() => None,
        };
        drop(slot);
        let refusal = match opened {
            None => "dropped for a newer peer: too many handshakes pending".to_owned(),
            Some(Ok(Ok(opened))) => return self.authenticated(opened, peer).await,
            Some(Err(_)) => format!("no handshake within {:?}", self.handshake_timeout),
            Some(Ok(Err(HandshakeError::WrongKey))) => {
                "it did not prove the cluster token (a different or missing HEARTH_CLUSTER_TOKEN)".to_owned()
            }
            Some(Ok(Err(HandshakeError::NotHandshake(len)))) => {
                format!("its first bytes are not a hearth handshake (length {len}; a plaintext ggml RPC client?)")
            }
            Some(Ok(Err(HandshakeError::Io(e)))) => format!("the handshake failed: {e}"),
        };
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        warn!(%peer, "refused {peer}: {refusal}");
    }

    /// After the handshake: the peer holds the token.
    async fn authenticated<R, W>(&self, opened: (SecureReader<R>, SecureWriter<W>, Hello), peer: SocketAddr)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (reader, mut writer, hello) = opened;
        let theirs = hello.versions();
        let reply = if theirs != self.versions {
            let message = hello::mismatch(&format!("controller {peer}"), &theirs, "worker", &self.versions);
            warn!(%peer, "{message}");
            Reply::error(&self.versions, message)
        } else {
            match hello.purpose.as_str() {
                hello::PING => {
                    debug!(%peer, purpose = hello::PING, "controller connected");
                    Reply::ok(&self.versions, None)
                }
                hello::CONTROL => {
                    let request = hello.request.unwrap_or(Value::Null);
                    info!(%peer, purpose = hello::CONTROL, %request, "controller connected");
                    self.control(request, peer).await
                }
                hello::RPC => {
                    info!(%peer, purpose = hello::RPC, "controller connected");
                    match TcpStream::connect(self.backend).await {
                        Ok(mut backend) => {
                            net::tune(&backend);
                            if self.answer(&mut writer, peer, Reply::ok(&self.versions, None)).await {
                                self.rpc(&mut backend, reader, writer, peer).await;
                            }
                            return;
                        }
                        Err(e) => {
                            let message =
                                format!("its ggml RPC server at {} is not accepting connections: {e}", self.backend);
                            warn!(%peer, "{message}");
                            Reply::error(&self.versions, message)
                        }
                    }
                }
                other => {
                    let message = format!("unknown purpose {other:?}");
                    warn!(%peer, "{message}");
                    Reply::error(&self.versions, message)
                }
            }
        };
        self.answer(&mut writer, peer, reply).await;
    }

    async fn control(&self, request: Value, peer: SocketAddr) -> Reply {
        let control = self.control.clone();
        let cx = ControlContext { peer, stats: self.counters.snapshot() };
        match tokio::task::spawn_blocking(move || control.handle(request, &cx)).await {
            Ok(Ok(reply)) => Reply::ok(&self.versions, Some(reply)),
            Ok(Err(message)) => Reply::error(&self.versions, message),
            Err(e) => {
                warn!(%peer, "control request failed: {e}");
                Reply::error(&self.versions, format!("the control request failed on the worker: {e}"))
            }
        }
    }

    /// Sends the reply to the hello; false when the peer is gone.
    async fn answer<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut SecureWriter<W>,
        peer: SocketAddr,
        reply: Reply,
    ) -> bool {
        match writer.send_json(&reply).await {
            Ok(()) => true,
            Err(e) => {
                debug!(%peer, "cannot answer: {e}");
                false
            }
        }
    }

    async fn rpc<R, W>(
        &self,
        backend: &mut TcpStream,
        reader: SecureReader<R>,
        writer: SecureWriter<W>,
        peer: SocketAddr,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        self.counters.rpc_total.fetch_add(1, Ordering::Relaxed);
        let active = Active::new(&self.counters.rpc_active);
        let bytes = ByteCount::default();
        let result = pump::pump(backend, reader, writer, &bytes).await;
        drop(active);
        let (sent, received) = (bytes.outgoing.load(Ordering::Relaxed), bytes.incoming.load(Ordering::Relaxed));
        match result {
            Ok(()) => info!(%peer, received, sent, "controller's rpc connection closed"),
            Err((Side::Channel, e)) => info!(%peer, received, sent, "controller's rpc connection lost: {e}"),
            Err((Side::Plain, e)) => warn!(%peer, received, sent, "the ggml RPC server's connection failed: {e}"),
        }
    }
}

/// Bytes through one RPC connection, for its closing log line.
#[derive(Default)]
struct ByteCount {
    /// From the ggml RPC server to the controller.
    outgoing: AtomicU64,
    /// From the controller to the ggml RPC server.
    incoming: AtomicU64,
}

impl Observer for ByteCount {
    fn outgoing(&self, n: usize) {
        self.outgoing.fetch_add(n as u64, Ordering::Relaxed);
    }
    fn incoming(&self, n: usize) {
        self.incoming.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Counts one active RPC connection while it lives (also when its task is aborted).
struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Active(gauge)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
