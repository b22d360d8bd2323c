//! The Hugging Face side: repositories, their files, the tree listing and its pages.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::util::{git_blob_oid, hex, sha1_hex, sha256_hex};

/// A file in a Hugging Face repository, as [`crate::Fixture::add_hf_file`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfFile {
    /// `user/repo`.
    pub repo: String,
    /// The path in the repository.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// The sha256 of its bytes (hex): `lfs.oid` in listings and `X-Linked-Etag` for LFS files.
    pub sha256: String,
    /// The git blob id (40 hex): of the bytes for a plain file (its `ETag`), of the LFS pointer
    /// for an LFS file. `oid` in listings.
    pub git_oid: String,
    /// Stored with LFS: `resolve` redirects to the CDN.
    pub lfs: bool,
    /// The repository's commit after this file was added (40 hex, `X-Repo-Commit`).
    pub commit: String,
}

/// A repository.
#[derive(Debug, Default)]
pub(crate) struct HfRepo {
    /// Its files by path.
    pub(crate) files: BTreeMap<String, HfEntry>,
    /// The token a private repository wants as `Authorization: Bearer`; `None` when public.
    pub(crate) token: Option<String>,
    /// The commit `main` points at; changes with every file added or removed.
    pub(crate) commit: String,
}

/// A file's bytes and ids.
#[derive(Debug, Clone)]
pub(crate) struct HfEntry {
    pub(crate) content: Bytes,
    pub(crate) sha256: String,
    pub(crate) git_oid: String,
    pub(crate) lfs: bool,
    pub(crate) pointer_size: u64,
}

/// The text of the git-lfs pointer file for a blob.
fn lfs_pointer(sha256: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// Whether a path is stored with LFS unless said otherwise (weights and archives, as the Hub's
/// default `.gitattributes` has it).
pub(crate) fn lfs_by_default(path: &str) -> bool {
    const LFS: &[&str] = &[
        ".gguf",
        ".bin",
        ".safetensors",
        ".pt",
        ".pth",
        ".ckpt",
        ".onnx",
        ".h5",
        ".msgpack",
        ".zip",
        ".tar",
        ".gz",
        ".npz",
    ];
    let lower = path.to_ascii_lowercase();
    LFS.iter().any(|ext| lower.ends_with(ext))
}

impl HfEntry {
    pub(crate) fn new(content: Bytes, lfs: bool) -> HfEntry {
        let sha256 = sha256_hex(&content);
        let (git_oid, pointer_size) = if lfs {
            let pointer = lfs_pointer(&sha256, content.len() as u64);
            (git_blob_oid(pointer.as_bytes()), pointer.len() as u64)
        } else {
            (git_blob_oid(&content), 0)
        };
        HfEntry {
            content,
            sha256,
            git_oid,
            lfs,
            pointer_size,
        }
    }

    fn json(&self, path: &str) -> Value {
        let mut v = json!({
            "type": "file",
            "oid": self.git_oid,
            "size": self.content.len(),
            "path": path,
        });
        if self.lfs {
            v["lfs"] = json!({
                "oid": self.sha256,
                "size": self.content.len(),
                "pointerSize": self.pointer_size,
            });
        }
        v
    }
}

impl HfRepo {
    /// Recomputes the commit from the repository's name and content, so that it changes with
    /// every change and is the same for the same content.
    pub(crate) fn recommit(&mut self, name: &str) {
        let mut text = format!("{name}\n");
        for (path, e) in &self.files {
            text.push_str(&format!("{path} {} {}\n", e.git_oid, e.sha256));
        }
        self.commit = sha1_hex(text.as_bytes());
    }

    /// Whether `rev` names the current revision: `main` or the commit.
    pub(crate) fn knows_rev(&self, rev: &str) -> bool {
        rev == "main" || rev.eq_ignore_ascii_case(&self.commit)
    }

    /// All directories implied by the file paths.
    fn dirs(&self) -> BTreeSet<String> {
        let mut dirs = BTreeSet::new();
        for path in self.files.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                dirs.insert(parent.to_string());
                p = parent;
            }
        }
        dirs
    }

    /// The tree listing of directory `dir` (`""` for the root), sorted by path, or `None` when
    /// `dir` is not a directory.
    pub(crate) fn tree(&self, dir: &str, recursive: bool) -> Option<Vec<Value>> {
        let dir = dir.trim_matches('/');
        let dirs = self.dirs();
        if !dir.is_empty() && !dirs.contains(dir) {
            return None;
        }
        let under = |p: &str| {
            if dir.is_empty() {
                true
            } else {
                p.strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            }
        };
        let parent = |p: &str| {
            p.rsplit_once('/')
                .map_or("", |(parent, _)| parent)
                .to_string()
        };
        let wanted = |p: &str| under(p) && (recursive || parent(p) == dir);
        let mut entries: Vec<(String, Value)> = Vec::new();
        for d in dirs.iter().filter(|d| wanted(d)) {
            let oid = sha1_hex(format!("tree {}\n{d}", self.commit).as_bytes());
            entries.push((
                d.clone(),
                json!({"type": "directory", "oid": oid, "size": 0, "path": d}),
            ));
        }
        for (p, e) in self.files.iter().filter(|(p, _)| wanted(p)) {
            entries.push((p.clone(), e.json(p)));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Some(entries.into_iter().map(|(_, v)| v).collect())
    }

    /// `GET /api/models/{repo}/revision/{rev}` (and `/api/models/{repo}`): the model info with
    /// its siblings; sizes and LFS data only with `blobs=true`.
    pub(crate) fn info(&self, name: &str, blobs: bool) -> Value {
        let siblings: Vec<Value> = self
            .files
            .iter()
            .map(|(p, e)| {
                let mut v = json!({ "rfilename": p });
                if blobs {
                    v["size"] = json!(e.content.len());
                    v["blobId"] = json!(e.git_oid);
                    if e.lfs {
                        v["lfs"] = json!({
                            "sha256": e.sha256,
                            "size": e.content.len(),
                            "pointerSize": e.pointer_size,
                        });
                    }
                }
                v
            })
            .collect();
        let author = name.split_once('/').map_or(name, |(u, _)| u);
        json!({
            "_id": &self.commit[..24],
            "id": name,
            "modelId": name,
            "author": author,
            "sha": self.commit,
            "private": self.token.is_some(),
            "gated": false,
            "disabled": false,
            "tags": ["gguf"],
            "siblings": siblings,
        })
    }

    /// `GET /api/models/{repo}/refs`.
    pub(crate) fn refs(&self) -> Value {
        json!({
            "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": self.commit}],
            "converts": [],
            "tags": [],
        })
    }
}

