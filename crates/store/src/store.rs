//! The on-disk store: content-addressed blobs and one manifest per model name.
//!
//! ```text
//! $HEARTH_MODELS/                      (default ~/.hearth/models)
//!   blobs/sha256-<hex>                 complete, verified blobs (never modified after)
//!   blobs/sha256-<hex>.partial         a download in progress (sparse, full size)
//!   blobs/sha256-<hex>.partial.json    which byte ranges of it are done
//!   blobs/sha256-<hex>.lock            held (flock) by whoever downloads the blob
//!   manifests/<name parts>/<tag>.json  one per model, written atomically
//! ```
//!
//! Invariants: a blob file exists only once its sha256 was checked; a manifest is written
//! (by rename) only after all its blobs exist; so a crash at any point leaves a consistent
//! store, with at most some `.partial` files that the next pull resumes.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::progress::Reporter;
use crate::reference::normalize_name;
use crate::StoreError;

/// The store root's environment variable.
pub const ENV_MODELS: &str = "HEARTH_MODELS";

/// What a layer of a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// A GGUF file (or one shard of a split model, in order).
    Model,
    /// An Ollama Go template.
    Template,
    /// A default system prompt.
    System,
    /// Default parameters (JSON, Ollama's `params` layer).
    Params,
    License,
    /// A multimodal projector GGUF.
    Projector,
}

impl LayerKind {
    /// Ollama's media type for this kind of layer.
    pub fn ollama_media_type(self) -> &'static str {
        match self {
            LayerKind::Model => "application/vnd.ollama.image.model",
            LayerKind::Template => "application/vnd.ollama.image.template",
            LayerKind::System => "application/vnd.ollama.image.system",
            LayerKind::Params => "application/vnd.ollama.image.params",
            LayerKind::License => "application/vnd.ollama.image.license",
            LayerKind::Projector => "application/vnd.ollama.image.projector",
        }
    }

    pub fn from_ollama_media_type(media_type: &str) -> Option<LayerKind> {
        Some(match media_type {
            "application/vnd.ollama.image.model" => LayerKind::Model,
            "application/vnd.ollama.image.template" => LayerKind::Template,
            "application/vnd.ollama.image.system" => LayerKind::System,
            "application/vnd.ollama.image.params" => LayerKind::Params,
            "application/vnd.ollama.image.license" => LayerKind::License,
            "application/vnd.ollama.image.projector" => LayerKind::Projector,
            _ => return None,
        })
    }
}

/// One blob of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub kind: LayerKind,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
    /// The file name it had at its source (shards keep theirs: llama.cpp finds shards by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// `huggingface`, `ollama`, `url`, `file` or `copy`.
    pub kind: String,
    /// What was pulled: the reference, URL or path.
    pub reference: String,
    /// The revision (Hugging Face commit) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// One model: its name, source and layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// `name:tag`
    pub name: String,
    pub source: Source,
    pub layers: Vec<Layer>,
}

impl Manifest {
    pub fn model_layers(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter().filter(|l| l.kind == LayerKind::Model)
    }

    pub fn layer(&self, kind: LayerKind) -> Option<&Layer> {
        self.layers.iter().find(|l| l.kind == kind)
    }

    /// Total bytes of all layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// A model in the store, as `list` returns it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest: Manifest,
    pub modified: SystemTime,
}

