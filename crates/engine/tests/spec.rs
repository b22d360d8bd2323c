//! Speculative decoding on the real test model: the output is the same with and without it
//! (greedy and seeded sampling, alone and batched with plain sequences, cut by stop strings,
//! token limits and cancellation mid-draft), and drafts are confirmed where text repeats.

mod common;

use std::time::Duration;

use common::{chat_prompt, model_path};
use hearth_engine::spec::Spec;
use hearth_engine::{Engine, EngineOptions, Event, FinishReason, GenerateRequest, ModelOptions, Output, Prompt, SamplingParams};

fn options(parallel: u32, spec: Spec) -> EngineOptions {
    let mut o = EngineOptions::new(ModelOptions::new(model_path()));
    o.parallel = parallel;
    o.ctx_size = 1024 * parallel;
    o.threads = Some(2);
    o.spec = spec;
    o.draft_max = 8;
    if spec == Spec::Draft {
        // The test model drafting for itself: enough to check that the output is the target's.
        // Drafting whatever the draft model's confidence and its cost (a model as slow as the
        // target never pays; see the test below): every step has a draft to verify.
        o.draft_model = Some(model_path());
        o.draft_p_min = 0.0;
        o.draft_every_step = true;
    }
    o
}

fn engine(parallel: u32, spec: Spec) -> Engine {
    Engine::start(options(parallel, spec)).expect("start engine on the test model")
}

fn request(user: &str, max_tokens: u32) -> GenerateRequest {
    let mut r = GenerateRequest::new(Prompt::Text(chat_prompt(user)));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max_tokens);
    r
}

fn run(e: &Engine, req: GenerateRequest) -> Output {
    e.generate(req).unwrap().collect().unwrap()
}

/// A code edit: the model copies most of the prompt, so the prompt predicts the answer.
const COPY: &str = "Fix the typo in this code and return the whole code: def add(a, b):\n    retrun a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b";
const FREE: &str = "Write a haiku about the sea.";

#[test]
fn greedy_output_is_the_same_with_ngram_drafts_and_drafts_are_confirmed() {
    let _turn = common::one_at_a_time();
    let plain = engine(1, Spec::None);
    let spec = engine(1, Spec::Ngram);
    for (prompt, n) in [(COPY, 96), (FREE, 48)] {
        let a = run(&plain, request(prompt, n));
        let b = run(&spec, request(prompt, n));
        assert_eq!(a.tokens, b.tokens, "{prompt}");
        assert_eq!(a.text, b.text);
        assert_eq!(a.reason, b.reason);
        assert_eq!(a.timings.generated_tokens, b.timings.generated_tokens);
        assert_eq!(a.timings.drafted_tokens, 0);
        if prompt == COPY {
            let t = &b.timings;
            assert!(t.drafted_tokens > 0 && t.accepted_tokens > t.drafted_tokens / 4, "drafts confirmed: {t:?}");
            eprintln!("copy: {} tokens, {} drafted, {} accepted", t.generated_tokens, t.drafted_tokens, t.accepted_tokens);
        }
    }
}

#[test]
fn seeded_sampling_is_the_same_with_drafts() {
    let _turn = common::one_at_a_time();
    let plain = engine(1, Spec::None);
    let spec = engine(1, Spec::Ngram);
    let sampled = |e: &Engine| {
        let mut r = request(COPY, 64);
        r.sampling = SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05, seed: Some(7), ..SamplingParams::default() };
        run(e, r)
    };
    let (a, b) = (sampled(&plain), sampled(&spec));
    assert_eq!(a.tokens, b.tokens);
    assert!(b.timings.drafted_tokens > 0, "{:?}", b.timings);
}

