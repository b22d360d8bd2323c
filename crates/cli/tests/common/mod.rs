//! Shared by the CLI's integration tests: the real test models.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Upstream llama.cpp's greedy answer (see crates/engine/tests/engine.rs).
pub const UPSTREAM_GREEDY: &str = include_str!("../../../engine/tests/reference/greedy_capital.txt");

/// SmolLM2-135M-Instruct: `HEARTH_TEST_MODEL`, else fetched once by the project's script.
pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var_os("HEARTH_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => fetch("smollm2"),
    })
    .clone()
}

/// A model by the name `scripts/fetch-model.sh` knows it (`smollm2`, `gemma3`).
pub fn fetch(which: &str) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
    let out = Command::new("bash").arg(script).arg(which).output().expect("run scripts/fetch-model.sh");
    assert!(out.status.success(), "scripts/fetch-model.sh {which}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
