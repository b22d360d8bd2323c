//! Ollama's request options (`options`, `keep_alive`, `format`) over the model's stored
//! defaults (its `params` layer), as the runtime's sampling settings and load options.

use hearth_runtime::protocol::SamplingParams;
use hearth_runtime::{KeepAlive, Model};
use serde_json::Value;

use crate::error::ApiError;

/// The sampling settings: Ollama's defaults, then the model's `params` layer, then the
/// request's `options`. Unknown options are ignored (as Ollama does).
pub struct Options {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub num_ctx: Option<u32>,
}

/// Ollama's defaults, the model's stored params, then the request's `options`.
pub fn options(model: &Model, request: Option<&Value>) -> Result<Options, ApiError> {
    let mut o = Options {
        sampling: SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.9, min_p: 0.0, ..SamplingParams::default() },
        max_tokens: None,
        stop: Vec::new(),
        num_ctx: None,
    };
    if let Some(p) = &model.params {
        apply(&mut o, p, true)?;
    }
    if let Some(v) = request {
        apply(&mut o, v, false)?;
    }
    Ok(o)
}

fn apply(o: &mut Options, v: &Value, from_model: bool) -> Result<(), ApiError> {
    let Some(map) = v.as_object() else {
        return if v.is_null() { Ok(()) } else { Err(ApiError::bad_request("invalid field `options`: expected an object")) };
    };
    let num = |k: &str, x: &Value| -> Result<f64, ApiError> {
        x.as_f64().ok_or_else(|| ApiError::bad_request(format!("invalid field `options.{k}`: expected a number, got {x}")))
    };
    for (k, x) in map {
        if x.is_null() {
            continue;
        }
        match k.as_str() {
            "temperature" => o.sampling.temperature = num(k, x)? as f32,
            "top_k" => o.sampling.top_k = num(k, x)? as i32,
            "top_p" => o.sampling.top_p = num(k, x)? as f32,
            "min_p" => o.sampling.min_p = num(k, x)? as f32,
            "typical_p" => o.sampling.typical_p = num(k, x)? as f32,
            "repeat_penalty" => o.sampling.repeat_penalty = num(k, x)? as f32,
            "repeat_last_n" => o.sampling.repeat_last_n = num(k, x)? as i32,
            "presence_penalty" => o.sampling.presence_penalty = num(k, x)? as f32,
            "frequency_penalty" => o.sampling.frequency_penalty = num(k, x)? as f32,
            "seed" => {
                let s = num(k, x)?;
                o.sampling.seed = (s >= 0.0).then_some(s as u32);
            }
            "num_predict" => {
                let n = num(k, x)?;
                o.max_tokens = (n >= 0.0).then_some(n as u32);
            }
            "num_ctx" => {
                let n = num(k, x)?;
                if n < 1.0 {
                    return Err(ApiError::bad_request(format!("invalid field `options.num_ctx`: {n} is not a positive number")));
                }
                o.num_ctx = Some(n as u32);
            }
            "stop" => {
                let stops: Vec<String> = match x {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect(),
                    _ => return Err(ApiError::bad_request("invalid field `options.stop`: expected a string or a list of strings")),
                };
                if from_model {
                    o.stop.extend(stops);
                } else {
                    o.stop = stops;
                }
            }
            // Load settings the server decides for all (documented in the README).
            "num_batch" | "num_gpu" | "num_thread" | "use_mmap" | "main_gpu" | "num_keep" | "use_mlock" | "low_vram" | "numa" => {
                tracing::debug!("option {k} is set per server (hearth serve flags); ignored for this request")
            }
            other => tracing::debug!("unknown option {other} ignored"),
        }
    }
    Ok(())
}

/// `keep_alive`: a number of seconds or a duration string.
pub fn keep_alive(v: &Option<Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => KeepAlive::parse(v).map(Some).map_err(|e| ApiError::bad_request(format!("invalid field `keep_alive`: {e}"))),
    }
}

/// `format`: `"json"` or a JSON schema constrains the output to JSON.
pub fn is_json_format(format: &Option<Value>) -> Result<bool, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(s)) if s.is_empty() => Ok(false),
        Some(Value::String(s)) if s == "json" => Ok(true),
        // A JSON schema: constrained to JSON (the schema's shape is not enforced yet).
        Some(Value::Object(_)) => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("invalid field `format`: expected \"json\" or a JSON schema, got {other}"))),
    }
}
