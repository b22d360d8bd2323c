//! How to pick the next token.

use serde::{Deserialize, Serialize};

/// How to pick the next token. Defaults are llama.cpp's. Serializable: servers send it to their
/// runners as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
        Self { temperature: 0.0, ..Self::default() }
    }

    /// Checks ranges, so a bad value is a clear error and not a llama.cpp assertion.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() {
            return Err("temperature must be a finite number".into());
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top_p must be between 0 and 1, not {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be between 0 and 1, not {}", self.min_p));
        }
        if !(0.0..=1.0).contains(&self.typical_p) {
            return Err(format!("typical_p must be between 0 and 1, not {}", self.typical_p));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(format!("repeat_penalty must be greater than 0, not {}", self.repeat_penalty));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return Err("presence and frequency penalties must be finite numbers".into());
        }
        if self.repeat_last_n < -1 {
            return Err(format!("repeat_last_n must be -1 or more, not {}", self.repeat_last_n));
        }
        Ok(())
    }
}
