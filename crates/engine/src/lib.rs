//! llama.cpp in-process: the only crate of hearth that links llama.cpp and holds `unsafe`.
//!
//! - [`Model`]: a loaded GGUF (weights and vocabulary), shared between threads.
//! - [`Engine`]: one llama.cpp context on its own thread, serving many sequences with
//!   continuous batching and prompt-cache reuse, streaming [`Event`]s back.
//! - [`ChatTemplate`]: conversations rendered with the model's own Jinja template; [`Chat`]:
//!   tools, reasoning and JSON schemas through llama.cpp's chat code (or hearth's generic tool
//!   format), and the [`AnswerReader`] that parses the answer as it streams.
//! - [`Grammar`]: output constrained to JSON or any GBNF grammar; [`TokenLogprobs`]: the
//!   model's log-probabilities of each generated token.
//! - [`rpc`]: ggml's RPC backend, for spreading a model over machines.
//!
//! This crate knows nothing of HTTP, of the command line or of where models are stored.

// The one crate allowed `unsafe` (the workspace denies it): every call into llama.cpp.
#![allow(unsafe_code)]

mod chat;
mod engine;
mod grammar;
mod log;
mod logprobs;
mod model;
pub mod devices;
mod draft;
mod mtp;
pub mod rpc;
mod sampling;
pub mod spec;
mod template;
pub mod text;

pub use chat::{json_schema_to_grammar, required_call_grammar, AnswerReader, Chat, Prepared};
pub use engine::{
    CacheType, Canceller, Engine, EngineOptions, Event, FinishReason, FlashAttn, GenerateRequest,
    Generation, LoadSettings, Output, Prompt, Timings,
};
pub use grammar::{Grammar, JSON_OBJECT_GBNF};
pub use logprobs::{TokenLogprob, TokenLogprobs, MAX_TOP_LOGPROBS};
pub use model::{default_threads, Model, ModelInfo, ModelOptions};
pub use sampling::SamplingParams;
pub use template::{ChatMessage, ChatTemplate};

/// The raw llama.cpp bindings, for the few callers (benchmarks) that need a system-info string.
pub use llama_cpp_sys_2 as sys;

/// A token id of the model's vocabulary.
pub type Token = i32;

/// Everything that can go wrong in the engine. Messages name the file, the numbers and what
/// to change.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("cannot use model {path}: {reason}")]
    BadModel { path: std::path::PathBuf, reason: String },
    #[error("llama.cpp failed to load {path}: {reason}")]
    Load { path: std::path::PathBuf, reason: String },
    #[error("{0}")]
    Context(String),
    #[error("the prompt is {tokens} tokens, which does not fit in the context of {n_ctx} tokens; raise the context size (-c) or shorten the prompt")]
    PromptTooLong { tokens: usize, n_ctx: u32 },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("llama_decode failed with code {0}")]
    Decode(i32),
    #[error("embedding failed: {0}")]
    Embedding(String),
    #[error("RPC server {endpoint}: {reason}")]
    Rpc { endpoint: String, reason: String },
    #[error("the engine has stopped")]
    Stopped,
}

/// llama.cpp's description of the CPU features and backends it was built with.
pub fn system_info() -> String {
    model::backend_init();
    // SAFETY: returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(sys::llama_print_system_info()) }
        .to_string_lossy()
        .into_owned()
}
