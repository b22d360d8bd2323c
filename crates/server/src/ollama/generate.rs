//! `/api/generate`, `/api/chat`, `/api/embed` and `/api/embeddings`: Ollama's shapes to the
//! runtime's request, and its events back as NDJSON lines (or one object).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hearth_runtime::protocol::runner::{Generate, Message, Prompt};
use hearth_runtime::protocol::{ChatOptions, Delta, FinishReason, Timings, ToolCall};
use hearth_runtime::{Event, KeepAlive, LoadOptions, Model};
use serde::Deserialize;
use serde_json::{json, Value};

use super::options::{is_json_format, keep_alive, options};
use super::{ndjson_line, ndjson_response};
use crate::error::{ollama_stream_error, ApiError, OllamaError, OllamaJson};
use crate::observe::Observed;
use crate::wire::ms_to_ns;
use crate::state::Shared;

#[derive(Deserialize)]
pub struct GenerateBody {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    think: Option<Value>,
}

#[derive(Deserialize)]
pub struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Option<Vec<String>>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    tool_name: Option<String>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
pub struct InToolCall {
    #[serde(default)]
    id: Option<String>,
    function: InFunction,
}

#[derive(Deserialize)]
pub struct InFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// Ollama's `think`: true/false, or an effort ("low", "medium", "high": on).
fn think(v: &Option<Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if matches!(s.as_str(), "low" | "medium" | "high") => Ok(Some(true)),
        Some(other) => Err(ApiError::bad_request(format!("invalid field `think`: expected true, false, \"low\", \"medium\" or \"high\", got {other}"))),
    }
}

#[derive(Deserialize)]
pub struct ChatBody {
    model: String,
    #[serde(default)]
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    think: Option<Value>,
}

/// What both generation routes send, once parsed.
struct Job {
    model: Model,
    /// No prompt: load (or unload, with keep_alive 0) and answer at once.
    empty: bool,
    prompt: Prompt,
    stream: bool,
    format: Option<Value>,
    options: Option<Value>,
    keep_alive: Option<Value>,
    is_chat: bool,
    chat: ChatOptions,
}

pub async fn generate(State(s): State<Shared>, OllamaJson(b): OllamaJson<GenerateBody>) -> Result<Response, OllamaError> {
    if b.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(ApiError::bad_request("images are not supported yet").into());
    }
    let model = s.runtime.resolve(&b.model)?;
    let prompt = if b.raw {
        Prompt::Text(b.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(sys) = b.system.clone().or_else(|| model.system.clone()) {
            messages.push(Message::new("system", sys));
        }
        messages.push(Message::new("user", b.prompt.clone()));
        Prompt::Messages(messages)
    };
    let chat = ChatOptions { think: think(&b.think)?, ..Default::default() };
    let job = Job { model, empty: b.prompt.is_empty(), prompt, stream: b.stream != Some(false), format: b.format, options: b.options, keep_alive: b.keep_alive, is_chat: false, chat };
    respond(s, job).await
}

pub async fn chat(State(s): State<Shared>, OllamaJson(b): OllamaJson<ChatBody>) -> Result<Response, OllamaError> {
    if b.messages.iter().any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty())) {
        return Err(ApiError::bad_request("images are not supported yet").into());
    }
    let model = s.runtime.resolve(&b.model)?;
    let mut messages: Vec<Message> = b
        .messages
        .iter()
        .map(|m| Message {
            role: m.role.clone(),
            content: m.content.clone(),
            reasoning: m.thinking.clone().unwrap_or_default(),
            tool_calls: m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| ToolCall { id: c.id.clone().unwrap_or_default(), name: c.function.name.clone(), arguments: crate::chat::arguments_text(&c.function.arguments) })
                .collect(),
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
            tool_name: m.tool_name.clone().unwrap_or_default(),
        })
        .collect();
    let mut tools = Vec::new();
    for (i, t) in b.tools.iter().flatten().enumerate() {
        let f = &t["function"];
        tools.push(crate::chat::tool(&f["name"], &f["description"], f.get("parameters"), &format!("tools[{i}].function"))?);
    }
    crate::chat::check_tools(&tools, "tools")?;
    let chat = ChatOptions { tools, think: think(&b.think)?, parallel_tool_calls: true, ..Default::default() };
    if !messages.iter().any(|m| m.role == "system") {
        if let Some(sys) = &model.system {
            messages.insert(0, Message::new("system", sys.clone()));
        }
    }
    let job = Job { model, empty: b.messages.is_empty(), prompt: Prompt::Messages(messages), stream: b.stream != Some(false), format: b.format, options: b.options, keep_alive: b.keep_alive, is_chat: true, chat };
    respond(s, job).await
}

