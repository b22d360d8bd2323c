//! A draft model for speculative decoding (`--model-draft`): a smaller model with the
//! target's vocabulary guesses the next tokens greedily, in a context of its own with one
//! sequence per slot of the engine, always on this machine (the target's workers are not
//! asked). The engine verifies its drafts as it does n-gram drafts (see [`crate::spec`]), so
//! the output is the target's, token for token.

use std::path::Path;
use std::sync::Arc;

use crate::engine::{common_prefix, Batch};
use crate::{sys, EngineError, Model, ModelOptions, Token};

/// llama.cpp's tolerance for vocabularies that differ only in padding tokens at the end
/// (`SPEC_VOCAB_MAX_SIZE_DIFFERENCE`), and the first token id compared (ids below it are often
/// control tokens that differ between sizes of one family).
const VOCAB_SIZE_SLACK: i32 = 128;
const VOCAB_CHECK_FROM: i32 = 5;

pub(crate) struct Drafter {
    // Freed in Drop before `model` (held here) goes.
    ctx: *mut sys::llama_context,
    model: Arc<Model>,
    batch: Batch,
    /// Per sequence: the tokens whose KV cells the draft context holds, at positions 0..len.
    caches: Vec<Vec<Token>>,
    /// A draft stops before a token the draft model gives less than this probability.
    p_min: f32,
    n_batch: usize,
    n_ctx_seq: usize,
    /// How long a decode of one to a few tokens takes (a moving average), once timed.
    step_secs: Option<f64>,
    /// How long a larger decode (catching up with a prompt or many tokens) takes per token.
    token_secs: Option<f64>,
}

impl Drafter {
    /// Loads the draft model at `path` for `target` and makes its context like the target's
    /// (`params`: the target context's parameters).
    pub(crate) fn new(target: &Model, path: &Path, mmap: bool, params: sys::llama_context_params, p_min: f32) -> Result<Drafter, EngineError> {
        let mut mo = ModelOptions::new(path);
        mo.mmap = mmap;
        // This machine's GPUs, or none: RPC devices the target registered are not for it.
        let gpus: Vec<String> = crate::devices::list().into_iter().filter(|d| d.is_gpu()).map(|d| d.name).collect();
        mo.devices = if gpus.is_empty() { vec!["none".into()] } else { gpus };
        let model = Arc::new(Model::load(&mo).map_err(|e| match e {
            EngineError::Load { path, reason } => EngineError::Load { path, reason: format!("the draft model: {reason}") },
            other => other,
        })?);
        check_vocab(target, &model)?;
        // Freed first in Drop, before `model`.
        let ctx = side_context(&model, params, "the draft model's context")?;
        // SAFETY: plain queries on the new context.
        let (n_batch, n_ctx_seq) = unsafe { (sys::llama_n_batch(ctx) as usize, sys::llama_n_ctx_seq(ctx) as usize) };
        tracing::info!(draft = %path.display(), "draft model loaded");
        Ok(Drafter {
            ctx,
            model,
            batch: Batch::new(n_batch),
            caches: vec![Vec::new(); params.n_seq_max as usize],
            p_min,
            n_batch,
            n_ctx_seq,
            step_secs: None,
            token_secs: None,
        })
    }

    /// How long the draft model takes to decode a token, once timed: drafting `k` tokens
    /// takes `k` such decodes (the first catches up with the tokens confirmed since the last
    /// draft), and a draft that comes back empty one.
    pub(crate) fn step_secs(&self) -> Option<f64> {
        self.step_secs
    }

    /// What bringing the draft context up to `history` (sequence `seq`) costs before a draft
    /// can start, in seconds, once timed: the tokens it has not seen yet (at least the last
    /// one, whose logits start the draft). A draft model asked only now and then must catch up
    /// with everything generated since.
    pub(crate) fn catch_up_secs(&self, seq: usize, history: &[Token]) -> Option<f64> {
        let held = self.caches.get(seq).map_or(0, |c| common_prefix(c, history).min(history.len().saturating_sub(1)));
        let behind = history.len() - held;
        if behind <= 4 {
            self.step_secs
        } else {
            self.token_secs.or(self.step_secs).map(|t| t * behind as f64)
        }
    }

    fn seq_rm(&self, seq: usize, from: usize) -> bool {
        // SAFETY: valid context and sequence id.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.ctx), seq as i32, from as i32, -1) }
    }

    /// Up to `want` tokens the draft model expects after `history` (sequence `seq`), greedily,
    /// stopping before a token it is less sure of than `p_min`.
    pub(crate) fn draft(&mut self, seq: usize, history: &[Token], want: usize) -> Vec<Token> {
        let Some(cache) = self.caches.get(seq) else { return Vec::new() };
        let want = want.min(self.n_ctx_seq.saturating_sub(history.len() + 1));
        if want == 0 || history.is_empty() {
            return Vec::new();
        }
        // Keep what the draft context already holds of `history` (at least the last token is
        // evaluated again: its logits start the draft).
        let mut keep = common_prefix(cache, history).min(history.len() - 1);
        if keep < cache.len() && !self.seq_rm(seq, keep) {
            self.seq_rm(seq, 0);
            keep = 0;
        }
        self.caches[seq].truncate(keep);
        let mut at = keep;
        while at < history.len() {
            let end = (at + self.n_batch).min(history.len());
            self.batch.clear();
            for (p, &t) in history.iter().enumerate().take(end).skip(at) {
                self.batch.add(t, p as i32, seq as i32, p + 1 == history.len());
            }
            if !self.decode(seq, at) {
                return Vec::new();
            }
            self.caches[seq].extend_from_slice(&history[at..end]);
            at = end;
        }
        let mut out = self.batch.len() as i32 - 1;
        let mut draft = Vec::with_capacity(want);
        let n_vocab = self.model.n_vocab() as usize;
        loop {
            // SAFETY: the last decode produced output `out`; no decode runs while `logits` lives.
            let Some(logits) = (unsafe { crate::sampling::logits(self.ctx, out, n_vocab) }) else { break };
            let (token, p) = most_likely(logits);
            if p < self.p_min {
                break;
            }
            draft.push(token);
            if draft.len() >= want {
                break;
            }
            let pos = self.caches[seq].len();
            self.batch.clear();
            self.batch.add(token, pos as i32, seq as i32, true);
            if !self.decode(seq, pos) {
                break;
            }
            self.caches[seq].push(token);
            out = 0;
        }
        draft
    }

