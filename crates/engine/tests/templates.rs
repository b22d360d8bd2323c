//! Chat templates rendered by us equal the reference renders of Python's jinja2 called the way
//! Hugging Face transformers calls it (`reference/render.py` produced `reference/expected.json`).

mod common;

use hearth_engine::{ChatMessage, ChatTemplate, Model, ModelOptions};

const SMOLLM2: &str = include_str!("reference/smollm2.jinja");
const CUSTOM: &str = include_str!("reference/custom.jinja");
const EXPECTED: &str = include_str!("reference/expected.json");

#[test]
fn renders_equal_transformers_reference() {
    let expected: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
    let conversations: Vec<Vec<ChatMessage>> =
        serde_json::from_value(expected["conversations"].clone()).unwrap();
    let renders = expected["renders"].as_array().unwrap();
    assert_eq!(renders.len(), 16);
    for r in renders {
        let source = match r["template"].as_str().unwrap() {
            "smollm2" => SMOLLM2,
            "custom" => CUSTOM,
            other => panic!("unknown template {other}"),
        };
        let t = ChatTemplate::Jinja {
            source: source.to_string(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        };
        let conv = &conversations[r["conversation"].as_u64().unwrap() as usize];
        let agp = r["add_generation_prompt"].as_bool().unwrap();
        let got = t.render(conv, agp).unwrap();
        assert_eq!(got, r["text"].as_str().unwrap(), "{} conversation {} agp {agp}", r["template"], r["conversation"]);
    }
}

#[test]
fn the_model_carries_the_reference_template_and_we_pick_it() {
    let model = Model::load(&ModelOptions::new(common::model_path())).unwrap();
    assert_eq!(model.info().chat_template.as_deref(), Some(SMOLLM2));
    let t = ChatTemplate::for_model(model.info());
    assert!(matches!(t, ChatTemplate::Jinja { .. }));
    let text = t.render(&[ChatMessage::new("user", "Hello!")], true).unwrap();
    assert_eq!(text, common::chat_prompt("Hello!"));
}

#[test]
fn a_template_error_names_the_reason() {
    let t = ChatTemplate::Jinja { source: CUSTOM.into(), bos_token: String::new(), eos_token: String::new() };
    let err = t
        .render(&[ChatMessage::new("assistant", "first"), ChatMessage::new("user", "second")], true)
        .unwrap_err();
    assert!(err.to_string().contains("roles must alternate"), "{err}");
}

#[test]
fn builtin_templates_when_the_model_has_none() {
    let t = ChatTemplate::Builtin("chatml".into());
    let text = t.render(&[ChatMessage::new("user", "hi")], true).unwrap();
    assert_eq!(text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    let t = ChatTemplate::Builtin("gemma".into());
    let text = t.render(&[ChatMessage::new("user", "hi")], true).unwrap();
    assert_eq!(text, "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
    let err = ChatTemplate::Builtin("no-such-template".into())
        .render(&[ChatMessage::new("user", "hi")], true)
        .unwrap_err();
    assert!(err.to_string().contains("does not know"), "{err}");
}
