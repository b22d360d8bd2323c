//! The types that cross hearth's process boundaries, shared by the engine (which runs
//! llama.cpp), the runtime and the HTTP server (which never link it), and the runner process
//! between them.
//!
//! - [`settings`]: [`LoadSettings`], how a model is loaded: one struct from the command line
//!   (flattened into the flags of `run`, `serve` and `fit`) to the runner's spec and the engine.
//! - [`sampling`]: [`SamplingParams`], how tokens are picked.
//! - [`generate`]: what a generation reports: [`FinishReason`], [`Timings`], [`Logprobs`].
//! - [`chat`]: tools, tool calls, reasoning and JSON schemas: [`ChatOptions`],
//!   [`AssistantMessage`], [`Delta`].
//! - [`runner`]: the runner protocol, newline-delimited JSON over a Unix socket.
//!
//! Invariants: no llama.cpp, no I/O, no async runtime: plain data with serde.

pub mod chat;
pub mod generate;
pub mod runner;
pub mod sampling;
pub mod settings;

pub use chat::{AssistantMessage, ChatOptions, Delta, Tool, ToolCall, ToolChoice};
pub use generate::{Alternative, FinishReason, Logprobs, Timings};
pub use sampling::SamplingParams;
pub use settings::{CacheType, FlashAttn, LoadSettings, Spec, SplitMode};
