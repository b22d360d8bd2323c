//! ggml's RPC backend: remote devices for the cluster work.
//!
//! `ggml-rpc.h` is not part of the bindings of `llama-cpp-sys-2`, so its functions are declared
//! here. The library `libggml-rpc.a` is built because `.cargo/config.toml` sets `GGML_RPC=ON`.

use std::ffi::{c_char, CString};

use crate::sys;
use crate::EngineError;

unsafe extern "C" {
    fn ggml_backend_rpc_add_server(endpoint: *const c_char) -> sys::ggml_backend_reg_t;
    fn ggml_backend_rpc_start_server(
        endpoint: *const c_char,
        cache_dir: *const c_char,
        n_threads: usize,
        n_devices: usize,
        devices: *mut sys::ggml_backend_dev_t,
    );
    fn ggml_backend_rpc_get_device_memory(
        endpoint: *const c_char,
        device: u32,
        free: *mut usize,
        total: *mut usize,
    );
}

/// ggml aborts the whole process when it cannot reach an RPC server, so every call that talks
/// to one first checks here that it answers.
fn check_reachable(endpoint: &str) -> Result<(), EngineError> {
    use std::net::{TcpStream, ToSocketAddrs};
    let unreachable = |reason: String| EngineError::Rpc { endpoint: endpoint.to_string(), reason };
    let addrs: Vec<_> = endpoint
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("not a host:port address ({e})")))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(unreachable(match last {
        Some(e) => format!("cannot connect ({e}); is `hearth worker` or rpc-server running there?"),
        None => "the name resolves to no address".into(),
    }))
}

/// Registers the RPC server at `endpoint` (`host:port`) so that models loaded afterwards can
/// offload layers to it. Registering the same endpoint twice is harmless.
/// Returns the server's devices.
pub(crate) fn add_server(endpoint: &str) -> Result<Vec<sys::ggml_backend_dev_t>, EngineError> {
    let c = CString::new(endpoint).map_err(|_| EngineError::Rpc {
        endpoint: endpoint.to_string(),
        reason: "the address contains a NUL byte".into(),
    })?;
    check_reachable(endpoint)?;
    crate::model::backend_init();
    // SAFETY: `c` is a valid C string; the returned registry is owned by ggml for the program.
    let reg = unsafe { ggml_backend_rpc_add_server(c.as_ptr()) };
    if reg.is_null() {
        return Err(EngineError::Rpc {
            endpoint: endpoint.to_string(),
            reason: crate::log::take_last_error().unwrap_or_else(|| "could not connect".into()),
        });
    }
    // SAFETY: `reg` is a valid registry returned by ggml just above.
    unsafe { sys::ggml_backend_register(reg) };
    // SAFETY: a valid registry; its devices live for the program.
    Ok(unsafe { (0..sys::ggml_backend_reg_dev_count(reg)).map(|i| sys::ggml_backend_reg_dev_get(reg, i)).collect() })
}

/// Free and total memory in bytes that the RPC server at `endpoint` reports for device 0.
pub fn device_memory(endpoint: &str) -> Result<(u64, u64), EngineError> {
    let c = CString::new(endpoint).map_err(|_| EngineError::Rpc {
        endpoint: endpoint.to_string(),
        reason: "the address contains a NUL byte".into(),
    })?;
    check_reachable(endpoint)?;
    crate::model::backend_init();
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: valid C string and out-pointers to locals.
    unsafe { ggml_backend_rpc_get_device_memory(c.as_ptr(), 0, &mut free, &mut total) };
    if total == 0 {
        return Err(EngineError::Rpc {
            endpoint: endpoint.to_string(),
            reason: "the server did not answer".into(),
        });
    }
    Ok((free as u64, total as u64))
}

/// The ggml RPC protocol version of the vendored llama.cpp (`RPC_PROTO_*_VERSION` in
/// `ggml-rpc.h`): a controller and a worker must agree on it.
pub const RPC_PROTO: &str = "7.0.0";

pub use crate::devices::Device as LocalDevice;

/// This machine's devices (CPU, GPUs), with their free and total memory now.
pub fn local_devices() -> Vec<LocalDevice> {
    crate::devices::list()
}

/// The devices a worker serves by default: the GPUs if there are any, else the CPU (as
/// llama.cpp's `rpc-server`).
pub fn default_serve_devices() -> Vec<String> {
    let all = local_devices();
    let gpus: Vec<String> = all.iter().filter(|d| d.kind != "cpu" && d.kind != "accel").map(|d| d.name.clone()).collect();
    if gpus.is_empty() {
        all.into_iter().filter(|d| d.kind == "cpu").map(|d| d.name).collect()
    } else {
        gpus
    }
}

