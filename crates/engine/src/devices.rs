//! This machine's compute devices as ggml sees them (the CPU, GPUs of the backends built in:
//! Vulkan, CUDA, ROCm, Metal), their memory, and the lookups `--device` and
//! `--override-tensor` need.
//!
//! An integrated GPU (AMD APUs, Intel iGPUs, Apple silicon) allocates from the same RAM as
//! the CPU: [`Device::shared`] says so, and budgets count that memory once. On Linux an AMD
//! iGPU's share of RAM is the amdgpu driver's GTT (plus its small VRAM carve-out); where ggml's
//! own figure is smaller (some drivers report the carve-out only), the driver's is used.

use std::ffi::{c_char, CStr};

use crate::{sys, EngineError};

/// One of this machine's ggml devices.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    /// ggml's name: "CPU", "CUDA0", "Vulkan0", …
    pub name: String,
    pub description: String,
    /// "cpu", "gpu", "igpu" or "accel".
    pub kind: String,
    pub free: u64,
    pub total: u64,
    /// Its memory is the host's RAM (an integrated GPU, or the CPU itself).
    #[serde(default)]
    pub shared: bool,
    /// The backend that drives it: "CPU", "Vulkan", "CUDA", "RPC", …
    #[serde(default)]
    pub backend: String,
}

impl Device {
    /// A device layers can be offloaded to (not the CPU, not an accelerator of the CPU's).
    pub fn is_gpu(&self) -> bool {
        self.kind == "gpu" || self.kind == "igpu"
    }
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: ggml returns NUL-terminated strings that live as long as the device.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

pub(crate) fn raw() -> Vec<(sys::ggml_backend_dev_t, Device)> {
    crate::model::backend_init();
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
                let reg = sys::ggml_backend_dev_backend_reg(dev);
                let backend = if reg.is_null() { String::new() } else { text(sys::ggml_backend_reg_name(reg)) };
                let mut props: sys::ggml_backend_dev_props = std::mem::zeroed();
                sys::ggml_backend_dev_get_props(dev, &mut props);
                let mut d = Device {
                    name: text(sys::ggml_backend_dev_name(dev)),
                    description: text(sys::ggml_backend_dev_description(dev)),
                    kind: kind.into(),
                    free: free as u64,
                    total: total as u64,
                    shared: kind == "cpu" || kind == "igpu",
                    backend,
                };
                if kind == "igpu" {
                    if let Some((f, t)) = amdgpu_shared_memory(&text(props.device_id)) {
                        if t > d.total {
                            (d.free, d.total) = (f, t);
                        }
                    }
                }
                Some((dev, d))
            })
            .collect()
    }
}

/// Free and total bytes an AMD iGPU may use, VRAM carve-out plus GTT, from the amdgpu
/// driver's sysfs files of the card at PCI address `pci` ("0000:c5:00.0").
fn amdgpu_shared_memory(pci: &str) -> Option<(u64, u64)> {
    if pci.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/sys/class/drm").ok()?.flatten() {
        let dev = entry.path().join("device");
        let Ok(target) = std::fs::read_link(&dev) else { continue };
        if !target.file_name().is_some_and(|n| n.to_string_lossy().eq_ignore_ascii_case(pci)) {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(dev.join(f)).ok()?.trim().parse::<u64>().ok();
        let (gtt_total, gtt_used) = (read("mem_info_gtt_total")?, read("mem_info_gtt_used")?);
        let (vram_total, vram_used) = (read("mem_info_vram_total").unwrap_or(0), read("mem_info_vram_used").unwrap_or(0));
        let total = gtt_total + vram_total;
        return Some((total.saturating_sub(gtt_used + vram_used), total));
    }
    None
}

/// This machine's devices (CPU, GPUs), with their free and total memory now. RPC devices
/// registered in this process (workers' devices) are not listed.
pub fn list() -> Vec<Device> {
    raw().into_iter().map(|(_, d)| d).filter(|d| d.backend != "RPC" && !d.name.starts_with("RPC")).collect()
}

/// The device `--device NAME` means (case does not matter).
pub(crate) fn by_name(name: &str) -> Result<sys::ggml_backend_dev_t, EngineError> {
    let all = raw();
    all.iter()
        .find(|(_, d)| d.name.eq_ignore_ascii_case(name))
        .map(|(p, _)| *p)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|(_, d)| d.name.as_str()).collect();
            EngineError::InvalidRequest(format!("--device: no device named {name:?} here (devices: {}; `hearth devices` lists them)", names.join(", ")))
        })
}

/// The buffer type `--override-tensor REGEX=NAME` means: a device's own buffer type, by the
/// device's name or the buffer type's ("CPU", "Vulkan0", "CUDA0", "CUDA_Host", …).
pub(crate) fn buffer_type(name: &str) -> Result<sys::ggml_backend_buffer_type_t, EngineError> {
    let mut known = Vec::new();
    for (dev, d) in raw() {
        // SAFETY: plain queries on a valid device.
        let buft = unsafe { sys::ggml_backend_dev_buffer_type(dev) };
        if buft.is_null() {
            continue;
        }
        // SAFETY: a valid buffer type.
        let buft_name = text(unsafe { sys::ggml_backend_buft_name(buft) });
        if d.name.eq_ignore_ascii_case(name) || buft_name.eq_ignore_ascii_case(name) {
            return Ok(buft);
        }
        known.push(buft_name);
    }
    Err(EngineError::InvalidRequest(format!(
        "--override-tensor: no buffer type named {name:?} here (known: {})",
        known.join(", ")
    )))
}
