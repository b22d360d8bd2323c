//! The model store: where models come from and where they live.
//!
//! - [`reference`]: what `hearth pull` accepts (Hugging Face, Ollama registry, URL);
//! - [`store`]: the on-disk layout, manifests, blobs, garbage collection;
//! - [`download`]: the downloader that never hangs silently: parallel ranges, resume after a
//!   kill, stall detection, retries, sha256 verification;
//! - [`hf`], [`registry`]: the Hugging Face and Ollama registry protocols;
//! - [`interop`]: sharing files with the Hugging Face cache and Ollama's store by hardlink;
//! - [`pull`]: putting it together.
//!
//! This crate prints nothing: progress goes through [`progress::Reporter`].

pub mod download;
pub mod hf;
pub mod interop;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod remote;
pub mod split;
pub mod store;

pub use progress::{NoProgress, Reporter};
pub use pull::{check_remote, pull, PullOptions};
pub use reference::ModelRef;
pub use store::{Layer, LayerKind, Manifest, Source, Store};

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the store. Messages name the model, URL or path, and what
/// to try.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid model reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("model {name:?} not found; `hearth list` shows the models you have, `hearth pull` fetches one")]
    NotFound { name: String },
    #[error("{what} not found at {url}{}", if .available.is_empty() { String::new() } else { format!(" (available: {})", .available.join(", ")) })]
    RemoteNotFound { what: String, url: String, available: Vec<String> },
    #[error("{url} answered {status}: {hint}")]
    Unauthorized { url: String, status: u16, hint: String },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("download of {url} failed after {attempts} attempts with {done} of {total} bytes done: {reason}; run the same pull again to resume")]
    DownloadFailed { url: String, attempts: u32, done: u64, total: String, reason: String },
    #[error("sha256 mismatch for {from}: expected {expected}, got {actual}")]
    DigestMismatch { from: String, expected: String, actual: String },
    #[error("invalid digest {0:?} (expected sha256:<64 lowercase hex>)")]
    BadDigest(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io { path: path.to_path_buf(), source }
    }
}
