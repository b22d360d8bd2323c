//! The OpenAI Responses API (`POST /v1/responses`), stateless, as the `openai` SDKs and Codex
//! call it: input items (messages, function calls and their outputs, reasoning) to the
//! runtime's chat, and output items back, or the event stream with every field the SDK's
//! stream helper reads (`sequence_number`, `output_index`, `content_index`, `item_id`).
//!
//! hearth keeps no responses: `previous_response_id` is a 400 and `store` is ignored.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hearth_runtime::protocol::runner::{Generate, Message, Prompt};
use hearth_runtime::protocol::{AssistantMessage, ChatOptions, Delta, FinishReason, SamplingParams as Sampling, Timings, ToolCall};
use hearth_runtime::{Event, LoadOptions};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{openai_stream_error, parse, ApiError, OpenAiError};
use crate::observe::Observed;
use crate::state::Shared;

pub fn routes() -> Router<Shared> {
    Router::new().route("/v1/responses", post(create))
}

#[derive(Deserialize)]
struct Body {
    model: String,
    input: Value,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// The text of a message's content: a string, or its text parts joined.
fn content_text(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                match p["type"].as_str().unwrap_or_default() {
                    "input_text" | "output_text" | "text" | "reasoning_text" | "summary_text" => out.push(p["text"].as_str().unwrap_or_default()),
                    "refusal" => out.push(p["refusal"].as_str().unwrap_or_default()),
                    "input_image" | "input_file" | "input_audio" => {
                        return Err(ApiError::bad_request(format!("invalid field `{field}[{i}]`: images, files and audio are not supported yet")))
                    }
                    other => return Err(ApiError::bad_request(format!("invalid field `{field}[{i}].type`: {other:?} is not a text part"))),
                }
            }
            Ok(out.join("\n"))
        }
        other => Err(ApiError::bad_request(format!("invalid field `{field}`: expected a string or a list of parts, got {other}"))),
    }
}

