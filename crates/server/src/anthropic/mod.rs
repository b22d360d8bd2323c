//! The Anthropic Messages API (`/v1/messages`, `/v1/messages/count_tokens`), as the
//! `anthropic` SDKs and Claude Code (`ANTHROPIC_BASE_URL`) call it: content blocks (text,
//! thinking, tool_use, tool_result) to the runtime's chat and back, and Anthropic's event
//! stream. Beta query strings and headers are accepted and what hearth does not implement
//! (prompt caching, context management) is ignored.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hearth_runtime::protocol::runner::{Generate, Message, Prompt};
use hearth_runtime::protocol::{AssistantMessage, ChatOptions, Delta, FinishReason, SamplingParams as Sampling, ToolCall, ToolChoice};
use hearth_runtime::{Event, LoadOptions};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{parse, AnthropicError, ApiError};
use crate::observe::Observed;
use crate::state::Shared;

pub fn routes() -> Router<Shared> {
    Router::new().route("/v1/messages", post(messages)).route("/v1/messages/count_tokens", post(count_tokens))
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Deserialize)]
struct Body {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<Content>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<i32>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
    /// Claude Code's `{"effort": .., "format": {"type": "json_schema", "schema": ..}}`.
    #[serde(default)]
    output_config: Option<Value>,
}

/// The text of a content: a string, or its text blocks joined.
fn text_of(c: &Content) -> String {
    match c {
        Content::Text(t) => t.clone(),
        Content::Blocks(b) => b.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n"),
    }
}

impl Body {
    /// The conversation as the runtime's messages: tool results become `tool` messages,
    /// `tool_use` blocks the assistant's calls, `thinking` blocks its reasoning.
    fn messages(&self) -> Result<Vec<Message>, ApiError> {
        let mut out = Vec::new();
        if let Some(system) = &self.system {
            let text = text_of(system);
            if !text.is_empty() {
                out.push(Message::new("system", text));
            }
        }
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("invalid field `messages`: at least one message is needed"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            let field = format!("messages[{i}]");
            if !matches!(m.role.as_str(), "user" | "assistant" | "system") {
                return Err(ApiError::bad_request(format!("invalid field `{field}.role`: {:?} is not user or assistant", m.role)));
            }
            let blocks = match &m.content {
                Content::Text(t) => {
                    out.push(Message::new(m.role.clone(), t.clone()));
                    continue;
                }
                Content::Blocks(b) => b,
            };
            let mut msg = Message::new(m.role.clone(), "");
            let mut texts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let field = format!("{field}.content[{j}]");
                match b["type"].as_str().unwrap_or_default() {
                    "text" => texts.push(b["text"].as_str().unwrap_or_default().to_string()),
                    "thinking" => msg.reasoning.push_str(b["thinking"].as_str().unwrap_or_default()),
                    "redacted_thinking" => {}
                    "tool_use" => {
                        let name = b["name"].as_str().filter(|n| !n.is_empty());
                        let Some(name) = name else {
                            return Err(ApiError::bad_request(format!("invalid field `{field}.name`: a tool_use block needs the tool's name")));
                        };
                        msg.tool_calls.push(ToolCall {
                            id: b["id"].as_str().unwrap_or_default().to_string(),
                            name: name.to_string(),
                            arguments: crate::chat::arguments_text(&b["input"]),
                        });
                    }
                    "tool_result" => {
                        let content = match &b["content"] {
                            Value::String(s) => s.clone(),
                            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
                            _ => String::new(),
                        };
                        let content = if b["is_error"] == true { format!("Error: {content}") } else { content };
                        out.push(Message {
                            role: "tool".into(),
                            content,
                            tool_call_id: b["tool_use_id"].as_str().unwrap_or_default().to_string(),
                            ..Default::default()
                        });
                    }
                    "image" | "document" => return Err(ApiError::bad_request(format!("invalid field `{field}`: images and documents are not supported yet"))),
                    // Server tool results, search results, citations: nothing the model reads.
                    _ => {}
                }
            }
            msg.content = texts.join("\n");
            if !msg.content.is_empty() || !msg.reasoning.is_empty() || !msg.tool_calls.is_empty() {
                out.push(msg);
            }
        }
        // Tool results name the tool by id only: find the name from the call.
        let names: std::collections::HashMap<String, String> =
            out.iter().flat_map(|m| m.tool_calls.iter().map(|c| (c.id.clone(), c.name.clone()))).collect();
        for m in out.iter_mut().filter(|m| m.role == "tool") {
            m.tool_name = names.get(&m.tool_call_id).cloned().unwrap_or_default();
        }
        Ok(crate::chat::system_first(out))
    }

    fn chat(&self) -> Result<ChatOptions, ApiError> {
        let mut tools = Vec::new();
        for (i, t) in self.tools.iter().flatten().enumerate() {
            // Anthropic's server tools (web search, code execution, ...) have a `type` and no
            // schema: not served here.
            if t.get("input_schema").is_none() && t.get("type").is_some_and(|k| k != "custom") {
                continue;
            }
            tools.push(crate::chat::tool(&t["name"], &t["description"], t.get("input_schema"), &format!("tools[{i}]"))?);
        }
        crate::chat::check_tools(&tools, "tools")?;
        let mut parallel = true;
        let tool_choice = match &self.tool_choice {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(c) => {
                parallel = c["disable_parallel_tool_use"] != true;
                match c["type"].as_str().unwrap_or_default() {
                    "auto" => ToolChoice::Auto,
                    "any" => ToolChoice::Required,
                    "none" => ToolChoice::None,
                    "tool" => match c["name"].as_str() {
                        Some(n) => ToolChoice::Function(n.to_string()),
                        None => return Err(ApiError::bad_request("invalid field `tool_choice.name`: a tool choice of type tool names the tool")),
                    },
                    other => return Err(ApiError::bad_request(format!("invalid field `tool_choice.type`: {other:?} is not auto, any, tool or none"))),
                }
            }
        };
        // `enabled` and `adaptive` leave it to the model (a model that thinks, thinks);
        // `disabled` turns thinking off.
        let think = match self.thinking.as_ref().and_then(|t| t["type"].as_str()) {
            Some("disabled") => Some(false),
            _ => None,
        };
        let json_schema = match self.output_config.as_ref().map(|o| &o["format"]) {
            Some(f) if f["type"] == "json_schema" => match &f["schema"] {
                s @ Value::Object(_) => Some(s.clone()),
                _ => return Err(ApiError::bad_request("invalid field `output_config.format.schema`: expected a JSON schema object")),
            },
            _ => None,
        };
        Ok(ChatOptions { tools, tool_choice, parallel_tool_calls: parallel, json_schema, think, ..Default::default() })
    }
}

