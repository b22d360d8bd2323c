//! Model options in Ollama's vocabulary (the Modelfile's `PARAMETER`s): what a model's stored
//! `params` layer holds and what Ollama's `options` field sends. Both APIs start from a model's
//! stored options, so a client that leaves a field out gets the model's value, then the API's
//! default.

use hearth_protocol::{LoadSettings, SamplingParams, Spec};
use serde_json::Value;

use crate::{Model, RuntimeError};

/// Sampling and limits a request runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    /// Context per sequence (`num_ctx`).
    pub num_ctx: Option<u32>,
}

impl Options {
    pub fn new(sampling: SamplingParams) -> Options {
        Options { sampling, max_tokens: None, stop: Vec::new(), num_ctx: None }
    }

    /// Applies `v` (an object of options; null is none). Stored params add stop strings;
    /// a request's replace them. Unknown options are ignored, as Ollama does; options that set
    /// how a model loads for everyone are server flags and ignored here.
    pub fn apply(&mut self, v: &Value, from_model: bool) -> Result<(), RuntimeError> {
        let invalid = |field: &str, why: String| RuntimeError::Invalid { field: format!("options.{field}"), why };
        let Some(map) = v.as_object() else {
            return if v.is_null() { Ok(()) } else { Err(RuntimeError::Invalid { field: "options".into(), why: "expected an object".into() }) };
        };
        let num = |k: &str, x: &Value| -> Result<f64, RuntimeError> {
            x.as_f64().filter(|n| n.is_finite()).ok_or_else(|| invalid(k, format!("expected a number, got {x}")))
        };
        let float = |k: &str, x: &Value| -> Result<f32, RuntimeError> {
            let n = num(k, x)?;
            Some(n as f32).filter(|f| f.is_finite()).ok_or_else(|| invalid(k, format!("{n} is out of range")))
        };
        for (k, x) in map {
            if x.is_null() {
                continue;
            }
            match k.as_str() {
                "temperature" => self.sampling.temperature = float(k, x)?,
                "top_k" => self.sampling.top_k = num(k, x)?.clamp(i32::MIN as f64, i32::MAX as f64) as i32,
                "top_p" => self.sampling.top_p = float(k, x)?,
                "min_p" => self.sampling.min_p = float(k, x)?,
                "typical_p" => self.sampling.typical_p = float(k, x)?,
                "repeat_penalty" => self.sampling.repeat_penalty = float(k, x)?,
                "repeat_last_n" => self.sampling.repeat_last_n = num(k, x)?.clamp(-1.0, i32::MAX as f64) as i32,
                "presence_penalty" => self.sampling.presence_penalty = float(k, x)?,
                "frequency_penalty" => self.sampling.frequency_penalty = float(k, x)?,
                "seed" => {
                    let s = num(k, x)?;
                    self.sampling.seed = (s >= 0.0).then_some(s as u32);
                }
                "num_predict" => {
                    let n = num(k, x)?;
                    self.max_tokens = (n >= 0.0).then_some(n as u32);
                }
                "num_ctx" => {
                    let n = num(k, x)?;
                    if n < 1.0 {
                        return Err(invalid(k, format!("{n} is not a positive number")));
                    }
                    self.num_ctx = Some(n.min(u32::MAX as f64) as u32);
                }
                "stop" => {
                    let stops: Vec<String> = match x {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
                        _ => return Err(invalid(k, "expected a string or a list of strings".into())),
                    };
                    if from_model {
                        self.stop.extend(stops);
                    } else {
                        self.stop = stops;
                    }
                }
                "num_batch" | "num_gpu" | "num_thread" | "use_mmap" | "main_gpu" | "num_keep" | "use_mlock" | "low_vram" | "numa" | "spec"
                | "draft_max" | "draft_min" | "draft_model" | "draft_p_min" | "cpu_moe" | "n_cpu_moe" | "kv_unified" => {
                    tracing::debug!("option {k} is set per server (hearth serve flags); ignored for this request")
                }
                other => tracing::debug!("unknown option {other} ignored"),
            }
        }
        Ok(())
    }
}

