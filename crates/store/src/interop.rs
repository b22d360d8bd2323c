//! Sharing models with Ollama's store, by hardlink: zero extra disk either way.
//!
//! Ollama keeps `manifests/<host>/<namespace>/<model>/<tag>` (JSON, Docker manifest v2) and
//! `blobs/sha256-<hex>` under `$OLLAMA_MODELS` (default `~/.ollama/models`). Our blobs have
//! the same names, so a model moves between the two stores as a manifest plus hardlinks.

use std::fs;
use std::path::{Path, PathBuf};

use crate::progress::Reporter;
use crate::reference::{normalize_name, OLLAMA_REGISTRY};
use crate::registry::{Descriptor, OllamaManifest, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};
use crate::store::{digest_hex, link_or_copy, write_atomic, Layer, LayerKind, Manifest, Source, Store};
use crate::StoreError;

/// `$OLLAMA_MODELS`, else `~/.ollama/models`.
pub fn ollama_dir() -> PathBuf {
    std::env::var_os("OLLAMA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::store::home().join(".ollama").join("models"))
}

/// The Ollama manifest path parts (host, namespace, model, tag) for one of our names.
fn ollama_path_for(name: &str) -> Result<[String; 4], StoreError> {
    let name = normalize_name(name)?;
    let (path, tag) = name.rsplit_once(':').expect("normalized names have a tag");
    let parts: Vec<&str> = path.split('/').collect();
    Ok(match parts.as_slice() {
        [m] => [OLLAMA_REGISTRY.into(), "library".into(), m.to_string(), tag.into()],
        [ns, m] => [OLLAMA_REGISTRY.into(), ns.to_string(), m.to_string(), tag.into()],
        [h, ns, m] => [h.to_string(), ns.to_string(), m.to_string(), tag.into()],
        _ => return Err(StoreError::Invalid(format!("{name} has too many parts for an Ollama name (host/namespace/model:tag)"))),
    })
}

/// Makes every model of Ollama's store at `from` a model of ours, by hardlink (each blob's
/// sha256 checked). Returns the names imported.
pub fn import_ollama(store: &Store, from: &Path, reporter: &dyn Reporter) -> Result<Vec<String>, StoreError> {
    let manifests = from.join("manifests");
    if !manifests.is_dir() {
        return Err(StoreError::Invalid(format!(
            "{} has no manifests/ folder: is it an Ollama models directory? (set --from or OLLAMA_MODELS)",
            from.display()
        )));
    }
    let _guard = store.pull_guard()?;
    let mut names = Vec::new();
    let mut files = Vec::new();
    collect_files(&manifests, &mut files)?;
    files.sort();
    for file in files {
        let rel: Vec<String> = file
            .strip_prefix(&manifests)
            .expect("under manifests")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let [host, namespace, model, tag] = rel.as_slice() else {
            tracing::warn!("skipping {}: not at manifests/<host>/<namespace>/<model>/<tag>", file.display());
            continue;
        };
        let text = fs::read_to_string(&file).map_err(|e| StoreError::io(&file, e))?;
        let m: OllamaManifest = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("skipping {}: not an Ollama manifest ({e})", file.display());
                continue;
            }
        };
        let name = normalize_name(&crate::reference::ollama_name(host, namespace, model, tag))?;
        reporter.status(&format!("importing {name}"));
        let mut layers = Vec::new();
        for d in &m.layers {
            let Some(kind) = LayerKind::from_ollama_media_type(&d.media_type) else { continue };
            let blob = from.join("blobs").join(format!("sha256-{}", digest_hex(&d.digest)?));
            if !store.has_blob(&d.digest, d.size) {
                store.add_blob_from_file(&blob, Some(&d.digest), reporter)?;
            }
            layers.push(Layer { kind, digest: d.digest.clone(), size: d.size, filename: None });
        }
        if !layers.iter().any(|l| l.kind == LayerKind::Model) {
            tracing::warn!("skipping {name}: no model layer");
            continue;
        }
        store.commit(&Manifest {
            schema_version: 1,
            name: name.clone(),
            source: Source { kind: "ollama-import".into(), reference: file.display().to_string(), revision: None },
            layers,
        })?;
        names.push(name);
    }
    Ok(names)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