impl Body {
    fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.previous_response_id.is_some() {
            return Err(ApiError::bad_request(
                "invalid field `previous_response_id`: hearth keeps no responses (the Responses API is stateless here); send the whole conversation in `input`",
            ));
        }
        let mut out: Vec<Message> = Vec::new();
        if let Some(i) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            out.push(Message::new("system", i.clone()));
        }
        let items = match &self.input {
            Value::String(s) => {
                out.push(Message::new("user", s.clone()));
                return Ok(out);
            }
            Value::Array(items) => items,
            other => return Err(ApiError::bad_request(format!("invalid field `input`: expected a string or a list of items, got {other}"))),
        };
        // Reasoning that came before an assistant message or call belongs to it.
        let mut reasoning = String::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("input[{i}]");
            let kind = item["type"].as_str().unwrap_or(if item.get("role").is_some() { "message" } else { "" });
            match kind {
                "message" => {
                    let role = match item["role"].as_str().unwrap_or_default() {
                        "developer" | "system" => "system",
                        r @ ("user" | "assistant") => r,
                        other => return Err(ApiError::bad_request(format!("invalid field `{field}.role`: {other:?} is not user, assistant, system or developer"))),
                    };
                    let text = content_text(&item["content"], &format!("{field}.content"))?;
                    let mut m = Message::new(role, text);
                    if role == "assistant" {
                        m.reasoning = std::mem::take(&mut reasoning);
                    }
                    out.push(m);
                }
                "function_call" => {
                    let name = item["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad_request(format!("invalid field `{field}.name`: a function_call needs the function's name")))?;
                    let call = ToolCall {
                        id: item["call_id"].as_str().unwrap_or_default().to_string(),
                        name: name.to_string(),
                        arguments: crate::chat::arguments_text(&item["arguments"]),
                    };
                    // Calls right after an assistant message (or another call) join it.
                    match out.last_mut() {
                        Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                        _ => out.push(Message { role: "assistant".into(), tool_calls: vec![call], reasoning: std::mem::take(&mut reasoning), ..Default::default() }),
                    }
                }
                "function_call_output" => {
                    let id = item["call_id"].as_str().unwrap_or_default().to_string();
                    let name = out.iter().flat_map(|m| &m.tool_calls).find(|c| c.id == id).map(|c| c.name.clone()).unwrap_or_default();
                    let content = content_text(&item["output"], &format!("{field}.output"))?;
                    out.push(Message { role: "tool".into(), content, tool_call_id: id, tool_name: name, ..Default::default() });
                }
                "reasoning" => {
                    let text = content_text(&item["content"], &format!("{field}.content")).unwrap_or_default();
                    let text = if text.is_empty() { content_text(&item["summary"], &format!("{field}.summary")).unwrap_or_default() } else { text };
                    reasoning.push_str(&text);
                }
                // Hosted tools' calls (web search, ...) and item references: nothing to render.
                _ if !kind.is_empty() => {}
                _ => return Err(ApiError::bad_request(format!("invalid field `{field}`: an item needs a `type` (message, function_call, function_call_output, reasoning)"))),
            }
        }
        Ok(crate::chat::system_first(out))
    }

    fn chat(&self) -> Result<ChatOptions, ApiError> {
        let mut tools = Vec::new();
        // Codex sends namespaces of function tools: flattened. Hosted tools (web_search,
        // file_search, ...) are not served here and are left out.
        fn collect(list: &[Value], field: &str, tools: &mut Vec<hearth_runtime::protocol::Tool>) -> Result<(), ApiError> {
            for (i, t) in list.iter().enumerate() {
                let field = format!("{field}[{i}]");
                match t["type"].as_str().unwrap_or("function") {
                    "function" => tools.push(crate::chat::tool(&t["name"], &t["description"], t.get("parameters"), &field)?),
                    "namespace" => collect(t["tools"].as_array().map(Vec::as_slice).unwrap_or_default(), &format!("{field}.tools"), tools)?,
                    _ => {}
                }
            }
            Ok(())
        }
        collect(self.tools.as_deref().unwrap_or_default(), "tools", &mut tools)?;
        crate::chat::check_tools(&tools, "tools")?;
        let json_schema = match self.text.as_ref().map(|t| &t["format"]) {
            Some(f) if f["type"] == "json_schema" => match &f["schema"] {
                s @ Value::Object(_) => Some(s.clone()),
                _ => return Err(ApiError::bad_request("invalid field `text.format.schema`: expected a JSON schema object")),
            },
            _ => None,
        };
        let mut template_kwargs = serde_json::Map::new();
        let think = match self.reasoning.as_ref().and_then(|r| r["effort"].as_str()) {
            Some("none") => Some(false),
            Some(effort) => {
                template_kwargs.insert("reasoning_effort".into(), Value::String(effort.to_string()));
                None
            }
            None => None,
        };
        Ok(ChatOptions {
            tools,
            tool_choice: crate::chat::openai_tool_choice(self.tool_choice.as_ref())?,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            json_schema,
            think,
            template_kwargs,
        })
    }

    /// `text.format` `json_object`: any JSON object.
    fn json_object(&self) -> bool {
        self.text.as_ref().is_some_and(|t| t["format"]["type"] == "json_object")
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:016x}{:08x}", crate::wire::rand_id(), crate::wire::rand_id() as u32)
}

/// What a response says about the request, in every state.
struct Head {
    id: String,
    created: u64,
    model: String,
    echo: Value,
}

impl Head {
    fn response(&self, status: &str, output: Vec<Value>, usage: Option<&Timings>, reason: Option<FinishReason>) -> Value {
        let mut v = self.echo.clone();
        v["id"] = json!(self.id);
        v["object"] = json!("response");
        v["created_at"] = json!(self.created);
        v["model"] = json!(self.model);
        v["status"] = json!(status);
        v["output"] = json!(output);
        v["error"] = Value::Null;
        v["incomplete_details"] = match reason {
            Some(FinishReason::Length) => json!({"reason": "max_output_tokens"}),
            _ => Value::Null,
        };
        v["usage"] = match usage {
            Some(t) => json!({
                "input_tokens": t.prompt_tokens, "input_tokens_details": {"cached_tokens": t.cached_tokens},
                "output_tokens": t.generated_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": t.prompt_tokens + t.generated_tokens,
            }),
            None => Value::Null,
        };
        v
    }
}

