//! Synthetic models for tests and benchmarks, written by hearth's own GGUF writer.

use std::path::Path;

/// Random F16 weights, values in (-1, 1) (no NaN or infinity), from a fixed seed.
pub fn random_f16(n: usize, seed: &mut u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 2);
    for _ in 0..n.div_ceil(4) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        for k in 0..4 {
            let bits = ((*seed >> (16 * k)) as u16) & 0xBBFF;
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
    out.truncate(n * 2);
    out
}

/// A llama-shaped model of about 1.2 GB with random weights, every matrix above ggml RPC's
/// 10 MiB hash threshold, the starter model's tokenizer, tied embeddings.
pub fn preload_model(tokenizer_from: &Path, path: &Path) -> Result<(), String> {
    use hearth_gguf::{GgufWriter, TensorData, Value as GValue};
    let src = hearth_gguf::Gguf::open(tokenizer_from).map_err(|e| e.to_string())?;
    let (n_embd, n_ff, n_layer, n_head) = (2560u64, 6912u64, 6u64, 20u64);
    let n_vocab = src.get("tokenizer.ggml.tokens").and_then(GValue::as_array).ok_or("the source model has no tokenizer")?.len() as u64;
    let mut w = GgufWriter::new();
    for (k, v) in &src.metadata {
        if k.starts_with("tokenizer.") {
            w.set(k.clone(), v.clone());
        }
    }
    w.set("general.architecture", "llama");
    w.set("general.name", "synthetic preload test");
    w.set("llama.block_count", n_layer as u32);
    w.set("llama.context_length", 4096u32);
    w.set("llama.embedding_length", n_embd as u32);
    w.set("llama.feed_forward_length", n_ff as u32);
    w.set("llama.attention.head_count", n_head as u32);
    w.set("llama.attention.head_count_kv", n_head as u32);
    w.set("llama.rope.dimension_count", (n_embd / n_head) as u32);
    w.set("llama.attention.layer_norm_rms_epsilon", 1e-5f32);
    w.set("llama.vocab_size", n_vocab as u32);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut t = |w: &mut GgufWriter, name: String, dims: Vec<u64>| {
        let n = dims.iter().product::<u64>() as usize;
        if dims.len() == 1 {
            let ones: Vec<u8> = std::iter::repeat_n(1f32.to_le_bytes(), n).flatten().collect();
            w.tensor(name, dims, 0, TensorData::Bytes(ones));
        } else {
            w.tensor(name, dims, 1, TensorData::Bytes(random_f16(n, &mut seed)));
        }
    };
    t(&mut w, "token_embd.weight".into(), vec![n_embd, n_vocab]);
    t(&mut w, "output_norm.weight".into(), vec![n_embd]);
    for i in 0..n_layer {
        t(&mut w, format!("blk.{i}.attn_norm.weight"), vec![n_embd]);
        for m in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            t(&mut w, format!("blk.{i}.{m}.weight"), vec![n_embd, n_embd]);
        }
        t(&mut w, format!("blk.{i}.ffn_norm.weight"), vec![n_embd]);
        t(&mut w, format!("blk.{i}.ffn_gate.weight"), vec![n_embd, n_ff]);
        t(&mut w, format!("blk.{i}.ffn_up.weight"), vec![n_embd, n_ff]);
        t(&mut w, format!("blk.{i}.ffn_down.weight"), vec![n_ff, n_embd]);
    }
    w.write_to_path(path).map_err(|e| e.to_string())?;
    Ok(())
}


/// A Mixture-of-Experts model made from a dense llama-architecture model (the starter model):
/// each layer's feed-forward becomes `n_expert` identical experts (`ffn_{gate,up,down}_exps`,
/// the dense weights repeated) behind an all-zero router (`ffn_gate_inp`), all of them used.
/// The router gives every expert the same weight and llama.cpp normalises the weights of the
/// experts used, so the model computes what the dense one does: its greedy answers are the
/// dense model's, while its tensors have the shapes and names of a real MoE model (what
/// `--cpu-moe`, `--n-cpu-moe` and `--override-tensor` act on).
pub fn moe_from_dense(dense: &Path, out: &Path, n_expert: u32) -> Result<(), String> {
    use hearth_gguf::{GgufWriter, TensorData};
    let src = GgufWriter::from_file(dense).map_err(|e| e.to_string())?;
    if src.get("general.architecture").and_then(|v| v.as_str()) != Some("llama") {
        return Err("moe_from_dense needs a llama-architecture model".into());
    }
    let n_embd = match src.get("llama.embedding_length").and_then(|v| v.as_u64()) {
        Some(n) => n,
        None => return Err("the model has no llama.embedding_length".into()),
    };
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        w.set(k.clone(), v.clone());
    }
    w.set("general.name", "synthetic MoE from a dense model");
    w.set("llama.expert_count", n_expert);
    w.set("llama.expert_used_count", n_expert);
    for t in src.tensors() {
        let Some((layer, kind)) = t.name.strip_prefix("blk.").and_then(|r| r.split_once('.')) else {
            w.push_tensor(t.clone());
            continue;
        };
        let (ffn, rest) = match kind.split_once('.') {
            Some((k @ ("ffn_gate" | "ffn_up" | "ffn_down"), rest)) => (k, rest),
            _ => {
                w.push_tensor(t.clone());
                continue;
            }
        };
        let TensorData::Bytes(bytes) = &t.data else { return Err(format!("{}: no data", t.name)) };
        let mut data = Vec::with_capacity(bytes.len() * n_expert as usize);
        for _ in 0..n_expert {
            data.extend_from_slice(bytes);
        }
        let mut dims = t.dims.clone();
        dims.push(n_expert as u64);
        w.tensor(format!("blk.{layer}.{ffn}_exps.{rest}"), dims, t.ggml_type, TensorData::Bytes(data));
        if ffn == "ffn_gate" {
            // The router: F32 [n_embd, n_expert], all zero.
            w.tensor(format!("blk.{layer}.ffn_gate_inp.weight"), vec![n_embd, n_expert as u64], 0, TensorData::Zeros(n_embd * n_expert as u64 * 4));
        }
    }
    w.write_to_path(out).map_err(|e| e.to_string())?;
    Ok(())
}
