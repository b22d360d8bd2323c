//! GGUF headers of remote models, read with HTTP Range requests: the metadata and tensor list
//! of a model (a few MB) without its weights, so `hearth fit` can answer before a download.

use reqwest::header::{HeaderMap, CONTENT_RANGE, RANGE};
use reqwest::Client;

use crate::reference::ModelRef;
use crate::{hf, registry, StoreError};

/// The most header bytes read before giving up (a header is rarely over 20 MB).
const MAX_HEADER: u64 = 256 << 20;

/// The header of the GGUF at `url`: reads the first 2 MiB, then more while the header runs past
/// what was read. Returns the header and the bytes read.
pub async fn header(client: &Client, url: &str, headers: &HeaderMap) -> Result<(hearth_gguf::Gguf, u64), StoreError> {
    let mut want: u64 = 2 << 20;
    let mut read_total = 0u64;
    loop {
        let resp = client
            .get(url)
            .headers(headers.clone())
            .header(RANGE, format!("bytes=0-{}", want - 1))
            .send()
            .await
            .map_err(|e| StoreError::Http { url: url.to_string(), reason: e.to_string() })?;
        let status = resp.status().as_u16();
        let total = match status {
            206 => resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|t| t.parse::<u64>().ok()),
            200 => resp.content_length(),
            401 | 403 => {
                return Err(StoreError::Unauthorized { url: url.to_string(), status, hint: "set HF_TOKEN for private or gated repos".into() })
            }
            404 => return Err(StoreError::RemoteNotFound { what: "file".into(), url: url.to_string(), available: Vec::new() }),
            _ => return Err(StoreError::Http { url: url.to_string(), reason: format!("answered {status}") }),
        };
        // Read at most `want` bytes, even from a server that ignores Range.
        let mut buf = Vec::with_capacity(want as usize);
        let mut stream = resp.bytes_stream();
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StoreError::Http { url: url.to_string(), reason: e.to_string() })?;
            let room = (want as usize).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if buf.len() as u64 >= want {
                break;
            }
        }
        drop(stream);
        read_total += buf.len() as u64;
        let total = total.unwrap_or(buf.len() as u64);
        match hearth_gguf::Gguf::read(&buf[..], Some(total)) {
            Ok(g) => return Ok((g, read_total)),
            Err(hearth_gguf::GgufError::Truncated { offset, needed, .. }) if (buf.len() as u64) < total => {
                let next = (offset + needed + (1 << 20)).max(want * 2).min(total);
                if next > MAX_HEADER {
                    return Err(StoreError::Invalid(format!("{url}: the GGUF header is larger than {} MiB", MAX_HEADER >> 20)));
                }
                want = next;
            }
            Err(e) => return Err(StoreError::Invalid(format!("{url} is not a usable GGUF model: {e}"))),
        }
    }
}

/// The headers of every file of the model `reference` (a Hugging Face repo and quantization, an
/// Ollama registry model, a URL), and the bytes read to get them.
pub async fn headers(reference: &str, insecure: bool) -> Result<(Vec<hearth_gguf::Gguf>, u64), StoreError> {
    let client = crate::download::client();
    let mut out = Vec::new();
    let mut bytes = 0;
    match ModelRef::parse(reference)? {
        ModelRef::HuggingFace { repo, quant, file } => {
            let files = hf::list_files(&client, &repo, "main").await?;
            let chosen = hf::select(&files, quant.as_deref(), file.as_deref()).map_err(|why| StoreError::RemoteNotFound {
                what: format!("{why} in {repo}"),
                url: format!("{}/{repo}", hf::endpoint()),
                available: hf::available(&files),
            })?;
            for f in chosen {
                let (g, n) = header(&client, &hf::resolve_url(&repo, "main", &f.path), &hf::auth_headers()).await?;
                out.push(g);
                bytes += n;
            }
        }
        ModelRef::Ollama { host, namespace, model, tag } => {
            let (m, h) = registry::fetch_manifest(&client, &host, &namespace, &model, &tag, insecure).await?;
            let layer = m
                .layers
                .iter()
                .find(|l| l.media_type == crate::LayerKind::Model.ollama_media_type())
                .ok_or_else(|| StoreError::Invalid(format!("{reference} has no model layer")))?;
            let (g, n) = header(&client, &registry::blob_url(&host, &namespace, &model, &layer.digest, insecure), &h).await?;
            out.push(g);
            bytes += n;
        }
        ModelRef::Url(url) => {
            let (g, n) = header(&client, &url, &HeaderMap::new()).await?;
            out.push(g);
            bytes += n;
        }
    }
    Ok((out, bytes))
}