/// A chunk of the answer: `message` for chat, `response` for generate; reasoning in
/// `thinking`, tool calls (whole) in `tool_calls`, arguments as objects.
fn chunk(name: &str, is_chat: bool, text: &str, thinking: &str, calls: &[ToolCall]) -> Value {
    let mut v = if is_chat {
        json!({"model": name, "created_at": crate::wire::now_rfc3339(), "message": {"role": "assistant", "content": text}, "done": false})
    } else {
        json!({"model": name, "created_at": crate::wire::now_rfc3339(), "response": text, "done": false})
    };
    let at = if is_chat { &mut v["message"] } else { &mut v };
    if !thinking.is_empty() {
        at["thinking"] = json!(thinking);
    }
    if !calls.is_empty() {
        at["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"id": c.id, "function": {"index": i, "name": c.name, "arguments": crate::chat::arguments_object(&c.arguments)}}))
            .collect();
    }
    v
}

/// The last chunk: why it ended, durations in nanoseconds and token counts.
fn last(mut v: Value, reason: FinishReason, t: &Timings, load: Duration, total: Duration) -> Value {
    v["done"] = json!(true);
    v["done_reason"] = json!(match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    });
    v["total_duration"] = json!(total.as_nanos() as u64);
    v["load_duration"] = json!(load.as_nanos() as u64);
    v["prompt_eval_count"] = json!(t.prompt_tokens);
    v["prompt_eval_duration"] = json!(ms_to_ns(t.prompt_ms));
    v["eval_count"] = json!(t.generated_tokens);
    v["eval_duration"] = json!(ms_to_ns(t.generation_ms));
    v
}

async fn respond(s: Shared, job: Job) -> Result<Response, OllamaError> {
    let keep = keep_alive(&job.keep_alive)?;
    let o = options(&job.model, job.options.as_ref())?;
    let (json_mode, schema) = is_json_format(&job.format)?;
    let mut chat = job.chat;
    chat.json_schema = schema;
    let load = LoadOptions { num_ctx: o.num_ctx, keep_alive: keep };
    let name = job.model.name.clone();
    let is_chat = job.is_chat;
    // A raw prompt's answer is its text as it comes; a chat's is read into deltas.
    let raw = matches!(job.prompt, Prompt::Text(_));
    // An empty prompt loads the model (or, with keep_alive 0, unloads it).
    if job.empty {
        let unload = keep == Some(KeepAlive::For(Duration::ZERO));
        if unload {
            s.runtime.sched.unload(&name).await;
        } else {
            s.runtime.load(&job.model, &load).await?;
        }
        let mut v = json!({"model": name, "created_at": crate::wire::now_rfc3339(), "done": true, "done_reason": if unload { "unload" } else { "load" }});
        if is_chat {
            v["message"] = json!({"role": "assistant", "content": ""});
        } else {
            v["response"] = json!("");
        }
        return Ok(axum::Json(v).into_response());
    }
    let request = Generate { max_tokens: o.max_tokens, stop: o.stop, json: json_mode, chat, ..Generate::new(job.prompt, o.sampling) };
    let thinks = request.chat.think == Some(true);
    let generation = match s.runtime.generate(&job.model, &load, request).await {
        // In Ollama's words.
        Err(hearth_runtime::RuntimeError::Rejected(why)) if thinks && why.contains("does not support thinking") => {
            return Err(ApiError::bad_request(format!("\"{name}\" does not support thinking")).into());
        }
        other => other?,
    };
    let mut g = Observed::new(generation, s.metrics.clone());
    if !job.stream {
        let w = g.whole().await?;
        let m = &w.message;
        let v = last(chunk(&name, is_chat, &m.content, &m.reasoning, &m.tool_calls), w.reason, &w.timings, g.generation.load_duration, g.generation.started.elapsed());
        return Ok(axum::Json(v).into_response());
    }
    let lines = futures_util::stream::unfold(Some(g), move |g| {
        let name = name.clone();
        async move {
            let mut g = g?;
            loop {
                let line = match g.next().await? {
                    Ok(Event::Token { text, .. }) if raw => {
                        if text.is_empty() {
                            continue;
                        }
                        ndjson_line(&chunk(&name, is_chat, &text, "", &[]))
                    }
                    Ok(Event::Token { deltas, .. }) => {
                        let mut out = String::new();
                        for d in deltas {
                            match d {
                                Delta::Content(t) => out.push_str(&ndjson_line(&chunk(&name, is_chat, &t, "", &[]))),
                                Delta::Reasoning(t) => out.push_str(&ndjson_line(&chunk(&name, is_chat, "", &t, &[]))),
                                // Calls are sent whole, at the end.
                                Delta::ToolCall { .. } => {}
                            }
                        }
                        if out.is_empty() {
                            continue;
                        }
                        out
                    }
                    Ok(Event::Done { reason, timings, message, .. }) => {
                        let mut out = String::new();
                        if let Some(m) = message.filter(|m| !m.tool_calls.is_empty()) {
                            out.push_str(&ndjson_line(&chunk(&name, is_chat, "", "", &m.tool_calls)));
                        }
                        let v = last(chunk(&name, is_chat, "", "", &[]), reason, &timings, g.generation.load_duration, g.generation.started.elapsed());
                        out.push_str(&ndjson_line(&v));
                        return Some((out, None));
                    }
                    Err(e) => return Some((ndjson_line(&ollama_stream_error(&e)), None)),
                };
                return Some((line, Some(g)));
            }
        }
    });
    Ok(ndjson_response(crate::wire::stream_body(lines)))
}

