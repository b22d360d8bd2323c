//! The engine: one llama.cpp context on its own OS thread, serving many sequences at once.
//!
//! Callers talk to it through [`Engine`], which sends [`Command`]s over a channel; the engine
//! thread owns the context, the batch and the slots, and streams [`Event`]s back on a channel
//! per request. Between two decode steps it takes new commands, so requests join a running
//! batch (continuous batching): each step packs the next token of every generating sequence and
//! chunks of pending prompts into one `llama_decode`.
//!
//! Each slot is a llama.cpp sequence id. A slot remembers which tokens its KV cells hold, so a
//! new request goes to the free slot sharing the longest prefix with its prompt and evaluates
//! only the rest (prompt-cache reuse).
//!
//! With speculative decoding on ([`EngineOptions::spec`]), a generating sequence adds a draft
//! after its next token in the same batch, and keeps the drafted tokens its sampler confirms
//! ([`crate::spec`]); the output does not change, only the tokens per pass.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::grammar::{CompiledGrammar, Grammar};
use crate::logprobs::{log_softmax_top, TokenLogprob, TokenLogprobs, MAX_TOP_LOGPROBS};
use crate::model::{Model, ModelOptions};
use crate::sampling::{Sampler, SamplingParams};
use crate::spec::{ngram_draft, Spec, SpecState, StepCost};
use crate::text::{StopMatcher, StopOutcome, Utf8Stream};
use crate::{sys, EngineError, Token};

/// Before its decodes are timed: a draft model's decode of one token, as a share of a
/// one-token step of the target (a draft model is usually a tenth of the target's size).
const DRAFT_MODEL_PRIOR: f64 = 0.1;

pub use hearth_protocol::{CacheType, FinishReason, FlashAttn, LoadSettings, Timings};

/// The ggml type of a KV cache type.
fn ggml_type(c: CacheType) -> sys::ggml_type {
    match c {
        CacheType::F32 => sys::GGML_TYPE_F32,
        CacheType::F16 => sys::GGML_TYPE_F16,
        CacheType::Bf16 => sys::GGML_TYPE_BF16,
        CacheType::Q8_0 => sys::GGML_TYPE_Q8_0,
        CacheType::Q4_0 => sys::GGML_TYPE_Q4_0,
        CacheType::Q4_1 => sys::GGML_TYPE_Q4_1,
        CacheType::Iq4Nl => sys::GGML_TYPE_IQ4_NL,
        CacheType::Q5_0 => sys::GGML_TYPE_Q5_0,
        CacheType::Q5_1 => sys::GGML_TYPE_Q5_1,
    }
}

/// Everything needed to start an engine. Names and defaults follow llama.cpp's.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub model: ModelOptions,
    /// Total context in tokens, shared by the parallel sequences; 0 = the model's training
    /// context.
    pub ctx_size: u32,
    /// Logical batch: the most tokens one decode step takes.
    pub batch_size: u32,
    /// Physical batch.
    pub ubatch_size: u32,
    /// Sequences decoded together (llama.cpp's `--parallel`).
    pub parallel: u32,
    /// Threads for generation; `None` = physical cores.
    pub threads: Option<usize>,
    /// Threads for prompt processing; `None` = same as `threads`.
    pub threads_batch: Option<usize>,
    pub flash_attn: FlashAttn,
    /// One KV cache for all sequences (llama.cpp's `kv_unified`), each still held to
    /// `ctx_size / parallel` tokens; else one per sequence. (One sequence: always one.)
    pub kv_unified: bool,
    pub cache_type_k: CacheType,
    pub cache_type_v: CacheType,
    /// Speculative decoding's draft source, and the most and fewest tokens per draft.
    pub spec: Spec,
    pub draft_max: u32,
    pub draft_min: u32,
    /// The draft model of [`Spec::Draft`], and the probability below which its draft stops.
    pub draft_model: Option<std::path::PathBuf>,
    pub draft_p_min: f32,
    /// Draft up to `draft_max` tokens at every step, as llama.cpp does, instead of only where
    /// the measured costs say a draft pays. Off by default; tests use it to exercise the
    /// verification of drafts on a machine where drafting does not pay (a CPU, a model
    /// drafting for itself).
    pub draft_every_step: bool,
}

impl EngineOptions {
    pub fn new(model: ModelOptions) -> Self {
        Self {
            model,
            ctx_size: 4096,
            batch_size: 2048,
            ubatch_size: 512,
            parallel: 1,
            threads: None,
            threads_batch: None,
            flash_attn: FlashAttn::Auto,
            kv_unified: false,
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
            spec: Spec::None,
            draft_max: 16,
            draft_min: 0,
            draft_model: None,
            draft_p_min: 0.75,
            draft_every_step: false,
        }
    }

    /// The options for `settings` (the same struct from the flags to the runner's spec), with
    /// `parallel` sequences of `settings.ctx()` tokens each.
    pub fn from_settings(path: impl Into<std::path::PathBuf>, settings: &LoadSettings, parallel: u32) -> Self {
        let mut m = ModelOptions::new(path);
        m.gpu_layers = settings.gpu_layers;
        m.mmap = !settings.no_mmap;
        m.mlock = settings.mlock;
        m.rpc_servers = settings.rpc.clone();
        m.tensor_split = settings.tensor_split.clone();
        m.devices = settings.device.clone();
        m.split_mode = settings.split_mode;
        m.main_gpu = settings.main_gpu;
        match settings.tensor_overrides() {
            Ok(o) => m.tensor_overrides = o,
            Err(e) => m.invalid = Some(e),
        }
        let parallel = parallel.max(1);
        Self {
            model: m,
            ctx_size: settings.ctx().saturating_mul(parallel),
            batch_size: settings.batch_size,
            ubatch_size: settings.ubatch_size,
            parallel,
            threads: settings.threads,
            threads_batch: settings.threads_batch,
            flash_attn: settings.flash_attn,
            kv_unified: settings.kv_unified,
            cache_type_k: settings.cache_type_k,
            cache_type_v: settings.cache_type_v,
            spec: settings.spec(),
            draft_max: settings.draft_max,
            draft_min: settings.draft_min,
            draft_model: settings.model_draft.as_ref().map(std::path::PathBuf::from),
            draft_p_min: settings.draft_p_min,
            draft_every_step: false,
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Text, tokenized with the model's BOS rule and with special-token text (`<|im_start|>`)
    /// parsed into special tokens, as llama.cpp's server does.
    Text(String),
    /// Tokens, used as they are.
    Tokens(Vec<Token>),
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// Stop after this many tokens; `None` = until end of generation or a full context.
    pub max_tokens: Option<u32>,
    /// Stop when any of these appears in the output; it is not emitted.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (benchmarks, as llama.cpp's `ignore_eos`).
    /// Not with a grammar: a finished grammar allows nothing but the end.
    pub ignore_eos: bool,
    /// Constrain the output to a grammar (Ollama's `format: "json"`, OpenAI's
    /// `response_format: {"type": "json_object"}`: [`Grammar::Json`]). Checked by
    /// [`Engine::generate`]: one that does not parse is [`EngineError::InvalidRequest`].
    ///
    /// Stop strings, `max_tokens` and the end of the context still end the generation, and
    /// then the text may be an unfinished sentence of the grammar; it is complete when the
    /// generation ends with [`FinishReason::Stop`] and no stop string matched.
    pub grammar: Option<Grammar>,
    /// Report log-probabilities: `None` = off (and free); `Some(n)` = each [`Event::Token`]
    /// carries the chosen token's log-probability and the `n` most likely tokens
    /// (0..=[`MAX_TOP_LOGPROBS`]). They are the model's distribution before any sampling
    /// transform: see [`TokenLogprobs`].
    pub logprobs: Option<u32>,
    /// Special tokens written out as text (a chat format's markers, which its parser reads);
    /// other special tokens are written as nothing.
    pub preserved: Vec<Token>,
}

impl GenerateRequest {
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            ignore_eos: false,
            grammar: None,
            logprobs: None,
            preserved: Vec::new(),
        }
    }
}

