//! `hearth pull` and `hearth add`: from a reference or a local file to a committed manifest.

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::download::{self, DownloadOptions, Target};
use crate::progress::Reporter;
use crate::reference::{normalize_name, ModelRef};
use crate::registry;
use crate::store::{digest_hex, Layer, LayerKind, Manifest, Source, Store};
use crate::{hf, StoreError};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub download: DownloadOptions,
    /// Allow plain http for a registry host (`--insecure`, as Ollama).
    pub insecure: bool,
    /// Store the model under this name instead of the reference's.
    pub name: Option<String>,
}

/// Pulls `reference` into `store`. The manifest is written only once every blob is complete
/// and verified.
pub async fn pull(store: &Store, reference: &str, opts: &PullOptions, reporter: &dyn Reporter) -> Result<Manifest, StoreError> {
    let r = ModelRef::parse(reference)?;
    let name = normalize_name(&opts.name.clone().unwrap_or_else(|| r.default_name()))?;
    let _guard = store.pull_guard()?;
    let client = download::client();
    reporter.status("pulling manifest");
    let manifest = match &r {
        ModelRef::HuggingFace { repo, quant, file } => pull_hf(store, &client, repo, quant.as_deref(), file.as_deref(), &name, reference, opts, reporter).await?,
        ModelRef::Ollama { host, namespace, model, tag } => pull_ollama(store, &client, host, namespace, model, tag, &name, reference, opts, reporter).await?,
        ModelRef::Url(url) => pull_url(store, &client, url, &name, opts, reporter).await?,
    };
    check_gguf(store, &manifest)?;
    reporter.status("writing manifest");
    store.commit(&manifest)?;
    reporter.status("success");
    Ok(manifest)
}

