//! Sampling parameters and the llama.cpp sampler chain built from them.

use std::ptr::NonNull;

use crate::{sys, EngineError, Token};

/// How to pick the next token. Defaults are llama.cpp's.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 (or less) means greedy: always the most likely token.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: i32,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub typical_p: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// 0.0 disables.
    pub presence_penalty: f32,
    /// 0.0 disables.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at; 0 disables them, -1 means the context.
    pub repeat_last_n: i32,
    /// `None` picks a random seed.
    pub seed: Option<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repeat_last_n: 64,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks ranges, so a bad value is a clear error and not a llama.cpp assertion.
    pub fn validate(&self) -> Result<(), EngineError> {
        if !self.temperature.is_finite() {
            return Err(EngineError::InvalidRequest("temperature must be a finite number".into()));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(EngineError::InvalidRequest(format!("top_p must be between 0 and 1, not {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(EngineError::InvalidRequest(format!("min_p must be between 0 and 1, not {}", self.min_p)));
        }
        if !(0.0..=1.0).contains(&self.typical_p) {
            return Err(EngineError::InvalidRequest(format!("typical_p must be between 0 and 1, not {}", self.typical_p)));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(EngineError::InvalidRequest(format!("repeat_penalty must be greater than 0, not {}", self.repeat_penalty)));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return Err(EngineError::InvalidRequest("presence and frequency penalties must be finite numbers".into()));
        }
        if self.repeat_last_n < -1 {
            return Err(EngineError::InvalidRequest(format!("repeat_last_n must be -1 or more, not {}", self.repeat_last_n)));
        }
        Ok(())
    }
}

/// llama.cpp's `LLAMA_DEFAULT_SEED`: pick a random seed.
const RANDOM_SEED: u32 = 0xFFFF_FFFF;

/// An owned llama.cpp sampler chain.
pub(crate) struct Sampler {
    chain: NonNull<sys::llama_sampler>,
    /// Plain greedy with no penalties: the chain would copy every logit into a candidate
    /// array each step only to take the maximum, so take it straight from the logits.
    argmax: Option<i32>,
}

impl Sampler {
    /// Builds the chain in llama.cpp's order: penalties, top-k, typical, top-p, min-p,
    /// temperature, then the final pick (greedy or seeded random).
    pub(crate) fn new(p: &SamplingParams, n_vocab: i32, n_ctx: u32) -> Sampler {
        // SAFETY: each sampler created here is handed to the chain, which owns and frees it.
        unsafe {
            let mut cp = sys::llama_sampler_chain_default_params();
            cp.no_perf = true;
            let chain = sys::llama_sampler_chain_init(cp);
            let add = |s: *mut sys::llama_sampler| sys::llama_sampler_chain_add(chain, s);
            let last_n = if p.repeat_last_n == -1 { n_ctx as i32 } else { p.repeat_last_n };
            let penalties = last_n != 0
                && (p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0);
            if penalties {
                add(sys::llama_sampler_init_penalties(
                    n_vocab,
                    last_n,
                    p.repeat_penalty,
                    p.frequency_penalty,
                    p.presence_penalty,
                ));
            }
            if p.temperature <= 0.0 {
                add(sys::llama_sampler_init_greedy());
            } else {
                if p.top_k > 0 {
                    add(sys::llama_sampler_init_top_k(p.top_k));
                }
                if p.typical_p < 1.0 {
                    add(sys::llama_sampler_init_typical(p.typical_p, 1));
                }
                if p.top_p < 1.0 {
                    add(sys::llama_sampler_init_top_p(p.top_p, 1));
                }
                if p.min_p > 0.0 {
                    add(sys::llama_sampler_init_min_p(p.min_p, 1));
                }
                add(sys::llama_sampler_init_temp(p.temperature));
                add(sys::llama_sampler_init_dist(p.seed.unwrap_or(RANDOM_SEED)));
            }
            Sampler {
                chain: NonNull::new(chain).expect("llama_sampler_chain_init returned null"),
                argmax: (p.temperature <= 0.0 && !penalties).then_some(n_vocab),
            }
        }
    }

    /// Feeds a token the model did not sample (the prompt) into the penalty history.
    pub(crate) fn accept(&mut self, token: Token) {
        // SAFETY: valid chain.
        unsafe { sys::llama_sampler_accept(self.chain.as_ptr(), token) }
    }

    /// Samples (and accepts) a token from output `idx` of the last decode.
    pub(crate) fn sample(&mut self, ctx: *mut sys::llama_context, idx: i32) -> Token {
        if let Some(n_vocab) = self.argmax {
            // SAFETY: `ctx` is the live context whose last decode produced output `idx`, whose
            // logits row holds n_vocab floats.
            let logits = unsafe { sys::llama_get_logits_ith(ctx, idx) };
            if !logits.is_null() {
                let row = unsafe { std::slice::from_raw_parts(logits, n_vocab as usize) };
                // The first maximum wins, as in llama.cpp's greedy sampler.
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                return best as Token;
            }
        }
        // SAFETY: `ctx` is the live context whose last decode produced output `idx`.
        unsafe { sys::llama_sampler_sample(self.chain.as_ptr(), ctx, idx) }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: we own the chain, which frees the samplers it holds.
        unsafe { sys::llama_sampler_free(self.chain.as_ptr()) }
    }
}
