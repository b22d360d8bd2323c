//! Sampling parameters and the llama.cpp sampler chain built from them.

use std::ptr::NonNull;

use crate::grammar::CompiledGrammar;
use crate::{sys, EngineError, Token};

pub use hearth_protocol::SamplingParams;

/// llama.cpp's `LLAMA_DEFAULT_SEED`: pick a random seed.
const RANDOM_SEED: u32 = 0xFFFF_FFFF;

/// An owned llama.cpp sampler chain, and the request's grammar if it has one.
///
/// Under a grammar a token is picked as llama.cpp's `common_sampler` does: first as if there
/// were no grammar; if the grammar allows that token it is kept, otherwise the grammar masks
/// the whole vocabulary and the chain picks again from what is left. For greedy decoding this
/// is exactly "the most likely token the grammar allows" (the argmax of all tokens, if allowed,
/// is also the argmax of the allowed ones) at the cost of one token's grammar check instead of
/// the whole vocabulary's on most steps. The grammar only ever accepts a token it allows.
pub(crate) struct Sampler {
    chain: NonNull<sys::llama_sampler>,
    /// Plain greedy with no penalties: the chain would copy every logit into a candidate
    /// array each step only to take the maximum, so take it straight from the logits.
    argmax: bool,
    /// Top-k taken here in one pass over the logits (the chain then holds what comes after
    /// it): llama.cpp's top-k sampler first copies the whole vocabulary into a candidate
    /// array and heap-sorts it, which with a vocabulary of 50k-250k tokens is most of a
    /// sampling step. Set only where nothing before top-k in the chain needs every token (no
    /// penalties, no grammar).
    top_k: Option<usize>,
    n_vocab: usize,
    grammar: Option<CompiledGrammar>,
    /// The candidate array, reused across steps when a grammar makes us build our own.
    cur: Vec<sys::llama_token_data>,
}

impl Sampler {
    /// Builds the chain in llama.cpp's order: penalties, top-k, typical, top-p, min-p,
    /// temperature, then the final pick (greedy or seeded random).
    pub(crate) fn new(p: &SamplingParams, n_vocab: i32, n_ctx: u32, grammar: Option<CompiledGrammar>) -> Sampler {
        Sampler::build(p, n_vocab, n_ctx, grammar, true)
    }

