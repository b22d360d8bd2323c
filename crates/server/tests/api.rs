//! The API adapters, fast: the real server (router, runtime, scheduler, runner sockets) with a
//! fake runner (`tests/fake_runner/main.rs`) that speaks the real runner protocol without
//! llama.cpp. Snapshots (insta) pin the NDJSON and SSE streams, whole answers, error bodies
//! and status codes of both APIs, with times and ids scrubbed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_runtime::protocol::LoadSettings;
use hearth_runtime::{Config, KeepAlive, Runtime, Scheduler};
use hearth_server::{AppState, ServerConfig};
use serde_json::{json, Value};

/// A server on 127.0.0.1:0 over a store holding one small model, `tiny`.
struct Server {
    url: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(memory_budget: u64) -> Server {
        Server::start_with(memory_budget, None).await
    }

    async fn start_with(memory_budget: u64, api_key: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = hearth_store::Store::open(dir.path().join("models")).unwrap();
        let file = dir.path().join("tiny.gguf");
        let mut w = hearth_gguf::writer::GgufWriter::new();
        w.set("general.architecture", "llama").set("general.name", "tiny");
        w.zeroed_tensor("token_embd.weight", [64, 256], 0).unwrap();
        w.write_to_path(&file).unwrap();
        hearth_store::pull::add_local(&store, &file, Some("tiny"), &hearth_store::NoProgress).unwrap();
        let sched = Scheduler::new(Config {
            exe: env!("CARGO_BIN_EXE_hearth-fake-runner").into(),
            socket_parent: dir.path().to_path_buf(),
            parallel: 2,
            load: LoadSettings { ctx_size: Some(256), ..LoadSettings::default() },
            max_loaded: 2,
            max_queue: 4,
            memory_budget,
            keep_alive: KeepAlive::For(Duration::from_secs(60)),
            load_timeout: Duration::from_secs(20),
            cluster: None,
            gpus: Vec::new(),
        })
        .unwrap();
        let state = Arc::new(AppState {
            runtime: Runtime::new(sched, store),
            config: ServerConfig {
                max_body: 1 << 20,
                header_timeout: Duration::from_millis(500),
                max_connections: 64,
                api_key: api_key.map(str::to_string),
                ..ServerConfig::new(dir.path().join("hearth.db"))
            },
            metrics: hearth_server::metrics::Metrics::new(),
            started: Instant::now(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            hearth_server::run(listener, state, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server { url, _dir: dir, stop: Some(tx), task: Some(task) }
    }

    async fn post(&self, path: &str, body: Value) -> String {
        let r = reqwest::Client::new().post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        render(r).await
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> String {
        render(r.send().await.unwrap()).await
    }

    fn client(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().request(method, format!("{}{path}", self.url))
    }

    async fn get(&self, path: &str) -> String {
        render(reqwest::get(format!("{}{path}", self.url)).await.unwrap()).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

/// Times, dates and ids change from run to run.
fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match k.as_str() {
                    "created_at" | "created" | "id" | "item_id" | "total_duration" | "load_duration" | "expires_at" | "modified_at" | "digest" => *x = json!("[scrubbed]"),
                    _ => scrub(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Status, the headers that matter, and the body: JSON pretty-printed, NDJSON one value per
/// line, SSE one `data:` frame per line, each scrubbed.
async fn render(r: reqwest::Response) -> String {
    let status = r.status().as_u16();
    let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (ctype, retry) = (header("content-type").unwrap_or_default(), header("retry-after"));
    let body = r.text().await.unwrap();
    let json_line = |l: &str| -> String {
        match serde_json::from_str::<Value>(l) {
            Ok(mut v) => {
                scrub(&mut v);
                serde_json::to_string(&v).unwrap()
            }
            Err(_) => l.to_string(),
        }
    };
    let shown = if ctype.starts_with("application/x-ndjson") {
        body.lines().map(json_line).collect::<Vec<_>>().join("\n")
    } else if ctype.starts_with("text/event-stream") {
        body.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| match f.strip_prefix("event: ").and_then(|f| f.split_once("\ndata: ")) {
                Some((event, data)) => format!("event: {event} data: {}", json_line(data)),
                None => format!("data: {}", json_line(f.trim_start_matches("data: "))),
            })
            .collect::<Vec<_>>()
            .join("\n")
    } else if let Ok(mut v) = serde_json::from_str::<Value>(&body) {
        scrub(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    } else {
        body
    };
    let retry = retry.map(|r| format!("retry-after: {r}\n")).unwrap_or_default();
    format!("status: {status}\ncontent-type: {ctype}\n{retry}\n{shown}\n")
}

fn chat(content: &str, stream: bool) -> Value {
    json!({"model": "tiny", "messages": [{"role": "user", "content": content}], "stream": stream})
}

#[tokio::test]
async fn ollama_generation() {
    let s = Server::start(1 << 30).await;
    insta::assert_snapshot!("ollama_chat_stream", s.post("/api/chat", chat("hi", true)).await);
    insta::assert_snapshot!("ollama_chat_whole", s.post("/api/chat", chat("hi", false)).await);
    insta::assert_snapshot!("ollama_generate_length", s.post("/api/generate", json!({"model": "tiny", "prompt": "hi", "options": {"num_predict": 2}})).await);
    // A raw prompt streams its text (it has no chat to read into deltas).
    insta::assert_snapshot!("ollama_generate_raw_stream", s.post("/api/generate", json!({"model": "tiny", "prompt": "hi", "raw": true, "options": {"num_predict": 2}})).await);
    insta::assert_snapshot!("ollama_embed", s.post("/api/embed", json!({"model": "tiny", "input": ["a", "b"]})).await);
    insta::assert_snapshot!("ollama_ps", s.get("/api/ps").await);
    s.stop().await;
}

#[tokio::test]
async fn openai_generation() {
    let s = Server::start(1 << 30).await;
    let mut body = chat("hi", true);
    body["stream_options"] = json!({"include_usage": true});
    insta::assert_snapshot!("openai_chat_stream", s.post("/v1/chat/completions", body).await);
    let mut body = chat("hi", false);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    insta::assert_snapshot!("openai_chat_whole_logprobs", s.post("/v1/chat/completions", body).await);
    insta::assert_snapshot!("openai_completion_length", s.post("/v1/completions", json!({"model": "tiny", "prompt": "hi", "max_tokens": 3})).await);
    // Streamed tokens with their logprobs, a chat's and a completion's frames.
    let mut body = chat("hi", true);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    insta::assert_snapshot!("openai_chat_stream_logprobs", s.post("/v1/chat/completions", body).await);
    let body = json!({"model": "tiny", "prompt": "hi", "max_tokens": 3, "stream": true, "logprobs": 2});
    insta::assert_snapshot!("openai_completion_stream_logprobs", s.post("/v1/completions", body).await);
    insta::assert_snapshot!("openai_embeddings", s.post("/v1/embeddings", json!({"model": "tiny", "input": "a"})).await);
    s.stop().await;
}

#[tokio::test]
async fn errors_before_the_first_token() {
    let s = Server::start(1 << 30).await;
    insta::assert_snapshot!("ollama_unknown_model", s.post("/api/chat", json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})).await);
    insta::assert_snapshot!("openai_unknown_model", s.post("/v1/chat/completions", json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})).await);
    insta::assert_snapshot!("ollama_bad_field", s.post("/api/chat", json!({"model": "tiny", "messages": [{"role": "user", "content": 5}]})).await);
    insta::assert_snapshot!("openai_bad_field", s.post("/v1/chat/completions", json!({"model": "tiny", "messages": "hi"})).await);
    insta::assert_snapshot!("openai_bad_temperature", s.post("/v1/chat/completions", json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 3})).await);
    insta::assert_snapshot!("ollama_prompt_too_long", s.post("/api/chat", chat("too long", true)).await);
    insta::assert_snapshot!("openai_prompt_too_long", s.post("/v1/chat/completions", chat("too long", true)).await);
    s.stop().await;
}

#[tokio::test]
async fn a_runner_that_dies_mid_stream() {
    let s = Server::start(1 << 30).await;
    insta::assert_snapshot!("ollama_runner_dies", s.post("/api/chat", chat("please die", true)).await);
    insta::assert_snapshot!("openai_runner_dies", s.post("/v1/chat/completions", chat("please die", true)).await);
    // The server is fine, and the next request starts a fresh runner.
    insta::assert_snapshot!("ollama_after_a_death", s.post("/api/chat", chat("hi", false)).await);
    s.stop().await;
}

/// A model that can never fit the memory budget gets an error that says so and is not worth
/// retrying: no 503, no Retry-After (clients would retry for ever).
#[tokio::test]
async fn a_model_too_large_is_not_retryable() {
    let s = Server::start(16 << 10).await;
    let ollama = s.post("/api/chat", chat("hi", true)).await;
    assert!(ollama.starts_with("status: 500\n") && !ollama.contains("retry-after"), "{ollama}");
    insta::assert_snapshot!("ollama_too_large", ollama);
    let openai = s.post("/v1/chat/completions", chat("hi", true)).await;
    assert!(openai.starts_with("status: 400\n") && !openai.contains("retry-after"), "{openai}");
    insta::assert_snapshot!("openai_too_large", openai);
    s.stop().await;
}

/// A web page in the user's browser may not use the server: a cross-origin POST without a
/// preflight (`text/plain`) is refused, and so is a `Host` that is not this machine (DNS
/// rebinding). Clients that are not browsers (no Origin, a numeric Host) pass.
#[tokio::test]
async fn browser_attacks_are_refused() {
    let s = Server::start(1 << 30).await;
    let copy = r#"{"source": "tiny", "destination": "planted"}"#;
    let from_page = s.client(reqwest::Method::POST, "/api/copy").header("content-type", "text/plain").header("origin", "https://evil.example").body(copy);
    insta::assert_snapshot!("cross_origin_post_refused", s.send(from_page).await);
    let rebinding = s.client(reqwest::Method::GET, "/hearth/conversations").header("host", "attacker.example:11434");
    insta::assert_snapshot!("rebinding_host_refused", s.send(rebinding).await);
    let openai = s.client(reqwest::Method::POST, "/v1/chat/completions").header("origin", "https://evil.example").json(&chat("hi", false));
    assert!(s.send(openai).await.starts_with("status: 403\n"));
    assert!(s.get("/api/tags").await.contains("tiny:latest") && !s.get("/api/tags").await.contains("planted"), "nothing was copied");
    let local_page = s.client(reqwest::Method::POST, "/api/copy").header("origin", "http://localhost:3000").body(copy);
    assert!(s.send(local_page).await.starts_with("status: 200\n"), "a page on this machine may");
    s.stop().await;
}

/// Bodies and values that once panicked a handler or reached the runner garbled: each is a
/// 400 naming what was wrong.
#[tokio::test]
async fn hostile_values_are_clear_400s() {
    let s = Server::start(1 << 30).await;
    for (name, path, body) in [
        ("keep_alive_nan", "/api/chat", r#"{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "keep_alive": "NaN"}"#),
        ("keep_alive_huge", "/api/generate", r#"{"model": "tiny", "prompt": "hi", "keep_alive": 1e20}"#),
        ("temperature_overflow", "/api/chat", r#"{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "options": {"temperature": 1e39}}"#),
        ("trailing_garbage", "/api/chat", r#"{"model": "tiny", "messages": []} {"x": 1}"#),
        ("array_body", "/hearth/conversations", "[]"),
        ("openai_trailing_garbage", "/v1/chat/completions", r#"{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}]"#),
    ] {
        let r = s.send(s.client(reqwest::Method::POST, path).header("content-type", "application/json").body(body)).await;
        assert!(r.starts_with("status: 400\n"), "{name}: {r}");
        insta::assert_snapshot!(name, r);
    }
    let r = s.send(s.client(reqwest::Method::DELETE, "/api/delete").json(&json!({"model": "../../etc"}))).await;
    assert!(r.starts_with("status: 400\n"), "an invalid name to delete: {r}");
    s.stop().await;
}

/// A request for a context that can never fit is refused before the loaded model is unloaded
/// for it, and says so without Retry-After.
#[tokio::test]
async fn a_huge_context_does_not_evict_the_loaded_model() {
    let s = Server::start(256 << 20).await;
    assert!(s.post("/api/chat", chat("hi", false)).await.starts_with("status: 200\n"));
    let pid_before = s.get("/api/ps").await;
    let mut huge = chat("hi", false);
    huge["options"] = json!({"num_ctx": 1e9});
    let r = s.post("/api/chat", huge).await;
    assert!(r.starts_with("status: 500\n") && r.contains("requires more memory") && !r.contains("retry-after"), "{r}");
    assert_eq!(s.get("/api/ps").await, pid_before, "the loaded model is still loaded");
    s.stop().await;
}

/// A client that goes away while its model loads does not leave /health saying "Loading
/// model" for ever.
#[tokio::test]
async fn health_recovers_after_a_client_leaves_during_a_load() {
    let s = Server::start(1 << 30).await;
    let mut slow = chat("hi", false);
    slow["options"] = json!({"num_ctx": 4242});
    let gone = s.client(reqwest::Method::POST, "/api/chat").json(&slow).timeout(Duration::from_millis(500)).send().await;
    assert!(gone.is_err(), "the client gave up");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = s.get("/health").await;
        if h.starts_with("status: 200\n") {
            break;
        }
        assert!(Instant::now() < deadline, "/health is stuck: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// Two uploads of one digest at once, one of them bogus and slow: the verified one lands, the
/// bogus one is refused, and the stored blob is the verified bytes (once, a shared temporary
/// file let the slow upload keep writing into the blob after the real one got 201).
#[tokio::test]
async fn concurrent_uploads_of_one_blob_cannot_corrupt_it() {
    use sha2::Digest;
    let s = Server::start(1 << 30).await;
    let good = vec![7u8; 1 << 20];
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&good)));
    let path = format!("/api/blobs/{digest}");
    let chunks = futures_util::stream::unfold(0, |i| async move {
        (i < 8).then_some(())?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(vec![0u8; 128 << 10]), i + 1))
    });
    let bogus = s.client(reqwest::Method::POST, &path).body(reqwest::Body::wrap_stream(chunks)).send();
    let real = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.client(reqwest::Method::POST, &path).body(good.clone()).send().await.unwrap().status().as_u16()
    };
    let (bogus, real) = tokio::join!(bogus, real);
    assert_eq!(real, 201);
    assert_eq!(bogus.unwrap().status().as_u16(), 400);
    let blob = std::fs::read(s._dir.path().join("models/blobs").join(digest.replace(':', "-"))).unwrap();
    assert!(blob == good, "the stored blob is the verified upload");
    s.stop().await;
}

/// `/api/pull` does not fetch from this machine or a private network for a client unless the
/// request says `insecure`, and never echoes what such a service answered.
#[tokio::test]
async fn a_pull_of_an_internal_url_is_refused() {
    let s = Server::start(1 << 30).await;
    let secret = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/secret", secret.local_addr().unwrap());
    let r = s.post("/api/pull", json!({"model": url, "stream": false})).await;
    assert!(r.starts_with("status: 400\n") && r.contains("insecure"), "{r}");
    let r = s.post("/api/pull", json!({"model": "https://127.0.0.1:1/m.gguf"})).await;
    assert!(r.starts_with("status: 400\n"), "{r}");
    s.stop().await;
}

/// Connections that never send a request (idle, or headers a byte at a time) are closed after
/// the header timeout, so they cannot pile up.
#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(1 << 30).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    for (name, c) in [("idle", &mut idle), ("slowloris", &mut slow)] {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "the {name} connection is still open after 5 s");
    }
    // A keep-alive connection gets its answer, then is closed once idle as long.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"version\"") {
        let n = kept.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    let rest = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut got)).await;
    assert!(rest.is_ok(), "the idle keep-alive connection is still open 5 s after its answer");
    s.stop().await;
}

