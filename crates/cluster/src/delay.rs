//! A TCP proxy that adds latency, for tests and benchmarks of slow links (this machine's
//! kernel has no `netem`).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::net;

/// Chunks in flight per direction before reading pauses: 64 KiB reads, so up to 32 MiB, more
/// than a loopback link carries in a few milliseconds.
const QUEUE: usize = 512;

/// Listens on 127.0.0.1 and forwards each connection to `target`, delivering every chunk
/// `one_way` after it was read, in order, in each direction. Reading goes on while earlier
/// chunks wait, so the delay adds latency without limiting throughput. Tokio's timer has
/// millisecond resolution: a delay is rounded up to the next millisecond. Dropping the proxy
/// closes its port and connections.
pub struct DelayProxy {
    /// Where clients connect.
    local_addr: SocketAddr,
    /// The accept loop; aborting it ends every connection.
    accept: JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(target: SocketAddr, one_way: Duration) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let local_addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            net::accept_each(&listener, "a delay proxy", |client, _| Some(proxy(client, target, one_way))).await
        });
        Ok(DelayProxy { local_addr, accept })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn proxy(client: TcpStream, target: SocketAddr, delay: Duration) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    for stream in [&client, &server] {
        let _ = stream.set_nodelay(true);
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(direction(client_read, server_write, delay), direction(server_read, client_write, delay));
}

/// One direction: a reader that timestamps chunks into a queue, a writer that sends each when
/// it is due. An end (or error) of the input is passed on as an end of the output once the
/// queue has drained.
async fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (queue, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if queue.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}
