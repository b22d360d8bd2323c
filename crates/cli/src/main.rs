//! The `hearth` binary: command-line parsing, settings, printing and exit codes.
//!
//! This is glue: the work happens in the library crates. It is the only crate that uses
//! `anyhow`, prints to the terminal or decides exit codes: 0 on success, 1 when the user's
//! input was wrong (a bad file, a too-long prompt), 2 for command-line usage errors (as clap
//! does) and for failures that are hearth's own fault, 130 after Ctrl-C.

mod args;
mod bench;
mod client;
mod devices;
mod env;
mod fit;
mod models;
mod progress;
mod run;
mod runner;
mod serve;
mod units;
mod worker;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::args::{Cli, Command};

fn main() -> ExitCode {
    if let Err(e) = env::load() {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    let parsed = env::with_file_defaults(Cli::command())
        .try_get_matches_from(args::normalize(std::env::args_os()))
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // A worker logs its controllers' connections and loads by default.
    init_tracing(cli.verbose, matches!(cli.command, Command::Worker(_)));
    // The commands that run llama.cpp here or in their runners.
    if matches!(cli.command, Command::Run(_) | Command::Serve(_) | Command::Worker(_)) {
        if let Some(w) = env::openmp_wait_warning() {
            tracing::warn!("{w}");
        }
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args, cli.verbose),
        Command::Pull(a) => match client::server() {
            Some(r) => client::pull(&r, &a.reference, a.insecure),
            None => models::pull(a),
        }
        .map(|_| ExitCode::SUCCESS),
        Command::Add(a) => models::add(a).map(|_| ExitCode::SUCCESS),
        Command::List(a) => match client::server() {
            Some(r) => client::list(&r, a.json),
            None => models::list(a),
        }
        .map(|_| ExitCode::SUCCESS),
        Command::Show(a) => match client::server() {
            Some(r) if !std::path::Path::new(&a.model).exists() => client::show(&r, &a.model, a.json),
            _ => models::show(a),
        }
        .map(|_| ExitCode::SUCCESS),
        Command::Rm(a) => match client::server() {
            Some(r) => client::rm(&r, &a.models),
            None => models::rm(a),
        }
        .map(|_| ExitCode::SUCCESS),
        Command::Fit(a) => fit::fit(a).map(|_| ExitCode::SUCCESS),
        Command::Bench(a) => bench::bench(a).map(|_| ExitCode::SUCCESS),
        Command::Ps => no_server_is(client::server()).and_then(|r| client::ps(&r)).map(|_| ExitCode::SUCCESS),
        Command::Stop(a) => no_server_is(client::server()).and_then(|r| client::stop(&r, &a.model)).map(|_| ExitCode::SUCCESS),
        Command::Cp(a) => models::cp(a).map(|_| ExitCode::SUCCESS),
        Command::Import(a) => models::import(a).map(|_| ExitCode::SUCCESS),
        Command::Export(a) => models::export(a).map(|_| ExitCode::SUCCESS),
        Command::Serve(a) => serve::serve(a).map(|_| ExitCode::SUCCESS),
        Command::Runner(a) => runner::main(&a.spec).map_err(|e| anyhow::anyhow!(e)).map(|_| ExitCode::SUCCESS),
        Command::Devices(a) => devices::devices(a).map(|_| ExitCode::SUCCESS),
        Command::Worker(a) => worker::worker(a).map(|_| ExitCode::SUCCESS),
        Command::Cluster(c) => match c.command {
            args::ClusterCommand::Status(a) => client::cluster_status(a).map(|_| ExitCode::SUCCESS),
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {err}");
            for cause in err.chain().skip(1) {
                let _ = writeln!(stderr, "  Caused by: {cause}");
            }
            if let Some(hint) = run::hint(&err) {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            ExitCode::from(if is_internal(&err) { 2 } else { 1 })
        }
    }
}

/// Whether `err` is hearth's own failure (exit 2) rather than the user's input or
/// environment (exit 1): a runner or engine that broke, a store that cannot be read back.
fn is_internal(err: &anyhow::Error) -> bool {
    use hearth_engine::EngineError as E;
    use hearth_runtime::RuntimeError as R;
    err.chain().any(|c| {
        matches!(c.downcast_ref::<R>(), Some(R::Internal(_) | R::RunnerDied { .. } | R::Store(_)))
            || matches!(c.downcast_ref::<E>(), Some(E::Decode(_) | E::Stopped | E::Embedding(_)))
            || c.downcast_ref::<tokio::task::JoinError>().is_some()
    })
}

fn no_server_is(r: Option<client::Remote>) -> anyhow::Result<client::Remote> {
    r.ok_or_else(|| {
        let host = env::var(env::HOST).unwrap_or_else(|| "127.0.0.1:11434".into());
        anyhow::anyhow!("no hearth server answers at {host}; start one with `hearth serve` (or set HEARTH_HOST)")
    })
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Logs go to stderr. Quiet by default (warnings from hearth, nothing from llama.cpp);
/// `-v` shows hearth's and llama.cpp's info, `-vv` debug. `HEARTH_LOG` (tracing's filter
/// syntax) overrides both.
fn init_tracing(verbose: u8, chatty: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if chatty => "info,llama.cpp=off",
        0 => "warn,llama.cpp=off",
        1 => "info,llama.cpp=info",
        _ => "debug,llama.cpp=debug",
    };
    let filter = env::var(env::LOG)
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .without_time()
        .init();
}