/// What the engine streams back for a request.
#[derive(Debug, Clone)]
pub enum Event {
    /// A generated token and the text it releases: possibly empty (an incomplete character or
    /// a possible stop string is held back), possibly more than its own piece. `logprobs` is
    /// there when the request asked for them ([`GenerateRequest::logprobs`]).
    Token {
        id: Token,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    /// The end. `text` is what was still held back; `reason` says why it ended; `stop` is the
    /// stop string that ended it, if one did.
    Done {
        text: String,
        reason: FinishReason,
        timings: Timings,
        stop: Option<String>,
    },
    /// The request failed after it was accepted.
    Error(EngineError),
}

/// The result of a generation, collected.
#[derive(Debug, Clone)]
pub struct Output {
    pub text: String,
    pub tokens: Vec<Token>,
    /// One per token when the request asked for log-probabilities, else empty.
    pub logprobs: Vec<TokenLogprobs>,
    pub reason: FinishReason,
    pub timings: Timings,
}

/// A running generation: read its events; drop it or call [`Generation::cancel`] to stop it.
pub struct Generation {
    pub events: Receiver<Event>,
    /// The prompt's length in tokens.
    pub prompt_tokens: u32,
    cancel: Arc<AtomicBool>,
}

impl Generation {
    /// Stops the generation at the next decode step; a `Done` with
    /// [`FinishReason::Cancelled`] follows.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// A handle that cancels this generation from another thread.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.cancel.clone())
    }

