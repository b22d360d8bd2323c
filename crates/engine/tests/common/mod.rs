//! Finds the real test model (SmolLM2-135M-Instruct Q4_1), fetching it once per machine with
//! the project's script, and builds engines on it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use hearth_engine::{Engine, EngineOptions, ModelOptions};

pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("HEARTH_TEST_MODEL") {
            return PathBuf::from(p);
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("run scripts/fetch-model.sh");
        assert!(
            out.status.success(),
            "scripts/fetch-model.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// An engine on the test model: 2 threads, `parallel` sequences of `ctx_per_seq` tokens each.
pub fn engine(parallel: u32, ctx_per_seq: u32) -> Engine {
    let mut o = EngineOptions::new(ModelOptions::new(model_path()));
    o.parallel = parallel;
    o.ctx_size = ctx_per_seq * parallel;
    o.threads = Some(2);
    Engine::start(o).expect("start engine on the test model")
}

/// SmolLM2's chat prompt for one user message, with its default system prompt, as its own
/// template renders it.
pub fn chat_prompt(user: &str) -> String {
    format!(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// A log writer that keeps what it is given, for tests that read llama.cpp's log.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Held by each test of a file whose tests must not run beside each other (they measure how
/// long decodes take, and two cores shared with other tests' engines would skew it).
#[allow(dead_code)]
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
