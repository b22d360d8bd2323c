//! Model references: what the user typed after `hearth pull`, parsed into a source.
//!
//! - `hf.co/USER/REPO[:QUANT]`, `huggingface.co/USER/REPO[:QUANT]`: a Hugging Face repo, the
//!   quantization picked as llama.cpp's `-hf` does;
//! - `hf.co/USER/REPO/PATH/FILE.gguf`: one file of a Hugging Face repo;
//! - `NAME[:TAG]`, `NS/NAME[:TAG]`, `ollama.com/library/NAME:TAG`, `registry.ollama.ai/...`,
//!   `HOST[:PORT]/NS/NAME[:TAG]`: an Ollama registry;
//! - `https://…/file.gguf`: a plain URL.
//!
//! Local model names (`name:tag`, `hf.co/user/repo:quant`) follow the same rules as Ollama's:
//! path components of letters, digits, `.`, `_` and `-`, a tag after the last `:`.

use std::fmt;

use crate::StoreError;

/// The Ollama registry that plain names refer to.
pub const OLLAMA_REGISTRY: &str = "registry.ollama.ai";

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    HuggingFace {
        /// `user/repo`
        repo: String,
        /// A quantization tag such as `Q4_K_M`, matched case-insensitively.
        quant: Option<String>,
        /// A file path inside the repo, instead of a quantization.
        file: Option<String>,
    },
    Ollama {
        /// Registry host, with a port when one was given.
        host: String,
        namespace: String,
        model: String,
        tag: String,
    },
    Url(String),
}

impl ModelRef {
    /// Parses a reference as `hearth pull` takes it.
    pub fn parse(input: &str) -> Result<ModelRef, StoreError> {
        let bad = |why: &str| StoreError::BadReference {
            reference: input.to_string(),
            reason: why.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let rest = s.split_once("://").map(|x| x.1).unwrap_or("");
            if rest.is_empty() || !rest.contains('/') {
                return Err(bad("a URL needs a host and a path to a .gguf file"));
            }
            return Ok(ModelRef::Url(s.to_string()));
        }
        if s.contains("..") || s.starts_with('/') || s.contains('\\') || s.contains("//") {
            return Err(bad("it contains '..', '//', '\\' or starts with '/' (for a local file use `hearth add PATH`)"));
        }
        let lower = s.to_ascii_lowercase();
        for prefix in ["hf.co/", "huggingface.co/"] {
            if let Some(rest) = lower.strip_prefix(prefix).map(|_| &s[prefix.len()..]) {
                return parse_hf(rest).map_err(|why| bad(&why));
            }
        }
        if lower == "hf.co" || lower == "huggingface.co" {
            return Err(bad("expected hf.co/USER/REPO[:QUANT]"));
        }
        parse_ollama(s).map_err(|why| bad(&why))
    }

    /// The name the model gets in the store when pulled by this reference.
    pub fn default_name(&self) -> String {
        match self {
            ModelRef::HuggingFace { repo, quant, file } => {
                let tag = match (quant, file) {
                    (Some(q), _) => q.clone(),
                    (None, Some(f)) => file_stem(f).to_string(),
                    (None, None) => "latest".into(),
                };
                format!("hf.co/{repo}:{tag}")
            }
            ModelRef::Ollama { host, namespace, model, tag } => ollama_name(host, namespace, model, tag),
            ModelRef::Url(url) => {
                let file = url.rsplit('/').next().unwrap_or("model");
                let file = file.split(['?', '#']).next().unwrap_or(file);
                format!("{}:latest", sanitize(split_stem(file_stem(file))))
            }
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::HuggingFace { repo, quant: Some(q), .. } => write!(f, "hf.co/{repo}:{q}"),
            ModelRef::HuggingFace { repo, file: Some(p), .. } => write!(f, "hf.co/{repo}/{p}"),
            ModelRef::HuggingFace { repo, .. } => write!(f, "hf.co/{repo}"),
            ModelRef::Ollama { host, namespace, model, tag } => write!(f, "{host}/{namespace}/{model}:{tag}"),
            ModelRef::Url(u) => f.write_str(u),
        }
    }
}

/// The name Ollama shows for a registry model: `model:tag` for the library, `ns/model:tag`
/// elsewhere on the default registry, `host/ns/model:tag` on another one.
pub fn ollama_name(host: &str, namespace: &str, model: &str, tag: &str) -> String {
    if host == OLLAMA_REGISTRY && namespace == "library" {
        format!("{model}:{tag}")
    } else if host == OLLAMA_REGISTRY {
        format!("{namespace}/{model}:{tag}")
    } else {
        format!("{host}/{namespace}/{model}:{tag}")
    }
}

