//! The Ollama registry (Docker registry v2 with Ollama's media types): manifests and blobs.

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::Client;
use serde::{Deserialize, Serialize};

use crate::StoreError;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";

/// A blob reference in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// An Ollama manifest, as the registry serves it and as Ollama stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OllamaManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default = "default_media_type")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

fn default_media_type() -> String {
    MANIFEST_MEDIA_TYPE.to_string()
}

/// `https://host`, or `http://host` when `insecure`.
pub fn base_url(host: &str, insecure: bool) -> String {
    format!("{}://{host}", if insecure { "http" } else { "https" })
}

pub fn blob_url(host: &str, namespace: &str, model: &str, digest: &str, insecure: bool) -> String {
    format!("{}/v2/{namespace}/{model}/blobs/{digest}", base_url(host, insecure))
}

/// Fetches a manifest. A registry that asks for a bearer token (`WWW-Authenticate: Bearer
/// realm=...`) gets an anonymous token request first, as Docker clients do.
pub async fn fetch_manifest(
    client: &Client,
    host: &str,
    namespace: &str,
    model: &str,
    tag: &str,
    insecure: bool,
) -> Result<(OllamaManifest, HeaderMap), StoreError> {
    let url = format!("{}/v2/{namespace}/{model}/manifests/{tag}", base_url(host, insecure));
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_MEDIA_TYPE));
    let http = |e: reqwest::Error| StoreError::Http {
        url: url.clone(),
        reason: format!("{e}{}", if insecure { "" } else { " (for a registry without TLS add --insecure)" }),
    };
    let mut resp = client.get(&url).headers(headers.clone()).send().await.map_err(http)?;
    if resp.status().as_u16() == 401 {
        if let Some(token) = bearer_token(client, resp.headers()).await {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                headers.insert(AUTHORIZATION, v);
            }
            resp = client.get(&url).headers(headers.clone()).send().await.map_err(http)?;
        }
    }
    let status = resp.status().as_u16();
    match status {
        200 => {}
        404 => {
            return Err(StoreError::RemoteNotFound {
                what: format!("model {namespace}/{model}:{tag}"),
                url,
                available: Vec::new(),
            })
        }
        401 | 403 => {
            return Err(StoreError::Unauthorized {
                url,
                status,
                hint: "the registry refused access to this model".into(),
            })
        }
        _ => return Err(StoreError::Http { url, reason: format!("the registry answered {status}") }),
    }
    let manifest: OllamaManifest = resp
        .json()
        .await
        .map_err(|e| StoreError::Http { url: url.clone(), reason: format!("not an Ollama manifest: {e}") })?;
    // Blob requests carry the same token.
    headers.remove(ACCEPT);
    Ok((manifest, headers))
}

async fn bearer_token(client: &Client, headers: &HeaderMap) -> Option<String> {
    let challenge = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let params = challenge.strip_prefix("Bearer ")?;
    let mut realm = None;
    let mut query = Vec::new();
    for part in params.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim_matches('"');
        if k == "realm" {
            realm = Some(v.to_string());
        } else {
            query.push((k.to_string(), v.to_string()));
        }
    }
    #[derive(Deserialize)]
    struct Token {
        token: Option<String>,
        access_token: Option<String>,
    }
    let t: Token = client.get(realm?).query(&query).send().await.ok()?.json().await.ok()?;
    t.token.or(t.access_token)
}