/// Applies the load-time parameters of a model's stored `params` over the server's flags:
/// speculative decoding's `spec` (`none`, `ngram`, `draft`, `mtp`), `draft_max`, `draft_min`,
/// `draft_model` (a store name: `draft_file` is its file, found by [`Model::resolve`]) and
/// `draft_p_min`; Ollama's
/// `num_gpu` (layers offloaded, `-ngl`) and `main_gpu`; `cpu_moe` and `n_cpu_moe`; `kv_unified`.
pub fn apply_load_params(params: &Value, draft_file: Option<&std::path::Path>, load: &mut LoadSettings) -> Result<(), RuntimeError> {
    let invalid = |field: &str, why: String| RuntimeError::Invalid { field: format!("params.{field}"), why };
    let count = |k: &str, x: &Value| -> Result<u32, RuntimeError> {
        x.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| invalid(k, format!("expected a count, got {x}")))
    };
    if let Some(x) = params.get("spec").filter(|x| !x.is_null()) {
        load.spec = x.as_str().ok_or_else(|| invalid("spec", format!("expected \"none\", \"ngram\", \"draft\" or \"mtp\", got {x}")))?.parse::<Spec>().map_err(|e| invalid("spec", e))?;
    }
    if let Some(x) = params.get("draft_max").filter(|x| !x.is_null()) {
        load.draft_max = count("draft_max", x)?;
    }
    if let Some(x) = params.get("draft_min").filter(|x| !x.is_null()) {
        load.draft_min = count("draft_min", x)?;
    }
    if let Some(x) = params.get("draft_model").filter(|x| !x.is_null()) {
        let d = x.as_str().ok_or_else(|| invalid("draft_model", format!("expected the name of a model in the store, got {x}")))?;
        let Some(file) = draft_file else {
            let what = if std::path::Path::new(d).is_absolute() { "a path, not a model in the store" } else { "not a model in the store" };
            return Err(invalid(
                "draft_model",
                format!("{d} is {what}; stored parameters name a draft model by its store name (pull it, or `hearth add FILE.gguf`)"),
            ));
        };
        load.model_draft = Some(file.to_string_lossy().into_owned());
        // The model's own choice of draft source, unless it also stores `spec`.
        if params.get("spec").is_none_or(Value::is_null) {
            load.spec = Spec::Draft;
        }
    }
    if let Some(x) = params.get("draft_p_min").filter(|x| !x.is_null()) {
        load.draft_p_min = x
            .as_f64()
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or_else(|| invalid("draft_p_min", format!("expected a probability from 0 to 1, got {x}")))? as f32;
    }
    if let Some(x) = params.get("kv_unified").filter(|x| !x.is_null()) {
        load.kv_unified = x.as_bool().ok_or_else(|| invalid("kv_unified", format!("expected true or false, got {x}")))?;
    }
    if let Some(x) = params.get("num_gpu").filter(|x| !x.is_null()) {
        // Ollama's -1: as many as fit (the planner's choice).
        load.gpu_layers = match x.as_i64() {
            Some(-1) => None,
            Some(n) if n >= 0 => Some(i32::try_from(n).unwrap_or(i32::MAX)),
            _ => return Err(invalid("num_gpu", format!("expected a layer count or -1, got {x}"))),
        };
    }
    if let Some(x) = params.get("main_gpu").filter(|x| !x.is_null()) {
        load.main_gpu = count("main_gpu", x)? as i32;
    }
    if let Some(x) = params.get("cpu_moe").filter(|x| !x.is_null()) {
        load.cpu_moe = x.as_bool().ok_or_else(|| invalid("cpu_moe", format!("expected true or false, got {x}")))?;
    }
    if let Some(x) = params.get("n_cpu_moe").filter(|x| !x.is_null()) {
        load.n_cpu_moe = count("n_cpu_moe", x)?;
    }
    Ok(())
}

impl Model {
    /// `base` (the API's defaults) with the model's stored params applied.
    pub fn options(&self, base: SamplingParams) -> Result<Options, RuntimeError> {
        let mut o = Options::new(base);
        if let Some(p) = &self.params {
            o.apply(p, true).map_err(|e| match e {
                RuntimeError::Invalid { field, why } => RuntimeError::Invalid { field: format!("{} (stored with the model {})", field, self.name), why },
                other => other,
            })?;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    #[test]
    fn a_stored_draft_model_is_a_store_name_never_a_path() {
        // Found in the store (Model::resolve gave its file): the file, and drafts from it.
        let mut load = LoadSettings::default();
        let file = Path::new("/store/blobs/sha256-abc");
        apply_load_params(&json!({"draft_model": "smollm2", "draft_p_min": 0.5}), Some(file), &mut load).unwrap();
        assert_eq!((load.model_draft.as_deref(), load.spec, load.draft_p_min), (Some("/store/blobs/sha256-abc"), Spec::Draft, 0.5));
        // A stored `spec` wins over the draft model's implied one.
        let mut load = LoadSettings::default();
        apply_load_params(&json!({"draft_model": "smollm2", "spec": "ngram"}), Some(file), &mut load).unwrap();
        assert_eq!(load.spec, Spec::Ngram);
        // A path (from an API client or a registry's params layer) is refused, even one that
        // exists, and so is a name the store does not know.
        for (d, what) in [("/etc/passwd", "a path, not a model in the store"), ("no-such-model", "not a model in the store")] {
            let mut load = LoadSettings::default();
            let e = apply_load_params(&json!({"draft_model": d}), None, &mut load).unwrap_err();
            let RuntimeError::Invalid { field, why } = e else { panic!("{e:?}") };
            assert_eq!(field, "params.draft_model");
            assert!(why.contains(d) && why.contains(what) && why.contains("hearth add"), "{why}");
            assert_eq!(load.model_draft, None);
        }
        let e = apply_load_params(&json!({"draft_model": 7}), None, &mut LoadSettings::default()).unwrap_err();
        assert!(e.to_string().contains("expected the name of a model in the store"), "{e}");
    }

    #[test]
    fn a_stored_kv_unified_is_true_or_false() {
        let mut load = LoadSettings::default();
        apply_load_params(&json!({"kv_unified": true}), None, &mut load).unwrap();
        assert!(load.kv_unified);
        let e = apply_load_params(&json!({"kv_unified": "yes"}), None, &mut load).unwrap_err();
        assert!(e.to_string().contains("params.kv_unified") && e.to_string().contains("expected true or false"), "{e}");
    }
}
