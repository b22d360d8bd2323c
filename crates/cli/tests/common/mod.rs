//! Shared by the CLI's integration tests: the real test models.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
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

/// Taken first by every test that runs a model: one at a time per test binary. The tests of a
/// binary run in parallel, and two runners decoding with two threads each on a 2-core machine
/// spin against each other in OpenMP's barriers (generation 50x slower), so a request would time
/// out by contention, not by a defect.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `hearth serve` on a free port with a store of its own.
pub struct Server {
    pub child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
    pub store: PathBuf,
    /// What the server has written to stderr.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_with(args, &[("smollm2", model_path())])
    }

    pub fn start_with(args: &[&str], models: &[(&str, PathBuf)]) -> Server {
        Server::start_exe(std::path::Path::new(env!("CARGO_BIN_EXE_hearth")), args, models, &[])
    }

    /// A server run by `exe` (e.g. a build with a GPU backend), with extra environment.
    pub fn start_exe(exe: &std::path::Path, args: &[&str], models: &[(&str, PathBuf)], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        for (name, path) in models {
            let st = Command::new(env!("CARGO_BIN_EXE_hearth"))
                .args(["add", path.to_str().unwrap(), "--name", name, "--no-progress"])
                .env("HEARTH_MODELS", &store)
                .env("HEARTH_HOST", "127.0.0.1:1")
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let mut child = Command::new(exe)
            .args(["serve", "--host", "127.0.0.1:0", "-t", "2"])
            .args(args)
            .envs(env.iter().copied())
            .env("HEARTH_MODELS", &store)
            .env_remove("HEARTH_API_KEY")
            .env_remove("HEARTH_HOST")
            .env_remove("HEARTH_WORKERS")
            .env_remove("HEARTH_CLUSTER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut seen = String::new();
        let url = loop {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "the server exited before listening: {seen}");
            seen.push_str(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr, kept for `log`.
        let log = std::sync::Arc::new(std::sync::Mutex::new(seen));
        let sink = log.clone();
        std::thread::spawn(move || {
            // Bytes, not lines of UTF-8: one bad byte must not stop the draining.
            let mut buf = Vec::new();
            while err.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf));
                buf.clear();
            }
        });
        Server { child, url, _dir: dir, store, log }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        match ureq::post(&format!("{}{path}", self.url)).timeout(Duration::from_secs(120)).send_json(body) {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// A POST whose answer is read as text (a stream).
    pub fn post_text(&self, path: &str, body: Value) -> (u16, String) {
        match ureq::post(&format!("{}{path}", self.url)).timeout(Duration::from_secs(120)).send_json(body) {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        match ureq::get(&format!("{}{path}", self.url)).timeout(Duration::from_secs(30)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        match ureq::get(&format!("{}{path}", self.url)).timeout(Duration::from_secs(30)).call() {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    pub fn runner_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep").args(["-P", &self.child.id().to_string()]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn chat(prompt: &str, n: u32) -> Value {
    json!({"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "stream": false,
           "options": {"temperature": 0, "num_predict": n}})
}

pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

