//! `hearth serve` through the real binary with the real model: concurrency, the bounded queue,
//! keep-alive, runner crashes, orphans, auth, bad input, shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

mod common;

use common::{alive, chat, fetch, model_path, wait_until, Server, UPSTREAM_GREEDY};

#[test]
fn eight_concurrent_clients_on_four_sequences_all_get_the_right_answer() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&["--parallel", "4"]);
    let prompts = ["What is the capital of France?", "List three colors.", "Write a haiku about the sea.", "How do I boil an egg?"];
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| s.post("/api/chat", chat(p, 24)).1["message"]["content"].as_str().unwrap().to_string())
        .collect();
    assert!(UPSTREAM_GREEDY.starts_with(&alone[0]), "{}", alone[0]);
    let url = s.url.clone();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            let body = chat(prompts[i % 4], 24);
            std::thread::spawn(move || {
                let r = ureq::post(&format!("{url}/api/chat")).timeout(Duration::from_secs(300)).send_json(body).unwrap();
                r.into_json::<Value>().unwrap()["message"]["content"].as_str().unwrap().to_string()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), alone[i % 4], "client {i}");
    }
}

/// `--kv-unified` (`-kvu`): one KV cache for the sequences; drafting sequences of different
/// lengths and a plain one in the same steps, each kept apart.
#[test]
fn with_one_kv_cache_concurrent_drafting_sequences_stay_apart() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&["--parallel", "3", "-c", "256", "-kvu", "--spec", "ngram"]);
    let ask = |p: &str, n: u32| json!({"model": "smollm2", "temperature": 0, "max_tokens": n, "messages": [{"role": "user", "content": p}]});
    let url = s.url.clone();
    let handles: Vec<_> = [("How do I boil an egg?", 48), ("How do I boil an egg?", 32), ("What is 2 + 2?", 24)]
        .into_iter()
        .map(|(p, n)| {
            let (url, body) = (url.clone(), ask(p, n));
            std::thread::spawn(move || ureq::post(&format!("{url}/v1/chat/completions")).timeout(Duration::from_secs(300)).send_json(body).unwrap().into_json::<Value>().unwrap())
        })
        .collect();
    let v: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let text = |i: usize| v[i]["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    // The same prompt, the same answer, however far each went; the repeating answer drafted.
    assert!(text(0).starts_with("Boil an egg") && text(0).starts_with(&text(1)) && text(1).len() > 40, "{v:?}");
    assert!(v[0]["timings"]["draft_n_accepted"].as_u64().unwrap() > 0, "{}", v[0]["timings"]);
    assert!(text(2).contains('4'), "{}", text(2));
}

#[test]
fn the_bounded_queue_answers_503_with_retry_after() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&["--parallel", "1", "--max-queue", "1"]);
    // Load first, so the requests below compete only for sequences.
    assert_eq!(s.post("/api/generate", json!({"model": "smollm2", "prompt": ""})).0, 200);
    let url = s.url.clone();
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                match ureq::post(&format!("{url}/v1/chat/completions")).timeout(Duration::from_secs(300)).send_json(json!({
                    "model": "smollm2", "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 64, "temperature": 0
                })) {
                    Ok(r) => (r.status(), None),
                    Err(ureq::Error::Status(code, r)) => (code, r.header("retry-after").map(str::to_string)),
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let results: Vec<(u16, Option<String>)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(ok >= 2, "{results:?}");
    assert!(!busy.is_empty(), "{results:?}");
    assert!(busy.iter().all(|b| b.1.is_some()), "503s carry Retry-After: {results:?}");
}

