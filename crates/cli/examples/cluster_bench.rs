//! The cluster's numbers, all from one run on this machine (`bench/cluster.sh` runs it):
//!
//! - prompt and generation tok/s of the starter model in one process vs over two loopback
//!   workers (encrypted tunnel), vs the same over plaintext ggml RPC (the cost of encryption),
//!   and with 1 ms and 5 ms of added one-way latency (a delaying proxy, as the kernel here has
//!   no netem);
//! - ggml RPC round trips and bytes per generated token, counted at the forwarding port;
//! - load time of a synthetic 1.2 GB model on a worker without and with a preloaded cache, at
//!   0, 1 and 5 ms.
//!
//! Workers and the controller share this machine's cores; set `PIN=1` to pin each worker to
//! a core of its own with taskset, `WORKER_THREADS=N` for the workers' threads (default 1). OMP_WAIT_POLICY=passive everywhere (spinning OpenMP threads
//! of three processes on two cores starve each other).

use std::path::Path;
use std::time::{Duration, Instant};

use hearth_cluster::DelayProxy;
use serde_json::json;

mod common;

use common::{add, open_worker, post, serve_with, starter_model, tunnel_totals, worker, TOKEN};

fn serve(store: &Path, args: &[&str]) -> (common::Proc, String) {
    serve_env(store, args, "passive")
}

fn serve_env(store: &Path, args: &[&str], omp_wait: &str) -> (common::Proc, String) {
    serve_with(store, &[&["--parallel", "1", "--ctx-size", "1024"][..], args].concat(), omp_wait)
}

fn prompt(run: usize) -> String {
    let mut p = format!("Run {run}. Summarise the following notes about hearths and fires. ");
    for i in 0..30 {
        p.push_str(&format!("Note {i}: a hearth keeps the fire of a home burning through the night. "));
    }
    p
}