    /// [`Sampler::new`]; `fused: false` leaves top-k to llama.cpp's sampler (the tests'
    /// reference).
    fn build(p: &SamplingParams, n_vocab: i32, n_ctx: u32, grammar: Option<CompiledGrammar>, fused: bool) -> Sampler {
        // SAFETY: each sampler created here is handed to the chain, which owns and frees it.
        unsafe {
            let mut cp = sys::llama_sampler_chain_default_params();
            cp.no_perf = true;
            let chain = sys::llama_sampler_chain_init(cp);
            let add = |s: *mut sys::llama_sampler| sys::llama_sampler_chain_add(chain, s);
            // llama.cpp allocates the window up front (4 bytes a token): never more than the
            // context, whatever a request asks (-1 means the context, as in llama-server).
            let ctx = i32::try_from(n_ctx).unwrap_or(i32::MAX);
            let last_n = if p.repeat_last_n < 0 { ctx } else { p.repeat_last_n.min(ctx) };
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
            let top_k = usize::try_from(p.top_k)
                .ok()
                .filter(|&k| fused && p.temperature > 0.0 && !penalties && grammar.is_none() && k > 0 && k <= FUSED_TOP_K_MAX && k < n_vocab.max(0) as usize);
            if p.temperature <= 0.0 {
                add(sys::llama_sampler_init_greedy());
            } else {
                if p.top_k > 0 && top_k.is_none() {
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
                argmax: p.temperature <= 0.0 && !penalties,
                top_k,
                n_vocab: n_vocab.max(0) as usize,
                grammar,
                cur: Vec::new(),
            }
        }
    }

    /// Feeds a token the model did not sample (the prompt) into the penalty history. The
    /// grammar does not see it: it constrains the output only.
    pub(crate) fn accept(&mut self, token: Token) {
        // SAFETY: valid chain.
        unsafe { sys::llama_sampler_accept(self.chain.as_ptr(), token) }
    }

    /// Samples (and accepts) a token from output `idx` of the last decode.
    ///
    /// Fails only under a grammar that allows no token of the vocabulary at this point.
    pub(crate) fn sample(&mut self, ctx: *mut sys::llama_context, idx: i32) -> Result<Token, EngineError> {
        // SAFETY: `ctx` is the live context whose last decode produced output `idx`, and no
        // decode runs while `logits` is used (this thread is the context's only user).
        let Some(logits) = (unsafe { logits(ctx, idx, self.n_vocab) }) else {
            return Err(EngineError::Context(format!("llama.cpp has no logits for output {idx} of the last decode")));
        };
        if let Some(k) = self.top_k {
            return self.sample_top_k(logits, k);
        }
        if self.grammar.is_none() && !self.argmax {
            // SAFETY: `ctx` is the live context whose last decode produced output `idx`.
            return Ok(unsafe { sys::llama_sampler_sample(self.chain.as_ptr(), ctx, idx) });
        }
        self.sample_logits(logits)
    }

    /// The `k` most likely tokens, then the rest of the chain, which picks (and accepts) one:
    /// the same candidates, in the same order, as llama.cpp's top-k sampler hands on.
    fn sample_top_k(&mut self, logits: &[f32], k: usize) -> Result<Token, EngineError> {
        top_k_into(&mut self.cur, logits, k);
        let chain = self.chain.as_ptr();
        let mut arr = sys::llama_token_data_array { data: self.cur.as_mut_ptr(), size: self.cur.len(), selected: -1, sorted: true };
        // SAFETY: valid chain; `arr` describes `cur`, which outlives the call. Samplers may
        // shrink `size` or reorder the entries, so the selection is read through `arr`.
        unsafe { sys::llama_sampler_apply(chain, &mut arr) };
        if arr.selected < 0 || arr.selected as usize >= arr.size {
            return Err(no_candidate());
        }
        // SAFETY: selected < size, and `arr.data` holds `size` entries.
        let token = unsafe { (*arr.data.add(arr.selected as usize)).id };
        // SAFETY: valid chain.
        unsafe { sys::llama_sampler_accept(chain, token) };
        Ok(token)
    }

    /// [`Self::sample`] from a row of logits: the argmax fast path, or a pick under a grammar.
    fn sample_logits(&mut self, logits: &[f32]) -> Result<Token, EngineError> {
        let chain = self.chain.as_ptr();
        let Some(grammar) = self.grammar.as_mut() else {
            // Without a grammar this is only called for plain greedy.
            return Ok(argmax(logits));
        };
        let first = if self.argmax {
            argmax(logits)
        } else {
            pick(&mut self.cur, logits, chain, None).ok_or_else(no_candidate)?
        };
        let token = if grammar.allows(first) {
            first
        } else {
            pick(&mut self.cur, logits, chain, Some(&mut *grammar)).ok_or_else(|| {
                EngineError::InvalidRequest("the grammar allows no token of the model's vocabulary here".into())
            })?
        };
        grammar.accept(token);
        // SAFETY: valid chain.
        unsafe { sys::llama_sampler_accept(chain, token) };
        Ok(token)
    }
}

/// Output `idx`'s logits, one per token of the vocabulary; `None` if llama.cpp has none.
///
/// # Safety
///
/// `ctx` must be a live context whose last decode produced output `idx`, and `n_vocab` its
/// model's vocabulary size. The slice borrows the context's logits buffer: the caller must not
/// decode on, or free, the context while it holds the slice.
pub(crate) unsafe fn logits<'a>(ctx: *mut sys::llama_context, idx: i32, n_vocab: usize) -> Option<&'a [f32]> {
    // SAFETY: see above; a non-null row holds n_vocab floats.
    unsafe {
        let p = sys::llama_get_logits_ith(ctx, idx);
        (!p.is_null()).then(|| std::slice::from_raw_parts(p, n_vocab))
    }
}

/// The largest top-k taken in one pass ([`Sampler::top_k`]); llama.cpp's own sampler beyond.
const FUSED_TOP_K_MAX: usize = 256;

/// The `k` (< `logits.len()`) highest logits as candidates, most likely first (equal ones by
/// token id). One pass: each logit is compared with the lowest kept so far, and only one
/// above it (rarely, once the first are in) replaces it. NaN counts as the lowest.
fn top_k_into(cur: &mut Vec<sys::llama_token_data>, logits: &[f32], k: usize) {
    let value = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    cur.clear();
    cur.extend(logits[..k].iter().enumerate().map(|(id, &v)| sys::llama_token_data { id: id as Token, logit: value(v), p: 0.0 }));
    // The kept entry that goes first: the lowest logit, the highest id among equal ones.
    let lowest = |cur: &[sys::llama_token_data]| {
        let mut at = 0;
        for (i, c) in cur.iter().enumerate() {
            if c.logit < cur[at].logit || (c.logit == cur[at].logit && c.id > cur[at].id) {
                at = i;
            }
        }
        at
    };
    let mut low = lowest(cur);
    let mut floor = cur[low].logit;
    for (i, &v) in logits.iter().enumerate().skip(k) {
        // A later token only displaces one with a strictly lower logit: equal logits keep
        // the lower id.
        if v > floor {
            cur[low] = sys::llama_token_data { id: i as Token, logit: v, p: 0.0 };
            low = lowest(cur);
            floor = cur[low].logit;
        }
    }
    cur.sort_unstable_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
}

/// The most likely token; the first of equal ones, as llama.cpp's greedy sampler.
pub(crate) fn argmax(logits: &[f32]) -> Token {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as Token
}

/// Runs the chain (after the grammar's mask, if given) over all of `logits` without accepting;
/// `None` when it selects nothing or a token the mask ruled out.
fn pick(
    cur: &mut Vec<sys::llama_token_data>,
    logits: &[f32],
    chain: *mut sys::llama_sampler,
    grammar: Option<&mut CompiledGrammar>,
) -> Option<Token> {
    cur.clear();
    cur.extend(logits.iter().enumerate().map(|(id, &logit)| sys::llama_token_data { id: id as Token, logit, p: 0.0 }));
    let mut arr = sys::llama_token_data_array { data: cur.as_mut_ptr(), size: cur.len(), selected: -1, sorted: false };
    if let Some(g) = grammar {
        g.apply(&mut arr);
    }
    // SAFETY: valid chain; `arr` describes `cur`, which outlives the call. Samplers may shrink
    // `size` or reorder the entries, so the selection is read through `arr`.
    unsafe { sys::llama_sampler_apply(chain, &mut arr) };
    if arr.selected < 0 || arr.selected as usize >= arr.size {
        return None;
    }
    // SAFETY: selected < size, and `arr.data` holds `size` entries.
    let chosen = unsafe { *arr.data.add(arr.selected as usize) };
    (chosen.logit != f32::NEG_INFINITY && !chosen.logit.is_nan()).then_some(chosen.id)
}

fn no_candidate() -> EngineError {
    EngineError::Context("the sampler chain selected no token".into())
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: we own the chain, which frees the samplers it holds.
        unsafe { sys::llama_sampler_free(self.chain.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    //! The grammar path against its definition, on the test model's vocabulary and made-up
    //! logits.

    use std::sync::Arc;

    use super::*;
    use crate::grammar::Grammar;
    use crate::model::{test_vocab, Model};

    impl Sampler {
        /// The definition: the grammar masks the whole vocabulary, then the chain picks.
        fn sample_grammar_first(&mut self, logits: &[f32]) -> Token {
            let chain = self.chain.as_ptr();
            let grammar = self.grammar.as_mut().expect("a grammar");
            let token = pick(&mut self.cur, logits, chain, Some(&mut *grammar)).expect("an allowed token");
            grammar.accept(token);
            // SAFETY: valid chain.
            unsafe { sys::llama_sampler_accept(chain, token) };
            token
        }
    }

    fn sampler(model: &Arc<Model>, p: &SamplingParams) -> Sampler {
        let g = CompiledGrammar::new(model, &Grammar::Json).unwrap();
        Sampler::new(p, model.n_vocab(), 4096, Some(g))
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The definition of [`top_k_into`]: every logit sorted, most likely first, equal ones by
    /// id, NaN last.
    fn top_k_sorted(logits: &[f32], k: usize) -> Vec<(Token, f32)> {
        let mut all: Vec<(Token, f32)> = logits.iter().enumerate().map(|(i, &v)| (i as Token, if v.is_nan() { f32::NEG_INFINITY } else { v })).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn one_pass_top_k_keeps_the_k_most_likely_in_order() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut cur = Vec::new();
        for case in 0..200 {
            let n = 50 + rng.below(3000);
            let k = 1 + rng.below(64.min(n - 1));
            // Few distinct values (many ties), or many; some NaN; rising or random order.
            let distinct = if case % 2 == 0 { 7 } else { 100_000 };
            let mut logits: Vec<f32> = (0..n).map(|_| rng.below(distinct) as f32 / 10.0 - 20.0).collect();
            if case % 5 == 0 {
                logits.sort_by(f32::total_cmp);
            }
            if case % 3 == 0 {
                logits[rng.below(n)] = f32::NAN;
            }
            top_k_into(&mut cur, &logits, k);
            let got: Vec<(Token, f32)> = cur.iter().map(|c| (c.id, c.logit)).collect();
            assert_eq!(got, top_k_sorted(&logits, k), "case {case}: n {n}, k {k}");
        }
    }

    #[test]
    fn fused_top_k_samples_as_llama_cpps_chain_does() {
        let n_vocab = 49_152;
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for (top_k, top_p, min_p, temperature) in [(40, 0.95, 0.05, 0.7), (1, 1.0, 0.0, 1.0), (200, 0.9, 0.0, 1.3), (5, 1.0, 0.1, 0.2)] {
            let params = SamplingParams { top_k, top_p, min_p, temperature, seed: Some(1234), ..SamplingParams::default() };
            let mut fused = Sampler::build(&params, n_vocab, 4096, None, true);
            let mut reference = Sampler::build(&params, n_vocab, 4096, None, false);
            assert_eq!(fused.top_k, Some(top_k as usize));
            assert_eq!(reference.top_k, None);
            let mut spread = std::collections::HashSet::new();
            for step in 0..300 {
                // Distinct logits (llama.cpp's heap orders equal ones its own way), peaked
                // enough that several tokens have a chance.
                let mut ranks: Vec<usize> = (0..n_vocab as usize).collect();
                for i in (1..ranks.len()).rev() {
                    ranks.swap(i, rng.below(i + 1));
                }
                let logits: Vec<f32> = ranks.iter().map(|&r| r as f32 / 4096.0).collect();
                let a = fused.sample_top_k(&logits, top_k as usize).unwrap();
                let chain = reference.chain.as_ptr();
                let b = pick(&mut reference.cur, &logits, chain, None).unwrap();
                // SAFETY: valid chain.
                unsafe { sys::llama_sampler_accept(chain, b) };
                assert_eq!(a, b, "step {step}, top_k {top_k}");
                spread.insert(a);
            }
            assert!(top_k == 1 || spread.len() > 20, "samples spread over the candidates: {}", spread.len());
        }
    }

    #[test]
    fn greedy_under_a_grammar_is_the_most_likely_allowed_token() {
        let model = test_vocab();
        let n_vocab = model.n_vocab() as usize;
        for params in [SamplingParams::greedy(), SamplingParams { repeat_penalty: 1.3, ..SamplingParams::greedy() }] {
            let mut fast = sampler(&model, &params);
            let mut reference = sampler(&model, &params);
            assert_eq!(fast.argmax, params.repeat_penalty == 1.0);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let (mut kept, mut repicked) = (0, 0);
            for step in 0..120 {
                let mut logits: Vec<f32> = (0..n_vocab).map(|_| (rng.below(2000) as f32) / 100.0).collect();
                // Every other step the grammar allows the most likely token (the fast path
                // keeps it), sometimes tied with a second allowed one (the lower id wins).
                if step % 2 == 0 {
                    let g = fast.grammar.as_mut().unwrap();
                    let mut allowed = (0..n_vocab as Token).filter(|_| rng.below(50) == 0).filter(|&t| g.allows(t));
                    if let Some(t) = allowed.next() {
                        logits[t as usize] = 100.0;
                        if let Some(u) = allowed.next() {
                            if step % 4 == 0 {
                                logits[u as usize] = 100.0;
                            }
                        }
                    }
                }
                let first = argmax(&logits);
                let a = fast.sample_logits(&logits).unwrap();
                let b = reference.sample_grammar_first(&logits);
                assert_eq!(a, b, "step {step}");
                if a == first { kept += 1 } else { repicked += 1 }
                if model.is_eog(a) {
                    break;
                }
            }
            assert!(kept > 10 && repicked > 10, "both paths ran: kept {kept}, repicked {repicked}");
        }
    }
}
