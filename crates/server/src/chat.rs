//! What the chat APIs share beyond their shapes: tools, tool choices and schemas read from
//! JSON into the runtime's [`ChatOptions`], and answers written back.

use hearth_runtime::protocol::{AssistantMessage, Tool, ToolCall, ToolChoice};
use serde_json::{json, Value};

use crate::error::ApiError;

/// Most tools one request may carry, and the most bytes of their definitions: far beyond what
/// clients send (Claude Code: 24 tools, about 68 KB), small enough to keep a grammar cheap.
pub const MAX_TOOLS: usize = 512;
pub const MAX_TOOLS_BYTES: usize = 4 << 20;

/// A function tool from its name, description and parameters schema (absent or null: none).
pub fn tool(name: &Value, description: &Value, parameters: Option<&Value>, field: &str) -> Result<Tool, ApiError> {
    let name = name.as_str().ok_or_else(|| ApiError::bad_request(format!("invalid field `{field}.name`: expected a string")))?;
    let parameters = match parameters {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(other) => return Err(ApiError::bad_request(format!("invalid field `{field}` of tool {name:?}: the schema must be an object, got {other}"))),
    };
    Ok(Tool { name: name.to_string(), description: description.as_str().unwrap_or_default().to_string(), parameters })
}

/// Tools are bounded in number and size.
pub fn check_tools(tools: &[Tool], field: &str) -> Result<(), ApiError> {
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::bad_request(format!("invalid field `{field}`: {} tools; at most {MAX_TOOLS} are accepted", tools.len())));
    }
    let bytes: usize = tools.iter().map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len()).sum();
    if bytes > MAX_TOOLS_BYTES {
        return Err(ApiError::bad_request(format!("invalid field `{field}`: the tool definitions take {bytes} bytes; at most {MAX_TOOLS_BYTES} are accepted")));
    }
    Ok(())
}

/// OpenAI's `tool_choice`: "auto", "none", "required", or `{"type": "function", "function":
/// {"name": ..}}` (the Responses API's `{"type": "function", "name": ..}` too).
pub fn openai_tool_choice(v: Option<&Value>) -> Result<ToolChoice, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(ApiError::bad_request(format!("invalid field `tool_choice`: {other:?} is not auto, none, required or a function"))),
        },
        Some(o) => match o["function"]["name"].as_str().or(o["name"].as_str()) {
            Some(name) => Ok(ToolChoice::Function(name.to_string())),
            None => Err(ApiError::bad_request(format!("invalid field `tool_choice`: {o} names no function"))),
        },
    }
}

/// Arguments fed back as JSON text, whether the client sent text or an object.
pub fn arguments_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// Arguments as a JSON object (Ollama and Anthropic send objects); text that is not JSON
/// stays a string.
pub fn arguments_object(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// OpenAI chat's `tool_calls` array.
pub fn openai_tool_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect()
}

/// Whether an answer ends in tool calls.
pub fn has_calls(m: &Option<AssistantMessage>) -> bool {
    m.as_ref().is_some_and(|m| !m.tool_calls.is_empty())
}

/// System messages (Anthropic's top-level `system` and a `system` turn Claude Code sends after
/// the user's, Responses' `instructions` and `developer` items) joined into one, first: many
/// templates accept one system message, at the start only.
pub fn system_first(messages: Vec<hearth_runtime::protocol::runner::Message>) -> Vec<hearth_runtime::protocol::runner::Message> {
    let (system, rest): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m.role == "system");
    if system.is_empty() {
        return rest;
    }
    let text = system.iter().map(|m| m.content.as_str()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("\n\n");
    let mut out = vec![hearth_runtime::protocol::runner::Message::new("system", text)];
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_runtime::protocol::runner::Message;

    #[test]
    fn system_messages_go_first_as_one() {
        let m = system_first(vec![Message::new("system", "a"), Message::new("user", "hi"), Message::new("system", "b"), Message::new("assistant", "yo")]);
        assert_eq!(m, vec![Message::new("system", "a\n\nb"), Message::new("user", "hi"), Message::new("assistant", "yo")]);
        assert_eq!(system_first(vec![Message::new("user", "x")]), vec![Message::new("user", "x")]);
    }
}