/// llama.cpp's CPU threads meet at an OpenMP barrier after every op: inherited settings that
/// make them sleep there cost several times the speed, so the server names them when it starts.
#[test]
fn an_openmp_wait_policy_that_sleeps_at_barriers_is_warned_about() {
    let _turn = common::one_at_a_time();
    let warning = "OMP_WAIT_POLICY=passive is set";
    let s = Server::start_exe(std::path::Path::new(env!("CARGO_BIN_EXE_hearth")), &[], &[("smollm2", model_path())], &[("OMP_WAIT_POLICY", "passive")]);
    assert_eq!(s.post("/api/chat", chat("Hi", 2)).0, 200);
    assert!(wait_until(Duration::from_secs(5), || s.log().contains(warning)), "no warning in: {}", s.log());
    assert_eq!(s.post("/api/chat", chat("Hello", 2)).0, 200);
    assert_eq!(s.log().matches(warning).count(), 1, "warned once: {}", s.log());
    drop(s);
    if std::env::var_os("OMP_WAIT_POLICY").is_some() || std::env::var_os("GOMP_SPINCOUNT").is_some() {
        return; // this environment sets one itself
    }
    let quiet = Server::start(&[]);
    assert_eq!(quiet.post("/api/chat", chat("Hi", 2)).0, 200);
    assert!(!quiet.log().contains("OMP_WAIT_POLICY"), "{}", quiet.log());
}

#[test]
fn keep_alive_expiry_shows_in_ps_and_unloads_the_runner() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&[]);
    let (code, _) = s.post("/api/generate", json!({"model": "smollm2", "prompt": "Hi", "stream": false, "keep_alive": "2s", "options": {"num_predict": 2}}));
    assert_eq!(code, 200);
    let (_, ps) = s.get("/api/ps");
    assert_eq!(ps["models"][0]["name"], "smollm2:latest");
    assert!(ps["models"][0]["expires_at"].as_str().unwrap().starts_with("20"));
    let pids = s.runner_pids();
    assert_eq!(pids.len(), 1);
    assert!(wait_until(Duration::from_secs(10), || s.get("/api/ps").1["models"].as_array().unwrap().is_empty()));
    assert!(wait_until(Duration::from_secs(5), || !alive(pids[0])), "the runner exited");
    // keep_alive 0 with an empty prompt unloads at once.
    s.post("/api/generate", json!({"model": "smollm2", "prompt": "", "keep_alive": -1}));
    assert_eq!(s.get("/api/ps").1["models"].as_array().unwrap().len(), 1);
    let (_, v) = s.post("/api/generate", json!({"model": "smollm2", "prompt": "", "keep_alive": 0}));
    assert_eq!(v["done_reason"], "unload");
    assert!(s.get("/api/ps").1["models"].as_array().unwrap().is_empty());
}

#[test]
fn a_runner_killed_mid_stream_fails_that_request_and_the_next_one_works() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&[]);
    let mut conn = TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
    let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": "Write a very long story about a dragon."}], "options": {"temperature": 0}}).to_string();
    write!(conn, "POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(conn);
    let mut lines = Vec::new();
    let mut line = String::new();
    // Read until a few chunks arrived.
    while lines.iter().filter(|l: &&String| l.contains("\"done\":false")).count() < 3 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        lines.push(line.clone());
    }
    let pids = s.runner_pids();
    assert_eq!(pids.len(), 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let last = rest.lines().filter(|l| l.starts_with('{')).last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap();
    assert!(v["error"].as_str().unwrap().contains("runner for smollm2:latest stopped"), "{v}");
    // The server is up and the next request gets a fresh runner.
    let (code, v) = s.post("/api/chat", chat("What is the capital of France?", 32));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["message"]["content"], UPSTREAM_GREEDY);
}

#[test]
fn no_runner_outlives_the_server_even_after_sigkill() {
    let _turn = common::one_at_a_time();
    let mut s = Server::start(&[]);
    assert_eq!(s.post("/api/chat", chat("Hi", 2)).0, 200);
    let pids = s.runner_pids();
    assert_eq!(pids.len(), 1);
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(pids[0])), "runner {} is an orphan", pids[0]);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let _turn = common::one_at_a_time();
    let mut s = Server::start(&[]);
    assert_eq!(s.post("/api/chat", chat("Hi", 2)).0, 200);
    let pids = s.runner_pids();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut status = None;
    assert!(wait_until(Duration::from_secs(15), || {
        status = s.child.try_wait().unwrap();
        status.is_some()
    }));
    assert!(status.unwrap().success());
    assert!(wait_until(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))));
}

