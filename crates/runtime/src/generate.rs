//! Running requests on a model's runner: [`Runtime::generate`] returns a [`Generation`], a
//! typed stream of [`Event`]s read straight from the runner's socket; [`Runtime::embed`]
//! returns the vectors. Errors before the first token (unknown model, too large, prompt too
//! long) come back from the call, so an API can answer with a status code; later ones come
//! from the stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_protocol::runner::{ErrorKind, Generate, Reply, Request};
use hearth_protocol::{AssistantMessage, Delta, FinishReason, Logprobs, Timings};

use crate::runner::ReplyStream;
use crate::scheduler::{Lease, LoadOptions, Scheduler};
use crate::{Model, RuntimeError};

/// What a generation streams.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Text released by one token (possibly empty: an unfinished character or a possible stop
    /// string is held back), with the token's log-probabilities when the request asked. For a
    /// chat, `deltas` is what the text added to the parsed answer (its reasoning, text and
    /// tool calls, which the raw text mixes).
    Token { text: String, logprobs: Option<Logprobs>, deltas: Vec<Delta> },
    /// The end; for a chat with the whole parsed answer; `stop` is the stop string that ended
    /// it, if one did.
    Done { reason: FinishReason, timings: Timings, message: Option<AssistantMessage>, stop: Option<String> },
}

/// A running generation. Dropping it closes the runner connection, which cancels it.
pub struct Generation {
    sched: Arc<Scheduler>,
    // Held as long as the stream: the model stays loaded and counted as busy.
    lease: Lease,
    replies: ReplyStream,
    pending: VecDeque<Event>,
    finished: bool,
    /// The model's normalized name.
    pub model: String,
    /// Time spent loading the model for this request (zero when it was loaded).
    pub load_duration: Duration,
    /// When the request reached the runtime.
    pub started: Instant,
    /// The context per sequence it runs with.
    pub n_ctx: u32,
    /// The prompt's length in tokens, when the runner said (before the first token).
    pub prompt_tokens: Option<u32>,
}

impl Generation {
    /// The next event; `None` after [`Event::Done`] or an error.
    pub async fn next(&mut self) -> Option<Result<Event, RuntimeError>> {
        loop {
            match self.next_reply().await {
                // A reply with nothing to report (a late `Started`): read on.
                Some(Ok(None)) => continue,
                Some(Ok(Some(e))) => return Some(Ok(e)),
                Some(Err(e)) => return Some(Err(e)),
                None => return None,
            }
        }
    }

    async fn next_reply(&mut self) -> Option<Result<Option<Event>, RuntimeError>> {
        if let Some(e) = self.pending.pop_front() {
            return Some(Ok(Some(e)));
        }
        if self.finished {
            return None;
        }
        let reply = match self.replies.next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                self.finished = true;
                return Some(Err(e.into()));
            }
            None => {
                self.finished = true;
                let died = match self.replies.died().await {
                    crate::runner::RunnerError::Died { detail, .. } => detail,
                    other => other.to_string(),
                };
                let why = self.sched.why_died(&self.lease.model, died).await;
                return Some(Err(RuntimeError::RunnerDied { model: self.model.clone(), why }));
            }
        };
        match reply_event(reply, &self.model) {
            Ok((first, then)) => {
                if let Some(done) = then {
                    self.finished = true;
                    self.pending.push_back(done);
                }
                match first {
                    Some(e) => Some(Ok(Some(e))),
                    None => Some(Ok(self.pending.pop_front())),
                }
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

/// A runner's reply as events: a token, or the last text and the end.
fn reply_event(reply: Reply, model: &str) -> Result<(Option<Event>, Option<Event>), RuntimeError> {
    match reply {
        Reply::Token { text, logprobs, deltas, .. } => Ok((Some(Event::Token { text, logprobs, deltas }), None)),
        Reply::Done { text, reason, timings, deltas, message, stop } => {
            let rest = (!text.is_empty() || !deltas.is_empty()).then_some(Event::Token { text, logprobs: None, deltas });
            Ok((rest, Some(Event::Done { reason, timings, message, stop })))
        }
        Reply::Started { .. } => Ok((None, None)),
        Reply::Error { kind, message } => Err(runner_error(kind, message)),
        other => Err(RuntimeError::Internal(format!("the runner for {model} answered a generation with {other:?}"))),
    }
}

fn runner_error(kind: ErrorKind, message: String) -> RuntimeError {
    match kind {
        ErrorKind::BadRequest | ErrorKind::PromptTooLong { .. } => RuntimeError::Rejected(message),
        ErrorKind::Internal => RuntimeError::Internal(message),
    }
}

/// How long a request that grows its model's context waits for the requests the smaller
/// context still serves.
const GROW_WAIT: Duration = Duration::from_secs(120);

/// A rendered chat prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub prompt: String,
    pub tokens: u32,
}

/// Embeddings of some inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
    pub load_duration: Duration,
}

