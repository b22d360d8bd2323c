//! Chats with tools, reasoning and JSON schemas: what a request asks for ([`ChatOptions`],
//! [`Tool`], [`ToolChoice`]), what the model answered ([`AssistantMessage`], [`ToolCall`]), and
//! how it streams ([`Delta`]). Every API's adapter maps its own shapes onto these.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A function the model may call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The JSON schema of its arguments (an object schema).
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
}

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the default).
    #[default]
    Auto,
    /// No tool call: text only.
    None,
    /// At least one tool call.
    Required,
    /// A call of this tool.
    Function(String),
}

/// A tool call: in the model's answer, or in the history fed back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (an object).
    pub arguments: String,
}

/// What the model answered, parsed: reasoning split off, tool calls recognized.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AssistantMessage {
    pub content: String,
    #[serde(default)]
    pub reasoning: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Delta {
    Content(String),
    Reasoning(String),
    /// Call number `index` of this answer: its first piece has the `id` and `name`, later
    /// pieces only more `arguments` text.
    ToolCall { index: usize, id: String, name: String, arguments: String },
}

/// How a chat is rendered and its answer read, beyond the messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatOptions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default)]
    pub tool_choice: ToolChoice,
    #[serde(default)]
    pub parallel_tool_calls: bool,
    /// The answer must be JSON matching this schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,
    /// Think before answering: `None` = the model's default; `Some(true)` on a model that
    /// cannot think is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<bool>,
    /// Extra variables for the chat template (llama-server's `chat_template_kwargs`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub template_kwargs: Map<String, Value>,
}

/// The changes from `old` to `new` as deltas. Text that is not an extension of what was sent
/// (a parser that took back a partial marker) is not sent again.
pub fn deltas(old: &AssistantMessage, new: &AssistantMessage) -> Vec<Delta> {
    let mut out = Vec::new();
    if let Some(more) = new.reasoning.strip_prefix(old.reasoning.as_str()) {
        if !more.is_empty() {
            out.push(Delta::Reasoning(more.to_string()));
        }
    }
    if let Some(more) = new.content.strip_prefix(old.content.as_str()) {
        if !more.is_empty() {
            out.push(Delta::Content(more.to_string()));
        }
    }
    for (index, call) in new.tool_calls.iter().enumerate() {
        match old.tool_calls.get(index) {
            None => out.push(Delta::ToolCall { index, id: call.id.clone(), name: call.name.clone(), arguments: call.arguments.clone() }),
            Some(prev) => {
                if let Some(more) = call.arguments.strip_prefix(prev.arguments.as_str()) {
                    if !more.is_empty() {
                        out.push(Delta::ToolCall { index, id: String::new(), name: String::new(), arguments: more.to_string() });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_extend_and_never_repeat() {
        let a = AssistantMessage { content: "Hel".into(), ..Default::default() };
        let b = AssistantMessage {
            content: "Hello".into(),
            reasoning: "hm".into(),
            tool_calls: vec![ToolCall { id: "c1".into(), name: "f".into(), arguments: "{\"a\"".into() }],
        };
        assert_eq!(
            deltas(&a, &b),
            vec![
                Delta::Reasoning("hm".into()),
                Delta::Content("lo".into()),
                Delta::ToolCall { index: 0, id: "c1".into(), name: "f".into(), arguments: "{\"a\"".into() }
            ]
        );
        let mut c = b.clone();
        c.tool_calls[0].arguments.push_str(":1}");
        assert_eq!(deltas(&b, &c), vec![Delta::ToolCall { index: 0, id: String::new(), name: String::new(), arguments: ":1}".into() }]);
        // Taken back: nothing.
        let d = AssistantMessage { content: "He".into(), ..Default::default() };
        assert!(deltas(&a, &d).is_empty());
    }
}
