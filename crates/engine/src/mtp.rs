//! Drafts from the model's own multi-token-prediction (MTP, "NextN") layers (`--spec mtp`):
//! a second context of the target model runs its MTP block, which guesses the token after
//! next from the target's last hidden state (see `cpp/mtp_shim.cpp` for the protocol). The
//! engine verifies these drafts as it does the others (see [`crate::spec`]), so the output is
//! the model's, token for token.

use std::ffi::c_void;

use crate::engine::Batch;
use crate::{sys, EngineError, Model, Token};

extern "C" {
    fn hearth_mtp_new(tgt: *mut sys::llama_context, dft: *mut sys::llama_context, n_seq: i32) -> *mut c_void;
    fn hearth_mtp_free(m: *mut c_void);
    fn hearth_mtp_reset(m: *mut c_void, seq: i32);
    fn hearth_mtp_process(m: *mut c_void, tokens: *const i32, pos: *const i32, seq: *const i32, rows: *const i32, n: i32) -> i32;
    fn hearth_mtp_draft(m: *mut c_void, seq: i32, pos0: i32, id_last: i32, want: i32, p_min: f32, out: *mut i32) -> i32;
    fn hearth_mtp_accept(m: *mut c_void, seq: i32, n: i32);
}

/// Steps a sequence goes without an MTP draft before its MTP layers stop following it (for the
/// rest of its request): they cost a decode per batch even while the cost model has stopped
/// drafting.
const IDLE_OFF: u32 = 16;

pub(crate) struct Mtp {
    // Freed in Drop: the driver, then the MTP context. The target model outlives both (the
    // Worker holds it and drops this first).
    driver: *mut c_void,
    ctx: *mut sys::llama_context,
    p_min: f32,
    // The batch entries passed on: token, position, sequence, batch index.
    entries: (Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>),
    /// Per sequence: steps since its last MTP draft, and whether the MTP layers still follow
    /// it, and up to which position its MTP cache holds its tokens.
    idle: Vec<u32>,
    off: Vec<bool>,
    upto: Vec<usize>,
    /// How long drafting one token takes (a moving average), once timed.
    step_secs: Option<f64>,
    /// The MTP context could not follow a batch: no more drafts from it.
    broken: bool,
}

impl Mtp {
    /// The MTP context of `model` next to the target context `target` (made with `params`).
    pub(crate) fn new(model: &Model, target: *mut sys::llama_context, mut params: sys::llama_context_params, p_min: f32) -> Result<Mtp, EngineError> {
        // SAFETY: a valid model.
        let layers = unsafe { sys::llama_model_n_layer_nextn(model.as_ptr()) };
        if layers <= 0 {
            return Err(EngineError::InvalidRequest(
                "this model has no multi-token-prediction layers (its GGUF holds no nextn block), so it cannot draft with --spec mtp; use --spec ngram or a draft model (--model-draft)".into(),
            ));
        }
        params.ctx_type = sys::LLAMA_CONTEXT_TYPE_MTP;
        params.ctx_other = target;
        params.n_rs_seq = 0;
        // Freed in Drop; the Worker holds the model longer.
        let ctx = crate::draft::side_context(model, params, "the context of the model's MTP layers")?;
        // SAFETY: both contexts are valid; the driver holds no ownership of them.
        let driver = unsafe { hearth_mtp_new(target, ctx, params.n_seq_max as i32) };
        if driver.is_null() {
            // SAFETY: ours, freed once.
            unsafe { sys::llama_free(ctx) };
            return Err(EngineError::Context("cannot start drafting from the model's MTP layers".into()));
        }
        tracing::info!(layers, "drafting from the model's MTP layers");
        let n = params.n_seq_max as usize;
        Ok(Mtp {
            driver,
            ctx,
            p_min,
            entries: Default::default(),
            idle: vec![0; n],
            off: vec![false; n],
            upto: vec![usize::MAX; n],
            step_secs: None,
            broken: false,
        })
    }

    /// How long drafting one token takes, once timed.
    pub(crate) fn step_secs(&self) -> Option<f64> {
        self.step_secs
    }

    /// Whether the MTP layers follow sequence `seq` (and so may draft for it).
    pub(crate) fn on(&self, seq: i32) -> bool {
        !self.broken && !self.off.get(seq as usize).copied().unwrap_or(true)
    }

