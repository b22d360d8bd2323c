//! Speculative decoding: drafts for a sequence, and how long they should be.
//!
//! A draft is a guess at the next tokens. The engine decodes the sequence's next token and the
//! draft in one pass, samples at each position in turn exactly as it would have without the
//! draft, and keeps the drafted tokens up to the first one the sampler did not choose. The
//! output is the same as without speculation, token for token and for any sampler: a draft
//! only decides how many positions one pass evaluates. (A draft here is a fixed guess, not a
//! distribution, so "sample, and keep the draft while it agrees" is standard speculative
//! sampling's acceptance rule with a one-point draft distribution.)

use crate::Token;

pub use hearth_protocol::Spec;

/// The shortest match continued, and how far back a match is compared.
const NGRAM_MIN: usize = 2;
const NGRAM_MAX: usize = 64;

/// Prompt lookup: the tokens that followed the earlier places in `history` whose tokens match
/// the most of its last ones (up to [`NGRAM_MAX`], at least [`NGRAM_MIN`]), at most `max` of
/// them, no more than the match is long, and only as far as all such places agree, then what
/// followed the latest where they part. The longest match finds the place being copied where
/// many end alike: the lines of a file's similar functions, where the latest place matching
/// the last few tokens is the function copied just before, not the one being copied. Where places match
/// equally, as in text written after a pattern, the draft stops at the first token where they
/// part: that token is a guess (a function's number), and a draft running past it is wasted
/// whenever the guess is.
pub fn ngram_draft(history: &[Token], max: usize) -> Vec<Token> {
    let len = history.len();
    if max == 0 || len <= NGRAM_MIN {
        return Vec::new();
    }
    let last = len - 1;
    // The longest match's length, where its latest place is followed, and how far what
    // follows the latest agrees with what follows every other place of that length.
    let (mut best, mut from, mut agree) = (0, 0, 0);
    // A place ending before `end`, followed by `history[end]`; latest first.
    for end in (1..len).rev() {
        if history[end - 1] != history[last] {
            continue;
        }
        let mut n = 1;
        while n < NGRAM_MAX && n < end && history[end - 1 - n] == history[last - n] {
            n += 1;
        }
        if n > best {
            (best, from) = (n, end);
            agree = max.min(len - end);
        } else if n == best && agree > 0 {
            agree = (0..agree).take_while(|&i| end + i < len && history[end + i] == history[from + i]).count();
        }
    }
    if best < NGRAM_MIN {
        return Vec::new();
    }
    // Where they part, what followed the latest is the one guess drafted: the tokens after it
    // hang on it. And a match of a few tokens tells a few: a draft is no longer than its match
    // (a number written once before matches there, followed by whatever followed it then).
    let take = (agree + 1).min(best).min(max).min(len - from);
    history[from..from + take].to_vec()
}

/// What a decode step costs: `base + per_token * tokens` seconds, fitted by least squares to
/// the fastest of the last few steps of each size up to [`FIT_MAX_TOKENS`] tokens. One-offs
/// are slower, never faster (the first batch of a new shape allocates, and over ggml RPC asks
/// the workers tensor sizes: the first step of each size is not counted at all), and a
/// lasting change shows within a few steps.
#[derive(Debug, Clone, Default)]
pub struct StepCost {
    /// Per step size (tokens), its latest durations, newest last.
    recent: Vec<std::collections::VecDeque<f64>>,
    /// Per step size, whether its first step has gone by.
    seen: Vec<bool>,
    /// What a step costs beyond the fit when its size differs from the step before (llama.cpp
    /// builds and allocates the graph again; a GPU backend captures it again), an average.
    switch: f64,
    /// The size of the step before.
    last: usize,
    /// The fastest step of up to [`FIT_MAX_TOKENS`] tokens seen (first steps of a size
    /// included: they are slower, never faster), for [`in_tokens`](Self::in_tokens) before
    /// there is a fit.
    fastest: Option<f64>,
    /// The cheapest cost per token beyond the first seen in a first step of its size of
    /// [`PROMPT_MIN_TOKENS`] to [`FIT_MAX_TOKENS`] tokens (a short prompt, mostly), against the
    /// one-token steps: until steps of two sizes recur, what a drafted token costs (see
    /// [`estimate`](Self::estimate)).
    first_per_token: Option<f64>,
    /// Those first steps, `(tokens, secs)`, until one-token steps tell their base.
    firsts: Vec<(usize, f64)>,
}

/// First steps shorter than this say little about the cost per token: a one-off (a graph
/// built, a worker asked about a new shape) weighs on too few tokens.
const PROMPT_MIN_TOKENS: usize = 8;

/// Larger steps (long prompt chunks) say little about the cost of a few more tokens.
pub const FIT_MAX_TOKENS: usize = 64;
/// Steps kept per size.
const KEPT: usize = 5;
/// Before the steps tell: a drafted token costs this share of a one-token step.
const PRIOR_MARGINAL: f64 = 0.25;

