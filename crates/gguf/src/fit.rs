//! Memory a model needs, from its header alone: weights, KV cache, compute buffer. The one
//! estimate used by `hearth fit` and by the server's scheduler.

use serde::Serialize;

use crate::Gguf;

/// What a context needs besides the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextPlan {
    /// Tokens of KV cache in all (context per sequence × sequences).
    pub n_ctx: u64,
    /// Physical batch: the compute buffer grows with it.
    pub n_ubatch: u64,
    /// Bytes per KV element for K and V (f16: 2, q8_0: 34/32, q4_0: 18/32).
    pub k_bytes_per_elem: f64,
    pub v_bytes_per_elem: f64,
    /// Sequences sharing `n_ctx` (each attends over its own n_ctx / parallel cells).
    pub parallel: u64,
    /// Without flash attention the attention scores of a whole batch are materialised.
    pub flash_attn: bool,
}

impl ContextPlan {
    pub fn f16(n_ctx: u64, n_ubatch: u64) -> ContextPlan {
        ContextPlan { n_ctx, n_ubatch, k_bytes_per_elem: 2.0, v_bytes_per_elem: 2.0, parallel: 1, flash_attn: true }
    }
}

/// Bytes per element of a KV cache type name (f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0,
/// iq4_nl).
pub fn kv_bytes_per_elem(name: &str) -> Option<f64> {
    Some(match name.to_ascii_lowercase().as_str() {
        "f32" => 4.0,
        "f16" | "bf16" => 2.0,
        "q8_0" => 34.0 / 32.0,
        "q5_1" => 24.0 / 32.0,
        "q5_0" => 22.0 / 32.0,
        "q4_1" => 20.0 / 32.0,
        "q4_0" | "iq4_nl" => 18.0 / 32.0,
        _ => return None,
    })
}

/// The estimate, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub total: u64,
}

/// Shape facts the estimate needs, read from the header.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    n_layer: u64,
    n_embd: u64,
    n_head: u64,
    n_head_kv: u64,
    head_k: u64,
    head_v: u64,
    n_vocab: u64,
}

fn shape(g: &Gguf) -> Shape {
    let n_embd = g.arch_u64("embedding_length").unwrap_or(0);
    let n_head = g.arch_u64("attention.head_count").unwrap_or(1).max(1);
    Shape {
        n_layer: g.arch_u64("block_count").unwrap_or(0),
        n_embd,
        n_head,
        n_head_kv: g.arch_u64("attention.head_count_kv").unwrap_or(n_head),
        head_k: g.arch_u64("attention.key_length").unwrap_or(n_embd / n_head),
        head_v: g.arch_u64("attention.value_length").unwrap_or(n_embd / n_head),
        n_vocab: g.get("tokenizer.ggml.tokens").and_then(|v| v.array_len()).unwrap_or(32_000),
    }
}

/// The memory a model needs with `plan`. `shards` are the headers of all the model's files (the
/// first carries the metadata; every shard's tensors count as weights).
pub fn estimate(shards: &[Gguf], plan: &ContextPlan) -> Estimate {
    let Some(first) = shards.first() else {
        return Estimate { weights: 0, kv_cache: 0, compute: 0, total: 0 };
    };
    let weights: u64 = shards.iter().flat_map(|g| g.tensors.iter()).filter_map(|t| t.n_bytes()).sum();
    let s = shape(first);
    let kv_elems_per_token = s.n_layer * s.n_head_kv;
    let kv = (plan.n_ctx * kv_elems_per_token) as f64 * (s.head_k as f64 * plan.k_bytes_per_elem + s.head_v as f64 * plan.v_bytes_per_elem);
    // The compute buffer is the peak of llama.cpp's graph allocator: the output logits of a
    // batch, or (without flash attention) the attention scores of a batch against one
    // sequence's cells, whichever is larger; plus the f16 mask and a little more. Checked
    // against llama.cpp's own figures in crates/engine/tests/fit_accuracy.rs.
    let c = compute_parts(first, plan);
    let compute = c.with_output();
    let kv = kv as u64;
    Estimate { weights, kv_cache: kv, compute, total: weights + kv + compute }
}

/// The parts of the compute buffer, so a split can give each device its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ComputeParts {
    /// Output logits of a batch (and the last hidden states): on the device with the output.
    pub logits: u64,
    /// Attention scores of a batch (0 with flash attention) plus the f16 mask: on every device
    /// that holds layers.
    pub scores: u64,
    pub mask: u64,
    /// Inputs of a batch (embeddings): on the host.
    pub input: u64,
}

impl ComputeParts {
    /// The device holding the output layer (the whole estimate on one device).
    pub fn with_output(&self) -> u64 {
        self.logits.max(self.scores) + self.mask + (2 << 20)
    }
    /// A device holding repeating layers only.
    pub fn layers_only(&self) -> u64 {
        self.scores + self.mask + (2 << 20)
    }
}

