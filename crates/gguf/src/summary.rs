//! A model's headline facts from its header: what `hearth list`, `hearth show`, Ollama's
//! `/api/tags` and `/api/show` report.

use serde::Serialize;

use crate::Gguf;

/// Architecture, size, quantization and shape of a model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub architecture: String,
    pub parameters: u64,
    /// Like Ollama's: "134.52M", "7.62B".
    pub parameter_size: String,
    /// Like Ollama's: "Q4_K_M".
    pub quantization: String,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub block_count: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
}

impl Gguf {
    pub fn summary(&self) -> Summary {
        let parameters: u64 = self.tensors.iter().map(|t| t.n_elements()).fold(0u64, u64::saturating_add);
        let quantization = self
            .get_u64("general.file_type")
            .map(file_type_name)
            .filter(|n| *n != "unknown")
            .map(str::to_string)
            .unwrap_or_else(|| self.dominant_type());
        Summary {
            architecture: self.architecture().unwrap_or("unknown").to_string(),
            parameters,
            parameter_size: human_count(parameters),
            quantization,
            context_length: self.arch_u64("context_length"),
            embedding_length: self.arch_u64("embedding_length"),
            block_count: self.arch_u64("block_count"),
            head_count: self.arch_u64("attention.head_count"),
            head_count_kv: self.arch_u64("attention.head_count_kv"),
        }
    }

    fn dominant_type(&self) -> String {
        let mut counts = std::collections::HashMap::new();
        for t in &self.tensors {
            *counts.entry(t.ggml_type).or_insert(0u64) += t.n_elements();
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map_or("unknown".into(), |(t, _)| crate::type_name(t).to_string())
    }
}

/// llama.cpp's name for `general.file_type`.
pub fn file_type_name(t: u64) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => "unknown",
    }
}

/// 134515008 → "134.52M".
pub fn human_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.2}K", n / 1e3)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_counts() {
        assert_eq!(file_type_name(15), "Q4_K_M");
        assert_eq!(file_type_name(999), "unknown");
        assert_eq!(human_count(134_515_008), "134.52M");
        assert_eq!(human_count(7_615_616_512), "7.62B");
        assert_eq!(human_count(12), "12");
    }
}
