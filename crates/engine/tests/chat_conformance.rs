//! hearth's chat handling (tool calls, reasoning) against upstream llama.cpp.
//!
//! Each fixture under `chat/fixtures/` was recorded once from upstream llama.cpp's own chat
//! code by `bench/chat-fixtures/record.sh`, as llama-server calls it: for each case (a real
//! model's template from `chat/templates/`, messages, tools, options) the prompt, the grammar,
//! and the message parsed from each pinned model output. Here every case goes through
//! [`Chat::from_template`] and [`Chat::prepare`], every output through the [`AnswerReader`]
//! (whole, and in 3-byte pieces), and the results must equal the fixture's; the streamed
//! deltas must add up to the final message.
//!
//! A difference that comes from the llama.cpp versions alone is marked `known_difference` in
//! `bench/chat-fixtures/cases.json` (copied into the fixture): it is printed, not failed.
//!
//! [`AnswerReader`]: hearth_engine::AnswerReader

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hearth_engine::{Chat, Grammar, Model, ModelOptions};
use hearth_protocol::runner::Message;
use hearth_protocol::{AssistantMessage, ChatOptions, Delta, Tool, ToolCall, ToolChoice};
use serde_json::Value;

fn chat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat")
}

/// The test model's vocabulary: the templates' BOS/EOS tokens, as in the recording.
fn vocab() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut o = ModelOptions::new(common::model_path());
            o.vocab_only = true;
            Arc::new(Model::load(&o).expect("load the test model's vocabulary"))
        })
        .clone()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// A message in OpenAI's shape (as recorded) as hearth's runner message.
fn message(m: &Value) -> Message {
    Message {
        role: text(&m["role"]),
        content: text(&m["content"]),
        reasoning: text(&m["reasoning_content"]),
        tool_calls: m["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| ToolCall { id: text(&c["id"]), name: text(&c["function"]["name"]), arguments: text(&c["function"]["arguments"]) })
                    .collect()
            })
            .unwrap_or_default(),
        tool_call_id: text(&m["tool_call_id"]),
        tool_name: text(&m["name"]),
    }
}

