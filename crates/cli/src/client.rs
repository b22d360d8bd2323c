//! The CLI as a client: when a hearth server answers at `HEARTH_HOST` (default
//! 127.0.0.1:11434), `run`, `list`, `ps`, `pull`, `rm`, `show` and `stop` go through it, as the
//! `ollama` CLI does, so they see the models it has loaded and share its KV caches.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};


pub struct Remote {
    pub base: String,
    key: Option<String>,
}

/// The server at `HEARTH_HOST`, if a hearth server answers there.
pub fn server() -> Option<Remote> {
    let host = crate::env::var(crate::env::HOST).unwrap_or_else(|| "127.0.0.1:11434".into());
    let host = host.trim().trim_end_matches('/');
    let base = if host.starts_with("http://") || host.starts_with("https://") { host.to_string() } else { format!("http://{host}") };
    let resp = ureq::get(&format!("{base}/")).timeout(Duration::from_millis(500)).call().ok()?;
    let body = resp.into_string().ok()?;
    body.starts_with("hearth is running").then(|| Remote { base, key: crate::env::var(crate::env::API_KEY) })
}

impl Remote {
    /// The server at `base` (`http://HOST:PORT`), without checking it.
    pub fn at(base: &str) -> Remote {
        Remote { base: base.trim_end_matches('/').to_string(), key: crate::env::var(crate::env::API_KEY) }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = ureq::request(method, &format!("{}{path}", self.base)).timeout(Duration::from_secs(3600));
        match &self.key {
            Some(k) => r.set("Authorization", &format!("Bearer {k}")),
            None => r,
        }
    }

    fn check(r: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
        match r {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                let msg = body["error"].as_str().map(str::to_string).or_else(|| body["error"]["message"].as_str().map(str::to_string));
                bail!("{}", msg.unwrap_or_else(|| format!("the server answered {code}")))
            }
            Err(e) => bail!("cannot reach the server: {e}"),
        }
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        Self::check(self.request("GET", path).call())?.into_json().context("the server sent invalid JSON")
    }

    pub fn post(&self, path: &str, body: Value) -> Result<ureq::Response> {
        Self::check(self.request("POST", path).send_json(body))
    }

    pub fn delete(&self, path: &str, body: Value) -> Result<()> {
        Self::check(self.request("DELETE", path).send_json(body)).map(drop)
    }

    /// POSTs and reads the NDJSON stream line by line; an `error` line becomes an error.
    pub fn stream(&self, path: &str, body: Value) -> Result<impl Iterator<Item = Result<Value>>> {
        let resp = self.post(path, body)?;
        let lines = BufReader::new(resp.into_reader()).lines();
        Ok(lines.map(|l| {
            let l = l.context("the connection to the server broke")?;
            let v: Value = serde_json::from_str(&l).context("the server sent invalid JSON")?;
            if let Some(e) = v["error"].as_str() {
                bail!("{e}");
            }
            Ok(v)
        }))
    }
}

fn human(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

pub fn list(r: &Remote, json_out: bool) -> Result<()> {
    let v = r.get("/api/tags")?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v["models"])?);
        return Ok(());
    }
    let models = v["models"].as_array().cloned().unwrap_or_default();
    let width = models.iter().filter_map(|m| m["name"].as_str()).map(str::len).max().unwrap_or(4).max(4);
    println!("{:width$}  {:12}  {:>9}  {:8}  {:>8}  MODIFIED", "NAME", "ID", "SIZE", "QUANT", "PARAMS");
    for m in models {
        println!(
            "{:width$}  {:12}  {:>9}  {:8}  {:>8}  {}",
            m["name"].as_str().unwrap_or(""),
            m["digest"].as_str().unwrap_or("").chars().take(12).collect::<String>(),
            human(m["size"].as_u64().unwrap_or(0)),
            m["details"]["quantization_level"].as_str().unwrap_or(""),
            m["details"]["parameter_size"].as_str().unwrap_or(""),
            m["modified_at"].as_str().unwrap_or("").split('.').next().unwrap_or(""),
        );
    }
    Ok(())
}

pub fn ps(r: &Remote) -> Result<()> {
    let v = r.get("/api/ps")?;
    let models = v["models"].as_array().cloned().unwrap_or_default();
    let width = models.iter().filter_map(|m| m["name"].as_str()).map(str::len).max().unwrap_or(4).max(4);
    println!("{:width$}  {:12}  {:>9}  {:15}  {:>7}  UNTIL", "NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT");
    for m in models {
        let size = m["size"].as_u64().unwrap_or(0);
        let vram = m["size_vram"].as_u64().unwrap_or(0).min(size);
        println!(
            "{:width$}  {:12}  {:>9}  {:15}  {:>7}  {}",
            m["name"].as_str().unwrap_or(""),
            m["digest"].as_str().unwrap_or("").chars().take(12).collect::<String>(),
            human(size),
            processor(size, vram),
            m["context_length"].as_u64().unwrap_or(0),
            m["expires_at"].as_str().unwrap_or("").split('.').next().unwrap_or(""),
        );
    }
    Ok(())
}

