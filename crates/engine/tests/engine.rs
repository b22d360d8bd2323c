//! The engine on the real test model: greedy parity with llama.cpp, continuous batching,
//! prompt-cache reuse, stop strings, UTF-8 streaming, limits, cancellation, embeddings,
//! grammar-constrained output, log-probabilities.

mod common;

use std::time::{Duration, Instant};

use common::{chat_prompt, engine};
use hearth_engine::{
    EngineError, Event, FinishReason, GenerateRequest, Grammar, Output, Prompt, SamplingParams,
};
use hearth_engine::text::Utf8Stream;

fn greedy(prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Text(prompt.to_string()),
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        ignore_eos: false,
        grammar: None,
        logprobs: None,
        preserved: Vec::new(),
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
fn a_sequence_ending_between_others_leaves_their_answers_and_its_cache_as_they_were() {
    // With a KV cache per sequence, the steps after sequence 1 has ended hold sequences 0, 2
    // and 3: the engine puts a token of sequence 1 in the gap and drops its cell after each
    // step (llama.cpp would split the step in two passes). Neither the others' answers nor
    // sequence 1's cache may show it: a cell left behind would make the next step's filler,
    // at the same position, a decode error for every sequence.
    let lens = [40, 4, 40, 40];
    let alone: Vec<Output> = {
        let e = engine(1, 512);
        PROMPTS.iter().zip(lens).map(|(p, n)| run(&e, greedy(&chat_prompt(p), n))).collect()
    };
    let e = engine(4, 512);
    let gens: Vec<_> = PROMPTS.iter().zip(lens).map(|(p, n)| e.generate(greedy(&chat_prompt(p), n)).unwrap()).collect();
    let together: Vec<Output> = gens.into_iter().map(|g| g.collect().unwrap()).collect();
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a.tokens, t.tokens);
        assert_eq!(t.reason, FinishReason::Length);
    }
    // Sequence 1's prompt and answer are still its cache: asked again, all but the prompt's
    // last token is reused, and the answer is the same.
    let again = run(&e, greedy(&chat_prompt(PROMPTS[1]), 4));
    assert_eq!(again.timings.cached_tokens, again.timings.prompt_tokens - 1);
    assert_eq!(again.tokens, alone[1].tokens);
    // And a sequence joining later in the gap's place goes on as alone.
    let gens: Vec<_> = [(PROMPTS[0], 40), (PROMPTS[3], 4), (PROMPTS[2], 40)].iter().map(|(p, n)| e.generate(greedy(&chat_prompt(p), *n)).unwrap()).collect();
    let outs: Vec<Output> = gens.into_iter().map(|g| g.collect().unwrap()).collect();
    assert_eq!(outs[0].tokens, alone[0].tokens);
    assert_eq!(outs[1].tokens, alone[3].tokens[..4]);
    assert_eq!(outs[2].tokens, alone[2].tokens);
}

