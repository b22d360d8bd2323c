//! What the benchmark examples share: hearth servers and workers as child processes on
//! loopback, and plain HTTP calls to them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "bench-secret";

pub fn hearth() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("hearth")
}

/// A child whose output lines are searched for `key`; returns the word after it, the lines
/// seen before it, and the rest to come.
pub fn spawn(mut cmd: Command, key: &str) -> (Child, String, Vec<String>, mpsc::Receiver<String>) {
    if std::env::var_os("OMP_WAIT_POLICY").is_none() && cmd.get_envs().all(|(k, _)| k != "OMP_WAIT_POLICY") {
        cmd.env("OMP_WAIT_POLICY", "passive");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start hearth");
    let (tx, rx) = mpsc::channel();
    // HEARTH_BENCH_LOG=FILE: every child's output is also appended there (with HEARTH_LOG,
    // the engine's decisions, say).
    let log = std::env::var_os("HEARTH_BENCH_LOG").map(|f| std::sync::Arc::new(std::sync::Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(f).expect("open HEARTH_BENCH_LOG"))));
    for r in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
        let (tx, log) = (tx.clone(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if let Some(log) = &log {
                    use std::io::Write;
                    let _ = writeln!(log.lock().unwrap(), "{line}");
                }
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| panic!("no {key:?} line in {seen:?}"));
        if let Some(rest) = line.split(key).nth(1) {
            return (child, rest.split_whitespace().next().unwrap().to_string(), seen, rx);
        }
        seen.push(line);
    }
}

pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A worker with the cluster token: (process, public address).
pub fn worker(cpu: Option<usize>, cache: &Path, store: &Path, extra: &[&str]) -> (Proc, String) {
    let (p, addr, _) = start_worker(cpu, cache, store, &[&["--token", TOKEN][..], extra].concat(), false);
    (p, addr)
}

/// A worker without a token, whose ggml RPC server any local process may use: (process,
/// public address, ggml's own loopback endpoint), for plain ggml RPC clients (`--rpc`).
pub fn open_worker(cpu: Option<usize>, cache: &Path, store: &Path) -> (Proc, String, String) {
    let (p, addr, raw) = start_worker(cpu, cache, store, &[], true);
    (p, addr, raw.expect("ggml's endpoint line"))
}

fn start_worker(cpu: Option<usize>, cache: &Path, store: &Path, args: &[&str], want_raw: bool) -> (Proc, String, Option<String>) {
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", &c.to_string()]).arg(hearth());
            t
        }
        None => Command::new(hearth()),
    };
    let threads = std::env::var("WORKER_THREADS").unwrap_or_else(|_| "1".into());
    cmd.args(["worker", "--listen", "127.0.0.1:0", "-t", &threads, "--cache-dir"]).arg(cache).args(args).env("HEARTH_MODELS", store);
    let (child, addr, seen, rx) = spawn(cmd, "listening on ");
    // ggml prints its own endpoint (the loopback port) as it starts; its output reaches the
    // pipe when it first accepts a connection (the worker's own start-up check).
    let raw = want_raw.then(|| {
        let mut lines = seen.into_iter().chain(std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(30)).ok()));
        lines.find_map(|l| l.split("endpoint       : ").nth(1).map(|r| r.trim().to_string()))
    });
    (Proc(child), addr, raw.flatten())
}

/// `hearth serve` on a free loopback port with `args` and `OMP_WAIT_POLICY=omp_wait` (empty:
/// OpenMP's default, which spins a while, then sleeps); returns the process and its URL.
pub fn serve_with(store: &Path, args: &[&str], omp_wait: &str) -> (Proc, String) {
    let mut cmd = Command::new(hearth());
    if omp_wait.is_empty() {
        cmd.env_remove("OMP_WAIT_POLICY");
    } else {
        cmd.env("OMP_WAIT_POLICY", omp_wait);
    }
    cmd.args(["serve", "--host", "127.0.0.1:0", "-t", "2"]).args(args).env("HEARTH_MODELS", store).env_remove("HEARTH_WORKERS");
    let (child, url, _, _rx) = spawn(cmd, "listening on ");
    (Proc(child), url)
}

/// Adds a model file to a store under `name`.
pub fn add(path: &Path, name: &str, store: &Path) {
    let st = Command::new(hearth()).args(["add", path.to_str().unwrap(), "--name", name, "--no-progress"]).env("HEARTH_MODELS", store).env("HEARTH_HOST", "127.0.0.1:1").status().unwrap();
    assert!(st.success());
}

/// The starter model, fetched once by the project's script.
pub fn starter_model() -> PathBuf {
    let out = Command::new("bash").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh")).output().unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Bytes both ways and round trips through every forwarding port; and bytes to the workers.
pub fn tunnel_totals(url: &str) -> (f64, f64, f64) {
    let c = get(url, "/api/cluster");
    let (mut bytes, mut trips, mut to) = (0.0, 0.0, 0.0);
    for t in c["tunnels"].as_array().unwrap() {
        to += t["stats"]["bytes_to_worker"].as_f64().unwrap();
        bytes += t["stats"]["bytes_to_worker"].as_f64().unwrap() + t["stats"]["bytes_from_worker"].as_f64().unwrap();
        trips += t["stats"]["round_trips"].as_f64().unwrap();
    }
    (bytes, trips, to)
}

pub fn post(url: &str, path: &str, body: Value) -> Value {
    ureq::post(&format!("{url}{path}")).timeout(Duration::from_secs(900)).send_json(body).unwrap_or_else(|e| panic!("{path}: {e}")).into_json().unwrap()
}

pub fn get(url: &str, path: &str) -> Value {
    ureq::get(&format!("{url}{path}")).call().unwrap().into_json().unwrap()
}

