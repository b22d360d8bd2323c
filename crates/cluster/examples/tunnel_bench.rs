//! What the encrypted tunnel costs on loopback, against a direct TCP connection to the same
//! server, measured in the same run:
//!
//! - throughput: MiB/s of one bulk transfer to a sink;
//! - round-trip latency: small request/response exchanges, as ggml RPC does them;
//! - connection setup: connect plus a first exchange (the tunnel adds a Noise handshake).
//!
//! `cargo run --release -p hearth-cluster --example tunnel_bench [MIB] [ROUND_TRIPS]`
//!
//! A benchmark, not a test: on a shared 2-core machine the numbers move; the ratios less so.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_cluster::{ClusterToken, Gate, NoControl, Tunnel, Versions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Each measurement is taken this many times; the best counts (least disturbed by others).
const REPEATS: usize = 3;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("numbers: MIB ROUND_TRIPS"));
    let mib = args.next().unwrap_or(512);
    let round_trips = args.next().unwrap_or(5000);

    // Two threads, as on two machines: the worker's (servers and gates) and the controller's
    // (tunnels and the client), each with a single-threaded runtime, as the runner would run
    // its tunnels beside llama.cpp.
    let versions = Versions::new(env!("CARGO_PKG_VERSION"), "7.0.0");
    let token = ClusterToken::new("bench");
    let (addrs, ready) = std::sync::mpsc::channel();
    let (worker_token, worker_versions) = (token.clone(), versions.clone());
    std::thread::spawn(move || {
        runtime().block_on(async {
            let (sink, echo) = (serve(Mode::Sink).await, serve(Mode::Echo).await);
            let gates =
                (gate(sink, &worker_token, &worker_versions).await, gate(echo, &worker_token, &worker_versions).await);
            addrs.send((sink, echo, gates.0, gates.1)).unwrap();
            std::future::pending::<()>().await
        })
    });
    let (sink, echo, sink_gate, echo_gate) = ready.recv().unwrap();
    let controller = runtime();
    controller.block_on(async {
        let start = |gate: SocketAddr| Tunnel::start(gate.to_string(), token.clone(), versions.clone());
        let (sink_tunnel, echo_tunnel) = (start(sink_gate).await.unwrap(), start(echo_gate).await.unwrap());

        println!("loopback, best of {REPEATS}; direct TCP vs through the tunnel (gate + Noise both ways)");
        let direct = best(|| throughput(sink, mib), f64::max).await;
        let tunnelled = best(|| throughput(sink_tunnel.local_addr(), mib), f64::max).await;
        println!(
            "throughput, {mib} MiB:       direct {direct:8.0} MiB/s   tunnel {tunnelled:8.0} MiB/s   tunnel/direct {:.2}x",
            tunnelled / direct
        );
        let direct = best(|| latency(echo, round_trips), f64::min).await;
        let tunnelled = best(|| latency(echo_tunnel.local_addr(), round_trips), f64::min).await;
        println!(
            "round trip, 64 B x {round_trips}:  direct {direct:8.1} us       tunnel {tunnelled:8.1} us       tunnel/direct {:.2}x",
            tunnelled / direct
        );
        let direct = best(|| setup(echo), f64::min).await;
        let tunnelled = best(|| setup(echo_tunnel.local_addr()), f64::min).await;
        println!(
            "connection setup:          direct {direct:8.1} us       tunnel {tunnelled:8.1} us       tunnel/direct {:.2}x",
            tunnelled / direct
        );
        let stats = echo_tunnel.stats();
        println!(
            "echo tunnel counters: {} connections, {} round trips, {} B to worker, {} B from worker",
            stats.connections, stats.round_trips, stats.bytes_to_worker, stats.bytes_from_worker
        );
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[derive(Clone, Copy)]
enum Mode {
    /// Reads to the end, then answers with one byte.
    Sink,
    /// Sends back what it reads.
    Echo,
}

/// A plain TCP server standing in for ggml's RPC server.
async fn serve(mode: Mode) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match (stream.read(&mut buf).await, mode) {
                        (Ok(0) | Err(_), Mode::Sink) => return stream.write_all(&[1]).await.unwrap_or(()),
                        (Ok(0) | Err(_), Mode::Echo) => return,
                        (Ok(_), Mode::Sink) => {}
                        (Ok(n), Mode::Echo) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A gate in front of `backend`; its public address.
async fn gate(backend: SocketAddr, token: &ClusterToken, versions: &Versions) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let public = listener.local_addr().unwrap();
    let gate = Gate::new(token.clone(), backend, versions.clone(), Arc::new(NoControl));
    tokio::spawn(gate.serve(listener, std::future::pending()));
    public
}

async fn best<F, Fut>(measure: F, better: fn(f64, f64) -> f64) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut result = measure().await;
    for _ in 1..REPEATS {
        result = better(result, measure().await);
    }
    result
}

/// MiB/s of `mib` MiB sent to the sink, until its answer.
async fn throughput(addr: SocketAddr, mib: usize) -> f64 {
    let mut stream = connect(addr).await;
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    for _ in 0..mib {
        stream.write_all(&chunk).await.unwrap();
    }
    stream.shutdown().await.unwrap();
    stream.read_exact(&mut [0u8; 1]).await.unwrap();
    mib as f64 / start.elapsed().as_secs_f64()
}

/// Mean microseconds per 64-byte request/response exchange.
async fn latency(addr: SocketAddr, round_trips: usize) -> f64 {
    let mut stream = connect(addr).await;
    let mut buf = [7u8; 64];
    let start = Instant::now();
    for _ in 0..round_trips {
        stream.write_all(&buf.clone()).await.unwrap();
        stream.read_exact(&mut buf).await.unwrap();
    }
    micros(start.elapsed()) / round_trips as f64
}

/// Mean microseconds to connect and complete a first exchange, over 100 connections.
async fn setup(addr: SocketAddr) -> f64 {
    const N: usize = 100;
    let start = Instant::now();
    for _ in 0..N {
        let mut stream = connect(addr).await;
        stream.write_all(&[1]).await.unwrap();
        stream.read_exact(&mut [0u8; 1]).await.unwrap();
    }
    micros(start.elapsed()) / N as f64
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
