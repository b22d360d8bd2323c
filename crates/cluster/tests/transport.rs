//! The transport end to end on 127.0.0.1: a [`Tunnel`] to a [`Gate`] in front of an echo
//! server standing in for ggml's RPC server.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_cluster::{
    control, ping, ClusterToken, Control, ControlContext, DelayProxy, Error, Gate, GateCounters, NoControl, Tunnel,
    Versions,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Long enough for anything that should happen "promptly" on a loaded 2-core machine.
const PROMPTLY: Duration = Duration::from_secs(5);

fn versions() -> Versions {
    Versions::new("0.1.0", "7.0.0")
}

/// An echo server: what it saw, so tests can prove that nothing reached it.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connections, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (c, b) = (connections.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                b.fetch_add(n as u64, Ordering::SeqCst);
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        Backend { addr, connections, bytes, task }
    }

    fn untouched(&self) -> bool {
        self.connections.load(Ordering::SeqCst) == 0 && self.bytes.load(Ordering::SeqCst) == 0
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running gate; dropping it (or [`stop`](Self::stop)) shuts it down.
struct Worker {
    addr: SocketAddr,
    counters: Arc<GateCounters>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Worker {
    async fn start(gate: Gate) -> Worker {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = gate.counters();
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(gate.serve(listener, async move {
            let _ = stopped.await;
        }));
        Worker { addr, counters, shutdown: Some(shutdown), task }
    }

    async fn simple(token: &str, backend: SocketAddr) -> Worker {
        Worker::start(Gate::new(ClusterToken::new(token), backend, versions(), Arc::new(NoControl))).await
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the gate and waits until it has closed everything.
    async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        (&mut self.task).await.unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A worker (token "t") on an echo backend, a tunnel to it, and a local connection through the
/// tunnel that has made one exchange.
struct Link {
    backend: Backend,
    worker: Worker,
    tunnel: Tunnel,
    local: TcpStream,
}

impl Link {
    async fn open() -> Link {
        let backend = Backend::start().await;
        let worker = Worker::simple("t", backend.addr).await;
        let tunnel = Tunnel::start(worker.addr(), ClusterToken::new("t"), versions()).await.unwrap();
        let local = exchanged(&tunnel).await;
        Link { backend, worker, tunnel, local }
    }
}

/// A connection through `tunnel` whose first byte has come back.
async fn exchanged(tunnel: &Tunnel) -> TcpStream {
    let mut local = TcpStream::connect(tunnel.local_addr()).await.unwrap();
    local.write_all(b"x").await.unwrap();
    local.read_exact(&mut [0u8; 1]).await.unwrap();
    local
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap()
}

/// Polls `condition` until it holds, failing after [`PROMPTLY`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PROMPTLY, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `data` through `addr` (then ends the input) while reading the echo to its end.
async fn echo(addr: SocketAddr, data: Arc<Vec<u8>>) -> Vec<u8> {
    let (mut read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&data).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut echoed = Vec::new();
    read.read_to_end(&mut echoed).await.unwrap();
    writer.await.unwrap();
    echoed
}

/// Reads until the peer closes; returns whether it did within [`PROMPTLY`].
async fn closes_promptly(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(PROMPTLY, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_megabytes_both_ways_over_concurrent_connections() {
    let backend = Backend::start().await;
    let worker = Worker::simple("s3cret", backend.addr).await;
    let tunnel = Tunnel::start(worker.addr(), ClusterToken::new("s3cret"), versions()).await.unwrap();
    let sizes = [1, 65519, 65520, 3 << 20, 8 << 20];
    let runs: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let data = Arc::new(pattern(len, i as u64));
            let addr = tunnel.local_addr();
            tokio::spawn(async move { echo(addr, data.clone()).await == *data })
        })
        .collect();
    for (run, len) in runs.into_iter().zip(sizes) {
        assert!(run.await.unwrap(), "{len} bytes came back altered");
    }
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    let stats = tunnel.stats();
    assert_eq!((stats.bytes_to_worker, stats.bytes_from_worker), (total, total));
    assert_eq!((stats.connections, stats.broken), (sizes.len() as u64, 0));
    assert_eq!(backend.bytes.load(Ordering::SeqCst), total);
    eventually("the gate has no rpc connection left", || worker.counters.snapshot().rpc_active == 0).await;
    assert_eq!(worker.counters.snapshot().rpc_total, sizes.len() as u64);
}

#[tokio::test]
async fn counts_bytes_and_round_trips_exactly() {
    let backend = Backend::start().await;
    let worker = Worker::simple("", backend.addr).await;
    let tunnel = Tunnel::start(worker.addr(), ClusterToken::none(), versions()).await.unwrap();
    let mut local = TcpStream::connect(tunnel.local_addr()).await.unwrap();
    local.set_nodelay(true).unwrap();
    let before = tunnel.stats();
    const N: u64 = 300;
    let mut reply = [0u8; 24];
    for i in 0..N {
        let request = [i as u8; 24];
        local.write_all(&request).await.unwrap();
        local.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, request);
    }
    let stats = tunnel.stats().since(&before);
    assert_eq!(stats.round_trips, N);
    assert_eq!((stats.bytes_to_worker, stats.bytes_from_worker), (24 * N, 24 * N));
}

#[tokio::test]
async fn wrong_token_is_refused_before_the_backend_sees_anything() {
    let backend = Backend::start().await;
    let worker = Worker::simple("right", backend.addr).await;
    let err = Tunnel::start(worker.addr(), ClusterToken::new("wrong"), versions()).await.err().unwrap();
    assert!(matches!(err, Error::WrongToken { controller_has_token: true, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "worker {} refused this controller's cluster token: set the same HEARTH_CLUSTER_TOKEN on both",
            worker.addr
        )
    );
    eventually("the gate counts the refusal", || worker.counters.snapshot().refused == 1).await;
    assert!(backend.untouched());
}

#[tokio::test]
async fn a_missing_token_is_refused_by_an_authenticated_worker_and_vice_versa() {
    let backend = Backend::start().await;
    let authenticated = Worker::simple("right", backend.addr).await;
    let err = Tunnel::start(authenticated.addr(), ClusterToken::none(), versions()).await.err().unwrap();
    assert!(
        err.to_string().contains("token (this controller has none): set the same HEARTH_CLUSTER_TOKEN on both"),
        "{err}"
    );
    let open = Worker::simple("", backend.addr).await;
    let err = ping(&open.addr(), &ClusterToken::new("right"), &versions()).await.unwrap_err();
    assert!(matches!(err, Error::WrongToken { controller_has_token: true, .. }), "{err:?}");
    assert!(backend.untouched());
}

#[tokio::test]
async fn a_plaintext_ggml_client_is_dropped_unheard() {
    let backend = Backend::start().await;
    let worker = Worker::simple("", backend.addr).await;
    let mut client = TcpStream::connect(worker.addr).await.unwrap();
    // ggml RPC's hello: command 14, a little-endian u64 size, then the request.
    let mut hello = vec![14u8];
    hello.extend_from_slice(&8u64.to_le_bytes());
    hello.extend_from_slice(&[0; 8]);
    client.write_all(&hello).await.unwrap();
    assert!(closes_promptly(&mut client).await, "the gate kept a plaintext client's connection open");
    eventually("the gate counts the refusal", || worker.counters.snapshot().refused == 1).await;
    assert!(backend.untouched());
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let backend = Backend::start().await;
    let gate = Gate::new(ClusterToken::new("t"), backend.addr, versions(), Arc::new(NoControl));
    let worker = Worker::start(gate.handshake_timeout(Duration::from_millis(200))).await;
    let mut silent = TcpStream::connect(worker.addr).await.unwrap();
    let start = Instant::now();
    assert!(closes_promptly(&mut silent).await, "the gate kept a silent peer");
    assert!(start.elapsed() >= Duration::from_millis(200));
    eventually("the gate counts the refusal", || worker.counters.snapshot().refused == 1).await;
    assert!(backend.untouched());
}

/// A hundred idle connections (more than the pending-handshake slots) do not lock the real
/// controller out: a newcomer evicts the oldest pending peer.
#[tokio::test]
async fn idle_connections_cannot_fill_the_handshake_slots() {
    let backend = Backend::start().await;
    let worker = Worker::simple("t", backend.addr).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(worker.addr).await.unwrap());
    }
    let started = Instant::now();
    let tunnel = Tunnel::start(worker.addr(), ClusterToken::new("t"), versions()).await.expect("the controller gets in");
    let _local = exchanged(&tunnel).await;
    assert!(started.elapsed() < Duration::from_secs(3), "it waited {:?}", started.elapsed());
}

#[tokio::test]
async fn a_version_mismatch_names_both_versions() {
    let backend = Backend::start().await;
    let control: Arc<dyn Control> = Arc::new(NoControl);
    let gate = Gate::new(ClusterToken::new("t"), backend.addr, Versions::new("0.2.0", "8.0.0"), control);
    let worker = Worker::start(gate).await;
    let err = Tunnel::start(worker.addr(), ClusterToken::new("t"), versions()).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "worker {} runs hearth 0.2.0 (ggml RPC 8.0.0), this controller runs hearth 0.1.0 (ggml RPC 7.0.0): \
             install the same hearth version on both",
            worker.addr
        )
    );
    assert!(backend.untouched());
}

