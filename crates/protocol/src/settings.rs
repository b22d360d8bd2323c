//! How a model is loaded and run: one [`LoadSettings`] from the flags to the engine.

use serde::{Deserialize, Serialize};

/// When flash attention is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashAttn {
    On,
    Off,
    /// llama.cpp decides per device (its default).
    #[default]
    Auto,
}

impl FlashAttn {
    /// Whether a memory plan should count on it (auto is on for the CPU, as llama.cpp does).
    pub fn planned_on(self) -> bool {
        self != FlashAttn::Off
    }
}

impl std::str::FromStr for FlashAttn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "on" | "1" | "true" => Ok(FlashAttn::On),
            "off" | "0" | "false" => Ok(FlashAttn::Off),
            "auto" => Ok(FlashAttn::Auto),
            _ => Err(format!("{s:?} is not on, off or auto")),
        }
    }
}

impl std::fmt::Display for FlashAttn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlashAttn::On => "on",
            FlashAttn::Off => "off",
            FlashAttn::Auto => "auto",
        })
    }
}

/// Where speculative decoding's drafts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spec {
    /// One token per pass.
    #[default]
    None,
    /// Prompt lookup: the tokens that followed the latest earlier occurrence of the last few
    /// tokens, in the prompt or the text so far. Free to make; good where the answer repeats
    /// its input (code edits, quotes, extraction, summaries).
    Ngram,
    /// A draft model (`--model-draft`): a smaller model with the same vocabulary guesses the
    /// next tokens; good wherever the small model agrees with the big one.
    Draft,
    /// The model's own multi-token-prediction (MTP, "NextN") layers, where it carries them
    /// (GLM-4.5 and later, DeepSeek V3, Qwen3.5, ...): trained with the model to guess the
    /// token after next from its last hidden state, at the cost of one layer per drafted token.
    Mtp,
}

impl std::str::FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" | "off" => Ok(Spec::None),
            "ngram" => Ok(Spec::Ngram),
            "draft" => Ok(Spec::Draft),
            "mtp" => Ok(Spec::Mtp),
            _ => Err(format!("{s:?} is not a draft source (none, ngram, draft, mtp)")),
        }
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Spec::None => "none",
            Spec::Ngram => "ngram",
            Spec::Draft => "draft",
            Spec::Mtp => "mtp",
        })
    }
}

/// How a model is split over several GPUs (llama.cpp's `--split-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMode {
    /// The whole model on one GPU (`--main-gpu`).
    None,
    /// Whole layers per device, KV cache with its layers (llama.cpp's default).
    #[default]
    Layer,
    /// Rows of each weight over the GPUs (tensor parallelism where the backend has it).
    Row,
}

impl std::str::FromStr for SplitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(SplitMode::None),
            "layer" => Ok(SplitMode::Layer),
            "row" => Ok(SplitMode::Row),
            _ => Err(format!("{s:?} is not a split mode (none, layer, row)")),
        }
    }
}

impl std::fmt::Display for SplitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitMode::None => "none",
            SplitMode::Layer => "layer",
            SplitMode::Row => "row",
        })
    }
}

/// The element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheType {
    F32,
    #[default]
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Iq4Nl,
    Q5_0,
    Q5_1,
}