/// Four sequences at once, some drafting (the code edit, the count) and some not: each gets
/// the answer it gets from the same engine without drafts. (Compared with the same batch
/// without drafts, not with each prompt alone: with flash attention, llama.cpp's results
/// depend slightly on the other sequences in a batch, drafts or not.)
#[test]
fn a_batch_mixing_drafting_and_plain_sequences_answers_each_as_without_drafts() {
    let _turn = common::one_at_a_time();
    let prompts = [COPY, FREE, "Count from 1 to 40, separated by commas.", "List three colors."];
    let batch = |spec: Spec| {
        let e = engine(4, spec);
        let gens: Vec<_> = prompts.iter().map(|p| e.generate(request(p, 64)).unwrap()).collect();
        gens.into_iter().map(|g| g.collect().unwrap()).collect::<Vec<Output>>()
    };
    let (plain, drafted) = (batch(Spec::None), batch(Spec::Ngram));
    for ((p, a), b) in prompts.iter().zip(&plain).zip(&drafted) {
        assert_eq!(a.tokens, b.tokens, "{p}");
    }
    // Four sequences on two cores: a drafted token costs about as much as the step's own
    // tokens, so the engine drafts rarely (when one sequence is alone, and a one-token probe
    // every 32 steps); some drafts were still verified among the others' tokens.
    let drafted: u32 = drafted.iter().map(|o| o.timings.drafted_tokens).sum();
    assert!(drafted > 0);
}

#[test]
fn limits_and_stop_strings_cut_a_draft_where_they_would_cut_plain_output() {
    let _turn = common::one_at_a_time();
    let plain = engine(1, Spec::None);
    let spec = engine(1, Spec::Ngram);
    // A token limit inside a run of confirmed drafts: exactly that many tokens.
    for n in [1, 5, 13, 20] {
        let (a, b) = (run(&plain, request(COPY, n)), run(&spec, request(COPY, n)));
        assert_eq!(b.tokens.len(), n as usize);
        assert_eq!(a.tokens, b.tokens);
    }
    // A stop string inside drafted text.
    let full = run(&plain, request(COPY, 96)).text;
    let stop = "def mul";
    assert!(full.contains(stop), "the model copies the code: {full:?}");
    let with_stop = |e: &Engine| {
        let mut r = request(COPY, 96);
        r.stop = vec![stop.into()];
        run(e, r)
    };
    let (a, b) = (with_stop(&plain), with_stop(&spec));
    assert_eq!(a.text, b.text);
    assert_eq!(b.reason, FinishReason::Stop);
    assert!(!b.text.contains(stop));
    // The engine goes on and still answers the same.
    assert_eq!(run(&spec, request(COPY, 40)).tokens, run(&plain, request(COPY, 40)).tokens);
}