/// How long an uploaded blob survives `gc` without a manifest that references it.
pub const UPLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The model store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// `~/.hearth/models`: the store unless the caller was told another root (the cli reads
    /// [`ENV_MODELS`]).
    pub fn default_root() -> PathBuf {
        home().join(".hearth").join("models")
    }

    /// Opens (creating) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for dir in [root.join("blobs"), root.join("manifests"), root.join("runs")] {
            fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a complete blob (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        let hex = digest_hex(digest)?;
        Ok(self.root.join("blobs").join(format!("sha256-{hex}")))
    }

    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        self.blob_path(digest)
            .ok()
            .and_then(|p| fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    fn manifest_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let name = normalize_name(name)?;
        let (path, tag) = name.rsplit_once(':').expect("normalized names have a tag");
        let mut p = self.root.join("manifests");
        for part in path.split('/') {
            // A host's port separator is kept out of the file system.
            p.push(part.replace(':', "_"));
        }
        p.push(format!("{tag}.json"));
        Ok(p)
    }

    /// The manifest of `name` (`:latest` when no tag).
    pub fn get(&self, name: &str) -> Result<Manifest, StoreError> {
        let path = self.manifest_path(name)?;
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { name: normalize_name(name)? })
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    /// The GGUF to load for `name`: its first model layer (the first shard of a split model),
    /// laid out so that llama.cpp finds the other shards beside it.
    pub fn model_file(&self, manifest: &Manifest) -> Result<PathBuf, StoreError> {
        let models: Vec<&Layer> = manifest.model_layers().collect();
        let first = models.first().ok_or_else(|| StoreError::Corrupt {
            path: self.root.join("manifests"),
            reason: format!("model {} has no model layer", manifest.name),
        })?;
        for l in &models {
            let p = self.blob_path(&l.digest)?;
            if !p.is_file() {
                return Err(StoreError::Corrupt {
                    path: p,
                    reason: format!("blob of model {} is missing; pull it again", manifest.name),
                });
            }
        }
        if models.len() == 1 {
            return self.blob_path(&first.digest);
        }
        // llama.cpp finds shard N beside shard 1 by file name, so a split model is linked into
        // runs/<digest of the first shard>/ under its original shard names.
        let dir = self.root.join("runs").join(digest_hex(&first.digest)?);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut first_path = None;
        for l in &models {
            let file = l.filename.as_deref().ok_or_else(|| StoreError::Corrupt {
                path: dir.clone(),
                reason: "a shard has no file name".into(),
            })?;
            let file = file.rsplit('/').next().unwrap_or(file);
            let link = dir.join(file);
            if !link.exists() {
                link_or_copy(&self.blob_path(&l.digest)?, &link, None)?;
            }
            first_path.get_or_insert(link);
        }
        Ok(first_path.expect("at least one shard"))
    }

    /// Writes a manifest atomically. All its blobs must already be in the store.
    pub fn commit(&self, manifest: &Manifest) -> Result<(), StoreError> {
        for l in &manifest.layers {
            if !self.has_blob(&l.digest, l.size) {
                return Err(StoreError::Corrupt {
                    path: self.blob_path(&l.digest)?,
                    reason: format!("cannot commit {}: blob {} is missing", manifest.name, l.digest),
                });
            }
        }
        let path = self.manifest_path(&manifest.name)?;
        let dir = path.parent().expect("manifest paths have a parent");
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let text = serde_json::to_string_pretty(manifest).expect("manifests serialize");
        write_atomic(&path, text.as_bytes())
    }

    /// Every model, sorted by name.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        let root = self.root.join("manifests");
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) => return Err(StoreError::io(&dir, e)),
            };
            for entry in rd.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    let Ok(text) = fs::read_to_string(&p) else { continue };
                    match serde_json::from_str::<Manifest>(&text) {
                        Ok(manifest) => {
                            let modified = entry.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
                            out.push(Entry { manifest, modified });
                        }
                        Err(e) => tracing::warn!("skipping unreadable manifest {}: {e}", p.display()),
                    }
                }
            }
        }
        out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        Ok(out)
    }

    /// Removes the model `name`, then every blob no other model uses. Returns the bytes freed.
    pub fn remove(&self, name: &str) -> Result<u64, StoreError> {
        let manifest = self.get(name)?;
        let path = self.manifest_path(&manifest.name)?;
        fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        // Remove now-empty manifest directories up to manifests/.
        let stop = self.root.join("manifests");
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == stop || fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        self.gc()
    }

    /// Copies a model under a new name (the blobs are shared).
    pub fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let mut manifest = self.get(from)?;
        manifest.name = normalize_name(to)?;
        self.commit(&manifest)
    }

    /// Deletes blobs that no manifest references (and their split-model links). Partial
    /// downloads are kept: a later pull resumes them. Returns the bytes freed.
    pub fn gc(&self) -> Result<u64, StoreError> {
        // A pull holds the shared lock from its first blob to its manifest: the blobs it has
        // finished are not referenced yet, and must not be collected under it.
        let lock_path = self.root.join(".gc.lock");
        let lock = fs::File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            tracing::info!("a pull is in progress; unused blobs will be removed by a later `hearth rm`");
            return Ok(0);
        }
        let used: std::collections::HashSet<String> = self
            .list()?
            .iter()
            .flat_map(|e| e.manifest.layers.iter().filter_map(|l| digest_hex(&l.digest).ok().map(str::to_string)))
            .collect();
        let mut freed = 0;
        let blobs = self.root.join("blobs");
        for entry in fs::read_dir(&blobs).map_err(|e| StoreError::io(&blobs, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_prefix("sha256-") else { continue };
            if hex.len() != 64 || used.contains(hex) || self.pinned(hex) {
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(entry.path()).is_ok() {
                freed += size;
                tracing::debug!("removed unused blob {name}");
            }
        }
        let runs = self.root.join("runs");
        if let Ok(rd) = fs::read_dir(&runs) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !used.contains(&name) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(freed)
    }

    /// Keeps an uploaded blob (`POST /api/blobs`) from `gc` until a manifest references it or
    /// [`UPLOAD_GRACE`] has passed: clients upload first and create the model after.
    pub fn pin_upload(&self, digest: &str) -> Result<(), StoreError> {
        let hex = digest_hex(digest)?;
        let dir = self.root.join("uploads");
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let pin = dir.join(hex);
        fs::write(&pin, b"").map_err(|e| StoreError::io(&pin, e))
    }

    /// Drops the pins of `manifest`'s blobs (it references them now).
    pub fn unpin(&self, manifest: &Manifest) {
        for l in &manifest.layers {
            if let Ok(hex) = digest_hex(&l.digest) {
                let _ = fs::remove_file(self.root.join("uploads").join(hex));
            }
        }
    }

    /// Whether the blob `hex` was uploaded less than [`UPLOAD_GRACE`] ago (an expired pin is
    /// removed).
    fn pinned(&self, hex: &str) -> bool {
        let pin = self.root.join("uploads").join(hex);
        let Ok(modified) = fs::metadata(&pin).and_then(|m| m.modified()) else { return false };
        let fresh = modified.elapsed().map_or(true, |age| age < UPLOAD_GRACE);
        if !fresh {
            let _ = fs::remove_file(&pin);
        }
        fresh
    }

    /// Held while blobs are being added for a manifest not yet committed: keeps `gc` away.
    pub fn pull_guard(&self) -> Result<fs::File, StoreError> {
        let lock_path = self.root.join(".gc.lock");
        let lock = fs::File::create(&lock_path).map_err(|e| StoreError::io(&lock_path, e))?;
        lock.lock_shared().map_err(|e| StoreError::io(&lock_path, e))?;
        Ok(lock)
    }

    /// Adds a file already on this machine as a blob: hardlinked when on the same file system,
    /// else copied (with progress). Its sha256 is computed (and checked against `expected`).
    pub fn add_blob_from_file(&self, src: &Path, expected: Option<&str>, reporter: &dyn Reporter) -> Result<(String, u64), StoreError> {
        let size = fs::metadata(src).map_err(|e| StoreError::io(src, e))?.len();
        let id = format!("hashing {}", src.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        reporter.start(&id, Some(size), 0);
        let hex = sha256_file(src, |n| reporter.advance(&id, n))?;
        reporter.finish(&id);
        let digest = format!("sha256:{hex}");
        if let Some(want) = expected {
            if digest_hex(want)? != hex {
                return Err(StoreError::DigestMismatch { from: src.display().to_string(),
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        let dest = self.blob_path(&digest)?;
        if !self.has_blob(&digest, size) {
            link_or_copy(src, &dest, Some(reporter))?;
        }
        Ok((digest, size))
    }

    /// Stores small bytes (a template, params) as a blob.
    pub fn add_blob_bytes(&self, bytes: &[u8]) -> Result<(String, u64), StoreError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let dest = self.blob_path(&digest)?;
        if !self.has_blob(&digest, bytes.len() as u64) {
            write_atomic(&dest, bytes)?;
        }
        Ok((digest, bytes.len() as u64))
    }

    /// Reads a small blob as text (a template, a system prompt).
    pub fn read_text(&self, layer: &Layer) -> Result<String, StoreError> {
        let p = self.blob_path(&layer.digest)?;
        fs::read_to_string(&p).map_err(|e| StoreError::io(&p, e))
    }
}

/// `sha256:<hex>` or `sha256-<hex>` → `<hex>`, checked.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    let hex = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("sha256-"))
        .unwrap_or(digest);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        Ok(hex)
    } else {
        Err(StoreError::BadDigest(digest.to_string()))
    }
}

/// The sha256 of a file, in hex; `progress` is called with each chunk's size.
pub fn sha256_file(path: &Path, mut progress: impl FnMut(u64)) -> Result<String, StoreError> {
    let mut f = fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| StoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hardlinks `src` to `dest` (atomically, through a temporary name); copies when the two are
/// on different file systems or links are not allowed.
pub fn link_or_copy(src: &Path, dest: &Path, reporter: Option<&dyn Reporter>) -> Result<(), StoreError> {
    let tmp = temp_beside(dest);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        let mut from = fs::File::open(src).map_err(|e| StoreError::io(src, e))?;
        let mut to = fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        let total = from.metadata().map(|m| m.len()).ok();
        let id = format!("copying {}", src.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        if let Some(r) = reporter {
            r.start(&id, total, 0);
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf).map_err(|e| StoreError::io(src, e))?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).map_err(|e| StoreError::io(&tmp, e))?;
            if let Some(r) = reporter {
                r.advance(&id, n as u64);
            }
        }
        to.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
        if let Some(r) = reporter {
            r.finish(&id);
        }
    }
    fs::rename(&tmp, dest).map_err(|e| StoreError::io(dest, e))
}

/// Writes a file so that readers see the old content or the new, never a part, and so that
/// it survives a power loss (fsync before the rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_replace(path, bytes, true)
}

