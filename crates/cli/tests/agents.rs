//! Agents through the real binary with the real model: tool calls, JSON schemas, the
//! Anthropic Messages and OpenAI Responses APIs, in hearth's generic tool format (the starter
//! model's template has no tool syntax) and in a native format (the starter model's weights
//! written into a new GGUF with Qwen2.5's chat template, whose `<tool_call>` syntax llama.cpp's
//! chat code renders, constrains and parses).

use std::path::PathBuf;

use serde_json::{json, Value};

mod common;

use common::{model_path, Server};

fn weather() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Get the current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                       "required": ["city", "unit"], "additionalProperties": false}}})
}

fn time_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_time", "description": "Get the time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}})
}

fn ask(tools: Value, choice: Value) -> Value {
    json!({"model": "smollm2", "temperature": 0, "max_tokens": 96, "tools": tools, "tool_choice": choice,
           "messages": [{"role": "user", "content": "What is the weather in Paris?"}]})
}

/// The one call of an OpenAI chat answer, its arguments parsed.
fn the_call(v: &Value) -> (String, Value) {
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap_or_else(|| panic!("no tool_calls: {v}"));
    assert!(!calls.is_empty(), "{v}");
    let f = &calls[0]["function"];
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"), "{v}");
    (f["name"].as_str().unwrap().to_string(), serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap())
}

fn weather_args_valid(args: &Value) {
    assert!(args["city"].is_string(), "{args}");
    assert!(matches!(args["unit"].as_str(), Some("celsius" | "fahrenheit")), "{args}");
    assert_eq!(args.as_object().unwrap().len(), 2, "no other keys: {args}");
}

