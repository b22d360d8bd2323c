//! A model named by a request, resolved once: its normalized name, manifest, file and the
//! defaults stored with it (Ollama's params, system prompt and template layers).

use std::path::PathBuf;

use hearth_gguf::fit::{kv_bytes_per_elem, ContextPlan};
use hearth_protocol::LoadSettings;
use hearth_store::reference::ModelName;
use hearth_store::{LayerKind, Manifest, Store};

use crate::RuntimeError;

/// A model of the store, resolved for one request.
#[derive(Debug, Clone)]
pub struct Model {
    /// The normalized name (`smollm2:latest`).
    pub name: ModelName,
    pub manifest: Manifest,
    /// The model file (the first shard: llama.cpp finds the others beside it).
    pub path: PathBuf,
    /// Every shard's blob, in order (for reading headers).
    pub shards: Vec<PathBuf>,
    /// The digest of the first model layer: a changed digest means the model was replaced.
    pub digest: String,
    /// The `params` layer (Ollama's model options, e.g. `stop`, `temperature`), if any.
    pub params: Option<serde_json::Value>,
    /// The default system prompt, if any.
    pub system: Option<String>,
    /// Ollama's Go template, if any: the runner picks llama.cpp's built-in template of its
    /// family for a GGUF without a Jinja template.
    pub go_template: Option<String>,
    /// The file of the draft model that `params.draft_model` names, when the store has it.
    /// Stored parameters name a draft model by its store name only, never by a path: they
    /// come from API clients and registries, and must not make the runner open any file the
    /// server can read.
    pub draft_file: Option<PathBuf>,
}

impl Model {
    /// Reads `name` from the store: the name is normalized and the manifest read here, once.
    pub fn resolve(store: &Store, name: &str) -> Result<Model, RuntimeError> {
        let name = ModelName::parse(name).map_err(RuntimeError::store)?;
        let manifest = store.get(&name).map_err(RuntimeError::store)?;
        let path = store.model_file(&manifest).map_err(RuntimeError::store)?;
        let shards = manifest.model_layers().map(|l| store.blob_path(&l.digest)).collect::<Result<_, _>>().map_err(RuntimeError::store)?;
        let digest = manifest.model_layers().next().map(|l| l.digest.clone()).unwrap_or_default();
        let text = |k: LayerKind| manifest.layer(k).and_then(|l| store.read_text(l).ok());
        let params: Option<serde_json::Value> = text(LayerKind::Params).and_then(|p| serde_json::from_str(&p).ok());
        // A stored draft model, named as the store knows it (see `apply_load_params`).
        let draft_file = params.as_ref().and_then(|p| p.get("draft_model")?.as_str()).and_then(|n| draft_file(store, n));
        Ok(Model { name, path, shards, digest, params, system: text(LayerKind::System), go_template: text(LayerKind::Template), manifest, draft_file })
    }
}

/// The file of the model the store knows as `name`, if it does (a path is no store name).
fn draft_file(store: &Store, name: &str) -> Option<PathBuf> {
    let manifest = store.get(&ModelName::parse(name).ok()?).ok()?;
    store.model_file(&manifest).ok()
}

/// The memory plan's view of `settings` with `parallel` sequences of `ctx` tokens: KV cache
/// types, flash attention and the physical batch as the engine will use them.
pub fn context_plan(settings: &LoadSettings, ctx: u32, parallel: u32) -> ContextPlan {
    let parallel = parallel.max(1) as u64;
    ContextPlan {
        n_ctx: ctx as u64 * parallel,
        n_ubatch: settings.ubatch_size as u64,
        k_bytes_per_elem: kv_bytes_per_elem(settings.cache_type_k.name()).unwrap_or(2.0),
        v_bytes_per_elem: kv_bytes_per_elem(settings.cache_type_v.name()).unwrap_or(2.0),
        parallel,
        flash_attn: settings.flash_attn.planned_on(),
    }
}

/// The `--gpu-layers`/`--tensor-split` of `settings` as a placement split.
pub fn split(settings: &LoadSettings) -> hearth_gguf::plan::Split {
    hearth_gguf::plan::Split {
        gpu_layers: settings.gpu_layers.and_then(|n| u32::try_from(n).ok()),
        tensor_split: settings.tensor_split.clone(),
        cpu_tensors: settings
            .tensor_overrides()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, dev)| dev.eq_ignore_ascii_case("CPU"))
            .map(|(re, _)| re)
            .collect(),
        auto_moe: settings.override_tensor.is_empty() && !settings.cpu_moe && settings.n_cpu_moe == 0,
    }
}