#[test]
fn one_kv_cache_for_all_sequences_keeps_them_apart_each_within_its_own_context() {
    let mut o = hearth_engine::EngineOptions::new(hearth_engine::ModelOptions::new(common::model_path()));
    (o.parallel, o.ctx_size, o.threads, o.kv_unified) = (4, 4 * 256, Some(2), true);
    let e = hearth_engine::Engine::start(o).unwrap();
    // Each sequence is held to its share of the cache, as with a cache per sequence.
    assert_eq!(e.n_ctx_seq(), 256);
    // Requests of different lengths at once (sequences end while others go on, one joins
    // later), two prompts twice: the same prompt gives the same tokens whatever sequence,
    // cells and neighbours it gets. (Against a sequence alone, a shared cache changes the
    // batch's attention, and so the last bits of the logits: this tiny model's greedy answers
    // to most prompts flip with such changes, as with flash attention on or off.)
    let (sum, egg) = (chat_prompt("What is 2 + 2?"), chat_prompt("How do I boil an egg?"));
    let gens: Vec<_> = [(&sum, 24), (&egg, 8), (&sum, 6)].into_iter().map(|(p, n)| e.generate(greedy(p, n)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let late = e.generate(greedy(&egg, 24)).unwrap();
    let outs: Vec<Output> = gens.into_iter().chain([late]).map(|g| g.collect().unwrap()).collect();
    assert!(outs[0].text.contains('4'), "{}", outs[0].text);
    assert!(outs[1].text.starts_with("Boil an egg"), "{}", outs[1].text);
    assert_eq!((outs[1].tokens.len(), outs[2].tokens.len()), (8, 6));
    assert_eq!(outs[2].tokens, outs[0].tokens[..6]);
    assert_eq!(outs[1].tokens, outs[3].tokens[..8]);
    // Filling its own context ends a sequence at its share, not at the whole cache.
    let out = run(&e, GenerateRequest { max_tokens: None, ..greedy(&chat_prompt("Write a very long story about a dragon."), 0) });
    assert_eq!(out.reason, FinishReason::Length);
    assert_eq!(out.timings.prompt_tokens as usize + out.tokens.len(), 256);
    let long = "word ".repeat(300);
    assert!(matches!(e.generate(greedy(&long, 4)), Err(EngineError::PromptTooLong { .. })));
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
            Event::Token { id, text, .. } => {
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
        .embed(&["The cat sat on the mat.".into(), "The cat sat on the mat.".into(), "Quantum chromodynamics".into()], true, false)
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

// Grammar-constrained output.

fn with_grammar(prompt: &str, grammar: Grammar, max_tokens: u32) -> GenerateRequest {
    GenerateRequest { grammar: Some(grammar), ..greedy(&chat_prompt(prompt), max_tokens) }
}

/// Whether `text` is JSON cut short: nothing wrong in it except that it ends too early.
fn is_json_prefix(text: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(_) => true,
        Err(e) => e.is_eof(),
    }
}

#[test]
fn json_grammar_gives_a_json_object() {
    let e = engine(1, 1024);
    let out = run(&e, with_grammar("Give me a JSON object describing a cat with its name and age.", Grammar::Json, 400));
    assert_eq!(out.reason, FinishReason::Stop, "the object is closed and the model ends: {:?}", out.text);
    let v: serde_json::Value = serde_json::from_str(&out.text).unwrap_or_else(|err| panic!("{err}: {:?}", out.text));
    assert!(v.is_object() && !v.as_object().unwrap().is_empty(), "{v}");
    assert!(out.text.starts_with('{') && out.text.ends_with('}'), "{:?}", out.text);
    // Without the grammar the model answers in prose around the JSON, or not at all.
    let free = run(&e, greedy(&chat_prompt("Give me a JSON object describing a cat with its name and age."), 400));
    assert!(serde_json::from_str::<serde_json::Value>(&free.text).is_err(), "{:?}", free.text);
}

#[test]
fn json_grammar_holds_under_sampling_and_penalties() {
    let e = engine(2, 1024);
    let mut sampled = with_grammar("Describe a dog as JSON.", Grammar::Json, 200);
    sampled.sampling = SamplingParams { seed: Some(42), temperature: 1.0, ..SamplingParams::default() };
    let mut penalised = with_grammar("Describe a dog as JSON.", Grammar::Json, 200);
    penalised.sampling.repeat_penalty = 1.3;
    // Together in one batch, with a plain request beside them.
    let gens = [sampled.clone(), penalised, greedy(&chat_prompt("List three colors."), 24)]
        .into_iter()
        .map(|r| e.generate(r).unwrap())
        .collect::<Vec<_>>();
    let outs: Vec<Output> = gens.into_iter().map(|g| g.collect().unwrap()).collect();
    for out in &outs[..2] {
        match out.reason {
            FinishReason::Stop => {
                let v: serde_json::Value = serde_json::from_str(&out.text).unwrap_or_else(|err| panic!("{err}: {:?}", out.text));
                assert!(v.is_object(), "{v}");
            }
            _ => assert!(is_json_prefix(&out.text) && out.text.starts_with('{'), "{:?}", out.text),
        }
    }
    assert_eq!(outs[2].text, run(&engine(1, 512), greedy(&chat_prompt("List three colors."), 24)).text);
    // Seeded sampling under a grammar is reproducible.
    assert_eq!(run(&e, sampled).tokens, outs[0].tokens);
}

#[test]
fn a_grammar_forces_text_the_model_would_not_choose() {
    let e = engine(1, 512);
    let grammar = Grammar::Gbnf("root ::= \"The answer is \" (\"yes\" | \"no\") \". Really.\"\n".into());
    let out = run(&e, with_grammar("What is the capital of France?", grammar, 64));
    assert_eq!(out.reason, FinishReason::Stop, "{:?}", out.text);
    assert!(out.text == "The answer is yes. Really." || out.text == "The answer is no. Really.", "{:?}", out.text);
    assert_eq!(out.timings.generated_tokens as usize, out.tokens.len());
    // The engine goes on unconstrained afterwards.
    let plain = run(&e, greedy(&chat_prompt("What is the capital of France?"), 32));
    assert_eq!(plain.text, UPSTREAM_GREEDY);
}

#[test]
fn stop_strings_and_max_tokens_still_end_a_constrained_generation() {
    let e = engine(1, 1024);
    let prompt = "Give me a JSON object describing a cat with its name and age.";
    let full = run(&e, with_grammar(prompt, Grammar::Json, 400));
    let mut limited = with_grammar(prompt, Grammar::Json, 5);
    let out = run(&e, limited.clone());
    assert_eq!(out.reason, FinishReason::Length);
    assert_eq!(out.tokens, full.tokens[..5]);
    assert!(is_json_prefix(&out.text), "{:?}", out.text);
    // A stop string inside the object: the text before it, and the reason is Stop.
    limited.max_tokens = Some(400);
    limited.stop = vec!["\":".into()];
    let out = run(&e, limited);
    assert_eq!(out.reason, FinishReason::Stop);
    let cut = full.text.find("\":").expect("a key in the object");
    assert_eq!(out.text, full.text[..cut]);
}

#[test]
fn bad_grammars_and_logprob_requests_are_clear_errors() {
    let e = engine(1, 256);
    let err = |grammar: &str| -> String {
        match e.generate(with_grammar("Hi", Grammar::Gbnf(grammar.into()), 4)) {
            Err(EngineError::InvalidRequest(m)) => m,
            other => panic!("{grammar:?}: expected InvalidRequest, got {:?}", other.err()),
        }
    };
    assert!(err("").contains("empty"));
    assert!(err("  \n").contains("empty"));
    assert!(err("root ::= \"unterminated").contains("grammar"));
    assert!(err("root ::= [a-").contains("grammar"));
    assert!(err("start ::= \"x\"").contains("root"), "{}", err("start ::= \"x\""));
    assert!(err("root ::= root \"x\"").contains("left recursion"), "{}", err("root ::= root \"x\""));
    assert!(err("root ::= missing").contains("grammar"));
    assert!(err("root ::= \"a\0\"").contains("NUL"));
    let mut eos = with_grammar("Hi", Grammar::Json, 4);
    eos.ignore_eos = true;
    assert!(e.generate(eos).err().unwrap().to_string().contains("ignore_eos"));
    let too_many = GenerateRequest { logprobs: Some(21), ..greedy("Hi", 4) };
    assert!(matches!(e.generate(too_many), Err(EngineError::InvalidRequest(m)) if m.contains("20")));
    // A grammar llama.cpp accepts but no token can satisfy (a token id beyond the vocabulary)
    // fails the request; llama.cpp never sees a token its grammar rejects (it would abort).
    match e.generate(with_grammar("Hi", Grammar::Gbnf("root ::= <[99999999]>".into()), 4)) {
        Ok(g) => match g.collect() {
            Err(EngineError::InvalidRequest(m)) => assert!(m.contains("allows no token"), "{m}"),
            other => panic!("expected an error event, got {other:?}"),
        },
        Err(EngineError::InvalidRequest(_)) => {}
        Err(other) => panic!("{other}"),
    }
    // None of this hurt the engine.
    let out = run(&e, with_grammar("Say yes.", Grammar::Gbnf("root ::= \"yes\"".into()), 8));
    assert_eq!((out.text.as_str(), out.reason), ("yes", FinishReason::Stop));
}

// Log-probabilities.

fn with_logprobs(prompt: &str, n: Option<u32>, max_tokens: u32) -> GenerateRequest {
    GenerateRequest { logprobs: n, ..greedy(&chat_prompt(prompt), max_tokens) }
}

#[test]
fn greedy_tokens_are_the_most_likely_and_top_logprobs_are_sorted() {
    let e = engine(1, 512);
    let plain = run(&e, with_logprobs("What is the capital of France?", None, 32));
    assert!(plain.logprobs.is_empty());
    let out = run(&e, with_logprobs("What is the capital of France?", Some(5), 32));
    // Asking for log-probabilities changes nothing else.
    assert_eq!(out.text, UPSTREAM_GREEDY);
    assert_eq!(out.tokens, plain.tokens);
    assert_eq!(out.logprobs.len(), out.tokens.len());
    for (lp, &id) in out.logprobs.iter().zip(&out.tokens) {
        assert_eq!(lp.chosen.id, id);
        assert_eq!(lp.chosen.bytes, e.model().token_piece(id, true));
        assert_eq!(lp.chosen.text, String::from_utf8_lossy(&lp.chosen.bytes));
        assert_eq!(lp.top.len(), 5);
        // Greedy picks the most likely token, so it heads the list.
        assert_eq!(lp.top[0].id, id);
        assert_eq!(lp.top[0].logprob, lp.chosen.logprob);
        assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob), "{:?}", lp.top);
        assert!(lp.top.iter().all(|t| t.logprob <= 0.0 && t.logprob.is_finite()));
        let mass: f32 = lp.top.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0 + 1e-4, "{mass}");
        let mut ids: Vec<_> = lp.top.iter().map(|t| t.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 5);
    }
    // " Paris" is a confident answer: most of the mass on one token somewhere.
    assert!(out.logprobs.iter().any(|lp| lp.chosen.logprob > -0.1));
}