fn options(case: &Value) -> ChatOptions {
    ChatOptions {
        tools: case["tools"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .map(|t| Tool {
                        name: text(&t["function"]["name"]),
                        description: text(&t["function"]["description"]),
                        parameters: t["function"]["parameters"].clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        tool_choice: match case["tool_choice"].as_str() {
            Some("none") => ToolChoice::None,
            Some("required") => ToolChoice::Required,
            _ => ToolChoice::Auto,
        },
        parallel_tool_calls: case["parallel_tool_calls"].as_bool().unwrap_or(false),
        json_schema: Some(case["json_schema"].clone()).filter(|s| !s.is_null()),
        // The recording passes enable_thinking; hearth's default is on.
        think: (case["enable_thinking"] == false).then_some(false),
        template_kwargs: case["chat_template_kwargs"].as_object().cloned().unwrap_or_default(),
    }
}

/// Templates print today's date; the recording was made on another day.
fn normalize_dates(prompt: &str) -> String {
    let mut out = String::with_capacity(prompt.len());
    for line in prompt.split_inclusive('\n') {
        match ["Today Date: ", "Current date: "].iter().find_map(|p| line.find(p).map(|i| i + p.len())) {
            Some(at) => {
                out.push_str(&line[..at]);
                out.push_str("<date>");
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Where two texts part, with some context on each side.
fn first_difference(got: &str, want: &str) -> String {
    let at = got.char_indices().zip(want.chars()).find(|((_, a), b)| a != b).map(|((i, _), _)| i).unwrap_or(got.len().min(want.len()));
    let from = got[..at].char_indices().rev().nth(40).map(|(i, _)| i).unwrap_or(0);
    let tail = |s: &str| s[at.min(s.len())..].chars().take(60).collect::<String>();
    format!("at byte {at}, after {:?}:\n      hearth:   {:?}\n      upstream: {:?}", &got[from..at], tail(got), tail(want))
}

/// Pieces of at most `n` bytes, cut at char boundaries.
fn pieces(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + n).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[start..end]);
        start = end;
    }
    out
}

/// Tool call arguments compare as JSON when both are JSON, as text otherwise (a cut call).
fn same_arguments(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// How `got` differs from upstream's parsed message `want`, if it does.
fn compare_message(got: &AssistantMessage, want: &Value) -> Option<String> {
    let mut diffs = Vec::new();
    if got.content != text(&want["content"]) {
        diffs.push(format!("content {:?}, upstream {:?}", got.content, text(&want["content"])));
    }
    if got.reasoning != text(&want["reasoning_content"]) {
        diffs.push(format!("reasoning {:?}, upstream {:?}", got.reasoning, text(&want["reasoning_content"])));
    }
    let calls = want["tool_calls"].as_array().cloned().unwrap_or_default();
    if got.tool_calls.len() != calls.len() {
        diffs.push(format!("{} tool calls {:?}, upstream {} {:?}", got.tool_calls.len(), got.tool_calls, calls.len(), calls));
    } else {
        for (i, (g, w)) in got.tool_calls.iter().zip(&calls).enumerate() {
            if g.name != text(&w["name"]) {
                diffs.push(format!("call {i} name {:?}, upstream {:?}", g.name, text(&w["name"])));
            }
            if !same_arguments(&g.arguments, &text(&w["arguments"])) {
                diffs.push(format!("call {i} arguments {:?}, upstream {:?}", g.arguments, text(&w["arguments"])));
            }
            // Ids are compared only where the format carries them; else hearth makes one up.
            let id = text(&w["id"]);
            if !id.is_empty() && g.id != id {
                diffs.push(format!("call {i} id {:?}, upstream {:?}", g.id, id));
            }
            if g.id.is_empty() {
                diffs.push(format!("call {i} has no id"));
            }
        }
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

/// The streamed deltas must add up to the final message: content and reasoning pieces
/// concatenate to it; call `i` opens (id and name, once) after calls `0..i`, then only adds
/// argument text.
fn check_deltas(deltas: &[Delta], m: &AssistantMessage) -> Option<String> {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut diffs = Vec::new();
    for d in deltas {
        match d {
            Delta::Content(t) => content.push_str(t),
            Delta::Reasoning(t) => reasoning.push_str(t),
            Delta::ToolCall { index, id, name, arguments } => {
                if *index == calls.len() {
                    if id.is_empty() || name.is_empty() {
                        diffs.push(format!("call {index} opens without an id or a name: id {id:?}, name {name:?}"));
                    }
                    calls.push(ToolCall { id: id.clone(), name: name.clone(), arguments: arguments.clone() });
                } else if *index < calls.len() {
                    if !id.is_empty() || !name.is_empty() {
                        diffs.push(format!("call {index} gets id/name again: {id:?} {name:?}"));
                    }
                    calls[*index].arguments.push_str(arguments);
                } else {
                    diffs.push(format!("call {index} streamed before call {}", calls.len()));
                }
            }
        }
    }
    if content != m.content {
        diffs.push(format!("streamed content {content:?} != final {:?}", m.content));
    }
    if reasoning != m.reasoning {
        diffs.push(format!("streamed reasoning {reasoning:?} != final {:?}", m.reasoning));
    }
    if calls.len() != m.tool_calls.len() {
        diffs.push(format!("{} calls streamed, {} final", calls.len(), m.tool_calls.len()));
    }
    for (i, (s, f)) in calls.iter().zip(&m.tool_calls).enumerate() {
        if s.id != f.id || s.name != f.name {
            diffs.push(format!("call {i} streamed as {:?}/{:?}, final {:?}/{:?}", s.id, s.name, f.id, f.name));
        }
        if s.arguments != f.arguments {
            diffs.push(format!("call {i} streamed arguments {:?} != final {:?}", s.arguments, f.arguments));
        }
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

/// What one family's fixture found: differences that fail, and known ones that do not.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    known: Vec<String>,
}

impl Report {
    fn add(&mut self, known: &Value, what: String) {
        match known.as_str() {
            Some(why) => self.known.push(format!("{what}\n      known difference: {why}")),
            None => self.failures.push(what),
        }
    }
}

fn check_family(name: &str) -> Report {
    let path = chat_dir().join("fixtures").join(format!("{name}.json"));
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let template = std::fs::read_to_string(chat_dir().join("templates").join(text(&fixture["template"]))).unwrap();
    let model = vocab();
    let chat = Chat::from_template(&model, &template).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut report = Report::default();
    for case in fixture["cases"].as_array().unwrap() {
        let cname = format!("{name}/{}", text(&case["name"]));
        let known = &case["known_difference"];
        let messages: Vec<Message> = case["messages"].as_array().unwrap().iter().map(message).collect();
        let opts = options(case);
        let prepared = chat.prepare(&model, &messages, &opts);
        if let Some(err) = case.get("error") {
            if let Ok(p) = prepared {
                report.add(known, format!("{cname}: upstream fails ({err}), hearth renders {:?}", p.prompt));
            }
            continue;
        }
        let p = match prepared {
            Ok(p) => p,
            Err(e) => {
                report.add(known, format!("{cname}: hearth fails to prepare: {e}"));
                continue;
            }
        };
        let want = &case["expect"];
        let (prompt, upstream) = (normalize_dates(&p.prompt), normalize_dates(&text(&want["prompt"])));
        if prompt != upstream {
            report.add(known, format!("{cname}: prompt differs {}", first_difference(&prompt, &upstream)));
        }
        let (gbnf, lazy) = match &p.grammar {
            Some(Grammar::Chat { gbnf, lazy, .. }) => (gbnf.as_str(), *lazy),
            Some(g) => (g.gbnf(), false),
            None => ("", false),
        };
        // hearth's documented change: a required call comes first (see `required_call_grammar`).
        let upstream_grammar = match opts.tool_choice {
            ToolChoice::Required | ToolChoice::Function(_) => hearth_engine::required_call_grammar(&text(&want["grammar"])),
            _ => text(&want["grammar"]),
        };
        if gbnf != upstream_grammar {
            report.add(known, format!("{cname}: grammar differs {}", first_difference(gbnf, &upstream_grammar)));
        }
        if !gbnf.is_empty() && lazy != want["grammar_lazy"].as_bool().unwrap_or(false) {
            report.add(known, format!("{cname}: grammar lazy {lazy}, upstream {}", want["grammar_lazy"]));
        }
        let stops: Vec<String> = want["additional_stops"].as_array().unwrap().iter().map(text).collect();
        if p.stops != stops {
            report.add(known, format!("{cname}: stops {:?}, upstream {stops:?}", p.stops));
        }
        for out in case["outputs"].as_array().unwrap() {
            let oname = format!("{cname}/{}", text(&out["name"]));
            let known = if out["known_difference"].is_null() { known } else { &out["known_difference"] };
            let output = text(&out["text"]);
            let cut = out["partial"].as_bool().unwrap_or(false);
            for (how, split) in [("whole", vec![output.as_str()]), ("3-byte pieces", pieces(&output, 3))] {
                let mut reader = chat.prepare(&model, &messages, &opts).unwrap().reader;
                let mut deltas = Vec::new();
                for piece in split {
                    deltas.extend(reader.push(piece));
                }
                let (last, m) = reader.finish("", cut);
                deltas.extend(last);
                match out.get("expect") {
                    Some(want) => {
                        if let Some(d) = compare_message(&m, want) {
                            report.add(known, format!("{oname} ({how}): {d}"));
                        }
                    }
                    None => report.add(
                        known,
                        format!("{oname} ({how}): upstream fails to parse ({}), hearth gives {m:?}", out["error"]),
                    ),
                }
                if let Some(d) = check_deltas(&deltas, &m) {
                    report.add(known, format!("{oname} ({how}) deltas: {d}"));
                }
            }
        }
    }
    report
}

fn conforms(name: &str) {
    let report = check_family(name);
    for k in &report.known {
        eprintln!("{name}: {k}");
    }
    assert!(report.failures.is_empty(), "{name} differs from upstream llama.cpp:\n  {}", report.failures.join("\n  "));
}

macro_rules! families {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                conforms($name);
            }
        )*

        #[test]
        fn every_fixture_is_checked() {
            let names = [$($name),*];
            for entry in std::fs::read_dir(chat_dir().join("fixtures")).unwrap() {
                let file = entry.unwrap().file_name().into_string().unwrap();
                if let Some(family) = file.strip_suffix(".json") {
                    assert!(names.contains(&family), "fixture {file} has no test here");
                }
            }
        }
    };
}

families! {
    qwen2_5 => "qwen2.5",
    qwen3 => "qwen3",
    llama3_1 => "llama3.1",
    mistral_nemo => "mistral-nemo",
    deepseek_r1_distill => "deepseek-r1-distill",
    gpt_oss => "gpt-oss",
    glm_4_6 => "glm-4.6",
    kimi_k2 => "kimi-k2",
    smollm2 => "smollm2",
}

#[test]
fn date_lines_are_normalized() {
    assert_eq!(
        normalize_dates("a\nToday Date: 01 Dec 2026\n\nb Current date: 2026-12-01\n"),
        "a\nToday Date: <date>\n\nb Current date: <date>\n"
    );
    assert_eq!(pieces("aé€b", 2), vec!["aé", "€", "b"]);
    assert!(first_difference("abcé", "abcd").starts_with("at byte 3, after \"abc\""));
}
