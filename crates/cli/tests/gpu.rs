//! GPU offload through the real binaries with the real model: a hearth built with a GPU backend
//! (`HEARTH_GPU_BIN`: `scripts/build.sh --gpu vulkan` prints its path; CI runs it on mesa's
//! lavapipe, a Vulkan driver that runs on the CPU) against this test's CPU build.
//!
//! Without `HEARTH_GPU_BIN` the GPU tests say so and pass (a developer's quick `cargo test`);
//! `scripts/test.sh` always sets it, and then a missing or unusable GPU fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

mod common;

use common::{model_path as model, text, Server};

/// The GPU build, or `None` (the test is skipped) when none is given.
fn gpu_bin() -> Option<PathBuf> {
    let Some(p) = std::env::var_os("HEARTH_GPU_BIN") else {
        eprintln!("HEARTH_GPU_BIN is not set: no GPU build to test (scripts/test.sh builds one)");
        return None;
    };
    let p = PathBuf::from(p);
    assert!(p.is_file(), "HEARTH_GPU_BIN={} is not a file", p.display());
    Some(p)
}

/// What the GPU build needs to see a CPU-type Vulkan device (lavapipe): ggml skips those unless
/// they are named. Harmless with a real GPU at index 0.
const GPU_ENV: &[(&str, &str)] = &[("GGML_VK_VISIBLE_DEVICES", "0")];

fn hearth(exe: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env_remove("HEARTH_LOG").env("HEARTH_HOST", "127.0.0.1:1").envs(GPU_ENV.iter().copied());
    c
}

fn run(exe: &Path, args: &[&str]) -> Output {
    hearth(exe).args(args).stdin(Stdio::null()).output().unwrap()
}

fn cpu_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hearth"))
}

