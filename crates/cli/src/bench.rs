//! `hearth bench`: the same prompts against several endpoints (hearth, Ollama, llama-server,
//! any OpenAI-compatible server), side by side: time to first token, prompt and generation
//! rates, aggregate throughput at each concurrency level.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::{BenchApi, BenchArgs};
use hearth_protocol::Spec;

/// One endpoint to measure.
struct Endpoint {
    url: String,
    api: BenchApi,
    /// What the table calls it, after the URL.
    note: Option<String>,
}

/// One request's measurements.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    ttft_s: f64,
    prompt_tokens: u64,
    gen_tokens: u64,
    /// From the first to the last generated token.
    gen_s: f64,
}

/// The results of one endpoint at one concurrency level (medians over the runs).
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub endpoint: String,
    pub concurrency: usize,
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
    pub prompt_tok_s: f64,
    pub gen_tok_s_per_stream: f64,
    pub aggregate_tok_s: f64,
    pub prompt_tokens: u64,
    pub gen_tokens: u64,
    pub requests: usize,
    pub errors: usize,
}

const WORDS: &[&str] = &[
    "river", "stone", "light", "garden", "window", "market", "silver", "morning", "forest", "engine", "letter", "harbor",
    "winter", "candle", "bridge", "orange", "castle", "pencil", "valley", "thunder", "mirror", "basket", "planet", "meadow",
];

/// A deterministic prompt of about `words` words; `seed` makes each one different (no prompt
/// cache can help).
fn prompt(words: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = String::from("Continue this list of words:");
    for _ in 0..words {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.push(' ');
        out.push_str(WORDS[(x >> 33) as usize % WORDS.len()]);
    }
    out
}

impl Endpoint {
    /// One streamed request of `gen` tokens (the end-of-text token ignored where the API
    /// allows): the prompt as is, or as the user's message of a chat.
    fn request(&self, model: &str, prompt: &str, gen: u32, temperature: f32, seed: u64) -> Result<Sample> {
        let start = Instant::now();
        let (path, body) = match self.api {
            BenchApi::Openai => (
                "/v1/completions",
                json!({"model": model, "prompt": prompt, "max_tokens": gen, "temperature": temperature, "seed": seed, "stream": true,
                       "stream_options": {"include_usage": true}, "ignore_eos": true}),
            ),
            BenchApi::OpenaiChat => (
                "/v1/chat/completions",
                json!({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": gen, "temperature": temperature,
                       "seed": seed, "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true}),
            ),
            BenchApi::Ollama => (
                "/api/generate",
                json!({"model": model, "prompt": prompt, "raw": true, "stream": true,
                       "options": {"num_predict": gen, "temperature": temperature, "seed": seed}}),
            ),
        };
        let resp = match ureq::post(&format!("{}{path}", self.url)).timeout(Duration::from_secs(600)).send_json(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                let msg = v["error"].as_str().or_else(|| v["error"]["message"].as_str()).unwrap_or("").to_string();
                bail!("{} answered {code}: {msg}", self.url);
            }
            Err(e) => bail!("cannot reach {}: {e}", self.url),
        };
        let (mut first, mut last) = (None, None);
        let (mut chunks, mut prompt_tokens, mut gen_tokens) = (0u64, 0u64, 0u64);
        for line in BufReader::new(resp.into_reader()).lines() {
            let line = line.context("the stream broke")?;
            let data = match self.api {
                BenchApi::Openai | BenchApi::OpenaiChat => match line.strip_prefix("data: ") {
                    Some("[DONE]") => break,
                    Some(d) => d.to_string(),
                    None => continue,
                },
                BenchApi::Ollama => line,
            };
            if data.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&data).context("the server sent invalid JSON")?;
            if !v["error"].is_null() {
                bail!("{}: {}", self.url, v["error"]);
            }
            let text = match self.api {
                BenchApi::Openai => v["choices"][0]["text"].as_str().unwrap_or(""),
                BenchApi::OpenaiChat => v["choices"][0]["delta"]["content"].as_str().unwrap_or(""),
                BenchApi::Ollama => v["response"].as_str().unwrap_or(""),
            };
            if !text.is_empty() {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                chunks += 1;
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                gen_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
            }
            if v["done"] == true {
                prompt_tokens = v["prompt_eval_count"].as_u64().unwrap_or(0);
                gen_tokens = v["eval_count"].as_u64().unwrap_or(0);
            }
        }
        let (Some(first), Some(last)) = (first, last) else { bail!("{} generated nothing", self.url) };
        Ok(Sample {
            ttft_s: (first - start).as_secs_f64(),
            prompt_tokens,
            gen_tokens: if gen_tokens > 0 { gen_tokens } else { chunks },
            gen_s: (last - first).as_secs_f64(),
        })
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn measure(ep: &Endpoint, a: &BenchArgs, words: usize) -> Result<Vec<Level>> {
    let model = a.model.clone().unwrap_or_default();
    let mut levels = Vec::new();
    let mut seed = a.seed;
    for &c in &a.concurrency {
        let mut samples = Vec::new();
        let mut errors = 0;
        let mut aggregates = Vec::new();
        for _ in 0..a.runs.max(1) {
            let start = Instant::now();
            let results: Vec<Result<Sample>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..c)
                    .map(|_| {
                        seed += 1;
                        let (p, model, seed) = (prompt(words, seed), model.clone(), seed);
                        s.spawn(move || ep.request(&model, &p, a.gen_tokens, a.temperature, seed))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))).collect()
            });
            let wall = start.elapsed().as_secs_f64();
            let mut tokens = 0;
            for r in results {
                match r {
                    Ok(s) => {
                        tokens += s.gen_tokens;
                        samples.push(s);
                    }
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        errors += 1;
                    }
                }
            }
            aggregates.push(tokens as f64 / wall);
        }
        let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft_s * 1e3).collect();
        let mut prompt_rate: Vec<f64> = samples.iter().filter(|s| s.ttft_s > 0.0).map(|s| s.prompt_tokens as f64 / s.ttft_s).collect();
        let mut gen_rate: Vec<f64> =
            samples.iter().filter(|s| s.gen_s > 0.0 && s.gen_tokens > 1).map(|s| (s.gen_tokens - 1) as f64 / s.gen_s).collect();
        let mut pt: Vec<f64> = samples.iter().map(|s| s.prompt_tokens as f64).collect();
        let mut gt: Vec<f64> = samples.iter().map(|s| s.gen_tokens as f64).collect();
        levels.push(Level {
            endpoint: format!(
                "{} ({}{})",
                ep.url,
                match ep.api {
                    BenchApi::Openai => "openai",
                    BenchApi::OpenaiChat => "openai-chat",
                    BenchApi::Ollama => "ollama",
                },
                ep.note.as_deref().map(|n| format!(", {n}")).unwrap_or_default()
            ),
            concurrency: c,
            ttft_p50_ms: percentile(&mut ttft.clone(), 0.5),
            ttft_p95_ms: percentile(&mut ttft, 0.95),
            prompt_tok_s: median(&mut prompt_rate),
            gen_tok_s_per_stream: median(&mut gen_rate),
            aggregate_tok_s: median(&mut aggregates),
            prompt_tokens: median(&mut pt) as u64,
            gen_tokens: median(&mut gt) as u64,
            requests: samples.len() + errors,
            errors,
        });
    }
    Ok(levels)
}

