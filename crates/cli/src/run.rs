//! `hearth run`: one answer, or an interactive chat, on a model loaded in this process.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use hearth_store::LayerKind;
use hearth_engine::{
    Canceller, ChatMessage, ChatTemplate, Engine, EngineError, EngineOptions, Event, FinishReason, GenerateRequest,
    Prompt, SamplingParams, Timings,
};

use crate::args::{RunArgs, SamplingArgs};

pub fn run(args: RunArgs, verbose: u8) -> Result<ExitCode> {
    let is_path = std::path::Path::new(&args.model).exists() || args.model.ends_with(".gguf") || args.model.contains(std::path::MAIN_SEPARATOR);
    if !args.cluster.workers.is_empty() {
        // Over workers: through a server in this process, so that a lost worker ends a
        // runner (and this answer) with a message instead of aborting the whole process.
        // A file goes into the store first (by hardlink: no copy), under its file name, so
        // the workers can fill their caches from their own copy and the server can place it.
        let model = if is_path { crate::models::add_for_run(std::path::Path::new(&args.model))? } else { args.model.clone() };
        let bg = crate::serve::background(serve_args_for(&args)?)?;
        let remote = crate::client::Remote::at(&bg.url);
        let backend = Backend::Remote { options: remote_options(&args), remote, model, raw: args.raw };
        let code = converse(backend, &args, args.system.clone(), args.sampling.stop.clone(), verbose);
        drop(bg);
        return code;
    }
    if !is_path && args.load.rpc.is_empty() {
        if let Some(remote) = crate::client::server() {
            let backend = Backend::Remote { options: remote_options(&args), remote, model: args.model.clone(), raw: args.raw };
            return converse(backend, &args, args.system.clone(), args.sampling.stop.clone(), verbose);
        }
    }
    let model = crate::models::resolve(&args.model)?;
    let mut load = args.load.clone();
    if let Some(d) = &load.model_draft {
        load.model_draft = Some(crate::models::resolve(d).with_context(|| format!("--model-draft {d}"))?.path.to_string_lossy().into_owned());
    }
    if let Some(p) = crate::fit::plan_for_run(&args.model, &mut load)? {
        tracing::info!("placement:\n{}", p.table());
    }
    let engine = Engine::start(EngineOptions::from_settings(&model.path, &load, 1))?;
    let info = engine.model().info();
    let template = (!args.raw).then(|| {
        // The GGUF's own Jinja template first; an Ollama Go template only picks a family.
        let go = model.layer_text(LayerKind::Template);
        match (&info.chat_template, go.as_deref().and_then(ChatTemplate::from_go_template)) {
            (None, Some(t)) => t,
            _ => ChatTemplate::for_model(info),
        }
    });
    let mut stop = args.sampling.stop.clone();
    if let Some(params) = model.layer_text(LayerKind::Params) {
        // Ollama's params layer: its stop strings apply (flags add to them).
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&params) {
            match &v["stop"] {
                serde_json::Value::Array(a) => stop.extend(a.iter().filter_map(|s| s.as_str().map(str::to_string))),
                serde_json::Value::String(s) => stop.push(s.clone()),
                _ => {}
            }
        }
    }
    let system = args.system.clone().or_else(|| model.layer_text(LayerKind::System));
    converse(Backend::Local { engine, template }, &args, system, stop, verbose)
}

/// A one-model server's settings: `hearth run`'s load flags and workers, one sequence.
fn serve_args_for(args: &RunArgs) -> Result<crate::args::ServeArgs> {
    let mut a = crate::serve::default_args(&["--parallel", "1"])?;
    a.load = args.load.clone();
    a.cluster = args.cluster.clone();
    Ok(a)
}

/// The request options for a server, from the flags (the context only when set).
fn remote_options(args: &RunArgs) -> serde_json::Value {
    let s = &args.sampling;
    let mut o = serde_json::json!({
        "temperature": s.temp, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p, "typical_p": s.typical_p,
        "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n,
        "presence_penalty": s.presence_penalty, "frequency_penalty": s.frequency_penalty,
        "num_predict": s.predict,
    });
    if let Some(seed) = s.seed {
        o["seed"] = seed.into();
    }
    if !s.stop.is_empty() {
        o["stop"] = serde_json::json!(s.stop);
    }
    if let Some(ctx) = args.load.ctx_size {
        o["num_ctx"] = ctx.into();
    }
    o
}

