//! Chat templates: turning a conversation into the prompt text a model was trained on.
//!
//! The model's own `tokenizer.chat_template` (Jinja) is rendered with minijinja the way
//! Hugging Face transformers renders it (trim_blocks, lstrip_blocks, loop controls,
//! `raise_exception`, `strftime_now`, a `tojson` that does not escape HTML, Python string
//! methods). Where the GGUF has no template, or minijinja cannot render it, llama.cpp's
//! built-in template matching is used instead.

use std::ffi::{c_char, CString};

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::{sys, EngineError};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A chat template ready to render.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// A Jinja template, rendered by minijinja.
    Jinja {
        source: String,
        bos_token: String,
        eos_token: String,
    },
    /// A template llama.cpp knows by name or recognises ("chatml", "gemma", "llama3", ...).
    Builtin(String),
}

impl ChatTemplate {
    /// The template for a model: its own Jinja template when it has one that minijinja can
    /// parse, else llama.cpp's matching of it, else a built-in one chosen by architecture.
    pub fn for_model(info: &crate::ModelInfo) -> ChatTemplate {
        match &info.chat_template {
            Some(source) => {
                let t = ChatTemplate::Jinja {
                    source: source.clone(),
                    bos_token: info.bos_token.clone(),
                    eos_token: info.eos_token.clone(),
                };
                if let Err(e) = t.render(&[ChatMessage::new("user", "hi")], true) {
                    tracing::warn!("the model's chat template does not render ({e}); using llama.cpp's built-in matching");
                    ChatTemplate::Builtin(source.clone())
                } else {
                    t
                }
            }
            None => {
                let name = if info.architecture.starts_with("gemma") { "gemma" } else { "chatml" };
                tracing::debug!("the model has no chat template; using built-in {name:?}");
                ChatTemplate::Builtin(name.into())
            }
        }
    }

    /// The built-in template of the family an Ollama Go template belongs to (Ollama's template
    /// language is not Jinja; models pulled from its registry that carry no Jinja template in
    /// their GGUF are rendered by the llama.cpp template of the same family).
    pub fn from_go_template(go: &str) -> Option<ChatTemplate> {
        let name = if go.contains("<|im_start|>") {
            "chatml"
        } else if go.contains("<start_of_turn>") {
            "gemma"
        } else if go.contains("<|start_header_id|>") {
            "llama3"
        } else if go.contains("<|user|>") && go.contains("<|end|>") {
            "phi3"
        } else if go.contains("[INST]") {
            "mistral-v7"
        } else {
            return None;
        };
        Some(ChatTemplate::Builtin(name.into()))
    }

    /// Renders a conversation. With `add_generation_prompt` the text ends where the
    /// assistant's answer starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, EngineError> {
        match self {
            ChatTemplate::Jinja { source, bos_token, eos_token } => {
                render_jinja(source, messages, add_generation_prompt, bos_token, eos_token)
                    .map_err(|e| EngineError::Template(format!("{e:#}")))
            }
            ChatTemplate::Builtin(name) => render_builtin(name, messages, add_generation_prompt),
        }
    }
}

/// Instructions one render may take: a real template spends thousands on a long conversation;
/// a hostile one (a nested loop) stops here, in well under a second, instead of holding a core
/// (and, at load, the server's load lock).
const FUEL: u64 = 20_000_000;
/// Bytes a render may write: more than any context holds.
const MAX_OUTPUT: usize = 16 << 20;
/// Bytes of template source accepted.
const MAX_SOURCE: usize = 1 << 20;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> String {
        strftime_now(&fmt)
    });
    env.add_filter("tojson", tojson);
    env
}

fn render_jinja(
    source: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, Error> {
    if source.len() > MAX_SOURCE {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("the template is {} bytes, more than the {MAX_SOURCE} accepted", source.len())));
    }
    let env = environment();
    let tmpl = env.template_from_str(source)?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    let mut out = Bounded(Vec::new());
    tmpl.render_captured_to(ctx, &mut out)?;
    String::from_utf8(out.0).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("the template wrote invalid UTF-8: {e}")))
}

/// Renders a chat (OpenAI-shaped `messages` and `tools`, as llama.cpp's chat code renders
/// them) with minijinja's limits, to find out whether the template would run away with it: an
/// error only when the render ran out of instructions, output or recursion (or the source is
/// too large). Any other failure is minijinja's business, not a verdict on the template.
pub(crate) fn runaway(source: &str, messages: &serde_json::Value, tools: Option<&serde_json::Value>, bos_token: &str, eos_token: &str) -> Result<(), String> {
    if source.len() > MAX_SOURCE {
        return Err(format!("the chat template is {} bytes, more than the {MAX_SOURCE} accepted", source.len()));
    }
    let env = environment();
    let Ok(tmpl) = env.template_from_str(source) else { return Ok(()) };
    let ctx = minijinja::context! {
        messages => Value::from_serialize(messages),
        tools => tools.map(Value::from_serialize),
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    let mut out = Bounded(Vec::new());
    let verdict = match tmpl.render_captured_to(ctx, &mut out) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(e.kind(), ErrorKind::OutOfFuel | ErrorKind::WriteFailure)
                || ["recursion limit", "range has too many elements"].iter().any(|m| e.to_string().contains(m)) =>
        {
            Err(format!("the chat template does not finish: {e}"))
        }
        Err(_) => Ok(()),
    };
    verdict
}