fn status(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "incomplete",
        FinishReason::Stop => "completed",
        FinishReason::Cancelled => "cancelled",
    }
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}], "status": "completed"})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"id": id, "type": "message", "role": "assistant", "status": status,
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

fn call_item(id: &str, c: &ToolCall, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments, "status": status})
}

/// The whole answer as output items.
fn output(m: &AssistantMessage, done: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if !m.reasoning.is_empty() {
        out.push(reasoning_item(&new_id("rs"), &m.reasoning));
    }
    if !m.content.is_empty() || m.tool_calls.is_empty() {
        out.push(message_item(&new_id("msg"), &m.content, done));
    }
    for c in &m.tool_calls {
        out.push(call_item(&new_id("fc"), c, done));
    }
    out
}

async fn create(State(s): State<Shared>, body: Bytes) -> Result<Response, OpenAiError> {
    let b: Body = parse(&body)?;
    let messages = b.messages()?;
    let chat = b.chat()?;
    if let Some(t) = b.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
        return Err(ApiError::bad_request(format!("invalid field `temperature`: {t} is not between 0 and 2")).into());
    }
    let model = s.runtime.resolve(&b.model)?;
    let o = model.options(Sampling::default())?;
    let mut sampling = o.sampling;
    if let Some(t) = b.temperature {
        sampling.temperature = t;
    }
    if let Some(p) = b.top_p {
        sampling.top_p = p;
    }
    let head = Head {
        id: new_id("resp"),
        created: crate::wire::unix_secs(),
        model: model.name.to_string(),
        echo: json!({
            "instructions": b.instructions, "max_output_tokens": b.max_output_tokens,
            "temperature": sampling.temperature, "top_p": sampling.top_p,
            "parallel_tool_calls": chat.parallel_tool_calls,
            "tool_choice": b.tool_choice.clone().unwrap_or(json!("auto")),
            "tools": b.tools.clone().unwrap_or_default(),
            "text": b.text.clone().unwrap_or(json!({"format": {"type": "text"}})),
            "reasoning": b.reasoning.clone().unwrap_or(json!({"effort": null, "summary": null})),
            "metadata": b.metadata.clone().unwrap_or(json!({})),
            "previous_response_id": null, "store": false, "truncation": "disabled", "user": null,
        }),
    };
    let request = Generate {
        max_tokens: b.max_output_tokens.or(o.max_tokens),
        stop: o.stop,
        json: b.json_object(),
        chat,
        ..Generate::new(Prompt::Messages(messages), sampling)
    };
    let generation = s.runtime.generate(&model, &LoadOptions { num_ctx: o.num_ctx, keep_alive: None }, request).await?;
    let mut g = Observed::new(generation, s.metrics.clone());
    if !b.stream {
        let w = g.whole().await?;
        let done = if w.reason == FinishReason::Stop { "completed" } else { "incomplete" };
        let mut v = head.response(status(w.reason), output(&w.message, done), Some(&w.timings), Some(w.reason));
        v["output_text"] = json!(w.message.content);
        return Ok(axum::Json(v).into_response());
    }
    let mut events = Events { seq: 0, out: String::new() };
    events.push("response.created", json!({"response": head.response("in_progress", vec![], None, None)}));
    events.push("response.in_progress", json!({"response": head.response("in_progress", vec![], None, None)}));
    let first = std::mem::take(&mut events.out);
    let state = Stream { head, events, items: Vec::new(), open: None };
    let frames = futures_util::stream::unfold(Some((g, state)), move |st| async move {
        let (mut g, mut st) = st?;
        loop {
            match g.next().await? {
                Ok(Event::Token { deltas, .. }) => {
                    for d in &deltas {
                        st.delta(d);
                    }
                }
                Ok(Event::Done { reason, timings, .. }) => {
                    st.close();
                    let name = match reason {
                        FinishReason::Length => "response.incomplete",
                        _ => "response.completed",
                    };
                    let items = st.items.clone();
                    let response = st.head.response(status(reason), items, Some(&timings), Some(reason));
                    st.events.push(name, json!({"response": response}));
                    return Some((std::mem::take(&mut st.events.out), None));
                }
                Err(e) => {
                    st.events.push("error", json!({"error": openai_stream_error(e)["error"]}));
                    return Some((std::mem::take(&mut st.events.out), None));
                }
            }
            if st.events.out.is_empty() {
                continue;
            }
            let out = std::mem::take(&mut st.events.out);
            return Some((out, Some((g, st))));
        }
    });
    let frames = futures_util::StreamExt::chain(futures_util::stream::iter([first]), frames);
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], crate::wire::stream_body(frames)).into_response())
}

