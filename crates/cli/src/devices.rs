//! `hearth devices`: this machine's compute devices as llama.cpp sees them.

use anyhow::Result;

use crate::args::DevicesArgs;

fn gib(n: u64) -> String {
    format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
}

pub fn devices(a: DevicesArgs) -> Result<()> {
    let list = hearth_engine::devices::list();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "devices": list }))?);
        return Ok(());
    }
    let mut rows = vec![["NAME", "KIND", "BACKEND", "FREE", "TOTAL", "MEMORY", "DESCRIPTION"].map(String::from).to_vec()];
    for d in &list {
        let memory = match (d.kind.as_str(), d.shared) {
            ("cpu", _) => "RAM".to_string(),
            (_, true) => "shared with RAM".to_string(),
            _ => "own".to_string(),
        };
        rows.push(vec![d.name.clone(), d.kind.clone(), d.backend.clone(), gib(d.free), gib(d.total), memory, d.description.clone()]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    if !list.iter().any(|d| d.is_gpu()) {
        let built: Vec<&str> = [
            cfg!(feature = "vulkan").then_some("Vulkan"),
            cfg!(feature = "cuda").then_some("CUDA"),
            cfg!(feature = "rocm").then_some("ROCm"),
            cfg!(feature = "metal").then_some("Metal"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if built.is_empty() {
            eprintln!("no GPU: this hearth is built for the CPU only (scripts/build.sh --gpu vulkan|cuda|rocm builds one with a GPU backend)");
        } else {
            eprintln!(
                "no GPU found by the {} backend (is the driver installed? `vulkaninfo --summary` / `nvidia-smi` / `rocminfo` should list it; a CPU-based Vulkan driver such as lavapipe is used only with GGML_VK_VISIBLE_DEVICES=0)",
                built.join(", ")
            );
        }
    }
    Ok(())
}