/// The runtime: the scheduler of runner processes, and requests run on them. Knows no HTTP.
pub struct Runtime {
    pub sched: Arc<Scheduler>,
    pub store: hearth_store::Store,
}

impl Runtime {
    pub fn new(sched: Scheduler, store: hearth_store::Store) -> Runtime {
        Runtime { sched: Arc::new(sched), store }
    }

    /// The model `name` of the store, resolved once for a request.
    pub fn resolve(&self, name: &str) -> Result<Model, RuntimeError> {
        Model::resolve(&self.store, name)
    }

    /// Loads `model` (if needed) and keeps it for its keep-alive, without running anything.
    pub async fn load(&self, model: &Model, load: &LoadOptions) -> Result<(), RuntimeError> {
        self.sched.acquire(model, load).await.map(drop)
    }

    /// Starts `request` on `model`, loading it first if needed.
    pub async fn generate(&self, model: &Model, load: &LoadOptions, request: Generate) -> Result<Generation, RuntimeError> {
        request.sampling.validate().map_err(|why| RuntimeError::Invalid { field: "sampling".into(), why })?;
        let started = Instant::now();
        let (lease, replies, first, load_duration) = self.open(model, load, &Request::Generate(request)).await?;
        let n_ctx = lease.model.ctx_per_seq;
        let mut g = Generation {
            sched: self.sched.clone(),
            lease,
            replies,
            pending: VecDeque::new(),
            finished: false,
            model: model.name.to_string(),
            load_duration,
            started,
            n_ctx,
            prompt_tokens: None,
        };
        if let Reply::Started { prompt_tokens } = first {
            g.prompt_tokens = Some(prompt_tokens);
            return Ok(g);
        }
        let (first, then) = reply_event(first, &model.name)?;
        g.pending.extend(first);
        if let Some(done) = then {
            g.finished = true;
            g.pending.push_back(done);
        }
        Ok(g)
    }

    /// The embeddings of `inputs` (normalized to unit length when `normalize`; inputs longer
    /// than the context cut to fit when `truncate`, else refused).
    pub async fn embed(&self, model: &Model, load: &LoadOptions, inputs: Vec<String>, normalize: bool, truncate: bool) -> Result<Embeddings, RuntimeError> {
        let (_lease, _stream, reply, load_duration) = self.open(model, load, &Request::Embed { inputs, normalize, truncate }).await?;
        match reply {
            Reply::Embeddings { embeddings, prompt_tokens } => Ok(Embeddings { vectors: embeddings, prompt_tokens, load_duration }),
            Reply::Error { kind, message } => Err(runner_error(kind, message)),
            other => Err(RuntimeError::Internal(format!("the runner for {} answered embeddings with {other:?}", model.name))),
        }
    }

    /// The prompt `messages` render to with `chat` (tools, schema) and its length in tokens.
    pub async fn render(&self, model: &Model, load: &LoadOptions, messages: Vec<hearth_protocol::runner::Message>, chat: hearth_protocol::ChatOptions) -> Result<Rendered, RuntimeError> {
        match self.ask(model, load, &Request::Render { messages, chat }).await? {
            Reply::Rendered { prompt, tokens } => Ok(Rendered { prompt, tokens }),
            other => Err(RuntimeError::Internal(format!("the runner for {} answered a render with {other:?}", model.name))),
        }
    }

    /// `text` as the model's tokens (`special`: special-token text is parsed).
    pub async fn tokenize(&self, model: &Model, load: &LoadOptions, text: String, special: bool) -> Result<Vec<i32>, RuntimeError> {
        match self.ask(model, load, &Request::Tokenize { text, special }).await? {
            Reply::Tokens { tokens } => Ok(tokens),
            other => Err(RuntimeError::Internal(format!("the runner for {} answered tokenize with {other:?}", model.name))),
        }
    }

    /// The text of the model's `tokens`.
    pub async fn detokenize(&self, model: &Model, load: &LoadOptions, tokens: Vec<i32>) -> Result<String, RuntimeError> {
        match self.ask(model, load, &Request::Detokenize { tokens }).await? {
            Reply::Text { text } => Ok(text),
            other => Err(RuntimeError::Internal(format!("the runner for {} answered detokenize with {other:?}", model.name))),
        }
    }

