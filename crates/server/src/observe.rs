//! A generation with its metrics recorded as it streams (time to first token, time between
//! tokens, token counts): what both APIs read, so neither records metrics itself.

use std::time::Instant;

use hearth_runtime::{Event, Generation, RuntimeError};

use crate::metrics::Metrics;

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
            Some(Ok(Event::Done { timings, .. })) => self.metrics.tokens(timings.prompt_tokens as u64, timings.generated_tokens as u64),
            _ => {}
        }
        e
    }
}