#[tokio::test]
async fn control_requests_are_answered_with_the_gates_counters() {
    let backend = Backend::start().await;
    let handler = |request: Value, cx: &ControlContext| match request["op"].as_str() {
        Some("status") => Ok(json!({"rpc_active": cx.stats.rpc_active, "peer_is_local": cx.peer.ip().is_loopback()})),
        _ => Err(format!("unknown request {request}")),
    };
    let gate = Gate::new(ClusterToken::new("t"), backend.addr, versions(), Arc::new(handler));
    let worker = Worker::start(gate).await;
    let token = ClusterToken::new("t");
    assert!(ping(&worker.addr(), &token, &versions()).await.unwrap() > Duration::ZERO);

    let (reply, rtt) = control(&worker.addr(), &token, &versions(), json!({"op": "status"})).await.unwrap();
    assert_eq!(reply, json!({"rpc_active": 0, "peer_is_local": true}));
    assert!(rtt > Duration::ZERO);

    // With an RPC connection open, status reports it.
    let tunnel = Tunnel::start(worker.addr(), token.clone(), versions()).await.unwrap();
    let _local = exchanged(&tunnel).await;
    let (reply, _) = control(&worker.addr(), &token, &versions(), json!({"op": "status"})).await.unwrap();
    assert_eq!(reply["rpc_active"], 1);

    let err = control(&worker.addr(), &token, &versions(), json!({"op": "fly"})).await.unwrap_err();
    assert_eq!(err.to_string(), format!("worker {}: unknown request {{\"op\":\"fly\"}}", worker.addr));
}