pub(crate) fn compute_parts(first: &Gguf, plan: &ContextPlan) -> ComputeParts {
    let s = shape(first);
    let n_kv = (plan.n_ctx / plan.parallel.max(1)).div_ceil(256) * 256;
    ComputeParts {
        logits: plan.n_ubatch * (s.n_vocab + 4 * s.n_embd) * 4,
        scores: if plan.flash_attn { 0 } else { n_kv * plan.n_ubatch * s.n_head * 4 },
        mask: n_kv * plan.n_ubatch * 2,
        input: plan.n_ubatch * s.n_embd * 4 + (2 << 20),
    }
}

/// KV cache bytes of one repeating layer.
pub(crate) fn kv_per_layer(first: &Gguf, plan: &ContextPlan) -> u64 {
    let s = shape(first);
    (plan.n_ctx as f64 * s.n_head_kv as f64 * (s.head_k as f64 * plan.k_bytes_per_elem + s.head_v as f64 * plan.v_bytes_per_elem)) as u64
}

/// The largest context per sequence (a multiple of 256, at most the trained context) whose
/// estimate for `parallel` sequences fits in `available` bytes, if any does.
pub fn max_context(shards: &[Gguf], plan: &ContextPlan, parallel: u64, available: u64) -> Option<u64> {
    max_context_by(shards, plan, parallel, |p| estimate(shards, p).total <= available)
}

/// The largest context per sequence (a multiple of 256, at most the trained context) for which
/// `fits` holds, with `parallel` sequences.
pub fn max_context_by(shards: &[Gguf], plan: &ContextPlan, parallel: u64, fits: impl Fn(&ContextPlan) -> bool) -> Option<u64> {
    let parallel = parallel.max(1);
    let at = |per_seq: u64| fits(&ContextPlan { n_ctx: per_seq * parallel, parallel, ..*plan });
    if !at(256) {
        return None;
    }
    let limit = shards.first().and_then(|g| g.arch_u64("context_length")).unwrap_or(1 << 20).max(256);
    let (mut lo, mut hi) = (256u64, limit);
    if at(hi) {
        return Some(hi);
    }
    while hi - lo > 256 {
        let mid = (lo + hi) / 2 / 256 * 256;
        if mid <= lo {
            break;
        }
        if at(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{GgufWriter, TensorData};

    /// A llama header: `n_layer` layers, n_embd 64, 4 heads, 2 KV heads, 4096 context.
    pub(crate) fn llama_header(n_layer: u32) -> GgufWriter {
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama");
        w.set("llama.block_count", n_layer);
        w.set("llama.embedding_length", 64u32);
        w.set("llama.attention.head_count", 4u32);
        w.set("llama.attention.head_count_kv", 2u32);
        w.set("llama.context_length", 4096u32);
        w
    }

    fn model() -> Gguf {
        let mut w = llama_header(2);
        w.tensor("w", vec![64u64, 64], 0, TensorData::Zeros(64 * 64 * 4));
        let bytes = w.to_bytes().unwrap();
        Gguf::read(&bytes[..], Some(bytes.len() as u64)).unwrap()
    }

    #[test]
    fn kv_and_weights_add_up() {
        let g = model();
        let e = estimate(std::slice::from_ref(&g), &ContextPlan::f16(1024, 512));
        assert_eq!(e.weights, 64 * 64 * 4);
        // 2 layers × 2 kv heads × (16 + 16) dims × 2 bytes × 1024 tokens
        assert_eq!(e.kv_cache, 2 * 2 * 32 * 2 * 1024);
        assert_eq!(e.compute, 512 * (32_000 + 256) * 4 + 1024 * 512 * 2 + (2 << 20));
        assert_eq!(e.total, e.weights + e.kv_cache + e.compute);
        let q8 = estimate(std::slice::from_ref(&g), &ContextPlan { k_bytes_per_elem: 34.0 / 32.0, v_bytes_per_elem: 34.0 / 32.0, ..ContextPlan::f16(1024, 512) });
        assert!(q8.kv_cache < e.kv_cache);
    }

    #[test]
    fn the_largest_context_that_fits() {
        let g = model();
        let gs = std::slice::from_ref(&g);
        let plan = ContextPlan::f16(0, 512);
        let need = |n_ctx| estimate(gs, &ContextPlan { n_ctx, ..plan }).total;
        assert_eq!(max_context(gs, &plan, 1, need(768)), Some(768));
        assert_eq!(max_context(gs, &plan, 1, need(1000)), Some(768), "multiples of 256");
        assert_eq!(max_context(gs, &plan, 1, u64::MAX), Some(4096), "capped at the trained context");
        assert_eq!(max_context(gs, &plan, 1, 10), None);
        let four = ContextPlan { parallel: 4, ..plan };
        let need4 = estimate(gs, &ContextPlan { n_ctx: 4 * 512, ..four }).total;
        assert_eq!(max_context(gs, &four, 4, need4), Some(512), "per sequence, for 4 sequences");
        assert_eq!(kv_bytes_per_elem("Q8_0"), Some(34.0 / 32.0));
        assert_eq!(kv_bytes_per_elem("q9"), None);
    }
}