#[test]
fn api_key_guards_everything_but_root_and_health() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&["--api-key", "sesame"]);
    assert_eq!(ureq::get(&format!("{}/", s.url)).call().unwrap().status(), 200);
    assert_eq!(s.get("/health").0, 200);
    let (code, v) = s.get("/api/tags");
    assert_eq!(code, 401);
    assert!(v["error"].as_str().unwrap().contains("API key"));
    let (code, v) = s.get("/v1/models");
    assert_eq!(code, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = ureq::get(&format!("{}/api/tags", s.url)).set("Authorization", "Bearer sesame").call().unwrap();
    assert_eq!(r.status(), 200);
    let wrong = ureq::get(&format!("{}/api/tags", s.url)).set("Authorization", "Bearer nope").call();
    assert!(matches!(wrong, Err(ureq::Error::Status(401, _))));
}

#[test]
fn bad_input_gets_a_clear_status_in_each_apis_format() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&["-c", "128"]);
    let raw = |path: &str, body: &str| match ureq::post(&format!("{}{path}", s.url)).set("Content-Type", "application/json").send_string(body) {
        Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_json::<Value>().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let (code, v) = raw("/api/chat", "{not json");
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("invalid JSON"), "{v}");
    let (code, v) = raw("/api/chat", r#"{"model": "smollm2", "messages": [{"role": 5}]}"#);
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("messages[0].role"), "{v}");
    let (code, v) = raw("/v1/chat/completions", r#"{"model": "smollm2", "messages": [], "temperature": "hot"}"#);
    assert_eq!(code, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("temperature"), "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (code, v) = s.post("/api/chat", json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(code, 404);
    assert_eq!(v["error"], "model 'nope:latest' not found, try pulling it first");
    let (code, v) = s.post("/v1/chat/completions", json!({"model": "../../etc/passwd", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(code, 400, "{v}");
    let long = "word ".repeat(400);
    let (code, v) = s.post("/api/generate", json!({"model": "smollm2", "prompt": long, "stream": false}));
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("does not fit in the context"), "{v}");
    let (code, v) = s.post("/v1/completions", json!({"model": "smollm2", "prompt": long}));
    assert_eq!(code, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("does not fit"), "{v}");
}

#[test]
fn a_taken_port_is_named_with_a_suggestion() {
    let _turn = common::one_at_a_time();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["serve", "--host", &format!("127.0.0.1:{port}")])
        .env("HEARTH_MODELS", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use") && err.contains(&format!("--host 127.0.0.1:{}", port + 1)), "{err}");
}

#[test]
fn two_models_under_a_budget_for_one_evict_each_other() {
    let _turn = common::one_at_a_time();
    let gemma = fetch("gemma3");
    let s = Server::start_with(&["--parallel", "1", "--memory-budget", "1000M"], &[("smollm2", model_path()), ("gemma3", gemma)]);
    let ask = |model: &str| {
        s.post("/api/chat", json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}], "stream": false, "options": {"temperature": 0, "num_predict": 8}}))
    };
    let (code, v) = ask("smollm2");
    assert_eq!(code, 200, "{v}");
    let loaded = |s: &Server| s.get("/api/ps").1["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(loaded(&s), ["smollm2:latest"]);
    let (code, v) = ask("gemma3");
    assert_eq!(code, 200, "{v}");
    assert!(!v["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(loaded(&s), ["gemma3:latest"], "smollm2 was evicted to make room");
    let (code, _) = ask("smollm2");
    assert_eq!(code, 200);
    assert_eq!(loaded(&s), ["smollm2:latest"]);
    assert_eq!(s.runner_pids().len(), 1);
}

#[test]
fn the_cli_talks_to_a_running_server() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&[]);
    let host = s.url.trim_start_matches("http://").to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).env("HEARTH_HOST", &host).env("HEARTH_MODELS", "/nonexistent").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // The store given to the CLI does not exist: everything comes from the server.
    assert!(cli(&["list"]).contains("smollm2:latest"));
    let answer = cli(&["run", "smollm2", "What is the capital of France?", "--temp", "0", "-n", "32"]);
    assert_eq!(answer.trim_end(), UPSTREAM_GREEDY.trim_end());
    assert!(cli(&["ps"]).contains("smollm2:latest"));
    assert!(cli(&["show", "smollm2"]).contains("architecture        llama"));
    cli(&["stop", "smollm2"]);
    assert!(!cli(&["ps"]).contains("smollm2"));
    // Without a server, ps says so.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).args(["ps"]).env("HEARTH_HOST", "127.0.0.1:1").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no hearth server answers at 127.0.0.1:1"));
}