#[test]
fn zero_top_logprobs_gives_the_chosen_token_only_and_events_carry_them() {
    let e = engine(1, 512);
    let g = e.generate(with_logprobs("List three colors.", Some(0), 8)).unwrap();
    let mut n = 0;
    for ev in g.events.iter() {
        match ev {
            Event::Token { id, logprobs, .. } => {
                let lp = logprobs.expect("asked for");
                assert_eq!(lp.chosen.id, id);
                assert!(lp.top.is_empty());
                assert!(lp.chosen.logprob <= 0.0);
                n += 1;
            }
            Event::Done { .. } => break,
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, 8);
    // Off: no event carries any.
    let g = e.generate(with_logprobs("List three colors.", None, 8)).unwrap();
    for ev in g.events.iter() {
        match ev {
            Event::Token { logprobs, .. } => assert!(logprobs.is_none()),
            Event::Done { .. } => break,
            Event::Error(e) => panic!("{e}"),
        }
    }
}

#[test]
fn logprobs_are_the_models_own_under_sampling_and_grammar() {
    let e = engine(1, 1024);
    let mut req = with_grammar("Give me a JSON object describing a cat with its name and age.", Grammar::Json, 40);
    req.logprobs = Some(3);
    let out = run(&e, req);
    assert_eq!(out.logprobs.len(), out.tokens.len());
    // The grammar forces tokens the model would not pick first (`{` right away), and the
    // log-probabilities say so: they are from before the grammar.
    assert!(out.logprobs.iter().any(|lp| lp.top[0].id != lp.chosen.id), "the grammar never overrode the model");
    for lp in &out.logprobs {
        assert!(lp.chosen.logprob <= lp.top[0].logprob);
    }
    let mut req = with_logprobs("Tell me a story.", Some(2), 24);
    req.sampling = SamplingParams { seed: Some(42), temperature: 1.5, ..SamplingParams::default() };
    let out = run(&e, req);
    for lp in &out.logprobs {
        assert!(lp.chosen.logprob <= lp.top[0].logprob);
        assert!(lp.chosen.logprob.is_finite());
    }
}