/// The GPU's name in the GPU build (`Vulkan0`), with its memory.
fn the_gpu(exe: &Path) -> Value {
    let out = run(exe, &["devices", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["devices"].as_array().unwrap().iter().find(|d| d["kind"] == "gpu" || d["kind"] == "igpu").cloned().unwrap_or_else(|| panic!("no GPU listed: {v}"))
}

/// Sum of the MiB figures on llama.cpp's log lines that contain `what` and `device`.
fn reported(log: &str, device: &str, what: &str) -> f64 {
    log.lines()
        .filter(|l| l.contains(what) && l.split(what).next().is_some_and(|head| head.split_whitespace().last() == Some(device)))
        .filter_map(|l| l.split('=').nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_gpu_is_listed_with_its_memory() {
    let Some(gpu) = gpu_bin() else { return };
    let d = the_gpu(&gpu);
    assert!(d["total"].as_u64().unwrap() > 0 && d["free"].as_u64().unwrap() > 0, "{d}");
    assert!(!d["backend"].as_str().unwrap().is_empty(), "{d}");
    // The table says the same.
    let out = run(&gpu, &["devices"]);
    let table = text(&out.stdout);
    assert!(table.contains(d["name"].as_str().unwrap()) && table.contains("CPU"), "{table}");
    // The CPU build lists no GPU and says how to get one.
    let out = run(&cpu_bin(), &["devices"]);
    assert!(text(&out.stderr).contains("scripts/build.sh --gpu"), "{}", text(&out.stderr));
}

/// Checks each device's model, KV and compute buffers in llama.cpp's log against the plan of
/// `hearth fit --json` for the same flags.
fn check_buffers(gpu: &Path, model: &Path, gpu_name: &str, flags: &[&str], rows: &mut Vec<String>) -> Value {
    let m = model.to_str().unwrap();
    let devices = format!("cpu=64G,gpu:{gpu_name}=64G");
    let mut fit_args = vec!["fit", m, "--json", "--devices", &devices];
    fit_args.extend(flags);
    let out = run(gpu, &fit_args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let placement = &plan["placement"];
    let mut run_args = vec!["run", m, "Hi", "--raw", "-n", "1", "--temp", "0", "-t", "2", "-v", "--no-mmap"];
    run_args.extend(flags);
    // Without --gpu-layers, `hearth run` plans by itself (with the GPU's real free memory).
    let gl = placement["gpu_layers"].as_u64().unwrap().to_string();
    let out = run(gpu, &run_args);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    let offloaded = format!("offloaded {gl}/31 layers");
    assert!(log.contains(&offloaded), "{offloaded}: {log}");
    rows.push(format!("{}:", if flags.is_empty() { "auto".to_string() } else { flags.join(" ") }));
    for (i, d) in placement["devices"].as_array().unwrap().iter().enumerate() {
        // The host's buffers: ggml's CPU ones and the GPU backend's pinned host ones.
        let host_pinned = format!("{}_Host", gpu_name.trim_end_matches(|c: char| c.is_ascii_digit()));
        let keys: Vec<&str> = if i == 0 { vec!["CPU", &host_pinned] } else { vec![gpu_name] };
        let key = keys[0];
        let mib = |k: &str| d[k].as_u64().unwrap() as f64 / (1 << 20) as f64;
        let ours = [mib("weights"), mib("kv_cache"), mib("compute")];
        let sum = |what: &str| keys.iter().map(|k| reported(&log, k, what)).sum::<f64>();
        let real = [sum("model buffer size"), sum("KV buffer size"), sum("compute buffer size")];
        rows.push(format!(
            "  {:<12} layers {:>2}+{:<6} model {:7.2} / {:7.2}  KV {:6.2} / {:6.2}  compute {:6.2} / {:6.2} MiB (plan / llama.cpp)",
            key,
            d["first_layer"],
            d["n_layers"],
            ours[0],
            real[0],
            ours[1],
            real[1],
            ours[2],
            real[2]
        ));
        for (k, what) in ["model", "KV", "compute"].iter().enumerate() {
            let diff = (ours[k] - real[k]).abs();
            assert!(diff <= 64.0 || diff / real[k].max(1e-9) <= 0.05, "{what} on {key}: plan {} vs llama.cpp {}\n{}\n{log}", ours[k], real[k], rows.join("\n"));
        }
        // Weights to the MiB: where each tensor goes is known exactly.
        assert!((ours[0] - real[0]).abs() <= 1.0 + real[0] * 0.02, "weights on {key}: plan {} vs llama.cpp {}\n{}", ours[0], real[0], rows.join("\n"));
    }
    plan
}

#[test]
fn weights_and_kv_cache_land_on_the_gpu_where_the_plan_says() {
    let Some(gpu) = gpu_bin() else { return };
    let _turn = common::one_at_a_time();
    let name = the_gpu(&gpu)["name"].as_str().unwrap().to_string();
    let mut rows = Vec::new();
    // Everything offloaded (the plan's choice with room), then part of the layers.
    let all = check_buffers(&gpu, &model(), &name, &["-c", "2048"], &mut rows);
    assert_eq!(all["placement"]["gpu_layers"], 31, "{all}");
    check_buffers(&gpu, &model(), &name, &["-c", "2048", "--gpu-layers", "12"], &mut rows);
    println!("{}", rows.join("\n"));
}

#[test]
fn moe_experts_stay_in_ram_as_asked() {
    let Some(gpu) = gpu_bin() else { return };
    let _turn = common::one_at_a_time();
    let name = the_gpu(&gpu)["name"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let moe = dir.path().join("moe.gguf");
    hearth_testkit::synthetic::moe_from_dense(&model(), &moe, 2).unwrap();
    let mut rows = Vec::new();
    let ot = "blk\\.(1[0-9])\\.ffn_.*_exps=CPU";
    for flags in [&["-c", "1024", "--cpu-moe"][..], &["-c", "1024", "--n-cpu-moe", "10"], &["-c", "1024", "--override-tensor", ot]] {
        let plan = check_buffers(&gpu, &moe, &name, flags, &mut rows);
        // Every layer is on the GPU; the experts asked for are in RAM.
        assert_eq!(plan["placement"]["gpu_layers"], 31, "{plan}");
        let host = plan["placement"]["devices"][0]["weights"].as_u64().unwrap();
        assert!(host > 30 << 20, "{plan}");
    }
    println!("{}", rows.join("\n"));
}

/// The greedy tokens of `prompt` (raw, `n` of them) as /v1/completions returns them.
fn greedy_tokens(s: &Server, prompt: &str, n: u32) -> Vec<String> {
    let (code, v) = s.post("/v1/completions", json!({"model": "smollm2", "prompt": prompt, "max_tokens": n, "temperature": 0, "logprobs": 0}));
    assert_eq!(code, 200, "{v}");
    v["choices"][0]["logprobs"]["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

const PARITY_PROMPTS: &[&str] = &[
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
];

#[test]
fn greedy_answers_on_the_gpu_follow_the_cpu() {
    let Some(gpu) = gpu_bin() else { return };
    let _turn = common::one_at_a_time();
    let forced = "The history of the printing press";
    // The CPU build first, then the GPU build: never both at once.
    let (cpu_answers, cpu_forced) = {
        let s = Server::start(&["--parallel", "1", "-c", "1024"]);
        let answers: Vec<Vec<String>> = PARITY_PROMPTS.iter().map(|p| greedy_tokens(&s, p, 8)).collect();
        (answers, greedy_tokens(&s, forced, 64))
    };
    let s = Server::start_exe(&gpu, &["--parallel", "1", "-c", "1024"], &[("smollm2", model())], GPU_ENV);
    let mut report = Vec::new();
    for (p, cpu) in PARITY_PROMPTS.iter().zip(&cpu_answers) {
        let g = greedy_tokens(&s, p, 8);
        report.push(format!("{p:?}\n  cpu {cpu:?}\n  gpu {g:?}"));
        assert_eq!(g[..3], cpu[..3], "the first tokens differ:\n{}", report.join("\n"));
    }
    // Teacher forcing: after each prefix of the CPU's answer, the GPU's next token.
    let mut agree = 0;
    for i in 0..cpu_forced.len() {
        let prompt = format!("{forced}{}", cpu_forced[..i].concat());
        let next = greedy_tokens(&s, &prompt, 1);
        agree += (next.first() == Some(&cpu_forced[i])) as usize;
    }
    let rate = agree as f64 / cpu_forced.len() as f64;
    report.push(format!("top-1 agreement under teacher forcing: {agree}/{} = {rate:.2}", cpu_forced.len()));
    println!("{}", report.join("\n"));
    assert!(rate >= 0.9, "{}", report.join("\n"));
    // /api/ps says it is on the GPU.
    let (_, ps) = s.get("/api/ps");
    let m = &ps["models"][0];
    assert!(m["size_vram"].as_u64().unwrap() > 0 && m["size_vram"].as_u64() <= m["size"].as_u64(), "{ps}");
}

#[test]
fn the_scheduler_evicts_by_the_gpus_budget() {
    let Some(gpu) = gpu_bin() else { return };
    let _turn = common::one_at_a_time();
    let name = the_gpu(&gpu)["name"].as_str().unwrap().to_string();
    // What one model needs on the GPU with these flags, from the same planner.
    let devices = format!("cpu=64G,gpu:{name}=64G");
    let out = run(&gpu, &["fit", model().to_str().unwrap(), "--json", "-c", "512", "--devices", &devices]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let need = plan["placement"]["devices"][1]["total"].as_u64().unwrap();
    // Room on the GPU for one model and a half; plenty of RAM for both.
    let cap = format!("{name}={}", need * 3 / 2);
    let models = [("a", model()), ("b", model())];
    let s = Server::start_exe(&gpu, &["--parallel", "1", "-c", "512", "--device-memory", &cap, "--memory-budget", "8G"], &models, GPU_ENV);
    let ask = |m: &str| {
        let (code, v) = s.post("/api/generate", json!({"model": m, "prompt": "Hi", "raw": true, "stream": false, "options": {"num_predict": 2, "temperature": 0}}));
        assert_eq!(code, 200, "{v}");
    };
    ask("a");
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"].as_array().unwrap().len(), 1, "{ps}");
    let vram = ps["models"][0]["size_vram"].as_u64().unwrap();
    assert!(vram > 0 && vram.abs_diff(need) < (1 << 20), "size_vram {vram} vs plan {need}: {ps}");
    ask("b");
    let (_, ps) = s.get("/api/ps");
    let names: Vec<&str> = ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b:latest"], "the GPU holds one: {ps}");
    let (_, metrics) = s.get_text("/metrics");
    assert!(metrics.contains(&format!("hearth_device_memory_budget_bytes{{device=\"{name}\"}} {}", need * 3 / 2)), "{metrics}");
    assert!(metrics.contains(&format!("hearth_device_memory_used_bytes{{device=\"{name}\"}} {need}")), "{metrics}");
    drop(s);
    // Room for it nowhere: the clear error, with the per-device table.
    let s = Server::start_exe(&gpu, &["--parallel", "1", "-c", "512", "--device-memory", &format!("{name}=20M"), "--memory-budget", "60M"], &models, GPU_ENV);
    let (code, v) = s.post("/api/generate", json!({"model": "a", "prompt": "Hi", "stream": false}));
    let msg = v["error"].as_str().unwrap_or_default().to_string();
    assert!(code >= 400 && msg.contains("does not fit") && msg.contains(&name) && msg.contains("short by"), "{code} {v}");
    drop(s);
    // Without the cap both stay loaded.
    let s = Server::start_exe(&gpu, &["--parallel", "1", "-c", "512", "--memory-budget", "8G"], &models, GPU_ENV);
    for m in ["a", "b"] {
        let (code, v) = s.post("/api/generate", json!({"model": m, "prompt": "Hi", "raw": true, "stream": false, "options": {"num_predict": 2}}));
        assert_eq!(code, 200, "{v}");
    }
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"].as_array().unwrap().len(), 2, "{ps}");
}

#[test]
fn a_model_over_the_cpu_the_gpu_and_a_workers_gpu_answers_like_one_process() {
    let Some(gpu) = gpu_bin() else { return };
    let _turn = common::one_at_a_time();
    let prompt = "The capital of France is";
    let alone = {
        let s = Server::start_exe(&gpu, &["--parallel", "1", "-c", "512"], &[("smollm2", model())], GPU_ENV);
        greedy_tokens(&s, prompt, 8)
    };
    // A worker lending its GPU on loopback, with a token.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let cache = tempfile::tempdir().unwrap();
    /// Killed however the test ends.
    struct Worker(std::process::Child);
    impl Drop for Worker {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _worker = Worker(
        hearth(&gpu)
            .args(["worker", "--listen", &addr, "-t", "1", "--cache-dir"])
            .arg(cache.path())
            .env("HEARTH_MODELS", cache.path().join("no-store"))
            .env("HEARTH_CLUSTER_TOKEN", "gpu-test-token")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::wait_until(Duration::from_secs(60), || std::net::TcpStream::connect(&addr).is_ok()), "the worker did not listen");
    // This machine's RAM for a few layers, its GPU and the worker's for the rest.
    let s = Server::start_exe(
        &gpu,
        &["--parallel", "1", "-c", "512", "--workers", &addr, "--cluster-token", "gpu-test-token"],
        &[("smollm2", model())],
        GPU_ENV,
    );
    let split = greedy_tokens(&s, prompt, 8);
    let (_, ps) = s.get("/api/ps");
    // The worker reports its GPU; this machine's GPU holds part of the model.
    let (_, cluster) = s.get("/api/cluster");
    let wdev = &cluster["workers"][0]["devices"][0];
    assert!(wdev["kind"] == "gpu" || wdev["kind"] == "igpu", "{cluster}");
    let local_gpu = cluster["local"].as_array().unwrap().iter().find(|d| d["device"] != "RAM").cloned().unwrap_or_default();
    assert!(local_gpu["used"].as_u64() > Some(0), "{cluster}");
    println!("{}\n{ps}", serde_json::to_string_pretty(&cluster).unwrap());
    assert_eq!(ps["models"][0]["workers"].as_array().map(Vec::len), Some(1), "{ps}");
    assert_eq!(split[..3], alone[..3], "split {split:?} vs one process {alone:?}");
}

#[test]
fn the_synthetic_moe_model_answers_like_the_dense_one_and_bad_placement_flags_are_clear() {
    let _turn = common::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let moe = dir.path().join("moe.gguf");
    hearth_testkit::synthetic::moe_from_dense(&model(), &moe, 2).unwrap();
    let cpu = cpu_bin();
    let greedy = |m: &Path, extra: &[&str]| {
        let mut args = vec!["run", m.to_str().unwrap(), "The capital of France is", "--raw", "--temp", "0", "-n", "8", "-t", "2"];
        args.extend(extra);
        let out = run(&cpu, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let dense = greedy(&model(), &[]);
    assert_eq!(greedy(&moe, &[]), dense, "two equal experts behind a uniform router compute the dense FFN");
    assert_eq!(greedy(&moe, &["--cpu-moe"]), dense);
    let m = model();
    let m = m.to_str().unwrap();
    for (flags, expect) in [
        (&["--device", "Vulkan7"][..], "\"Vulkan7\" here"),
        (&["-ot", "exps"], "REGEX=DEVICE"),
        (&["-ot", "exps=NPU9"], "no buffer type named \"NPU9\""),
        (&["-ot", "(unclosed=CPU"], "not a valid regular expression"),
    ] {
        let mut args = vec!["run", m, "hi", "-n", "1"];
        args.extend(flags);
        let out = run(&cpu, &args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expect), "{flags:?}: {}", text(&out.stderr));
    }
    let out = run(&cpu, &["run", m, "hi", "--split-mode", "diagonal"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("none, layer, row"), "{}", text(&out.stderr));
    // The server refuses a GPU it does not have at start, not at the first request.
    let out = run(&cpu, &["serve", "--host", "127.0.0.1:0", "--device", "CUDA0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no GPU named \"CUDA0\""), "{}", text(&out.stderr));
}
