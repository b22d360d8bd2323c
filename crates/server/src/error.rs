//! Errors as each API writes them: one [`ApiError`] (status, message, OpenAI's type and code,
//! Retry-After), and the two shapes: [`OllamaError`] (`{"error": "..."}`) and [`OpenAiError`]
//! (`{"error": {"message", "type", "param", "code"}}`). A [`RuntimeError`] maps to each in one
//! place. Handlers return `Result<_, OllamaError>` or `Result<_, OpenAiError>` and use `?`;
//! request bodies come through [`Body`], whose rejection names the failing field in the API's
//! shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hearth_runtime::RuntimeError;
use serde::de::DeserializeOwned;

/// An error with the status it maps to, in no API's shape yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's error type.
    pub kind: &'static str,
    /// OpenAI's error code.
    pub code: Option<&'static str>,
    /// Seconds for a Retry-After header (only for errors worth retrying).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), kind, code: None, retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    /// In Ollama's shape.
    pub fn ollama(self) -> Response {
        OllamaError(self).into_response()
    }

    /// In OpenAI's shape.
    pub fn openai(self) -> Response {
        OpenAiError(self).into_response()
    }

    /// In Anthropic's shape.
    pub fn anthropic(self) -> Response {
        AnthropicError(self).into_response()
    }
}

/// The statuses both APIs share: 404 unknown model, 400 bad values, 503 + Retry-After only
/// when a retry can succeed, 500 for the rest.
fn common(e: RuntimeError) -> ApiError {
    let message = e.to_string();
    match e {
        RuntimeError::NotFound(_) => ApiError::not_found(message).with_code("model_not_found"),
        RuntimeError::Invalid { .. } | RuntimeError::Rejected(_) => ApiError::bad_request(message),
        RuntimeError::Overloaded { retry_after, .. } => ApiError {
            retry_after: Some(retry_after.as_secs().max(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", message)
        },
        RuntimeError::TooLarge { .. } => ApiError::internal(message).with_code("model_too_large"),
        RuntimeError::LoadFailed { .. } => ApiError::internal(message).with_code("model_load_failed"),
        RuntimeError::RunnerDied { .. } => ApiError::internal(message).with_code("runner_died"),
        RuntimeError::Store(_) | RuntimeError::Internal(_) => ApiError::internal(message),
    }
}

/// An error in Ollama's shape: `{"error": "..."}`.
#[derive(Debug)]
pub struct OllamaError(pub ApiError);

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

/// An error in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug)]
pub struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

impl From<RuntimeError> for AnthropicError {
    /// As for OpenAI: a model that can never fit is a 400 (the SDK retries 5xx).
    fn from(e: RuntimeError) -> Self {
        AnthropicError(OpenAiError::from(e).0)
    }
}

impl AnthropicError {
    /// Anthropic's error type for a status.
    fn kind(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        }
    }

    /// The body, also the `error` event of a stream that already started.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"type": "error", "error": {"type": Self::kind(self.0.status), "message": self.0.message}})
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let body = self.body();
        with_retry_after((self.0.status, axum::Json(body)).into_response(), self.0.retry_after)
    }
}

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        OllamaError(e)
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e)
    }
}

impl From<RuntimeError> for OllamaError {
    /// As Ollama answers: a model that cannot fit is a 500 whose message says how much memory
    /// it needs and how much there is (`model requires more memory (X) than is available (Y)`).
    fn from(e: RuntimeError) -> Self {
        OllamaError(common(e))
    }
}

impl From<RuntimeError> for OpenAiError {
    /// As OpenAI's clients expect: a model that cannot fit is a 400 (`model_too_large`), which
    /// the SDKs do not retry (they retry 5xx), since no retry can make it fit.
    fn from(e: RuntimeError) -> Self {
        let too_large = matches!(e, RuntimeError::TooLarge { .. });
        let mut a = common(e);
        if too_large {
            a.status = StatusCode::BAD_REQUEST;
            a.kind = "invalid_request_error";
        }
        OpenAiError(a)
    }
}

fn with_retry_after(mut r: Response, secs: Option<u64>) -> Response {
    if let Some(s) = secs {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let e = self.0;
        with_retry_after((e.status, axum::Json(serde_json::json!({ "error": e.message }))).into_response(), e.retry_after)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = serde_json::json!({"error": {"message": e.message, "type": e.kind, "param": null, "code": e.code}});
        with_retry_after((e.status, axum::Json(body)).into_response(), e.retry_after)
    }
}

/// The error line of a stream that already started: Ollama's `{"error": "..."}`.
pub fn ollama_stream_error(e: &RuntimeError) -> serde_json::Value {
    serde_json::json!({ "error": e.to_string() })
}

/// The error frame of a stream that already started, in OpenAI's shape.
pub fn openai_stream_error(e: RuntimeError) -> serde_json::Value {
    let a = OpenAiError::from(e).0;
    serde_json::json!({"error": {"message": a.message, "type": a.kind, "param": null, "code": a.code}})
}

/// Parses a JSON object body; errors name the field (`messages[0].content: invalid type ...`).
/// Anything but one object (an array, trailing bytes) is refused.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| body[i]) {
        None => return Err(ApiError::bad_request("the request body is empty; expected a JSON object")),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad_request("invalid JSON body: expected a JSON object")),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" || inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid field `{path}`: {inner}"))
        }
    })?;
    de.end().map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e} (after the object)")))?;
    Ok(value)
}

/// Request bodies parsed into `T`, rejected in the API's error shape with the failing field
/// named.
macro_rules! json_body {
    ($(#[$doc:meta])* $name:ident, $error:ty) => {
        $(#[$doc])*
        pub struct $name<T>(pub T);

        impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for $name<T> {
            type Rejection = $error;

            async fn from_request(req: Request, state: &S) -> Result<Self, $error> {
                let bytes = Bytes::from_request(req, state)
                    .await
                    .map_err(|e| ApiError::new(e.status(), "invalid_request_error", e.body_text()))?;
                Ok($name(parse(&bytes)?))
            }
        }
    };
}

json_body!(
    /// A JSON body of the Ollama API.
    OllamaJson,
    OllamaError
);
json_body!(
    /// A JSON body of the OpenAI API.
    OpenAiJson,
    OpenAiError
);
json_body!(
    /// A JSON body of the Anthropic API.
    AnthropicJson,
    AnthropicError
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_one_object_is_a_body() {
        #[derive(serde::Deserialize, Debug)]
        struct B {
            #[serde(default)]
            _a: Option<u32>,
        }
        assert!(parse::<B>(b" {} ").is_ok());
        for bad in [&b"[]"[..], b"{} {}", b"{}x", b"", b"  ", b"null"] {
            assert_eq!(parse::<B>(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_overload_is_retryable() {
        let busy = common(RuntimeError::Overloaded { why: "x".into(), retry_after: Duration::from_millis(300) });
        assert_eq!((busy.status, busy.retry_after), (StatusCode::SERVICE_UNAVAILABLE, Some(1)));
        let big = RuntimeError::TooLarge { model: "m".into(), needed: 3 << 30, available: 1 << 30, per_device: None };
        let o = OllamaError::from(big.clone()).0;
        assert_eq!((o.status, o.retry_after), (StatusCode::INTERNAL_SERVER_ERROR, None));
        assert!(o.message.contains("requires more memory (3.00 GiB) than is available (1.00 GiB)"), "{}", o.message);
        let a = OpenAiError::from(big).0;
        assert_eq!((a.status, a.code, a.retry_after), (StatusCode::BAD_REQUEST, Some("model_too_large"), None));
    }
}