fn parse_hf(rest: &str) -> Result<ModelRef, String> {
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 2 || parts[0].is_empty() || parts[1].is_empty() {
        return Err("expected hf.co/USER/REPO[:QUANT] or hf.co/USER/REPO/FILE.gguf".into());
    }
    let user = parts[0];
    check_component(user)?;
    if parts.len() == 2 {
        let (repo, quant) = match parts[1].split_once(':') {
            Some((r, q)) => {
                if q.is_empty() || q.contains(':') {
                    return Err("the quantization after ':' is empty or has another ':'".into());
                }
                check_component(q)?;
                (r, Some(q.to_string()))
            }
            None => (parts[1], None),
        };
        check_component(repo)?;
        return Ok(ModelRef::HuggingFace { repo: format!("{user}/{repo}"), quant, file: None });
    }
    let repo = parts[1];
    check_component(repo)?;
    let file = parts[2..].join("/");
    for c in &parts[2..] {
        check_component(c)?;
    }
    if !file.to_ascii_lowercase().ends_with(".gguf") {
        return Err(format!("{file:?} is not a .gguf file"));
    }
    Ok(ModelRef::HuggingFace { repo: format!("{user}/{repo}"), quant: None, file: Some(file) })
}

fn parse_ollama(s: &str) -> Result<ModelRef, String> {
    // The tag is after the last ':' of the last path component (a host may have a port).
    let (path, tag) = match s.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((m, t)) => (format!("{head}/{m}"), t.to_string()),
            None => (s.to_string(), "latest".to_string()),
        },
        None => match s.split_once(':') {
            Some((m, t)) => (m.to_string(), t.to_string()),
            None => (s.to_string(), "latest".to_string()),
        },
    };
    if tag.is_empty() || tag.contains(':') {
        return Err("expected NAME[:TAG] with one ':' before the tag".into());
    }
    check_component(&tag)?;
    let parts: Vec<&str> = path.split('/').collect();
    let (host, namespace, model) = match parts.as_slice() {
        [m] => (OLLAMA_REGISTRY.to_string(), "library".to_string(), m.to_string()),
        [ns, m] => (OLLAMA_REGISTRY.to_string(), ns.to_string(), m.to_string()),
        [h, ns, m] => {
            let host = match h.to_ascii_lowercase().as_str() {
                "ollama.com" | "www.ollama.com" | "registry.ollama.com" => OLLAMA_REGISTRY.to_string(),
                _ => h.to_string(),
            };
            (host, ns.to_string(), m.to_string())
        }
        _ => return Err("expected NAME, NAMESPACE/NAME or HOST/NAMESPACE/NAME".into()),
    };
    check_host(&host)?;
    check_component(&namespace)?;
    check_component(&model)?;
    Ok(ModelRef::Ollama { host, namespace, model: model.to_ascii_lowercase(), tag })
}

/// A path component of a name: letters, digits, `.`, `_`, `-`; not starting with `.` or `-`.
fn check_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("a part of the name is empty".into());
    }
    if c.len() > 128 {
        return Err(format!("{c:?} is longer than 128 characters"));
    }
    if c.starts_with('.') || c.starts_with('-') {
        return Err(format!("{c:?} starts with '.' or '-'"));
    }
    if let Some(bad) = c.chars().find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))) {
        return Err(format!("{c:?} contains {bad:?} (letters, digits, '.', '_' and '-' only)"));
    }
    Ok(())
}

fn check_host(h: &str) -> Result<(), String> {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("{p:?} is not a port number"));
        }
    }
    check_component(name)
}

fn file_stem(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".gguf").or_else(|| file.strip_suffix(".GGUF")).unwrap_or(file)
}

/// `name-00001-of-00003` → `name`.
fn split_stem(stem: &str) -> &str {
    match crate::split::parse_shard_name(&format!("{stem}.gguf")) {
        Some((prefix, _, _)) => {
            let len = prefix.len();
            &stem[..len]
        }
        None => stem,
    }
}

fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let out = out.trim_start_matches(['.', '-']).to_string();
    if out.is_empty() { "model".into() } else { out }
}

