//! The Ollama registry side: manifests and the config blob.

use serde_json::json;

use crate::util::sha256_hex;

/// The manifest's own media type (`Content-Type` of a manifest answer).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The config blob's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
/// Layer media types Ollama uses.
pub mod media_type {
    /// The GGUF weights.
    pub const MODEL: &str = "application/vnd.ollama.image.model";
    /// A multimodal projector (GGUF).
    pub const PROJECTOR: &str = "application/vnd.ollama.image.projector";
    /// A LoRA adapter (GGUF).
    pub const ADAPTER: &str = "application/vnd.ollama.image.adapter";
    /// The prompt template (a Go template).
    pub const TEMPLATE: &str = "application/vnd.ollama.image.template";
    /// The system prompt.
    pub const SYSTEM: &str = "application/vnd.ollama.image.system";
    /// Default options (JSON).
    pub const PARAMS: &str = "application/vnd.ollama.image.params";
    /// Seed messages (JSON).
    pub const MESSAGES: &str = "application/vnd.ollama.image.messages";
    /// The licence text.
    pub const LICENSE: &str = "application/vnd.ollama.image.license";
}

/// One entry of a manifest: the config or a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaLayer {
    /// Its media type.
    pub media_type: String,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A model as [`crate::Fixture::add_ollama_model`] stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OllamaModel {
    /// The manifest, byte for byte as served.
    pub manifest: String,
    /// `sha256:<hex>` of the manifest (`Docker-Content-Digest`).
    pub manifest_digest: String,
    /// The config blob.
    pub config: OllamaLayer,
    /// The layers, in the order given.
    pub layers: Vec<OllamaLayer>,
}

/// The config blob Ollama writes for a GGUF model, listing the layers as `diff_ids`.
pub(crate) fn default_config(layer_digests: &[String]) -> Vec<u8> {
    let v = json!({
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "135M",
        "file_type": "Q4_1",
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The manifest for a config and layers.
pub(crate) fn manifest(config: &OllamaLayer, layers: &[OllamaLayer]) -> String {
    let entry =
        |l: &OllamaLayer| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size});
    let v = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": entry(config),
        "layers": layers.iter().map(entry).collect::<Vec<_>>(),
    });
    serde_json::to_string(&v).unwrap_or_default()
}

/// A layer entry for `bytes`.
pub(crate) fn layer(media_type: &str, bytes: &[u8]) -> OllamaLayer {
    OllamaLayer {
        media_type: media_type.to_string(),
        digest: format!("sha256:{}", sha256_hex(bytes)),
        size: bytes.len() as u64,
    }
}
