//! Chats with tools, reasoning and JSON schemas.
//!
//! A model whose Jinja template has tool syntax or thinks goes through llama.cpp's own chat
//! code (`common/chat.cpp`, through `cpp/chat_shim.cpp`): it renders the template with the
//! tools, detects the family's format, builds the (lazy) grammar that keeps calls valid and
//! parses the output, as llama-server does. Any other model gets hearth's *generic* format:
//! the tools are described in the system prompt, the answer is one JSON object
//! (`{"tool_calls": [..]}` or `{"response": ".."}`) held to the tools' schemas by a grammar,
//! and the conversation is rendered by the model's own template as usual.
//!
//! [`Chat::prepare`] turns messages and [`ChatOptions`] into a [`Prepared`] chat: the prompt,
//! the grammar, extra stops and an [`AnswerReader`] that turns the generated text into
//! [`Delta`]s and the final [`AssistantMessage`].

use std::collections::HashSet;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use hearth_protocol::runner::Message;
use hearth_protocol::{AssistantMessage, ChatOptions, Delta, Tool, ToolCall, ToolChoice};
use serde_json::{json, Value};

use crate::grammar::Grammar;
use crate::template::{ChatMessage, ChatTemplate};
use crate::{sys, EngineError, Model, Token};

extern "C" {
    fn hearth_string_free(s: *mut c_char);
    fn hearth_chat_init(model: *const sys::llama_model, override_src: *const c_char, err: *mut *mut c_char) -> *mut c_void;
    fn hearth_chat_free(c: *mut c_void);
    fn hearth_chat_caps(c: *const c_void, err: *mut *mut c_char) -> *mut c_char;
    fn hearth_chat_apply(c: *const c_void, inputs: *const c_char, err: *mut *mut c_char) -> *mut c_char;
    fn hearth_chat_parser_new(params: *const c_char, err: *mut *mut c_char) -> *mut c_void;
    fn hearth_chat_parser_free(p: *mut c_void);
    fn hearth_chat_parse(p: *const c_void, text: *const c_char, len: usize, partial: bool, err: *mut *mut c_char) -> *mut c_char;
    fn hearth_json_schema_to_grammar(schema: *const c_char, err: *mut *mut c_char) -> *mut c_char;
}

/// Takes a string the shim allocated (or its error) and frees it.
fn take(out: *mut c_char, err: *mut c_char) -> Result<String, String> {
    // SAFETY: both are NULL or NUL-terminated strings from the shim's malloc, freed once here.
    unsafe {
        let take_one = |p: *mut c_char| {
            let s = CStr::from_ptr(p).to_string_lossy().into_owned();
            hearth_string_free(p);
            s
        };
        if !out.is_null() {
            if !err.is_null() {
                hearth_string_free(err);
            }
            Ok(take_one(out))
        } else if !err.is_null() {
            Err(take_one(err))
        } else {
            Err("llama.cpp's chat code failed without saying why".into())
        }
    }
}

fn cstring(s: &str, what: &str) -> Result<CString, EngineError> {
    CString::new(s).map_err(|_| EngineError::InvalidRequest(format!("{what} contains a NUL character")))
}

/// A JSON schema as a GBNF grammar (llama.cpp's converter). A schema it cannot handle is an
/// error naming the unsupported part.
pub fn json_schema_to_grammar(schema: &Value) -> Result<String, EngineError> {
    let text = cstring(&schema.to_string(), "the JSON schema")?;
    let mut err = std::ptr::null_mut();
    // SAFETY: a NUL-terminated string; the shim catches every C++ exception.
    let out = unsafe { hearth_json_schema_to_grammar(text.as_ptr(), &mut err) };
    take(out, err).map_err(|why| EngineError::InvalidRequest(format!("unsupported JSON schema: {why}")))
}

/// llama.cpp's chat templates for one model.
struct NativeTemplates {
    ptr: NonNull<c_void>,
}

// SAFETY: the templates are immutable after init; calls are serialized by the Mutex around it.
unsafe impl Send for NativeTemplates {}

impl Drop for NativeTemplates {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { hearth_chat_free(self.ptr.as_ptr()) }
    }
}

impl NativeTemplates {
    /// The model's own template, or `source` instead.
    fn new(model: &Model, source: Option<&str>) -> Result<NativeTemplates, String> {
        let source = CString::new(source.unwrap_or_default()).map_err(|_| "the template contains a NUL character".to_string())?;
        let mut err = std::ptr::null_mut();
        // SAFETY: a loaded model; a NUL-terminated override (empty: the model's own template).
        let ptr = unsafe { hearth_chat_init(model.as_ptr(), source.as_ptr(), &mut err) };
        match NonNull::new(ptr) {
            Some(ptr) => {
                if !err.is_null() {
                    // SAFETY: the shim's string.
                    unsafe { hearth_string_free(err) }
                }
                Ok(NativeTemplates { ptr })
            }
            None => Err(take(std::ptr::null_mut(), err).unwrap_err()),
        }
    }

