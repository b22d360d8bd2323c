//! The runner process: loads one model into an engine and serves it on a Unix socket until
//! its parent goes away.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use hearth_engine::{
    ChatMessage, ChatTemplate, Engine, EngineError, EngineOptions, Event, FinishReason, GenerateRequest, ModelOptions,
    Prompt,
};

use super::{ErrorKind, Info, Message, PromptSpec, Reply, Request, Spec};

/// Runs the runner. Returns only on a startup failure; otherwise the process exits when its
/// parent closes our stdin (or dies: the parent also sets a parent-death signal).
pub fn main(spec_json: &str) -> Result<(), String> {
    let spec: Spec = serde_json::from_str(spec_json).map_err(|e| format!("bad runner spec: {e}"))?;
    let mut model = ModelOptions::new(&spec.model);
    model.gpu_layers = spec.gpu_layers;
    model.mmap = spec.mmap;
    model.rpc_servers = spec.rpc_servers.clone();
    model.tensor_split = spec.tensor_split.clone();
    let mut o = EngineOptions::new(model);
    o.parallel = spec.parallel.max(1);
    o.ctx_size = spec.ctx_per_seq.saturating_mul(o.parallel);
    o.batch_size = spec.batch_size;
    o.ubatch_size = spec.ubatch_size;
    o.threads = spec.threads;
    o.flash_attn = spec.flash_attn.parse().map_err(|e: String| e)?;
    let engine = Engine::start(o).map_err(|e| e.to_string())?;
    let info = engine.model().info().clone();
    let template = match (&info.chat_template, &spec.builtin_template) {
        (None, Some(name)) => ChatTemplate::Builtin(name.clone()),
        _ => ChatTemplate::for_model(&info),
    };
    let _ = std::fs::remove_file(&spec.socket);
    let listener = UnixListener::bind(&spec.socket).map_err(|e| format!("cannot listen on {}: {e}", spec.socket.display()))?;
    let state = Arc::new(State {
        info: Info {
            n_ctx_seq: engine.n_ctx_seq(),
            parallel: engine.parallel(),
            n_ctx_train: info.n_ctx_train,
            n_embd: info.n_embd,
            n_vocab: info.n_vocab,
            n_params: info.n_params,
            size_bytes: info.size_bytes,
            load_ms: info.load_ms,
            description: info.description.clone(),
        },
        engine,
        template,
    });
    // The parent holds our stdin: when it closes (the server exited, however), we exit.
    std::thread::spawn(|| {
        let mut buf = String::new();
        let _ = std::io::stdin().read_line(&mut buf);
        std::process::exit(0);
    });
    println!("ready");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let state = state.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(&state, conn) {
                tracing::debug!("runner connection ended: {e}");
            }
        });
    }
    Ok(())
}

struct State {
    engine: Engine,
    template: ChatTemplate,
    info: Info,
}

fn send(w: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("replies serialize");
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

fn error_reply(e: &EngineError) -> Reply {
    let kind = match e {
        EngineError::PromptTooLong { .. } | EngineError::InvalidRequest(_) | EngineError::Template(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    };
    Reply::Error { kind, message: e.to_string() }
}

fn messages(m: &[Message]) -> Vec<ChatMessage> {
    m.iter().map(|m| ChatMessage::new(m.role.clone(), m.content.clone())).collect()
}

fn serve(state: &State, conn: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = std::io::BufWriter::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            return send(&mut writer, &Reply::Error { kind: ErrorKind::BadRequest, message: format!("bad runner request: {e}") })
        }
    };
    match request {
        Request::Info => send(&mut writer, &Reply::Info(state.info.clone())),
        Request::Render { messages: m } => match state.template.render(&messages(&m), true) {
            Ok(text) => {
                let tokens = state.engine.tokenize_prompt(&text).map(|t| t.len() as u32).unwrap_or(0);
                send(&mut writer, &Reply::Rendered { text, tokens })
            }
            Err(e) => send(&mut writer, &error_reply(&e)),
        },
        Request::Embed { inputs, normalize } => {
            let prompt_tokens = inputs
                .iter()
                .map(|t| state.engine.model().tokenize(t, true, true).map(|v| v.len() as u32).unwrap_or(0))
                .sum();
            match state.engine.embed(&inputs, normalize) {
                Ok(embeddings) => send(&mut writer, &Reply::Embeddings { embeddings, prompt_tokens }),
                Err(e) => send(&mut writer, &error_reply(&e)),
            }
        }
        Request::Generate { prompt, sampling, max_tokens, stop, json, ignore_eos, logprobs } => {
            let text = match prompt {
                PromptSpec::Text(t) => t,
                PromptSpec::Messages(m) => match state.template.render(&messages(&m), true) {
                    Ok(t) => t,
                    Err(e) => return send(&mut writer, &error_reply(&e)),
                },
            };
            let mut req = GenerateRequest::new(Prompt::Text(text));
            req.sampling = sampling;
            req.max_tokens = max_tokens;
            req.stop = stop;
            req.ignore_eos = ignore_eos;
            req.logprobs = logprobs;
            if json {
                req.grammar = Some(hearth_engine::Grammar::Json);
            }
            let generation = match state.engine.generate(req) {
                Ok(g) => g,
                Err(e) => return send(&mut writer, &error_reply(&e)),
            };
            // The server closing the connection cancels the generation.
            let canceller = generation.canceller();
            let mut watch = conn.try_clone()?;
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                loop {
                    match std::io::Read::read(&mut watch, &mut buf) {
                        Ok(0) | Err(_) => {
                            canceller.cancel();
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            });
            for event in generation.events.iter() {
                let reply = match event {
                    Event::Token { id, text, logprobs } => Reply::Token {
                        id,
                        text,
                        logprobs: logprobs.map(|l| {
                            let alt = |t: &hearth_engine::TokenLogprob| super::Alternative {
                                token: t.text.clone(),
                                bytes: t.bytes.clone(),
                                logprob: t.logprob,
                            };
                            super::Logprobs { chosen: alt(&l.chosen), top: l.top.iter().map(alt).collect() }
                        }),
                    },
                    Event::Done { text, reason, timings } => {
                        let reply = Reply::Done {
                            text,
                            reason: match reason {
                                FinishReason::Stop => "stop",
                                FinishReason::Length => "length",
                                FinishReason::Cancelled => "cancelled",
                            }
                            .into(),
                            timings,
                        };
                        send(&mut writer, &reply)?;
                        break;
                    }
                    Event::Error(e) => {
                        send(&mut writer, &error_reply(&e))?;
                        break;
                    }
                };
                send(&mut writer, &reply)?;
            }
            let _ = conn.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
    }
}