impl StepCost {
    /// A step of `tokens` tokens, `outputs` of them with logits, took `secs`.
    ///
    /// Only steps in which every token has its logits are fitted: those are the steps a draft
    /// changes (each drafted token is verified from its logits). A prompt's tokens skip the
    /// output layer, which in a model with a large vocabulary is most of a token's work
    /// (Gemma 3 270M: 168 M of its 268 M weights), so a step holding a prompt says too little
    /// about what a drafted token costs: only a short prompt's first step is kept, for the
    /// rough [`estimate`](Self::estimate) before there is a fit.
    pub fn observe(&mut self, tokens: usize, outputs: usize, secs: f64) {
        let switched = std::mem::replace(&mut self.last, tokens) != tokens;
        if tokens == 0 || tokens > FIT_MAX_TOKENS || !secs.is_finite() {
            return;
        }
        self.fastest = Some(self.fastest.map_or(secs, |f| f.min(secs)));
        if self.recent.len() <= tokens {
            self.recent.resize_with(tokens + 1, Default::default);
            self.seen.resize(tokens + 1, false);
        }
        if outputs < tokens {
            if !std::mem::replace(&mut self.seen[tokens], true) && tokens >= PROMPT_MIN_TOKENS && self.firsts.len() < KEPT {
                self.firsts.push((tokens, secs));
                self.first_from_prompts();
            }
            return;
        }
        if !std::mem::replace(&mut self.seen[tokens], true) {
            if tokens >= PROMPT_MIN_TOKENS && self.firsts.len() < KEPT {
                self.firsts.push((tokens, secs));
            }
            self.first_from_prompts();
            return;
        }
        // (Not from a size's first step: that one also pays one-offs, llama.cpp allocating
        // its graph, ggml RPC asking the workers the sizes of its tensors; counted, they
        // priced every later draft out, and drafts that are not made never measure again.)
        if switched {
            if let Some((base, per_token)) = self.fit() {
                let extra = (secs - base - per_token * tokens as f64).max(0.0);
                self.switch = 0.8 * self.switch + 0.2 * extra;
            }
        }
        let q = &mut self.recent[tokens];
        if q.len() == KEPT {
            q.pop_front();
        }
        q.push_back(secs);
        if tokens == 1 {
            self.first_from_prompts();
        }
    }

    /// Updates [`first_per_token`](Self::first_per_token) from the first steps seen, once a
    /// one-token step (not a first one) tells the base.
    fn first_from_prompts(&mut self) {
        if self.firsts.is_empty() {
            return;
        }
        let Some(one) = self.fastest(1) else { return };
        for (n, secs) in self.firsts.drain(..) {
            let per_token = ((secs - one) / (n - 1) as f64).max(0.0);
            self.first_per_token = Some(self.first_per_token.map_or(per_token, |p| p.min(per_token)));
        }
    }

    /// [`fit`](Self::fit), or before there is one, what the first steps of a short prompt
    /// tell: `(base, per_token)` with the one-token step as base plus one token. A prompt's
    /// step has fewer outputs than a draft's and includes building its graph: the cost per
    /// token it tells is rough, but of the right size for the hardware (a CPU, where each
    /// token costs most of a step, or a GPU or a cluster, where it costs little), where a
    /// fixed prior is right for one and wrong for the other.
    pub fn estimate(&self) -> Option<(f64, f64)> {
        self.fit().or_else(|| {
            let per_token = self.first_per_token?;
            let one = self.fastest(1)?;
            Some(((one - per_token).max(0.0), per_token))
        })
    }

