//! Log-probabilities of generated tokens (OpenAI's `logprobs`/`top_logprobs`, Ollama's
//! `logprobs`/`top_logprobs`).
//!
//! They are the model's own distribution: a log-softmax over the raw logits of the output
//! position, before any sampling transform (penalties, top-k/top-p/min-p, temperature, the
//! grammar). That is what llama.cpp's server reports by default (its `n_probs`, without
//! `post_sampling_probs`: "a simple softmax of the logits without considering any other
//! sampler settings"), and what OpenAI documents for `logprobs`. So the chosen token of a
//! sampled or grammar-constrained generation need not be the most likely one, and its
//! log-probability may be very low.

use crate::Token;

/// The most alternatives a request may ask for per token (OpenAI's and Ollama's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// One token and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub id: Token,
    /// The token's text, special tokens by name (`<|im_end|>`). Lossy where the token is part
    /// of a multi-byte character: [`Self::bytes`] has the exact bytes.
    pub text: String,
    /// The token's bytes (OpenAI's and Ollama's `bytes`).
    pub bytes: Vec<u8>,
    /// Natural logarithm of the token's probability; at most 0.
    pub logprob: f32,
}

/// The log-probabilities of one generated token, in [`crate::Event::Token`] when the request
/// asked for them ([`crate::GenerateRequest::logprobs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The token that was generated.
    pub chosen: TokenLogprob,
    /// The `n` most likely tokens at this position, most likely first (equal ones by id); the
    /// chosen token is among them only if it is that likely. Empty for `n = 0`.
    pub top: Vec<TokenLogprob>,
}

/// Log-softmax of `logits` (one output row, indexed by token id): the log-probability of
/// `chosen` and the `n` most likely `(token, logprob)`, most likely first, equal ones by id.
/// NaN logits count as impossible.
pub(crate) fn log_softmax_top(logits: &[f32], chosen: Token, n: usize) -> (f32, Vec<(Token, f32)>) {
    let max = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    // log(sum(exp(l))) = max + log(sum(exp(l - max))), summed in f64.
    let lse = if max.is_finite() {
        let sum: f64 = logits.iter().filter(|v| !v.is_nan()).map(|&v| f64::from((v - max).exp())).sum();
        f64::from(max) + sum.ln()
    } else {
        f64::from(max)
    };
    let logprob = |v: f32| -> f32 {
        if v.is_nan() || v == f32::NEG_INFINITY || !lse.is_finite() {
            f32::NEG_INFINITY
        } else {
            (f64::from(v) - lse) as f32
        }
    };
    // The n largest, kept sorted in a buffer of n: one pass, and almost every logit is
    // rejected by a single comparison with the smallest kept.
    let mut top: Vec<(Token, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (id, &v) in logits.iter().enumerate() {
            if v.is_nan() || (top.len() == n && v <= top[n - 1].1) {
                continue;
            }
            // After the equal ones already kept: those have smaller ids.
            let at = top.partition_point(|&(_, kept)| kept >= v);
            top.insert(at, (id as Token, v));
            top.truncate(n);
        }
    }
    let chosen_lp = logits.get(chosen as usize).map_or(f32::NEG_INFINITY, |&v| logprob(v));
    (chosen_lp, top.into_iter().map(|(id, v)| (id, logprob(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGITS: [f32; 8] = [1.0, -2.0, 3.5, 0.0, 3.5, -7.25, 2.0, 0.5];

    #[test]
    fn probabilities_of_the_whole_distribution_sum_to_one() {
        let (_, all) = log_softmax_top(&LOGITS, 0, LOGITS.len());
        assert_eq!(all.len(), LOGITS.len());
        let sum: f64 = all.iter().map(|&(_, lp)| f64::from(lp).exp()).sum();
        assert!((sum - 1.0).abs() < 1e-6, "sum {sum}");
        assert!(all.iter().all(|&(_, lp)| lp <= 0.0));
    }

    #[test]
    fn matches_a_direct_softmax() {
        let z: f64 = LOGITS.iter().map(|&l| f64::from(l).exp()).sum();
        for (t, &l) in LOGITS.iter().enumerate() {
            let (lp, _) = log_softmax_top(&LOGITS, t as Token, 0);
            let expected = (f64::from(l).exp() / z).ln();
            assert!((f64::from(lp) - expected).abs() < 1e-5, "token {t}: {lp} vs {expected}");
        }
    }

    #[test]
    fn top_n_is_sorted_descending_with_ties_by_id() {
        let (chosen, top) = log_softmax_top(&LOGITS, 2, 4);
        let ids: Vec<Token> = top.iter().map(|&(id, _)| id).collect();
        assert_eq!(ids, [2, 4, 6, 0]);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(top[0].1, top[1].1);
        // The argmax's logprob is the largest there is.
        assert_eq!(chosen, top[0].1);
    }

    #[test]
    fn n_zero_gives_only_the_chosen_token() {
        let (chosen, top) = log_softmax_top(&LOGITS, 5, 0);
        assert!(top.is_empty());
        assert!(chosen < -10.0 && chosen.is_finite(), "{chosen}");
    }

    #[test]
    fn n_larger_than_the_vocabulary_gives_every_token() {
        let (_, top) = log_softmax_top(&LOGITS, 0, 100);
        assert_eq!(top.len(), LOGITS.len());
        assert_eq!(top.last().unwrap().0, 5);
    }

    #[test]
    fn masked_and_nan_logits_are_impossible() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NAN, 0.0];
        let (lp0, top) = log_softmax_top(&logits, 0, 4);
        assert_eq!(lp0, f32::NEG_INFINITY);
        assert_eq!(top.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [1, 3, 0]);
        assert!((top[0].1 - 0.5f32.ln()).abs() < 1e-6);
        let (lp, _) = log_softmax_top(&logits, 2, 0);
        assert_eq!(lp, f32::NEG_INFINITY);
        let all_masked = [f32::NEG_INFINITY; 3];
        assert_eq!(log_softmax_top(&all_masked, 1, 0).0, f32::NEG_INFINITY);
    }
}