#[allow(clippy::too_many_arguments)]
async fn pull_hf(
    store: &Store,
    client: &reqwest::Client,
    repo: &str,
    quant: Option<&str>,
    file: Option<&str>,
    name: &str,
    reference: &str,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<Manifest, StoreError> {
    let rev = "main";
    let files = hf::list_files(client, repo, rev).await?;
    let chosen = hf::select(&files, quant, file).map_err(|why| StoreError::RemoteNotFound {
        what: format!("{why} in {repo}"),
        url: format!("{}/{repo}", hf::endpoint()),
        available: hf::available(&files),
    })?;
    let mut layers = Vec::new();
    for f in chosen {
        let size = f.real_size();
        let url = hf::resolve_url(repo, rev, &f.path);
        let filename = f.path.rsplit('/').next().unwrap_or(&f.path).to_string();
        let (digest, size) = match f.sha256() {
            Some(sha) => {
                let digest = format!("sha256:{sha}");
                let id = format!("pulling {digest}");
                if store.has_blob(&digest, size) {
                    reporter.start(&id, Some(size), size);
                    reporter.finish(&id);
                } else if let Some(cached) = hf::cached_blob(repo, sha, size) {
                    reporter.note(&id, &format!("found in the Hugging Face cache ({}); linking it", cached.display()));
                    store.add_blob_from_file(&cached, Some(&digest), reporter)?;
                } else {
                    let target = Target {
                        url,
                        headers: hf::auth_headers(),
                        sha256: Some(sha.to_string()),
                        size: Some(size),
                        dest: store.blob_path(&digest)?,
                        id,
                    };
                    download::download(client, &target, &opts.download, reporter).await?;
                }
                (digest, size)
            }
            // A file not in LFS has no published sha256: hash what arrives.
            None => download_unknown(store, client, &url, hf::auth_headers(), Some(size), opts, reporter).await?,
        };
        layers.push(Layer { kind: LayerKind::Model, digest, size, filename: Some(filename) });
    }
    Ok(Manifest {
        schema_version: 1,
        name: name.to_string(),
        source: Source { kind: "huggingface".into(), reference: reference.to_string(), revision: Some(rev.into()) },
        layers,
    })
}

#[allow(clippy::too_many_arguments)]
async fn pull_ollama(
    store: &Store,
    client: &reqwest::Client,
    host: &str,
    namespace: &str,
    model: &str,
    tag: &str,
    name: &str,
    reference: &str,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<Manifest, StoreError> {
    let (m, headers) = registry::fetch_manifest(client, host, namespace, model, tag, opts.insecure).await?;
    let mut layers = Vec::new();
    for d in &m.layers {
        let Some(kind) = LayerKind::from_ollama_media_type(&d.media_type) else {
            reporter.note(&d.digest, &format!("skipping a layer of unknown type {}", d.media_type));
            continue;
        };
        let hex = digest_hex(&d.digest)?.to_string();
        let id = format!("pulling {}", d.digest);
        if store.has_blob(&d.digest, d.size) {
            reporter.start(&id, Some(d.size), d.size);
            reporter.finish(&id);
        } else {
            let target = Target {
                url: registry::blob_url(host, namespace, model, &d.digest, opts.insecure),
                headers: headers.clone(),
                sha256: Some(hex),
                size: Some(d.size),
                dest: store.blob_path(&d.digest)?,
                id,
            };
            download::download(client, &target, &opts.download, reporter).await?;
        }
        layers.push(Layer { kind, digest: d.digest.clone(), size: d.size, filename: None });
    }
    if !layers.iter().any(|l| l.kind == LayerKind::Model) {
        return Err(StoreError::Invalid(format!("{reference} has no model layer")));
    }
    Ok(Manifest {
        schema_version: 1,
        name: name.to_string(),
        source: Source { kind: "ollama".into(), reference: reference.to_string(), revision: None },
        layers,
    })
}

async fn pull_url(
    store: &Store,
    client: &reqwest::Client,
    url: &str,
    name: &str,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<Manifest, StoreError> {
    let (digest, size) = download_unknown(store, client, url, Default::default(), None, opts, reporter).await?;
    let filename = url.rsplit('/').next().and_then(|f| f.split(['?', '#']).next()).map(str::to_string);
    Ok(Manifest {
        schema_version: 1,
        name: name.to_string(),
        source: Source { kind: "url".into(), reference: url.to_string(), revision: None },
        layers: vec![Layer { kind: LayerKind::Model, digest, size, filename }],
    })
}

/// Downloads a file whose sha256 is not published, to a name derived from its URL, then moves
/// it to the blob its content hashes to.
async fn download_unknown(
    store: &Store,
    client: &reqwest::Client,
    url: &str,
    headers: reqwest::header::HeaderMap,
    size: Option<u64>,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<(String, u64), StoreError> {
    let key = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    let dest = store.root().join("blobs").join(format!("url-{}", &key[..32]));
    let target = Target { url: url.to_string(), headers, sha256: None, size, dest: dest.clone(), id: format!("pulling {}", &key[..12]) };
    let (hex, size) = download::download(client, &target, &opts.download, reporter).await?;
    let digest = format!("sha256:{hex}");
    let blob = store.blob_path(&digest)?;
    std::fs::rename(&dest, &blob).map_err(|e| StoreError::io(&blob, e))?;
    Ok((digest, size))
}

/// The first model blob must be a GGUF that llama.cpp can read the header of.
fn check_gguf(store: &Store, manifest: &Manifest) -> Result<(), StoreError> {
    let Some(first) = manifest.model_layers().next() else {
        return Err(StoreError::Invalid(format!("{} has no model file", manifest.name)));
    };
    let path = store.blob_path(&first.digest)?;
    hearth_gguf::Gguf::open(&path).map_err(|e| {
        // Not the bytes it starts with: the answer of whatever was fetched is not echoed.
        let why = match e {
            hearth_gguf::GgufError::NotGguf { .. } => "it does not start with the magic \"GGUF\"".to_string(),
            other => other.to_string(),
        };
        StoreError::Invalid(format!("{} is not a usable GGUF model: {why}", manifest.source.reference))
    })?;
    Ok(())
}

/// Whether a server may fetch `reference` for a client: plain http, and hosts that are (or
/// resolve to) this machine or a private network, only with `insecure` — otherwise anyone who
/// can call `/api/pull` could make the server fetch from services only it can reach.
pub async fn check_remote(reference: &str, insecure: bool) -> Result<(), StoreError> {
    if insecure {
        return Ok(());
    }
    let refuse = |why: String| StoreError::BadReference {
        reference: reference.to_string(),
        reason: format!("{why}; a server fetches such addresses only when the request says \"insecure\": true"),
    };
    let (host, port) = match ModelRef::parse(reference)? {
        ModelRef::Url(u) => {
            let url = reqwest::Url::parse(&u).map_err(|e| refuse(format!("not a URL ({e})")))?;
            if url.scheme() != "https" {
                return Err(refuse(format!("{} is not https", url.scheme())));
            }
            (url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string(), url.port_or_known_default().unwrap_or(443))
        }
        ModelRef::Ollama { host, .. } => match host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()) {
            Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.parse().unwrap_or(443)),
            None => (host.clone(), 443),
        },
        // The Hub's address is the server's own setting (HF_ENDPOINT), not the client's.
        ModelRef::HuggingFace { .. } => return Ok(()),
    };
    let addrs: Vec<std::net::IpAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port)).await.map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default(),
    };
    if let Some(ip) = addrs.iter().find(|ip| is_internal(ip)) {
        return Err(refuse(format!("{host} is {ip}, an address of this machine or a private network")));
    }
    Ok(())
}

