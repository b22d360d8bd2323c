//! What a generation reports besides its text.

use serde::{Deserialize, Serialize};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The caller cancelled it (or went away).
    Cancelled,
}

/// Per-request timings and token counts: what a server reports as usage (OpenAI's
/// `prompt_tokens`/`completion_tokens`, Ollama's `prompt_eval_count`/`eval_count`), counted
/// by the engine, so nothing needs to be tokenized again to report them. Times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Tokens in the prompt (after tokenization, BOS included), cached ones included.
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV was reused from an earlier request.
    pub cached_tokens: u32,
    /// From the start of prompt processing to the first sampled token.
    pub prompt_ms: f64,
    /// Tokens generated: one per token event. The end-of-generation token that ends a
    /// generation is not counted (it is not part of the answer).
    pub generated_tokens: u32,
    /// From the first sampled token to the end.
    pub generation_ms: f64,
    /// Time the request waited for a free slot.
    pub queue_ms: f64,
    /// Time it took to load the model (the same for every request of an engine).
    pub load_ms: f64,
    /// Speculative decoding: tokens drafted, and how many of them the model confirmed.
    #[serde(default)]
    pub drafted_tokens: u32,
    #[serde(default)]
    pub accepted_tokens: u32,
}

impl Timings {
    /// Prompt tokens evaluated per second (cached ones excluded).
    pub fn prompt_per_second(&self) -> f64 {
        let n = self.prompt_tokens.saturating_sub(self.cached_tokens) as f64;
        if self.prompt_ms > 0.0 { n * 1e3 / self.prompt_ms } else { 0.0 }
    }

    /// Generated tokens per second, counted from the first token.
    pub fn generation_per_second(&self) -> f64 {
        // The first token comes out of prompt processing; the rest each took a decode step.
        let n = self.generated_tokens.saturating_sub(1) as f64;
        if self.generation_ms > 0.0 { n * 1e3 / self.generation_ms } else { 0.0 }
    }
}

/// One alternative token and its log-probability.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Alternative {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// The log-probability of a generated token, and the most likely alternatives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Logprobs {
    pub chosen: Alternative,
    pub top: Vec<Alternative>,
}