fn stop_reason(reason: FinishReason, m: &AssistantMessage, stop: &Option<String>) -> &'static str {
    match reason {
        FinishReason::Length => "max_tokens",
        _ if !m.tool_calls.is_empty() => "tool_use",
        _ if stop.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

/// The answer as Anthropic's content blocks.
fn blocks(m: &AssistantMessage) -> Vec<Value> {
    let mut out = Vec::new();
    if !m.reasoning.is_empty() {
        out.push(json!({"type": "thinking", "thinking": m.reasoning, "signature": ""}));
    }
    if !m.content.is_empty() || m.tool_calls.is_empty() {
        out.push(json!({"type": "text", "text": m.content}));
    }
    for c in &m.tool_calls {
        out.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": crate::chat::arguments_object(&c.arguments)}));
    }
    out
}

fn message_id() -> String {
    format!("msg_{:024x}", crate::wire::rand_id() as u128 * 0x1_0000_0001)
}

async fn messages(State(s): State<Shared>, body: Bytes) -> Result<Response, AnthropicError> {
    let b: Body = parse(&body)?;
    let messages = b.messages()?;
    let chat = b.chat()?;
    let model = s.runtime.resolve(&b.model)?;
    if let Some(t) = b.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(ApiError::bad_request(format!("invalid field `temperature`: {t} is not between 0 and 1")).into());
    }
    let o = model.options(Sampling::default())?;
    let mut sampling = o.sampling;
    if let Some(t) = b.temperature {
        sampling.temperature = t;
    }
    if let Some(p) = b.top_p {
        sampling.top_p = p;
    }
    if let Some(k) = b.top_k {
        sampling.top_k = k;
    }
    let request = Generate {
        // Bounded by the context, not refused, when larger (Claude Code asks for 32000).
        max_tokens: b.max_tokens.or(o.max_tokens),
        stop: b.stop_sequences.clone().unwrap_or(o.stop),
        chat,
        ..Generate::new(Prompt::Messages(messages), sampling)
    };
    let generation = s.runtime.generate(&model, &LoadOptions { num_ctx: o.num_ctx, keep_alive: None }, request).await?;
    let mut g = Observed::new(generation, s.metrics.clone());
    let name = model.name.to_string();
    let id = message_id();
    if !b.stream {
        let w = g.whole().await?;
        let t = &w.timings;
        return Ok(axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": name,
            "content": blocks(&w.message),
            "stop_reason": stop_reason(w.reason, &w.message, &w.stop), "stop_sequence": w.stop,
            "usage": {"input_tokens": t.prompt_tokens, "output_tokens": t.generated_tokens,
                      "cache_read_input_tokens": t.cached_tokens, "cache_creation_input_tokens": 0},
        }))
        .into_response());
    }
    let start = json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": name, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": g.generation.prompt_tokens.unwrap_or(0), "output_tokens": 0},
    }});
    let head = format!("{}{}", event("message_start", &start), event("ping", &json!({"type": "ping"})));
    let frames = futures_util::stream::unfold(Some((g, Blocks::default())), move |state| async move {
        let (mut g, mut open) = state?;
        loop {
            let out = match g.next().await? {
                Ok(Event::Token { deltas, .. }) => {
                    let out: String = deltas.iter().map(|d| open.delta(d)).collect();
                    if out.is_empty() {
                        continue;
                    }
                    out
                }
                Ok(Event::Done { reason, timings, message, stop }) => {
                    let m = message.unwrap_or_default();
                    let mut out = open.close();
                    if open.index == 0 {
                        // No block at all: an empty text block, as Anthropic sends.
                        out.push_str(&open.delta(&Delta::Content(String::new())));
                        out.push_str(&open.close());
                    }
                    out.push_str(&event("message_delta", &json!({"type": "message_delta",
                        "delta": {"stop_reason": stop_reason(reason, &m, &stop), "stop_sequence": stop},
                        "usage": {"input_tokens": timings.prompt_tokens, "output_tokens": timings.generated_tokens,
                                  "cache_read_input_tokens": timings.cached_tokens}})));
                    out.push_str(&event("message_stop", &json!({"type": "message_stop"})));
                    return Some((out, None));
                }
                Err(e) => return Some((event("error", &AnthropicError::from(e).body()), None)),
            };
            return Some((out, Some((g, open))));
        }
    });
    let frames = futures_util::StreamExt::chain(futures_util::stream::iter([head]), frames);
    let frames = crate::wire::keep_alive(frames, PING_EVERY, event("ping", &json!({"type": "ping"})));
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], crate::wire::stream_body(frames)).into_response())
}

