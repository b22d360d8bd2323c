//! The config file: `$HEARTH_CONFIG`, else `~/.hearth/config.toml`. Each key is a hearth
//! environment variable without its `HEARTH_` prefix, in lower case:
//!
//! ```toml
//! workers = ["10.0.0.2:50052", "10.0.0.3:50052"]
//! cluster_token = "some-long-shared-secret"
//! host = "0.0.0.0:11434"
//! memory_budget = "100G"
//! ```
//!
//! The file gives defaults only: a variable already set in the environment wins, and a flag
//! wins over both (clap reads the variables the file set). Lists become comma-separated values.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// The keys the file may set, each the `HEARTH_` variable of the same name.
const KEYS: &[&str] = &[
    "api_key",
    "cluster_token",
    "context_length",
    "db",
    "host",
    "keep_alive",
    "log",
    "max_loaded_models",
    "max_queue",
    "memory_budget",
    "models",
    "num_parallel",
    "origins",
    "pull_connections",
    "pull_retries",
    "stall_timeout",
    "workers",
];

fn path() -> Option<PathBuf> {
    match std::env::var_os("HEARTH_CONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hearth/config.toml")),
    }
}

/// The variables the file at `text` sets, as (name, value).
fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut out = Vec::new();
    for (key, value) in table {
        if !KEYS.contains(&key.as_str()) {
            bail!("unknown key {key:?} (known: {})", KEYS.join(", "));
        }
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => bail!("{key}: expected a string, a number or a list of them"),
            })
        };
        let text = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>>>()?.join(","),
            v => scalar(v)?,
        };
        out.push((format!("HEARTH_{}", key.to_ascii_uppercase()), text));
    }
    Ok(out)
}

/// Sets the file's variables that the environment does not set already. A missing file is
/// fine; a bad one is an error naming the file.
pub fn apply() -> Result<()> {
    let Some(path) = path() else { return Ok(()) };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("HEARTH_CONFIG").is_none() => return Ok(()),
        Err(e) => bail!("cannot read the config file {}: {e}", path.display()),
    };
    let vars = parse(&text).with_context(|| format!("in the config file {}", path.display()))?;
    for (name, value) in vars {
        if std::env::var_os(&name).is_none() {
            // At the start of main, before any other thread exists.
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_variables() {
        let v = parse("workers = [\"a:1\", \"b:2\"]\ncluster_token = \"s\"\nnum_parallel = 2\n").unwrap();
        assert!(v.contains(&("HEARTH_WORKERS".into(), "a:1,b:2".into())));
        assert!(v.contains(&("HEARTH_CLUSTER_TOKEN".into(), "s".into())));
        assert!(v.contains(&("HEARTH_NUM_PARALLEL".into(), "2".into())));
        let e = parse("wrokers = []").unwrap_err().to_string();
        assert!(e.contains("wrokers") && e.contains("workers"), "{e}");
        assert!(parse("workers = [").is_err());
        assert!(parse("host = { a = 1 }").unwrap_err().to_string().contains("host"));
    }
}