/// As [`write_atomic`]; without `durable` the data is not forced to disk (for state that is
/// rewritten many times a second and checked by other means).
pub fn write_replace(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
    let tmp = temp_beside(path);
    let mut f = fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| StoreError::io(&tmp, e))?;
    if durable {
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|f| f.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

pub(crate) fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    fn manifest(name: &str, digests: &[(String, u64)]) -> Manifest {
        Manifest {
            schema_version: 1,
            name: name.into(),
            source: Source { kind: "file".into(), reference: "x".into(), revision: None },
            layers: digests
                .iter()
                .map(|(d, s)| Layer { kind: LayerKind::Model, digest: d.clone(), size: *s, filename: None })
                .collect(),
        }
    }

    #[test]
    fn commit_list_copy_remove_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.add_blob_bytes(b"model a").unwrap();
        let b = store.add_blob_bytes(b"model b").unwrap();
        // A manifest whose blob is missing cannot be committed.
        let missing = manifest("x:latest", &[("sha256:".to_string() + &"0".repeat(64), 1)]);
        assert!(store.commit(&missing).is_err());
        store.commit(&manifest("a:latest", &[a.clone()])).unwrap();
        store.commit(&manifest("hf.co/u/r:Q4", &[a.clone(), b.clone()])).unwrap();
        store.copy("a", "c:v2").unwrap();
        let names: Vec<String> = store.list().unwrap().into_iter().map(|e| e.manifest.name).collect();
        assert_eq!(names, ["a:latest", "c:v2", "hf.co/u/r:Q4"]);
        assert_eq!(store.get("a").unwrap().layers[0].digest, a.0);
        assert!(matches!(store.get("nope"), Err(StoreError::NotFound { .. })));
        // Removing hf.co/u/r frees only b; a is still used by a and c.
        assert_eq!(store.remove("hf.co/u/r:Q4").unwrap(), 7);
        assert!(store.has_blob(&a.0, a.1) && !store.has_blob(&b.0, b.1));
        assert!(!dir.path().join("manifests/hf.co").exists(), "empty manifest dirs go away");
        store.remove("a").unwrap();
        assert!(store.has_blob(&a.0, a.1));
        store.remove("c:v2").unwrap();
        assert!(!store.has_blob(&a.0, a.1));
    }

    /// A client uploads blobs first and creates the model after: an unrelated `rm` in between
    /// must not collect them.
    #[test]
    fn an_uploaded_blob_survives_gc_until_a_model_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let other = store.add_blob_bytes(b"other").unwrap();
        store.commit(&manifest("other:latest", &[other])).unwrap();
        let up = store.add_blob_bytes(b"uploaded").unwrap();
        store.pin_upload(&up.0).unwrap();
        store.remove("other").unwrap();
        assert!(store.has_blob(&up.0, up.1), "the pinned upload survived an unrelated rm");
        let m = manifest("made:latest", &[up.clone()]);
        store.commit(&m).unwrap();
        store.unpin(&m);
        store.remove("made").unwrap();
        assert!(!store.has_blob(&up.0, up.1), "once used and unpinned, it is collected like any blob");
    }

    #[test]
    fn blobs_from_files_are_hardlinked_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let src = dir.path().join("m.gguf");
        fs::write(&src, b"weights").unwrap();
        let (digest, size) = store.add_blob_from_file(&src, None, &NoProgress).unwrap();
        assert_eq!(size, 7);
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&src), ino(&store.blob_path(&digest).unwrap()));
        let wrong = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(store.add_blob_from_file(&src, Some(&wrong), &NoProgress), Err(StoreError::DigestMismatch { .. })));
    }

    #[test]
    fn digests_are_checked() {
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(digest_hex(&format!("sha256-{}", "a".repeat(64))).is_ok());
        assert!(digest_hex("sha256:../../etc/passwd").is_err());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
