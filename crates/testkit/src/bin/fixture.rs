//! `hearth-fixture`: serves files over the fixture's protocols until Ctrl-C, for benchmarks
//! (hearth's pull against curl) and manual tries.
//!
//! ```text
//! hearth-fixture --file PATH [--file PATH...] [--hf user/repo] [--ollama ns/name:tag]
//!                [--port N] [--cdn-port N]
//! ```
//!
//! Every file is served at `/files/<name>`; with `--hf` also in that Hugging Face repository;
//! with `--ollama` as a registry model whose layers are the files (`.gguf` files as the model,
//! files named `template`, `system`, `params`, `license`, `messages` as those layers). What it
//! serves is printed to stdout as `key value` lines, ending with `ready`.

use std::io::Write;
use std::process::ExitCode;

use hearth_testkit::{media_type, Fixture, FixtureOptions};

const USAGE: &str = "usage: hearth-fixture --file PATH [--file PATH...] [--hf user/repo] \
                     [--ollama ns/name:tag] [--port N] [--cdn-port N]";

struct Args {
    files: Vec<String>,
    hf: Option<String>,
    ollama: Option<String>,
    options: FixtureOptions,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        files: Vec::new(),
        hf: None,
        ollama: None,
        options: FixtureOptions::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--file" => args.files.push(value()?),
            "--hf" => args.hf = Some(value()?),
            "--ollama" => args.ollama = Some(value()?),
            "--port" => args.options.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--cdn-port" => {
                args.options.cdn_port = value()?.parse().map_err(|e| format!("--cdn-port: {e}"))?
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if args.files.is_empty() {
        return Err("at least one --file is needed".into());
    }
    if let Some(hf) = &args.hf {
        if hf.split('/').count() != 2 || hf.split('/').any(str::is_empty) {
            return Err(format!("--hf {hf:?}: expected user/repo"));
        }
    }
    Ok(args)
}

/// `ns/name:tag` (tag defaults to `latest`) into its parts.
fn split_ollama(name: &str) -> Option<(String, String, String)> {
    let (path, tag) = name.rsplit_once(':').unwrap_or((name, "latest"));
    let (ns, model) = path.split_once('/')?;
    (!ns.is_empty() && !model.is_empty() && !tag.is_empty() && !model.contains('/'))
        .then(|| (ns.to_string(), model.to_string(), tag.to_string()))
}

/// The Ollama layer media type for a file, by name.
fn layer_type(name: &str) -> Option<&'static str> {
    if name.to_ascii_lowercase().ends_with(".gguf") {
        return Some(media_type::MODEL);
    }
    match name {
        "template" => Some(media_type::TEMPLATE),
        "system" => Some(media_type::SYSTEM),
        "params" => Some(media_type::PARAMS),
        "license" | "LICENSE" => Some(media_type::LICENSE),
        "messages" => Some(media_type::MESSAGES),
        _ => None,
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let ollama = match &args.ollama {
        Some(name) => Some(
            split_ollama(name)
                .ok_or_else(|| format!("--ollama {name:?}: expected ns/name[:tag]"))?,
        ),
        None => None,
    };
    let mut files = Vec::new();
    for path in &args.files {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let name = std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{path}: not a file name"))?;
        files.push((name, bytes));
    }
    let fx =
        Fixture::start_with(args.options).map_err(|e| format!("cannot start the fixture: {e}"))?;
    let say = |line: String| {
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    say(format!("base_url {}", fx.base_url()));
    say(format!("cdn_url {}", fx.cdn_url()));
    for (name, bytes) in &files {
        say(format!(
            "url {}",
            fx.add_url_file(&format!("files/{name}"), bytes)
        ));
        if let Some(repo) = &args.hf {
            let f = fx.add_hf_file(repo, name, bytes);
            say(format!(
                "hf {} sha256={} lfs={}",
                fx.hf_resolve_url(repo, name),
                f.sha256,
                f.lfs
            ));
        }
    }
    if let Some(repo) = &args.hf {
        say(format!("hf_endpoint {}", fx.base_url()));
        say(format!("hf_repo {repo}"));
    }
    if let Some((ns, model, tag)) = &ollama {
        let mut layers: Vec<(&str, &[u8])> = Vec::new();
        for (name, bytes) in &files {
            match layer_type(name) {
                Some(mt) => layers.push((mt, bytes)),
                None => eprintln!("warning: {name} is not an Ollama layer (.gguf, template, system, params, license, messages); left out of the model"),
            }
        }
        let m = fx.add_ollama_model(ns, model, tag, &layers);
        say(format!(
            "ollama {}/{ns}/{model}:{tag} manifest={}",
            fx.registry_host(),
            m.manifest_digest
        ));
    }
    say("ready".to_string());
    let _ = std::io::stdout().flush();
    // Serves until the process is interrupted.
    loop {
        std::thread::park();
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
