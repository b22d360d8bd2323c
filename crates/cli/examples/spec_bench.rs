//! Speculative decoding's numbers (issue 16), all from one run on this machine
//! (`bench/spec.sh` runs it), each a ratio of hearth with `--spec ngram` to hearth without:
//!
//! - an edit workload: the prompt holds a source file of about 1,500 tokens and asks for it
//!   back with one function renamed (greedy); generation tok/s, tokens per pass;
//! - the same over two loopback workers behind a proxy adding 5 ms each way (ggml RPC round
//!   trips per generated token counted at the forwarding ports), the answer cut at
//!   `CLUSTER_TOKENS` tokens (default 400) to bound the run;
//! - a general chat workload without repetition (a story at temperature 0.7);
//! - aggregate tok/s of 8 concurrent streams (`hearth bench`'s chat workload);
//! - a draft model (`--model-draft`): the starter model drafting for a target made from it
//!   with each feed-forward as 8 equal experts (the same answers, more work per token).
//!
//! Runs alternate the two servers; medians of `RUNS` (default 3). `ONLY=ngram|draft|cluster`
//! runs one part. `SPEC_MODEL=FILE.gguf` runs the n-gram and cluster parts on another model
//! than the starter model (what a verification pass costs depends on the model's kernels: on
//! a CPU, llama.cpp's repacked Q4_0/Q4_K/IQ4_NL matrix kernels make a batch of tokens far
//! cheaper per token than Q4_1's dot products).

mod common;

use std::time::Duration;

use hearth_cluster::DelayProxy;
use serde_json::{json, Value};

use common::{add, hearth, post, serve_with, starter_model, tunnel_totals, worker, TOKEN};

/// The name of the model of the n-gram and cluster parts in the bench's store.
const MODEL: &str = "target";

