//! A generation with its metrics recorded as it streams (time to first token, time between
//! tokens, token counts): what both APIs read, so neither records metrics itself.

use std::time::Instant;

use hearth_runtime::protocol::{AssistantMessage, FinishReason, Logprobs, Timings};
use hearth_runtime::{Event, Generation, RuntimeError};

use crate::metrics::Metrics;

/// A whole answer, for a request that is not streamed.
pub struct Whole {
    /// The raw text (what a completion answers).
    pub text: String,
    /// The parsed answer of a chat; for a raw prompt, the text as its content.
    pub message: AssistantMessage,
    pub logprobs: Vec<Logprobs>,
    pub reason: FinishReason,
    pub timings: Timings,
    /// The stop string that ended it, if one did.
    pub stop: Option<String>,
}

/// A [`Generation`] whose events are counted in [`Metrics`].
pub struct Observed {
    pub generation: Generation,
    metrics: Metrics,
    last: Option<Instant>,
}

impl Observed {
    pub fn new(generation: Generation, metrics: Metrics) -> Observed {
        Observed { generation, metrics, last: None }
    }

    /// The next event (see [`Generation::next`]).
    pub async fn next(&mut self) -> Option<Result<Event, RuntimeError>> {
        let e = self.generation.next().await;
        match &e {
            Some(Ok(Event::Token { .. })) => {
                let now = Instant::now();
                match self.last {
                    None => self.metrics.ttft(now.duration_since(self.generation.started)),
                    Some(last) => self.metrics.token_latency(now.duration_since(last)),
                }
                self.last = Some(now);
            }
            Some(Ok(Event::Done { timings, .. })) => {
                self.metrics.tokens(timings.prompt_tokens as u64, timings.generated_tokens as u64);
                self.metrics.drafts(&self.generation.model, timings.drafted_tokens as u64, timings.accepted_tokens as u64);
            }
            _ => {}
        }
        e
    }

    /// Reads the generation to its end.
    pub async fn whole(&mut self) -> Result<Whole, RuntimeError> {
        let mut text = String::new();
        let mut logprobs = Vec::new();
        while let Some(e) = self.next().await {
            match e? {
                Event::Token { text: t, logprobs: l, .. } => {
                    text.push_str(&t);
                    logprobs.extend(l);
                }
                Event::Done { reason, timings, message, stop } => {
                    let message = message.unwrap_or_else(|| AssistantMessage { content: text.clone(), ..Default::default() });
                    return Ok(Whole { text, message, logprobs, reason, timings, stop });
                }
            }
        }
        Err(RuntimeError::Internal("the generation ended without a result".into()))
    }
}