/// A model whose header holds a huge array (here 300k strings) is read lean by the server:
/// `/api/show`, even verbose, answers without it, and the server stays responsive.
#[tokio::test]
async fn a_huge_metadata_array_is_not_loaded_by_the_server() {
    let s = Server::start(1 << 30).await;
    let file = s._dir.path().join("vocab.gguf");
    let mut w = hearth_gguf::writer::GgufWriter::new();
    w.set("general.architecture", "llama").set("tokenizer.ggml.tokens", hearth_gguf::Value::array((0..300_000).map(|i| format!("token-{i}"))));
    w.zeroed_tensor("token_embd.weight", [64, 16], 0).unwrap();
    w.write_to_path(&file).unwrap();
    let store = hearth_store::Store::open(s._dir.path().join("models")).unwrap();
    hearth_store::pull::add_local(&store, &file, Some("vocab"), &hearth_store::NoProgress).unwrap();
    let r = s.post("/api/show", json!({"model": "vocab", "verbose": true})).await;
    assert!(r.starts_with("status: 200\n"), "{r}");
    assert!(r.contains("\"tokenizer.ggml.tokens\": null") && !r.contains("token-299999"), "the array is not echoed");
    assert!(s.get("/api/version").await.starts_with("status: 200\n"));
    s.stop().await;
}

