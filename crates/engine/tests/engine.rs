//! The engine on the real test model: greedy parity with llama.cpp, continuous batching,
//! prompt-cache reuse, stop strings, UTF-8 streaming, limits, cancellation, embeddings.

mod common;

use std::time::{Duration, Instant};

use common::{chat_prompt, engine};
use hearth_engine::{
    EngineError, Event, FinishReason, GenerateRequest, Output, Prompt, SamplingParams,
};
use hearth_engine::text::Utf8Stream;

fn greedy(prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Text(prompt.to_string()),
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        ignore_eos: false,
    }
}

fn run(e: &hearth_engine::Engine, req: GenerateRequest) -> Output {
    e.generate(req).unwrap().collect().unwrap()
}

/// Upstream llama.cpp's greedy continuation of `chat_prompt("What is the capital of France?")`,
/// 32 tokens. Reference run: `llama-simple -m SmolLM2-135M-Instruct.Q4_1.gguf -n 32 "<prompt>"`
/// built by bench/build-upstream.sh from the llama.cpp tree in llama-cpp-python's sdist
/// (CPU, 2 threads). llama-simple tokenizes with special tokens parsed and samples greedily.
const UPSTREAM_GREEDY: &str = include_str!("reference/greedy_capital.txt");

#[test]
fn greedy_decoding_matches_upstream_llama_cpp() {
    let e = engine(1, 512);
    let out = run(&e, greedy(&chat_prompt("What is the capital of France?"), 32));
    assert_eq!(out.tokens.len(), 32);
    assert_eq!(out.reason, FinishReason::Length);
    assert_eq!(out.text, UPSTREAM_GREEDY);
    assert_eq!(out.timings.prompt_tokens, 37);
    assert_eq!(out.timings.generated_tokens, 32);
}

const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three colors.",
    "How do I boil an egg?",
];

#[test]
fn four_prompts_batched_give_the_same_text_as_each_alone() {
    let alone: Vec<Output> = {
        let e = engine(1, 512);
        PROMPTS.iter().map(|p| run(&e, greedy(&chat_prompt(p), 24))).collect()
    };
    let e = engine(4, 512);
    let gens: Vec<_> = PROMPTS
        .iter()
        .map(|p| e.generate(greedy(&chat_prompt(p), 24)).unwrap())
        .collect();
    let together: Vec<Output> = gens.into_iter().map(|g| g.collect().unwrap()).collect();
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a.text, t.text);
        assert_eq!(a.tokens, t.tokens);
    }
}

#[test]
fn a_request_joins_a_running_batch() {
    let e = engine(2, 512);
    let story = chat_prompt("Write a very long story about a dragon.");
    let long = e.generate(greedy(&story, 48)).unwrap();
    // Wait until the first request is generating, then add a second one.
    let Event::Token { text: first_text, .. } = long.events.recv().unwrap() else { panic!("a token first") };
    let short = run(&e, greedy(&chat_prompt(PROMPTS[2]), 8));
    let long = long.collect().unwrap();
    assert_eq!(short.reason, FinishReason::Length);
    assert_eq!(long.reason, FinishReason::Length);
    assert_eq!(long.tokens.len(), 47, "the rest after the first token");
    assert_eq!(long.text, run(&engine(1, 512), greedy(&story, 48)).text.split_at(first_text.len()).1);
    let alone = run(&engine(1, 512), greedy(&chat_prompt(PROMPTS[2]), 8));
    assert_eq!(short.text, alone.text);
}