#[test]
fn cancelling_mid_draft_stops_and_the_engine_goes_on() {
    let _turn = common::one_at_a_time();
    let plain = engine(1, Spec::None);
    let spec = engine(1, Spec::Ngram);
    let g = spec.generate(request(COPY, 400)).unwrap();
    let mut seen = 0;
    let mut reason = None;
    while let Ok(ev) = g.events.recv_timeout(Duration::from_secs(60)) {
        match ev {
            Event::Token { .. } => {
                seen += 1;
                if seen == 20 {
                    g.cancel();
                }
            }
            Event::Done { reason: r, .. } => {
                reason = Some(r);
                break;
            }
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(reason, Some(FinishReason::Cancelled));
    assert!(seen < 60, "stopped soon after the cancel: {seen} tokens");
    // The cancelled sequence's slot is reused: its KV cache holds no unconfirmed draft.
    assert_eq!(run(&spec, request(COPY, 64)).tokens, run(&plain, request(COPY, 64)).tokens);
}

#[test]
fn greedy_output_is_the_same_with_a_draft_model_alone_and_batched() {
    let _turn = common::one_at_a_time();
    let plain = engine(1, Spec::None);
    let drafted = engine(1, Spec::Draft);
    for (prompt, n) in [(COPY, 64), (FREE, 48)] {
        let (a, b) = (run(&plain, request(prompt, n)), run(&drafted, request(prompt, n)));
        assert_eq!(a.tokens, b.tokens, "{prompt}");
        assert_eq!(a.text, b.text);
        let t = &b.timings;
        // A model drafting for itself is mostly right (not always: its draft context decodes
        // one token at a time, the verification a batch, and near-ties round either way).
        assert!(t.drafted_tokens > 0 && t.accepted_tokens * 10 >= t.drafted_tokens * 6, "{t:?}");
        eprintln!("{prompt:?}: {} tokens, {} drafted, {} accepted", t.generated_tokens, t.drafted_tokens, t.accepted_tokens);
    }
    // Limits and stop strings inside a draft.
    for n in [1, 7, 19] {
        assert_eq!(run(&drafted, request(FREE, n)).tokens, run(&plain, request(FREE, n)).tokens);
    }
    let stopped = |e: &Engine| {
        let mut r = request(COPY, 64);
        r.stop = vec!["def mul".into()];
        run(e, r)
    };
    assert_eq!(stopped(&drafted).text, stopped(&plain).text);
    drop(drafted);
    // --draft-p-min: no draft where the draft model is unsure (a haiku, unlike a copy).
    let mut o = options(1, Spec::Draft);
    o.draft_p_min = 0.99;
    let sure = Engine::start(o).unwrap();
    let (copy, haiku) = (run(&sure, request(COPY, 48)), run(&sure, request(FREE, 48)));
    assert_eq!(haiku.tokens, run(&plain, request(FREE, 48)).tokens);
    let rate = |o: &Output| o.timings.drafted_tokens as f64 / o.timings.generated_tokens.max(1) as f64;
    assert!(rate(&haiku) < rate(&copy), "haiku {:?} copy {:?}", haiku.timings, copy.timings);
    drop((plain, sure));
    let prompts = [COPY, FREE, "Count from 1 to 20, separated by commas.", "List three colors."];
    let batch = |spec: Spec| {
        let e = engine(4, spec);
        let gens: Vec<_> = prompts.iter().map(|p| e.generate(request(p, 48)).unwrap()).collect();
        gens.into_iter().map(|g| g.collect().unwrap()).collect::<Vec<Output>>()
    };
    let (a, b) = (batch(Spec::None), batch(Spec::Draft));
    for ((p, a), b) in prompts.iter().zip(&a).zip(&b) {
        assert_eq!(a.tokens, b.tokens, "{p}");
    }
}

#[test]
fn a_draft_model_as_slow_as_the_target_is_only_probed() {
    let _turn = common::one_at_a_time();
    // Its decodes are timed: a drafted token costs a whole step of the target and saves at
    // most one, so after the first steps it only drafts one token in PROBE_EVERY steps.
    let mut o = options(1, Spec::Draft);
    o.draft_every_step = false;
    let measured = Engine::start(o).unwrap();
    let plain = engine(1, Spec::None);
    let (a, b) = (run(&plain, request(COPY, 96)), run(&measured, request(COPY, 96)));
    assert_eq!(a.tokens, b.tokens);
    let t = &b.timings;
    eprintln!("{} tokens, {} drafted, {} accepted", t.generated_tokens, t.drafted_tokens, t.accepted_tokens);
    assert!(t.drafted_tokens > 0, "probes still draft: {t:?}");
    assert!(t.drafted_tokens <= 12, "{t:?}");
}

#[test]
fn a_draft_model_with_another_vocabulary_is_refused_clearly() {
    let _turn = common::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-vocab.gguf");
    let mut w = hearth_gguf::writer::GgufWriter::from_file(&model_path()).unwrap();
    let Some(hearth_gguf::Value::Array(mut tokens)) = w.get("tokenizer.ggml.tokens").cloned() else { panic!("no vocabulary") };
    tokens[1000] = hearth_gguf::Value::String("<not-the-same-token>".into());
    w.set("tokenizer.ggml.tokens", hearth_gguf::Value::Array(tokens));
    w.write_to_path(&other).unwrap();
    let mut o = options(1, Spec::Draft);
    o.draft_model = Some(other.clone());
    let err = Engine::start(o).err().expect("refused").to_string();
    assert!(err.contains("cannot draft for") && err.contains("token 1000") && err.contains("vocabulary"), "{err}");
    // --spec draft without a draft model.
    let mut o = options(1, Spec::Draft);
    o.draft_model = None;
    let err = Engine::start(o).err().expect("refused").to_string();
    assert!(err.contains("--model-draft"), "{err}");
}