/// Ollama's PROCESSOR column: where the model's bytes are ("100% GPU", "48%/52% CPU/GPU").
fn processor(size: u64, vram: u64) -> String {
    if size == 0 || vram == 0 {
        return "100% CPU".into();
    }
    let gpu = (vram as f64 * 100.0 / size as f64).round() as u64;
    if gpu >= 100 {
        "100% GPU".into()
    } else {
        format!("{}%/{gpu}% CPU/GPU", 100 - gpu)
    }
}

pub fn stop(r: &Remote, model: &str) -> Result<()> {
    r.post("/api/generate", json!({"model": model, "prompt": "", "keep_alive": 0}))?;
    eprintln!("stopped {model}");
    Ok(())
}

pub fn rm(r: &Remote, models: &[String]) -> Result<()> {
    for m in models {
        r.delete("/api/delete", json!({ "model": m }))?;
        eprintln!("deleted {m}");
    }
    Ok(())
}

pub fn show(r: &Remote, model: &str, json_out: bool) -> Result<()> {
    let resp = r.post("/api/show", json!({ "model": model }))?;
    let v: Value = resp.into_json()?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let info = &v["model_info"];
    let arch = info["general.architecture"].as_str().unwrap_or("?");
    let key = |k: &str| info[format!("{arch}.{k}")].as_u64().map_or("?".into(), |x| x.to_string());
    println!("  Model");
    println!("    architecture        {arch}");
    println!("    parameters          {}", v["details"]["parameter_size"].as_str().unwrap_or("?"));
    println!("    context length      {}", key("context_length"));
    println!("    embedding length    {}", key("embedding_length"));
    println!("    layers              {}", key("block_count"));
    println!("    quantization        {}", v["details"]["quantization_level"].as_str().unwrap_or("?"));
    println!();
    println!("  Capabilities");
    for c in v["capabilities"].as_array().cloned().unwrap_or_default() {
        println!("    {}", c.as_str().unwrap_or(""));
    }
    Ok(())
}

pub fn pull(r: &Remote, reference: &str, insecure: bool) -> Result<()> {
    let mut last_status = String::new();
    for line in r.stream("/api/pull", json!({"model": reference, "insecure": insecure, "stream": true}))? {
        let v = line?;
        let status = v["status"].as_str().unwrap_or("").to_string();
        match (v["total"].as_u64(), v["completed"].as_u64()) {
            (Some(t), Some(c)) if c >= t => eprintln!("{status}: {} done", human(t)),
            (Some(_), Some(_)) => {}
            _ if status != last_status => eprintln!("{status}"),
            _ => {}
        }
        last_status = status;
    }
    Ok(())
}

/// `hearth cluster status`: from the running server (`GET /api/cluster`) when no `--workers`
/// are given, else by asking the workers directly.
pub fn cluster_status(a: crate::args::ClusterStatusArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let v: serde_json::Value = if a.cluster.workers.is_empty() {
        let Some(r) = server() else {
            anyhow::bail!("no workers given and no hearth server answers: pass --workers HOST:PORT,... (or HEARTH_WORKERS), or start `hearth serve --workers ...`");
        };
        match r.request("GET", "/api/cluster").call() {
            Ok(resp) => resp.into_json().context("the server's answer is not JSON")?,
            Err(ureq::Error::Status(404, _)) => anyhow::bail!("the server at {} has no workers (start it with --workers HOST:PORT,...)", r.base),
            Err(e) => anyhow::bail!("cannot ask the server at {}: {e}", r.base),
        }
    } else {
        let cluster = crate::serve::cluster(&a.cluster)?.context("no workers")?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let workers = rt.block_on(cluster.status());
        serde_json::json!({ "workers": workers, "unavailable": [] })
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let gib = |b: u64| format!("{:.1}", b as f64 / (1u64 << 30) as f64);
    println!("{:<22} {:<11} {:<22} {:<18} {:>13} {:>8} {:>5}  {}", "WORKER", "STATE", "VERSION", "DEVICES", "FREE/TOTAL GiB", "RTT ms", "CONN", "MODELS / ERROR");
    for w in v["workers"].as_array().into_iter().flatten() {
        let reachable = w["reachable"].as_bool().unwrap_or(false);
        let devices: Vec<&str> = w["devices"].as_array().into_iter().flatten().filter_map(|d| d["name"].as_str()).collect();
        let version = match (w["hearth_version"].as_str(), w["rpc_version"].as_str()) {
            (Some(h), Some(r)) => format!("{h} (rpc {r})"),
            _ => "-".into(),
        };
        let models: Vec<&str> = w["hosts"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).collect();
        println!(
            "{:<22} {:<11} {:<22} {:<18} {:>13} {:>8} {:>5}  {}",
            w["address"].as_str().unwrap_or("?"),
            if reachable { "reachable" } else { "UNREACHABLE" },
            version,
            if devices.is_empty() { "-".to_string() } else { devices.join(",") },
            format!("{}/{}", gib(w["free"].as_u64().unwrap_or(0)), gib(w["total"].as_u64().unwrap_or(0))),
            w["rtt_ms"].as_f64().map_or("-".into(), |r| format!("{r:.1}")),
            w["connections"].as_u64().unwrap_or(0),
            if reachable { models.join(", ") } else { w["error"].as_str().unwrap_or("").to_string() }
        );
    }
    for u in v["unavailable"].as_array().into_iter().flatten() {
        println!("unavailable: {}: {}", u["model"].as_str().unwrap_or("?"), u["error"].as_str().unwrap_or(""));
    }
    Ok(())
}
