//! The Hugging Face Hub: listing a repo's files, picking the GGUF a quantization tag names,
//! resolve URLs, tokens, and the local Hugging Face cache.

use std::path::PathBuf;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LINK};
use reqwest::Client;
use serde::Deserialize;

use crate::split::parse_shard_name;
use crate::StoreError;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// `HF_ENDPOINT`, else huggingface.co.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

fn hf_home() -> PathBuf {
    if let Some(h) = std::env::var_os("HF_HOME") {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| crate::store::home().join(".cache"));
    cache.join("huggingface")
}

/// `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, then the file `$HF_HOME/token`.
pub fn token() -> Option<String> {
    for var in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Ok(t) = std::env::var(var) {
            if !t.trim().is_empty() {
                return Some(t.trim().to_string());
            }
        }
    }
    std::fs::read_to_string(hf_home().join("token")).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The hub cache: `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`.
pub fn cache_dir() -> PathBuf {
    for var in ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"] {
        if let Some(p) = std::env::var_os(var) {
            return PathBuf::from(p);
        }
    }
    hf_home().join("hub")
}

/// The blob a repo's file would have in the Hugging Face cache, if it is there.
pub fn cached_blob(repo: &str, sha256: &str, size: u64) -> Option<PathBuf> {
    let p = cache_dir().join(format!("models--{}", repo.replace('/', "--"))).join("blobs").join(sha256);
    let meta = std::fs::metadata(&p).ok()?;
    (meta.is_file() && meta.len() == size).then_some(p)
}

pub(crate) fn auth_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(t) = token() {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
            h.insert(AUTHORIZATION, v);
        }
    }
    h
}

/// A file in a repo, as the tree API lists it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RepoFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Lfs {
    /// The sha256 of the content.
    pub oid: String,
    pub size: u64,
}

impl RepoFile {
    pub fn sha256(&self) -> Option<&str> {
        self.lfs.as_ref().map(|l| l.oid.as_str())
    }
    pub fn real_size(&self) -> u64 {
        self.lfs.as_ref().map_or(self.size, |l| l.size)
    }
}

/// Lists every file of `repo` at `rev`, following pagination.
pub async fn list_files(client: &Client, repo: &str, rev: &str) -> Result<Vec<RepoFile>, StoreError> {
    let base = endpoint();
    let mut url = format!("{base}/api/models/{repo}/tree/{rev}?recursive=true");
    let mut out = Vec::new();
    for _page in 0..10_000 {
        let resp = client
            .get(&url)
            .headers(auth_headers())
            .send()
            .await
            .map_err(|e| StoreError::Http { url: url.clone(), reason: e.to_string() })?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            401 | 403 => {
                let hint = if token().is_some() {
                    "the repository is private or gated and your token (HF_TOKEN) has no access to it".to_string()
                } else {
                    "the repository does not exist, or is private or gated: set HF_TOKEN to a token with access".to_string()
                };
                return Err(StoreError::Unauthorized { url, status, hint });
            }
            404 => return Err(StoreError::RemoteNotFound { what: format!("repository {repo}"), url, available: Vec::new() }),
            _ => return Err(StoreError::Http { url, reason: format!("the Hub answered {status}") }),
        }
        let next = resp
            .headers()
            .get(LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link)
            .map(|n| if n.starts_with('/') { format!("{base}{n}") } else { n });
        let page: Vec<RepoFile> = resp
            .json()
            .await
            .map_err(|e| StoreError::Http { url: url.clone(), reason: format!("unexpected listing: {e}") })?;
        out.extend(page.into_iter().filter(|f| f.kind == "file"));
        match next {
            Some(n) => url = n,
            None => return Ok(out),
        }
    }
    Err(StoreError::Http { url, reason: "the listing never ends".into() })
}

/// The `rel="next"` URL of an RFC 5988 Link header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next")
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

