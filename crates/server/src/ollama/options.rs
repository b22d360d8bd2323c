//! Ollama's request fields (`options`, `keep_alive`, `format`) over the model's stored
//! defaults (its `params` layer), as the runtime's sampling settings and load options.

use hearth_runtime::protocol::SamplingParams;
use hearth_runtime::{KeepAlive, Model, Options, RuntimeError};
use serde_json::Value;

use crate::error::ApiError;

/// The sampling settings: Ollama's defaults, then the model's `params` layer, then the
/// request's `options`.
pub fn options(model: &Model, request: Option<&Value>) -> Result<Options, RuntimeError> {
    let mut o = model.options(SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.9, min_p: 0.0, ..SamplingParams::default() })?;
    if let Some(v) = request {
        o.apply(v, false)?;
    }
    Ok(o)
}

/// `keep_alive`: a number of seconds or a duration string.
pub fn keep_alive(v: &Option<Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => KeepAlive::parse(v).map(Some).map_err(|e| ApiError::bad_request(format!("invalid field `keep_alive`: {e}"))),
    }
}

/// `format`: `"json"` or a JSON schema constrains the output to JSON.
pub fn is_json_format(format: &Option<Value>) -> Result<(bool, Option<Value>), ApiError> {
    match format {
        None | Some(Value::Null) => Ok((false, None)),
        Some(Value::String(s)) if s.is_empty() => Ok((false, None)),
        Some(Value::String(s)) if s == "json" => Ok((true, None)),
        // A JSON schema: the answer matches it (llama.cpp's schema-to-grammar converter).
        Some(schema @ Value::Object(_)) => Ok((false, Some(schema.clone()))),
        Some(other) => Err(ApiError::bad_request(format!("invalid field `format`: expected \"json\" or a JSON schema, got {other}"))),
    }
}
