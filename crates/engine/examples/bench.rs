//! Engine throughput on one model, measured the way llama.cpp's `llama-bench` measures it, so
//! `bench/engine.sh` can put the two side by side:
//!
//! - `pp512`: a 512-token prompt (random tokens, a fresh one each repetition so no prompt cache
//!   helps), tokens per second of prompt processing;
//! - `tg128`: 128 generated tokens after a 1-token prompt, tokens per second;
//! - `agg1` / `agg4`: aggregate generated tokens per second of 1 and of 4 sequences decoded
//!   together (continuous batching), 128 tokens each.
//!
//! Prints one JSON object per line. Usage:
//!   cargo run --release -p hearth-engine --example bench -- MODEL [--threads N] [--reps N] [--flash-attn on|off|auto]

use std::time::Instant;

use hearth_engine::{Engine, EngineOptions, FlashAttn, GenerateRequest, ModelOptions, Prompt, SamplingParams};

struct Rng(u64);

impl Rng {
    fn token(&mut self, n_vocab: i32) -> i32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n_vocab as u64) as i32
    }
}

fn engine(model: &str, threads: usize, fa: FlashAttn, parallel: u32, ctx: u32) -> Engine {
    let mut o = EngineOptions::new(ModelOptions::new(model));
    o.threads = Some(threads);
    o.flash_attn = fa;
    o.parallel = parallel;
    o.ctx_size = ctx;
    Engine::start(o).unwrap_or_else(|e| panic!("{e}"))
}

fn request(prompt: Vec<i32>, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Tokens(prompt),
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        ignore_eos: true,
        grammar: None,
        logprobs: None,
        preserved: Vec::new(),
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(2).saturating_sub(1) as f64;
    (m, var.sqrt())
}

fn report(test: &str, samples: &[f64]) {
    let (m, sd) = mean_sd(samples);
    println!("{{\"test\":\"{test}\",\"avg_ts\":{m:.3},\"stddev_ts\":{sd:.3},\"reps\":{}}}", samples.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().expect("usage: bench MODEL [--threads N] [--reps N] [--flash-attn on|off|auto]").clone();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let threads: usize = flag("--threads").map_or(2, |v| v.parse().unwrap());
    let reps: usize = flag("--reps").map_or(5, |v| v.parse().unwrap());
    let fa: FlashAttn = flag("--flash-attn").map_or(FlashAttn::Off, |v| v.parse().unwrap());
    let mut rng = Rng(42);

    let e = engine(&model, threads, fa, 1, 1024);
    let n_vocab = e.model().n_vocab();
    let mut pp = Vec::new();
    for rep in 0..=reps {
        let prompt: Vec<i32> = (0..512).map(|_| rng.token(n_vocab)).collect();
        let out = e.generate(request(prompt, 0)).unwrap().collect().unwrap();
        assert_eq!(out.timings.cached_tokens, 0);
        if rep > 0 {
            pp.push(512.0 * 1e3 / out.timings.prompt_ms);
        }
    }
    report("pp512", &pp);

    let mut tg = Vec::new();
    for rep in 0..=reps {
        let out = e.generate(request(vec![rng.token(n_vocab)], 129)).unwrap().collect().unwrap();
        assert_eq!(out.tokens.len(), 129);
        if rep > 0 {
            tg.push(out.timings.generation_per_second());
        }
    }
    report("tg128", &tg);
    drop(e);

    for parallel in [1u32, 4] {
        let e = engine(&model, threads, fa, parallel, 512 * parallel);
        let mut agg = Vec::new();
        for rep in 0..=reps {
            let start = Instant::now();
            let gens: Vec<_> = (0..parallel)
                .map(|_| e.generate(request(vec![rng.token(n_vocab)], 128)).unwrap())
                .collect();
            let total: usize = gens.into_iter().map(|g| g.collect().unwrap().tokens.len()).sum();
            assert_eq!(total, 128 * parallel as usize);
            if rep > 0 {
                agg.push(total as f64 / start.elapsed().as_secs_f64());
            }
        }
        report(&format!("agg{parallel}"), &agg);
    }
}