    /// Decodes the batch for `seq`; on failure drops what it added from position `from`.
    fn decode(&mut self, seq: usize, from: usize) -> bool {
        let started = std::time::Instant::now();
        // SAFETY: valid context; the batch holds n_tokens valid entries.
        let ret = unsafe { sys::llama_decode(self.ctx, self.batch.raw) };
        // A few tokens cost about what one does; more are timed per token. (The draft's next
        // token is sampled from these logits right after: waiting for them here, as a GPU
        // backend computes after llama_decode returns, times the whole decode at no cost.)
        if ret == 0 {
            // SAFETY: valid context.
            unsafe { sys::llama_synchronize(self.ctx) };
            let secs = started.elapsed().as_secs_f64();
            let n = self.batch.len();
            let (avg, secs) = if n <= 4 { (&mut self.step_secs, secs) } else { (&mut self.token_secs, secs / n as f64) };
            *avg = Some(avg.map_or(secs, |s| 0.8 * s + 0.2 * secs));
        }
        if ret != 0 {
            tracing::warn!(ret, "the draft model could not decode; no draft this step");
            self.seq_rm(seq, from);
            self.caches[seq].truncate(from);
        }
        ret == 0
    }
}

/// A context of `model` beside the engine's (a draft model's, the MTP layers'), made with
/// `params` but without the engine's abort callback; `what` names it in the error. The caller
/// frees it before the model goes.
pub(crate) fn side_context(model: &Model, mut params: sys::llama_context_params, what: &str) -> Result<*mut sys::llama_context, EngineError> {
    params.abort_callback = None;
    params.abort_callback_data = std::ptr::null_mut();
    crate::log::clear_last_error();
    // SAFETY: a valid model; the caller keeps it alive while the context lives.
    let ctx = unsafe { sys::llama_init_from_model(model.as_ptr(), params) };
    if ctx.is_null() {
        return Err(EngineError::Context(format!(
            "cannot create {what}: {}",
            crate::log::take_last_error().unwrap_or_else(|| "out of memory?".into())
        )));
    }
    Ok(ctx)
}

impl Drop for Drafter {
    fn drop(&mut self) {
        // SAFETY: the context is ours and freed once, before the model.
        unsafe { sys::llama_free(self.ctx) }
    }
}

/// The most likely token and its probability.
fn most_likely(logits: &[f32]) -> (Token, f32) {
    let best = crate::sampling::argmax(logits);
    let max = logits[best as usize];
    let sum: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    (best, 1.0 / sum)
}

/// Whether `draft` can draft for `target`: llama.cpp's test (the same tokenizer type, BOS and
/// EOS, vocabularies the same size within 128 and the same text for every token).
fn check_vocab(target: &Model, draft: &Model) -> Result<(), EngineError> {
    let refuse = |why: String| {
        EngineError::InvalidRequest(format!(
            "the draft model {} cannot draft for {}: {why}; a draft model needs the target's vocabulary (the same tokenizer, usually a smaller model of the same family)",
            draft.info().path.display(),
            target.info().path.display()
        ))
    };
    let (tv, dv) = (target.vocab_ptr(), draft.vocab_ptr());
    // SAFETY: read-only queries on two valid vocabularies.
    unsafe {
        if sys::llama_vocab_type(tv) != sys::llama_vocab_type(dv) {
            return Err(refuse("its tokenizer is of another type".into()));
        }
        if sys::llama_vocab_get_add_bos(tv) != sys::llama_vocab_get_add_bos(dv)
            || (sys::llama_vocab_get_add_bos(tv) && sys::llama_vocab_bos(tv) != sys::llama_vocab_bos(dv))
            || sys::llama_vocab_eos(tv) != sys::llama_vocab_eos(dv)
        {
            return Err(refuse("its BOS or EOS token differs".into()));
        }
        let (nt, nd) = (sys::llama_vocab_n_tokens(tv), sys::llama_vocab_n_tokens(dv));
        if (nt - nd).abs() > VOCAB_SIZE_SLACK {
            return Err(refuse(format!("its vocabulary has {nd} tokens, the target's {nt}")));
        }
        for id in VOCAB_CHECK_FROM..nt.min(nd) {
            let text = |v| {
                let p = sys::llama_vocab_get_text(v, id);
                if p.is_null() {
                    Vec::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_bytes().to_vec()
                }
            };
            let (a, b) = (text(tv), text(dv));
            if a != b {
                return Err(refuse(format!(
                    "token {id} is {:?} there and {:?} in the target",
                    String::from_utf8_lossy(&b),
                    String::from_utf8_lossy(&a)
                )));
            }
        }
    }
    Ok(())
}