/// A deterministic xorshift generator, so a failing case can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A random JSON value: every type, odd numbers, long and strange strings, nesting.
fn random_value(r: &mut Rng, depth: u32) -> Value {
    match r.below(if depth > 3 { 7 } else { 9 }) {
        0 => Value::Null,
        1 => json!(r.below(2) == 0),
        2 => json!([0i64, -1, 1, 2, 64, 4242, i64::MAX, i64::MIN][r.below(8) as usize]),
        3 => json!([0.0, -0.5, 0.7, 1e39, -1e308, 1e-300, 2.5][r.below(7) as usize]),
        4 => json!(["", "hi", "die", "too long", "5m", "-1", "NaN", "inf", "1e20", "json", "\u{0}\u{ffff}", "smollm2"][r.below(12) as usize]),
        5 => json!("x".repeat(r.below(5000) as usize)),
        6 => json!(format!("tiny{}", [":latest", "", ":x", "/../../etc", ":\u{7f}"][r.below(5) as usize])),
        7 => Value::Array((0..r.below(4)).map(|_| random_value(r, depth + 1)).collect()),
        _ => {
            let keys = ["role", "content", "model", "messages", "prompt", "options", "stream", "format", "temperature", "num_ctx", "num_predict", "stop", "keep_alive", "input", "tools", "images"];
            Value::Object((0..r.below(5)).map(|_| (keys[r.below(keys.len() as u64) as usize].to_string(), random_value(r, depth + 1))).collect())
        }
    }
}

