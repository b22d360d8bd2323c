//! This machine's GPUs as the scheduler budgets them: found once by the server (the runtime
//! links no llama.cpp), each with what hearth may use of it, and the order llama.cpp offloads
//! to them, which a plan's `tensor_split` must follow.

use hearth_gguf::plan::Device;
use serde::Serialize;

use crate::RuntimeError;

/// The key of the host's RAM in a model's per-device use.
pub const RAM: &str = "RAM";

/// A GPU of this machine and what hearth may use of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpu {
    /// ggml's name: "Vulkan0", "CUDA0", "ROCm0", "Metal".
    pub name: String,
    /// "gpu" (discrete) or "igpu" (integrated).
    pub kind: String,
    /// Its memory is the host's RAM (integrated): what it holds counts in the RAM budget too.
    pub shared: bool,
    /// Bytes hearth may use of it: its free memory when the server started, or less with
    /// `--device-memory`.
    pub budget: u64,
}

/// The GPUs a model loaded with `--device wanted` offloads to, in llama.cpp's order: the named
/// ones in the order given (`none`: none); by default every discrete GPU, or the integrated
/// ones when there is no discrete GPU (llama.cpp's default device list).
pub fn offload_order(all: &[Gpu], wanted: &[String]) -> Result<Vec<Gpu>, RuntimeError> {
    if wanted.is_empty() {
        let discrete: Vec<Gpu> = all.iter().filter(|g| g.kind != "igpu").cloned().collect();
        return Ok(if discrete.is_empty() { all.to_vec() } else { discrete });
    }
    if wanted.len() == 1 && wanted[0].eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    wanted
        .iter()
        .filter(|w| !w.eq_ignore_ascii_case("CPU"))
        .map(|w| {
            all.iter().find(|g| g.name.eq_ignore_ascii_case(w)).cloned().ok_or_else(|| RuntimeError::Invalid {
                field: "device".into(),
                why: format!(
                    "no GPU named {w:?} here (GPUs: {}; `hearth devices` lists them)",
                    if all.is_empty() { "none".to_string() } else { all.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ") }
                ),
            })
        })
        .collect()
}

/// The GPUs a model loaded with `load` offloads to: [`offload_order`] of its `--device`, none
/// with `--gpu-layers 0`, only the `--main-gpu` one with `--split-mode none` (as llama.cpp
/// keeps only that device).
pub fn for_load(all: &[Gpu], load: &hearth_protocol::LoadSettings) -> Result<Vec<Gpu>, RuntimeError> {
    if load.gpu_layers == Some(0) {
        return Ok(Vec::new());
    }
    let gpus = offload_order(all, &load.device)?;
    if load.split_mode != hearth_protocol::SplitMode::None || gpus.is_empty() {
        return Ok(gpus);
    }
    let i = usize::try_from(load.main_gpu).ok().filter(|&i| i < gpus.len()).ok_or_else(|| RuntimeError::Invalid {
        field: "main-gpu".into(),
        why: format!("{} is not a GPU index here (0 to {})", load.main_gpu, gpus.len() - 1),
    })?;
    Ok(vec![gpus[i].clone()])
}

/// The planner's devices for these GPUs, each with its whole budget.
pub fn plan_devices(gpus: &[Gpu]) -> Vec<Device> {
    gpus.iter().map(|g| Device::gpu(g.name.clone(), g.budget, g.shared)).collect()
}

/// Parses `--device-memory` caps: `NAME=SIZE` items (e.g. `Vulkan0=300M`), applied to `gpus`.
pub fn apply_caps(gpus: &mut [Gpu], caps: &[(String, u64)]) -> Result<(), RuntimeError> {
    for (name, cap) in caps {
        let g = gpus.iter_mut().find(|g| g.name.eq_ignore_ascii_case(name)).ok_or_else(|| RuntimeError::Invalid {
            field: "device-memory".into(),
            why: format!("no GPU named {name:?} here (`hearth devices` lists them)"),
        })?;
        g.budget = g.budget.min(*cap);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, kind: &str) -> Gpu {
        Gpu { name: name.into(), kind: kind.into(), shared: kind == "igpu", budget: 8 << 30 }
    }

    #[test]
    fn order_follows_llama() {
        let all = [gpu("Vulkan0", "igpu"), gpu("Vulkan1", "gpu"), gpu("CUDA0", "gpu")];
        let names = |v: Vec<Gpu>| v.into_iter().map(|g| g.name).collect::<Vec<_>>();
        assert_eq!(names(offload_order(&all, &[]).unwrap()), ["Vulkan1", "CUDA0"]);
        assert_eq!(names(offload_order(&all[..1], &[]).unwrap()), ["Vulkan0"]);
        assert_eq!(names(offload_order(&all, &["cuda0".into(), "Vulkan0".into()]).unwrap()), ["CUDA0", "Vulkan0"]);
        assert!(offload_order(&all, &["none".into()]).unwrap().is_empty());
        let e = offload_order(&all, &["Metal".into()]).unwrap_err().to_string();
        assert!(e.contains("Metal") && e.contains("Vulkan0, Vulkan1, CUDA0"), "{e}");
    }

    #[test]
    fn split_mode_none_keeps_the_main_gpu() {
        use hearth_protocol::{LoadSettings, SplitMode};
        let all = [gpu("CUDA0", "gpu"), gpu("CUDA1", "gpu")];
        let one = LoadSettings { split_mode: SplitMode::None, main_gpu: 1, ..LoadSettings::default() };
        assert_eq!(for_load(&all, &one).unwrap()[0].name, "CUDA1");
        assert_eq!(for_load(&all, &LoadSettings::default()).unwrap().len(), 2);
        assert!(for_load(&all, &LoadSettings { gpu_layers: Some(0), ..LoadSettings::default() }).unwrap().is_empty());
        let bad = LoadSettings { split_mode: SplitMode::None, main_gpu: 2, ..LoadSettings::default() };
        assert!(for_load(&all, &bad).unwrap_err().to_string().contains("0 to 1"));
    }

    #[test]
    fn caps_lower_budgets() {
        let mut all = vec![gpu("Vulkan0", "gpu")];
        apply_caps(&mut all, &[("vulkan0".into(), 300 << 20)]).unwrap();
        assert_eq!(all[0].budget, 300 << 20);
        apply_caps(&mut all, &[("Vulkan0".into(), 16 << 30)]).unwrap();
        assert_eq!(all[0].budget, 300 << 20);
        assert!(apply_caps(&mut all, &[("CUDA3".into(), 1)]).is_err());
    }
}