    /// Waits for the end and returns everything generated.
    pub fn collect(self) -> Result<Output, EngineError> {
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut logprobs = Vec::new();
        for event in self.events.iter() {
            match event {
                Event::Token { id, text: t, logprobs: lp } => {
                    tokens.push(id);
                    text.push_str(&t);
                    logprobs.extend(lp);
                }
                Event::Done { text: t, reason, timings, .. } => {
                    text.push_str(&t);
                    return Ok(Output { text, tokens, logprobs, reason, timings });
                }
                Event::Error(e) => return Err(e),
            }
        }
        Err(EngineError::Stopped)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Cancels a generation from anywhere (a Ctrl-C handler, another thread).
#[derive(Clone)]
pub struct Canceller(Arc<AtomicBool>);

impl Canceller {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

enum Command {
    Generate(Box<Job>),
    Embed(EmbedJob),
    Shutdown,
}

struct Job {
    prompt: Vec<Token>,
    sampling: SamplingParams,
    max_tokens: Option<u32>,
    stop: Vec<String>,
    ignore_eos: bool,
    /// Compiled by `Engine::generate`; moved into the slot's sampler when the job starts.
    grammar: Option<CompiledGrammar>,
    logprobs: Option<u32>,
    preserved: Vec<Token>,
    events: Sender<Event>,
    cancel: Arc<AtomicBool>,
    submitted: Instant,
}

struct EmbedJob {
    inputs: Vec<Vec<Token>>,
    normalize: bool,
    reply: Sender<Result<Vec<Vec<f32>>, EngineError>>,
}

/// Read by llama.cpp's abort callback during a decode.
struct AbortState {
    /// The engine is shutting down: abort whatever runs.
    shutdown: AtomicBool,
    /// The cancel flags of the sequences in the running batch: when all are set, the decode
    /// is pointless and is aborted.
    batch: Mutex<Vec<Arc<AtomicBool>>>,
}

unsafe extern "C" fn abort_callback(data: *mut c_void) -> bool {
    // SAFETY: `data` points to the AbortState that the engine thread keeps alive (in an Arc)
    // for as long as the context exists.
    let state = unsafe { &*(data as *const AbortState) };
    if state.shutdown.load(Ordering::Relaxed) {
        return true;
    }
    match state.batch.try_lock() {
        Ok(flags) => !flags.is_empty() && flags.iter().all(|f| f.load(Ordering::Relaxed)),
        Err(_) => false,
    }
}

/// A handle to a running engine. Dropping it shuts the engine down.
pub struct Engine {
    model: Arc<Model>,
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    abort: Arc<AbortState>,
    n_ctx_seq: u32,
    n_batch: u32,
    n_ubatch: u32,
    parallel: u32,
}

impl Engine {
    /// Loads the model and starts the engine thread.
    pub fn start(opts: EngineOptions) -> Result<Engine, EngineError> {
        if opts.parallel == 0 {
            return Err(EngineError::InvalidRequest("--parallel must be at least 1".into()));
        }
        if opts.batch_size == 0 || opts.ubatch_size == 0 {
            return Err(EngineError::InvalidRequest("batch sizes must be at least 1".into()));
        }
        // Drafting from the model's MTP layers needs them loaded.
        let mut model_opts = ModelOptions { mtp: opts.model.mtp || opts.spec == Spec::Mtp, ..opts.model.clone() };
        // Over workers the block drafts here, not a round trip away.
        if opts.spec == Spec::Mtp {
            model_opts.last_units_here = crate::model::mtp_units_here(&model_opts);
            if model_opts.last_units_here > 0 {
                tracing::info!(units = model_opts.last_units_here, "keeping the MTP block and the output head on this machine");
            }
        }
        let model = Arc::new(Model::load(&model_opts)?);
        let abort = Arc::new(AbortState {
            shutdown: AtomicBool::new(false),
            batch: Mutex::new(Vec::new()),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let thread = {
            let model = model.clone();
            let abort = abort.clone();
            std::thread::Builder::new()
                .name("hearth-engine".into())
                .spawn(move || match Worker::new(model, &opts, abort) {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(worker.limits()));
                        worker.run(rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| EngineError::Context(format!("cannot start the engine thread: {e}")))?
        };
        let (n_ctx_seq, n_batch, n_ubatch, parallel) = ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok(Engine {
            model,
            commands: tx,
            thread: Some(thread),
            abort,
            n_ctx_seq,
            n_batch,
            n_ubatch,
            parallel,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The context each sequence has, in tokens.
    pub fn n_ctx_seq(&self) -> u32 {
        self.n_ctx_seq
    }

    /// How many sequences decode together.
    pub fn parallel(&self) -> u32 {
        self.parallel
    }

    /// Starts a generation. Errors that can be known up front (an empty prompt, a prompt
    /// longer than the context, bad sampling values, a grammar that does not parse) come back
    /// here, not as events.
    pub fn generate(&self, req: GenerateRequest) -> Result<Generation, EngineError> {
        req.sampling.validate().map_err(EngineError::InvalidRequest)?;
        if let Some(n) = req.logprobs {
            if n > MAX_TOP_LOGPROBS {
                return Err(EngineError::InvalidRequest(format!(
                    "at most {MAX_TOP_LOGPROBS} top log-probabilities can be asked for, not {n}"
                )));
            }
        }
        if req.grammar.is_some() && req.ignore_eos {
            return Err(EngineError::InvalidRequest(
                "ignore_eos cannot be combined with a grammar: a finished grammar allows only the end of generation".into(),
            ));
        }
        let prompt = match req.prompt {
            Prompt::Text(text) => self.tokenize_prompt(&text)?,
            Prompt::Tokens(tokens) => tokens,
        };
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        let n_vocab = self.model.n_vocab();
        if let Some(bad) = prompt.iter().find(|&&t| t < 0 || t >= n_vocab) {
            return Err(EngineError::InvalidRequest(format!(
                "token {bad} is outside the vocabulary (0..{n_vocab})"
            )));
        }
        if prompt.len() >= self.n_ctx_seq as usize {
            return Err(EngineError::PromptTooLong {
                tokens: prompt.len(),
                n_ctx: self.n_ctx_seq,
            });
        }
        // Last: parsing a grammar is the most work of these checks.
        let grammar = req.grammar.as_ref().map(|g| CompiledGrammar::new(&self.model, g)).transpose()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let prompt_tokens = prompt.len() as u32;
        let job = Job {
            prompt,
            sampling: req.sampling,
            max_tokens: req.max_tokens,
            stop: req.stop,
            ignore_eos: req.ignore_eos,
            grammar,
            logprobs: req.logprobs,
            preserved: req.preserved,
            events: tx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
        };
        self.commands
            .send(Command::Generate(Box::new(job)))
            .map_err(|_| EngineError::Stopped)?;
        Ok(Generation { events: rx, cancel, prompt_tokens })
    }

    /// Tokenizes a prompt as llama.cpp's server does: the model's BOS rule, special tokens
    /// parsed, and no doubled BOS when the text (a chat template) already starts with one.
    pub fn tokenize_prompt(&self, text: &str) -> Result<Vec<Token>, EngineError> {
        let mut tokens = self.model.tokenize(text, true, true)?;
        if tokens.len() >= 2 && self.model.info().add_bos && tokens[0] == tokens[1] {
            let bos = self.model.tokenize("", true, false)?;
            if bos.first() == Some(&tokens[0]) {
                tokens.remove(0);
            }
        }
        Ok(tokens)
    }

    /// Embeddings of each input: pooled as the model says (mean for models without a pooling
    /// type), L2-normalised when `normalize`.
    pub fn embed(&self, inputs: &[String], normalize: bool, truncate: bool) -> Result<Vec<Vec<f32>>, EngineError> {
        Ok(self.embed_counted(inputs, normalize, truncate)?.0)
    }

    /// [`Engine::embed`], and how many tokens the inputs took. With `truncate`, an input longer
    /// than the context is cut to fit (Ollama's `truncate`); without, it is an error.
    pub fn embed_counted(&self, inputs: &[String], normalize: bool, truncate: bool) -> Result<(Vec<Vec<f32>>, u32), EngineError> {
        let mut tokenized = Vec::with_capacity(inputs.len());
        let mut count = 0;
        for text in inputs {
            let mut tokens = self.model.tokenize(text, true, true)?;
            if tokens.is_empty() {
                return Err(EngineError::InvalidRequest("an input to embed is empty".into()));
            }
            let limit = self.n_batch.min(self.n_ctx_seq) as usize;
            if truncate {
                tokens.truncate(limit);
            }
            count += tokens.len() as u32;
            if tokens.len() > limit {
                return Err(EngineError::PromptTooLong { tokens: tokens.len(), n_ctx: limit as u32 });
            }
            tokenized.push(tokens);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Embed(EmbedJob { inputs: tokenized, normalize, reply: tx }))
            .map_err(|_| EngineError::Stopped)?;
        Ok((rx.recv().map_err(|_| EngineError::Stopped)??, count))
    }

    /// The physical batch size (embedding inputs of pooled models must fit in it).
    pub fn n_ubatch(&self) -> u32 {
        self.n_ubatch
    }

    /// Stops the engine: running generations end with an error, the thread is joined.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.abort.shutdown.store(true, Ordering::Relaxed);
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request being served by a slot.
struct Active {
    job: Box<Job>,
    sampler: Sampler,
    utf8: Utf8Stream,
    stop: StopMatcher,
    /// The token sampled last, to be decoded in the next step; `None` while the prompt is
    /// still being processed.
    next: Option<Token>,
    generated: u32,
    cached: u32,
    started: Instant,
    first_token: Option<Instant>,
    /// The stop string that ended the generation.
    stop_hit: Option<String>,
    /// Speculation for this sequence, when the engine drafts.
    spec: Option<SpecState>,
}

struct Slot {
    seq: i32,
    /// The tokens whose KV cells this sequence holds, at positions 0..len.
    cache: Vec<Token>,
    active: Option<Active>,
    /// For choosing among equally good free slots: the least recently used goes first.
    last_used: u64,
}

/// A slot's part in a decode step.
struct Member {
    slot: usize,
    /// The slot's cache length before the step.
    before: usize,
    /// The batch index of its output, if it has one this step.
    out: Option<i32>,
    /// The tokens drafted after its next token, and the batch index of the first one (the
    /// others follow it).
    draft: Vec<Token>,
    draft_at: i32,
}

/// A llama_batch we own.
pub(crate) struct Batch {
    pub(crate) raw: sys::llama_batch,
    capacity: usize,
    /// Tokens whose logits are asked for.
    outputs: usize,
}

impl Batch {
    pub(crate) fn new(capacity: usize) -> Batch {
        // SAFETY: allocates arrays for `capacity` tokens with one sequence id each.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        Batch { raw, capacity, outputs: 0 }
    }

    pub(crate) fn clear(&mut self) {
        self.raw.n_tokens = 0;
        self.outputs = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    /// How many of the tokens ask for their logits.
    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// Adds a token; returns its index in the batch.
    pub(crate) fn add(&mut self, token: Token, pos: i32, seq: i32, output: bool) -> i32 {
        let i = self.raw.n_tokens as usize;
        assert!(i < self.capacity, "batch overflow: the scheduler packs at most n_batch tokens");
        // SAFETY: i < capacity, and llama_batch_init allocated every array for `capacity`.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = i8::from(output);
        }
        self.raw.n_tokens += 1;
        self.outputs += usize::from(output);
        i as i32
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init and freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

/// The engine thread's state. Not Send: it is created on the thread that runs it.
struct Worker {
    // Field order matters for drop: the context goes before the model.
    ctx: *mut sys::llama_context,
    model: Arc<Model>,
    abort: Arc<AbortState>,
    batch: Batch,
    slots: Vec<Slot>,
    queue: VecDeque<Box<Job>>,
    embeds: VecDeque<EmbedJob>,
    n_ctx_seq: u32,
    n_batch: u32,
    n_ubatch: u32,
    clock: u64,
    pooling: sys::llama_pooling_type,
    /// Whether a step pads the gaps between its generating sequences' ids (see
    /// [`Worker::fillers`]): with a KV cache per sequence, not with MTP layers (which read
    /// every token of the batch), nor where a filler could not be taken back (recurrent state).
    fill_gaps: bool,
    /// Whether the KV cache is one per sequence: a step then takes a pass of its own for
    /// the drafted tokens (see [`StepCost::pass_cost`]).
    per_seq_kv: bool,
    /// Draft source; [`Spec::None`] also where the memory cannot drop a sequence's tail.
    spec: Spec,
    /// What steps cost, for deciding how long drafts should be.
    step_cost: StepCost,
    /// The share of drafted tokens confirmed, over recent sequences: where a new one starts.
    confirm_prior: f32,
    draft_max: u32,
    draft_min: u32,
    draft_every_step: bool,
    /// The draft model of [`Spec::Draft`].
    drafter: Option<crate::draft::Drafter>,
    /// The model's MTP layers, for [`Spec::Mtp`]; freed before `ctx` (see Drop).
    mtp: Option<crate::mtp::Mtp>,
}

impl Worker {
    fn new(model: Arc<Model>, opts: &EngineOptions, abort: Arc<AbortState>) -> Result<Worker, EngineError> {
        let info = model.info();
        let threads = opts.threads.unwrap_or_else(crate::model::default_threads).max(1);
        let threads_batch = opts.threads_batch.unwrap_or(threads).max(1);
        let ctx_size = if opts.ctx_size == 0 { info.n_ctx_train } else { opts.ctx_size };
        // SAFETY: default params are plain data.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = ctx_size;
        cp.n_batch = opts.batch_size;
        cp.n_ubatch = opts.ubatch_size.min(opts.batch_size);
        cp.n_seq_max = opts.parallel;
        cp.n_threads = threads as i32;
        cp.n_threads_batch = threads_batch as i32;
        cp.flash_attn_type = match opts.flash_attn {
            FlashAttn::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttn::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
        };
        cp.type_k = ggml_type(opts.cache_type_k);
        cp.type_v = ggml_type(opts.cache_type_v);
        cp.no_perf = false;
        // By default one KV stream per sequence: each gets ctx_size / parallel cells, and a long
        // sequence cannot starve the others. Unified, the engine holds each sequence to as many.
        cp.kv_unified = opts.parallel == 1 || opts.kv_unified;
        cp.abort_callback = Some(abort_callback);
        cp.abort_callback_data = Arc::as_ptr(&abort) as *mut c_void;
        crate::log::clear_last_error();
        // SAFETY: the model outlives the context (the Worker holds an Arc and drops the
        // context first); the abort state outlives it too (also held by the Worker).
        let ctx = unsafe { sys::llama_init_from_model(model.as_ptr(), cp) };
        if ctx.is_null() {
            return Err(EngineError::Context(format!(
                "cannot create a context of {ctx_size} tokens for {} sequences: {}",
                opts.parallel,
                crate::log::take_last_error().unwrap_or_else(|| "out of memory?".into())
            )));
        }
        // SAFETY: plain queries on the new context.
        let (n_ctx_seq, n_batch, n_ubatch, pooling) = unsafe {
            (
                // (llama.cpp's context per sequence is the whole cache when it is unified.)
                sys::llama_n_ctx(ctx) / opts.parallel.max(1),
                sys::llama_n_batch(ctx),
                sys::llama_n_ubatch(ctx),
                sys::llama_pooling_type(ctx),
            )
        };
        let slots = (0..opts.parallel as i32)
            .map(|seq| Slot { seq, cache: Vec::new(), active: None, last_used: 0 })
            .collect();
        // Rejected drafts are dropped from the KV cache: recurrent state cannot be.
        // SAFETY: a valid model.
        let rollback = unsafe { !sys::llama_model_is_recurrent(model.as_ptr()) && !sys::llama_model_is_hybrid(model.as_ptr()) };
        let spec = if rollback || opts.spec == Spec::None {
            opts.spec
        } else {
            tracing::warn!("speculative decoding is off: this model's memory cannot drop drafted tokens");
            Spec::None
        };
        let drafter = match (spec, &opts.draft_model) {
            (Spec::Draft, Some(path)) => {
                let d = crate::draft::Drafter::new(&model, path, opts.model.mmap, cp, opts.draft_p_min);
                match d {
                    Ok(d) => Some(d),
                    Err(e) => {
                        // SAFETY: the context is ours; the Worker that would free it is not made.
                        unsafe { sys::llama_free(ctx) };
                        return Err(e);
                    }
                }
            }
            (Spec::Draft, None) => {
                // SAFETY: as above.
                unsafe { sys::llama_free(ctx) };
                return Err(EngineError::InvalidRequest("--spec draft needs a draft model (--model-draft MODEL)".into()));
            }
            _ => None,
        };
        let mtp = match spec {
            Spec::Mtp => match crate::mtp::Mtp::new(&model, ctx, cp, opts.draft_p_min) {
                Ok(m) => Some(m),
                Err(e) => {
                    // SAFETY: as above.
                    unsafe { sys::llama_free(ctx) };
                    return Err(e);
                }
            },
            _ => None,
        };
        tracing::debug!(n_ctx_seq, n_batch, n_ubatch, parallel = opts.parallel, threads, %spec, "engine ready");
        Ok(Worker {
            ctx,
            model,
            abort,
            batch: Batch::new(n_batch as usize),
            slots,
            queue: VecDeque::new(),
            embeds: VecDeque::new(),
            n_ctx_seq,
            n_batch,
            n_ubatch,
            clock: 0,
            pooling,
            per_seq_kv: !cp.kv_unified,
            fill_gaps: !cp.kv_unified && rollback && spec != Spec::Mtp,
            spec,
            step_cost: StepCost::default(),
            // A draft model is chosen to agree with the target (same family, smaller): its
            // sequences start from a confirm rate of 0.8, n-gram ones from 0.5; both follow
            // what is measured from then on.
            confirm_prior: if matches!(spec, Spec::Draft | Spec::Mtp) { 0.8 } else { 0.5 },
            draft_max: opts.draft_max.min(n_batch.saturating_sub(1)),
            draft_min: opts.draft_min,
            draft_every_step: opts.draft_every_step,
            drafter,
            mtp,
        })
    }

    fn limits(&self) -> (u32, u32, u32, u32) {
        (self.n_ctx_seq, self.n_batch, self.n_ubatch, self.slots.len() as u32)
    }

    fn memory(&self) -> sys::llama_memory_t {
        // SAFETY: valid context.
        unsafe { sys::llama_get_memory(self.ctx) }
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            let busy = self.slots.iter().any(|s| s.active.is_some()) || !self.queue.is_empty() || !self.embeds.is_empty();
            if !busy {
                match rx.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut running = true;
            while let Ok(cmd) = rx.try_recv() {
                if !self.handle(cmd) {
                    running = false;
                    break;
                }
            }
            if !running || self.abort.shutdown.load(Ordering::Relaxed) {
                break;
            }
            self.reap_cancelled();
            self.assign();
            self.run_embeds();
            if self.slots.iter().any(|s| s.active.is_some()) {
                self.step();
            }
        }
        // Shutting down: whoever still waits gets an error.
        for slot in &mut self.slots {
            if let Some(a) = slot.active.take() {
                let _ = a.job.events.send(Event::Error(EngineError::Stopped));
            }
        }
        for job in self.queue.drain(..) {
            let _ = job.events.send(Event::Error(EngineError::Stopped));
        }
        for e in self.embeds.drain(..) {
            let _ = e.reply.send(Err(EngineError::Stopped));
        }
    }

    /// Returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Generate(job) => self.queue.push_back(job),
            Command::Embed(job) => self.embeds.push_back(job),
            Command::Shutdown => return false,
        }
        true
    }

    fn reap_cancelled(&mut self) {
        for i in 0..self.slots.len() {
            let cancelled = self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.job.cancel.load(Ordering::Relaxed));
            if cancelled {
                self.finish(i, FinishReason::Cancelled);
            }
        }
        self.queue.retain(|job| {
            let cancelled = job.cancel.load(Ordering::Relaxed);
            if cancelled {
                let _ = job.events.send(Event::Done {
                    text: String::new(),
                    reason: FinishReason::Cancelled,
                    timings: Timings::default(),
                    stop: None,
                });
            }
            !cancelled
        });
    }

    /// Gives queued jobs to free slots, each to the slot whose cache shares the longest
    /// prefix with its prompt.
    fn assign(&mut self) {
        while !self.queue.is_empty() {
            let Some(job) = self.queue.front() else { break };
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.active.is_none())
                .map(|(i, s)| (common_prefix(&s.cache, &job.prompt), std::cmp::Reverse(s.last_used), i))
                .max();
            let Some((lcp, _, i)) = best else { break };
            let mut job = self.queue.pop_front().expect("front exists");
            // Keep at least one prompt token to evaluate: its logits start the generation.
            let mut keep = lcp.min(job.prompt.len() - 1);
            let seq = self.slots[i].seq;
            if keep < self.slots[i].cache.len() {
                // SAFETY: valid memory handle and sequence id.
                let ok = unsafe { sys::llama_memory_seq_rm(self.memory(), seq, keep as i32, -1) };
                if !ok {
                    // Some memories (recurrent, SWA) cannot drop a tail: start over.
                    unsafe { sys::llama_memory_seq_rm(self.memory(), seq, -1, -1) };
                    keep = 0;
                }
                self.slots[i].cache.truncate(keep);
            }
            if let Some(m) = self.mtp.as_mut() {
                m.start(seq, keep);
            }
            let mut sampler = Sampler::new(&job.sampling, self.model.n_vocab(), self.n_ctx_seq, job.grammar.take());
            let window = if job.sampling.repeat_last_n < 0 { job.prompt.len() } else { job.sampling.repeat_last_n as usize };
            for &t in &job.prompt[job.prompt.len().saturating_sub(window)..] {
                sampler.accept(t);
            }
            self.clock += 1;
            let slot = &mut self.slots[i];
            slot.last_used = self.clock;
            tracing::debug!(seq, prompt = job.prompt.len(), cached = keep, "request assigned");
            slot.active = Some(Active {
                stop: StopMatcher::new(job.stop.clone()),
                job,
                sampler,
                utf8: Utf8Stream::default(),
                next: None,
                generated: 0,
                cached: keep as u32,
                started: Instant::now(),
                first_token: None,
                stop_hit: None,
                spec: (self.spec != Spec::None && self.draft_max > 0).then(|| SpecState::new(self.draft_max, self.draft_min, self.confirm_prior)),
            });
        }
    }

    /// One decode step over every active slot.
    fn step(&mut self) {
        self.batch.clear();
        let budget = self.n_batch as usize;
        let mut members: Vec<Member> = Vec::new();
        // Generating sequences first: one token each keeps their latency low.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = &slot.active else { continue };
            let Some(tok) = a.next else { continue };
            if members.len() >= budget {
                break;
            }
            let before = slot.cache.len();
            slot.cache.push(tok);
            members.push(Member { slot: i, before, out: None, draft: Vec::new(), draft_at: 0 });
        }
        let generating = members.len();
        if self.spec != Spec::None && generating > 0 {
            self.add_drafts(&mut members);
        }
        // Each sequence's tokens together: its next token, then its draft (the MTP layers
        // pair each token with the hidden state of the one before it in the batch); and
        // between two sequences, a filler for each idle one whose id lies between theirs.
        let mut fillers: Vec<(i32, usize)> = Vec::new();
        let mut prev: Option<i32> = None;
        // Fillers only where the batch and a pass have room beside the sequences' tokens.
        let tokens: usize = members.iter().map(|m| 1 + m.draft.len()).sum();
        let mut spare = (self.n_batch.min(self.n_ubatch) as usize).saturating_sub(tokens);
        for m in members.iter_mut() {
            let seq = self.slots[m.slot].seq;
            if let Some(prev) = prev.filter(|_| self.fill_gaps) {
                self.fillers(prev + 1..seq, &mut fillers, &mut spare);
            }
            prev = Some(seq);
            let slot = &self.slots[m.slot];
            m.out = Some(self.batch.add(slot.cache[m.before], m.before as i32, slot.seq, true));
            m.draft_at = self.batch.len() as i32;
            for (k, &t) in m.draft.iter().enumerate() {
                self.batch.add(t, (m.before + 1 + k) as i32, slot.seq, true);
            }
        }
        // Then prompt chunks, in slot order, as much as the batch holds.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = &slot.active else { continue };
            if a.next.is_some() {
                continue;
            }
            let room = budget - self.batch.len();
            if room == 0 {
                break;
            }
            let before = slot.cache.len();
            let remaining = a.job.prompt.len() - before;
            let take = remaining.min(room);
            let mut out = None;
            for k in 0..take {
                let pos = before + k;
                let last = pos + 1 == a.job.prompt.len();
                let idx = self.batch.add(a.job.prompt[pos], pos as i32, slot.seq, last);
                if last {
                    out = Some(idx);
                }
            }
            slot.cache.extend_from_slice(&a.job.prompt[before..before + take]);
            members.push(Member { slot: i, before, out, draft: Vec::new(), draft_at: 0 });
        }
        if members.is_empty() {
            return;
        }
        if let Ok(mut flags) = self.abort.batch.lock() {
            flags.clear();
            flags.extend(members.iter().filter_map(|m| {
                self.slots[m.slot].active.as_ref().map(|a| a.job.cancel.clone())
            }));
        }
        let started = Instant::now();
        // SAFETY: valid context; the batch holds n_tokens valid entries.
        let ret = unsafe { sys::llama_decode(self.ctx, self.batch.raw) };
        if let Ok(mut flags) = self.abort.batch.lock() {
            flags.clear();
        }
        for &(seq, pos) in &fillers {
            // SAFETY: valid memory and sequence; drops the filler's cell (nothing after it).
            unsafe { sys::llama_memory_seq_rm(self.memory(), seq, pos as i32, -1) };
        }
        if ret == 0 && self.spec != Spec::None {
            // A GPU backend (and ggml RPC, past the first worker) computes after llama_decode
            // returns: the step ends when its outputs are there. Sampling waits for them next
            // anyway, so waiting here costs nothing and times the whole step.
            // SAFETY: valid context.
            unsafe { sys::llama_synchronize(self.ctx) };
            self.step_cost.observe(self.batch.len() - fillers.len(), self.batch.outputs(), started.elapsed().as_secs_f64());
        }
        if let Some(m) = self.mtp.as_mut() {
            if ret == 0 {
                m.process(&self.batch);
            } else {
                for member in &members {
                    m.truncate(self.slots[member.slot].seq, member.before);
                }
            }
        }
        if ret != 0 {
            // Undo what this step added: the KV of a failed or aborted decode is not trusted.
            for m in &members {
                let (i, before) = (m.slot, m.before);
                let seq = self.slots[i].seq;
                // SAFETY: valid memory and sequence.
                unsafe { sys::llama_memory_seq_rm(self.memory(), seq, before as i32, -1) };
                self.slots[i].cache.truncate(before);
                let cancelled = self.slots[i]
                    .active
                    .as_ref()
                    .is_some_and(|a| a.job.cancel.load(Ordering::Relaxed));
                if cancelled {
                    self.finish(i, FinishReason::Cancelled);
                } else if ret != 2 {
                    self.fail(i, EngineError::Decode(ret));
                }
            }
            return;
        }
        for m in members {
            let Some(idx) = m.out else { continue };
            if m.draft.is_empty() {
                let token = self.after_output(m.slot, idx);
                if let Some(spec) = token.and_then(|_| self.slots[m.slot].active.as_mut()).and_then(|a| a.spec.as_mut()) {
                    spec.sampled(token.expect("checked"));
                }
            } else {
                self.verify(m, idx);
            }
        }
    }

    /// Adds to the batch a token without output for each idle sequence numbered in `seqs`
    /// (their KV cell is dropped after the step), at most `spare`, and lists them in
    /// `fillers`.
    ///
    /// With a KV cache per sequence, llama.cpp puts in one pass only sequences numbered
    /// without gaps (`split_equal`, sequential): when the request of sequence 3 of 8 has
    /// ended, every step of the 7 others took two passes, reading the weights twice (the
    /// starter model, 8 streams: 82 ms against 55 for all 8). A filler closes the gap for
    /// the cost of one more token in the pass. A sequence whose cache is full, or one taking
    /// in its prompt (its tokens come later in the batch), gets none.
    fn fillers(&mut self, seqs: std::ops::Range<i32>, fillers: &mut Vec<(i32, usize)>, spare: &mut usize) {
        for seq in seqs {
            if *spare == 0 {
                return;
            }
            let Some(slot) = self.slots.iter().find(|s| s.seq == seq) else { continue };
            if slot.active.is_some() || slot.cache.len() + 1 >= self.n_ctx_seq as usize {
                continue;
            }
            let pos = slot.cache.len();
            // Any token does: its output is not asked for, and its cell is dropped.
            let token = slot.cache.last().copied().unwrap_or(0);
            self.batch.add(token, pos as i32, seq, false);
            fillers.push((seq, pos));
            *spare -= 1;
        }
    }

    /// Adds a draft after the next token of generating sequences, as long as each is worth
    /// what it costs: the more sequences the step already holds, the more a drafted token
    /// costs them all (see [`StepCost::draft_cost`]), so a batch that keeps the hardware busy
    /// drafts little or nothing.
    fn add_drafts(&mut self, members: &mut [Member]) {
        let budget = self.n_batch.min(self.n_ubatch) as usize;
        let n_ctx_seq = self.n_ctx_seq as usize;
        let (cost, switch) = (self.step_cost.draft_cost(members.len()), self.step_cost.switch_cost(members.len()));
        // With a KV cache per sequence, llama.cpp puts in a pass as many tokens of each
        // sequence: a draft's tokens beyond the first go in a pass of their own.
        let pass = if self.per_seq_kv { self.step_cost.pass_cost(members.len()) } else { 0.0 };
        // A draft model's decode of one token, in the same unit: each drafted token costs one.
        let g = members.len();
        let model_decode = match (&self.drafter, &self.mtp) {
            (Some(d), _) => d.step_secs().and_then(|secs| self.step_cost.in_tokens(secs, g)).unwrap_or(DRAFT_MODEL_PRIOR),
            (_, Some(m)) => m.step_secs().and_then(|secs| self.step_cost.in_tokens(secs, g)).unwrap_or(DRAFT_MODEL_PRIOR),
            _ => 0.0,
        };
        let step_cost = &self.step_cost;
        let drafter = &mut self.drafter;
        let mtp = &mut self.mtp;
        // The batch will hold every generating sequence's next token, and the drafts.
        let mut used = members.len();
        for m in members.iter_mut() {
            let room = budget.saturating_sub(used);
            if room == 0 {
                break;
            }
            let slot = &mut self.slots[m.slot];
            let Some(a) = slot.active.as_mut() else { continue };
            let Some(spec) = a.spec.as_mut() else { continue };
            if mtp.as_ref().is_some_and(|m| !m.on(slot.seq)) {
                continue;
            }
            // Never draft past the token limit or the context: the last token sampled needs
            // a cell of its own.
            let left = a.job.max_tokens.map_or(usize::MAX, |max| max.saturating_sub(a.generated) as usize);
            let cells = n_ctx_seq.saturating_sub(slot.cache.len() + 1);
            let room = room.min(left.saturating_sub(1)).min(cells);
            // Asking a draft model for a draft first brings it up to the sequence's tokens: one
            // decode while it drafts at every step (that of the draft's first token, counted
            // in `model_decode`, lost when the draft comes back empty), more when it was last
            // asked long ago.
            let catch_up = match drafter {
                Some(d) => d.catch_up_secs(slot.seq as usize, &slot.cache).and_then(|secs| step_cost.in_tokens(secs, g)).unwrap_or(DRAFT_MODEL_PRIOR),
                None => 0.0,
            };
            let mut want = if self.draft_every_step {
                (self.draft_max as usize).min(room)
            } else {
                spec.want(room, g, cost, model_decode, switch, catch_up + pass)
            };
            tracing::trace!(seq = slot.seq, cost, model_decode, catch_up, switch, rate = spec.confirm_rate(), made = spec.made_rate(), want, fit = ?step_cost.fit(), "draft");
            if want == 0 {
                match self.spec {
                    // N-gram drafts are free: the first token of one keeps the rate measured.
                    Spec::Ngram if room > 0 => spec.shadow(ngram_draft(&slot.cache, 1).first().copied()),
                    Spec::Draft | Spec::Mtp => want = spec.probe(room, catch_up + pass + cost + model_decode + switch),
                    _ => {}
                }
                if want == 0 {
                    if let Some(m) = mtp.as_mut() {
                        m.drafted(slot.seq, false);
                    }
                    continue;
                }
            }
            let draft = match self.spec {
                Spec::Ngram => ngram_draft(&slot.cache, want),
                Spec::Draft => drafter.as_mut().map(|d| d.draft(slot.seq as usize, &slot.cache, want)).unwrap_or_default(),
                Spec::Mtp => mtp.as_mut().map(|d| d.draft(slot.seq, m.before, slot.cache[m.before], want)).unwrap_or_default(),
                Spec::None => Vec::new(),
            };
            spec.asked(want, draft.len());
            let worth = spec.worth(draft.len());
            if let Some(m) = mtp.as_mut() {
                m.drafted(slot.seq, worth);
            }
            if !worth {
                continue;
            }
            used += draft.len();
            slot.cache.extend_from_slice(&draft);
            m.draft = draft;
        }
    }

    /// Samples along a drafted sequence's outputs (the next token's at `idx`, then one per
    /// drafted token) while the sampler picks the drafted token, and drops the rest of the
    /// draft from the KV cache.
    fn verify(&mut self, m: Member, idx: i32) {
        let Member { slot: i, before, draft, draft_at, .. } = m;
        // The cache holds the next token and the draft; only the next token is confirmed.
        self.slots[i].cache.truncate(before + 1);
        if let Some(spec) = self.slots[i].active.as_mut().and_then(|a| a.spec.as_mut()) {
            spec.drafted += draft.len() as u32;
        }
        let mut accepted = 0;
        let mut out = idx;
        while let Some(token) = self.after_output(i, out) {
            if draft.get(accepted) != Some(&token) {
                break;
            }
            // The drafted token is the next one, and its KV is already there.
            let slot = &mut self.slots[i];
            slot.cache.push(token);
            if let Some(a) = slot.active.as_mut() {
                a.next = None;
                if let Some(spec) = a.spec.as_mut() {
                    spec.accepted += 1;
                }
            }
            out = draft_at + accepted as i32;
            accepted += 1;
        }
        let slot = &mut self.slots[i];
        // SAFETY: valid memory and sequence; drops the cells of the unconfirmed draft.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.ctx), slot.seq, slot.cache.len() as i32, -1) };
        if let Some(m) = self.mtp.as_mut() {
            m.accept(slot.seq, accepted);
            m.truncate(slot.seq, slot.cache.len());
        }
        if let Some(spec) = slot.active.as_mut().and_then(|a| a.spec.as_mut()) {
            spec.adapt(draft.len(), accepted);
        }
        let tested = accepted + usize::from(accepted < draft.len());
        self.confirm_prior = 0.9 * self.confirm_prior + 0.1 * (accepted as f32 / tested.max(1) as f32);
    }

    /// Samples from output `idx` for slot `i` and sends what it releases; returns the token
    /// when the generation goes on (it is then the slot's next token).
    fn after_output(&mut self, i: usize, idx: i32) -> Option<Token> {
        let ctx = self.ctx;
        let n_ctx_seq = self.n_ctx_seq as usize;
        let a = self.slots[i].active.as_mut()?;
        if a.first_token.is_none() {
            a.first_token = Some(Instant::now());
            if a.job.max_tokens == Some(0) {
                self.finish(i, FinishReason::Length);
                return None;
            }
        }
        let token = match a.sampler.sample(ctx, idx) {
            Ok(token) => token,
            Err(e) => {
                self.fail(i, e);
                return None;
            }
        };
        if !a.job.ignore_eos && self.model.is_eog(token) {
            self.finish(i, FinishReason::Stop);
            return None;
        }
        a.generated += 1;
        let logprobs = a.job.logprobs.and_then(|n| {
            // SAFETY: the last decode produced output `idx`; no decode runs until `step` is
            // called again, after this function.
            let logits = unsafe { crate::sampling::logits(ctx, idx, self.model.n_vocab() as usize) }?;
            Some(token_logprobs(&self.model, logits, token, n as usize))
        });
        let piece = self.model.token_piece(token, a.job.preserved.contains(&token));
        let text = a.utf8.push(&piece);
        let (text, stopped) = match a.stop.push(&text) {
            StopOutcome::Continue(t) => (t, false),
            StopOutcome::Stopped(t) => (t, true),
        };
        if a.job.events.send(Event::Token { id: token, text, logprobs }).is_err() {
            // Nobody listens any more.
            self.finish(i, FinishReason::Cancelled);
            return None;
        }
        if stopped {
            a.stop_hit = a.stop.matched().map(str::to_string);
            a.stop = StopMatcher::new(Vec::new());
            a.utf8 = Utf8Stream::default();
            self.finish(i, FinishReason::Stop);
        } else if a.job.max_tokens.is_some_and(|m| a.generated >= m) {
            self.finish(i, FinishReason::Length);
        } else if self.slots[i].cache.len() + 1 >= n_ctx_seq {
            // No cell left to decode this token into.
            self.finish(i, FinishReason::Length);
        } else if let Some(a) = self.slots[i].active.as_mut() {
            a.next = Some(token);
            return Some(token);
        }
        None
    }

    fn finish(&mut self, i: usize, reason: FinishReason) {
        let Some(mut a) = self.slots[i].active.take() else { return };
        let tail = a.utf8.finish();
        let text = match a.stop.push(&tail) {
            StopOutcome::Continue(t) => t + &a.stop.finish(),
            StopOutcome::Stopped(t) => t,
        };
        let now = Instant::now();
        let first = a.first_token.unwrap_or(now);
        let timings = Timings {
            prompt_tokens: a.job.prompt.len() as u32,
            cached_tokens: a.cached,
            prompt_ms: ms(first - a.started),
            generated_tokens: a.generated,
            generation_ms: ms(now - first),
            queue_ms: ms(a.started - a.job.submitted),
            load_ms: self.model.info().load_ms,
            drafted_tokens: a.spec.as_ref().map_or(0, |s| s.drafted),
            accepted_tokens: a.spec.as_ref().map_or(0, |s| s.accepted),
        };
        tracing::debug!(seq = self.slots[i].seq, ?reason, ?timings, "request finished");
        let stop = a.stop_hit.take().or_else(|| a.stop.matched().map(str::to_string));
        let _ = a.job.events.send(Event::Done { text, reason, timings, stop });
    }

    fn fail(&mut self, i: usize, err: EngineError) {
        if let Some(a) = self.slots[i].active.take() {
            let _ = a.job.events.send(Event::Error(err));
        }
    }

    /// Runs queued embedding jobs on a free slot (whose cache they overwrite).
    fn run_embeds(&mut self) {
        while !self.embeds.is_empty() {
            let Some(i) = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.active.is_none())
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i)
            else {
                return;
            };
            let job = self.embeds.pop_front().expect("not empty");
            let result = job
                .inputs
                .iter()
                .map(|tokens| self.embed_one(i, tokens, job.normalize))
                .collect();
            let _ = job.reply.send(result);
        }
    }

    fn embed_one(&mut self, i: usize, tokens: &[Token], normalize: bool) -> Result<Vec<f32>, EngineError> {
        let seq = self.slots[i].seq;
        let mem = self.memory();
        if self.pooling != sys::LLAMA_POOLING_TYPE_NONE && tokens.len() > self.n_ubatch as usize {
            return Err(EngineError::PromptTooLong { tokens: tokens.len(), n_ctx: self.n_ubatch });
        }
        // SAFETY: valid memory and sequence; the slot is free.
        unsafe { sys::llama_memory_seq_rm(mem, seq, -1, -1) };
        self.slots[i].cache.clear();
        self.batch.clear();
        for (pos, &t) in tokens.iter().enumerate() {
            self.batch.add(t, pos as i32, seq, true);
        }
        let n_embd = self.model.info().n_embd as usize;
        // SAFETY: valid context and batch; embeddings are read right after the decode, before
        // anything else touches the context.
        let result = unsafe {
            sys::llama_set_embeddings(self.ctx, true);
            let ret = sys::llama_decode(self.ctx, self.batch.raw);
            let out = if ret != 0 {
                Err(EngineError::Decode(ret))
            } else if self.pooling == sys::LLAMA_POOLING_TYPE_NONE {
                let mut sum = vec![0f32; n_embd];
                let mut ok = true;
                for k in 0..tokens.len() {
                    let p = sys::llama_get_embeddings_ith(self.ctx, k as i32);
                    if p.is_null() {
                        ok = false;
                        break;
                    }
                    for (s, v) in sum.iter_mut().zip(std::slice::from_raw_parts(p, n_embd)) {
                        *s += v;
                    }
                }
                if ok {
                    sum.iter_mut().for_each(|s| *s /= tokens.len() as f32);
                    Ok(sum)
                } else {
                    Err(EngineError::Embedding("llama.cpp returned no embeddings".into()))
                }
            } else {
                let p = sys::llama_get_embeddings_seq(self.ctx, seq);
                if p.is_null() {
                    Err(EngineError::Embedding("llama.cpp returned no pooled embedding".into()))
                } else {
                    Ok(std::slice::from_raw_parts(p, n_embd).to_vec())
                }
            };
            sys::llama_set_embeddings(self.ctx, false);
            sys::llama_memory_seq_rm(mem, seq, -1, -1);
            out
        };
        result.map(|mut v| {
            if normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
            }
            v
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // The MTP context was made against this one: it goes first.
        self.mtp = None;
        // SAFETY: the context is ours and freed once, before the model (held by `model`).
        unsafe { sys::llama_free(self.ctx) }
    }
}

/// The log-probabilities of `token` and the `n` most likely tokens at an output position.
fn token_logprobs(model: &Model, logits: &[f32], token: Token, n: usize) -> TokenLogprobs {
    let (logprob, top) = log_softmax_top(logits, token, n);
    let entry = |id: Token, logprob: f32| {
        let bytes = model.token_piece(id, true);
        TokenLogprob { id, text: String::from_utf8_lossy(&bytes).into_owned(), bytes, logprob }
    };
    TokenLogprobs {
        chosen: entry(token, logprob),
        top: top.into_iter().map(|(id, lp)| entry(id, lp)).collect(),
    }
}

pub(crate) fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