pub fn bench(mut a: BenchArgs) -> Result<()> {
    let Some(model) = a.model.clone() else { bail!("--model is needed: the model name the endpoints know") };
    // Without --url: hearth itself, started here on a free port with this machine's store;
    // with --spec, twice: without speculative decoding (the baseline) and with it.
    let mut notes = Vec::new();
    let _local = if a.urls.is_empty() {
        let most = a.concurrency.iter().copied().max().unwrap_or(1).to_string();
        let specs: Vec<Spec> = match a.spec {
            Some(s) if s != Spec::None => vec![Spec::None, s],
            _ => vec![Spec::None],
        };
        let mut servers = Vec::new();
        if a.spec == Some(Spec::Draft) && a.model_draft.is_none() {
            bail!("--spec draft needs the draft model: --model-draft MODEL");
        }
        for spec in specs {
            let spec_s = spec.to_string();
            let mut args = vec!["--parallel", &most, "--spec", &spec_s];
            if let (Spec::Draft, Some(d)) = (spec, &a.model_draft) {
                args.extend(["--model-draft", d]);
            }
            let bg = crate::serve::background(crate::serve::default_args(&args)?)?;
            eprintln!("started hearth on {} (no --url given; --spec {spec})", bg.url);
            a.urls.push(bg.url.clone());
            notes.push(format!("spec {spec}"));
            servers.push(bg);
        }
        servers
    } else {
        if a.spec.is_some() {
            bail!("--spec compares two servers that `hearth bench` starts itself (give no --url); to measure a server of yours, start it with --spec");
        }
        Vec::new()
    };
    if a.concurrency.is_empty() || a.concurrency.contains(&0) {
        bail!("--concurrency takes levels of 1 or more, e.g. 1,4,8");
    }
    let apis = &a.api;
    let endpoints: Vec<Endpoint> = a
        .urls
        .iter()
        .enumerate()
        .map(|(i, u)| Endpoint {
            url: u.trim_end_matches('/').to_string(),
            api: apis.get(i).or(apis.last()).copied().unwrap_or(BenchApi::Openai),
            note: (notes.len() > 1).then(|| notes[i].clone()),
        })
        .collect();
    let mut all = Vec::new();
    for ep in &endpoints {
        // Warm-up (loads the model) and calibration: tokens per word for this model, and what
        // the chat template adds, from two prompt lengths.
        let (short, long) = (16, 64);
        let probe = |words| ep.request(&model, &prompt(words, 1), 4, a.temperature, 1).with_context(|| format!("warm-up request to {}", ep.url));
        let (t_short, t_long) = (probe(short)?.prompt_tokens as f64, probe(long)?.prompt_tokens as f64);
        let words = if t_long > t_short {
            let per_word = (t_long - t_short) / (long - short) as f64;
            let overhead = t_short - per_word * short as f64;
            ((a.prompt_tokens as f64 - overhead) / per_word).round().max(1.0) as usize
        } else {
            a.prompt_tokens as usize * 3 / 4
        };
        eprintln!("measuring {} ({:?} API)", ep.url, ep.api);
        all.extend(measure(ep, &a, words)?);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", table(&all));
    }
    if let Some(path) = &a.plot {
        plot(&all, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A markdown table, with each endpoint's aggregate as a ratio to the first endpoint's.
pub fn table(levels: &[Level]) -> String {
    let mut out = String::from("| endpoint | streams | TTFT p50 ms | TTFT p95 ms | prompt tok/s | gen tok/s/stream | aggregate tok/s | ratio | errors |\n|---|---|---|---|---|---|---|---|---|\n");
    let first = levels.first().map(|l| l.endpoint.clone()).unwrap_or_default();
    for l in levels {
        let base = levels.iter().find(|b| b.endpoint == first && b.concurrency == l.concurrency).map_or(0.0, |b| b.aggregate_tok_s);
        let ratio = if base > 0.0 { format!("{:.2}", l.aggregate_tok_s / base) } else { "-".into() };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {ratio} | {} |\n",
            l.endpoint, l.concurrency, l.ttft_p50_ms, l.ttft_p95_ms, l.prompt_tok_s, l.gen_tok_s_per_stream, l.aggregate_tok_s, l.errors
        ));
    }
    out
}

/// Aggregate tok/s against concurrency, one line per endpoint, as SVG.
pub fn plot(levels: &[Level], path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let max_c = levels.iter().map(|l| l.concurrency).max().unwrap_or(1) as f64;
    let max_y = levels.iter().map(|l| l.aggregate_tok_s).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("aggregate generation tok/s", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_c + 1.0, 0.0..max_y)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("concurrent streams")
        .y_desc("tok/s")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut endpoints: Vec<&str> = levels.iter().map(|l| l.endpoint.as_str()).collect();
    endpoints.dedup();
    for (i, ep) in endpoints.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = levels.iter().filter(|l| l.endpoint == *ep).map(|l| (l.concurrency as f64, l.aggregate_tok_s)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(ep.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_deterministic_and_distinct() {
        assert_eq!(prompt(10, 3), prompt(10, 3));
        assert_ne!(prompt(10, 3), prompt(10, 4));
        assert_eq!(prompt(10, 3).split(' ').count(), 10 + 5);
    }

    #[test]
    fn table_ratios_are_against_the_first_endpoint() {
        let l = |ep: &str, c, agg| Level {
            endpoint: ep.into(),
            concurrency: c,
            ttft_p50_ms: 1.0,
            ttft_p95_ms: 2.0,
            prompt_tok_s: 3.0,
            gen_tok_s_per_stream: 4.0,
            aggregate_tok_s: agg,
            prompt_tokens: 5,
            gen_tokens: 6,
            requests: 1,
            errors: 0,
        };
        let t = table(&[l("a", 1, 10.0), l("a", 4, 20.0), l("b", 1, 5.0), l("b", 4, 30.0)]);
        assert!(t.contains("| b | 1 | 1 | 2 | 3.0 | 4.0 | 5.0 | 0.50 | 0 |"), "{t}");
        assert!(t.contains("| b | 4 | 1 | 2 | 3.0 | 4.0 | 30.0 | 1.50 | 0 |"), "{t}");
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("p.svg");
        plot(&[l("a", 1, 10.0), l("a", 4, 20.0)], &svg).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    }
}