/// A `ping` event goes out when the stream has been silent this long, as Anthropic's API
/// sends them.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The content block being streamed: its index and kind.
#[derive(Default)]
struct Blocks {
    /// Blocks started so far.
    index: usize,
    open: Option<&'static str>,
}

impl Blocks {
    fn close(&mut self) -> String {
        match self.open.take() {
            Some(kind) => {
                let mut out = String::new();
                if kind == "thinking" {
                    out.push_str(&event("content_block_delta", &json!({"type": "content_block_delta", "index": self.index - 1,
                        "delta": {"type": "signature_delta", "signature": ""}})));
                }
                out.push_str(&event("content_block_stop", &json!({"type": "content_block_stop", "index": self.index - 1})));
                out
            }
            None => String::new(),
        }
    }

    fn start(&mut self, kind: &'static str, block: Value) -> String {
        let mut out = self.close();
        out.push_str(&event("content_block_start", &json!({"type": "content_block_start", "index": self.index, "content_block": block})));
        self.index += 1;
        self.open = Some(kind);
        out
    }

    fn delta(&mut self, d: &Delta) -> String {
        let mut out = String::new();
        let delta = match d {
            Delta::Reasoning(t) => {
                if self.open != Some("thinking") {
                    out.push_str(&self.start("thinking", json!({"type": "thinking", "thinking": "", "signature": ""})));
                }
                json!({"type": "thinking_delta", "thinking": t})
            }
            Delta::Content(t) => {
                if self.open != Some("text") {
                    out.push_str(&self.start("text", json!({"type": "text", "text": ""})));
                }
                json!({"type": "text_delta", "text": t})
            }
            Delta::ToolCall { id, name, arguments, .. } => {
                if !id.is_empty() {
                    out.push_str(&self.start("tool_use", json!({"type": "tool_use", "id": id, "name": name, "input": {}})));
                }
                json!({"type": "input_json_delta", "partial_json": arguments})
            }
        };
        if let Delta::Content(t) | Delta::Reasoning(t) = d {
            if t.is_empty() {
                return out;
            }
        }
        out.push_str(&event("content_block_delta", &json!({"type": "content_block_delta", "index": self.index - 1, "delta": delta})));
        out
    }
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the model's template renders it,
/// tools included.
async fn count_tokens(State(s): State<Shared>, body: Bytes) -> Result<Response, AnthropicError> {
    let b: Body = parse(&body)?;
    let messages = b.messages()?;
    let chat = b.chat()?;
    let model = s.runtime.resolve(&b.model)?;
    let o = model.options(Sampling::default())?;
    let r = s.runtime.render(&model, &LoadOptions { num_ctx: o.num_ctx, keep_alive: None }, messages, chat).await?;
    Ok(axum::Json(json!({"input_tokens": r.tokens})).into_response())
}