/// An opaque pagination cursor for offset `n` (hex of `offset:n`, like the Hub's base64 blobs).
pub(crate) fn encode_cursor(n: usize) -> String {
    hex(format!("offset:{n}").as_bytes())
}

/// The offset in a cursor from [`encode_cursor`], if it is one.
pub(crate) fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes: Option<Vec<u8>> = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [h, l] => Some(((*h as char).to_digit(16)? * 16 + (*l as char).to_digit(16)?) as u8),
            _ => None,
        })
        .collect();
    String::from_utf8(bytes?)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[&str]) -> HfRepo {
        let mut r = HfRepo::default();
        for f in files {
            r.files.insert(
                f.to_string(),
                HfEntry::new(Bytes::from_static(b"x"), lfs_by_default(f)),
            );
        }
        r.recommit("u/r");
        r
    }

    fn paths(v: &[Value]) -> Vec<String> {
        v.iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["type"].as_str().unwrap(),
                    e["path"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn tree_listing() {
        let r = repo(&["a.gguf", "README.md", "sub/b.gguf", "sub/deep/c.txt"]);
        assert_eq!(
            paths(&r.tree("", false).unwrap()),
            ["file:README.md", "file:a.gguf", "directory:sub"]
        );
        assert_eq!(
            paths(&r.tree("", true).unwrap()),
            [
                "file:README.md",
                "file:a.gguf",
                "directory:sub",
                "file:sub/b.gguf",
                "directory:sub/deep",
                "file:sub/deep/c.txt"
            ]
        );
        assert_eq!(
            paths(&r.tree("sub", false).unwrap()),
            ["file:sub/b.gguf", "directory:sub/deep"]
        );
        assert!(r.tree("nope", true).is_none());
        assert!(r.tree("a.gguf", true).is_none());
        let all = r.tree("", true).unwrap();
        let gguf = all.iter().find(|e| e["path"] == "a.gguf").unwrap();
        assert_eq!(gguf["lfs"]["oid"], sha256_hex(b"x"));
        assert!(gguf["lfs"]["pointerSize"].as_u64().unwrap() > 100);
        let readme = all.iter().find(|e| e["path"] == "README.md").unwrap();
        assert!(readme.get("lfs").is_none());
        assert_eq!(readme["oid"], git_blob_oid(b"x"));
    }

    #[test]
    fn cursors_round_trip() {
        for n in [0, 2, 1000] {
            assert_eq!(decode_cursor(&encode_cursor(n)), Some(n));
        }
        for bad in ["", "zz", "abc", "6f", "é1"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn lfs_pointer_size_is_the_usual() {
        // The Hub reports 134 for files of 100 MB to 1 GB; the pointer grows with the size.
        let sha = "a".repeat(64);
        assert_eq!(lfs_pointer(&sha, 123_456_789).len(), 134);
    }
}
