//! Speculative decoding through the real binary and the real model: `hearth serve --spec
//! ngram`, a model's stored `spec` and `draft_model` parameters, `hearth run --spec`,
//! `hearth bench --spec`, a draft model, and the MTP layers of a synthetic model made from the
//! starter model (`--spec mtp`).

mod common;

use std::process::Command;

use serde_json::{json, Value};

use common::{model_path, text, Server};

/// A code edit: the answer copies most of the prompt.
const EDIT: &str = "Fix the typo in this code and return the whole code: def add(a, b):\n    retrun a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n\ndef div(a, b):\n    return a / b";

fn edit(s: &Server, model: &str) -> Value {
    let (code, v) = s.post("/v1/chat/completions", json!({"model": model, "temperature": 0, "max_tokens": 80,
        "messages": [{"role": "user", "content": EDIT}]}));
    assert_eq!(code, 200, "{v}");
    v
}

#[test]
fn served_with_ngram_drafts_the_answer_is_the_same_and_drafts_are_counted() {
    let _turn = common::one_at_a_time();
    let plain = {
        let s = Server::start(&[]);
        let v = edit(&s, "smollm2");
        assert_eq!(v["timings"]["draft_n"], 0, "{v}");
        v["choices"][0]["message"]["content"].as_str().unwrap().to_string()
    };
    let s = Server::start(&["--spec", "ngram", "--draft-max", "8"]);
    let v = edit(&s, "smollm2");
    assert_eq!(v["choices"][0]["message"]["content"], plain.as_str());
    let (drafted, accepted) = (v["timings"]["draft_n"].as_u64().unwrap(), v["timings"]["draft_n_accepted"].as_u64().unwrap());
    assert!(drafted > 0 && accepted > 0 && accepted <= drafted, "{v}");
    // Streamed: the same text.
    let (code, body) = s.post_text("/v1/chat/completions", json!({"model": "smollm2", "temperature": 0, "max_tokens": 80, "stream": true,
        "messages": [{"role": "user", "content": EDIT}]}));
    assert_eq!(code, 200);
    let streamed: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, plain);
    let (_, metrics) = s.get_text("/metrics");
    assert!(metrics.contains("hearth_draft_tokens_total{model=\"smollm2:latest\"}"), "{metrics}");
    assert!(metrics.contains("hearth_draft_acceptance_ratio{model=\"smollm2:latest\"}"), "{metrics}");
}

#[test]
fn a_models_stored_parameters_turn_drafts_on_for_that_model() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&[]);
    let (code, v) = s.post("/api/create", json!({"model": "smollm2-edit", "from": "smollm2", "stream": false, "parameters": {"spec": "ngram", "draft_max": 6}}));
    assert_eq!(code, 200, "{v}");
    let with = edit(&s, "smollm2-edit");
    assert!(with["timings"]["draft_n"].as_u64().unwrap() > 0, "{with}");
    let without = edit(&s, "smollm2");
    assert_eq!(without["timings"]["draft_n"], 0, "{without}");
    assert_eq!(with["choices"][0]["message"]["content"], without["choices"][0]["message"]["content"]);
    // A bad stored value is a clear error naming it.
    let (code, v) = s.post("/api/create", json!({"model": "smollm2-bad", "from": "smollm2", "stream": false, "parameters": {"spec": "medusa"}}));
    assert_eq!(code, 200, "{v}");
    let (code, v) = s.post("/v1/chat/completions", json!({"model": "smollm2-bad", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(code, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("params.spec") && msg.contains("none, ngram"), "{msg}");
}

#[test]
fn hearth_run_and_bench_take_spec() {
    let _turn = common::one_at_a_time();
    let m = model_path();
    let run = |spec: &str| {
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["run", m.to_str().unwrap(), EDIT, "--temp", "0", "-n", "64", "-t", "2", "-v", "--spec", spec])
            .output()
            .unwrap()
    };
    let (plain, drafted) = (run("none"), run("ngram"));
    assert!(plain.status.success() && drafted.status.success(), "{}", text(&drafted.stderr));
    assert_eq!(text(&plain.stdout), text(&drafted.stdout));
    assert!(!text(&plain.stderr).contains("draft:"));
    assert!(text(&drafted.stderr).contains("draft:") && text(&drafted.stderr).contains("tokens per pass"), "{}", text(&drafted.stderr));
    let bad = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["run", m.to_str().unwrap(), "hi", "--spec", "medusa"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("none, ngram"), "{}", text(&bad.stderr));

    // hearth bench --spec: the same requests without and with drafts, side by side.
    let s = Server::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["bench", "--model", "smollm2", "--spec", "ngram", "--prompt-tokens", "48", "--gen-tokens", "24", "--concurrency", "1", "--runs", "1", "--json"])
        .env("HEARTH_MODELS", &s.store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let levels: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(levels.len(), 2);
    assert!(levels[0]["endpoint"].as_str().unwrap().ends_with("spec none)") && levels[1]["endpoint"].as_str().unwrap().ends_with("spec ngram)"), "{levels:?}");
    let refused = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["bench", "--model", "smollm2", "--spec", "ngram", "--url", &s.url]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("give no --url"), "{}", text(&refused.stderr));
}

