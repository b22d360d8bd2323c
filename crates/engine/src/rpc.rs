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

/// The ggml RPC protocol version of the vendored llama.cpp (`RPC_PROTO_*_VERSION` in
/// `ggml-rpc.h`): a controller and a worker must agree on it.
pub const RPC_PROTO: &str = "7.0.0";

/// One of this machine's ggml devices.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LocalDevice {
    /// ggml's name: "CPU", "CUDA0", "Vulkan0", …
    pub name: String,
    pub description: String,
    /// "cpu", "gpu", "igpu" or "accel".
    pub kind: String,
    pub free: u64,
    pub total: u64,
}

fn devices_raw() -> Vec<(sys::ggml_backend_dev_t, LocalDevice)> {
    crate::model::backend_init();
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: ggml returns NUL-terminated strings that live as long as the device.
            unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: plain queries on ggml's device registry, which lives for the program.
    unsafe {
        (0..sys::ggml_backend_dev_count())
            .filter_map(|i| {
                let dev = sys::ggml_backend_dev_get(i);
                if dev.is_null() {
                    return None;
                }
                let kind = match sys::ggml_backend_dev_type(dev) {
                    sys::GGML_BACKEND_DEVICE_TYPE_CPU => "cpu",
                    sys::GGML_BACKEND_DEVICE_TYPE_GPU => "gpu",
                    sys::GGML_BACKEND_DEVICE_TYPE_IGPU => "igpu",
                    sys::GGML_BACKEND_DEVICE_TYPE_ACCEL => "accel",
                    _ => return None,
                };
                let (mut free, mut total) = (0usize, 0usize);
                sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
                let d = LocalDevice {
                    name: text(sys::ggml_backend_dev_name(dev)),
                    description: text(sys::ggml_backend_dev_description(dev)),
                    kind: kind.into(),
                    free: free as u64,
                    total: total as u64,
                };
                // RPC devices registered in this process are not local.
                (!d.name.starts_with("RPC")).then_some((dev, d))
            })
            .collect()
    }
}

/// This machine's devices (CPU, GPUs), with their free and total memory now.
pub fn local_devices() -> Vec<LocalDevice> {
    devices_raw().into_iter().map(|(_, d)| d).collect()
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
pub fn serve(endpoint: &str, threads: usize, cache_dir: Option<&str>, devices: &[String]) -> Result<(), EngineError> {
    let err = |reason: String| EngineError::Rpc { endpoint: endpoint.to_string(), reason };
    let ep = CString::new(endpoint).map_err(|_| err("the address contains a NUL byte".into()))?;
    let cache = cache_dir.map(CString::new).transpose().map_err(|_| err("the cache directory contains a NUL byte".into()))?;
    let wanted = if devices.is_empty() { default_serve_devices() } else { devices.to_vec() };
    let local = devices_raw();
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