    /// `(base, per_token)` in seconds, once steps of two sizes or more have been seen.
    pub fn fit(&self) -> Option<(f64, f64)> {
        let points: Vec<(f64, f64)> = self
            .recent
            .iter()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(n, q)| (n as f64, q.iter().copied().fold(f64::INFINITY, f64::min)))
            .collect();
        if points.len() < 2 {
            return None;
        }
        let k = points.len() as f64;
        let (sn, st) = points.iter().fold((0.0, 0.0), |(a, b), (n, t)| (a + n, b + t));
        let (mn, mt) = (sn / k, st / k);
        let (cov, var) = points.iter().fold((0.0, 0.0), |(c, v), (n, t)| (c + (n - mn) * (t - mt), v + (n - mn) * (n - mn)));
        let per_token = (cov / var).max(0.0);
        Some(((mt - per_token * mn).max(0.0), per_token))
    }

    /// What one drafted token costs, counted in the tokens a step of `generating` sequences
    /// (one token each) would have produced in that time. One sequence on a GPU: a small
    /// fraction; many sequences, or a CPU: close to one or more, and drafting does not pay.
    pub fn draft_cost(&self, generating: usize) -> f64 {
        let g = generating.max(1) as f64;
        match self.estimate() {
            Some((base, per_token)) if base + per_token * g > 0.0 => g * per_token / (base + per_token * g),
            _ => g * PRIOR_MARGINAL / (1.0 + PRIOR_MARGINAL * (g - 1.0)),
        }
    }

    /// `secs` of other work (a draft model's decode) in the same unit as
    /// [`draft_cost`](Self::draft_cost): the tokens a step of `generating` sequences would have
    /// produced in that time; before there is an [`estimate`](Self::estimate), against the
    /// fastest step seen; `None` before any step.
    pub fn in_tokens(&self, secs: f64, generating: usize) -> Option<f64> {
        let g = generating.max(1) as f64;
        match self.estimate() {
            Some((base, per_token)) if base + per_token * g > 0.0 => Some(g * secs / (base + per_token * g)),
            _ => self.fastest.filter(|&f| f > 0.0).map(|f| g * secs / f),
        }
    }

    /// The fastest recent step of `tokens` tokens (first steps of a size not counted).
    fn fastest(&self, tokens: usize) -> Option<f64> {
        self.recent.get(tokens).and_then(|q| q.iter().copied().reduce(f64::min))
    }

    /// What one more pass costs in a step of `generating` sequences (one token each), in the
    /// same unit as [`draft_cost`](Self::draft_cost): the fastest recent one-token step
    /// against the fastest recent step of as many tokens as sequences. Nothing for one
    /// sequence, whose draft is in its one pass; before both are seen, half the step.
    ///
    /// With a KV cache per sequence, llama.cpp's passes (`split_equal`) take as many tokens
    /// of each sequence, so a step where one sequence drafts is two passes: the sequences'
    /// next tokens, then the draft. A pass reads all the weights: measured with the starter
    /// model at 8 streams, a step of 8 sequences 56 ms, one with a draft of 2 tokens 89 ms.
    pub fn pass_cost(&self, generating: usize) -> f64 {
        if generating <= 1 {
            return 0.0;
        }
        let g = generating as f64;
        match (self.fastest(1), self.fastest(generating)) {
            (Some(one), Some(all)) if all > 0.0 => g * one / all,
            _ => g * 0.5,
        }
    }

    /// What changing the step's size costs, in the same unit: a draft changes it twice (to
    /// the step with the draft and back).
    pub fn switch_cost(&self, generating: usize) -> f64 {
        let g = generating.max(1) as f64;
        match self.fit() {
            Some((base, per_token)) if base + per_token * g > 0.0 => 2.0 * g * self.switch / (base + per_token * g),
            _ => 0.0,
        }
    }
}

/// One sequence's speculation: how likely its drafted tokens are to be confirmed, and so how
/// long a draft is worth its cost.
#[derive(Debug, Clone)]
pub struct SpecState {
    max: usize,
    min: usize,
    /// First tokens of drafts the sampler was asked about (shadow drafts included), and those
    /// it confirmed (decaying counts).
    tested: f32,
    confirmed: f32,
    /// The same for the tokens after the first, of drafts verified (a token is tested up to
    /// and including the first one rejected). A shadow tells only the first token, the
    /// easiest: a model sampling at a temperature follows a copy's first token far more
    /// often than sixteen in a row, and a rate taken from first tokens made long drafts look
    /// sure (measured: Gemma 3 270M looping at temperature 0.7, 8 streams: first tokens
    /// 0.999, drafts 0.82, aggregate 0.87x without drafts).
    tested_next: f32,
    confirmed_next: f32,
    /// While not drafting: the token a draft would have started with, checked against the
    /// token sampled instead (the confirm rate keeps being measured, at no cost).
    shadow: Option<Token>,
    /// Tokens asked of the source and those it gave (decaying counts: a token is asked for
    /// up to and including the first one it did not give): a draft model stops before a
    /// token it is unsure of, often at the first; n-grams at the end of what they copy.
    asked: f32,
    made: f32,
    /// Steps since the last draft, while drafting does not pay (see [`probe`](Self::probe)).
    skipped: u32,
    pub drafted: u32,
    pub accepted: u32,
}

const DECAY: f32 = 0.9;
/// See [`SpecState::sampled`].
const NEXT_FADE: f32 = 0.98;
/// See [`SpecState::next_rate`].
const NEXT_PRIOR: f32 = 4.0;
/// See [`SpecState::want`].
const COST_MARGIN: f64 = 1.1;
/// While drafts do not pay, one in this many steps still drafts a token (see
/// [`SpecState::probe`]).
pub const PROBE_EVERY: u32 = 32;
/// The most probes may cost, as a share of the steps they are spread over.
const PROBE_SHARE: f64 = 0.05;

impl SpecState {
    /// A sequence's state, starting from `prior`, the confirm rate of earlier sequences (a
    /// workload tends to go on as it was), worth two tested tokens.
    pub fn new(max: u32, min: u32, prior: f32) -> SpecState {
        let prior = prior.clamp(0.05, 0.95);
        SpecState {
            max: max as usize,
            min: min as usize,
            tested: 2.0,
            confirmed: 2.0 * prior,
            tested_next: 0.0,
            confirmed_next: 0.0,
            shadow: None,
            asked: 2.0,
            made: 2.0,
            skipped: 0,
            drafted: 0,
            accepted: 0,
        }
    }

