//! The OpenAI API (`/v1/*`), as the `openai` SDKs and Open WebUI call it, with llama-server's
//! `timings` added.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hearth_runtime::protocol::runner::{Generate, Message, Prompt};
use hearth_runtime::protocol::{ChatOptions, Delta, FinishReason, Logprobs, SamplingParams as Sampling, Timings, ToolCall};
use hearth_runtime::{Event, LoadOptions, Model, Options};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{openai_stream_error, parse, ApiError, OpenAiError, OpenAiJson};
use crate::observe::Observed;
use crate::state::Shared;

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
}

fn owner(name: &str) -> String {
    let path = name.rsplit_once(':').map_or(name, |x| x.0);
    match path.rsplit_once('/') {
        Some((ns, _)) => ns.rsplit('/').next().unwrap_or("library").to_string(),
        None => "library".into(),
    }
}

fn model_object(name: &str, created: u64) -> Value {
    json!({"id": name, "object": "model", "created": created, "owned_by": owner(name)})
}

async fn models(State(s): State<Shared>) -> Response {
    match s.runtime.store.list() {
        Ok(list) => {
            let data: Vec<Value> = list
                .iter()
                .map(|e| model_object(&e.manifest.name, e.modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())))
                .collect();
            axum::Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(e) => ApiError::internal(e.to_string()).openai(),
    }
}

async fn model(State(s): State<Shared>, Path(id): Path<String>) -> Result<Response, OpenAiError> {
    let m = s.runtime.resolve(&id)?;
    Ok(axum::Json(model_object(&m.name, crate::wire::unix_secs())).into_response())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<InToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// llama-server's name for an assistant turn's reasoning; `reasoning` is Ollama's.
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct InToolCall {
    #[serde(default)]
    id: String,
    function: InFunction,
}

#[derive(Deserialize)]
struct InFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<Value>,
}

/// Fields shared by chat and completions.
#[derive(Deserialize)]
struct Common {
    model: String,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    n: Option<u32>,
    /// llama-server's extension: keep generating past end-of-generation (benchmarks).
    #[serde(default)]
    ignore_eos: bool,
    /// Chat: `true` to get log-probabilities; completions: how many alternatives (0–20).
    #[serde(default)]
    logprobs: Option<Value>,
    /// Chat: how many alternatives per token (0–20).
    #[serde(default)]
    top_logprobs: Option<u32>,
    // llama-server's sampling extensions.
    #[serde(default)]
    top_k: Option<i32>,
    #[serde(default)]
    min_p: Option<f32>,
    #[serde(default)]
    typical_p: Option<f32>,
    #[serde(default)]
    repeat_penalty: Option<f32>,
    #[serde(default)]
    repeat_last_n: Option<i32>,
}

