//! The runner protocol: between the server process and a runner (`hearth runner --spec JSON`,
//! the child process that holds one model's engine).
//!
//! Newline-delimited JSON over a Unix socket. Every request opens its own connection and sends
//! one [`Request`] line; the runner answers with [`Reply`] lines and closes. Closing the
//! connection early cancels the request. The runner prints `ready` on its stdout once it
//! listens, and exits when its stdin closes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{AssistantMessage, ChatOptions, Delta, FinishReason, LoadSettings, Logprobs, SamplingParams, Timings, ToolCall};

/// How to start a runner: everything the child needs, passed as one JSON argument.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    pub model: PathBuf,
    pub socket: PathBuf,
    /// Sequences decoded together.
    pub parallel: u32,
    /// How to load it: `ctx_size` is the context per sequence, already resolved; `rpc`,
    /// `gpu_layers` and `tensor_split` are the placement's (workers appear as local tunnel
    /// ports).
    pub load: LoadSettings,
    /// The model's Ollama Go template, for a GGUF without a Jinja template: the runner uses
    /// llama.cpp's built-in template of the same family.
    #[serde(default)]
    pub go_template: Option<String>,
}

/// A chat message as the runner renders it with the model's template.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// An assistant turn's reasoning, fed back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
    /// An assistant turn's tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers, and the tool's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_call_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_name: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message { role: role.into(), content: content.into(), ..Default::default() }
    }
}

/// What to generate from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Rendered with the model's chat template, generation prompt added.
    Messages(Vec<Message>),
    /// Used as is (tokenized with the model's BOS rule, special tokens parsed).
    Text(String),
}

/// A generation request, as the runner runs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Generate {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// Most tokens to generate; `None`: until the model stops or the context is full.
    pub max_tokens: Option<u32>,
    /// Stop when one of these appears; it is not emitted.
    pub stop: Vec<String>,
    /// Constrain the output to a JSON object.
    pub json: bool,
    /// Keep going past end-of-generation tokens (llama-server's `ignore_eos`, benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Report each token's log-probability and this many alternatives.
    #[serde(default)]
    pub logprobs: Option<u32>,
    /// For [`Prompt::Messages`]: tools, JSON schema, reasoning. The answer then streams as
    /// [`Delta`]s and ends with the parsed [`AssistantMessage`].
    #[serde(default)]
    pub chat: ChatOptions,
}

impl Generate {
    pub fn new(prompt: Prompt, sampling: SamplingParams) -> Generate {
        Generate {
            prompt,
            sampling,
            max_tokens: None,
            stop: Vec::new(),
            json: false,
            ignore_eos: false,
            logprobs: None,
            chat: ChatOptions::default(),
        }
    }
}

/// One request to a runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Generate(Generate),
    Embed {
        inputs: Vec<String>,
        normalize: bool,
        /// Cut inputs longer than the context instead of refusing them.
        #[serde(default)]
        truncate: bool,
    },
    Info,
    /// The prompt a chat renders to, and its length in tokens.
    Render {
        messages: Vec<Message>,
        #[serde(default)]
        chat: ChatOptions,
    },
    /// Text to tokens (`special`: special-token text such as `<|im_start|>` is parsed).
    Tokenize { text: String, special: bool },
    /// Tokens to text.
    Detokenize { tokens: Vec<i32> },
}

/// What the runner says about its model and context.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
    /// The chat template can think (reasoning is split from the answer).
    #[serde(default)]
    pub thinking: bool,
    /// How tool calls are written: the template's own syntax (llama.cpp's name for the
    /// format), or "generic" (hearth's JSON format, for templates without tool syntax).
    #[serde(default)]
    pub tool_format: String,
    /// The chat template's source.
    #[serde(default)]
    pub chat_template: String,
}

/// Why a request failed, so the server can pick a status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was wrong (bad values).
    BadRequest,
    /// The prompt, `tokens` long, does not fit in the context: a server that chose the context
    /// itself may load the model again with a larger one.
    PromptTooLong { tokens: u32 },
    /// Something failed inside.
    Internal,
}

/// One line of a runner's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Token {
        id: i32,
        /// The raw text the token released.
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprobs: Option<Logprobs>,
        /// For a chat: what the text added to the parsed answer.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deltas: Vec<Delta>,
    },
    Done {
        text: String,
        reason: FinishReason,
        timings: Timings,
        /// For a chat: the last deltas and the whole parsed answer.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deltas: Vec<Delta>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<AssistantMessage>,
        /// The stop string that ended it, if one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop: Option<String>,
    },
    /// A generation was accepted: its prompt's length (the first line of its answer).
    Started { prompt_tokens: u32 },
    Embeddings { embeddings: Vec<Vec<f32>>, prompt_tokens: u32 },
    Info(Info),
    Rendered { prompt: String, tokens: u32 },
    Tokens { tokens: Vec<i32> },
    Text { text: String },
    Error { kind: ErrorKind, message: String },
}

/// One protocol line: the JSON of `v` and a newline.
pub fn line<T: Serialize>(v: &T) -> Vec<u8> {
    let mut l = serde_json::to_vec(v).expect("protocol types serialize");
    l.push(b'\n');
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let g = Request::Generate(Generate { max_tokens: Some(3), stop: vec!["x".into()], ..Generate::new(Prompt::Messages(vec![Message::new("user", "hi")]), SamplingParams::greedy()) });
        let text = String::from_utf8(line(&g)).unwrap();
        assert!(text.ends_with('\n') && !text.trim_end().contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), g);
        let done = Reply::Done { text: String::new(), reason: FinishReason::Length, timings: Timings::default(), deltas: vec![], message: None, stop: None };
        let v = serde_json::to_value(&done).unwrap();
        assert_eq!(v["done"]["reason"], "length");
    }
}
