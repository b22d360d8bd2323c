//! What every socket of the cluster shares: socket options and the accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Accepts connections until dropped, running `handle`'s future for each (or dropping the
/// connection where it returns `None`). Dropping this future aborts every connection's task.
pub(crate) async fn accept_each<F, Fut>(listener: &TcpListener, what: &str, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some(task) = handle(stream, peer) {
                        connections.spawn(task);
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accept on {what} failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Sets what every socket of the cluster needs: no Nagle delay (ggml RPC is many small round
/// trips), and keepalive probes, so a peer that vanished without closing (power loss, a cable)
/// is noticed in about half a minute rather than hours.
pub(crate) fn tune(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
}

/// The user id owning the socket at `peer` that is connected to `local`, both on IPv4
/// loopback, from Linux's `/proc/net/tcp` (`None` where that cannot be told).
pub(crate) fn loopback_peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (peer, local) else { return None };
    let hex = |a: std::net::SocketAddrV4| format!("{:08X}:{:04X}", u32::from_le_bytes(a.ip().octets()), a.port());
    let (want_local, want_remote) = (hex(peer), hex(local));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&want_local.as_str()) && cols.get(2) == Some(&want_remote.as_str())).then(|| cols.get(7)?.parse().ok())?
    })
}

/// This process's effective user id, from `/proc/self/status`.
pub(crate) fn own_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|r| r.split_whitespace().nth(1)).and_then(|u| u.parse().ok())
}
