//! Settings from outside the command line: the `HEARTH_*` environment variables (every name
//! is a constant here) and the config file, `$HEARTH_CONFIG`, else `~/.hearth/config.toml`.
//! Each key of the file is a variable's name without its `HEARTH_` prefix, in lower case:
//!
//! ```toml
//! workers = ["10.0.0.2:50052", "10.0.0.3:50052"]
//! cluster_token = "some-long-shared-secret"
//! host = "0.0.0.0:11434"
//! memory_budget = "100G"
//! ```
//!
//! One order everywhere: a flag, then the environment, then the file, then the default. The
//! file never touches the environment: [`load`] reads it once, [`with_file_defaults`] makes
//! its values the defaults of the flags that read the same variable, and [`var`] answers the
//! settings that have no flag.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The config file's path.
pub const CONFIG: &str = "HEARTH_CONFIG";
/// The address `hearth serve` listens on and the other commands look for a server at.
pub const HOST: &str = "HEARTH_HOST";
/// The API key a server requires, and the client sends.
pub const API_KEY: &str = "HEARTH_API_KEY";
/// The model store's directory (read by `Store::default_root`).
pub const MODELS: &str = hearth_store::store::ENV_MODELS;
/// The web page's conversation database.
pub const DB: &str = hearth_server::conversations::ENV_DB;
/// The log filter (tracing's syntax).
pub const LOG: &str = "HEARTH_LOG";
/// Pull settings without a flag default: seconds without data, connections, retries.
pub const STALL_TIMEOUT: &str = "HEARTH_STALL_TIMEOUT";
pub const PULL_CONNECTIONS: &str = "HEARTH_PULL_CONNECTIONS";
pub const PULL_RETRIES: &str = "HEARTH_PULL_RETRIES";
/// Read by clap through the flags that declare them (`env = ...`).
pub const WORKERS: &str = "HEARTH_WORKERS";
pub const CLUSTER_TOKEN: &str = "HEARTH_CLUSTER_TOKEN";
pub const CONTEXT_LENGTH: &str = "HEARTH_CONTEXT_LENGTH";
pub const NUM_PARALLEL: &str = "HEARTH_NUM_PARALLEL";
pub const MAX_QUEUE: &str = "HEARTH_MAX_QUEUE";
pub const MAX_LOADED_MODELS: &str = "HEARTH_MAX_LOADED_MODELS";
pub const MEMORY_BUDGET: &str = "HEARTH_MEMORY_BUDGET";
pub const DEVICE_MEMORY: &str = "HEARTH_DEVICE_MEMORY";
pub const KEEP_ALIVE: &str = "HEARTH_KEEP_ALIVE";
pub const ORIGINS: &str = "HEARTH_ORIGINS";

/// The variables the file may set.
const KEYS: &[&str] = &[
    API_KEY, CLUSTER_TOKEN, CONTEXT_LENGTH, DB, DEVICE_MEMORY, HOST, KEEP_ALIVE, LOG, MAX_LOADED_MODELS, MAX_QUEUE, MEMORY_BUDGET, MODELS,
    NUM_PARALLEL, ORIGINS, PULL_CONNECTIONS, STALL_TIMEOUT, PULL_RETRIES, WORKERS,
];

/// The config file's values, by variable name; read once by [`load`].
static FILE: OnceLock<HashMap<&'static str, String>> = OnceLock::new();

fn path() -> Option<PathBuf> {
    match std::env::var_os(CONFIG) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hearth/config.toml")),
    }
}

/// The variables the file at `text` sets, as (name, value).
fn parse(text: &str) -> Result<Vec<(&'static str, String)>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut out = Vec::new();
    for (key, value) in table {
        let Some(name) = KEYS.iter().find(|k| k.strip_prefix("HEARTH_").is_some_and(|k| k.eq_ignore_ascii_case(&key))) else {
            let known: Vec<String> = KEYS.iter().map(|k| k["HEARTH_".len()..].to_ascii_lowercase()).collect();
            bail!("unknown key {key:?} (known: {})", known.join(", "));
        };
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
        out.push((*name, text));
    }
    Ok(out)
}

/// Reads the config file once. A missing default file is fine; a missing `$HEARTH_CONFIG` or a
/// bad file is an error naming the file.
pub fn load() -> Result<()> {
    let mut values = HashMap::new();
    if let Some(path) = path() {
        match std::fs::read_to_string(&path) {
            Ok(text) => values.extend(parse(&text).with_context(|| format!("in the config file {}", path.display()))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os(CONFIG).is_none() => {}
            Err(e) => bail!("cannot read the config file {}: {e}", path.display()),
        }
    }
    let _ = FILE.set(values);
    Ok(())
}

/// A setting without a flag: the environment, then the config file.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).or_else(|| FILE.get().and_then(|f| f.get(name).cloned()))
}

/// `cmd` with the config file's values as the defaults of every flag that reads the same
/// variable: clap then applies a flag, then the environment, then the file, then the default.
pub fn with_file_defaults(cmd: clap::Command) -> clap::Command {
    let Some(file) = FILE.get().filter(|f| !f.is_empty()) else { return cmd };
    apply(cmd, file)
}