impl CacheType {
    /// llama.cpp's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Bf16 => "bf16",
            CacheType::Q8_0 => "q8_0",
            CacheType::Q4_0 => "q4_0",
            CacheType::Q4_1 => "q4_1",
            CacheType::Iq4Nl => "iq4_nl",
            CacheType::Q5_0 => "q5_0",
            CacheType::Q5_1 => "q5_1",
        }
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => CacheType::F32,
            "f16" => CacheType::F16,
            "bf16" => CacheType::Bf16,
            "q8_0" => CacheType::Q8_0,
            "q4_0" => CacheType::Q4_0,
            "q4_1" => CacheType::Q4_1,
            "iq4_nl" => CacheType::Iq4Nl,
            "q5_0" => CacheType::Q5_0,
            "q5_1" => CacheType::Q5_1,
            _ => return Err(format!("{s:?} is not a KV cache type (f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1)")),
        })
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a model is loaded and run. Names, flags and defaults follow llama.cpp's. The same struct
/// is the flags of `hearth run`, `serve` and `fit`, the runner's spec and the engine's options:
/// nothing is copied field by field on the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct LoadSettings {
    /// Context size in tokens; per sequence for `serve` (unless a request sets num_ctx), the
    /// whole context for `run` (0 = the model's training context) [default: 4096]
    #[cfg_attr(feature = "clap", arg(short = 'c', long = "ctx-size", visible_alias = "ctx", env = "HEARTH_CONTEXT_LENGTH", value_name = "N"))]
    pub ctx_size: Option<u32>,
    /// Logical batch size: most tokens per decode step
    #[cfg_attr(feature = "clap", arg(short = 'b', long = "batch-size", default_value_t = 2048, value_name = "N"))]
    pub batch_size: u32,
    /// Physical batch size (-ub)
    #[cfg_attr(feature = "clap", arg(long = "ubatch-size", default_value_t = 512, value_name = "N"))]
    pub ubatch_size: u32,
    /// Threads for generation [default: physical cores]
    #[cfg_attr(feature = "clap", arg(short = 't', long, value_name = "N"))]
    pub threads: Option<usize>,
    /// Threads for prompt processing (-tb) [default: --threads]
    #[cfg_attr(feature = "clap", arg(long = "threads-batch", value_name = "N"))]
    pub threads_batch: Option<usize>,
    /// Layers to offload to GPUs or RPC devices (-ngl) [default: planned / llama.cpp decides]
    #[cfg_attr(feature = "clap", arg(long = "gpu-layers", visible_alias = "n-gpu-layers", value_name = "N", allow_negative_numbers = true))]
    pub gpu_layers: Option<i32>,
    /// Proportions of the offloaded layers per device, comma-separated (-ts) [default: planned by free memory]
    #[cfg_attr(feature = "clap", arg(long = "tensor-split", value_delimiter = ',', value_name = "F,F,..."))]
    pub tensor_split: Vec<f32>,
    /// Devices to offload to, comma-separated ggml names as `hearth devices` lists them
    /// (-dev; `none`: no offload) [default: every GPU]
    #[cfg_attr(feature = "clap", arg(long = "device", value_delimiter = ',', value_name = "DEV,DEV,..."))]
    pub device: Vec<String>,
    /// How to split over several GPUs (-sm): none (one GPU, --main-gpu), layer, row
    #[cfg_attr(feature = "clap", arg(long = "split-mode", default_value = "layer", value_name = "none|layer|row"))]
    pub split_mode: SplitMode,
    /// The GPU (index among the offload devices) for the whole model with --split-mode none (-mg)
    #[cfg_attr(feature = "clap", arg(long = "main-gpu", default_value_t = 0, value_name = "N"))]
    pub main_gpu: i32,
    /// Tensors whose name matches REGEX go to the buffer of DEVICE (e.g. CPU), comma-separated
    /// (-ot), as llama.cpp's --override-tensor
    #[cfg_attr(feature = "clap", arg(long = "override-tensor", value_delimiter = ',', value_name = "REGEX=DEVICE,..."))]
    pub override_tensor: Vec<String>,
    /// Keep every Mixture-of-Experts expert tensor in RAM (-cmoe): attention and the shared
    /// weights go to the GPU, the experts run on the CPU
    #[cfg_attr(feature = "clap", arg(long = "cpu-moe"))]
    pub cpu_moe: bool,
    /// Keep the expert tensors of the first N layers in RAM (-ncmoe)
    #[cfg_attr(feature = "clap", arg(long = "n-cpu-moe", default_value_t = 0, value_name = "N"))]
    pub n_cpu_moe: u32,
    /// Flash attention (-fa): on, off or auto
    #[cfg_attr(feature = "clap", arg(long = "flash-attn", default_value = "auto", value_name = "on|off|auto"))]
    pub flash_attn: FlashAttn,
    /// One KV cache shared by the parallel sequences (-kvu), each still held to --ctx-size
    /// tokens, instead of one per sequence. A step's tokens then go through the model in one
    /// pass however sequences come, go and draft (with a cache per sequence, llama.cpp splits a
    /// step whose sequences are not numbered without gaps, or hold different numbers of
    /// tokens, as drafts make them, into a pass per group); but attention reads every
    /// sequence's cells (on a CPU, slower with long prompts at many streams)
    #[cfg_attr(feature = "clap", arg(long = "kv-unified"))]
    pub kv_unified: bool,
    /// KV cache type for K (-ctk): f16, q8_0, q4_0, ...
    #[cfg_attr(feature = "clap", arg(long = "cache-type-k", default_value = "f16", value_name = "TYPE"))]
    pub cache_type_k: CacheType,
    /// KV cache type for V (-ctv)
    #[cfg_attr(feature = "clap", arg(long = "cache-type-v", default_value = "f16", value_name = "TYPE"))]
    pub cache_type_v: CacheType,
    /// Read the model into memory instead of memory-mapping it
    #[cfg_attr(feature = "clap", arg(long = "no-mmap"))]
    pub no_mmap: bool,
    /// Lock the model in RAM
    #[cfg_attr(feature = "clap", arg(long))]
    pub mlock: bool,
    /// Raw llama.cpp RPC servers to offload to, comma-separated host:port (no token, no tunnel)
    #[cfg_attr(feature = "clap", arg(long, value_delimiter = ',', value_name = "HOST:PORT"))]
    pub rpc: Vec<String>,
    /// Speculative decoding: none, ngram (drafts copied from the prompt and the text so far),
    /// draft (a draft model, --model-draft) or mtp (the model's own multi-token-prediction
    /// layers); drafts are verified in one pass, the output does not change [default: draft
    /// with --model-draft, else none]
    #[cfg_attr(feature = "clap", arg(long = "spec", default_value = "none", value_name = "none|ngram|draft|mtp"))]
    pub spec: Spec,
    /// A draft model for speculative decoding (-md): a store name or a GGUF path, with the
    /// model's vocabulary; loaded beside it, on this machine
    #[cfg_attr(feature = "clap", arg(long = "model-draft", value_name = "MODEL"))]
    pub model_draft: Option<String>,
    /// A draft stops before a token the draft model is less sure of (--draft-p-min)
    #[cfg_attr(feature = "clap", arg(long = "draft-p-min", default_value_t = 0.75, value_name = "P"))]
    pub draft_p_min: f32,
    /// Most tokens drafted per step (--draft-max)
    #[cfg_attr(feature = "clap", arg(long = "draft-max", visible_alias = "draft", default_value_t = 16, value_name = "N"))]
    pub draft_max: u32,
    /// Fewest drafted tokens worth a verification (--draft-min)
    #[cfg_attr(feature = "clap", arg(long = "draft-min", default_value_t = 0, value_name = "N"))]
    pub draft_min: u32,
}