    /// The model's runner facts (context, template, whether it thinks), loading it if needed.
    pub async fn info(&self, model: &Model, load: &LoadOptions) -> Result<hearth_protocol::runner::Info, RuntimeError> {
        match self.ask(model, load, &Request::Info).await? {
            Reply::Info(i) => Ok(i),
            other => Err(RuntimeError::Internal(format!("the runner for {} answered info with {other:?}", model.name))),
        }
    }

    /// One request, one reply (an error reply is the error).
    async fn ask(&self, model: &Model, load: &LoadOptions, request: &Request) -> Result<Reply, RuntimeError> {
        let (_lease, _stream, reply, _) = self.open(model, load, request).await?;
        match reply {
            Reply::Error { kind, message } => Err(runner_error(kind, message)),
            r => Ok(r),
        }
    }

    /// Unloads `name` now (if idle) or when its last request ends. False when it is not loaded.
    pub async fn unload(&self, name: &str) -> bool {
        match hearth_store::reference::ModelName::parse(name) {
            Ok(n) => self.sched.unload(&n).await,
            Err(_) => false,
        }
    }

    /// Acquires the model and sends `request` to its runner: the lease, the stream, its first
    /// reply (an error reply becomes the error), and how long loading took. A runner that died
    /// since its last request is found out here: it is marked dead, and a second attempt starts
    /// a fresh one.
    ///
    /// A generation whose prompt does not fit in a context the server chose itself (no `-c`,
    /// no `num_ctx`) loads the model again with a larger one, up to the model's own (see
    /// [`Scheduler::grown_ctx`]): an agent's 20,000-token prompt works without settings.
    async fn open(&self, model: &Model, load: &LoadOptions, request: &Request) -> Result<(Lease, ReplyStream, Reply, Duration), RuntimeError> {
        let started = Instant::now();
        let was_loaded = self.sched.is_loaded(&model.name);
        let mut attempt = 0;
        let mut load = std::borrow::Cow::Borrowed(load);
        // When the context grows: since when, and why (the runner's message).
        let mut grown: Option<(Instant, String)> = None;
        loop {
            attempt += 1;
            let lease = match self.sched.acquire(model, &load).await {
                Ok(lease) => lease,
                // Growing the context, while the loaded instance still serves other requests:
                // they end first.
                Err(RuntimeError::Overloaded { why, .. }) if grown.as_ref().is_some_and(|(at, _)| at.elapsed() < GROW_WAIT) => {
                    tracing::debug!(model = %model.name, why, "waiting to load it with a larger context");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    attempt -= 1;
                    continue;
                }
                // The larger context does not fit in memory: the prompt does not fit, as said.
                Err(e @ RuntimeError::TooLarge { .. }) if grown.is_some() => {
                    let (_, why) = grown.expect("growing");
                    let ctx = load.num_ctx.unwrap_or_default();
                    return Err(RuntimeError::Rejected(format!("{why} (a context of {ctx} tokens for it does not fit in memory: {e})")));
                }
                Err(e) => return Err(e),
            };
            let mut stream = match lease.model.runner.request(request).await {
                Ok(s) => s,
                Err(_) if attempt == 1 => continue,
                Err(e) => return Err(e.into()),
            };
            match stream.next().await {
                Some(Ok(Reply::Error { kind: ErrorKind::PromptTooLong { tokens }, message })) if matches!(request, Request::Generate(_)) && load.num_ctx.is_none() => {
                    let Some(ctx) = self.sched.grown_ctx(&lease.model, tokens) else { return Err(RuntimeError::Rejected(message)) };
                    tracing::info!(model = %model.name, prompt_tokens = tokens, from = lease.model.ctx_per_seq, to = ctx, "the prompt does not fit: loading the model with a larger context");
                    drop((stream, lease));
                    load = std::borrow::Cow::Owned(LoadOptions { num_ctx: Some(ctx), ..load.into_owned() });
                    grown = Some((Instant::now(), message));
                    attempt = 0;
                }
                Some(Ok(Reply::Error { kind, message })) => return Err(runner_error(kind, message)),
                Some(Ok(r)) => {
                    // A context grown for this request was a load too.
                    let load_time = if was_loaded && grown.is_none() { Duration::ZERO } else { started.elapsed() };
                    return Ok((lease, stream, r, load_time));
                }
                Some(Err(e)) => return Err(e.into()),
                None if attempt == 1 => {
                    let _ = stream.died().await;
                }
                None => return Err(stream.died().await.into()),
            }
        }
    }
}