/// Server-sent events, numbered.
struct Events {
    seq: u64,
    out: String,
}

impl Events {
    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }
}

/// The output item being streamed.
enum Open {
    Reasoning { id: String, text: String },
    Message { id: String, text: String },
    Call { id: String, call: ToolCall },
}

struct Stream {
    head: Head,
    events: Events,
    /// Finished items, for the final response.
    items: Vec<Value>,
    open: Option<Open>,
}

impl Stream {
    fn index(&self) -> usize {
        self.items.len()
    }

    fn close(&mut self) {
        let i = self.index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Reasoning { id, text }) => {
                self.events.push("response.reasoning_text.done", json!({"item_id": id, "output_index": i, "content_index": 0, "text": text}));
                reasoning_item(&id, &text)
            }
            Some(Open::Message { id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.events.push("response.output_text.done", json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}));
                self.events.push("response.content_part.done", json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}));
                message_item(&id, &text, "completed")
            }
            Some(Open::Call { id, call }) => {
                self.events.push("response.function_call_arguments.done", json!({"item_id": id, "output_index": i, "name": call.name, "arguments": call.arguments}));
                call_item(&id, &call, "completed")
            }
        };
        self.events.push("response.output_item.done", json!({"output_index": i, "item": item}));
        self.items.push(item);
    }

    fn delta(&mut self, d: &Delta) {
        match d {
            Delta::Reasoning(t) => {
                if !matches!(self.open, Some(Open::Reasoning { .. })) {
                    self.close();
                    let id = new_id("rs");
                    let item = json!({"id": id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": ""}]});
                    self.events.push("response.output_item.added", json!({"output_index": self.index(), "item": item}));
                    self.open = Some(Open::Reasoning { id, text: String::new() });
                }
                let i = self.index();
                if let Some(Open::Reasoning { id, text }) = &mut self.open {
                    text.push_str(t);
                    let id = id.clone();
                    self.events.push("response.reasoning_text.delta", json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t}));
                }
            }
            Delta::Content(t) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close();
                    let id = new_id("msg");
                    let i = self.index();
                    let item = json!({"id": id, "type": "message", "role": "assistant", "status": "in_progress", "content": []});
                    self.events.push("response.output_item.added", json!({"output_index": i, "item": item}));
                    let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
                    self.events.push("response.content_part.added", json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}));
                    self.open = Some(Open::Message { id, text: String::new() });
                }
                let i = self.index();
                if let Some(Open::Message { id, text }) = &mut self.open {
                    text.push_str(t);
                    let id = id.clone();
                    self.events.push("response.output_text.delta", json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t, "logprobs": []}));
                }
            }
            Delta::ToolCall { id: call_id, name, arguments, .. } => {
                if !call_id.is_empty() {
                    self.close();
                    let id = new_id("fc");
                    let call = ToolCall { id: call_id.clone(), name: name.clone(), arguments: String::new() };
                    self.events.push("response.output_item.added", json!({"output_index": self.index(), "item": call_item(&id, &call, "in_progress")}));
                    self.open = Some(Open::Call { id, call });
                }
                let i = self.index();
                if let Some(Open::Call { id, call }) = &mut self.open {
                    call.arguments.push_str(arguments);
                    let id = id.clone();
                    if !arguments.is_empty() {
                        self.events.push("response.function_call_arguments.delta", json!({"item_id": id, "output_index": i, "delta": arguments}));
                    }
                }
            }
        }
    }
}