fn apply(cmd: clap::Command, file: &HashMap<&'static str, String>) -> clap::Command {
    let subs: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    let mut cmd = cmd.mut_args(|arg| {
        let Some(value) = arg.get_env().and_then(|e| e.to_str()).and_then(|e| file.get(e)) else { return arg };
        // A secret (a token, a key) never shows in --help.
        let arg = if arg.is_hide_env_values_set() { arg.hide_default_value(true) } else { arg };
        // Leaked once per process at startup: clap keeps defaults as 'static strings.
        match arg.get_value_delimiter() {
            Some(d) => {
                let parts: Vec<&'static str> = value.split(d).map(|p| &*Box::leak(p.trim().to_string().into_boxed_str())).collect();
                arg.default_values(parts)
            }
            None => arg.default_value(&*Box::leak(value.clone().into_boxed_str())),
        }
    });
    for name in subs {
        cmd = cmd.mut_subcommand(name, |sc| apply(sc, file));
    }
    cmd
}

/// What is wrong with the OpenMP wait setting this process runs llama.cpp under, if anything
/// (`OMP_WAIT_POLICY`, `GOMP_SPINCOUNT`: libgomp's, read once when it loads, and inherited by
/// runners). llama.cpp's CPU backend meets its threads at an OpenMP barrier after every op, so
/// threads told to sleep there wait in the kernel hundreds of times a token: served generation
/// of the starter model ran at a third of its speed on 2 cores (#15).
pub fn openmp_wait_warning() -> Option<String> {
    omp_wait_warning(std::env::var("OMP_WAIT_POLICY").ok().as_deref(), std::env::var("GOMP_SPINCOUNT").ok().as_deref())
}

fn omp_wait_warning(policy: Option<&str>, spincount: Option<&str>) -> Option<String> {
    let what = if policy.is_some_and(|p| p.trim().eq_ignore_ascii_case("passive")) {
        "OMP_WAIT_POLICY=passive"
    } else if spincount.is_some_and(|s| s.trim() == "0") {
        "GOMP_SPINCOUNT=0"
    } else {
        return None;
    };
    Some(format!(
        "{what} is set: the engine's CPU threads will sleep at every op's barrier, which makes CPU \
         generation several times slower; unset it unless other busy processes share these cores"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[test]
    fn an_openmp_setting_that_sleeps_at_barriers_is_named() {
        assert!(omp_wait_warning(None, None).is_none());
        assert!(omp_wait_warning(Some("active"), Some("300000")).is_none());
        assert!(omp_wait_warning(Some("PASSIVE"), None).unwrap().starts_with("OMP_WAIT_POLICY=passive is set"));
        assert!(omp_wait_warning(Some("active"), Some(" 0")).unwrap().starts_with("GOMP_SPINCOUNT=0 is set"));
    }

    #[test]
    fn keys_become_variables() {
        let v = parse("workers = [\"a:1\", \"b:2\"]\ncluster_token = \"s\"\nnum_parallel = 2\n").unwrap();
        assert!(v.contains(&(WORKERS, "a:1,b:2".into())));
        assert!(v.contains(&(CLUSTER_TOKEN, "s".into())));
        assert!(v.contains(&(NUM_PARALLEL, "2".into())));
        let e = parse("wrokers = []").unwrap_err().to_string();
        assert!(e.contains("wrokers") && e.contains("workers"), "{e}");
        assert!(parse("workers = [").is_err());
        assert!(parse("host = { a = 1 }").unwrap_err().to_string().contains("host"));
    }

    #[test]
    fn file_values_are_defaults_below_flags() {
        let file: HashMap<&'static str, String> = [(NUM_PARALLEL, "7".to_string()), (WORKERS, "a:1,b:2".to_string()), (CONTEXT_LENGTH, "1024".to_string())].into();
        let cmd = apply(crate::args::Cli::command(), &file);
        let parse = |args: &[&str]| {
            let m = cmd.clone().try_get_matches_from(args).unwrap();
            match crate::args::Cli::from_arg_matches(&m).unwrap().command {
                crate::args::Command::Serve(s) => s,
                _ => unreachable!(),
            }
        };
        // Unless HEARTH_NUM_PARALLEL is set in the environment running the tests.
        if std::env::var_os(NUM_PARALLEL).is_none() && std::env::var_os(WORKERS).is_none() && std::env::var_os(CONTEXT_LENGTH).is_none() {
            let s = parse(&["hearth", "serve"]);
            assert_eq!((s.parallel, s.cluster.workers.clone(), s.load.ctx_size), (7, vec!["a:1".to_string(), "b:2".to_string()], Some(1024)));
            let s = parse(&["hearth", "serve", "--parallel", "2", "-c", "64"]);
            assert_eq!((s.parallel, s.load.ctx_size), (2, Some(64)));
        }
        let secret: HashMap<&'static str, String> = [(CLUSTER_TOKEN, "s3cret".to_string())].into();
        let help = apply(crate::args::Cli::command(), &secret).find_subcommand_mut("serve").unwrap().render_long_help().to_string();
        assert!(!help.contains("s3cret"), "a token from the file shows in --help: {help}");
    }

    #[test]
    fn every_flag_variable_is_named_here() {
        fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
            out.extend(cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()));
            cmd.get_subcommands().for_each(|s| walk(s, out));
        }
        let mut vars = Vec::new();
        walk(&crate::args::Cli::command(), &mut vars);
        for v in vars {
            assert!(KEYS.contains(&v.as_str()), "{v} is read by a flag but is not a constant of env.rs");
        }
    }
}