    fn caps(&self) -> Result<Value, String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: valid templates.
        let out = unsafe { hearth_chat_caps(self.ptr.as_ptr(), &mut err) };
        let text = take(out, err)?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    fn apply(&self, inputs: &Value) -> Result<Applied, String> {
        let text = CString::new(inputs.to_string()).map_err(|_| "the chat contains a NUL character".to_string())?;
        let mut err = std::ptr::null_mut();
        // SAFETY: valid templates and a NUL-terminated string; exceptions are caught.
        let out = unsafe { hearth_chat_apply(self.ptr.as_ptr(), text.as_ptr(), &mut err) };
        let text = take(out, err)?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}

/// What llama.cpp's `common_chat_templates_apply` returned.
#[derive(Debug, Clone, serde::Deserialize)]
struct Applied {
    format: i32,
    format_name: String,
    prompt: String,
    grammar: String,
    grammar_lazy: bool,
    grammar_triggers: Vec<Trigger>,
    preserved_tokens: Vec<String>,
    additional_stops: Vec<String>,
    generation_prompt: String,
    supports_thinking: bool,
    parser: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Trigger {
    /// llama.cpp's `common_grammar_trigger_type`: token, word, pattern, full pattern.
    #[serde(rename = "type")]
    kind: i32,
    value: String,
    token: Token,
}

/// llama.cpp's output parser for one request.
struct NativeParser {
    ptr: NonNull<c_void>,
}

// SAFETY: owned by one reader, used by one thread at a time.
unsafe impl Send for NativeParser {}

impl Drop for NativeParser {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { hearth_chat_parser_free(self.ptr.as_ptr()) }
    }
}

impl NativeParser {
    fn new(applied: &Applied, tools: bool) -> Result<NativeParser, String> {
        let params = json!({
            "format": applied.format,
            "generation_prompt": applied.generation_prompt,
            "parser": applied.parser,
            "reasoning": true,
            "tools": tools,
        });
        let text = CString::new(params.to_string()).map_err(|_| "NUL in the parser".to_string())?;
        let mut err = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string; exceptions are caught.
        let ptr = unsafe { hearth_chat_parser_new(text.as_ptr(), &mut err) };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(NativeParser { ptr }),
            None => Err(take(std::ptr::null_mut(), err).unwrap_err()),
        }
    }

    fn parse(&self, text: &str, partial: bool) -> Result<AssistantMessage, String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: valid parser; `text` is `len` bytes (not NUL-terminated, copied by the shim).
        let out = unsafe { hearth_chat_parse(self.ptr.as_ptr(), text.as_ptr().cast(), text.len(), partial, &mut err) };
        let v: Value = serde_json::from_str(&take(out, err)?).map_err(|e| e.to_string())?;
        let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        Ok(AssistantMessage {
            content: s(&v, "content"),
            reasoning: s(&v, "reasoning_content"),
            tool_calls: v["tool_calls"]
                .as_array()
                .map(|a| a.iter().map(|c| ToolCall { id: s(c, "id"), name: s(c, "name"), arguments: s(c, "arguments") }).collect())
                .unwrap_or_default(),
        })
    }
}

/// A model's chat: llama.cpp's chat code when its template has tool syntax or thinks, else
/// its [`ChatTemplate`] with the generic tool format.
pub struct Chat {
    native: Option<Mutex<NativeTemplates>>,
    /// The template writes tool call ids back into the prompt, and its format may give a
    /// call's id after its arguments (Mistral's `[TOOL_CALLS]`): see [`AnswerReader`].
    late_ids: bool,
    fallback: ChatTemplate,
    thinking: bool,
    tool_format: String,
    source: String,
}

/// A chat ready to generate.
pub struct Prepared {
    pub prompt: String,
    pub grammar: Option<Grammar>,
    /// Stops the format adds (end-of-turn markers written as text).
    pub stops: Vec<String>,
    /// Special tokens to be written out as text (the parser needs to see them).
    pub preserved: Vec<Token>,
    pub reader: AnswerReader,
}