    /// A step of `seq` with an MTP draft or without: after [`IDLE_OFF`] steps without, the
    /// MTP layers stop following it until its next request.
    pub(crate) fn drafted(&mut self, seq: i32, made: bool) {
        let s = seq as usize;
        if s >= self.idle.len() {
            return;
        }
        self.idle[s] = if made { 0 } else { self.idle[s] + 1 };
        if self.idle[s] >= IDLE_OFF && !self.off[s] {
            tracing::debug!(seq, "no MTP drafts for a while: the MTP layers stop following this sequence");
            self.off[s] = true;
        }
    }

    /// A new request in `seq`, whose cache keeps its first `keep` tokens.
    pub(crate) fn start(&mut self, seq: i32, keep: usize) {
        let s = seq as usize;
        if s >= self.idle.len() {
            return;
        }
        // Where the MTP layers stopped following the last request, its cache ends.
        self.truncate(seq, keep.min(self.upto[s]));
        self.idle[s] = 0;
        self.off[s] = false;
        self.upto[s] = usize::MAX;
    }

    /// After the target decoded `batch`: the same tokens of the sequences it follows through
    /// the MTP block, which keeps its cache in step with the target's.
    pub(crate) fn process(&mut self, batch: &Batch) {
        if self.broken {
            return;
        }
        let (tokens, pos, seqs, rows) = &mut self.entries;
        tokens.clear();
        pos.clear();
        seqs.clear();
        rows.clear();
        // SAFETY: the batch holds len() valid entries with one sequence id each.
        unsafe {
            for i in 0..batch.len() {
                let seq = *(*batch.raw.seq_id.add(i));
                let p = *batch.raw.pos.add(i);
                match self.off.get(seq as usize) {
                    Some(false) => {}
                    Some(true) => {
                        // Its MTP cache holds the positions before the first one skipped.
                        let u = &mut self.upto[seq as usize];
                        *u = (*u).min(p.max(0) as usize);
                        continue;
                    }
                    None => continue,
                }
                tokens.push(*batch.raw.token.add(i));
                pos.push(p);
                seqs.push(seq);
                rows.push(i as i32);
            }
        }
        if tokens.is_empty() {
            return;
        }
        // SAFETY: valid driver; the arrays hold as many entries as passed.
        let rc = unsafe { hearth_mtp_process(self.driver, tokens.as_ptr(), pos.as_ptr(), seqs.as_ptr(), rows.as_ptr(), tokens.len() as i32) };
        if rc != 0 {
            tracing::warn!(rc, "the MTP layers could not follow the batch; no more MTP drafts");
            self.broken = true;
        }
    }

    /// Up to `want` tokens after `next` (at position `pos`, not decoded yet) of sequence `seq`.
    pub(crate) fn draft(&mut self, seq: i32, pos: usize, next: Token, want: usize) -> Vec<Token> {
        if self.broken || want == 0 {
            return Vec::new();
        }
        let mut out = vec![0; want];
        let started = std::time::Instant::now();
        // SAFETY: valid driver; `out` holds `want` tokens.
        let n = unsafe { hearth_mtp_draft(self.driver, seq, pos as i32, next, want as i32, self.p_min, out.as_mut_ptr()) };
        // One decode per drafted token, and one for a draft that stops before its first.
        let secs = started.elapsed().as_secs_f64() / (n.max(1) as f64);
        self.step_secs = Some(self.step_secs.map_or(secs, |s| 0.8 * s + 0.2 * secs));
        out.truncate(n.max(0) as usize);
        tracing::trace!(seq, pos, next, ?out, "MTP draft");
        out
    }

    /// `n` drafted tokens of sequence `seq` were confirmed in the latest batch.
    pub(crate) fn accept(&mut self, seq: i32, n: usize) {
        // SAFETY: valid driver.
        unsafe { hearth_mtp_accept(self.driver, seq, n as i32) }
    }

    /// Drops the MTP cache of `seq` from position `from` on, as the target's was.
    pub(crate) fn truncate(&mut self, seq: i32, from: usize) {
        // SAFETY: valid context and sequence id.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.ctx), seq, from as i32, -1) };
        if from == 0 {
            // SAFETY: valid driver.
            unsafe { hearth_mtp_reset(self.driver, seq) };
        }
    }
}

impl Drop for Mtp {
    fn drop(&mut self) {
        // SAFETY: created in `new`, freed once, the driver before the context it uses.
        unsafe {
            hearth_mtp_free(self.driver);
            sys::llama_free(self.ctx);
        }
    }
}
