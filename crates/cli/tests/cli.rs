//! `hearth run` through the real binary with the real test model.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{model_path as model, text, UPSTREAM_GREEDY};

fn hearth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env_remove("HEARTH_LOG");
    // Never talk to a server a developer may have running: run locally.
    c.env("HEARTH_HOST", "127.0.0.1:1");
    c
}

fn run(args: &[&str]) -> Output {
    hearth().args(args).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn one_prompt_streams_the_greedy_answer_to_stdout() {
    let _turn = common::one_at_a_time();
    let m = model();
    let out = run(&["run", m.to_str().unwrap(), "What is the capital of France?", "--temp", "0", "-n", "32", "-t", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), UPSTREAM_GREEDY.trim_end());
    // Quiet by default: llama.cpp's log does not reach the terminal.
    assert!(!text(&out.stderr).contains("llama_"), "{}", text(&out.stderr));
}

#[test]
fn verbose_prints_timings_to_stderr_only() {
    let _turn = common::one_at_a_time();
    let m = model();
    let out = run(&["run", m.to_str().unwrap(), "Hi", "--temp", "0", "-n", "4", "-t", "2", "--verbose"]);
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("prompt eval rate:") && err.contains("eval count:           4 token(s)"), "{err}");
    assert!(!text(&out.stdout).contains("eval"));
}

#[test]
fn raw_mode_skips_the_template() {
    let _turn = common::one_at_a_time();
    let m = model();
    let raw = run(&["run", m.to_str().unwrap(), "The capital of France is", "--raw", "--temp", "0", "-n", "8", "-t", "2", "-v"]);
    assert!(raw.status.success(), "{}", text(&raw.stderr));
    assert!(text(&raw.stderr).contains("prompt eval count:    5 token(s)"), "{}", text(&raw.stderr));
}

#[test]
fn interactive_chat_keeps_history_and_reuses_the_cache() {
    let _turn = common::one_at_a_time();
    let m = model();
    let mut child = hearth()
        .args(["run", m.to_str().unwrap(), "--temp", "0", "-n", "32", "-t", "2", "-v"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\n\"\"\"\nAnd what\nabout Spain?\n\"\"\"\n/bye\nnot read\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(UPSTREAM_GREEDY.trim_end()), "{stdout}");
    let err = text(&out.stderr);
    let cached: Vec<u32> = err
        .lines()
        .filter(|l| l.starts_with("prompt eval count:"))
        .filter_map(|l| l.rsplit_once('(')?.1.split(" cached").next()?.parse().ok())
        .collect();
    assert_eq!(cached.len(), 2, "two answers: {err}");
    assert_eq!(cached[0], 0);
    assert!(cached[1] >= 37 + 20, "the second turn reuses the first turn's KV: {cached:?}");
}

#[test]
fn ctrl_c_stops_the_answer_not_the_chat() {
    let _turn = common::one_at_a_time();
    let m = model();
    let mut child = hearth()
        .args(["run", m.to_str().unwrap(), "--temp", "0", "-t", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Write a very long story about a dragon.\n").unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    let n = stdout.read(&mut buf).unwrap();
    assert!(n > 0, "the answer started");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    stdin.write_all(b"What is the capital of France?\n/bye\n").unwrap();
    drop(stdin);
    let started = Instant::now();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("(stopped)"), "{}", text(&out.stderr));
    // The story so far stays in the history; the next question is answered after it.
    assert!(rest.contains("Paris"), "the next question is answered: {rest}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

fn assert_user_error(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    assert_user_error(&run(&["run", missing.to_str().unwrap(), "hi"]), "no such file");

    let not_gguf = dir.path().join("notes.txt");
    std::fs::write(&not_gguf, "just some text, not a model").unwrap();
    assert_user_error(&run(&["run", not_gguf.to_str().unwrap(), "hi"]), "not a GGUF file");

    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_user_error(&run(&["run", truncated.to_str().unwrap(), "hi"]), "truncated GGUF");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    assert_user_error(&run(&["run", truncated.to_str().unwrap(), "hi"]), "truncated GGUF");

    assert_user_error(&run(&["run", dir.path().to_str().unwrap(), "hi"]), "directory");

    let m = model();
    let long = "word ".repeat(300);
    assert_user_error(&run(&["run", m.to_str().unwrap(), &long, "-c", "128", "-t", "2"]), "does not fit in the context");
}

#[test]
fn usage_errors_exit_2() {
    let m = model();
    for args in [
        vec!["run", m.to_str().unwrap(), "--no-such-flag"],
        vec!["run", m.to_str().unwrap(), "hi", "-fa", "sometimes"],
        vec!["run"],
        vec!["frobnicate"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("panicked"));
    }
    let help = run(&["run", "--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("--ctx-size"));
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let _turn = common::one_at_a_time();
    let m = model();
    let mut child = hearth()
        .args(["run", m.to_str().unwrap(), "Write a long story.", "--temp", "0", "-n", "200", "-t", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}
