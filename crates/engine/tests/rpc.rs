//! ggml's RPC backend from this build: a model offloaded to an RPC server on 127.0.0.1 gives
//! exactly the local greedy tokens. Its own test binary, because registering an RPC device is
//! process-wide (every later load in the process would offload to it).

mod common;

use common::Captured;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hearth_engine::{Engine, EngineOptions, GenerateRequest, ModelOptions, Prompt, SamplingParams};


#[test]
fn a_model_offloaded_to_an_rpc_server_decodes_exactly_like_the_local_one() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("llama.cpp=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    {
        let endpoint = endpoint.clone();
        std::thread::spawn(move || hearth_engine::rpc::serve(&endpoint, 2, None, &[], false));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&endpoint).is_err() {
        assert!(Instant::now() < deadline, "the RPC server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (free, total) = hearth_engine::rpc::device_memory(&endpoint).unwrap();
    assert!(total > 0 && free <= total);

    let mut model = ModelOptions::new(common::model_path());
    model.rpc_servers = vec![endpoint.clone()];
    model.gpu_layers = Some(99);
    let mut o = EngineOptions::new(model);
    o.ctx_size = 512;
    o.threads = Some(2);
    let e = Engine::start(o).unwrap();
    let out = e
        .generate(GenerateRequest {
            prompt: Prompt::Text(common::chat_prompt("What is the capital of France?")),
            sampling: SamplingParams::greedy(),
            max_tokens: Some(32),
            stop: Vec::new(),
            ignore_eos: false,
            grammar: None,
            logprobs: None,
            preserved: Vec::new(),
        })
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(out.text, include_str!("reference/greedy_capital.txt"));

    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(log.contains("offloaded 31/31 layers"), "all layers went to the RPC device: {log}");
    assert!(log.contains(&format!("RPC0[{endpoint}]")) || log.contains("RPC"), "{log}");

    // An unreachable or malformed address is an error, not ggml's process abort.
    let err = hearth_engine::rpc::device_memory("127.0.0.1:1").unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1") && err.to_string().contains("cannot connect"), "{err}");
    let mut model = ModelOptions::new(common::model_path());
    model.rpc_servers = vec!["no-port-here".into()];
    let err = Engine::start(EngineOptions::new(model)).err().unwrap();
    assert!(err.to_string().contains("not a host:port address"), "{err}");
}