/// Writes model `name` into Ollama's store at `to`: blobs hardlinked, a config blob and a
/// manifest exactly as Ollama lays them out. Returns the manifest's path.
pub fn export_ollama(store: &Store, name: &str, to: &Path, reporter: &dyn Reporter) -> Result<PathBuf, StoreError> {
    let manifest = store.get(name)?;
    if manifest.model_layers().count() > 1 {
        return Err(StoreError::Invalid(format!(
            "{} is split into {} files, and Ollama loads only single-file GGUFs",
            manifest.name,
            manifest.model_layers().count()
        )));
    }
    let blobs = to.join("blobs");
    fs::create_dir_all(&blobs).map_err(|e| StoreError::io(&blobs, e))?;
    let model_layer = manifest.model_layers().next().expect("commit checks a model layer exists").clone();
    let gguf = hearth_gguf::Gguf::open(&store.blob_path(&model_layer.digest)?)
        .map_err(|e| StoreError::Invalid(format!("{}: {e}", manifest.name)))?;

    let mut layers = manifest.layers.clone();
    // Ollama renders Go templates. A model without one gets the Go template of its family,
    // recognised from the GGUF's own Jinja template, plus that family's stop strings.
    if manifest.layer(LayerKind::Template).is_none() {
        if let Some((template, params)) = gguf.get_str("tokenizer.chat_template").and_then(go_template_for) {
            let (digest, size) = store.add_blob_bytes(template.as_bytes())?;
            layers.push(Layer { kind: LayerKind::Template, digest, size, filename: None });
            if manifest.layer(LayerKind::Params).is_none() {
                let (digest, size) = store.add_blob_bytes(params.as_bytes())?;
                layers.push(Layer { kind: LayerKind::Params, digest, size, filename: None });
            }
        }
    }
    for l in &layers {
        let dest = blobs.join(format!("sha256-{}", digest_hex(&l.digest)?));
        if fs::metadata(&dest).is_ok_and(|m| m.len() == l.size) {
            continue;
        }
        link_or_copy(&store.blob_path(&l.digest)?, &dest, Some(reporter))?;
    }
    let arch = gguf.architecture().unwrap_or("unknown").to_string();
    let config = serde_json::json!({
        "model_format": "gguf",
        "model_family": arch,
        "model_families": [arch],
        "model_type": gguf.get_str("general.size_label").unwrap_or(""),
        "file_type": gguf.get_u64("general.file_type").map(hearth_gguf::file_type_name).unwrap_or("unknown"),
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
    });
    let config_bytes = serde_json::to_vec(&config).expect("config serializes");
    let config_digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&config_bytes)));
    write_atomic(&blobs.join(format!("sha256-{}", digest_hex(&config_digest)?)), &config_bytes)?;
    let om = OllamaManifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: Descriptor { media_type: CONFIG_MEDIA_TYPE.into(), digest: config_digest, size: config_bytes.len() as u64 },
        layers: layers
            .iter()
            .map(|l| Descriptor { media_type: l.kind.ollama_media_type().into(), digest: l.digest.clone(), size: l.size })
            .collect(),
    };
    let [host, ns, model, tag] = ollama_path_for(&manifest.name)?;
    let path = to.join("manifests").join(host).join(ns).join(model).join(tag);
    fs::create_dir_all(path.parent().expect("has a parent")).map_err(|e| StoreError::io(&path, e))?;
    write_atomic(&path, &serde_json::to_vec(&om).expect("manifest serializes"))?;
    Ok(path)
}

/// The Ollama Go template (and params with stop strings) for a Jinja template's family, when
/// it is one we recognise.
pub fn go_template_for(jinja: &str) -> Option<(&'static str, &'static str)> {
    if jinja.contains("<|im_start|>") {
        Some((
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
            r#"{"stop":["<|im_start|>","<|im_end|>"]}"#,
        ))
    } else if jinja.contains("<start_of_turn>") {
        Some((
            "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n{{ .Content }}<end_of_turn>\n{{ end }}<start_of_turn>model\n",
            r#"{"stop":["<end_of_turn>"]}"#,
        ))
    } else if jinja.contains("<|start_header_id|>") {
        Some((
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
            r#"{"stop":["<|start_header_id|>","<|end_header_id|>","<|eot_id|>"]}"#,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (name, parts) in [
            ("smollm2:latest", ["registry.ollama.ai", "library", "smollm2", "latest"]),
            ("ns/m:t", ["registry.ollama.ai", "ns", "m", "t"]),
            ("hf.co/u/r:Q4_K_M", ["hf.co", "u", "r", "Q4_K_M"]),
        ] {
            assert_eq!(ollama_path_for(name).unwrap(), parts.map(String::from));
            assert_eq!(crate::reference::ollama_name(parts[0], parts[1], parts[2], parts[3]), name);
        }
    }
}
