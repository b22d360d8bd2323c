//! A fake runner for the adapter tests: started by the real scheduler as `EXE runner --spec
//! JSON`, it speaks the real runner protocol ([`hearth_protocol::runner`]) over the real Unix
//! socket, without llama.cpp. Its answers are scripted by the last message (or the raw prompt):
//!
//! - contains `die`: two tokens, then the process exits (a runner that dies mid-stream);
//! - contains `too long`: the runner refuses the prompt, as the engine does past the context;
//! - anything else: the tokens `Hello`, `,`, ` world`, `!` (fewer with `max_tokens`: then the
//!   reason is `length`), with log-probabilities when asked.
//!
//! A chat (messages) also streams its answer as deltas and ends with the parsed message; with
//! tools and a last message containing `weather`, the answer is one call of the first tool
//! with the arguments `{"city":"Paris"}`; a last message containing `think` (unless thinking
//! is turned off) first reasons `Hm, ` `let me see.`. A stop string ` world` ends the answer
//! after `Hello,` (the stop is reported).
//!
//! Embeddings are `[0.6, 0.8]` per input. Timings are fixed numbers. Loading takes two seconds
//! when the context per sequence is 4242 (a slow load, to go away during).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use hearth_protocol::runner::{line, ErrorKind, Generate, Info, Prompt, Reply, Request, Spec};
use hearth_protocol::{Alternative, AssistantMessage, Delta, FinishReason, Logprobs, Timings, ToolCall};

const TOKENS: [&str; 4] = ["Hello", ",", " world", "!"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let spec: Spec = match args.iter().position(|a| a == "--spec").and_then(|i| args.get(i + 1)) {
        Some(json) => serde_json::from_str(json).expect("a runner spec"),
        None => {
            eprintln!("error: usage: fake-runner runner --spec JSON");
            std::process::exit(2);
        }
    };
    if !spec.model.is_file() {
        eprintln!("error: no model file at {}", spec.model.display());
        std::process::exit(1);
    }
    if spec.load.ctx() == 4242 {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    let listener = UnixListener::bind(&spec.socket).expect("bind the socket");
    std::thread::spawn(|| {
        let mut buf = String::new();
        let _ = std::io::stdin().read_line(&mut buf);
        std::process::exit(0);
    });
    println!("ready");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming().flatten() {
        let parallel = spec.parallel;
        let n_ctx = spec.load.ctx();
        std::thread::spawn(move || serve(conn, parallel, n_ctx));
    }
}

fn send(w: &mut impl Write, r: &Reply) -> std::io::Result<()> {
    w.write_all(&line(r))?;
    w.flush()
}

fn serve(conn: UnixStream, parallel: u32, n_ctx: u32) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut text = String::new();
    reader.read_line(&mut text)?;
    match serde_json::from_str::<Request>(&text) {
        Err(e) => send(&mut w, &Reply::Error { kind: ErrorKind::BadRequest, message: format!("bad runner request: {e}") }),
        Ok(Request::Info) => send(&mut w, &Reply::Info(Info { n_ctx_seq: n_ctx, parallel, n_ctx_train: 8192, n_embd: 2, n_vocab: 4, description: "fake".into(), ..Info::default() })),
        Ok(Request::Embed { inputs, .. }) => send(&mut w, &Reply::Embeddings { embeddings: inputs.iter().map(|_| vec![0.6, 0.8]).collect(), prompt_tokens: inputs.len() as u32 }),
        Ok(Request::Generate(g)) => generate(&mut w, g),
        Ok(Request::Render { messages, .. }) => {
            let prompt: String = messages.iter().map(|m| format!("<{}>{}", m.role, m.content)).collect();
            send(&mut w, &Reply::Rendered { tokens: prompt.split_whitespace().count() as u32, prompt })
        }
        Ok(Request::Tokenize { text, .. }) => send(&mut w, &Reply::Tokens { tokens: text.bytes().map(i32::from).collect() }),
        Ok(Request::Detokenize { tokens }) => send(&mut w, &Reply::Text { text: tokens.iter().map(|&t| char::from(t as u8)).collect() }),
    }
}

fn generate(w: &mut UnixStream, g: Generate) -> std::io::Result<()> {
    let prompt = match &g.prompt {
        Prompt::Text(t) => t.clone(),
        Prompt::Messages(m) => m.last().map(|m| m.content.clone()).unwrap_or_default(),
    };
    if prompt.contains("too long") {
        let message = "the prompt is 9000 tokens, which does not fit in the context of 4096 tokens; raise the context size (-c) or shorten the prompt";
        return send(w, &Reply::Error { kind: ErrorKind::BadRequest, message: message.into() });
    }
    let chat = matches!(g.prompt, Prompt::Messages(_));
    let timings = |n: usize| Timings { prompt_tokens: 12, cached_tokens: 0, prompt_ms: 3.0, generated_tokens: n as u32, generation_ms: 6.0, queue_ms: 0.0, load_ms: 1.0, ..Timings::default() };
    if chat && prompt.contains("weather") && !g.chat.tools.is_empty() {
        let call = ToolCall { id: "call_fake0000000000000000000".into(), name: g.chat.tools[0].name.clone(), arguments: r#"{"city":"Paris"}"#.into() };
        let delta = Delta::ToolCall { index: 0, id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() };
        send(w, &Reply::Token { id: 0, text: "{".into(), logprobs: None, deltas: vec![delta] })?;
        let message = AssistantMessage { tool_calls: vec![call], ..Default::default() };
        return send(w, &Reply::Done { text: String::new(), reason: FinishReason::Stop, timings: timings(1), deltas: vec![], message: Some(message), stop: None });
    }
    send(w, &Reply::Started { prompt_tokens: 12 })?;
    let mut reasoning = String::new();
    if chat && prompt.contains("think") && g.chat.think != Some(false) {
        for (i, t) in ["Hm, ", "let me see."].iter().enumerate() {
            reasoning.push_str(t);
            send(w, &Reply::Token { id: 10 + i as i32, text: (*t).into(), logprobs: None, deltas: vec![Delta::Reasoning((*t).into())] })?;
        }
    }
    let stop = g.stop.iter().any(|s| s == " world").then(|| " world".to_string());
    let n = g.max_tokens.map_or(TOKENS.len(), |m| (m as usize).min(TOKENS.len()));
    let n = if stop.is_some() { n.min(2) } else { n };
    for (i, t) in TOKENS.iter().take(n).enumerate() {
        let logprobs = g.logprobs.map(|k| {
            let alt = |t: &str, lp: f32| Alternative { token: t.into(), bytes: t.as_bytes().to_vec(), logprob: lp };
            Logprobs { chosen: alt(t, -0.25), top: (0..k).map(|j| alt(TOKENS[(i + j as usize) % TOKENS.len()], -0.25 - j as f32)).collect() }
        });
        let deltas = if chat { vec![Delta::Content((*t).into())] } else { vec![] };
        send(w, &Reply::Token { id: i as i32, text: (*t).into(), logprobs, deltas })?;
        if prompt.contains("die") && i == 1 {
            eprintln!("error: the fake runner dies as asked");
            std::process::exit(3);
        }
    }
    let reason = if n < TOKENS.len() && stop.is_none() { FinishReason::Length } else { FinishReason::Stop };
    let message = chat.then(|| AssistantMessage { content: TOKENS[..n].concat(), reasoning, ..Default::default() });
    send(w, &Reply::Done { text: String::new(), reason, timings: timings(n), deltas: vec![], message, stop })
}