// The shared fields are parsed on their own (not `flatten`ed), so errors keep the field name.
#[derive(Deserialize)]
struct ChatBody {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    /// "none" turns thinking off; any other effort turns it on.
    #[serde(default)]
    reasoning_effort: Option<String>,
    #[serde(default)]
    chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

impl ChatBody {
    fn options(&self) -> Result<ChatOptions, ApiError> {
        let mut tools = Vec::new();
        for (i, t) in self.tools.iter().flatten().enumerate() {
            let field = format!("tools[{i}]");
            if t["type"].as_str().is_some_and(|k| k != "function") {
                continue;
            }
            let f = &t["function"];
            tools.push(crate::chat::tool(&f["name"], &f["description"], f.get("parameters"), &format!("{field}.function"))?);
        }
        crate::chat::check_tools(&tools, "tools")?;
        let mut o = ChatOptions {
            tools,
            tool_choice: crate::chat::openai_tool_choice(self.tool_choice.as_ref())?,
            // OpenAI's default.
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            template_kwargs: self.chat_template_kwargs.clone().unwrap_or_default(),
            ..Default::default()
        };
        // "none" turns thinking off; an effort goes to the template (gpt-oss reads it) and
        // leaves a model that cannot think as it is, as llama-server does.
        o.think = match self.reasoning_effort.as_deref() {
            None => o.template_kwargs.get("enable_thinking").and_then(Value::as_bool),
            Some("none") => Some(false),
            Some(effort @ ("minimal" | "low" | "medium" | "high")) => {
                o.template_kwargs.entry("reasoning_effort").or_insert_with(|| Value::String(effort.to_string()));
                None
            }
            Some(other) => return Err(ApiError::bad_request(format!("invalid field `reasoning_effort`: {other:?} is not none, minimal, low, medium or high"))),
        };
        Ok(o)
    }
}

#[derive(Deserialize)]
struct CompletionBody {
    prompt: Value,
}

impl Common {
    /// The model's stored options over llama.cpp's defaults (never the whole vocabulary:
    /// top-k 40, top-p 0.95, min-p 0.05, temperature 0.8), then the fields the request sets.
    fn options(&self, model: &Model) -> Result<Options, OpenAiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("invalid field `n`: only 1 choice is supported").into());
        }
        if let Some(t) = self.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            return Err(ApiError::bad_request(format!("invalid field `temperature`: {t} is not between 0 and 2")).into());
        }
        let mut o = model.options(Sampling::default())?;
        let s = &mut o.sampling;
        let set = |to: &mut f32, v: Option<f32>| {
            if let Some(v) = v {
                *to = v;
            }
        };
        set(&mut s.temperature, self.temperature);
        set(&mut s.top_p, self.top_p);
        set(&mut s.min_p, self.min_p);
        set(&mut s.typical_p, self.typical_p);
        set(&mut s.repeat_penalty, self.repeat_penalty);
        set(&mut s.presence_penalty, self.presence_penalty);
        set(&mut s.frequency_penalty, self.frequency_penalty);
        if let Some(k) = self.top_k {
            s.top_k = k;
        }
        if let Some(n) = self.repeat_last_n {
            s.repeat_last_n = n;
        }
        if let Some(seed) = self.seed {
            s.seed = u32::try_from(seed.rem_euclid(1 << 32)).ok();
        }
        Ok(o)
    }

    /// How many alternatives to report per token, when log-probabilities are asked for.
    fn logprobs(&self, is_chat: bool) -> Result<Option<u32>, ApiError> {
        let n = match (&self.logprobs, is_chat) {
            (None | Some(Value::Null), _) | (Some(Value::Bool(false)), true) => None,
            (Some(Value::Bool(true)), true) => Some(self.top_logprobs.unwrap_or(0)),
            (Some(Value::Number(n)), false) => Some(n.as_u64().unwrap_or(0) as u32),
            (Some(other), true) => return Err(ApiError::bad_request(format!("invalid field `logprobs`: expected true or false, got {other}"))),
            (Some(other), false) => return Err(ApiError::bad_request(format!("invalid field `logprobs`: expected a number, got {other}"))),
        };
        if let Some(n) = n {
            if n > 20 {
                return Err(ApiError::bad_request(format!("invalid field `top_logprobs`: {n} is more than 20")));
            }
        }
        Ok(n)
    }

    /// `response_format`: any JSON object, or JSON matching a schema.
    fn json(&self) -> Result<(bool, Option<Value>), ApiError> {
        match self.response_format.as_ref().map(|r| (r.kind.as_str(), r.json_schema.as_ref())) {
            None | Some(("text", _)) => Ok((false, None)),
            Some(("json_object", _)) => Ok((true, None)),
            Some(("json_schema", Some(js))) => match js.get("schema") {
                Some(schema @ Value::Object(_)) => Ok((false, Some(schema.clone()))),
                None | Some(Value::Null) => Ok((true, None)),
                Some(other) => Err(ApiError::bad_request(format!("invalid field `response_format.json_schema.schema`: expected an object, got {other}"))),
            },
            Some(("json_schema", None)) => Err(ApiError::bad_request("invalid field `response_format.json_schema`: missing")),
            Some((other, _)) => Err(ApiError::bad_request(format!("invalid field `response_format.type`: {other:?} is not text, json_object or json_schema"))),
        }
    }
}