/// Serves the named local devices (see [`local_devices`]; empty: [`default_serve_devices`])
/// as RPC devices on `endpoint` (`host:port`). Blocks forever: run it on a thread of its own.
/// `cache_dir` lets the server keep tensors it has received, and find them again by hash.
/// `private`: only this process may connect (see [`guard`]).
pub fn serve(endpoint: &str, threads: usize, cache_dir: Option<&str>, devices: &[String], private: bool) -> Result<(), EngineError> {
    let err = |reason: String| EngineError::Rpc { endpoint: endpoint.to_string(), reason };
    let ep = CString::new(endpoint).map_err(|_| err("the address contains a NUL byte".into()))?;
    let cache = cache_dir.map(CString::new).transpose().map_err(|_| err("the cache directory contains a NUL byte".into()))?;
    let wanted = if devices.is_empty() { default_serve_devices() } else { devices.to_vec() };
    let local: Vec<_> = crate::devices::raw().into_iter().filter(|(_, d)| d.backend != "RPC").collect();
    let mut chosen = Vec::new();
    for name in &wanted {
        match local.iter().find(|(_, d)| d.name.eq_ignore_ascii_case(name)) {
            Some((dev, _)) => chosen.push(*dev),
            None => {
                let names: Vec<&str> = local.iter().map(|(_, d)| d.name.as_str()).collect();
                return Err(err(format!("no device named {name:?} here (devices: {})", names.join(", "))));
            }
        }
    }
    if chosen.is_empty() {
        return Err(err("no device to serve".into()));
    }
    if private {
        guard::protect(endpoint);
    }
    // SAFETY: the device handles come from ggml's registry and live for the program.
    unsafe {
        ggml_backend_rpc_start_server(
            ep.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            threads,
            chosen.len(),
            chosen.as_mut_ptr(),
        );
    }
    Err(err("the RPC server stopped (is the address already in use?)".into()))
}

/// Only this process may talk to the RPC servers it runs privately.
///
/// ggml's RPC server has no authentication: whoever connects can allocate memory, run graphs
/// and feed its deserializer. `hearth worker` puts it on a loopback port behind its token gate,
/// but any local process can reach loopback. ggml's server accepts connections with the C
/// library's `accept`, which this crate defines over the real one (Rust's own sockets, tokio's
/// included, use `accept4` and never come here): a connection to a protected port whose other
/// end is not a socket of this process is closed before ggml reads a byte. Linux only (the
/// check reads `/proc`); elsewhere the port is as reachable as before.
mod guard {
    use std::sync::Mutex;

    /// Loopback ports where this process serves ggml RPC.
    static PROTECTED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

    pub(super) fn protect(endpoint: &str) {
        // Keeps the object that holds `accept` in the link, so that it is the one ggml calls.
        std::hint::black_box(accept as unsafe extern "C" fn(_, _, _) -> _);
        if let Some(port) = endpoint.rsplit(':').next().and_then(|p| p.parse().ok()) {
            PROTECTED.lock().unwrap_or_else(|p| p.into_inner()).push(port);
        }
    }

    /// The C library's `accept`, with the check above. `accept4` is the same system call.
    #[no_mangle]
    pub unsafe extern "C" fn accept(fd: libc::c_int, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> libc::c_int {
        loop {
            // SAFETY: the caller's arguments, passed on unchanged.
            let conn = unsafe { libc::accept4(fd, addr, len, 0) };
            if conn < 0 || allowed(conn) {
                return conn;
            }
            // SAFETY: `conn` was just accepted and is ours to close.
            unsafe { libc::close(conn) };
        }
    }

    fn allowed(conn: libc::c_int) -> bool {
        use std::os::fd::FromRawFd;
        // SAFETY: borrows `conn` for two queries; ManuallyDrop leaves it open.
        let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(conn) });
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { return true };
        if !PROTECTED.lock().unwrap_or_else(|p| p.into_inner()).contains(&local.port()) {
            return true;
        }
        match peer_is_this_process(peer, local) {
            Some(ours) => {
                if !ours {
                    tracing::warn!("refused a connection to ggml's RPC port {local} from {peer}: only this process may use it");
                }
                ours
            }
            None => {
                // The other end has closed already (the worker's own start-up check does).
                tracing::debug!("closed a connection to ggml's RPC port {local} whose other end is gone");
                false
            }
        }
    }

    /// Whether the socket at `peer`, connected to `local`, is one of this process's; `None`
    /// when that socket no longer exists.
    #[cfg(target_os = "linux")]
    pub(super) fn peer_is_this_process(peer: std::net::SocketAddr, local: std::net::SocketAddr) -> Option<bool> {
        let inode = socket_inode(peer, local).filter(|&i| i != 0)?;
        let want = format!("socket:[{inode}]");
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return Some(false) };
        Some(fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str())))
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn peer_is_this_process(_: std::net::SocketAddr, _: std::net::SocketAddr) -> Option<bool> {
        Some(true)
    }

    /// The inode of the socket whose own address is `from` and whose peer is `to`, from
    /// `/proc/net/tcp` or `tcp6`.
    #[cfg(target_os = "linux")]
    fn socket_inode(from: std::net::SocketAddr, to: std::net::SocketAddr) -> Option<u64> {
        use std::net::SocketAddr::{V4, V6};
        let hex = |a: std::net::SocketAddr| match a {
            V4(a) => format!("{:08X}:{:04X}", u32::from_le_bytes(a.ip().octets()), a.port()),
            V6(a) => {
                let words: String = a.ip().octets().chunks(4).map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]]))).collect();
                format!("{words}:{:04X}", a.port())
            }
        };
        let table = if from.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
        let (want_local, want_remote) = (hex(from), hex(to));
        std::fs::read_to_string(table).ok()?.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(1) == Some(&want_local.as_str()) && cols.get(2) == Some(&want_remote.as_str())).then(|| cols.get(9)?.parse().ok())?
        })
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        use std::net::{TcpListener, TcpStream};

        #[test]
        fn a_socket_of_this_process_is_told_from_one_of_another() {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server_side, _) = listener.accept().unwrap();
            assert_eq!(super::peer_is_this_process(client.local_addr().unwrap(), server_side.local_addr().unwrap()), Some(true));
            // A peer address with no socket in this process (the connection is gone).
            let (peer, local) = (client.local_addr().unwrap(), server_side.local_addr().unwrap());
            drop(client);
            drop(server_side);
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_ne!(super::peer_is_this_process(peer, local), Some(true));
        }
    }
}