    /// The chance that the source gives the next token of a draft asked for (the first, or
    /// one more).
    pub fn made_rate(&self) -> f32 {
        self.made / self.asked
    }

    /// The chance that a draft's first token is confirmed.
    pub fn confirm_rate(&self) -> f32 {
        self.confirmed / self.tested
    }

    /// The chance that a drafted token after the first is confirmed, its predecessors being
    /// confirmed: what verified drafts tell, weighed with the first tokens' rate as
    /// [`NEXT_PRIOR`] more tokens (all there is before a draft of two is verified), so that
    /// one early miss does not halve it.
    pub fn next_rate(&self) -> f32 {
        (self.confirmed_next + NEXT_PRIOR * self.confirm_rate()) / (self.tested_next + NEXT_PRIOR)
    }

    /// How many tokens to draft this step, at most `room`, when one drafted token costs
    /// `cost` in the step (see [`StepCost::draft_cost`]), the source's making of each token
    /// after the first costs `decode` (a draft model's decode of the one before; nothing for
    /// n-grams), a draft that changes the step's size `switch`, and asking for a draft at all
    /// `ask` (a draft model catching up with the tokens it has not seen, which gives the
    /// first token). The source gives each next token with chance c
    /// ([`made_rate`](Self::made_rate)), and the k-th token of a draft is confirmed with
    /// chance p1 pn^(k-1) (the first token's rate, [`confirm_rate`](Self::confirm_rate), then
    /// [`next_rate`](Self::next_rate)), written p^k below for short, so a draft asked of k
    /// tokens adds (cp) + (cp)^2 + ... + (cp)^k tokens for
    /// c + ... + c^k tokens in the step and c + ... + c^(k-1) decodes: of the k of 1, 2, 4, 8,
    /// 16 (powers of two: a few step sizes recur, and llama.cpp's graphs for them, and ggml
    /// RPC's answers about their tensors, are reused), the one that makes the step of
    /// `generating` sequences give the most tokens per second, if any does: the step gives
    /// g + gain tokens in the time of g + cost (costs count in the tokens the step gives
    /// without drafts), so the k with the highest (g + gain) / (g + cost). (The most tokens
    /// gained per step, gain - cost, drafts longer than pays: a token that a long draft adds
    /// at a confirm chance of 0.3 and a cost of 0.25 gains, yet where drafts make a step give
    /// twice as many tokens, its time was worth 0.5.) While not drafting, shadow drafts
    /// ([`shadow`](Self::shadow)) or probes ([`probe`](Self::probe)) keep p up to date.
    pub fn want(&mut self, room: usize, generating: usize, cost: f64, decode: f64, switch: f64, ask: f64) -> usize {
        let p1 = f64::from(self.confirm_rate()).clamp(1e-3, 0.999);
        let pn = f64::from(self.next_rate()).clamp(1e-3, 0.999);
        let c = f64::from(self.made_rate()).clamp(1e-3, 1.0);
        let most = self.max.min(room);
        let g = generating.max(1) as f64;
        let (mut best, mut k_best) = (1.0, 0);
        let (mut gain, mut tokens, mut decodes) = (0.0, 0.0, 0.0);
        for k in 1..=most {
            let exists = c.powi(k as i32);
            gain += exists * p1 * pn.powi(k as i32 - 1);
            tokens += exists;
            if k > 1 {
                decodes += c.powi(k as i32 - 1);
            }
            if k.is_power_of_two() {
                // Costs are estimates: a draft must be worth a little more than its estimate,
                // so that one that would win a few percent at best (a CPU, where a token in a
                // step costs nearly a step) is not a bet that loses as often.
                let value = (g + gain) / (g + COST_MARGIN * (cost * tokens + decode * decodes + switch * c + ask));
                if value > best {
                    (best, k_best) = (value, k);
                }
            }
        }
        if k_best == 0 {
            self.skipped += 1;
            return 0;
        }
        self.skipped = 0;
        k_best.max(self.min).min(room)
    }

    /// Whether to draft one token although it does not pay, to keep measuring how good the
    /// drafts are where that costs something (a draft model): at most once in
    /// [`PROBE_EVERY`] steps, and only while a probe costing `cost` (in the unit of
    /// [`want`](Self::want): a draft model's catch-up, its decode and the token's place in
    /// the step) stays within [`PROBE_SHARE`] of the steps since the last draft.
    pub fn probe(&mut self, room: usize, cost: f64) -> usize {
        if room == 0 || self.skipped < PROBE_EVERY || cost > PROBE_SHARE * f64::from(self.skipped) {
            return 0;
        }
        self.skipped = 0;
        1.max(self.min).min(room)
    }

    /// After asking the source for a draft of `want` tokens: it gave `got`.
    pub fn asked(&mut self, want: usize, got: usize) {
        if want == 0 {
            return;
        }
        let asked = got + usize::from(got < want);
        self.asked = self.asked * DECAY + asked as f32;
        self.made = self.made * DECAY + got as f32;
    }