#[derive(Deserialize)]
pub struct EmbedBody {
    model: String,
    input: Value,
    /// Cut inputs longer than the context (the default) instead of refusing them.
    #[serde(default)]
    truncate: Option<bool>,
    /// Keep the first this many dimensions (then normalized again).
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

fn inputs(v: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("invalid field `{field}`: expected strings"))))
            .collect(),
        _ => Err(ApiError::bad_request(format!("invalid field `{field}`: expected a string or a list of strings"))),
    }
}

pub async fn embed(State(s): State<Shared>, OllamaJson(b): OllamaJson<EmbedBody>) -> Result<Response, OllamaError> {
    let inputs = inputs(&b.input, "input")?;
    let model = s.runtime.resolve(&b.model)?;
    let o = options(&model, b.options.as_ref())?;
    let load = LoadOptions { num_ctx: o.num_ctx, keep_alive: keep_alive(&b.keep_alive)? };
    let started = std::time::Instant::now();
    if b.dimensions == Some(0) {
        return Err(ApiError::bad_request("invalid field `dimensions`: must be at least 1").into());
    }
    let mut e = s.runtime.embed(&model, &load, inputs, true, b.truncate.unwrap_or(true)).await?;
    if let Some(d) = b.dimensions {
        let have = e.vectors.first().map_or(0, Vec::len);
        if d > have {
            return Err(ApiError::bad_request(format!("invalid field `dimensions`: {d} is more than the model's {have}")).into());
        }
        for v in &mut e.vectors {
            v.truncate(d);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }
    Ok(axum::Json(json!({
        "model": model.name,
        "embeddings": e.vectors,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": e.load_duration.as_nanos() as u64,
        "prompt_eval_count": e.prompt_tokens,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct EmbeddingsBody {
    model: String,
    prompt: String,
    #[serde(default)]
    options: Option<Value>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

pub async fn embeddings(State(s): State<Shared>, OllamaJson(b): OllamaJson<EmbeddingsBody>) -> Result<Response, OllamaError> {
    let model = s.runtime.resolve(&b.model)?;
    let o = options(&model, b.options.as_ref())?;
    let load = LoadOptions { num_ctx: o.num_ctx, keep_alive: keep_alive(&b.keep_alive)? };
    let mut e = s.runtime.embed(&model, &load, vec![b.prompt], false, true).await?;
    Ok(axum::Json(json!({ "embedding": e.vectors.pop().unwrap_or_default() })).into_response())
}
