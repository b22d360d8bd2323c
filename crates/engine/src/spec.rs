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

/// The longest and shortest n-grams looked up, longest first.
const NGRAM_MAX: usize = 4;
const NGRAM_MIN: usize = 2;

/// Prompt lookup: the tokens that followed the latest earlier occurrence of the last `n`
/// tokens of `history` (n from [`NGRAM_MAX`] down to [`NGRAM_MIN`]), at most `max` of them.
pub fn ngram_draft(history: &[Token], max: usize) -> Vec<Token> {
    if max == 0 {
        return Vec::new();
    }
    for n in (NGRAM_MIN..=NGRAM_MAX).rev() {
        if history.len() <= n {
            continue;
        }
        let tail = &history[history.len() - n..];
        // Latest occurrence first, the tail itself excluded; it must be followed by something.
        for start in (0..history.len() - n).rev() {
            if &history[start..start + n] == tail {
                let from = start + n;
                let end = (from + max).min(history.len());
                return history[from..end].to_vec();
            }
        }
    }
    Vec::new()
}

/// One sequence's speculation: the draft length it is at, adapted to what the model confirms,
/// and a pause when drafts keep failing (a pass with drafts costs more than one without).
#[derive(Debug, Clone)]
pub struct SpecState {
    /// Tokens to draft next time.
    len: usize,
    max: usize,
    min: usize,
    /// Of the recent drafts: an exponential average of the share confirmed.
    rate: f32,
    /// Steps left without drafting.
    paused: u32,
    pub drafted: u32,
    pub accepted: u32,
}

/// Below this share of drafted tokens confirmed, a sequence stops drafting for a while.
const POOR_RATE: f32 = 0.15;
/// How long it stops, in steps.
const PAUSE_STEPS: u32 = 32;

impl SpecState {
    pub fn new(max: u32, min: u32) -> SpecState {
        let max = max as usize;
        SpecState { len: max, max, min: min as usize, rate: 0.5, paused: 0, drafted: 0, accepted: 0 }
    }

    /// How many tokens to draft this step, at most `room`; 0 while paused.
    pub fn want(&mut self, room: usize) -> usize {
        if self.paused > 0 {
            self.paused -= 1;
            return 0;
        }
        self.len.min(room)
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
        self.rate = 0.7 * self.rate + 0.3 * (accepted as f32 / drafted as f32);
        self.len = if accepted == drafted { (self.len + 2).min(self.max) } else { self.len.saturating_sub(1).max(1) };
        if self.rate < POOR_RATE {
            self.paused = PAUSE_STEPS;
            self.rate = 0.5;
            self.len = self.min.max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_longest_match_is_continued() {
        // "1 2 3 4 9 ... 1 2 3 4 7 8 ... 2 3 4" -> the latest "2 3 4" is followed by 7 8.
        let h = [1, 2, 3, 4, 9, 5, 1, 2, 3, 4, 7, 8, 6, 2, 3, 4];
        assert_eq!(ngram_draft(&h, 2), vec![7, 8]);
        assert_eq!(ngram_draft(&h, 10), vec![7, 8, 6, 2, 3, 4]);
        assert_eq!(ngram_draft(&h, 0), Vec::<Token>::new());
        // No repeated pair: nothing.
        assert!(ngram_draft(&[1, 2, 3, 4, 5], 4).is_empty());
        // A single repeated token is not enough.
        assert!(ngram_draft(&[1, 5, 2, 5], 4).is_empty());
        assert!(ngram_draft(&[], 4).is_empty());
    }

    #[test]
    fn the_draft_length_follows_acceptance_and_pauses_when_poor() {
        let mut s = SpecState::new(8, 0);
        assert_eq!(s.want(100), 8);
        assert_eq!(s.want(3), 3, "bounded by the room in the batch");
        s.adapt(8, 2);
        assert_eq!(s.want(100), 7);
        for _ in 0..10 {
            s.adapt(1, 0);
        }
        assert_eq!(s.want(100), 0, "paused after repeated misses");
        for _ in 0..PAUSE_STEPS {
            s.want(100);
        }
        assert_eq!(s.want(100), 1, "then tries again, short");
        s.adapt(1, 1);
        assert_eq!(s.want(100), 3, "and grows while drafts are confirmed");
        assert!(!SpecState::new(8, 3).worth(2) && SpecState::new(8, 3).worth(3) && !s.worth(0));
    }
}