/// llama.cpp's pattern of the Mixture-of-Experts expert tensors (`LLM_FFN_EXPS_REGEX`).
pub const EXPERTS_REGEX: &str = "\\.ffn_(up|down|gate|gate_up)_(ch|)exps";

impl LoadSettings {
    /// The context size when none is given.
    pub const DEFAULT_CTX: u32 = 4096;

    /// Every tensor override, as (regex, device name) pairs in llama.cpp's order of precedence
    /// (the first match wins): `--override-tensor` first, then `--cpu-moe` / `--n-cpu-moe`.
    pub fn tensor_overrides(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for o in &self.override_tensor {
            let (re, dev) = o.rsplit_once('=').ok_or_else(|| format!("--override-tensor {o:?}: expected REGEX=DEVICE, e.g. 'exps=CPU'"))?;
            if re.is_empty() || dev.is_empty() {
                return Err(format!("--override-tensor {o:?}: expected REGEX=DEVICE, e.g. 'exps=CPU'"));
            }
            out.push((re.to_string(), dev.to_string()));
        }
        if self.cpu_moe {
            out.push((EXPERTS_REGEX.to_string(), "CPU".into()));
        } else {
            for i in 0..self.n_cpu_moe {
                out.push((format!("blk\\.{i}{EXPERTS_REGEX}"), "CPU".into()));
            }
        }
        Ok(out)
    }

