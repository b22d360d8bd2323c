//! The hello exchange: the first JSON message each way inside the channel.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Purpose: forward raw bytes to the worker's ggml RPC server.
pub(crate) const RPC: &str = "rpc";
/// Purpose: prove reachability, token and versions; nothing else.
pub(crate) const PING: &str = "ping";
/// Purpose: one request for the worker's [`Control`](crate::Control) handler.
pub(crate) const CONTROL: &str = "control";

/// What must be equal on both sides: controller and worker builds must match exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The caller's `env!("CARGO_PKG_VERSION")` (or anything finer, such as a git hash).
    pub hearth: String,
    /// The ggml RPC protocol of the linked llama.cpp, `major.minor.patch` (7.0.0 now).
    pub rpc_proto: String,
}

impl Versions {
    pub fn new(hearth: impl Into<String>, rpc_proto: impl Into<String>) -> Self {
        Versions { hearth: hearth.into(), rpc_proto: rpc_proto.into() }
    }
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hearth {} (ggml RPC {})", self.hearth, self.rpc_proto)
    }
}

/// The mismatch message, from either side: `who` runs `theirs`, `we` run `ours`.
pub(crate) fn mismatch(who: &str, theirs: &Versions, we: &str, ours: &Versions) -> String {
    format!("{who} runs {theirs}, this {we} runs {ours}: install the same hearth version on both")
}

/// The controller's first message.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub hearth_version: String,
    pub rpc_proto: String,
    /// [`RPC`], [`PING`] or [`CONTROL`]; a string, so that a worker can still name the
    /// versions to a controller whose purposes it does not know.
    pub purpose: String,
    /// The control request ([`CONTROL`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
}

impl Hello {
    pub fn new(versions: &Versions, purpose: &str, request: Option<Value>) -> Self {
        Hello {
            hearth_version: versions.hearth.clone(),
            rpc_proto: versions.rpc_proto.clone(),
            purpose: purpose.to_owned(),
            request,
        }
    }

    pub fn versions(&self) -> Versions {
        Versions::new(&self.hearth_version, &self.rpc_proto)
    }
}

/// The worker's answer. It always names the worker's versions, so the controller can word a
/// mismatch itself.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub hearth_version: String,
    pub rpc_proto: String,
    pub ok: bool,
    /// The control handler's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(versions: &Versions, reply: Option<Value>) -> Self {
        Reply {
            hearth_version: versions.hearth.clone(),
            rpc_proto: versions.rpc_proto.clone(),
            ok: true,
            reply,
            error: None,
        }
    }

    pub fn error(versions: &Versions, error: String) -> Self {
        Reply { ok: false, error: Some(error), ..Reply::ok(versions, None) }
    }

    pub fn versions(&self) -> Versions {
        Versions::new(&self.hearth_version, &self.rpc_proto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_names_both_sides() {
        let worker = Versions::new("0.2.0", "8.0.0");
        let controller = Versions::new("0.1.0", "7.0.0");
        assert_eq!(
            mismatch("worker 10.0.0.2:50052", &worker, "controller", &controller),
            "worker 10.0.0.2:50052 runs hearth 0.2.0 (ggml RPC 8.0.0), this controller runs hearth 0.1.0 \
             (ggml RPC 7.0.0): install the same hearth version on both"
        );
    }

    #[test]
    fn wire_shapes() {
        let v = Versions::new("0.1.0", "7.0.0");
        let hello = serde_json::to_value(Hello::new(&v, RPC, None)).unwrap();
        assert_eq!(hello, serde_json::json!({"hearth_version": "0.1.0", "rpc_proto": "7.0.0", "purpose": "rpc"}));
        let reply = serde_json::to_value(Reply::error(&v, "no".into())).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"hearth_version": "0.1.0", "rpc_proto": "7.0.0", "ok": false, "error": "no"})
        );
        // A newer controller's unknown fields and purposes still parse.
        let hello: Hello = serde_json::from_value(serde_json::json!({
            "hearth_version": "9", "rpc_proto": "9.0.0", "purpose": "teleport", "extra": 1
        }))
        .unwrap();
        assert_eq!(hello.versions(), Versions::new("9", "9.0.0"));
    }
}