#[test]
fn follow_up_reuses_the_cached_prefix_and_decodes_the_same_as_cold() {
    let history = "You are reading a long story. ".repeat(20);
    let first = chat_prompt(&format!("{history}\nWhat is it about?"));
    let follow = chat_prompt(&format!("{history}\nWho wrote it?"));
    let e = engine(1, 1024);
    let a = run(&e, greedy(&first, 8));
    assert_eq!(a.timings.cached_tokens, 0);
    let b = run(&e, greedy(&follow, 16));
    let prefix = e.tokenize_prompt(&chat_prompt(&history)).unwrap().len() as u32 - 10;
    assert!(
        b.timings.cached_tokens >= prefix,
        "cached {} of {} prompt tokens, expected at least {prefix}",
        b.timings.cached_tokens,
        b.timings.prompt_tokens
    );
    let cold = run(&engine(1, 1024), greedy(&follow, 16));
    assert_eq!(cold.timings.cached_tokens, 0);
    assert_eq!(b.text, cold.text);
    assert_eq!(b.tokens, cold.tokens);
    // The same prompt again: everything but the last token is reused.
    let again = run(&e, greedy(&follow, 16));
    assert_eq!(again.timings.cached_tokens, again.timings.prompt_tokens - 1);
    assert_eq!(again.text, cold.text);
}

#[test]
fn stop_strings_split_across_tokens_end_generation_and_are_not_emitted() {
    let e = engine(1, 512);
    let full = run(&e, greedy(&chat_prompt("What is the capital of France?"), 32));
    // A stop string that starts inside one token and ends inside a later one.
    let mut tokens_text = Vec::new();
    for &t in &full.tokens {
        tokens_text.push(String::from_utf8_lossy(&e.model().token_piece(t, false)).into_owned());
    }
    let (i, _) = tokens_text
        .iter()
        .enumerate()
        .find(|(i, t)| *i > 2 && t.len() >= 3 && tokens_text[i + 1].len() >= 3)
        .expect("two long tokens in a row");
    let before: String = tokens_text[..i].concat();
    let stop = format!("{}{}", &tokens_text[i][1..], &tokens_text[i + 1][..2]);
    let start = before.len() + 1;
    assert!(full.text[start..].starts_with(&stop));
    let mut req = greedy(&chat_prompt("What is the capital of France?"), 32);
    req.stop = vec!["never appears".into(), stop.clone()];
    let out = run(&e, req);
    assert_eq!(out.reason, FinishReason::Stop);
    assert_eq!(out.text, full.text[..start].to_string(), "stop {stop:?}");
    assert!(!out.text.contains(&stop));
}

#[test]
fn multibyte_characters_split_across_tokens_are_never_emitted_broken() {
    let e = engine(1, 512);
    // The real tokenizer splits these characters over several byte tokens.
    let text = "日本語 😀";
    let tokens = e.model().tokenize(text, false, false).unwrap();
    let pieces: Vec<Vec<u8>> = tokens.iter().map(|&t| e.model().token_piece(t, false)).collect();
    assert!(pieces.iter().any(|p| std::str::from_utf8(p).is_err()), "some piece is a partial character");
    let mut stream = Utf8Stream::default();
    let mut out = String::new();
    for p in &pieces {
        out.push_str(&stream.push(p));
    }
    assert_eq!(out, text);
    // And through generation: the model answers with an emoji made of several byte tokens;
    // no streamed chunk holds a broken character.
    let g = e.generate(greedy("😀😀😀😀😀😀", 16)).unwrap();
    let mut all = String::new();
    let mut tokens = Vec::new();
    for ev in g.events.iter() {
        match ev {
            Event::Token { id, text } => {
                tokens.push(id);
                all.push_str(&text);
            }
            Event::Done { text, .. } => {
                all.push_str(&text);
                break;
            }
            Event::Error(e) => panic!("{e}"),
        }
    }
    let split = tokens.iter().any(|&t| std::str::from_utf8(&e.model().token_piece(t, false)).is_err());
    assert!(split, "some generated token is a partial character");
    assert!(all.contains('😀'), "{all:?}");
    assert!(!all.contains('\u{fffd}'), "{all:?}");
}

#[test]
fn max_tokens_is_honoured() {
    let e = engine(1, 512);
    for n in [0, 1, 5] {
        let out = run(&e, greedy(&chat_prompt("Count to ten."), n));
        assert_eq!(out.tokens.len(), n as usize);
        assert_eq!(out.reason, FinishReason::Length);
    }
}