fn text_of(c: &Option<Content>) -> String {
    match c {
        None => String::new(),
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => parts.iter().filter(|p| p.kind == "text").filter_map(|p| p.text.clone()).collect::<Vec<_>>().join(""),
    }
}

fn usage(t: &Timings) -> Value {
    json!({
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.generated_tokens,
        "total_tokens": t.prompt_tokens + t.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": t.cached_tokens},
    })
}

/// llama-server's `timings` object.
fn timings(t: &Timings) -> Value {
    let evaluated = t.prompt_tokens.saturating_sub(t.cached_tokens);
    json!({
        "cache_n": t.cached_tokens,
        "prompt_n": evaluated,
        "prompt_ms": t.prompt_ms,
        "prompt_per_second": if t.prompt_ms > 0.0 { evaluated as f64 * 1e3 / t.prompt_ms } else { 0.0 },
        "predicted_n": t.generated_tokens,
        "predicted_ms": t.generation_ms,
        "predicted_per_second": if t.generation_ms > 0.0 { t.generated_tokens.saturating_sub(1) as f64 * 1e3 / t.generation_ms } else { 0.0 },
        "draft_n": t.drafted_tokens,
        "draft_n_accepted": t.accepted_tokens,
    })
}

fn finish_reason(r: FinishReason, calls: bool) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::Stop if calls => "tool_calls",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// The answer as OpenAI's chat `message`.
fn chat_message(m: &hearth_runtime::protocol::AssistantMessage) -> Value {
    let mut v = json!({"role": "assistant", "content": m.content});
    if m.content.is_empty() && !m.tool_calls.is_empty() {
        v["content"] = Value::Null;
    }
    if !m.reasoning.is_empty() {
        // llama-server's name, and Ollama's `/v1` name.
        v["reasoning_content"] = json!(m.reasoning);
        v["reasoning"] = json!(m.reasoning);
    }
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = crate::chat::openai_tool_calls(&m.tool_calls);
    }
    v
}

/// A streamed delta as OpenAI's chunk `delta`.
fn chat_delta(d: &Delta) -> Value {
    match d {
        Delta::Content(t) => json!({"content": t}),
        Delta::Reasoning(t) => json!({"reasoning_content": t, "reasoning": t}),
        Delta::ToolCall { index, id, name, arguments } if !id.is_empty() => json!({"tool_calls": [{
            "index": index, "id": id, "type": "function", "function": {"name": name, "arguments": arguments},
        }]}),
        Delta::ToolCall { index, arguments, .. } => json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
    }
}

async fn chat(State(s): State<Shared>, body: Bytes) -> Result<Response, OpenAiError> {
    let common: Common = parse(&body)?;
    let (messages, chat) = chat_request(&body)?;
    run(s, common, Prompt::Messages(messages), chat).await
}

/// A chat completion request's conversation and chat options (also llama-server's
/// `/apply-template`).
pub(crate) fn chat_request(body: &[u8]) -> Result<(Vec<Message>, ChatOptions), ApiError> {
    let b: ChatBody = parse(body)?;
    if b.messages.is_empty() {
        return Err(ApiError::bad_request("invalid field `messages`: at least one message is needed"));
    }
    let chat = b.options()?;
    let messages = b
        .messages
        .iter()
        .map(|m| Message {
            role: m.role.clone(),
            content: text_of(&m.content),
            reasoning: m.reasoning_content.clone().or(m.reasoning.clone()).unwrap_or_default(),
            tool_calls: m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| ToolCall { id: c.id.clone(), name: c.function.name.clone(), arguments: crate::chat::arguments_text(&c.function.arguments) })
                .collect(),
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
            tool_name: m.name.clone().unwrap_or_default(),
        })
        .collect();
    Ok((messages, chat))
}

