//! The server's side of a runner (the child process `EXE runner --spec JSON` that holds one
//! model's engine): spawning it, waiting for it, sending requests, noticing its death. The
//! protocol is [`hearth_protocol::runner`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin};

use hearth_protocol::runner::{line, Info, Reply, Request, Spec};

/// Why a runner could not start, or stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot start the runner for {model}: {reason}")]
    Start { model: String, reason: String },
    #[error("the runner for {model} stopped unexpectedly{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Died { model: String, detail: String },
}

impl From<RunnerError> for crate::RuntimeError {
    fn from(e: RunnerError) -> crate::RuntimeError {
        match e {
            RunnerError::Start { model, reason } => crate::RuntimeError::LoadFailed { model, why: reason },
            RunnerError::Died { model, detail } => crate::RuntimeError::RunnerDied { model, why: detail },
        }
    }
}

/// A running child process holding one model.
pub struct Runner {
    pub model: String,
    pub spec: Spec,
    pub info: Info,
    pub pid: u32,
    child: Mutex<Option<Child>>,
    /// Held so that the child's stdin stays open; closing it tells the child to exit.
    stdin: Mutex<Option<ChildStdin>>,
    /// Set once the child is known to be gone (shared with its reply streams).
    dead: Arc<AtomicBool>,
    /// The child's last stderr lines, for error messages.
    stderr: Arc<Stderr>,
}

/// The last lines a runner wrote to stderr, and whether it closed it (it exited).
#[derive(Default)]
struct Stderr {
    lines: Mutex<VecDeque<String>>,
    closed: AtomicBool,
}