/// Loopback, private, link-local, unspecified, CGNAT and unique-local addresses.
fn is_internal(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => {
            v.is_loopback() || v.is_private() || v.is_link_local() || v.is_unspecified() || v.is_broadcast() || (v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v) => {
            v.is_loopback() || v.is_unspecified() || (v.segments()[0] & 0xfe00) == 0xfc00 || (v.segments()[0] & 0xffc0) == 0xfe80 || v.to_ipv4_mapped().is_some_and(|m| is_internal(&std::net::IpAddr::V4(m)))
        }
    }
}

#[cfg(test)]
mod remote_tests {
    use super::*;

    #[tokio::test]
    async fn a_server_fetches_internal_addresses_only_when_told() {
        for bad in ["http://example.com/m.gguf", "https://127.0.0.1:8080/secret.gguf", "https://[::1]/m.gguf", "https://10.1.2.3/m.gguf", "https://localhost/m.gguf", "192.168.1.5:5000/library/m:latest", "https://169.254.169.254/latest/m.gguf"] {
            assert!(check_remote(bad, false).await.is_err(), "{bad}");
            assert!(check_remote(bad, true).await.is_ok(), "{bad} with insecure");
        }
        for ok in ["https://93.184.216.34/m.gguf", "hf.co/u/r:Q4_K_M", "smollm2:135m"] {
            assert!(check_remote(ok, false).await.is_ok(), "{ok}");
        }
    }
}

/// `hearth add PATH`: a local GGUF (all shards of a split one) into the store, by hardlink when
/// on the same file system, else by copy.
pub fn add_local(store: &Store, path: &Path, name: Option<&str>, reporter: &dyn Reporter) -> Result<Manifest, StoreError> {
    let meta = std::fs::metadata(path).map_err(|e| StoreError::io(path, e))?;
    if !meta.is_file() {
        return Err(StoreError::Invalid(format!("{} is not a file", path.display())));
    }
    hearth_gguf::Gguf::open(path).map_err(|e| StoreError::Invalid(format!("{} is not a GGUF model: {e}", path.display())))?;
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let files: Vec<PathBuf> = match crate::split::parse_shard_name(&file_name) {
        Some((prefix, _, count)) => (1..=count)
            .map(|no| {
                let p = path.with_file_name(crate::split::shard_name(prefix, no, count));
                if p.is_file() { Ok(p) } else { Err(StoreError::Invalid(format!("shard {} of the split model is missing", p.display()))) }
            })
            .collect::<Result<_, _>>()?,
        None => vec![path.to_path_buf()],
    };
    let name = match name {
        Some(n) => normalize_name(n)?,
        None => ModelRef::Url(format!("file:///{file_name}")).default_name(),
    };
    let _guard = store.pull_guard()?;
    let mut layers = Vec::new();
    for f in &files {
        let (digest, size) = store.add_blob_from_file(f, None, reporter)?;
        let filename = f.file_name().map(|x| x.to_string_lossy().into_owned());
        layers.push(Layer { kind: LayerKind::Model, digest, size, filename });
    }
    let manifest = Manifest {
        schema_version: 1,
        name,
        source: Source { kind: "file".into(), reference: path.display().to_string(), revision: None },
        layers,
    };
    store.commit(&manifest)?;
    Ok(manifest)
}