impl Chat {
    /// The chat of `model`; `fallback` renders plain chats of models without tool syntax.
    pub fn new(model: &Arc<Model>, fallback: ChatTemplate) -> Chat {
        let mut chat = Chat { native: None, late_ids: false, fallback, thinking: false, tool_format: "generic".into(), source: String::new() };
        if let Some(source) = &model.info().chat_template {
            chat.source = source.clone();
            // Before llama.cpp's unlimited Jinja engine sees it (see `prepare_native`).
            let probe = json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": [{"id": "a1b2c3d4e", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "a1b2c3d4e", "content": "ok"}]);
            let tools = json!([{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object", "properties": {}}}}]);
            let info = model.info();
            if let Err(e) = crate::template::runaway(source, &probe, Some(&tools), &info.bos_token, &info.eos_token) {
                tracing::warn!("{e}; llama.cpp's chat code is not used for this model (tools use the generic format)");
                return chat;
            }
            match NativeTemplates::new(model, None) {
                Ok(t) => {
                    let caps = t.caps().unwrap_or_default();
                    let tools = caps["supports_tool_calls"].as_bool().unwrap_or(false);
                    let probe = t.apply(&json!({"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true}));
                    let thinking = probe.as_ref().map(|a| a.supports_thinking).unwrap_or(false);
                    if tools || thinking {
                        let with_tools = t.apply(&json!({
                            "messages": [{"role": "user", "content": "Hi"}],
                            "tools": [{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object", "properties": {}}}}],
                        }));
                        chat.tool_format = match with_tools {
                            Ok(a) if tools => a.format_name,
                            _ => "generic".into(),
                        };
                        chat.thinking = thinking;
                        chat.late_ids = renders_ids(&t);
                        chat.native = Some(Mutex::new(t));
                    }
                }
                Err(e) => tracing::warn!("llama.cpp's chat code cannot use the model's template ({e}); tools use the generic format"),
            }
        }
        chat
    }

    /// Always llama.cpp's chat code, with `source` as the template (conformance tests; a
    /// template given on the command line).
    pub fn from_template(model: &Arc<Model>, source: &str) -> Result<Chat, EngineError> {
        let t = NativeTemplates::new(model, Some(source)).map_err(EngineError::Template)?;
        let thinking = t
            .apply(&json!({"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true}))
            .map(|a| a.supports_thinking)
            .unwrap_or(false);
        let fallback = ChatTemplate::Jinja { source: source.to_string(), bos_token: String::new(), eos_token: String::new() };
        let late_ids = renders_ids(&t);
        Ok(Chat { native: Some(Mutex::new(t)), late_ids, fallback, thinking, tool_format: "native".into(), source: source.to_string() })
    }

    /// The template can think.
    pub fn thinking(&self) -> bool {
        self.thinking
    }

    /// "generic", or the name of llama.cpp's format for the template's tool syntax.
    pub fn tool_format(&self) -> &str {
        &self.tool_format
    }

    /// The model's own chat template source (empty without one).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` with `opts` for `model`.
    pub fn prepare(&self, model: &Model, messages: &[Message], opts: &ChatOptions) -> Result<Prepared, EngineError> {
        check_tools(&opts.tools, &opts.tool_choice)?;
        if opts.think == Some(true) && !self.thinking {
            return Err(EngineError::InvalidRequest("the model does not support thinking".into()));
        }
        match &self.native {
            Some(native) => self.prepare_native(model, &native.lock().unwrap_or_else(|e| e.into_inner()), messages, opts),
            None => self.prepare_generic(messages, opts),
        }
    }

    fn prepare_native(&self, model: &Model, t: &NativeTemplates, messages: &[Message], opts: &ChatOptions) -> Result<Prepared, EngineError> {
        let (tools, choice): (Vec<&Tool>, &str) = match &opts.tool_choice {
            ToolChoice::Auto => (opts.tools.iter().collect(), "auto"),
            ToolChoice::None => (opts.tools.iter().collect(), "none"),
            ToolChoice::Required => (opts.tools.iter().collect(), "required"),
            ToolChoice::Function(name) => (opts.tools.iter().filter(|t| &t.name == name).collect(), "required"),
        };
        let kwargs: serde_json::Map<String, Value> =
            opts.template_kwargs.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect();
        let enable_thinking = opts
            .think
            .or_else(|| opts.template_kwargs.get("enable_thinking").and_then(Value::as_bool))
            .unwrap_or(true);
        let rendered: Vec<Value> = messages.iter().map(openai_message).collect();
        // llama.cpp's Jinja engine has no limits: a template that loops for ever (or writes
        // gigabytes) would hang or kill the runner. The same chat goes through minijinja with
        // its limits first; a template that runs away there is refused.
        if let ChatTemplate::Jinja { source, bos_token, eos_token } = &self.fallback {
            let tools_json: Option<Value> = (!tools.is_empty()).then(|| {
                tools
                    .iter()
                    .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                    .collect()
            });
            crate::template::runaway(source, &Value::Array(rendered.clone()), tools_json.as_ref(), bos_token, eos_token)
                .map_err(EngineError::Template)?;
        }
        let mut inputs = json!({
            "messages": rendered,
            "tool_choice": choice,
            "parallel_tool_calls": opts.parallel_tool_calls,
            "enable_thinking": enable_thinking,
            "reasoning_format": "auto",
            "chat_template_kwargs": kwargs,
            "add_generation_prompt": true,
        });
        if !tools.is_empty() {
            inputs["tools"] = tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
        }
        if let Some(schema) = &opts.json_schema {
            // Checked here so that a schema llama.cpp cannot convert is named as such.
            json_schema_to_grammar(schema)?;
            inputs["json_schema"] = Value::String(schema.to_string());
        }
        let applied = t.apply(&inputs).map_err(EngineError::Template)?;
        tracing::debug!(
            format = applied.format_name,
            lazy = applied.grammar_lazy,
            grammar_bytes = applied.grammar.len(),
            triggers = ?applied.grammar_triggers.iter().map(|t| (t.kind, t.value.as_str())).collect::<Vec<_>>(),
            generation_prompt = applied.generation_prompt,
            "chat rendered by llama.cpp's chat code"
        );
        tracing::trace!(grammar = applied.grammar, "the chat's grammar");
        let vocab_token = |text: &str| -> Option<Token> {
            match model.tokenize(text, false, true) {
                Ok(t) if t.len() == 1 => Some(t[0]),
                _ => None,
            }
        };
        let preserved: Vec<Token> = applied.preserved_tokens.iter().filter_map(|t| vocab_token(t)).collect();
        // llama.cpp's grammar for a required call lets free text come first; a client that
        // requires a call gets the call at once (a small model could ramble to its token limit).
        let gbnf = if matches!(opts.tool_choice, ToolChoice::Required | ToolChoice::Function(_)) {
            required_call_grammar(&applied.grammar)
        } else {
            applied.grammar.clone()
        };
        let grammar = (!applied.grammar.is_empty()).then(|| {
            let mut patterns = Vec::new();
            let mut tokens = Vec::new();
            for t in &applied.grammar_triggers {
                match t.kind {
                    0 => tokens.extend(if t.token >= 0 { Some(t.token) } else { vocab_token(&t.value) }),
                    1 => match vocab_token(&t.value) {
                        Some(tok) if preserved.contains(&tok) => tokens.push(tok),
                        _ => patterns.push(regex_escape(&t.value)),
                    },
                    2 => patterns.push(t.value.clone()),
                    _ => {
                        let p = &t.value;
                        let mut anchored = String::new();
                        if !p.starts_with('^') {
                            anchored.push('^');
                        }
                        anchored.push_str(p);
                        if !p.ends_with('$') {
                            anchored.push('$');
                        }
                        patterns.push(anchored);
                    }
                }
            }
            Grammar::Chat {
                gbnf,
                lazy: applied.grammar_lazy,
                trigger_patterns: patterns,
                trigger_tokens: tokens,
                prefill: applied.generation_prompt.clone(),
            }
        });
        let parser = NativeParser::new(&applied, !opts.tools.is_empty() && opts.tool_choice != ToolChoice::None).map_err(EngineError::Template)?;
        Ok(Prepared {
            prompt: applied.prompt,
            grammar,
            stops: applied.additional_stops,
            preserved,
            reader: AnswerReader { late_ids: self.late_ids, one_call: !opts.parallel_tool_calls, ..AnswerReader::new(Parser::Native(parser)) },
        })
    }

    fn prepare_generic(&self, messages: &[Message], opts: &ChatOptions) -> Result<Prepared, EngineError> {
        let calls = !opts.tools.is_empty() && opts.tool_choice != ToolChoice::None;
        let rendered = generic::messages(messages, if calls { Some(opts) } else { None });
        let prompt = self.fallback.render(&rendered, true)?;
        let (grammar, parser) = if calls {
            let schema = generic::schema(opts);
            (Some(Grammar::Gbnf(json_schema_to_grammar(&schema)?)), Parser::Generic)
        } else if let Some(schema) = &opts.json_schema {
            (Some(Grammar::Gbnf(json_schema_to_grammar(schema)?)), Parser::Plain)
        } else {
            (None, Parser::Plain)
        };
        Ok(Prepared { prompt, grammar, stops: Vec::new(), preserved: Vec::new(), reader: AnswerReader::new(parser) })
    }
}

/// Whether the template writes a call's id into the prompt (a call fed back with the id
/// `a1b2c3d4e` shows it).
fn renders_ids(t: &NativeTemplates) -> bool {
    let probe = json!({
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "a1b2c3d4e", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a1b2c3d4e", "content": "ok"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object", "properties": {}}}}],
        "add_generation_prompt": true,
    });
    t.apply(&probe).map(|a| a.prompt.contains("a1b2c3d4e")).unwrap_or(false)
}

/// Tool names must be usable in a grammar and unique; a named choice must name one of them.
fn check_tools(tools: &[Tool], choice: &ToolChoice) -> Result<(), EngineError> {
    let mut seen = HashSet::new();
    for t in tools {
        if t.name.is_empty() || t.name.len() > 256 || t.name.chars().any(|c| c.is_control()) {
            return Err(EngineError::InvalidRequest(format!("tool name {:?} is not valid: 1 to 256 characters, no control characters", t.name)));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(EngineError::InvalidRequest(format!("two tools are named {:?}", t.name)));
        }
        if !t.parameters.is_object() {
            return Err(EngineError::InvalidRequest(format!("the parameters of tool {:?} are not a JSON schema object", t.name)));
        }
    }
    match choice {
        ToolChoice::Function(name) if !seen.contains(name.as_str()) => {
            Err(EngineError::InvalidRequest(format!("tool_choice names {name:?}, which is not one of the tools")))
        }
        ToolChoice::Required | ToolChoice::Function(_) if tools.is_empty() => {
            Err(EngineError::InvalidRequest("tool_choice requires a tool call, but no tools were given".into()))
        }
        _ => Ok(()),
    }
}

/// A message in OpenAI's chat shape, as llama.cpp's chat code reads it.
fn openai_message(m: &Message) -> Value {
    let mut v = json!({"role": m.role, "content": m.content});
    if !m.reasoning.is_empty() {
        v["reasoning_content"] = m.reasoning.clone().into();
    }
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
    }
    if !m.tool_call_id.is_empty() {
        v["tool_call_id"] = m.tool_call_id.clone().into();
    }
    if !m.tool_name.is_empty() {
        v["name"] = m.tool_name.clone().into();
    }
    v
}

/// hearth's one change to llama.cpp's tool-call grammars: where a call is required, the
/// grammar's root lets free text come before the calls (`root ::= "<gen prompt>" space
/// until-161? tool-calls`); hearth drops those optional `until-N?` references of the root rule,
/// so the answer starts with the call (reasoning blocks stay allowed). Any other grammar is
/// returned as it is.
pub fn required_call_grammar(gbnf: &str) -> String {
    let mut out = String::with_capacity(gbnf.len());
    for line in gbnf.split_inclusive('\n') {
        match line.strip_prefix("root ::= ") {
            Some(rule) if line.contains("tool-call") => {
                let kept: Vec<&str> = rule
                    .split(' ')
                    .filter(|part| {
                        let p = part.trim_end();
                        !(p.starts_with("until-") && p.ends_with('?') && p[6..p.len() - 1].chars().all(|c| c.is_ascii_digit()))
                    })
                    .collect();
                out.push_str("root ::= ");
                out.push_str(&kept.join(" "));
                if line.ends_with('\n') && !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            _ => out.push_str(line),
        }
    }
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".^$|()*+?[]{}\\-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// hearth's tool format for templates without tool syntax.
mod generic {
    use super::*;

    /// The system prompt part that describes the tools and the answer format.
    fn instructions(opts: &ChatOptions) -> String {
        let tools: Vec<Value> = opts
            .tools
            .iter()
            .filter(|t| match &opts.tool_choice {
                ToolChoice::Function(n) => &t.name == n,
                _ => true,
            })
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        let call = r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<the arguments>}}]}"#;
        let how = match opts.tool_choice {
            ToolChoice::Auto => format!(
                "Answer with one JSON object and nothing else: {call} to call tools, or {{\"response\": \"<your answer>\"}} to answer directly."
            ),
            _ => format!("Answer with one JSON object and nothing else, calling a tool: {call}"),
        };
        format!(
            "You can call these tools; each is given with its name, what it does and the JSON schema of its arguments:\n{}\n\n{how}\nThe result of a call comes back in a message with a \"tool_response\".",
            serde_json::to_string_pretty(&tools).unwrap_or_default()
        )
    }

    /// The conversation for the model's own template: the tool instructions in the system
    /// message, calls and results written as JSON.
    pub(super) fn messages(messages: &[Message], tools: Option<&ChatOptions>) -> Vec<ChatMessage> {
        let mut out: Vec<ChatMessage> = Vec::new();
        if let Some(opts) = tools {
            let text = instructions(opts);
            match messages.first() {
                Some(m) if m.role == "system" => {}
                _ => out.push(ChatMessage::new("system", text.clone())),
            }
        }
        for (i, m) in messages.iter().enumerate() {
            let (role, content) = if m.role == "assistant" && !m.tool_calls.is_empty() {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| json!({"name": c.name, "arguments": serde_json::from_str::<Value>(&c.arguments).unwrap_or(Value::String(c.arguments.clone()))}))
                    .collect();
                ("assistant", json!({"tool_calls": calls}).to_string())
            } else if m.role == "assistant" && tools.is_some() {
                ("assistant", json!({"response": m.content}).to_string())
            } else if m.role == "tool" {
                let mut r = json!({"content": m.content});
                if !m.tool_name.is_empty() {
                    r["name"] = m.tool_name.clone().into();
                }
                if !m.tool_call_id.is_empty() {
                    r["id"] = m.tool_call_id.clone().into();
                }
                ("user", json!({"tool_response": r}).to_string())
            } else if i == 0 && m.role == "system" && tools.is_some() {
                ("system", format!("{}\n\n{}", m.content, instructions(tools.unwrap_or(&ChatOptions::default()))))
            } else {
                (m.role.as_str(), m.content.clone())
            };
            // Consecutive results of several calls become one user turn.
            match out.last_mut() {
                Some(last) if role == "user" && last.role == "user" && m.role == "tool" => {
                    last.content.push_str("\n");
                    last.content.push_str(&content);
                }
                _ => out.push(ChatMessage::new(role, content)),
            }
        }
        out
    }

    /// `schema` to be embedded in a larger one: its `$defs` (or `definitions`) moved into
    /// `defs` under names that start with `prefix`, and its local `$ref`s (`#`, `#/$defs/..`,
    /// `#/definitions/..`) pointed there.
    pub(super) fn embeddable(schema: &Value, prefix: &str, defs: &mut serde_json::Map<String, Value>) -> Value {
        fn rewrite(v: &mut Value, prefix: &str, root_used: &mut bool) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get_mut("$ref") {
                        if r == "#" {
                            *r = format!("#/$defs/{prefix}root");
                            *root_used = true;
                        } else if let Some(rest) = r.strip_prefix("#/$defs/").or_else(|| r.strip_prefix("#/definitions/")) {
                            *r = format!("#/$defs/{prefix}{rest}");
                        }
                    }
                    m.values_mut().for_each(|x| rewrite(x, prefix, root_used));
                }
                Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, prefix, root_used)),
                _ => {}
            }
        }
        let mut out = schema.clone();
        let mut root_used = false;
        let mut own = serde_json::Map::new();
        if let Value::Object(m) = &mut out {
            for key in ["$defs", "definitions"] {
                if let Some(Value::Object(d)) = m.remove(key) {
                    own.extend(d);
                }
            }
        }
        rewrite(&mut out, prefix, &mut root_used);
        for (name, mut def) in own {
            rewrite(&mut def, prefix, &mut root_used);
            defs.insert(format!("{prefix}{name}"), def);
        }
        if root_used {
            defs.insert(format!("{prefix}root"), out.clone());
        }
        out
    }

    /// The schema every answer must match.
    pub(super) fn schema(opts: &ChatOptions) -> Value {
        let mut defs = serde_json::Map::new();
        let calls: Vec<Value> = opts
            .tools
            .iter()
            .enumerate()
            .filter(|(_, t)| match &opts.tool_choice {
                ToolChoice::Function(n) => &t.name == n,
                _ => true,
            })
            .map(|(i, t)| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, "arguments": embeddable(&t.parameters, &format!("tool{i}_"), &mut defs)},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut list = json!({"type": "array", "items": {"anyOf": calls}, "minItems": 1});
        if !opts.parallel_tool_calls {
            list["maxItems"] = 1.into();
        }
        let call = json!({
            "type": "object",
            "properties": {"tool_calls": list},
            "required": ["tool_calls"],
            "additionalProperties": false,
        });
        let mut schema = match opts.tool_choice {
            ToolChoice::Auto => {
                let answer = match &opts.json_schema {
                    Some(s) => embeddable(s, "response_", &mut defs),
                    None => json!({"type": "string"}),
                };
                json!({"anyOf": [call, {
                    "type": "object",
                    "properties": {"response": answer},
                    "required": ["response"],
                    "additionalProperties": false,
                }]})
            }
            _ => call,
        };
        if !defs.is_empty() {
            schema["$defs"] = Value::Object(defs);
        }
        schema
    }

    /// The calls of `{"tool_calls": [...` so far, each once (small models repeat themselves),
    /// and whether a whole call came twice; `None` when the text is not a call list. A call
    /// is there once its name is complete, with its arguments as written so far: the model's
    /// JSON without the whitespace outside strings, so that a call's arguments only grow as
    /// the model writes (and stream in pieces), and end as what was streamed. A call being
    /// written that so far matches one already made is held back until it differs.
    fn calls_so_far(text: &str) -> Option<(Vec<ToolCall>, bool)> {
        let rest = text.trim_start().strip_prefix('{')?.trim_start().strip_prefix("\"tool_calls\"")?;
        let mut rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('[')?;
        let mut out: Vec<ToolCall> = Vec::new();
        let mut repeated = false;
        loop {
            rest = rest.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
            if !rest.starts_with('{') {
                return Some((out, repeated));
            }
            let end = value_end(rest);
            let Some(call) = call_parts(&rest[..end.unwrap_or(rest.len())], end.is_some()) else {
                return Some((out, repeated));
            };
            match end {
                Some(n) => {
                    if out.contains(&call) {
                        repeated = true;
                    } else {
                        out.push(call);
                    }
                    rest = &rest[n..];
                }
                None => {
                    if !out.iter().any(|c| c.name == call.name && c.arguments.starts_with(&call.arguments)) {
                        out.push(call);
                    }
                    return Some((out, repeated));
                }
            }
        }
    }

    /// Where a scan of JSON text is: inside a string (and after a backslash there) or not.
    #[derive(Default)]
    struct Scan {
        in_string: bool,
        escaped: bool,
    }

    impl Scan {
        /// Takes the next character; true when it is part of a string (its quotes included).
        fn in_string(&mut self, c: char) -> bool {
            if self.in_string {
                match c {
                    _ if self.escaped => self.escaped = false,
                    '\\' => self.escaped = true,
                    '"' => self.in_string = false,
                    _ => {}
                }
                return true;
            }
            self.in_string = c == '"';
            self.in_string
        }
    }

    /// The length of the JSON object or array that `text` starts with, if it is complete.
    fn value_end(text: &str) -> Option<usize> {
        let (mut depth, mut scan) = (0usize, Scan::default());
        for (i, c) in text.char_indices() {
            if scan.in_string(c) {
                continue;
            }
            match c {
                '{' | '[' => depth += 1,
                '}' | ']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// JSON text without the whitespace outside its strings.
    fn minify(text: &str) -> String {
        let mut scan = Scan::default();
        text.chars().filter(|&c| scan.in_string(c) || !c.is_whitespace()).collect()
    }

    /// A call object `{"name": "..", "arguments": ..}` (the grammar keeps that order), whole
    /// or being written: its name once complete, and its arguments so far.
    fn call_parts(obj: &str, whole: bool) -> Option<ToolCall> {
        let rest = obj.strip_prefix('{')?.trim_start().strip_prefix("\"name\"")?.trim_start().strip_prefix(':')?.trim_start();
        let mut strings = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        let name = strings.next()?.ok()?;
        let rest = rest[strings.byte_offset()..].trim_start();
        let arguments = match rest.strip_prefix(',').map(str::trim_start).and_then(|r| r.strip_prefix("\"arguments\"")) {
            Some(r) => {
                let r = r.trim_start().strip_prefix(':').unwrap_or("");
                let r = if whole { r.trim_end().strip_suffix('}').unwrap_or(r) } else { r };
                minify(r)
            }
            None if whole => "{}".into(),
            None => String::new(),
        };
        Some(ToolCall { id: String::new(), name, arguments })
    }

    /// The answer so far (see [`parse`]), and whether the model began to repeat a call: then
    /// it has said all it will.
    pub(super) fn parse_checked(text: &str, partial: bool) -> (AssistantMessage, bool) {
        if let Some((tool_calls, repeated)) = calls_so_far(text) {
            return (AssistantMessage { tool_calls, ..Default::default() }, repeated);
        }
        (parse(text, partial), false)
    }

    pub(super) fn parse(text: &str, partial: bool) -> AssistantMessage {
        if let Some((tool_calls, _)) = calls_so_far(text) {
            return AssistantMessage { tool_calls, ..Default::default() };
        }
        if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
            if let Some(r) = v.get("response") {
                let content = match r {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return AssistantMessage { content, ..Default::default() };
            }
        }
        if partial {
            return AssistantMessage { content: partial_response(text).unwrap_or_default(), ..Default::default() };
        }
        // Cut short (a token limit): what there is, as text.
        AssistantMessage { content: partial_response(text).unwrap_or_else(|| text.to_string()), ..Default::default() }
    }

    /// The decoded start of `{"response": "...` while the string is still being written.
    fn partial_response(text: &str) -> Option<String> {
        let rest = text.trim_start().strip_prefix('{')?.trim_start().strip_prefix("\"response\"")?;
        let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => {
                    let esc = chars.clone().take(5).collect::<String>();
                    let decoded = match esc.chars().next() {
                        Some('u') if esc.len() == 5 => {
                            let code = u32::from_str_radix(&esc[1..5], 16).ok()?;
                            chars.nth(4);
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        Some('u') | None => break,
                        Some(e) => {
                            chars.next();
                            match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                'b' => '\u{8}',
                                'f' => '\u{c}',
                                other => other,
                            }
                        }
                    };
                    out.push(decoded);
                }
                c => out.push(c),
            }
        }
        Some(out)
    }
}