/// Median prompt and generation tok/s over 3 generations of 64 tokens (and a warm-up).
fn speed(url: &str, model: &str) -> (f64, f64) {
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for run in 0..4 {
        let v = post(url, "/api/generate", json!({"model": model, "prompt": prompt(run), "raw": true, "stream": false,
            "options": {"temperature": 0, "num_predict": 64}}));
        if run == 0 {
            continue;
        }
        pp.push(v["prompt_eval_count"].as_f64().unwrap() / (v["prompt_eval_duration"].as_f64().unwrap() / 1e9));
        tg.push(v["eval_count"].as_f64().unwrap() / (v["eval_duration"].as_f64().unwrap() / 1e9));
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    (med(pp), med(tg))
}

/// Round trips and bytes per generated token: a 65-token generation less a 1-token one.
fn per_token(url: &str) -> (f64, f64) {
    let at = |n: u32, run: usize| {
        let (b0, t0, _) = tunnel_totals(url);
        post(url, "/api/generate", json!({"model": "smollm2", "prompt": prompt(100 + run), "raw": true, "stream": false,
            "options": {"temperature": 0, "num_predict": n}}));
        let (b1, t1, _) = tunnel_totals(url);
        (b1 - b0, t1 - t0)
    };
    let (b1, t1) = at(1, 0);
    let (b65, t65) = at(65, 1);
    ((t65 - t1) / 64.0, (b65 - b1) / 64.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let pin = std::env::var_os("PIN").is_some();
    let model = starter_model();
    add(&model, "smollm2", &store);
    let (_w1, a1) = worker(pin.then_some(0), &dir.path().join("c1"), &dir.path().join("none"), &[]);
    let (_w2, a2) = worker(pin.then_some(1), &dir.path().join("c2"), &dir.path().join("none"), &[]);
    let split = ["--gpu-layers", "99", "--tensor-split", "1,1"];

    println!("## Starter model (SmolLM2-135M Q4_1), 2 workers on 127.0.0.1, every layer on the workers{}\n", if pin { ", workers pinned to one core each" } else { "" });
    println!("| setup | prompt tok/s | generation tok/s | prompt ratio | generation ratio |");
    println!("|---|---|---|---|---|");
    let (s, url) = serve_env(&store, &[], "active");
    let (pp_active, tg_active) = speed(&url, "smollm2");
    drop(s);
    let (s, url) = serve(&store, &[]);
    let (pp0, tg0) = speed(&url, "smollm2");
    drop(s);
    println!("| one process (OMP_WAIT_POLICY=active, the default) | {pp_active:.1} | {tg_active:.1} | {:.2} | {:.2} |", pp_active / pp0, tg_active / tg0);
    println!("| one process (passive, the baseline of the ratios) | {pp0:.1} | {tg0:.1} | 1.00 | 1.00 |");
    let mut rows = Vec::new();
    let (s_enc, url_enc) = serve(&store, &[&["--workers", &format!("{a1},{a2}"), "--cluster-token", TOKEN][..], &split].concat());
    rows.push(("2 workers, encrypted tunnel", speed(&url_enc, "smollm2")));
    let (trips, bytes) = per_token(&url_enc);
    drop(s_enc);
    {
        // Workers without a token: ggml's port is open to plain ggml RPC clients.
        let (_o1, _, raw1) = open_worker(pin.then_some(0), &dir.path().join("o1"), &dir.path().join("none"));
        let (_o2, _, raw2) = open_worker(pin.then_some(1), &dir.path().join("o2"), &dir.path().join("none"));
        let (s_raw, url_raw) = serve(&store, &[&["--rpc", &format!("{raw1},{raw2}")][..], &split].concat());
        rows.push(("2 workers, plaintext ggml RPC (no tunnel)", speed(&url_raw, "smollm2")));
        drop(s_raw);
    }
    for ms in [1u64, 5] {
        let p1 = rt.block_on(DelayProxy::start(a1.parse().unwrap(), Duration::from_millis(ms))).unwrap();
        let p2 = rt.block_on(DelayProxy::start(a2.parse().unwrap(), Duration::from_millis(ms))).unwrap();
        let (s, url) = serve(&store, &[&["--workers", &format!("{},{}", p1.local_addr(), p2.local_addr()), "--cluster-token", TOKEN][..], &split].concat());
        rows.push((if ms == 1 { "2 workers, encrypted, +1 ms one way" } else { "2 workers, encrypted, +5 ms one way" }, speed(&url, "smollm2")));
        drop(s);
    }
    for (name, (pp, tg)) in rows {
        println!("| {name} | {pp:.1} | {tg:.1} | {:.2} | {:.2} |", pp / pp0, tg / tg0);
    }
    println!("\nPer generated token through the tunnel (2 workers): {trips:.1} ggml RPC round trips, {:.1} KB\n", bytes / 1e3);

    // Loading weights: a synthetic 1.2 GB model, every layer on one worker.
    let synth = dir.path().join("synth.gguf");
    hearth_testkit::synthetic::preload_model(&model, &synth).unwrap();
    add(&synth, "synth", &store);
    let worker_store = dir.path().join("worker-store");
    add(&synth, "synth", &worker_store);
    println!("## Loading a synthetic 1.2 GB model (random F16 weights) onto one worker\n");
    println!("| one-way latency | the model on the worker | load + 1 token s | bytes to the worker |");
    println!("|---|---|---|---|");
    let empty_store = dir.path().join("empty-store");
    for ms in [0u64, 1, 5] {
        for case in ["not in the worker's store", "in its store, hashed on request", "preloaded at start"] {
            let cache = tempfile::tempdir().unwrap();
            let extra: &[&str] = if case.starts_with("preloaded") { &["--preload", "synth"] } else { &[] };
            let wstore = if case.starts_with("not") { &empty_store } else { &worker_store };
            let started = Instant::now();
            let (w, addr) = worker(None, cache.path(), wstore, extra);
            let preload_s = started.elapsed().as_secs_f64();
            let proxy = (ms > 0).then(|| rt.block_on(DelayProxy::start(addr.parse().unwrap(), Duration::from_millis(ms))).unwrap());
            let target = proxy.as_ref().map_or(addr.clone(), |p| p.local_addr().to_string());
            let (s, url) = serve(&store, &["--workers", &target, "--cluster-token", TOKEN, "--gpu-layers", "99"]);
            let t = Instant::now();
            post(&url, "/api/generate", json!({"model": "synth", "prompt": "hi", "raw": true, "stream": false, "options": {"num_predict": 1}}));
            let secs = t.elapsed().as_secs_f64();
            let (_, _, bytes) = tunnel_totals(&url);
            let what = if case.starts_with("preloaded") { format!("{case} ({preload_s:.1} s to hash)") } else { case.to_string() };
            println!("| {ms} ms | {what} | {secs:.1} | {:.1} MB |", bytes / 1e6);
            drop(s);
            drop(w);
        }
    }
}
