//! `hearth runner --spec JSON` (hidden): the runner process. Loads one model into an engine
//! and serves it on a Unix socket, speaking [`hearth_protocol::runner`], until its parent goes
//! away. It lives in the binary, not in the server crate, so the server never links llama.cpp.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use hearth_engine::{Chat, ChatTemplate, Engine, EngineError, EngineOptions, Event, GenerateRequest, Prompt};
use hearth_protocol::runner::{line, ErrorKind, Generate, Info, Prompt as PromptSpec, Reply, Request, Spec};
use hearth_protocol::FinishReason;

/// Runs the runner. Returns only on a startup failure; otherwise the process exits when its
/// parent closes our stdin (or dies: the parent also sets a parent-death signal).
pub fn main(spec_json: &str) -> Result<(), String> {
    let spec: Spec = serde_json::from_str(spec_json).map_err(|e| format!("bad runner spec: {e}"))?;
    // Die with the server, even when it is SIGKILLed. Should it have died before this line,
    // our stdin is already closed and the reader below exits at once.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let engine = Engine::start(EngineOptions::from_settings(&spec.model, &spec.load, spec.parallel)).map_err(|e| e.to_string())?;
    let info = engine.model().info().clone();
    // The GGUF's own Jinja template first; an Ollama Go template only picks a family.
    let template = match (&info.chat_template, spec.go_template.as_deref().and_then(ChatTemplate::from_go_template)) {
        (None, Some(t)) => t,
        _ => ChatTemplate::for_model(&info),
    };
    let chat = Chat::new(engine.model(), template);
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
            thinking: chat.thinking(),
            tool_format: chat.tool_format().to_string(),
            chat_template: chat.source().to_string(),
        },
        engine,
        chat,
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
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors, say: a lasting error would spin this loop on a core.
                tracing::warn!("cannot accept a connection: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
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
    chat: Chat,
    info: Info,
}

fn send(w: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    w.write_all(&line(reply))?;
    w.flush()
}

fn error_reply(e: &EngineError) -> Reply {
    let kind = match e {
        EngineError::PromptTooLong { tokens, .. } => ErrorKind::PromptTooLong { tokens: u32::try_from(*tokens).unwrap_or(u32::MAX) },
        EngineError::InvalidRequest(_) | EngineError::Template(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    };
    Reply::Error { kind, message: e.to_string() }
}

/// Returns when the server closes the connection (or it fails). Waits in `poll` for input, not
/// in `read`: a thread blocked in `read` on a Unix socket is also woken each time the server
/// reads what this side wrote (the socket's one wait queue is told there is room to write),
/// which is a wakeup and two context switches per token on the CPU the server reads on;
/// `poll` is woken only by the events it asks for.
fn watch_for_close(mut conn: UnixStream) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut buf = [0u8; 64];
    loop {
        let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        // Readable (or hung up, or failed): a read does not block now.
        if fds[0].any() != Some(true) {
            continue;
        }
        match std::io::Read::read(&mut conn, &mut buf) {
            Ok(0) => return,
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => return,
            _ => {}
        }
    }
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
        Request::Render { messages, chat } => {
            let reply = state.chat.prepare(state.engine.model(), &messages, &chat).and_then(|p| {
                let tokens = state.engine.tokenize_prompt(&p.prompt)?.len() as u32;
                Ok(Reply::Rendered { prompt: p.prompt, tokens })
            });
            send(&mut writer, &reply.unwrap_or_else(|e| error_reply(&e)))
        }
        Request::Tokenize { text, special } => {
            let reply = state.engine.model().tokenize(&text, false, special).map(|tokens| Reply::Tokens { tokens });
            send(&mut writer, &reply.unwrap_or_else(|e| error_reply(&e)))
        }
        Request::Detokenize { tokens } => {
            let n = state.engine.model().n_vocab();
            let reply = match tokens.iter().find(|&&t| t < 0 || t >= n) {
                Some(bad) => Reply::Error { kind: ErrorKind::BadRequest, message: format!("token {bad} is outside the vocabulary (0..{n})") },
                None => Reply::Text { text: state.engine.model().detokenize(&tokens, true) },
            };
            send(&mut writer, &reply)
        }
        Request::Embed { inputs, normalize, truncate } => {
            match state.engine.embed_counted(&inputs, normalize, truncate) {
                Ok((embeddings, prompt_tokens)) => send(&mut writer, &Reply::Embeddings { embeddings, prompt_tokens }),
                Err(e) => send(&mut writer, &error_reply(&e)),
            }
        }
        Request::Generate(Generate { prompt, sampling, max_tokens, stop, json, ignore_eos, logprobs, chat }) => {
            let mut req = GenerateRequest::new(Prompt::Text(String::new()));
            // A chat's answer is read as it comes: reasoning, text and tool calls.
            let mut reader = None;
            req.stop = stop;
            match prompt {
                PromptSpec::Text(t) => req.prompt = Prompt::Text(t),
                PromptSpec::Messages(m) => match state.chat.prepare(state.engine.model(), &m, &chat) {
                    Ok(p) => {
                        req.prompt = Prompt::Text(p.prompt);
                        req.grammar = p.grammar;
                        req.stop.extend(p.stops);
                        req.preserved = p.preserved;
                        reader = Some(p.reader);
                    }
                    Err(e) => return send(&mut writer, &error_reply(&e)),
                },
            }
            req.sampling = sampling;
            req.max_tokens = max_tokens;
            req.ignore_eos = ignore_eos;
            req.logprobs = logprobs;
            if json && req.grammar.is_none() {
                req.grammar = Some(hearth_engine::Grammar::Json);
            }
            let generation = match state.engine.generate(req) {
                Ok(g) => g,
                Err(e) => return send(&mut writer, &error_reply(&e)),
            };
            send(&mut writer, &Reply::Started { prompt_tokens: generation.prompt_tokens })?;
            // The server closing the connection cancels the generation.
            let canceller = generation.canceller();
            // A chat whose answer is complete before the model stops (see `said_all`) is ended
            // here, and reported as stopped.
            let ender = generation.canceller();
            let mut said_all = false;
            let watch = conn.try_clone()?;
            std::thread::spawn(move || {
                watch_for_close(watch);
                canceller.cancel();
            });
            for event in generation.events.iter() {
                let reply = match event {
                    Event::Token { id, text, logprobs } => Reply::Token {
                        id,
                        deltas: match reader.as_mut() {
                            Some(r) => {
                                let d = r.push(&text);
                                if r.said_all() && !said_all {
                                    said_all = true;
                                    ender.cancel();
                                }
                                d
                            }
                            None => Vec::new(),
                        },
                        text,
                        logprobs: logprobs.map(|l| {
                            let alt = |t: &hearth_engine::TokenLogprob| hearth_protocol::Alternative {
                                token: t.text.clone(),
                                bytes: t.bytes.clone(),
                                logprob: t.logprob,
                            };
                            hearth_protocol::Logprobs { chosen: alt(&l.chosen), top: l.top.iter().map(alt).collect() }
                        }),
                    },
                    Event::Done { text, reason, timings, stop } => {
                        let reason = if said_all && reason == FinishReason::Cancelled { FinishReason::Stop } else { reason };
                        let cut = matches!(reason, FinishReason::Length | FinishReason::Cancelled);
                        let (deltas, message) = match reader.as_mut() {
                            Some(r) => {
                                let (d, m) = r.finish(&text, cut);
                                (d, Some(m))
                            }
                            None => (Vec::new(), None),
                        };
                        let reply = Reply::Done { text, reason, timings, deltas, message, stop };
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