#[tokio::test]
async fn a_worker_that_goes_away_mid_stream_closes_the_local_connection() {
    let Link { backend: _backend, worker, tunnel, mut local } = Link::open().await;
    worker.stop().await;
    assert!(closes_promptly(&mut local).await, "the tunnel kept the local connection of a dead worker open");
    eventually("the tunnel counts the broken connection", || tunnel.stats().broken == 1).await;
    // New connections fail too, instead of hanging.
    let mut again = TcpStream::connect(tunnel.local_addr()).await.unwrap();
    assert!(closes_promptly(&mut again).await);
}

#[tokio::test]
async fn a_dead_backend_closes_the_local_connection() {
    let worker = Worker::simple("t", closed_port()).await;
    // The worker itself answers: the tunnel opens, its connections fail.
    let tunnel = Tunnel::start(worker.addr(), ClusterToken::new("t"), versions()).await.unwrap();
    let mut local = TcpStream::connect(tunnel.local_addr()).await.unwrap();
    assert!(closes_promptly(&mut local).await);
    eventually("the tunnel counts the failed connection", || tunnel.stats().broken == 1).await;
}

#[tokio::test]
async fn dropping_the_tunnel_closes_its_connections() {
    let Link { backend: _backend, worker, tunnel, mut local } = Link::open().await;
    drop(tunnel);
    assert!(closes_promptly(&mut local).await);
    eventually("the gate sees the connection end", || worker.counters.snapshot().rpc_active == 0).await;
}

#[tokio::test]
async fn an_unreachable_worker_is_an_error_naming_it() {
    let closed = closed_port();
    let err = Tunnel::start(closed.to_string(), ClusterToken::none(), versions()).await.err().unwrap();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with(&format!("cannot reach worker {closed}: ")), "{message}");
    assert!(message.ends_with("is `hearth worker` running there?"), "{message}");
}

#[tokio::test]
async fn the_delay_proxy_delays_each_direction() {
    let backend = Backend::start().await;
    let one_way = Duration::from_millis(20);
    let proxy = DelayProxy::start(backend.addr, one_way).await.unwrap();
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for i in 0..5u8 {
        let start = Instant::now();
        stream.write_all(&[i]).await.unwrap();
        let mut reply = [0u8; 1];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, [i]);
        assert!(start.elapsed() >= 2 * one_way, "round trip {:?} under twice {one_way:?}", start.elapsed());
    }
    // Delayed, but not throttled: a megabyte arrives whole and in order.
    let data = Arc::new(pattern(1 << 20, 7));
    assert!(echo(proxy.local_addr(), data.clone()).await == *data);
}

#[tokio::test]
async fn a_tunnel_works_across_a_slow_link() {
    let backend = Backend::start().await;
    let worker = Worker::simple("t", backend.addr).await;
    let one_way = Duration::from_millis(5);
    let link = DelayProxy::start(worker.addr, one_way).await.unwrap();
    let tunnel = Tunnel::start(link.local_addr().to_string(), ClusterToken::new("t"), versions()).await.unwrap();
    assert!(tunnel.rtt() >= 2 * one_way, "{:?}", tunnel.rtt());
    let data = Arc::new(pattern(2 << 20, 3));
    assert!(echo(tunnel.local_addr(), data.clone()).await == *data);
}

#[tokio::test]
async fn another_local_user_cannot_use_the_forwarding_port() {
    use std::os::unix::process::CommandExt;
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    if !me.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")) {
        eprintln!("SKIPPED: needs root to connect as another user");
        return;
    }
    let backend = Backend::start().await;
    let worker = Worker::simple("t", backend.addr).await;
    let tunnel = Tunnel::start(worker.addr(), ClusterToken::new("t"), versions()).await.unwrap();
    // The same user gets through.
    drop(exchanged(&tunnel).await);
    // `nobody` connects, sends a byte and waits for the echo: the port closes on it instead.
    let port = tunnel.local_addr().port();
    let script = format!(
        "import socket,sys\ns=socket.create_connection(('127.0.0.1',{port}))\ns.settimeout(10)\ns.sendall(b'x')\ntry:\n d=s.recv(1)\nexcept Exception:\n d=b''\nsys.exit(3 if d else 0)"
    );
    let status = tokio::task::spawn_blocking(move || std::process::Command::new("python3").args(["-c", &script]).uid(65534).gid(65534).status().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0), "another user's connection was forwarded");
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1, "only this user's connection reached the backend");
}