/// A writer that refuses to grow past [`MAX_OUTPUT`].
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(std::io::Error::other(format!("the template wrote more than {MAX_OUTPUT} bytes")));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=False)`,
/// so Python's separators and no HTML escaping (minijinja's built-in escapes `<`, `>`, `&`, `'`).
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("cannot serialize to JSON: {e}")))?;
    let mut out = String::new();
    py_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn py_json(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let (item_sep, key_sep) = if indent.is_some() { (",", ": ") } else { (", ", ": ") };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(key_sep);
                py_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// The subset of strftime that chat templates use (dates in system prompts).
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime_at(secs, fmt)
}

/// Formats a UTC time given in seconds since 1970.
fn strftime_at(secs: i64, fmt: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ];
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('b') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('A') => out.push_str(DAYS[days.rem_euclid(7) as usize]),
            Some('a') => out.push_str(&DAYS[days.rem_euclid(7) as usize][..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn render_builtin(name: &str, messages: &[ChatMessage], add_ass: bool) -> Result<String, EngineError> {
    let nul = |_| EngineError::Template("a message contains a NUL byte".into());
    let tmpl = CString::new(name).map_err(nul)?;
    let owned: Vec<(CString, CString)> = messages
        .iter()
        .map(|m| Ok((CString::new(m.role.as_str())?, CString::new(m.content.as_str())?)))
        .collect::<Result<_, std::ffi::NulError>>()
        .map_err(nul)?;
    let chat: Vec<sys::llama_chat_message> = owned
        .iter()
        .map(|(r, c)| sys::llama_chat_message { role: r.as_ptr(), content: c.as_ptr() })
        .collect();
    let total: usize = messages.iter().map(|m| m.content.len() + m.role.len()).sum();
    let mut buf = vec![0u8; total * 2 + 256];
    loop {
        // SAFETY: all pointers are valid C strings owned above, `buf` is valid for its length.
        let n = unsafe {
            sys::llama_chat_apply_template(
                tmpl.as_ptr(),
                chat.as_ptr(),
                chat.len(),
                add_ass,
                buf.as_mut_ptr() as *mut c_char,
                buf.len() as i32,
            )
        };
        if n < 0 {
            return Err(EngineError::Template(format!(
                "llama.cpp does not know the chat template {:?}",
                name.chars().take(60).collect::<String>()
            )));
        }
        if n as usize <= buf.len() {
            buf.truncate(n as usize);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.resize(n as usize, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_matches_python() {
        let v = serde_json::json!({"a": [1, "é<>"], "b": {}});
        let mut out = String::new();
        py_json(&v, None, 0, &mut out);
        assert_eq!(out, r#"{"a": [1, "é<>"], "b": {}}"#);
        let mut out = String::new();
        py_json(&v, Some(2), 0, &mut out);
        assert_eq!(out, "{\n  \"a\": [\n    1,\n    \"é<>\"\n  ],\n  \"b\": {}\n}");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::Jinja {
            source: "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        assert_eq!(t.render(&[ChatMessage::new("user", "x")], false).unwrap(), "ok");
        let err = t.render(&[ChatMessage::new("system", "x")], false).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    /// A hostile template (from a model file, or `/api/create`) cannot hold a core or grow
    /// without bound: loops run out of fuel, output stops at a size.
    #[test]
    fn hostile_templates_are_bounded() {
        let jinja = |source: &str| ChatTemplate::Jinja { source: source.into(), bos_token: String::new(), eos_token: String::new() };
        let started = std::time::Instant::now();
        let nested = jinja("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        assert!(nested.render(&[ChatMessage::new("user", "x")], true).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "stopped in {:?}", started.elapsed());
        let huge = jinja("{% for i in range(100000) %}{% for j in range(1000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}");
        assert!(huge.render(&[ChatMessage::new("user", "x")], true).is_err());
        assert!(jinja(&"x".repeat(2 << 20)).render(&[], true).is_err(), "a 2 MiB template");
    }

    #[test]
    fn python_string_methods_and_loop_controls() {
        let t = ChatTemplate::Jinja {
            source: "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{{ m.content.strip().upper() }}|{% endfor %}".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let msgs = [ChatMessage::new("user", " a "), ChatMessage::new("user", "b"), ChatMessage::new("user", "c ")];
        assert_eq!(t.render(&msgs, false).unwrap(), "A|C|");
    }

    #[test]
    fn strftime_formats() {
        assert_eq!(
            strftime_at(1_700_000_000, "%Y-%m-%d %H:%M:%S %A %a %B %b %y %%"),
            "2023-11-14 22:13:20 Tuesday Tue November Nov 23 %"
        );
        assert_eq!(strftime_at(951_782_400, "%d %B %Y"), "29 February 2000");
    }
}