/// A valid request with some fields replaced, removed or added at random.
fn mutate(r: &mut Rng, base: &Value) -> Value {
    let mut v = base.clone();
    let Some(map) = v.as_object_mut() else { return v };
    for _ in 0..=r.below(3) {
        let keys: Vec<String> = map.keys().cloned().collect();
        match r.below(4) {
            0 if !keys.is_empty() => {
                map.remove(&keys[r.below(keys.len() as u64) as usize]);
            }
            1 if !keys.is_empty() => {
                let k = keys[r.below(keys.len() as u64) as usize].clone();
                map.insert(k, random_value(r, 1));
            }
            2 => {
                if let Some(Value::Array(msgs)) = map.get_mut("messages") {
                    if let Some(m) = msgs.first_mut().and_then(Value::as_object_mut) {
                        m.insert("content".into(), random_value(r, 2));
                    }
                }
            }
            _ => {
                let extra = ["options", "stream", "format", "keep_alive", "max_tokens", "logprobs", "top_logprobs", "n", "stop", "response_format", "seed", "top_k", "repeat_last_n"];
                map.insert(extra[r.below(extra.len() as u64) as usize].to_string(), random_value(r, 1));
            }
        }
    }
    v
}

/// Thousands of mutated and random bodies against every generation route of both APIs, and
/// raw byte noise: every answer is a status with a JSON error or a stream, never a dropped
/// connection (a panic) or a 5xx other than a runner that was told to die, and the server
/// still answers afterwards.
#[tokio::test]
async fn random_request_bodies_never_break_the_server() {
    let s = Server::start(1 << 30).await;
    let routes: [(&str, Value); 9] = [
        ("/api/chat", json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": false})),
        ("/api/generate", json!({"model": "tiny", "prompt": "hi", "stream": false})),
        ("/api/embed", json!({"model": "tiny", "input": "hi"})),
        ("/api/show", json!({"model": "tiny"})),
        ("/v1/chat/completions", json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})),
        ("/v1/completions", json!({"model": "tiny", "prompt": "hi", "max_tokens": 2})),
        ("/v1/embeddings", json!({"model": "tiny", "input": "hi"})),
        ("/v1/messages", json!({"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "text", "text": "weather"}]}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"}})),
        ("/v1/responses", json!({"model": "tiny", "input": [{"type": "message", "role": "user", "content": "weather"}],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]})),
    ];
    let client = reqwest::Client::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut r = Rng(0x5eed_1234_abcd_ef01);
    let cases = 1000;
    for (path, base) in &routes {
        for case in 0..cases {
            let seed = r.0;
            let body = match case % 10 {
                // Raw bytes: truncated JSON and noise.
                0 => {
                    let text = serde_json::to_string(&mutate(&mut r, base)).unwrap();
                    let cut = r.below(text.len() as u64 + 1) as usize;
                    text.as_bytes()[..cut].to_vec()
                }
                1 => (0..r.below(64)).map(|_| r.next() as u8).collect(),
                _ => serde_json::to_vec(&mutate(&mut r, base)).unwrap(),
            };
            let resp = client.post(format!("{}{path}", s.url)).header("content-type", "application/json").body(body.clone()).timeout(Duration::from_secs(20)).send().await;
            let resp = resp.unwrap_or_else(|e| panic!("{path} case {case} (seed {seed:#x}) dropped the connection: {e}\nbody: {}", String::from_utf8_lossy(&body)));
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let died = String::from_utf8_lossy(&body).contains("die");
            assert!(status < 500 || died || text.contains("requires more memory"), "{path} case {case} (seed {seed:#x}): {status} {text}\nbody: {}", String::from_utf8_lossy(&body));
            *statuses.entry(status).or_default() += 1;
        }
    }
    eprintln!("{} requests, by status: {statuses:?}", cases * routes.len());
    assert!(s.get("/api/version").await.starts_with("status: 200\n"));
    assert!(s.post("/api/chat", chat("hi", false)).await.starts_with("status: 200\n"), "and it still answers");
    s.stop().await;
}