    /// The draft source: `--spec`, or a draft model when one is given and `--spec` is not.
    pub fn spec(&self) -> Spec {
        match (self.spec, &self.model_draft) {
            (Spec::None, Some(_)) => Spec::Draft,
            (s, _) => s,
        }
    }

    /// The context size asked for, or the default.
    pub fn ctx(&self) -> u32 {
        self.ctx_size.unwrap_or(Self::DEFAULT_CTX)
    }
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            ctx_size: None,
            batch_size: 2048,
            ubatch_size: 512,
            threads: None,
            threads_batch: None,
            gpu_layers: None,
            tensor_split: Vec::new(),
            device: Vec::new(),
            split_mode: SplitMode::Layer,
            main_gpu: 0,
            override_tensor: Vec::new(),
            cpu_moe: false,
            n_cpu_moe: 0,
            flash_attn: FlashAttn::Auto,
            kv_unified: false,
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
            no_mmap: false,
            mlock: false,
            rpc: Vec::new(),
            spec: Spec::None,
            model_draft: None,
            draft_p_min: 0.75,
            draft_max: 16,
            draft_min: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [CacheType::F32, CacheType::F16, CacheType::Bf16, CacheType::Q8_0, CacheType::Q4_0, CacheType::Q4_1, CacheType::Iq4Nl, CacheType::Q5_0, CacheType::Q5_1] {
            assert_eq!(c.name().parse::<CacheType>(), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(c.name()));
        }
        for f in [FlashAttn::On, FlashAttn::Off, FlashAttn::Auto] {
            assert_eq!(f.to_string().parse::<FlashAttn>(), Ok(f));
        }
        for k in [Spec::None, Spec::Ngram, Spec::Draft, Spec::Mtp] {
            assert_eq!(k.to_string().parse::<Spec>(), Ok(k));
        }
        for m in [SplitMode::None, SplitMode::Layer, SplitMode::Row] {
            assert_eq!(m.to_string().parse::<SplitMode>(), Ok(m));
        }
        assert!("medusa".parse::<Spec>().unwrap_err().contains("none, ngram"));
        assert!("q9".parse::<CacheType>().is_err());
    }

    #[test]
    fn settings_survive_json() {
        let s = LoadSettings { ctx_size: Some(512), gpu_layers: Some(-1), tensor_split: vec![1.0, 2.0], flash_attn: FlashAttn::Off, cache_type_k: CacheType::Q8_0, ..LoadSettings::default() };
        let back: LoadSettings = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let defaults: LoadSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, LoadSettings::default());
        assert_eq!(defaults.ctx(), 4096);
    }

    #[test]
    fn overrides_follow_llama() {
        let s = LoadSettings { override_tensor: vec!["attn=Vulkan0".into()], n_cpu_moe: 2, ..LoadSettings::default() };
        let o = s.tensor_overrides().unwrap();
        assert_eq!(o[0], ("attn".to_string(), "Vulkan0".to_string()));
        assert_eq!(o[1].0, "blk\\.0\\.ffn_(up|down|gate|gate_up)_(ch|)exps");
        assert_eq!(o.len(), 3);
        let all = LoadSettings { cpu_moe: true, n_cpu_moe: 5, ..LoadSettings::default() };
        assert_eq!(all.tensor_overrides().unwrap(), vec![(EXPERTS_REGEX.to_string(), "CPU".to_string())]);
        let bad = LoadSettings { override_tensor: vec!["noequals".into()], ..LoadSettings::default() };
        assert!(bad.tensor_overrides().unwrap_err().contains("REGEX=DEVICE"));
    }
}