enum Parser {
    /// Plain text: the content is the text.
    Plain,
    Generic,
    Native(NativeParser),
}

/// Reads a chat's answer as it is generated: deltas as text comes, the whole message at the
/// end. Tool calls keep the model's ids, or get ids (`call_` and 24 random characters) that
/// stay the same throughout.
///
/// For a template that writes ids back into the prompt (`late_ids`), a call is streamed only
/// once its id is parsed (Mistral writes it after the arguments), and ids it must make up are
/// 9 letters and digits, which such templates accept.
pub struct AnswerReader {
    parser: Parser,
    text: String,
    last: AssistantMessage,
    ids: Vec<String>,
    late_ids: bool,
    /// The client asked for at most one call (`parallel_tool_calls: false`): later ones are
    /// not reported (the format's grammar may allow several).
    one_call: bool,
    /// The model began to repeat itself (a call it already made): see [`Self::said_all`].
    repeated: bool,
}

impl AnswerReader {
    fn new(parser: Parser) -> AnswerReader {
        AnswerReader {
            parser,
            text: String::new(),
            last: AssistantMessage::default(),
            ids: Vec::new(),
            late_ids: false,
            one_call: false,
            repeated: false,
        }
    }

    fn parse(&mut self, partial: bool) -> Result<AssistantMessage, String> {
        match &self.parser {
            Parser::Plain => Ok(AssistantMessage { content: self.text.clone(), ..Default::default() }),
            Parser::Generic => {
                let (m, repeated) = generic::parse_checked(&self.text, partial);
                self.repeated |= repeated;
                Ok(m)
            }
            Parser::Native(p) => p.parse(&self.text, partial),
        }
    }