/// No error tells a client where the store is on this machine.
#[tokio::test]
async fn errors_do_not_reveal_the_store_path() {
    let s = Server::start(1 << 30).await;
    let blobs = s._dir.path().join("models/blobs");
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let r = s.post("/api/chat", chat("hi", false)).await;
    assert!(r.starts_with("status: 500\n"), "{r}");
    let root = s._dir.path().join("models").display().to_string();
    assert!(!r.contains(&root) && r.contains("<store>"), "{r}");
    s.stop().await;
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[tokio::test]
async fn tool_calls_in_openai_and_ollama_shapes() {
    let s = Server::start(1 << 30).await;
    for stream in [false, true] {
        let mut body = chat("weather in Paris?", stream);
        body["tools"] = json!([weather_tool()]);
        insta::assert_snapshot!(format!("openai_tool_call_stream_{stream}"), s.post("/v1/chat/completions", body.clone()).await);
        insta::assert_snapshot!(format!("ollama_tool_call_stream_{stream}"), s.post("/api/chat", body).await);
    }
    // A call and its result fed back; bad history and choices are 400s naming the field.
    let history = json!([
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
    ]);
    let ok = s.post("/v1/chat/completions", json!({"model": "tiny", "messages": history, "tools": [weather_tool()]})).await;
    assert!(ok.starts_with("status: 200"), "{ok}");
    let bad = s.post("/v1/chat/completions", json!({"model": "tiny", "messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]})).await;
    assert!(bad.starts_with("status: 400") && bad.contains("messages[0].tool_calls[0].function"), "{bad}");
    let bad = s.post("/v1/chat/completions", json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [weather_tool()], "tool_choice": "sometimes"})).await;
    assert!(bad.starts_with("status: 400") && bad.contains("tool_choice"), "{bad}");
    let many: Vec<Value> = (0..1000).map(|i| json!({"type": "function", "function": {"name": format!("t{i}")}})).collect();
    let bad = s.post("/v1/chat/completions", json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": many})).await;
    assert!(bad.starts_with("status: 400") && bad.contains("at most 512"), "{bad}");
    let bad = s.post("/v1/chat/completions", json!({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}]})).await;
    assert!(bad.starts_with("status: 400") && bad.contains("tools[0].function"), "{bad}");
    s.stop().await;
}

#[tokio::test]
async fn anthropic_messages() {
    let s = Server::start(1 << 30).await;
    let body = |content: &str, stream: bool| json!({"model": "tiny", "max_tokens": 64, "stream": stream,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": content}]});
    insta::assert_snapshot!("anthropic_whole", s.post("/v1/messages?beta=true", body("hi", false)).await);
    insta::assert_snapshot!("anthropic_stream", s.post("/v1/messages", body("hi", true)).await);
    for stream in [false, true] {
        let mut b = body("weather in Paris?", stream);
        b["tools"] = json!([{"name": "get_weather", "description": "The weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                            {"type": "web_search_20250305", "name": "web_search"}]);
        b["tool_choice"] = json!({"type": "any"});
        insta::assert_snapshot!(format!("anthropic_tool_use_stream_{stream}"), s.post("/v1/messages", b).await);
    }
    // The call and its result fed back as content blocks.
    let fed = json!({"model": "tiny", "max_tokens": 8, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""}, {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "18C"}]}]},
    ]});
    assert!(s.post("/v1/messages", fed).await.starts_with("status: 200"));
    insta::assert_snapshot!("anthropic_count_tokens", s.post("/v1/messages/count_tokens", json!({"model": "tiny", "messages": [{"role": "user", "content": "how many tokens"}]})).await);
    insta::assert_snapshot!("anthropic_unknown_model", s.post("/v1/messages", json!({"model": "nope", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})).await);
    let bad = s.post("/v1/messages", json!({"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "tool"}})).await;
    assert!(bad.starts_with("status: 400") && bad.contains("invalid_request_error") && bad.contains("tool_choice.name"), "{bad}");
    s.stop().await;
}

#[tokio::test]
async fn anthropic_clients_authenticate_with_x_api_key() {
    let s = Server::start_with(1 << 30, Some("sekret")).await;
    let body = json!({"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let denied = s.send(s.client(reqwest::Method::POST, "/v1/messages").json(&body)).await;
    assert!(denied.starts_with("status: 401") && denied.contains("authentication_error"), "{denied}");
    let wrong = s.send(s.client(reqwest::Method::POST, "/v1/messages").header("x-api-key", "nope").json(&body)).await;
    assert!(wrong.starts_with("status: 401"), "{wrong}");
    let ok = s.send(s.client(reqwest::Method::POST, "/v1/messages").header("x-api-key", "sekret").header("anthropic-version", "2023-06-01").json(&body)).await;
    assert!(ok.starts_with("status: 200"), "{ok}");
    let ok = s.send(s.client(reqwest::Method::POST, "/v1/chat/completions").bearer_auth("sekret").json(&chat("hi", false))).await;
    assert!(ok.starts_with("status: 200"), "{ok}");
    s.stop().await;
}

#[tokio::test]
async fn openai_responses() {
    let s = Server::start(1 << 30).await;
    insta::assert_snapshot!("responses_whole", s.post("/v1/responses", json!({"model": "tiny", "input": "hi", "instructions": "Be brief."})).await);
    insta::assert_snapshot!("responses_stream", s.post("/v1/responses", json!({"model": "tiny", "input": "hi", "stream": true})).await);
    for stream in [false, true] {
        let body = json!({"model": "tiny", "stream": stream, "tool_choice": "auto", "store": false, "include": ["reasoning.encrypted_content"],
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather in Paris?"}]}],
            "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "get_weather", "strict": false,
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]},
                      {"type": "web_search"}]});
        insta::assert_snapshot!(format!("responses_function_call_stream_{stream}"), s.post("/v1/responses", body).await);
    }
    let fed = json!({"model": "tiny", "input": [
        {"type": "message", "role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "18C"},
    ]});
    assert!(s.post("/v1/responses", fed).await.starts_with("status: 200"));
    insta::assert_snapshot!("responses_previous_id", s.post("/v1/responses", json!({"model": "tiny", "input": "hi", "previous_response_id": "resp_1"})).await);
    s.stop().await;
}

#[tokio::test]
async fn reasoning_and_stop_strings_in_every_shape() {
    let s = Server::start(1 << 30).await;
    insta::assert_snapshot!("openai_reasoning_stream", s.post("/v1/chat/completions", chat("think first", true)).await);
    insta::assert_snapshot!("openai_reasoning_whole", s.post("/v1/chat/completions", chat("think first", false)).await);
    insta::assert_snapshot!("ollama_thinking_stream", s.post("/api/chat", chat("think first", true)).await);
    let off = s.post("/api/chat", json!({"model": "tiny", "think": false, "stream": false, "messages": [{"role": "user", "content": "think first"}]})).await;
    assert!(!off.contains("thinking"), "{off}");
    let body = |stream: bool| json!({"model": "tiny", "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "think first"}]});
    insta::assert_snapshot!("anthropic_thinking_stream", s.post("/v1/messages", body(true)).await);
    insta::assert_snapshot!("anthropic_thinking_whole", s.post("/v1/messages", body(false)).await);
    insta::assert_snapshot!("responses_reasoning_stream", s.post("/v1/responses", json!({"model": "tiny", "input": "think first", "stream": true})).await);
    // A stop string: Anthropic names it.
    let stopped = s.post("/v1/messages", json!({"model": "tiny", "max_tokens": 64, "stop_sequences": [" world"], "messages": [{"role": "user", "content": "hi"}]})).await;
    assert!(stopped.contains("\"stop_reason\": \"stop_sequence\"") && stopped.contains("\"stop_sequence\": \" world\""), "{stopped}");
    s.stop().await;
}