/// The files a reference means: a quantization tag picks like llama.cpp's `-hf` does
/// (case-insensitive `<tag>` followed by `.` or `-`; no tag: Q4_K_M, then Q8_0, then the first
/// GGUF; `mmproj` and `imatrix` files skipped; all shards of a split model, in order).
pub fn select<'a>(files: &'a [RepoFile], quant: Option<&str>, file: Option<&str>) -> Result<Vec<&'a RepoFile>, String> {
    let ggufs: Vec<&RepoFile> = files
        .iter()
        .filter(|f| {
            let lower = f.path.to_ascii_lowercase();
            lower.ends_with(".gguf") && !lower.contains("mmproj") && !lower.contains("imatrix")
        })
        .collect();
    let chosen: &RepoFile = if let Some(file) = file {
        files.iter().find(|f| f.path == file).ok_or_else(|| format!("no file {file:?}"))?
    } else {
        let find = |tag: &str| {
            let re = regex::Regex::new(&format!("(?i){}[.-]", regex::escape(tag))).expect("escaped regex");
            ggufs.iter().copied().find(|f| re.is_match(f.path.rsplit('/').next().unwrap_or(&f.path)))
        };
        match quant {
            Some(q) => find(q).ok_or_else(|| format!("no GGUF file matches the quantization {q:?}"))?,
            None => find("Q4_K_M").or_else(|| find("Q8_0")).or_else(|| ggufs.first().copied()).ok_or("the repository has no GGUF file")?,
        }
    };
    match parse_shard_name(&chosen.path) {
        Some((prefix, _, count)) => {
            let mut shards = Vec::new();
            for no in 1..=count {
                let name = crate::split::shard_name(prefix, no, count);
                let f = files.iter().find(|f| f.path == name).ok_or_else(|| format!("shard {name} of the split model is missing"))?;
                shards.push(f);
            }
            Ok(shards)
        }
        None => Ok(vec![chosen]),
    }
}

/// Names of the quantizations a repo offers, for "not found" messages.
pub fn available(files: &[RepoFile]) -> Vec<String> {
    let re = regex::Regex::new(r"(?i)[-.]((?:I?Q\d[A-Z0-9_]*)|F16|BF16|F32)(?:[-.])").expect("valid regex");
    let mut out: Vec<String> = files
        .iter()
        .filter(|f| f.path.to_ascii_lowercase().ends_with(".gguf"))
        .filter_map(|f| re.captures(&f.path).map(|c| c[1].to_string()))
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        out = files.iter().filter(|f| f.path.ends_with(".gguf")).map(|f| f.path.clone()).collect();
    }
    out
}

/// The download URL of a file.
pub fn resolve_url(repo: &str, rev: &str, path: &str) -> String {
    format!("{}/{repo}/resolve/{rev}/{path}", endpoint())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> RepoFile {
        RepoFile { kind: "file".into(), path: path.into(), size: 1, lfs: None }
    }

    #[test]
    fn picks_like_llama_cpp() {
        let files = vec![
            f("README.md"),
            f("model-Q2_K.gguf"),
            f("model-Q8_0.gguf"),
            f("model-Q4_K_M.gguf"),
            f("mmproj-model-Q4_K_M.gguf"),
            f("big/model-Q6_K-00002-of-00002.gguf"),
            f("big/model-Q6_K-00001-of-00002.gguf"),
        ];
        let paths = |v: Vec<&RepoFile>| v.into_iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(select(&files, None, None).unwrap()), ["model-Q4_K_M.gguf"]);
        assert_eq!(paths(select(&files, Some("q8_0"), None).unwrap()), ["model-Q8_0.gguf"]);
        assert_eq!(
            paths(select(&files, Some("Q6_K"), None).unwrap()),
            ["big/model-Q6_K-00001-of-00002.gguf", "big/model-Q6_K-00002-of-00002.gguf"]
        );
        assert_eq!(paths(select(&files, None, Some("model-Q2_K.gguf")).unwrap()), ["model-Q2_K.gguf"]);
        assert!(select(&files, Some("Q5_K_S"), None).unwrap_err().contains("Q5_K_S"));
        let no_default = vec![f("a-Q2_K.gguf"), f("a-Q3_K.gguf")];
        assert_eq!(paths(select(&no_default, None, None).unwrap()), ["a-Q2_K.gguf"]);
        let missing_shard = vec![f("m-00001-of-00002.gguf")];
        assert!(select(&missing_shard, None, None).unwrap_err().contains("missing"));
        assert_eq!(available(&files), ["Q2_K", "Q4_K_M", "Q6_K", "Q8_0"]);
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"<https://h/api/models/a/b/tree/main?cursor=x>; rel="next""#).as_deref(),
            Some("https://h/api/models/a/b/tree/main?cursor=x")
        );
        assert_eq!(next_link(r#"<https://h/p>; rel="prev""#), None);
    }
}
