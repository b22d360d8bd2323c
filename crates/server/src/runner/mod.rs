//! Runners: each loaded model lives in a child process of its own (`hearth runner`, a hidden
//! subcommand of the same binary) that holds the engine; the server talks to it over a Unix
//! socket. An abort inside llama.cpp or an out-of-memory kill takes down one runner, never
//! the server.
//!
//! The protocol is newline-delimited JSON. Every request opens its own connection and sends
//! one [`Request`] line; the runner answers with [`Reply`] lines and closes. Closing the
//! connection early cancels the request (a client that went away stops its generation).
//!
//! - [`child`]: the runner process (engine + socket).
//! - [`client`]: the server's side: spawning, talking to, and watching a runner.

pub mod child;
pub mod client;

use serde::{Deserialize, Serialize};

/// How to start a runner: everything the child needs, passed as one JSON argument.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    pub model: std::path::PathBuf,
    pub socket: std::path::PathBuf,
    /// Context per sequence, in tokens.
    pub ctx_per_seq: u32,
    pub parallel: u32,
    pub batch_size: u32,
    pub ubatch_size: u32,
    pub threads: Option<usize>,
    pub gpu_layers: Option<i32>,
    pub flash_attn: String,
    pub mmap: bool,
    /// A llama.cpp built-in template to use when the GGUF has no Jinja template (the family
    /// of the model's Ollama Go template).
    pub builtin_template: Option<String>,
    pub rpc_servers: Vec<String>,
    /// Proportions over the offload devices (llama.cpp's `tensor_split`).
    #[serde(default)]
    pub tensor_split: Vec<f32>,
}

/// A chat message as the runner renders it with the model's template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// What to generate from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSpec {
    /// Rendered with the model's chat template, generation prompt added.
    Messages(Vec<Message>),
    /// Used as is (tokenized with the model's BOS rule, special tokens parsed).
    Text(String),
}

/// Sampling settings: the engine's own, sent as they are.
pub use hearth_engine::SamplingParams as Sampling;
/// Timings of a finished generation: the engine's own.
pub use hearth_engine::Timings;

/// One request to a runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Generate {
        prompt: PromptSpec,
        sampling: Sampling,
        max_tokens: Option<u32>,
        stop: Vec<String>,
        /// Constrain the output to a JSON object.
        json: bool,
        /// Keep going past end-of-generation tokens (llama-server's `ignore_eos`, benchmarks).
        #[serde(default)]
        ignore_eos: bool,
        /// Report each token's log-probability and this many alternatives.
        #[serde(default)]
        logprobs: Option<u32>,
    },
    Embed {
        inputs: Vec<String>,
        normalize: bool,
    },
    /// Render messages with the template, without generating.
    Render { messages: Vec<Message> },
    Info,
}

/// What the runner says about its model and context.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Info {
    pub n_ctx_seq: u32,
    pub parallel: u32,
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub n_vocab: u32,
    pub n_params: u64,
    pub size_bytes: u64,
    pub load_ms: f64,
    pub description: String,
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

/// Why a request failed, so the server can pick an HTTP status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was wrong (too long a prompt, bad values): 400.
    BadRequest,
    /// Something failed inside: 500.
    Internal,
}

/// One line of a runner's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Token {
        id: i32,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprobs: Option<Logprobs>,
    },
    Done { text: String, reason: String, timings: Timings },
    Embeddings { embeddings: Vec<Vec<f32>>, prompt_tokens: u32 },
    Rendered { text: String, tokens: u32 },
    Info(Info),
    Error { kind: ErrorKind, message: String },
}