    fn with_ids(&mut self, mut m: AssistantMessage) -> AssistantMessage {
        if self.one_call {
            m.tool_calls.truncate(1);
        }
        for (i, call) in m.tool_calls.iter_mut().enumerate() {
            if self.ids.len() <= i {
                self.ids.push(match (call.id.is_empty(), self.late_ids) {
                    (false, _) => call.id.clone(),
                    (true, false) => new_call_id(),
                    (true, true) => new_call_id()[5..14].to_string(),
                });
            }
            call.id = self.ids[i].clone();
        }
        m
    }

    /// The answer is complete even if the model goes on: it began to repeat a call it already
    /// made (small models loop over the generic format's call list). The generation can stop.
    pub fn said_all(&self) -> bool {
        self.repeated
    }

    /// More generated text: what it adds to the answer.
    pub fn push(&mut self, text: &str) -> Vec<Delta> {
        if text.is_empty() {
            return Vec::new();
        }
        self.text.push_str(text);
        if matches!(self.parser, Parser::Plain) {
            // All of it is content: no need to read the whole answer again at each token.
            self.last.content.push_str(text);
            return vec![Delta::Content(text.to_string())];
        }
        match self.parse(true) {
            Ok(mut m) => {
                if self.late_ids && m.tool_calls.last().is_some_and(|c| c.id.is_empty()) {
                    m.tool_calls.pop();
                }
                let m = self.with_ids(m);
                let d = hearth_protocol::chat::deltas(&self.last, &m);
                self.last = m;
                d
            }
            Err(_) => Vec::new(),
        }
    }