async fn completions(State(s): State<Shared>, body: Bytes) -> Result<Response, OpenAiError> {
    let (b, mut common): (CompletionBody, Common) = (parse(&body)?, parse(&body)?);
    let prompt = match &b.prompt {
        Value::String(p) => p.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_string(),
        _ => return Err(ApiError::bad_request("invalid field `prompt`: expected a string (or a list of one string)").into()),
    };
    // OpenAI's default for completions.
    if common.max_tokens.is_none() && common.max_completion_tokens.is_none() {
        common.max_tokens = Some(16);
    }
    run(s, common, Prompt::Text(prompt), ChatOptions::default()).await
}

async fn run(s: Shared, c: Common, prompt: Prompt, mut chat: ChatOptions) -> Result<Response, OpenAiError> {
    let is_chat = matches!(prompt, Prompt::Messages(_));
    let (json_mode, schema) = c.json()?;
    chat.json_schema = schema;
    let logprobs = c.logprobs(is_chat)?;
    let model = s.runtime.resolve(&c.model)?;
    let o = c.options(&model)?;
    let request = Generate {
        max_tokens: c.max_completion_tokens.or(c.max_tokens).or(o.max_tokens),
        // The request's stop strings replace the model's.
        stop: c.stop.map(Stop::into_vec).unwrap_or(o.stop),
        json: json_mode,
        ignore_eos: c.ignore_eos,
        logprobs,
        chat,
        ..Generate::new(prompt, o.sampling)
    };
    let generation = s.runtime.generate(&model, &LoadOptions { num_ctx: o.num_ctx, keep_alive: None }, request).await?;
    let mut g = Observed::new(generation, s.metrics.clone());
    let name = model.name;
    let id = format!("{}-{:x}", if is_chat { "chatcmpl" } else { "cmpl" }, crate::wire::rand_id());
    let created = crate::wire::unix_secs();
    let object = if is_chat { "chat.completion" } else { "text_completion" };
    if !c.stream {
        let w = g.whole().await?;
        let lp = logprobs.map(|_| logprobs_json(&w.logprobs, is_chat)).unwrap_or(Value::Null);
        let choice = if is_chat {
            let calls = !w.message.tool_calls.is_empty();
            json!({"index": 0, "message": chat_message(&w.message), "finish_reason": finish_reason(w.reason, calls), "logprobs": lp})
        } else {
            json!({"index": 0, "text": w.text, "finish_reason": finish_reason(w.reason, false), "logprobs": lp})
        };
        return Ok(axum::Json(json!({
            "id": id, "object": object, "created": created, "model": name,
            "choices": [choice], "usage": usage(&w.timings), "timings": timings(&w.timings),
        }))
        .into_response());
    }
    let include_usage = c.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let chunk_object = if is_chat { "chat.completion.chunk" } else { "text_completion" };
    let frame = move |choices: Value, extra: Option<(&str, Value)>| -> String {
        let mut v = json!({"id": id, "object": chunk_object, "created": created, "model": name, "choices": choices});
        if let Some((k, x)) = extra {
            v[k] = x;
        }
        format!("data: {}\n\n", serde_json::to_string(&v).expect("values serialize"))
    };
    let delta = move |text: &str, lp: Value| -> Value { json!([{"index": 0, "text": text, "finish_reason": null, "logprobs": lp}]) };
    // The role comes first, in a frame of its own (as OpenAI sends it).
    let first = is_chat.then(|| frame(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null, "logprobs": null}]), None));
    let frames = futures_util::stream::unfold(Some((g, Vec::<Logprobs>::new())), move |state| {
        let frame = frame.clone();
        async move {
            let (mut g, mut pending) = state?;
            loop {
                let out = match g.next().await? {
                    Ok(Event::Token { text, logprobs: l, deltas }) => {
                        pending.extend(l);
                        if is_chat {
                            if deltas.is_empty() {
                                continue;
                            }
                            let mut out = String::new();
                            for d in &deltas {
                                let lp = if pending.is_empty() { Value::Null } else { logprobs_json(&std::mem::take(&mut pending), true) };
                                out.push_str(&frame(json!([{"index": 0, "delta": chat_delta(d), "finish_reason": null, "logprobs": lp}]), None));
                            }
                            out
                        } else {
                            if text.is_empty() {
                                continue;
                            }
                            let lp = if pending.is_empty() { Value::Null } else { logprobs_json(&std::mem::take(&mut pending), false) };
                            frame(delta(&text, lp), None)
                        }
                    }
                    Ok(Event::Done { reason, timings: t, message, .. }) => {
                        let calls = crate::chat::has_calls(&message);
                        let last = if is_chat {
                            json!([{"index": 0, "delta": {}, "finish_reason": finish_reason(reason, calls), "logprobs": null}])
                        } else {
                            json!([{"index": 0, "text": "", "finish_reason": finish_reason(reason, false), "logprobs": null}])
                        };
                        let mut end = frame(last, Some(("timings", timings(&t))));
                        if include_usage {
                            end.push_str(&frame(json!([]), Some(("usage", usage(&t)))));
                        }
                        end.push_str("data: [DONE]\n\n");
                        return Some((end, None));
                    }
                    Err(e) => return Some((format!("data: {}\n\n", openai_stream_error(e)), None)),
                };
                return Some((out, Some((g, pending))));
            }
        }
    });
    let frames = futures_util::StreamExt::chain(futures_util::stream::iter(first), frames);
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], crate::wire::stream_body(frames)).into_response())
}