/// A Python module of about 1,500 tokens: small functions with docstrings.
fn source_file() -> String {
    let ops = [("add", "+", "sum"), ("sub", "-", "difference"), ("mul", "*", "product"), ("div", "/", "quotient")];
    let mut s = String::from("\"\"\"Arithmetic helpers for the ledger.\"\"\"\n\nimport math\n\n\n");
    for i in 0..18 {
        let (name, op, what) = ops[i % ops.len()];
        s.push_str(&format!(
            "def {name}_{i}(a, b):\n    \"\"\"Return the {what} of a and b, scaled by {i}.\"\"\"\n    if a is None or b is None:\n        raise ValueError(\"{name}_{i} needs two numbers\")\n    return (a {op} b) * {i}\n\n\n"
        ));
    }
    s.push_str("def total(values):\n    \"\"\"Return the sum of the values.\"\"\"\n    result = 0\n    for v in values:\n        result = add_0(result, v)\n    return result\n");
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One chat request; returns (generated tokens, generation tok/s, drafted, accepted).
fn chat(url: &str, body: Value) -> (f64, f64, f64, f64) {
    let v = post(url, "/v1/chat/completions", body);
    let t = &v["timings"];
    let n = t["predicted_n"].as_f64().unwrap();
    (n, t["predicted_per_second"].as_f64().unwrap(), t["draft_n"].as_f64().unwrap(), t["draft_n_accepted"].as_f64().unwrap())
}

/// The edit request of run `run` (its first line differs, so no run finds the one before in a
/// prompt cache: with flash attention, llama.cpp's greedy answer can change with what the
/// cache held, and the two servers must answer alike).
fn edit_request(run: usize, max_tokens: u32) -> Value {
    let prompt = format!("Run {run}. Rename the function mul_2 to times_2 and return the whole file, nothing else:\n\n{}", source_file());
    json!({"model": MODEL, "temperature": 0, "max_tokens": max_tokens, "messages": [{"role": "user", "content": prompt}]})
}

fn story_request(run: usize) -> Value {
    let topics = ["a lighthouse keeper", "a lost map", "a winter market", "a clockmaker", "a river journey"];
    json!({"model": MODEL, "temperature": 0.7, "seed": run, "max_tokens": 128,
        "messages": [{"role": "user", "content": format!("Write a short story about {}.", topics[run % topics.len()])}]})
}

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let cluster_tokens: u32 = std::env::var("CLUSTER_TOKENS").ok().and_then(|r| r.parse().ok()).unwrap_or(400);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let model = std::env::var_os("SPEC_MODEL").map(std::path::PathBuf::from).unwrap_or_else(starter_model);
    let model_file = model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    add(&model, MODEL, &store);
    add(&starter_model(), "smollm2", &store);
    let one = ["--parallel", "1", "--ctx-size", "4096"];
    let only = std::env::var("ONLY").unwrap_or_default();
    if only.is_empty() || only == "ngram" {
        let (_plain, plain) = serve_with(&store, &one, "");
        let (_spec, spec) = serve_with(&store, &[&one[..], &["--spec", "ngram"]].concat(), "");
        // Loads both, and lets the engine with drafts measure its step costs.
        for url in [&plain, &spec] {
            chat(url, edit_request(1000, 64));
        }

        println!("## Speculative decoding (n-gram), {model_file}, 2 threads, medians of {runs} runs\n");
        println!("| workload | without: tok/s | with: tok/s | ratio | tokens per pass | drafted / accepted | tokens without / with |");
        println!("|---|---|---|---|---|---|---|");
        let row = |name: &str, request: &dyn Fn(usize) -> Value, plain: &str, spec: &str| {
            let (mut a, mut b, mut passes, mut drafted, mut accepted, mut tokens) = (Vec::new(), Vec::new(), Vec::new(), 0.0, 0.0, (0.0, 0.0));
            for run in 0..runs {
                let (n_plain, rate, _, _) = chat(plain, request(run));
                a.push(rate);
                let (n, rate, d, acc) = chat(spec, request(run));
                b.push(rate);
                passes.push(n / (n - acc).max(1.0));
                drafted += d;
                accepted += acc;
                tokens = (tokens.0 + n_plain, tokens.1 + n);
            }
            let (a, b) = (median(a), median(b));
            println!(
                "| {name} | {a:.1} | {b:.1} | {:.2} | {:.2} | {drafted:.0} / {accepted:.0} | {:.0} / {:.0} |",
                b / a,
                median(passes),
                tokens.0,
                tokens.1
            );
        };
        row(&format!("edit: a {}-character file back with one rename", source_file().len()), &|run| edit_request(run, 2048), &plain, &spec);
        row("general chat: a story, temperature 0.7, 128 tokens", &story_request, &plain, &spec);
        drop((_plain, _spec));

        // 8 streams: hearth bench's chat workload against both servers, one after the other.
        let eight = ["--parallel", "8", "--ctx-size", "1024"];
        let (_p8, p8) = serve_with(&store, &eight, "");
        let (_s8, s8) = serve_with(&store, &[&eight[..], &["--spec", "ngram"]].concat(), "");
        let out = std::process::Command::new(hearth())
            .args(["bench", "--url", &p8, "--url", &s8, "--model", MODEL, "--api", "openai-chat", "--temperature", "0.7"])
            .args(["--prompt-tokens", "32", "--gen-tokens", "128", "--concurrency", "8", "--runs", &runs.to_string(), "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let levels: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let (a, b) = (levels[0]["aggregate_tok_s"].as_f64().unwrap(), levels[1]["aggregate_tok_s"].as_f64().unwrap());
        println!("| 8 concurrent chat streams, aggregate | {a:.1} | {b:.1} | {:.2} | | | |", b / a);
        drop((_p8, _s8));
    }

    if only.is_empty() || only == "draft" {
        draft_model_rows(&store, dir.path(), runs);
    }
    if !(only.is_empty() || only == "cluster") {
        return;
    }

    // Over two workers, 5 ms each way.
    let (_w1, a1) = worker(None, &dir.path().join("c1"), &dir.path().join("none"), &[]);
    let (_w2, a2) = worker(None, &dir.path().join("c2"), &dir.path().join("none"), &[]);
    let p1 = rt.block_on(DelayProxy::start(a1.parse().unwrap(), Duration::from_millis(5))).unwrap();
    let p2 = rt.block_on(DelayProxy::start(a2.parse().unwrap(), Duration::from_millis(5))).unwrap();
    let workers = format!("{},{}", p1.local_addr(), p2.local_addr());
    let over = ["--parallel", "1", "--ctx-size", "4096", "--workers", &workers, "--cluster-token", TOKEN, "--gpu-layers", "99", "--tensor-split", "1,1"];
    println!("\n## The edit workload over 2 loopback workers, +5 ms one way, {cluster_tokens} tokens, {model_file}\n");
    println!("| | tok/s | ggml RPC round trips per token |");
    println!("|---|---|---|");
    let mut results = Vec::new();
    for (name, extra) in [("without", &[][..]), ("with n-gram drafts", &["--spec", "ngram"][..])] {
        let (_s, url) = serve_with(&store, &[&over[..], extra].concat(), "passive");
        chat(&url, edit_request(1000, 64));
        let (_, t0, _) = tunnel_totals(&url);
        let (n, rate, _, _) = chat(&url, edit_request(0, cluster_tokens));
        let (_, t1, _) = tunnel_totals(&url);
        let trips = (t1 - t0) / n;
        println!("| {name} | {rate:.1} | {trips:.2} |");
        results.push((rate, trips));
    }
    println!("| ratio | {:.2} | {:.2} |", results[1].0 / results[0].0, results[1].1 / results[0].1);
}

/// A draft model: a bigger target made from the starter model (each feed-forward made 8 equal
/// experts, all used: the same answers with about 8 times the feed-forward work), drafted for
/// by the starter model itself, against the same target without drafts.
fn draft_model_rows(store: &std::path::Path, dir: &std::path::Path, runs: usize) {
    let moe = dir.join("moe8.gguf");
    hearth_testkit::synthetic::moe_from_dense(&starter_model(), &moe, 8).unwrap();
    add(&moe, "moe8", store);
    let one = ["--parallel", "1", "--ctx-size", "4096"];
    let (_t, target) = serve_with(store, &one, "");
    let (_d, drafted) = serve_with(store, &[&one[..], &["--model-draft", "smollm2"]].concat(), "");
    let on_target = |mut r: Value| {
        r["model"] = "moe8".into();
        r
    };
    for url in [&target, &drafted] {
        chat(url, on_target(edit_request(1000, 64)));
    }
    println!("\n## A draft model: the starter model drafting for an 8-expert target made from it, medians of {runs} runs\n");
    println!("| workload | without: tok/s | with: tok/s | ratio | tokens per pass | drafted / accepted |");
    println!("|---|---|---|---|---|---|");
    let greedy_story = |run: usize| {
        let mut r = story_request(run);
        r["temperature"] = 0.into();
        r
    };
    let workloads: [(&str, &dyn Fn(usize) -> Value); 3] = [
        ("edit (as above)", &|run| edit_request(run, 512)),
        ("general chat: a story, greedy, 128 tokens", &greedy_story),
        ("general chat: a story, temperature 0.7", &story_request),
    ];
    for (name, request) in workloads {
        let (mut a, mut b, mut passes, mut d, mut acc) = (Vec::new(), Vec::new(), Vec::new(), 0.0, 0.0);
        for run in 0..runs {
            a.push(chat(&target, on_target(request(run))).1);
            let (n, rate, dr, ac) = chat(&drafted, on_target(request(run)));
            b.push(rate);
            passes.push(n / (n - ac).max(1.0));
            d += dr;
            acc += ac;
        }
        let (a, b) = (median(a), median(b));
        println!("| {name} | {a:.1} | {b:.1} | {:.2} | {:.2} | {d:.0} / {acc:.0} |", b / a, median(passes));
    }
}
