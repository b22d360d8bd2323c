//! What can go wrong between a request and its runner: one typed enum. Each API maps it to
//! its own status codes and bodies (see the server's `error` module); nothing here knows HTTP.

use std::time::Duration;

/// An error of the runtime. Messages name the model, the numbers and what to change.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RuntimeError {
    /// No model of that name in the store.
    #[error("model '{0}' not found, try pulling it first")]
    NotFound(String),
    /// A request value is wrong.
    #[error("invalid field `{field}`: {why}")]
    Invalid { field: String, why: String },
    /// The runner refused the request (too long a prompt, a bad grammar, a template error).
    #[error("{0}")]
    Rejected(String),
    /// The model can never fit the memory it may use: retrying does not help.
    #[error("{model} requires more memory ({}) than is available ({}){}", gib(*.needed), gib(*.available), per_device.as_ref().map(|t| format!(":\n{t}")).unwrap_or_default())]
    TooLarge { model: String, needed: u64, available: u64, per_device: Option<String> },
    /// Busy now (queue full, memory held by running requests): try again after `retry_after`.
    #[error("server busy: {why}")]
    Overloaded { why: String, retry_after: Duration },
    /// The runner could not load the model (or the workers it needs refused it).
    #[error("cannot load {model}: {why}")]
    LoadFailed { model: String, why: String },
    /// The runner died before or while answering.
    #[error("the runner for {model} stopped unexpectedly{}", if .why.is_empty() { String::new() } else { format!(": {}", .why) })]
    RunnerDied { model: String, why: String },
    /// The store could not be read.
    #[error("{0}")]
    Store(String),
    /// A bug or an unexpected state: the message says what.
    #[error("{0}")]
    Internal(String),
}

impl RuntimeError {
    /// Whether the same request may succeed later without changes.
    pub fn retryable(&self) -> bool {
        matches!(self, RuntimeError::Overloaded { .. })
    }

    /// A store error as the runtime reports it: an unknown model, a bad name, or the store.
    pub fn store(e: hearth_store::StoreError) -> RuntimeError {
        match e {
            hearth_store::StoreError::NotFound { name } => RuntimeError::NotFound(name),
            e @ hearth_store::StoreError::BadReference { .. } => RuntimeError::Invalid { field: "model".into(), why: e.to_string() },
            other => RuntimeError::Store(other.to_string()),
        }
    }
}

/// Bytes for people: GiB with two decimals (Ollama's "model requires more system memory (X)"
/// style), MiB or KiB below that.
pub fn gib(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} KiB", n as f64 / 1024.0),
    }
}