fn converse(backend: Backend, args: &RunArgs, system: Option<String>, stop: Vec<String>, verbose: u8) -> Result<ExitCode> {
    let session = Session {
        backend,
        sampling: sampling(&args.sampling),
        max_tokens: (args.sampling.predict >= 0).then(|| args.sampling.predict.min(u32::MAX as i64) as u32),
        stop,
        verbose: verbose > 0,
        current: Arc::new(Mutex::new(None)),
    };
    let interactive = args.prompt.is_none();
    {
        // Ctrl-C stops the answer being generated. Between answers it exits a one-shot run
        // and, in a chat, says how to leave.
        let current = session.current.clone();
        ctrlc::set_handler(move || {
            let running = current.lock().ok().and_then(|c| c.clone());
            match running {
                Some(c) => c.cancel(),
                None if interactive => eprint!("\nuse Ctrl+D or /bye to exit\n>>> "),
                None => std::process::exit(130),
            }
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let mut history = Vec::new();
    if let Some(system) = system {
        history.push(ChatMessage::new("system", system));
    }
    match args.prompt.clone() {
        Some(prompt) => {
            let reason = session.answer(&mut history, prompt)?;
            Ok(if reason == FinishReason::Cancelled { ExitCode::from(130) } else { ExitCode::SUCCESS })
        }
        None => {
            session.chat(history)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn sampling(s: &SamplingArgs) -> SamplingParams {
    SamplingParams {
        temperature: s.temp,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        typical_p: s.typical_p,
        repeat_penalty: s.repeat_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        repeat_last_n: s.repeat_last_n,
        seed: s.seed,
    }
}

/// Where answers come from: an engine in this process, or a hearth server.
enum Backend {
    Local {
        engine: Engine,
        /// `None` with `--raw`.
        template: Option<ChatTemplate>,
    },
    Remote { remote: crate::client::Remote, model: String, raw: bool, options: serde_json::Value },
}

/// Stops the answer being generated, wherever it is generated.
#[derive(Clone)]
enum Cancel {
    Local(Canceller),
    Remote(Arc<std::sync::atomic::AtomicBool>),
}

impl Cancel {
    fn cancel(&self) {
        match self {
            Cancel::Local(c) => c.cancel(),
            Cancel::Remote(flag) => flag.store(true, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

struct Session {
    backend: Backend,
    sampling: SamplingParams,
    max_tokens: Option<u32>,
    stop: Vec<String>,
    verbose: bool,
    /// The generation running now, for the Ctrl-C handler.
    current: Arc<Mutex<Option<Cancel>>>,
}

impl Session {
    /// Generates the answer to `input`, streaming it to stdout, and records the turn.
    fn answer(&self, history: &mut Vec<ChatMessage>, input: String) -> Result<FinishReason> {
        history.push(ChatMessage::new("user", input.clone()));
        let mut out = std::io::stdout().lock();
        let mut answer = String::new();
        let mut emit = |text: &str| -> std::io::Result<()> {
            out.write_all(text.as_bytes())?;
            out.flush()?;
            answer.push_str(text);
            Ok(())
        };
        let result = match &self.backend {
            Backend::Local { engine, template } => self.local(engine, template.as_ref(), history, input, &mut emit),
            Backend::Remote { remote, model, raw, options } => self.remote(remote, model, *raw, options, history, input, &mut emit),
        };
        *self.current.lock().expect("not poisoned") = None;
        match result {
            Ok((reason, timings)) => {
                if !answer.ends_with('\n') {
                    out_newline()?;
                }
                if self.verbose {
                    print_timings(&timings);
                }
                history.push(ChatMessage::new("assistant", answer));
                Ok(reason)
            }
            Err(e) => {
                history.pop();
                Err(e)
            }
        }
    }

    fn local(
        &self,
        engine: &Engine,
        template: Option<&ChatTemplate>,
        history: &[ChatMessage],
        input: String,
        emit: &mut dyn FnMut(&str) -> std::io::Result<()>,
    ) -> Result<(FinishReason, Timings)> {
        let prompt = match template {
            Some(t) => t.render(history, true)?,
            None => input,
        };
        let mut req = GenerateRequest::new(Prompt::Text(prompt));
        req.sampling = self.sampling.clone();
        req.max_tokens = self.max_tokens;
        req.stop = self.stop.clone();
        let generation = engine.generate(req)?;
        *self.current.lock().expect("not poisoned") = Some(Cancel::Local(generation.canceller()));
        for event in generation.events.iter() {
            match event {
                Event::Token { text, .. } => emit(&text)?,
                Event::Done { text, reason, timings, .. } => {
                    emit(&text)?;
                    return Ok((reason, timings));
                }
                Event::Error(e) => return Err(e.into()),
            }
        }
        Err(anyhow::anyhow!("the engine stopped without finishing the answer"))
    }

    #[allow(clippy::too_many_arguments)]
    fn remote(
        &self,
        remote: &crate::client::Remote,
        model: &str,
        raw: bool,
        options: &serde_json::Value,
        history: &[ChatMessage],
        input: String,
        emit: &mut dyn FnMut(&str) -> std::io::Result<()>,
    ) -> Result<(FinishReason, Timings)> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        *self.current.lock().expect("not poisoned") = Some(Cancel::Remote(flag.clone()));
        let (path, body) = if raw {
            ("/api/generate", serde_json::json!({"model": model, "prompt": input, "raw": true, "options": options, "stream": true}))
        } else {
            ("/api/chat", serde_json::json!({"model": model, "messages": history, "options": options, "stream": true}))
        };
        for line in remote.stream(path, body)? {
            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                // Dropping the stream closes the connection: the server stops generating.
                return Ok((FinishReason::Cancelled, Timings::default()));
            }
            let v = line?;
            let text = v["message"]["content"].as_str().or_else(|| v["response"].as_str()).unwrap_or("");
            emit(text)?;
            if v["done"].as_bool() == Some(true) {
                let ns = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1e6;
                let timings = Timings {
                    prompt_tokens: v["prompt_eval_count"].as_u64().unwrap_or(0) as u32,
                    prompt_ms: ns("prompt_eval_duration"),
                    generated_tokens: v["eval_count"].as_u64().unwrap_or(0) as u32,
                    generation_ms: ns("eval_duration"),
                    load_ms: ns("load_duration"),
                    ..Timings::default()
                };
                let reason = if v["done_reason"] == "length" { FinishReason::Length } else { FinishReason::Stop };
                return Ok((reason, timings));
            }
        }
        Err(anyhow::anyhow!("the server closed the stream before the answer was complete"))
    }

    /// The interactive chat: `/bye` or end of input quits, `/clear` forgets the conversation,
    /// `"""` starts and ends a multi-line message, a trailing `\` continues a line.
    fn chat(&self, mut history: Vec<ChatMessage>) -> Result<()> {
        let stdin = std::io::stdin();
        let tty = stdin.is_terminal();
        let keep = history.len();
        if tty {
            let what = match &self.backend {
                Backend::Local { engine, .. } => engine.model().info().path.display().to_string(),
                Backend::Remote { remote, model, .. } => format!("{model} on {}", remote.base),
            };
            eprintln!("chatting with {what} (/? for help, /bye or Ctrl+D to exit)");
        }
        let mut lines = stdin.lock().lines();
        loop {
            eprint!(">>> ");
            let Some(message) = read_message(&mut lines, tty)? else { break };
            match message.trim() {
                "" => continue,
                "/bye" | "/exit" => break,
                "/clear" => {
                    history.truncate(keep);
                    eprintln!("cleared the conversation");
                    continue;
                }
                "/?" | "/help" => {
                    eprintln!("/bye       exit\n/clear     forget the conversation\n\"\"\"        start or end a multi-line message\nline\\      continue on the next line\nCtrl+C     stop the answer");
                    continue;
                }
                cmd if cmd.starts_with('/') && !cmd.contains(char::is_whitespace) => {
                    eprintln!("unknown command {cmd} (/? for help)");
                    continue;
                }
                _ => {}
            }
            match self.answer(&mut history, message) {
                Ok(FinishReason::Cancelled) => eprintln!("(stopped)"),
                Ok(_) => {}
                // A prompt that does not fit is the user's to fix; the chat goes on.
                Err(e) if e.downcast_ref::<EngineError>().is_some_and(|e| matches!(e, EngineError::PromptTooLong { .. })) => {
                    eprintln!("error: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads one message: a line, lines joined by a trailing `\`, or a `"""` block.
fn read_message(lines: &mut impl Iterator<Item = std::io::Result<String>>, tty: bool) -> Result<Option<String>> {
    let Some(first) = lines.next().transpose()? else { return Ok(None) };
    if let Some(rest) = first.trim_start().strip_prefix("\"\"\"") {
        let mut text = String::new();
        let mut line = rest.to_string();
        loop {
            if let Some(end) = line.find("\"\"\"") {
                text.push_str(&line[..end]);
                return Ok(Some(text.trim_end_matches('\n').to_string()));
            }
            text.push_str(&line);
            text.push('\n');
            if tty {
                eprint!("... ");
            }
            match lines.next().transpose()? {
                Some(next) => line = next,
                None => return Ok(Some(text.trim_end_matches('\n').to_string())),
            }
        }
    }
    let mut text = first;
    while text.ends_with('\\') {
        text.pop();
        text.push('\n');
        if tty {
            eprint!("... ");
        }
        match lines.next().transpose()? {
            Some(next) => text.push_str(&next),
            None => break,
        }
    }
    Ok(Some(text))
}

fn out_newline() -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(b"\n")?;
    out.flush()
}

fn print_timings(t: &Timings) {
    let evaluated = t.prompt_tokens - t.cached_tokens;
    eprintln!("load duration:        {:.2} ms", t.load_ms);
    eprintln!("prompt eval count:    {} token(s) ({} cached)", t.prompt_tokens, t.cached_tokens);
    eprintln!("prompt eval duration: {:.2} ms", t.prompt_ms);
    eprintln!("prompt eval rate:     {:.2} tokens/s ({evaluated} evaluated)", t.prompt_per_second());
    eprintln!("eval count:           {} token(s)", t.generated_tokens);
    eprintln!("eval duration:        {:.2} ms", t.generation_ms);
    eprintln!("eval rate:            {:.2} tokens/s", t.generation_per_second());
    if t.drafted_tokens > 0 {
        eprintln!(
            "draft:                {} drafted, {} accepted ({:.0}%), {:.2} tokens per pass",
            t.drafted_tokens,
            t.accepted_tokens,
            100.0 * t.accepted_tokens as f64 / t.drafted_tokens as f64,
            t.generated_tokens as f64 / t.generated_tokens.saturating_sub(t.accepted_tokens).max(1) as f64
        );
    }
}

/// A hint for errors the user can fix.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    if let Some(e) = err.downcast_ref::<hearth_store::StoreError>() {
        return match e {
            hearth_store::StoreError::NotFound { .. } => Some("give a path to a .gguf file, or a name from `hearth list`"),
            hearth_store::StoreError::DownloadFailed { .. } => Some("the partial download is kept: the same `hearth pull` resumes it"),
            hearth_store::StoreError::Unauthorized { .. } => Some("set HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) for private or gated Hugging Face repos"),
            _ => None,
        };
    }
    match err.downcast_ref::<EngineError>()? {
        EngineError::BadModel { .. } => Some("hearth runs GGUF files; check the path, or fetch the starter model with scripts/fetch-model.sh"),
        EngineError::Load { .. } => Some("run with -v to see llama.cpp's log"),
        EngineError::Context(_) => Some("try a smaller context (-c) or fewer GPU layers (-ngl)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> impl Iterator<Item = std::io::Result<String>> + '_ {
        s.lines().map(|l| Ok(l.to_string()))
    }

    #[test]
    fn multi_line_messages() {
        let mut it = lines("one\n\"\"\"a\nb\n\"\"\"\nc\\\nd\n\"\"\"x\"\"\"");
        assert_eq!(read_message(&mut it, false).unwrap().as_deref(), Some("one"));
        assert_eq!(read_message(&mut it, false).unwrap().as_deref(), Some("a\nb"));
        assert_eq!(read_message(&mut it, false).unwrap().as_deref(), Some("c\nd"));
        assert_eq!(read_message(&mut it, false).unwrap().as_deref(), Some("x"));
        assert_eq!(read_message(&mut it, false).unwrap(), None);
    }
}
