//! `hearth fit`'s estimate (hearth_gguf::fit) against what llama.cpp itself allocates when it
//! loads the starter model: model, KV and compute buffers as its log reports them, across
//! contexts, flash attention on/off and KV cache types. Target: within 5% or 64 MiB.
//! Its own test binary: it installs a global log subscriber.

mod common;

use common::Captured;


use hearth_engine::{CacheType, Engine, EngineOptions, FlashAttn, ModelOptions};
use hearth_gguf::fit::{estimate, kv_bytes_per_elem, ContextPlan};


/// Sum of the MiB figures on log lines containing `what` ("KV buffer size", ...).
fn reported(log: &str, what: &str) -> f64 {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            l.split('=')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

#[test]
fn estimates_match_llama_cpp_allocations() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("llama.cpp=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let path = common::model_path();
    let gguf = hearth_gguf::Gguf::open(&path).unwrap();
    let mut rows = Vec::new();
    for (ctx, fa, kv) in [
        (2048u32, true, "f16"),
        (2048, false, "f16"),
        (8192, true, "f16"),
        (8192, false, "f16"),
        (32768, true, "f16"),
        (8192, true, "q8_0"),
        (32768, true, "q8_0"),
    ] {
        log.0.lock().unwrap().clear();
        let mut o = EngineOptions::new(ModelOptions::new(&path));
        o.ctx_size = ctx;
        o.threads = Some(2);
        o.flash_attn = if fa { FlashAttn::On } else { FlashAttn::Off };
        o.cache_type_k = kv.parse::<CacheType>().unwrap();
        o.cache_type_v = kv.parse::<CacheType>().unwrap();
        let e = Engine::start(o).unwrap();
        drop(e);
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        let real = [
            reported(&text, "model buffer size"),
            reported(&text, "KV buffer size"),
            reported(&text, "compute buffer size"),
        ];
        let b = kv_bytes_per_elem(kv).unwrap();
        let plan = ContextPlan {
            k_bytes_per_elem: b,
            v_bytes_per_elem: b,
            flash_attn: fa,
            ..ContextPlan::f16(ctx as u64, 512)
        };
        let est = estimate(std::slice::from_ref(&gguf), &plan);
        let mib = |n: u64| n as f64 / (1 << 20) as f64;
        let ours = [mib(est.weights), mib(est.kv_cache), mib(est.compute)];
        rows.push(format!(
            "ctx {ctx:>5} fa {:<3} kv {kv:<4} | model {:7.1} / {:7.1} | KV {:7.1} / {:7.1} | compute {:7.1} / {:7.1} MiB (estimate / llama.cpp)",
            if fa { "on" } else { "off" }, ours[0], real[0], ours[1], real[1], ours[2], real[2]
        ));
        for (i, name) in ["model", "KV", "compute"].iter().enumerate() {
            assert!(
                real[i] > 0.0,
                "llama.cpp reported no {name} buffer:\n{text}"
            );
            let diff = (ours[i] - real[i]).abs();
            assert!(
                diff <= 64.0 || diff / real[i] <= 0.05,
                "{name}: estimate {} vs llama.cpp {} MiB\n{}",
                ours[i],
                real[i],
                rows.join("\n")
            );
        }
        let total_real: f64 = real.iter().sum();
        let total_ours = mib(est.total);
        assert!(
            (total_ours - total_real).abs() <= 64.0
                || (total_ours - total_real).abs() / total_real <= 0.05
        );
    }
    // Synthetic models made by our GGUF writer: a dense llama of 1.7 GiB, a qwen3moe of 1.4 GiB.
    let dir = tempfile::tempdir().unwrap();
    for (kind, moe, ctx, fa) in [
        ("dense", None, 4096u32, true),
        ("dense", None, 4096, false),
        ("dense", None, 16384, true),
        ("moe", Some((32u64, 4u64, 512u64)), 4096, true),
        ("moe", Some((32, 4, 512)), 4096, false),
        ("moe", Some((32, 4, 512)), 16384, true),
    ] {
        let model = synthetic(dir.path(), moe);
        let model_gguf = hearth_gguf::Gguf::open(&model).unwrap();
        log.0.lock().unwrap().clear();
        let mut o = EngineOptions::new(ModelOptions::new(&model));
        o.ctx_size = ctx;
        o.threads = Some(2);
        o.flash_attn = if fa { FlashAttn::On } else { FlashAttn::Off };
        drop(Engine::start(o).unwrap());
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        let real = [
            reported(&text, "model buffer size"),
            reported(&text, "KV buffer size"),
            reported(&text, "compute buffer size"),
        ];
        let est = estimate(
            std::slice::from_ref(&model_gguf),
            &ContextPlan {
                flash_attn: fa,
                ..ContextPlan::f16(ctx as u64, 512)
            },
        );
        let mib = |n: u64| n as f64 / (1 << 20) as f64;
        let ours = [mib(est.weights), mib(est.kv_cache), mib(est.compute)];
        rows.push(format!(
            "{kind:<5} ctx {ctx:>5} fa {:<3} kv f16  | model {:7.1} / {:7.1} | KV {:7.1} / {:7.1} | compute {:7.1} / {:7.1} MiB",
            if fa { "on" } else { "off" }, ours[0], real[0], ours[1], real[1], ours[2], real[2]
        ));
        for i in 0..3 {
            let diff = (ours[i] - real[i]).abs();
            assert!(
                real[i] > 0.0 && (diff <= 64.0 || diff / real[i] <= 0.05),
                "{}\n{text}",
                rows.join("\n")
            );
        }
    }
    println!("{}", rows.join("\n"));
}

/// A synthetic model made by our own GGUF writer: F16, zero weights in a sparse file, the
/// starter model's tokenizer. Dense llama (about 1.7 GiB), or with `moe` = (experts, used,
/// expert FFN width) a qwen3moe.
fn synthetic(dir: &std::path::Path, moe: Option<(u64, u64, u64)>) -> std::path::PathBuf {
    use hearth_gguf::{GgufWriter, TensorData, Value};
    let src = hearth_gguf::Gguf::open(&common::model_path()).unwrap();
    let (n_embd, n_layer, n_ff, n_head, n_head_kv) = match moe {
        None => (2048u64, 16u64, 5632u64, 32u64, 8u64),
        Some(_) => (1024, 12, 0, 16, 4),
    };
    let arch = if moe.is_some() { "qwen3moe" } else { "llama" };
    let n_vocab = src
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .unwrap()
        .len() as u64;
    let mut w = GgufWriter::new();
    for (k, v) in &src.metadata {
        if k.starts_with("tokenizer.") {
            w.set(k.clone(), v.clone());
        }
    }
    w.set("general.architecture", arch);
    w.set("general.name", format!("synthetic {arch}"));
    w.set(format!("{arch}.block_count"), n_layer as u32);
    w.set(format!("{arch}.context_length"), 32768u32);
    w.set(format!("{arch}.embedding_length"), n_embd as u32);
    w.set(format!("{arch}.feed_forward_length"), n_ff.max(1) as u32);
    w.set(format!("{arch}.attention.head_count"), n_head as u32);
    w.set(format!("{arch}.attention.head_count_kv"), n_head_kv as u32);
    w.set(
        format!("{arch}.rope.dimension_count"),
        (n_embd / n_head) as u32,
    );
    w.set(format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5f32);
    w.set(format!("{arch}.vocab_size"), n_vocab as u32);
    if let Some((n_expert, n_used, n_ff_exp)) = moe {
        w.set(format!("{arch}.expert_count"), n_expert as u32);
        w.set(format!("{arch}.expert_used_count"), n_used as u32);
        w.set(
            format!("{arch}.expert_feed_forward_length"),
            n_ff_exp as u32,
        );
    }
    let f16 = 1u32;
    let f32t = 0u32;
    let mut t = |name: &str, dims: Vec<u64>, ty: u32| {
        let n: u64 = dims.iter().product::<u64>() * if ty == f32t { 4 } else { 2 };
        w.tensor(name.to_string(), dims, ty, TensorData::Zeros(n));
    };
    let kv_dim = n_embd / n_head * n_head_kv;
    t("token_embd.weight", vec![n_embd, n_vocab], f16);
    t("output_norm.weight", vec![n_embd], f32t);
    t("output.weight", vec![n_embd, n_vocab], f16);
    for i in 0..n_layer {
        t(&format!("blk.{i}.attn_norm.weight"), vec![n_embd], f32t);
        t(&format!("blk.{i}.attn_q.weight"), vec![n_embd, n_embd], f16);
        t(&format!("blk.{i}.attn_k.weight"), vec![n_embd, kv_dim], f16);
        t(&format!("blk.{i}.attn_v.weight"), vec![n_embd, kv_dim], f16);
        t(
            &format!("blk.{i}.attn_output.weight"),
            vec![n_embd, n_embd],
            f16,
        );
        t(&format!("blk.{i}.ffn_norm.weight"), vec![n_embd], f32t);
        match moe {
            None => {
                t(&format!("blk.{i}.ffn_gate.weight"), vec![n_embd, n_ff], f16);
                t(&format!("blk.{i}.ffn_up.weight"), vec![n_embd, n_ff], f16);
                t(&format!("blk.{i}.ffn_down.weight"), vec![n_ff, n_embd], f16);
            }
            Some((n_expert, _, n_ff_exp)) => {
                let head = n_embd / n_head;
                t(&format!("blk.{i}.attn_q_norm.weight"), vec![head], f32t);
                t(&format!("blk.{i}.attn_k_norm.weight"), vec![head], f32t);
                t(
                    &format!("blk.{i}.ffn_gate_inp.weight"),
                    vec![n_embd, n_expert],
                    f32t,
                );
                t(
                    &format!("blk.{i}.ffn_gate_exps.weight"),
                    vec![n_embd, n_ff_exp, n_expert],
                    f16,
                );
                t(
                    &format!("blk.{i}.ffn_down_exps.weight"),
                    vec![n_ff_exp, n_embd, n_expert],
                    f16,
                );
                t(
                    &format!("blk.{i}.ffn_up_exps.weight"),
                    vec![n_embd, n_ff_exp, n_expert],
                    f16,
                );
            }
        }
    }
    let path = dir.join(format!("{arch}.gguf"));
    w.write_to_path(&path).unwrap();
    path
}
