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

/// A model with a multi-token-prediction (MTP) head, made from a dense llama-architecture
/// model (the starter model): a `glm4moe` model (GLM-4.5's architecture, whose MTP head
/// llama.cpp runs) whose trunk is the dense model's layers, so its greedy answers are the
/// dense model's, plus one `nextn` block after them.
///
/// The trunk maps one to one: GLM-4.5's layer is llama's with the pre-FFN norm named
/// `post_attention_norm`; its rotary embedding pairs dimension i with i + d/2 (NEOX) where the
/// llama GGUF converter interleaved the pairs, so the rows of each head of `attn_q` and
/// `attn_k` are put back in the checkpoint's order (rows are whole quantized blocks, so no
/// requantization). All trunk layers are dense (`leading_dense_block_count`).
///
/// The MTP block was never trained: its `eh_proj` passes the target's hidden state through
/// (not the token's embedding), its `hnorm` undoes the output norm's weights that the block's
/// head norm applies again, and its attention and feed-forward add nothing (zero output
/// projections), so it predicts what the target predicted one position earlier: the latest
/// token, again. Its drafts are right where the text repeats a token, enough to test that MTP
/// drafting gives exactly the output without it, not to measure a speed-up.
pub fn mtp_from_dense(dense: &Path, out: &Path) -> Result<(), String> {
    use hearth_gguf::{GgufWriter, TensorData, Value as GValue};
    let src = GgufWriter::from_file(dense).map_err(|e| e.to_string())?;
    if src.get("general.architecture").and_then(|v| v.as_str()) != Some("llama") {
        return Err("mtp_from_dense needs a llama-architecture model".into());
    }
    let key = |k: &str| src.get(&format!("llama.{k}")).and_then(GValue::as_u64).ok_or(format!("the model has no llama.{k}"));
    let (n_embd, n_ff, n_layer, n_head) = (key("embedding_length")?, key("feed_forward_length")?, key("block_count")?, key("attention.head_count")?);
    let n_head_kv = key("attention.head_count_kv").unwrap_or(n_head);
    let head_dim = n_embd / n_head;
    let mut w = GgufWriter::new();
    for (k, v) in src.metadata() {
        match k.strip_prefix("llama.") {
            Some(rest) => w.set(format!("glm4moe.{rest}"), v.clone()),
            None => w.set(k.clone(), v.clone()),
        };
    }
    w.set("general.architecture", "glm4moe");
    w.set("general.name", "synthetic MTP model from a dense model");
    w.set("glm4moe.block_count", (n_layer + 1) as u32);
    w.set("glm4moe.nextn_predict_layers", 1u32);
    w.set("glm4moe.leading_dense_block_count", n_layer as u32);
    w.set("glm4moe.expert_count", 1u32);
    w.set("glm4moe.expert_used_count", 1u32);
    w.set("glm4moe.expert_shared_count", 1u32);
    w.set("glm4moe.expert_feed_forward_length", n_ff as u32);
    w.set("glm4moe.rope.dimension_count", head_dim as u32);
    // Rows of a head from the converter's interleaved order back to halves: row h*d/2 + i
    // of the checkpoint is row 2i + h of the llama GGUF.
    let unpermute = |t: &hearth_gguf::TensorSpec, heads: u64| -> Result<Vec<u8>, String> {
        let TensorData::Bytes(bytes) = &t.data else { return Err(format!("{}: no data", t.name)) };
        let rows = heads * head_dim;
        if t.dims.len() != 2 || t.dims[1] != rows || bytes.len() as u64 % rows != 0 {
            return Err(format!("{}: unexpected shape {:?}", t.name, t.dims));
        }
        let row = (bytes.len() as u64 / rows) as usize;
        let half = (head_dim / 2) as usize;
        let mut outb = vec![0u8; bytes.len()];
        for hd in 0..heads as usize {
            let base = hd * head_dim as usize;
            for h in 0..2 {
                for i in 0..half {
                    let (to, from) = (base + h * half + i, base + 2 * i + h);
                    outb[to * row..(to + 1) * row].copy_from_slice(&bytes[from * row..(from + 1) * row]);
                }
            }
        }
        Ok(outb)
    };
    let last = n_layer - 1;
    let mut mtp = Vec::new();
    for t in src.tensors() {
        let Some((layer, kind)) = t.name.strip_prefix("blk.").and_then(|r| r.split_once('.')) else {
            w.push_tensor(t.clone());
            continue;
        };
        let mut t = t.clone();
        match kind {
            "attn_q.weight" => t.data = TensorData::Bytes(unpermute(&t, n_head)?),
            "attn_k.weight" => t.data = TensorData::Bytes(unpermute(&t, n_head_kv)?),
            "ffn_norm.weight" => t.name = format!("blk.{layer}.post_attention_norm.weight"),
            _ => {}
        }
        if layer.parse::<u64>().ok() == Some(last) {
            mtp.push(t.clone());
        }
        w.push_tensor(t);
    }
    // The MTP block: the last layer's tensors, its output projections zero, the feed-forward
    // as one routed and one shared expert.
    let n = n_layer;
    for t in mtp {
        let kind = t.name.split_once('.').and_then(|(_, r)| r.split_once('.')).map(|(_, k)| k.to_string()).unwrap_or_default();
        let zero = |t: &hearth_gguf::TensorSpec| TensorData::Zeros(t.data.len());
        match kind.as_str() {
            "attn_output.weight" => {
                w.tensor(format!("blk.{n}.{kind}"), t.dims.clone(), t.ggml_type, zero(&t));
            }
            "ffn_gate.weight" | "ffn_up.weight" | "ffn_down.weight" => {
                let ffn = kind.trim_end_matches(".weight");
                let data = if ffn == "ffn_down" { zero(&t) } else { t.data.clone() };
                let mut dims = t.dims.clone();
                dims.push(1);
                w.tensor(format!("blk.{n}.{ffn}_exps.weight"), dims, t.ggml_type, data.clone());
                w.tensor(format!("blk.{n}.{ffn}_shexp.weight"), t.dims.clone(), t.ggml_type, data);
            }
            _ => {
                w.tensor(format!("blk.{n}.{kind}"), t.dims.clone(), t.ggml_type, t.data.clone());
            }
        }
    }
    let f32s = |v: Vec<f32>| TensorData::Bytes(v.into_iter().flat_map(f32::to_le_bytes).collect());
    w.tensor(format!("blk.{n}.ffn_gate_inp.weight"), vec![n_embd, 1], 0, TensorData::Zeros(n_embd * 4));
    w.tensor(format!("blk.{n}.exp_probs_b.bias"), vec![1], 0, TensorData::Zeros(4));
    w.tensor(format!("blk.{n}.nextn.enorm.weight"), vec![n_embd], 0, f32s(vec![1.0; n_embd as usize]));
    let out_norm = src.tensors().iter().find(|t| t.name == "output_norm.weight").ok_or("the model has no output_norm")?;
    let (TensorData::Bytes(b), 0) = (&out_norm.data, out_norm.ggml_type) else { return Err("output_norm.weight is not F32".into()) };
    let inverse = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).map(|w| if w.abs() > 1e-6 { 1.0 / w } else { 0.0 }).collect();
    w.tensor(format!("blk.{n}.nextn.hnorm.weight"), vec![n_embd], 0, f32s(inverse));
    // eh_proj: [2 n_embd] -> [n_embd] (rows: outputs), the hidden-state half (after the
    // embedding's) passed through.
    let mut eh = vec![0f32; (2 * n_embd * n_embd) as usize];
    for i in 0..n_embd as usize {
        eh[i * 2 * n_embd as usize + n_embd as usize + i] = 1.0;
    }
    w.tensor(format!("blk.{n}.nextn.eh_proj.weight"), vec![2 * n_embd, n_embd], 0, f32s(eh));
    w.write_to_path(out).map_err(|e| e.to_string())?;
    Ok(())
}