    /// Remembers the first token of a draft that was not worth verifying.
    pub fn shadow(&mut self, first: Option<Token>) {
        self.shadow = first;
    }

    /// The token sampled after a step without a draft: counts whether the shadow draft would
    /// have been confirmed.
    pub fn sampled(&mut self, token: Token) {
        if let Some(guess) = self.shadow.take() {
            self.adapt(1, usize::from(guess == token));
            // What drafts told of the tokens after the first fades while none are verified,
            // toward the first tokens' rate: a sequence whose drafts did not pay tries again
            // after a few hundred steps (its text may have come to a part it copies).
            self.tested_next *= NEXT_FADE;
            self.confirmed_next *= NEXT_FADE;
        }
    }

    /// Whether a draft of `n` tokens is worth verifying.
    pub fn worth(&self, n: usize) -> bool {
        n > 0 && n >= self.min
    }

    /// After a verification: `accepted` of `drafted` tokens were the model's own choice.
    /// (The engine counts [`drafted`](Self::drafted) and [`accepted`](Self::accepted) itself,
    /// as it goes, so that a sequence ending mid-draft reports them.)
    pub fn adapt(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.tested = self.tested * DECAY + 1.0;
        self.confirmed = self.confirmed * DECAY + f32::from(u8::from(accepted > 0));
        if accepted > 0 && drafted > 1 {
            let tested = (accepted - 1 + usize::from(accepted < drafted)) as f32;
            self.tested_next = self.tested_next * DECAY + tested;
            self.confirmed_next = self.confirmed_next * DECAY + (accepted - 1) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_match_is_continued_the_latest_of_equals() {
        // "1 2 3 4 9 ... 1 2 3 4 7 8 ... 2 3 4" -> the latest "2 3 4" is followed by 7 (a
        // guess: the other by 9).
        let h = [1, 2, 3, 4, 9, 5, 1, 2, 3, 4, 7, 8, 6, 2, 3, 4];
        assert_eq!(ngram_draft(&h, 2), vec![7]);
        // "... 6 2 3 4" matches once, at length 3: its continuation, as long as the match.
        let h = [1, 2, 3, 4, 9, 5, 6, 2, 3, 4];
        assert_eq!(ngram_draft(&h, 10), vec![9, 5, 6]);
        assert_eq!(ngram_draft(&h, 2), vec![9, 5]);
        assert_eq!(ngram_draft(&h, 0), Vec::<Token>::new());
        // No repeated pair: nothing.
        assert!(ngram_draft(&[1, 2, 3, 4, 5], 4).is_empty());
        // A single repeated token is not enough.
        assert!(ngram_draft(&[1, 5, 2, 5], 4).is_empty());
        assert!(ngram_draft(&[], 4).is_empty());
        // A run of one token continues itself.
        assert_eq!(ngram_draft(&[7, 7, 7, 7], 3), vec![7]);
    }

    #[test]
    fn where_equal_matches_part_the_draft_stops() {
        // Two "functions" alike but for their number, then a third being written: every
        // place matching "2 3" is followed by 4, then by its own number: the latest's is the
        // draft's last token, a guess.
        let func = |n: Token| vec![1, n, 2, 3, 4, n, 5];
        let h: Vec<Token> = [func(10), func(20), vec![1, 30, 2, 3]].concat();
        assert_eq!(ngram_draft(&h, 4), vec![4, 20]);
        assert_eq!(ngram_draft(&h, 1), vec![4]);
        // A single place, or places agreeing throughout, are followed as far as asked.
        let h: Vec<Token> = [func(10), func(10), vec![1, 10, 2, 3]].concat();
        assert_eq!(ngram_draft(&h, 4), vec![4, 10, 5, 1]);
    }

    #[test]
    fn a_copy_continues_from_the_place_copied_not_the_latest_alike() {
        // A "file" of three functions alike but for their number (100, 200, 300) at both ends
        // of 14 tokens, then its copy up to the end of the third function's body: the copy of
        // the second function ends with the same 14 tokens as what is being copied (the latest
        // place matching any 12), but only the file's third function matches further back.
        let func = |n: Token| [&[1, n][..], &(2..16).collect::<Vec<Token>>(), &[n, 16]].concat();
        let file: Vec<Token> = [func(100), func(200), func(300)].concat();
        let mut h = file.clone();
        h.push(99);
        h.extend_from_slice(&file[..2 * 18 + 16]);
        assert_eq!(&h[h.len() - 3..], &[13, 14, 15]);
        assert_eq!(ngram_draft(&h, 2), vec![300, 16]);
    }

    #[test]
    fn the_draft_length_weighs_the_confirm_rate_against_the_cost() {
        let mut s = SpecState::new(16, 0, 0.5);
        assert!((s.confirm_rate() - 0.5).abs() < 1e-6);
        // p = 0.5: worth one token at a cost of 0.2 (1.5 tokens in the time of 1.22 steps, with
        // the margin; two: 1.75 in 1.44), none at 0.6; drafts are powers of two.
        assert_eq!(s.want(100, 1, 0.2, 0.0, 0.0, 0.0), 1);
        // Surer drafts: longer ones. At p = 0.9 eight tokens give 6.1 in the time of 2.8 steps,
        // sixteen 8.3 in 4.5: eight, where the most tokens gained per step (3.8 against 3.4)
        // would have been sixteen. A step of many sequences gives many tokens anyway: there
        // the tokens gained count.
        assert_eq!(SpecState::new(16, 0, 0.9).want(100, 1, 0.2, 0.0, 0.0, 0.0), 8);
        assert_eq!(SpecState::new(16, 0, 0.9).want(100, 32, 0.2, 0.0, 0.0, 0.0), 16);
        assert_eq!(s.want(100, 1, 0.6, 0.0, 0.0, 0.0), 0);
        assert_eq!(s.want(1, 1, 0.01, 0.0, 0.0, 0.0), 1, "bounded by the room in the batch");
        // A costly change of the step's size: no draft of two at p = 0.5 (gain 0.75, cost 0.4 + 0.5).
        assert_eq!(s.want(100, 1, 0.2, 0.0, 0.5, 0.0), 0);
        // Drafts confirmed whole: longer drafts.
        for _ in 0..20 {
            s.adapt(8, 8);
        }
        assert!(s.confirm_rate() > 0.95);
        assert!(s.want(100, 1, 0.2, 0.0, 0.0, 0.0) >= 16);
        // Shadow drafts are counted like drafts of one token.
        let mut t = SpecState::new(16, 0, 0.5);
        for _ in 0..30 {
            t.shadow(Some(7));
            t.sampled(7);
        }
        assert!(t.confirm_rate() > 0.9);
        t.sampled(8);
        assert!(t.confirm_rate() > 0.9, "no shadow, nothing counted");
        // Drafts rejected at once: none.
        for _ in 0..40 {
            s.adapt(4, 0);
        }
        assert!(s.confirm_rate() < 0.1);
        assert_eq!(s.want(100, 1, 0.2, 0.0, 0.0, 0.0), 0);
        assert!(!SpecState::new(8, 3, 0.5).worth(2) && SpecState::new(8, 3, 0.5).worth(3) && !s.worth(0));
    }

    #[test]
    fn shadows_tell_the_first_token_and_verified_drafts_the_rest() {
        // A model that follows a copy's first token, but seldom sixteen in a row (it samples
        // at a temperature).
        let mut s = SpecState::new(16, 0, 0.5);
        for _ in 0..50 {
            s.shadow(Some(7));
            s.sampled(7);
        }
        assert!(s.confirm_rate() > 0.99);
        // Before a draft is verified, the later tokens are taken to be as sure as the first:
        // a draft of 16 at 0.6 a token and a costly change of the step's size.
        assert_eq!(s.want(100, 1, 0.6, 0.0, 4.0, 0.0), 16);
        // Drafts of 16 verified: the first token confirmed, then 4 more (0.8 each; 0.82 with
        // the prior).
        for _ in 0..10 {
            s.adapt(16, 5);
        }
        assert!(s.confirm_rate() > 0.99, "the first tokens were confirmed");
        assert!((s.next_rate() - 0.82).abs() < 0.02, "{}", s.next_rate());
        assert_eq!(s.want(100, 1, 0.6, 0.0, 4.0, 0.0), 0);
        // Shadows alone do not bring long drafts back at once; what drafts told fades over a
        // few hundred steps, and then they are tried again.
        for _ in 0..20 {
            s.shadow(Some(7));
            s.sampled(7);
        }
        assert_eq!(s.want(100, 1, 0.6, 0.0, 4.0, 0.0), 0);
        for _ in 0..300 {
            s.shadow(Some(7));
            s.sampled(7);
        }
        assert!(s.next_rate() > 0.95, "{}", s.next_rate());
        for _ in 0..300 {
            s.shadow(Some(7));
            s.sampled(7);
        }
        assert_eq!(s.want(100, 1, 0.6, 0.0, 4.0, 0.0), 16);
    }

    #[test]
    fn a_draft_model_that_costs_more_than_it_saves_is_only_probed() {
        // Drafts confirmed whole, n-gram costs: long drafts.
        let mut s = SpecState::new(16, 0, 0.9);
        for _ in 0..20 {
            s.adapt(8, 8);
        }
        assert_eq!(s.want(100, 1, 0.2, 0.0, 0.0, 0.0), 16);
        // A draft model as slow as the target (each drafted token costs 0.2 in the step and a
        // decode of 1.0): none, and one token every PROBE_EVERY steps to keep measuring.
        let mut probes = 0;
        for _ in 0..3 * PROBE_EVERY {
            assert_eq!(s.want(100, 1, 0.2, 1.0, 0.0, 1.0), 0);
            probes += s.probe(100, 1.2);
        }
        assert_eq!(probes, 3);
        // Not where a probe costs more than a twentieth of the steps it is spread over (a
        // draft model catching up with everything generated since it was last asked).
        for _ in 0..3 * PROBE_EVERY {
            assert_eq!(s.want(100, 1, 0.2, 1.0, 0.0, 5.0), 0);
            assert_eq!(s.probe(100, 6.2), 0);
        }
        // A draft model that comes back empty most of the time (it is unsure at the first
        // token): asking it costs its catch-up each time, and a draft is worth less.
        let mut t = SpecState::new(16, 0, 0.6);
        assert_eq!(t.want(100, 1, 0.1, 0.2, 0.0, 0.2), 1);
        for _ in 0..30 {
            t.asked(2, 0);
        }
        t.asked(1, 1);
        assert!(t.made_rate() < 0.15);
        assert_eq!(t.want(100, 1, 0.1, 0.2, 0.0, 0.2), 0);
        // One that gives nothing or one token: drafts asked long come back short, so they are
        // worth what short drafts are (the rates and costs of the starter model drafting for
        // its 8-expert copy in bench/spec.sh's stories: every token it gave was confirmed,
        // yet a draft of 16 priced as if it came whole made generation 6 % slower).
        let mut u = SpecState::new(16, 0, 0.99);
        for _ in 0..30 {
            u.asked(16, 0);
            u.asked(16, 1);
            u.adapt(1, 1);
        }
        assert!((u.made_rate() - 1.0 / 3.0).abs() < 0.05, "{}", u.made_rate());
        assert_eq!(u.want(100, 1, 0.34, 0.22, 0.05, 0.22), 0);
        let mut v = SpecState::new(16, 0, 0.99);
        assert_eq!(v.want(100, 1, 0.34, 0.22, 0.05, 0.22), 4, "a source that gives what is asked: drafts");
        assert_eq!(t.probe(0, 0.0), 0, "no room, no probe");
    }

    #[test]
    fn a_draft_among_several_sequences_costs_a_pass() {
        let mut c = StepCost::default();
        // Before the steps tell: half the step.
        assert_eq!(c.pass_cost(8), 4.0);
        // One sequence: its draft is in its one pass.
        assert_eq!(c.pass_cost(1), 0.0);
        // One-token steps of 28 ms, steps of 8 sequences of 56 ms (first steps of a size
        // are not counted): one more pass costs what 8 x 28 / 56 = 4 tokens of the step do.
        for _ in 0..3 {
            c.observe(1, 1, 0.028);
            c.observe(8, 8, 0.056);
        }
        assert!((c.pass_cost(8) - 4.0).abs() < 1e-9, "{}", c.pass_cost(8));
        // At 4 sequences, before a step of 4 was seen: half the step.
        assert_eq!(c.pass_cost(4), 2.0);
        // Drafting then pays only where it gains more than a pass: at 8 sequences a draft of
        // 2 confirmed 9 times in 10 does not; with one sequence it does.
        let mut s = SpecState::new(16, 0, 0.9);
        let (cost, switch) = (c.draft_cost(8), c.switch_cost(8));
        assert_eq!(s.want(16, 8, cost, 0.0, switch, c.pass_cost(8)), 0);
        assert!(s.want(16, 1, c.draft_cost(1), 0.0, c.switch_cost(1), c.pass_cost(1)) > 0);
    }

    #[test]
    fn a_sizes_first_step_does_not_price_a_change_of_size() {
        // Steps of 1 and 2 tokens alternating, 10 ms + 5 ms a token: changes of size cost
        // nothing beyond the fit.
        let mut c = StepCost::default();
        for _ in 0..4 {
            c.observe(1, 1, 0.015);
            c.observe(2, 2, 0.020);
        }
        assert!(c.switch_cost(1).abs() < 1e-9, "{}", c.switch_cost(1));
        // A step of a new size, with 100 ms of one-offs (over ggml RPC, the workers asked the
        // sizes of its tensors): not counted.
        c.observe(3, 3, 0.125);
        assert!(c.switch_cost(1).abs() < 1e-9, "{}", c.switch_cost(1));
        // The same size again as slow: a lasting cost of changing size, counted.
        c.observe(1, 1, 0.015);
        c.observe(3, 3, 0.125);
        assert!(c.switch_cost(1) > 0.1, "{}", c.switch_cost(1));
    }

    #[test]
    fn before_a_fit_a_short_prompts_first_step_tells_the_cost_of_a_token() {
        // A CPU: a 30-token prompt took 10 ms + 29 x 8 ms, a one-token step 10 ms.
        let mut c = StepCost::default();
        c.observe(30, 1, 0.010 + 29.0 * 0.008);
        assert!((c.draft_cost(1) - PRIOR_MARGINAL).abs() < 1e-9, "no one-token step yet");
        c.observe(1, 1, 0.012); // the first one-token step: not counted
        c.observe(1, 1, 0.010);
        assert!(c.fit().is_none());
        let (base, per_token) = c.estimate().unwrap();
        assert!((per_token - 0.008).abs() < 1e-6 && (base - 0.002).abs() < 1e-6, "{base} {per_token}");
        assert!((c.draft_cost(1) - 0.8).abs() < 1e-6, "{}", c.draft_cost(1));
        // Other work is weighed against the one-token step.
        assert!((c.in_tokens(0.005, 1).unwrap() - 0.5).abs() < 1e-6);
        // A GPU or a cluster: the prompt cost about one step; a drafted token costs little.
        let mut c = StepCost::default();
        for (n, secs) in [(1, 0.020), (1, 0.020), (3, 0.5), (24, 0.023)] {
            // a 3-token first step (a one-off over 2 tokens) is not believed; the 24-token
            // step is a prompt
            c.observe(n, if n == 24 { 1 } else { n }, secs);
        }
        assert!(c.draft_cost(1) < 0.01, "{}", c.draft_cost(1));
        // Once steps of two sizes recur, the fit decides.
        let mut c = StepCost::default();
        c.observe(30, 1, 0.010 + 29.0 * 0.008);
        for n in [1, 1, 2, 2, 1, 2] {
            c.observe(n, n, 0.010 + (n - 1) as f64 * 0.004);
        }
        assert!((c.draft_cost(1) - 0.4).abs() < 1e-6, "{}", c.draft_cost(1));
    }

    #[test]
    fn steps_holding_a_prompt_do_not_make_drafted_tokens_look_cheap() {
        // A large vocabulary: a token with logits costs 8 ms, a prompt's token 2 ms.
        let mut c = StepCost::default();
        for _ in 0..KEPT + 1 {
            for n in [1, 9] {
                c.observe(n, n, 0.010 + (n - 1) as f64 * 0.008);
                // Eight sequences' next tokens and a short prompt's last chunk (one output
                // each): cheaper steps of the same sizes.
                c.observe(n + 8, 9, 0.010 + 8.0 * 0.008 + n as f64 * 0.002);
                c.observe(n, 1, 0.010 + (n - 1) as f64 * 0.002);
            }
        }
        let (base, per_token) = c.fit().unwrap();
        assert!((per_token - 0.008).abs() < 1e-6 && (base - 0.002).abs() < 1e-6, "{base} {per_token}");
    }

    #[test]
    fn the_step_cost_is_fitted_from_steps_of_several_sizes() {
        let mut c = StepCost::default();
        assert!(c.fit().is_none());
        assert!((c.draft_cost(1) - PRIOR_MARGINAL).abs() < 1e-9);
        assert!(c.in_tokens(0.01, 1).is_none());
        for _ in 0..10 {
            c.observe(1, 1, 0.010);
        }
        // Before a fit, other work is weighed against the fastest step.
        assert!((c.in_tokens(0.005, 1).unwrap() - 0.5).abs() < 1e-9);
        assert!(c.fit().is_none(), "one size cannot tell base from per-token cost");
        for n in [5, 9, 3, 17, 1] {
            c.observe(n, n, 1.0); // the first of each size: not counted
            c.observe(n, n, 0.007 + 0.003 * n as f64);
        }
        c.observe(512, 1, 9.0); // a prompt chunk: not fitted
        c.observe(5, 5, 0.5); // a one-off: the fastest of the recent steps leaves it out
        let (base, per_token) = c.fit().unwrap();
        assert!((per_token - 0.003).abs() < 0.0005 && (base - 0.007).abs() < 0.002, "{base} {per_token}");
        // One sequence: a drafted token costs 0.3 of a step; eight: 8 * 0.003 / 0.031.
        assert!((c.draft_cost(1) - 0.3).abs() < 0.05);
        assert!(c.draft_cost(8) > 0.7);
        // Slower steps that go on (a link with latency) are believed.
        for _ in 0..KEPT {
            for n in [1, 3, 5, 9, 17] {
                c.observe(n, n, 0.107 + 0.003 * n as f64);
            }
        }
        let (base, per_token) = c.fit().unwrap();
        assert!((base - 0.107).abs() < 0.002 && (per_token - 0.003).abs() < 0.0005, "{base} {per_token}");
        assert!(c.draft_cost(1) < 0.05, "{}", c.draft_cost(1));
        // A size change that costs nothing, then one that costs 20 ms.
        let mut c = StepCost::default();
        for _ in 0..KEPT + 1 {
            for n in [1, 4] {
                c.observe(n, n, 0.010 + 0.003 * n as f64);
                c.observe(n, n, 0.010 + 0.003 * n as f64);
            }
        }
        assert!(c.switch_cost(1) < 0.01, "{}", c.switch_cost(1));
        for _ in 0..10 {
            for n in [1, 4] {
                c.observe(n, n, 0.010 + 0.003 * n as f64 + 0.020);
                c.observe(n, n, 0.010 + 0.003 * n as f64);
            }
        }
        // 2 changes x 20 ms against a 13 ms step: about 3 tokens' worth.
        assert!((c.switch_cost(1) - 3.0).abs() < 0.5, "{}", c.switch_cost(1));
        let (base, per_token) = c.fit().unwrap();
        assert!((base - 0.010).abs() < 0.001 && (per_token - 0.003).abs() < 0.0005, "slower steps do not move the fit: {base} {per_token}");
    }
}