    /// The end of the text (`cut`: it ended before the model finished, so it may be an
    /// unfinished call): the last deltas and the whole answer.
    pub fn finish(&mut self, text: &str, cut: bool) -> (Vec<Delta>, AssistantMessage) {
        self.text.push_str(text);
        let m = match self.parse(cut) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("the model's answer does not parse in its tool format ({e}); returned as text");
                match self.parse(true) {
                    Ok(m) => m,
                    Err(_) => AssistantMessage { content: self.text.clone(), ..Default::default() },
                }
            }
        };
        // A call cut off by the token limit stays, unfinished, as llama-server returns it (the
        // finish reason says `length`).
        let m = self.with_ids(m);
        let d = hearth_protocol::chat::deltas(&self.last, &m);
        self.last = m.clone();
        (d, m)
    }
}

fn new_call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::from("call_");
    let mut bits = 0u64;
    for i in 0..24 {
        if i % 8 == 0 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
            bits = h.finish();
        }
        out.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
        bits /= ALPHABET.len() as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> ChatOptions {
        ChatOptions {
            tools: vec![Tool {
                name: "get_weather".into(),
                description: "Weather of a city".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn plain_answers_stream_piece_by_piece() {
        let mut r = AnswerReader::new(Parser::Plain);
        let mut deltas = Vec::new();
        for piece in ["Hel", "", "lo ", "wörld"] {
            deltas.extend(r.push(piece));
        }
        assert_eq!(deltas, ["Hel", "lo ", "wörld"].map(|t| Delta::Content(t.into())));
        let (d, m) = r.finish("!", false);
        assert_eq!(d, [Delta::Content("!".into())]);
        assert_eq!(m, AssistantMessage { content: "Hello wörld!".into(), ..Default::default() });
    }

    #[test]
    fn generic_answers_parse_and_stream() {
        let mut r = AnswerReader::new(Parser::Generic);
        let mut content = String::new();
        for piece in ["{\"res", "ponse\": \"Hel", "lo \\\"you", "\\\"\\u00e9", "!\"}"] {
            for d in r.push(piece) {
                if let Delta::Content(t) = d {
                    content.push_str(&t);
                }
            }
        }
        let (_, m) = r.finish("", false);
        assert_eq!(m.content, "Hello \"you\"é!");
        let twice = r#"{"tool_calls": [{"name": "f", "arguments": {}}, {"name": "f", "arguments": {}}, {"name": "f", "arguments": {"a": 1}}]}"#;
        assert_eq!(generic::parse(twice, false).tool_calls.len(), 2);
        // A call streams once its name is whole: id and name first, then its arguments in
        // pieces (the model's JSON without whitespace outside strings), which add up to the
        // final arguments.
        assert_eq!(content, m.content);
        let mut r2 = AnswerReader::new(Parser::Generic);
        assert!(r2.push(r#"{"tool_calls": [{"name": "f"#).is_empty(), "no name yet");
        let d = r2.push(r#"", "arguments": {"a": "#);
        assert!(matches!(&d[..], [Delta::ToolCall { index: 0, id, name, arguments }] if id.starts_with("call_") && name == "f" && arguments == r#"{"a":"#), "{d:?}");
        let d = r2.push(r#"" b\" c", "n": 1}}, {"name": "#);
        assert!(matches!(&d[..], [Delta::ToolCall { index: 0, id, name, arguments }] if id.is_empty() && name.is_empty() && arguments == r#"" b\" c","n":1}"#), "{d:?}");
        assert!(!r2.said_all());
        // The same call again: held back while it matches, then the model has said all.
        assert!(r2.push(r#""f", "arguments": {"a": " b\" c""#).is_empty());
        r2.push(r#", "n": 1}}, {"#);
        assert!(r2.said_all());
        let (_, m2) = r2.finish("", true);
        assert_eq!(m2.tool_calls.len(), 1);
        assert_eq!(m2.tool_calls[0].arguments, r#"{"a":" b\" c","n":1}"#);
        assert_eq!(serde_json::from_str::<Value>(&m2.tool_calls[0].arguments).unwrap(), json!({"a": " b\" c", "n": 1}));
        // Cut mid-call by a token limit: the unfinished call stays, as llama-server returns it.
        let mut r3 = AnswerReader::new(Parser::Generic);
        r3.push(r#"{"tool_calls": [{"name": "f", "arguments": {"pages": "1, 2, 3, "#);
        let (_, m3) = r3.finish("4, ", true);
        assert_eq!(m3.tool_calls.len(), 1);
        assert_eq!(m3.tool_calls[0].arguments, r#"{"pages":"1, 2, 3, 4, "#);

        let mut r = AnswerReader::new(Parser::Generic);
        let first = r.push("{\"tool_calls\": [{\"name\": \"get_weather\", ");
        assert!(matches!(&first[..], [Delta::ToolCall { index: 0, name, arguments, .. }] if name == "get_weather" && arguments.is_empty()), "{first:?}");
        let (rest, m) = r.finish("\"arguments\": {\"city\": \"Paris\"}}]}", false);
        assert!(matches!(&rest[..], [Delta::ToolCall { index: 0, name, arguments, .. }] if name.is_empty() && arguments == m.tool_calls[0].arguments.as_str()), "{rest:?}");
        let d = first;
        assert_eq!(m.tool_calls.len(), 1);
        assert_eq!(m.tool_calls[0].name, "get_weather");
        assert_eq!(serde_json::from_str::<Value>(&m.tool_calls[0].arguments).unwrap(), json!({"city": "Paris"}));
        assert!(m.tool_calls[0].id.starts_with("call_") && m.tool_calls[0].id.len() == 29);
        assert!(matches!(&d[0], Delta::ToolCall { index: 0, name, .. } if name == "get_weather"));
    }

    #[test]
    fn generic_history_and_schema() {
        let mut opts = tools();
        let msgs = vec![
            Message::new("user", "Weather in Paris?"),
            Message { role: "assistant".into(), tool_calls: vec![ToolCall { id: "c1".into(), name: "get_weather".into(), arguments: "{\"city\":\"Paris\"}".into() }], ..Default::default() },
            Message { role: "tool".into(), content: "18C".into(), tool_call_id: "c1".into(), ..Default::default() },
        ];
        let out = generic::messages(&msgs, Some(&opts));
        assert_eq!(out[0].role, "system");
        assert!(out[0].content.contains("get_weather") && out[0].content.contains("\"response\""));
        assert_eq!(out[2].content, r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}"#);
        assert_eq!(out[3].role, "user");
        assert!(out[3].content.contains("tool_response") && out[3].content.contains("18C"));
        assert!(generic::schema(&opts)["anyOf"].is_array());
        opts.tool_choice = ToolChoice::Required;
        let s = generic::schema(&opts);
        assert_eq!(s["required"], json!(["tool_calls"]));
        assert_eq!(s["properties"]["tool_calls"]["maxItems"], 1);
    }

    #[test]
    fn tool_schemas_with_local_refs_are_embedded() {
        let params = json!({"type": "object", "$defs": {"u": {"type": "string", "enum": ["c", "f"]}},
            "properties": {"unit": {"$ref": "#/$defs/u"}, "next": {"$ref": "#"}}});
        let opts = ChatOptions { tools: vec![Tool { name: "w".into(), description: String::new(), parameters: params }], ..Default::default() };
        let s = generic::schema(&opts);
        assert_eq!(s["$defs"]["tool0_u"]["enum"], json!(["c", "f"]));
        let args = &s["anyOf"][0]["properties"]["tool_calls"]["items"]["anyOf"][0]["properties"]["arguments"];
        assert_eq!(args["properties"]["unit"]["$ref"], "#/$defs/tool0_u");
        assert_eq!(args["properties"]["next"]["$ref"], "#/$defs/tool0_root");
        assert!(args.get("$defs").is_none());
        json_schema_to_grammar(&s).expect("the converter resolves them");
    }

    #[test]
    fn bad_tools_are_named() {
        let mut opts = tools();
        opts.tools.push(opts.tools[0].clone());
        assert!(check_tools(&opts.tools, &ToolChoice::Auto).unwrap_err().to_string().contains("two tools are named"));
        assert!(check_tools(&[], &ToolChoice::Required).unwrap_err().to_string().contains("no tools"));
        let t = tools();
        assert!(check_tools(&t.tools, &ToolChoice::Function("nope".into())).unwrap_err().to_string().contains("\"nope\""));
    }

    #[test]
    fn a_required_call_comes_first() {
        let g = "root ::= \"<|im_start|>assistant\\n\" space until-161? tool-calls\nuntil-161 ::= | [<] until-161\n";
        assert_eq!(required_call_grammar(g), "root ::= \"<|im_start|>assistant\\n\" space tool-calls\nuntil-161 ::= | [<] until-161\n");
        let other = "root ::= \"a b\" until-1?\n";
        assert_eq!(required_call_grammar(other), other);
    }

    #[test]
    fn regex_escaping() {
        assert_eq!(regex_escape("<tool_call>"), "<tool_call>");
        assert_eq!(regex_escape("[TOOL_CALLS]"), "\\[TOOL_CALLS\\]");
    }
}
