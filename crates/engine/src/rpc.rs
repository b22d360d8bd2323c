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
pub(crate) fn add_server(endpoint: &str) -> Result<(), EngineError> {
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
    Ok(())
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

/// Serves this machine's CPU as an RPC device on `endpoint` (`host:port`). Blocks forever:
/// run it on a thread of its own. `cache_dir` lets the server keep tensors it has received.
pub fn serve(endpoint: &str, threads: usize, cache_dir: Option<&str>) -> Result<(), EngineError> {
    let bad = |what: &str| EngineError::Rpc {
        endpoint: endpoint.to_string(),
        reason: format!("the {what} contains a NUL byte"),
    };
    let ep = CString::new(endpoint).map_err(|_| bad("address"))?;
    let cache = cache_dir.map(CString::new).transpose().map_err(|_| bad("cache directory"))?;
    crate::model::backend_init();
    // SAFETY: the device list is built from ggml's registry; pointers live for the program.
    unsafe {
        let cpu = sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU);
        if cpu.is_null() {
            return Err(EngineError::Rpc {
                endpoint: endpoint.to_string(),
                reason: "no CPU backend".into(),
            });
        }
        let mut devices = [cpu];
        ggml_backend_rpc_start_server(
            ep.as_ptr(),
            cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            threads,
            devices.len(),
            devices.as_mut_ptr(),
        );
    }
    Err(EngineError::Rpc {
        endpoint: endpoint.to_string(),
        reason: "the RPC server stopped (is the address already in use?)".into(),
    })
}