#[test]
fn the_context_filling_up_ends_generation() {
    let e = engine(1, 256);
    let out = run(&e, GenerateRequest { max_tokens: None, ..greedy(&chat_prompt("Write a very long story about a dragon."), 0) });
    assert_eq!(out.reason, FinishReason::Length);
    let n_ctx = e.n_ctx_seq() as usize;
    assert_eq!(out.timings.prompt_tokens as usize + out.tokens.len(), n_ctx);
}

#[test]
fn cancellation_mid_generation_stops_promptly_and_the_engine_goes_on() {
    let e = engine(1, 2048);
    let g = e.generate(GenerateRequest { max_tokens: None, ..greedy(&chat_prompt("Write a very long story about a dragon."), 0) }).unwrap();
    let mut n = 0;
    let mut reason = None;
    let mut cancelled_at = None;
    for ev in g.events.iter() {
        match ev {
            Event::Token { .. } => {
                n += 1;
                if n == 5 {
                    g.cancel();
                    cancelled_at = Some(Instant::now());
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
    // The engine runs ahead of this reader, so a few more tokens may already be queued; but
    // the story (2048 tokens of context) is far from done.
    assert!(n < 200, "stopped soon after the cancel, got {n} tokens");
    assert!(cancelled_at.unwrap().elapsed() < Duration::from_secs(30));
    // Dropping a generation cancels it too, and the engine serves the next request.
    drop(e.generate(greedy(&chat_prompt("Hello"), 100)).unwrap());
    let out = run(&e, greedy(&chat_prompt("What is the capital of France?"), 32));
    assert_eq!(out.text, UPSTREAM_GREEDY);
}

#[test]
fn bad_requests_are_clear_errors() {
    let e = engine(1, 128);
    let long = "word ".repeat(400);
    match e.generate(greedy(&long, 4)) {
        Err(EngineError::PromptTooLong { tokens, n_ctx }) => {
            assert!(tokens > 128);
            assert_eq!(n_ctx, e.n_ctx_seq());
        }
        other => panic!("expected PromptTooLong, got {:?}", other.err()),
    }
    assert!(matches!(e.generate(greedy("", 4)), Err(EngineError::InvalidRequest(_))));
    let bad_token = GenerateRequest { prompt: Prompt::Tokens(vec![1, 999_999]), ..greedy("", 4) };
    assert!(e.generate(bad_token).err().unwrap().to_string().contains("outside the vocabulary"));
    let mut bad_sampling = greedy("hi", 4);
    bad_sampling.sampling.top_p = 2.0;
    assert!(e.generate(bad_sampling).err().unwrap().to_string().contains("top_p"));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let e = engine(1, 512);
    let mut req = greedy(&chat_prompt("Tell me a story."), 24);
    req.sampling = SamplingParams { seed: Some(42), temperature: 1.0, ..SamplingParams::default() };
    let a = run(&e, req.clone());
    let b = run(&e, req.clone());
    assert_eq!(a.tokens, b.tokens);
    req.sampling.seed = Some(7);
    let c = run(&e, req);
    assert_ne!(a.tokens, c.tokens);
}

#[test]
fn embeddings_are_normalised_and_distinguish_texts() {
    let e = engine(2, 512);
    let v = e
        .embed(&["The cat sat on the mat.".into(), "The cat sat on the mat.".into(), "Quantum chromodynamics".into()], true)
        .unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].len(), e.model().info().n_embd as usize);
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!((dot(&v[0], &v[1]) - 1.0).abs() < 1e-4);
    assert!(dot(&v[0], &v[2]) < 0.99);
    // Generation still works, and gives the same answer, after embedding on the same context.
    let out = run(&e, greedy(&chat_prompt("What is the capital of France?"), 32));
    assert_eq!(out.text, UPSTREAM_GREEDY);
}