/// A model's name in the store, normalized once at the edge (`smollm2` → `smollm2:latest`,
/// `hf.co/u/r:Q4` kept as is): what the server and the runtime pass around, so nothing
/// normalizes it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    /// Checks `name` against the store's name rules and normalizes it.
    pub fn parse(name: &str) -> Result<ModelName, StoreError> {
        normalize_name(name).map(ModelName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for ModelName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A local model name, normalised: `name` gets `:latest`; checked like Ollama's names.
pub fn normalize_name(name: &str) -> Result<String, StoreError> {
    let bad = |why: String| StoreError::BadReference { reference: name.to_string(), reason: why };
    let name = name.trim();
    if name.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if name.contains("..") || name.starts_with('/') || name.contains('\\') || name.contains("//") {
        return Err(bad("it contains '..', '//', '\\' or starts with '/'".into()));
    }
    let (path, tag) = match name.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((m, t)) => (format!("{head}/{m}"), t.to_string()),
            None => (name.to_string(), "latest".into()),
        },
        None => match name.split_once(':') {
            Some((m, t)) => (m.to_string(), t.to_string()),
            None => (name.to_string(), "latest".into()),
        },
    };
    if tag.contains(':') {
        return Err(bad("more than one ':'".into()));
    }
    check_component(&tag).map_err(bad)?;
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 4 {
        return Err(bad("too many '/'-separated parts".into()));
    }
    for (i, p) in parts.iter().enumerate() {
        if i == 0 && parts.len() > 1 {
            check_host(p).map_err(bad)?;
        } else {
            check_component(p).map_err(bad)?;
        }
    }
    Ok(format!("{path}:{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(repo: &str, quant: Option<&str>, file: Option<&str>) -> ModelRef {
        ModelRef::HuggingFace { repo: repo.into(), quant: quant.map(Into::into), file: file.map(Into::into) }
    }

    fn ol(host: &str, ns: &str, m: &str, t: &str) -> ModelRef {
        ModelRef::Ollama { host: host.into(), namespace: ns.into(), model: m.into(), tag: t.into() }
    }

    #[test]
    fn parses_every_kind_of_reference() {
        let cases = [
            ("hf.co/bartowski/SmolLM2-GGUF:Q4_K_M", hf("bartowski/SmolLM2-GGUF", Some("Q4_K_M"), None)),
            ("huggingface.co/u/r", hf("u/r", None, None)),
            ("HF.co/u/r:q8_0", hf("u/r", Some("q8_0"), None)),
            ("hf.co/u/r/sub/model-Q4_K_M.gguf", hf("u/r", None, Some("sub/model-Q4_K_M.gguf"))),
            ("smollm2", ol(OLLAMA_REGISTRY, "library", "smollm2", "latest")),
            ("smollm2:135m", ol(OLLAMA_REGISTRY, "library", "smollm2", "135m")),
            ("jmorgan/model:v1", ol(OLLAMA_REGISTRY, "jmorgan", "model", "v1")),
            ("ollama.com/library/qwen3:8b", ol(OLLAMA_REGISTRY, "library", "qwen3", "8b")),
            ("registry.ollama.ai/library/qwen3:8b", ol(OLLAMA_REGISTRY, "library", "qwen3", "8b")),
            ("127.0.0.1:5000/ns/m:t", ol("127.0.0.1:5000", "ns", "m", "t")),
            ("localhost:8080/library/x", ol("localhost:8080", "library", "x", "latest")),
            ("https://example.com/a/b.gguf", ModelRef::Url("https://example.com/a/b.gguf".into())),
        ];
        for (input, want) in cases {
            assert_eq!(ModelRef::parse(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn bad_references_say_why() {
        for (input, why) in [
            ("hf.co/", "expected hf.co/USER/REPO"),
            ("hf.co/user", "expected hf.co/USER/REPO"),
            ("a:b:c", "one ':'"),
            ("../../etc", ".."),
            ("/etc/passwd", "starts with '/'"),
            ("model:", "one ':'"),
            ("hf.co/u/r/notes.txt", "not a .gguf file"),
            ("hf.co/u/r:", "empty"),
            ("na me", "contains ' '"),
            ("a/b/c/d", "expected NAME"),
            ("host:99999/ns/m", "not a port"),
            ("", "empty"),
            ("https://", "needs a host"),
        ] {
            let err = ModelRef::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn default_names() {
        assert_eq!(ModelRef::parse("smollm2").unwrap().default_name(), "smollm2:latest");
        assert_eq!(ModelRef::parse("ns/m:t").unwrap().default_name(), "ns/m:t");
        assert_eq!(ModelRef::parse("localhost:1/ns/m:t").unwrap().default_name(), "localhost:1/ns/m:t");
        assert_eq!(ModelRef::parse("hf.co/u/r:Q4_K_M").unwrap().default_name(), "hf.co/u/r:Q4_K_M");
        assert_eq!(ModelRef::parse("hf.co/u/r").unwrap().default_name(), "hf.co/u/r:latest");
        assert_eq!(
            ModelRef::parse("https://h/x/My Model-00001-of-00002.gguf?x=1").unwrap().default_name(),
            "my-model:latest"
        );
    }

    #[test]
    fn names_normalise() {
        assert_eq!(normalize_name("smollm2").unwrap(), "smollm2:latest");
        assert_eq!(normalize_name("hf.co/u/r:Q4").unwrap(), "hf.co/u/r:Q4");
        assert_eq!(normalize_name("localhost:1/ns/m").unwrap(), "localhost:1/ns/m:latest");
        assert!(normalize_name("../x").is_err());
        assert!(normalize_name("a:b:c").is_err());
    }
}