impl Stderr {
    fn push(&self, line: String) {
        let mut l = self.lines.lock().expect("not poisoned");
        if l.len() >= 40 {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// Waits (a second at most) until the child closed its stderr, so its last words are in.
    async fn settle(&self) {
        for _ in 0..100 {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What a client should read of why the runner failed: llama.cpp's assertion, else
    /// hearth's own `error:` line, else a Rust panic message; never a backtrace or a
    /// debugger's noise (empty when there is nothing better).
    fn last_words(&self) -> String {
        let l = self.lines.lock().expect("not poisoned");
        let ggml = l.iter().rev().find_map(|x| ["GGML_ASSERT", "GGML_ABORT"].iter().find_map(|k| x.find(k).map(|i| x[i..].trim().to_string())));
        ggml.or_else(|| l.iter().rev().find(|x| x.starts_with("error")).map(|x| x.trim().to_string()))
            .or_else(|| l.iter().rev().find(|x| x.contains("panicked at")).map(|x| x.trim().to_string()))
            .unwrap_or_default()
    }
}

impl Runner {
    /// Starts `exe runner --spec ...` and waits until it says it is ready (or dies).
    pub async fn spawn(exe: &Path, model: &str, spec: Spec, timeout: Duration) -> Result<Runner, RunnerError> {
        let start_err = |reason: String| RunnerError::Start { model: model.to_string(), reason };
        let json = serde_json::to_string(&spec).expect("specs serialize");
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("runner")
            .arg("--spec")
            .arg(json)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| start_err(format!("cannot run {}: {e}", exe.display())))?;
        let pid = child.id().unwrap_or(0);
        let stderr_lines = Arc::new(Stderr::default());
        if let Some(err) = child.stderr.take() {
            let log = stderr_lines.clone();
            let model = model.to_string();
            tokio::spawn(async move {
                let mut r = BufReader::new(err).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    tracing::debug!(target: "hearth::runner", model = %model, "{line}");
                    log.push(line);
                }
                log.closed.store(true, Ordering::Release);
            });
        } else {
            stderr_lines.closed.store(true, Ordering::Release);
        }
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "ready" {
                    return true;
                }
            }
            false
        })
        .await;
        match ready {
            Ok(true) => {}
            Ok(false) => {
                let status = child.wait().await.ok();
                stderr_lines.settle().await;
                let detail = stderr_lines.last_words();
                return Err(start_err(format!(
                    "{}{}",
                    if detail.is_empty() { "it exited".to_string() } else { detail },
                    status.map(|s| format!(" ({s})")).unwrap_or_default()
                )));
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(start_err(format!("it did not load within {timeout:?}")));
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let stdin = child.stdin.take();
        let mut runner = Runner {
            model: model.to_string(),
            spec,
            info: Info::default(),
            pid,
            child: Mutex::new(Some(child)),
            stdin: Mutex::new(stdin),
            dead: Arc::new(AtomicBool::new(false)),
            stderr: stderr_lines,
        };
        let mut stream = runner.request(&Request::Info).await?;
        match stream.next().await {
            Some(Ok(Reply::Info(info))) => runner.info = info,
            other => return Err(start_err(format!("unexpected answer to info: {other:?}"))),
        }
        Ok(runner)
    }

    /// Sends a request on a new connection; the answer comes as a stream of replies.
    pub async fn request(&self, req: &Request) -> Result<ReplyStream, RunnerError> {
        let died = || RunnerError::Died { model: self.model.clone(), detail: self.detail() };
        if !self.alive() {
            return Err(died());
        }
        let mut conn = UnixStream::connect(&self.spec.socket).await.map_err(|_| {
            self.dead.store(true, Ordering::Relaxed);
            died()
        })?;
        conn.write_all(&line(req)).await.map_err(|_| died())?;
        let (read, write) = conn.into_split();
        Ok(ReplyStream {
            lines: BufReader::new(read).lines(),
            _write: write,
            model: self.model.clone(),
            stderr: self.stderr.clone(),
            dead: self.dead.clone(),
        })
    }

    fn detail(&self) -> String {
        let status = self.child.lock().expect("not poisoned").as_mut().and_then(|c| c.try_wait().ok().flatten());
        let last = self.stderr.last_words();
        match status {
            Some(s) => format!("{s}{}", if last.is_empty() { String::new() } else { format!("; {last}") }),
            None => last,
        }
    }

    /// Treats the runner as gone (it is stopped by whoever unloads it).
    pub fn mark_dead(&self) {
        self.dead.store(true, Ordering::Relaxed);
    }

    /// Whether the child is still running.
    pub fn alive(&self) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        let mut child = self.child.lock().expect("not poisoned");
        match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            _ => {
                self.dead.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    /// Stops the child: closes its stdin (it exits), then kills it if it lingers.
    pub async fn stop(&self) {
        self.dead.store(true, Ordering::Relaxed);
        drop(self.stdin.lock().expect("not poisoned").take());
        let child = self.child.lock().expect("not poisoned").take();
        if let Some(mut child) = child {
            if tokio::time::timeout(Duration::from_secs(2), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        let _ = std::fs::remove_file(&self.spec.socket);
    }
}

/// The replies to one request. Dropping it closes the connection, which cancels the request.
pub struct ReplyStream {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    _write: tokio::net::unix::OwnedWriteHalf,
    model: String,
    stderr: Arc<Stderr>,
    dead: Arc<AtomicBool>,
}

impl ReplyStream {
    /// The next reply; `None` after the last. A connection that ends without a final reply
    /// means the runner died: that is an error.
    pub async fn next(&mut self) -> Option<Result<Reply, RunnerError>> {
        match self.lines.next_line().await {
            Ok(Some(line)) => Some(serde_json::from_str(&line).map_err(|e| RunnerError::Died {
                model: self.model.clone(),
                detail: format!("garbled answer: {e}"),
            })),
            _ => None,
        }
    }

    /// The error for a stream that ended without its final reply: the runner is gone (its
    /// socket closed as it exited), so it is marked dead and the next request starts another.
    /// Waits for its last words on stderr (a second at most) to say why.
    pub async fn died(&self) -> RunnerError {
        self.dead.store(true, Ordering::Relaxed);
        self.stderr.settle().await;
        RunnerError::Died { model: self.model.clone(), detail: self.stderr.last_words() }
    }
}

/// A fresh socket path for a runner in `dir` (the runtime's private directory).
pub fn socket_path(dir: &Path, model: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let safe: String = model.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
    dir.join(format!("runner-{n}-{safe}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(lines: &[&str]) -> String {
        let s = Stderr::default();
        lines.iter().for_each(|l| s.push(l.to_string()));
        s.last_words()
    }

    /// A runner that aborts in llama.cpp prints the assertion, then a backtrace and debugger
    /// noise: the client gets the assertion.
    #[test]
    fn a_runner_abort_reports_the_assertion_not_the_backtrace() {
        let abort = [
            "llama_model_loader: loaded meta data",
            "/root/.cargo/registry/src/llama.cpp/ggml/src/ggml.c:2764: GGML_ASSERT(eps >= 0.0f) failed",
            "[New LWP 1234]",
            "171\tlibrary/std/src/rt.rs: No such file or directory.",
        ];
        assert_eq!(words(&abort), "GGML_ASSERT(eps >= 0.0f) failed");
        assert_eq!(words(&["loading", "error: cannot use model /m.gguf: bad magic", "at 0x1"]), "error: cannot use model /m.gguf: bad magic");
        assert_eq!(words(&["thread 'main' panicked at src/x.rs:1:2:", "note: run with RUST_BACKTRACE=1"]), "thread 'main' panicked at src/x.rs:1:2:");
        assert_eq!(words(&["#0 0x00007f in ?? ()", "171\tlibrary/std/src/rt.rs: No such file or directory."]), "");
    }
}