/// OpenAI's logprobs object: `{content: [{token, logprob, bytes, top_logprobs}]}` for chat,
/// `{tokens, token_logprobs, top_logprobs}` for completions.
fn logprobs_json(lps: &[Logprobs], is_chat: bool) -> Value {
    if is_chat {
        let content: Vec<Value> = lps
            .iter()
            .map(|l| {
                json!({
                    "token": l.chosen.token, "logprob": l.chosen.logprob, "bytes": l.chosen.bytes,
                    "top_logprobs": l.top.iter().map(|a| json!({"token": a.token, "logprob": a.logprob, "bytes": a.bytes})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "content": content })
    } else {
        json!({
            "tokens": lps.iter().map(|l| l.chosen.token.clone()).collect::<Vec<_>>(),
            "token_logprobs": lps.iter().map(|l| l.chosen.logprob).collect::<Vec<_>>(),
            "top_logprobs": lps.iter().map(|l| l.top.iter().map(|a| (a.token.clone(), json!(a.logprob))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        })
    }
}


#[derive(Deserialize)]
pub struct EmbeddingsBody {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
}

async fn embeddings(State(s): State<Shared>, OpenAiJson(b): OpenAiJson<EmbeddingsBody>) -> Result<Response, OpenAiError> {
    let base64 = match b.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::bad_request(format!("invalid field `encoding_format`: {other:?} is not \"float\" or \"base64\"")).into()),
    };
    let inputs: Vec<String> = match &b.input {
        Value::String(x) => vec![x.clone()],
        Value::Array(a) if a.iter().all(Value::is_string) => a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect(),
        _ => return Err(ApiError::bad_request("invalid field `input`: expected a string or a list of strings").into()),
    };
    if inputs.is_empty() {
        return Err(ApiError::bad_request("invalid field `input`: empty").into());
    }
    let model = s.runtime.resolve(&b.model)?;
    let e = s.runtime.embed(&model, &LoadOptions::default(), inputs, true, false).await?;
    let data: Vec<Value> = e
        .vectors
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            // base64: the floats' little-endian bytes, as OpenAI sends them.
            let embedding = if base64 {
                use base64::Engine;
                json!(base64::engine::general_purpose::STANDARD.encode(e.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>()))
            } else {
                json!(e)
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    }))
    .into_response())
}