#[test]
fn a_draft_model_through_serve_and_run_gives_the_same_answer() {
    let _turn = common::one_at_a_time();
    let plain = {
        let s = Server::start(&[]);
        edit(&s, "smollm2")["choices"][0]["message"]["content"].as_str().unwrap().to_string()
    };
    // The test model drafting for itself, named as the store knows it.
    // Drafting whatever the draft model's confidence, so that its first draft has tokens.
    let s = Server::start(&["--model-draft", "smollm2", "--draft-max", "8", "--draft-p-min", "0"]);
    let v = edit(&s, "smollm2");
    assert_eq!(v["choices"][0]["message"]["content"], plain.as_str(), "{v}");
    let (drafted, accepted) = (v["timings"]["draft_n"].as_u64().unwrap(), v["timings"]["draft_n_accepted"].as_u64().unwrap());
    // Drafting for itself on a CPU never pays: after the first steps it stops.
    assert!(drafted > 0 && accepted > 0, "{v}");
    drop(s);
    // A draft model stored with the model (`draft_model`, a store name): drafts for it only.
    let s = Server::start(&[]);
    let (code, v) = s.post("/api/create", json!({"model": "smollm2-drafted", "from": "smollm2", "stream": false, "parameters": {"draft_model": "smollm2", "draft_p_min": 0}}));
    assert_eq!(code, 200, "{v}");
    let v = edit(&s, "smollm2-drafted");
    assert_eq!(v["choices"][0]["message"]["content"], plain.as_str(), "{v}");
    assert!(v["timings"]["draft_n"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(edit(&s, "smollm2")["timings"]["draft_n"], 0);
    // A name the store does not know, or a path (even to the very GGUF file): stored
    // parameters come from API clients and registries and may not open files.
    let file = model_path().to_string_lossy().into_owned();
    for (i, d) in ["no-such-model", file.as_str()].into_iter().enumerate() {
        let name = format!("smollm2-nodraft{i}");
        let (code, v) = s.post("/api/create", json!({"model": name, "from": "smollm2", "stream": false, "parameters": {"draft_model": d}}));
        assert_eq!(code, 200, "{v}");
        let (code, v) = s.post("/v1/chat/completions", json!({"model": name, "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(code, 400, "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("params.draft_model") && msg.contains(d) && msg.contains("store name"), "{msg}");
    }
    drop(s);
    // hearth run -md PATH.
    let m = model_path();
    let m = m.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", m, EDIT, "--temp", "0", "-n", "48", "-t", "2", "-v"];
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_hearth")).args(&args).env("HEARTH_HOST", "127.0.0.1:1").output().unwrap()
    };
    let (a, b) = (run(&[]), run(&["-md", m, "--draft-p-min", "0"]));
    assert!(b.status.success(), "{}", text(&b.stderr));
    assert_eq!(text(&a.stdout), text(&b.stdout));
    assert!(text(&b.stderr).contains("draft:"), "{}", text(&b.stderr));
    // A draft model with another vocabulary: refused, saying why.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.gguf");
    let mut w = hearth_gguf::writer::GgufWriter::from_file(&model_path()).unwrap();
    let Some(hearth_gguf::Value::Array(mut tokens)) = w.get("tokenizer.ggml.tokens").cloned() else { panic!("no vocabulary") };
    tokens[500] = hearth_gguf::Value::String("<another>".into());
    w.set("tokenizer.ggml.tokens", hearth_gguf::Value::Array(tokens));
    w.write_to_path(&other).unwrap();
    let refused = run(&["--model-draft", other.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("cannot draft for") && text(&refused.stderr).contains("token 500"), "{}", text(&refused.stderr));
}

/// Words the answer repeats: where the synthetic MTP head (it guesses the latest token again)
/// is right.
const REPEAT: &str = "Repeat after me ten times: hello hello hello hello hello";

#[test]
fn drafts_from_a_models_mtp_layers_give_the_same_answer() {
    let _turn = common::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mtp = dir.path().join("mtp.gguf");
    hearth_testkit::synthetic::mtp_from_dense(&model_path(), &mtp).unwrap();
    let run = |m: &std::path::Path, prompt: &str, extra: &[&str]| {
        let mut args = vec!["run", m.to_str().unwrap(), prompt, "--temp", "0", "-n", "48", "-t", "2", "-v"];
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_hearth")).args(&args).env("HEARTH_HOST", "127.0.0.1:1").output().unwrap()
    };
    // The synthetic model is the starter model with an MTP block on top: the same answers.
    let (plain, synthetic) = (run(&model_path(), EDIT, &[]), run(&mtp, EDIT, &[]));
    assert!(synthetic.status.success(), "{}", text(&synthetic.stderr));
    assert!(text(&plain.stdout).len() > 40, "{}", text(&plain.stdout));
    assert_eq!(text(&plain.stdout), text(&synthetic.stdout));
    // hearth run --spec mtp: the same answer, drafted by the MTP block, some drafts confirmed.
    for prompt in [EDIT, REPEAT] {
        let (a, b) = (run(&mtp, prompt, &[]), run(&mtp, prompt, &["--spec", "mtp", "--draft-p-min", "0"]));
        assert!(b.status.success(), "{}", text(&b.stderr));
        assert_eq!(text(&a.stdout), text(&b.stdout), "{prompt}");
        assert!(text(&b.stderr).contains("draft:"), "{}", text(&b.stderr));
    }
    let b = run(&mtp, REPEAT, &["--spec", "mtp", "--draft-p-min", "0"]);
    let line = text(&b.stderr).lines().find(|l| l.starts_with("draft:")).unwrap().to_string();
    assert!(!line.contains(" 0 accepted") && !line.contains(" 0 drafted"), "{line}");
    // A model without MTP layers: refused, saying what to use instead.
    let bad = run(&model_path(), "hi", &["--spec", "mtp"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("no multi-token-prediction layers") && text(&bad.stderr).contains("--spec ngram"), "{}", text(&bad.stderr));

    // Served (`--spec mtp`, two slots): two requests at once, each answered as alone, and
    // the drafts counted.
    let s = Server::start_with(&["--spec", "mtp", "--parallel", "2", "--draft-p-min", "0"], &[("mtp", mtp.clone()), ("smollm2", model_path())]);
    let ask = |prompt: &str| json!({"model": "mtp", "temperature": 0, "max_tokens": 48, "messages": [{"role": "user", "content": prompt}]});
    // (The repeat first: a new server starts from a good opinion of drafts; the edit's are
    // refused, and on a CPU the cost model then drafts little.)
    let alone: Vec<Value> = [REPEAT, EDIT].iter().map(|p| s.post("/v1/chat/completions", ask(p)).1).collect();
    let together: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = [REPEAT, EDIT].iter().map(|p| sc.spawn(|| s.post("/v1/chat/completions", ask(p)).1)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a["choices"][0]["message"]["content"], t["choices"][0]["message"]["content"], "{a} {t}");
    }
    let plain_served = {
        let p = Server::start_with(&[], &[("mtp", mtp.clone())]);
        let plain = p.post("/v1/chat/completions", ask(REPEAT)).1;
        // A model that stores `"spec": "mtp"` drafts with its MTP layers on a plain server.
        let (code, v) = p.post("/api/create", json!({"model": "mtp-drafted", "from": "mtp", "stream": false, "parameters": {"spec": "mtp", "draft_p_min": 0}}));
        assert_eq!(code, 200, "{v}");
        let (code, v) = p.post("/v1/chat/completions", json!({"model": "mtp-drafted", "temperature": 0, "max_tokens": 48, "messages": [{"role": "user", "content": REPEAT}]}));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], plain["choices"][0]["message"]["content"]);
        assert!(v["timings"]["draft_n"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(plain["timings"]["draft_n"], 0);
        plain
    };
    assert_eq!(alone[0]["choices"][0]["message"]["content"], plain_served["choices"][0]["message"]["content"]);
    assert!(alone[0]["timings"]["draft_n"].as_u64().unwrap() > 0, "{}", alone[0]);
    // The starter model has no MTP layers: its requests fail with the reason.
    let (code, v) = s.post("/v1/chat/completions", json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}));
    assert!(code >= 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("no multi-token-prediction layers"), "{v}");
}