#[test]
fn a_client_that_goes_away_cancels_its_generation() {
    let _turn = common::one_at_a_time();
    // One sequence and no queue: while the long story runs, any other request gets 503.
    let s = Server::start(&["--parallel", "1", "--max-queue", "0"]);
    let mut conn = TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
    let body = json!({"model": "smollm2", "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
                      "options": {"temperature": 0, "num_predict": 4000}}).to_string();
    write!(conn, "POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let mut chunks = 0;
    while chunks < 3 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        if line.contains("\"done\":false") {
            chunks += 1;
        }
    }
    assert_eq!(s.post("/api/chat", chat("Hi", 2)).0, 503, "the story is still running");
    drop(reader); // the client goes away
    let mut code = 0;
    assert!(
        wait_until(Duration::from_secs(10), || {
            code = s.post("/api/chat", chat("Hi", 2)).0;
            code == 200
        }),
        "the abandoned generation was cancelled and freed its sequence (last status {code})"
    );
}

#[test]
fn bench_measures_endpoints_side_by_side() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&["--parallel", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bench.svg");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_hearth")).arg("bench").args(args).output().unwrap();
    let out = run(&[
        "--url", &s.url, "--url", &s.url, "--api", "openai", "--api", "ollama", "--model", "smollm2",
        "--prompt-tokens", "64", "--gen-tokens", "16", "--concurrency", "1,2", "--runs", "1", "--json",
        "--plot", svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let levels: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(levels.len(), 4);
    for l in &levels {
        assert_eq!(l["errors"], 0, "{l}");
        let p = l["prompt_tokens"].as_u64().unwrap();
        assert!((52..=76).contains(&p), "prompt tokens near 64: {l}");
        assert!(l["aggregate_tok_s"].as_f64().unwrap() > 0.0 && l["ttft_p50_ms"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["gen_tok_s_per_stream"].as_f64().unwrap() > 0.0, "{l}");
    }
    // The OpenAI path asks for ignore_eos: exactly the requested tokens.
    assert!(levels.iter().filter(|l| l["endpoint"].as_str().unwrap().ends_with("(openai)")).all(|l| l["gen_tokens"] == 16));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("concurrent streams"));

    // The chat workload of bench/serve-vs-llama.sh: the prompt length counts the template's
    // tokens too, sampled at a temperature, still exactly the requested tokens.
    let out = run(&[
        "--url", &s.url, "--api", "openai-chat", "--temperature", "0.7", "--model", "smollm2",
        "--prompt-tokens", "48", "--gen-tokens", "12", "--concurrency", "1,2", "--runs", "2", "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let levels: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(levels.len(), 2);
    for l in &levels {
        assert!(l["endpoint"].as_str().unwrap().ends_with("(openai-chat)"), "{l}");
        assert!((40..=56).contains(&l["prompt_tokens"].as_u64().unwrap()), "prompt tokens near 48: {l}");
        assert_eq!(l["gen_tokens"], 12, "{l}");
        assert_eq!(l["errors"], 0, "{l}");
    }

    let out = run(&["--url", &s.url, "--model", "smollm2", "--prompt-tokens", "32", "--gen-tokens", "4", "--concurrency", "1", "--runs", "1"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("| endpoint | streams | TTFT p50 ms |"), "{table}");
    assert_eq!(table.lines().count(), 3);

    // Without --url, hearth starts itself on this store.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["bench", "--model", "smollm2", "--prompt-tokens", "32", "--gen-tokens", "4", "--concurrency", "1", "--runs", "1", "--json"])
        .env("HEARTH_MODELS", &s.store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let levels: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(levels[0]["gen_tokens"], 4);

    let out = run(&["--url", "http://127.0.0.1:1", "--model", "smollm2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach http://127.0.0.1:1"));
    let out = run(&["--url", &s.url, "--model", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model 'nope:latest' not found"));
}

/// The server process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A bounded load on loopback, 32 clients x 10 requests, with the runner killed once in the
/// middle: every request is answered; the only errors are the requests that were in flight on
/// the killed runner (a 500 naming it), the server stays up, and its memory stays bounded.
#[test]
fn a_bounded_load_with_a_runner_killed_in_the_middle() {
    let _turn = common::one_at_a_time();
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let s = Arc::new(Server::start(&["--parallel", "4", "--max-queue", "64", "-c", "256"]));
    assert_eq!(s.post("/api/chat", chat("Hi", 1)).0, 200, "loaded");
    let rss_before = rss_kib(s.child.id());
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let (s, answered) = (s.clone(), answered.clone());
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let r = s.post("/api/chat", chat(&format!("Say the number {}.", c * 10 + i), 4));
                        answered.fetch_add(1, Ordering::SeqCst);
                        r
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Killed once a third of the requests are answered. The wait is generous: CI runs the other
    // tests beside this one on two cores.
    assert!(wait_until(Duration::from_secs(600), || answered.load(Ordering::SeqCst) >= 100), "100 answers");
    let pids = s.runner_pids();
    assert_eq!(pids.len(), 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let results: Vec<(u16, Value)> = clients.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let killed = results.iter().filter(|r| r.0 == 500 && r.1["error"].as_str().is_some_and(|e| e.contains("stopped unexpectedly"))).count();
    let other: Vec<_> = results.iter().filter(|r| r.0 != 200 && !(r.0 == 500 && r.1["error"].as_str().is_some_and(|e| e.contains("stopped unexpectedly")))).collect();
    let rss_after = rss_kib(s.child.id());
    eprintln!("load: {} requests, {ok} answered, {killed} cut off by the kill, server RSS {rss_before} KiB before, {rss_after} KiB after", results.len());
    assert!(other.is_empty(), "errors besides the killed runner's: {other:?}");
    assert!(killed <= 32, "at most the requests in flight (32 clients) were cut off: {killed}");
    assert_eq!(ok + killed, 320);
    assert_eq!(s.post("/api/chat", chat("Hi", 1)).0, 200, "the server is up with a fresh runner");
    assert!(rss_after < rss_before + 64 * 1024, "server memory grew from {rss_before} to {rss_after} KiB");
}

#[test]
fn a_prompt_longer_than_the_default_context_grows_it_unless_c_was_given() {
    let _turn = common::one_at_a_time();
    // About 4,500 tokens: more than the default context (4096), less than the model's (8192).
    let items: Vec<String> = (0..650).map(|i| format!("item{i} is blue.")).collect();
    let chat = json!({"model": "smollm2", "messages": [{"role": "user", "content": format!("{} What color is item7?", items.join(" "))}], "max_tokens": 4});
    let s = Server::start(&[]);
    let (code, v) = s.post("/v1/chat/completions", chat.clone());
    assert_eq!(code, 200, "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 4096, "{v}");
    let context = |s: &Server| s.get("/api/ps").1["models"][0]["context_length"].clone();
    assert_eq!(context(&s), 8192);
    // Later requests use the larger context as it is: no reload back and forth.
    let (code, v) = s.post("/v1/chat/completions", json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(context(&s), 8192);
    drop(s);
    // -c is the user's choice: kept, and the prompt refused, saying so.
    let s = Server::start(&["-c", "4096"]);
    let (code, v) = s.post("/v1/chat/completions", chat);
    assert_eq!(code, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("does not fit in the context of 4096 tokens"), "{v}");
}