#[test]
fn generic_tool_calls_and_schemas_with_the_starter_model() {
    let _turn = common::one_at_a_time();
    let s = Server::start(&[]);
    // Required: always a valid call, whatever the model would have said.
    let (code, v) = s.post("/v1/chat/completions", ask(json!([weather()]), json!("required")));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let (name, args) = the_call(&v);
    assert_eq!(name, "get_weather");
    weather_args_valid(&args);
    // A named tool among two.
    let (code, v) = s.post("/v1/chat/completions", ask(json!([weather(), time_tool()]), json!({"type": "function", "function": {"name": "get_time"}})));
    assert_eq!(code, 200, "{v}");
    let (name, args) = the_call(&v);
    assert_eq!(name, "get_time");
    assert!(args["zone"].is_string(), "{args}");
    // None: text.
    let (code, v) = s.post("/v1/chat/completions", ask(json!([weather()]), json!("none")));
    assert_eq!(code, 200, "{v}");
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    assert!(!v["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{v}");
    // The result fed back gets an answer.
    let (code, v) = s.post("/v1/chat/completions", json!({"model": "smollm2", "temperature": 0, "max_tokens": 48, "tools": [weather()], "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18, \"sky\": \"sunny\"}"},
    ]}));
    assert_eq!(code, 200, "{v}");
    let m = &v["choices"][0]["message"];
    assert!(m["content"].as_str().is_some_and(|c| !c.is_empty()) || m["tool_calls"].is_array(), "{v}");

    // A JSON schema, exactly.
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"], "additionalProperties": false});
    let (code, v) = s.post("/v1/chat/completions", json!({"model": "smollm2", "temperature": 0, "max_tokens": 64,
        "messages": [{"role": "user", "content": "Describe a person."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}}}));
    assert_eq!(code, 200, "{v}");
    let person: Value = serde_json::from_str(v["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(person["name"].is_string() && person["age"].is_i64() && person.as_object().unwrap().len() == 2, "{person}");
    let (code, v) = s.post("/api/chat", json!({"model": "smollm2", "stream": false, "format": schema, "options": {"temperature": 0, "num_predict": 64},
        "messages": [{"role": "user", "content": "Describe a person."}]}));
    assert_eq!(code, 200, "{v}");
    let person: Value = serde_json::from_str(v["message"]["content"].as_str().unwrap()).unwrap();
    assert!(person["name"].is_string() && person["age"].is_i64() && person.as_object().unwrap().len() == 2, "{person}");

    // Ollama: arguments as an object.
    let (code, v) = s.post("/api/chat", json!({"model": "smollm2", "stream": false, "tools": [weather()], "options": {"temperature": 0, "num_predict": 96},
        "messages": [{"role": "user", "content": "What is the weather in Paris? Call the tool."}]}));
    assert_eq!(code, 200, "{v}");
    if let Some(calls) = v["message"]["tool_calls"].as_array() {
        weather_args_valid(&calls[0]["function"]["arguments"]);
    }
    let (code, v) = s.post("/api/chat", json!({"model": "smollm2", "think": true, "messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("does not support thinking"), "{v}");

    // Anthropic: tool_choice any.
    let (code, v) = s.post("/v1/messages", json!({"model": "smollm2", "max_tokens": 96, "temperature": 0,
        "tools": [{"name": "get_weather", "description": "Get the current weather of a city", "input_schema": weather()["function"]["parameters"]}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let block = v["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(block["name"], "get_weather");
    weather_args_valid(&block["input"]);
    let (code, v) = s.post("/v1/messages/count_tokens", json!({"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(code, 200, "{v}");
    assert!(v["input_tokens"].as_u64().unwrap() > 5, "{v}");

    // Responses: a function call item.
    let (code, v) = s.post("/v1/responses", json!({"model": "smollm2", "temperature": 0, "max_output_tokens": 96, "input": "What is the weather in Paris?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": weather()["function"]["parameters"]}], "tool_choice": "required", "parallel_tool_calls": false}));
    assert_eq!(code, 200, "{v}");
    let item = v["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap_or_else(|| panic!("{v}"));
    assert_eq!(item["name"], "get_weather");
    weather_args_valid(&serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap());

    // Bad schemas and big tool sets: clear 400s, or an answer; never a dead runner.
    let (code, v) = s.post("/v1/chat/completions", json!({"model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}}}}}));
    assert_eq!(code, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON schema"), "{v}");
    let props: serde_json::Map<String, Value> = (0..800).map(|i| (format!("field_{i:04}"), json!({"type": "string", "description": "a field of this large tool"}))).collect();
    let big = json!({"type": "function", "function": {"name": "big", "parameters": {"type": "object", "properties": props}}});
    assert!(big.to_string().len() > 50_000);
    let (code, v) = s.post("/v1/chat/completions", ask(json!([big, weather()]), json!({"type": "function", "function": {"name": "get_weather"}})));
    assert!(code == 200 || code == 400, "{code} {v}");
    let (code, _) = s.post("/api/chat", common::chat("Hi", 2));
    assert_eq!(code, 200, "the server and its runner still answer");
}

/// The starter model's weights with another family's chat template (from the conformance
/// suite's real templates).
fn templated_model(dir: &std::path::Path, template: &str) -> PathBuf {
    let source = std::fs::read_to_string(format!("{}/../engine/tests/chat/templates/{template}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    with_template(dir, template, &source)
}

fn with_template(dir: &std::path::Path, name: &str, source: &str) -> PathBuf {
    let mut w = hearth_gguf::writer::GgufWriter::from_file(&model_path()).unwrap();
    w.set("tokenizer.chat_template", source);
    let path = dir.join(format!("smollm2-{name}.gguf"));
    w.write_to_path(&path).unwrap();
    path
}

/// A hostile template (a loop of 100 million steps, which llama.cpp's Jinja engine would run
/// for ever) and a broken one (raises when given tools): the model still loads and answers, or
/// the request is a clear 400; never a hung or dead runner.
#[test]
fn hostile_and_broken_templates_are_clear_errors() {
    let _turn = common::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let looping = format!("{{% for a in range(10000) %}}{{% for b in range(10000) %}}{{{{ b }}}}{{% endfor %}}{{% endfor %}}{chatml}");
    let raising = format!("{{% if tools %}}{{{{ raise_exception('this template takes no tools') }}}}{{% endif %}}{chatml}");
    let s = Server::start_with(&[], &[("smollm2", model_path()), ("looping", with_template(dir.path(), "looping", &looping)), ("raising", with_template(dir.path(), "raising", &raising))]);
    for model in ["looping", "raising"] {
        for body in [
            json!({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}),
            json!({"model": model, "max_tokens": 64, "tools": [weather()], "tool_choice": "required", "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        ] {
            let (code, v) = s.post("/v1/chat/completions", body);
            assert!(code == 200 || (code == 400 && v["error"]["message"].as_str().unwrap().contains("template")), "{model}: {code} {v}");
        }
    }
    let (code, _) = s.post("/api/chat", common::chat("Hi", 2));
    assert_eq!(code, 200, "the server still answers");
}

#[test]
fn a_native_tool_format_end_to_end() {
    let _turn = common::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        &[],
        &[("qwenish", templated_model(dir.path(), "Qwen-Qwen2.5-7B-Instruct.jinja")), ("thinker", templated_model(dir.path(), "Qwen-Qwen3-0.6B.jinja"))],
    );
    // Qwen3's template thinks: shown in the capabilities, `think` accepted, and turned off in
    // the prompt as the template does it.
    let (_, v) = s.post("/api/show", json!({"model": "thinker"}));
    assert!(v["capabilities"].as_array().unwrap().contains(&json!("thinking")), "{v}");
    let (_, v) = s.post("/api/show", json!({"model": "qwenish"}));
    assert!(!v["capabilities"].as_array().unwrap().contains(&json!("thinking")), "{v}");
    let (code, v) = s.post("/api/chat", json!({"model": "thinker", "think": true, "stream": false, "options": {"num_predict": 4}, "messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(code, 200, "{v}");
    let (code, v) = s.post("/apply-template", json!({"model": "thinker", "chat_template_kwargs": {"enable_thinking": false}, "messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(code, 200, "{v}");
    assert!(v["prompt"].as_str().unwrap().ends_with("<think>\n\n</think>\n\n"), "{v}");
    let (code, v) = s.get("/props?model=qwenish");
    assert_eq!(code, 200, "{v}");
    assert_ne!(v["chat_template_caps"]["tool_format"], "generic", "{v}");
    let (code, v) = s.post("/apply-template", json!({"model": "qwenish", "tools": [weather()], "messages": [{"role": "user", "content": "Weather in Paris?"}]}));
    assert_eq!(code, 200, "{v}");
    let prompt = v["prompt"].as_str().unwrap();
    assert!(prompt.contains("<tools>") && prompt.contains("get_weather") && prompt.contains("<tool_call>"), "{prompt}");
    let mut body = ask(json!([weather()]), json!("required"));
    body["model"] = json!("qwenish");
    body["parallel_tool_calls"] = json!(false);
    let (code, v) = s.post("/v1/chat/completions", body.clone());
    assert_eq!(code, 200, "{v}");
    let (name, args) = the_call(&v);
    assert_eq!(name, "get_weather");
    weather_args_valid(&args);
    // Streamed: the id and name first, then argument pieces that add up.
    body["stream"] = json!(true);
    let r = ureq::post(&format!("{}/v1/chat/completions", s.url)).send_json(body).unwrap();
    let text = r.into_string().unwrap();
    let (mut id, mut name, mut arguments) = (String::new(), String::new(), String::new());
    for frame in text.split("\n\n").filter_map(|f| f.strip_prefix("data: ")).filter(|f| *f != "[DONE]") {
        let v: Value = serde_json::from_str(frame).unwrap();
        for c in v["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            assert_eq!(c["index"], 0);
            if let Some(i) = c["id"].as_str() {
                assert!(id.is_empty(), "one id: {text}");
                id = i.to_string();
                name = c["function"]["name"].as_str().unwrap().to_string();
            }
            arguments.push_str(c["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert!(id.starts_with("call_") && name == "get_weather", "{text}");
    weather_args_valid(&serde_json::from_str(&arguments).unwrap());
}
