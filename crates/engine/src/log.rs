//! llama.cpp's and ggml's log, forwarded to `tracing` under the target `llama.cpp`.
//!
//! llama.cpp writes lines in pieces (a level, then `CONT` continuations); we buffer them per
//! thread and emit whole lines. The last error line is kept so that a failed load can say why.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Mutex;

use crate::sys;

/// The most recent error line llama.cpp logged, for error messages.
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    static LINE: RefCell<(sys::ggml_log_level, String)> = const { RefCell::new((0, String::new())) };
    /// While [`capture_errors`] runs on this thread: the error lines logged meanwhile.
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

pub(crate) fn install() {
    // SAFETY: the callback is a plain function with no user data; it is valid for the program.
    unsafe {
        sys::llama_log_set(Some(callback), std::ptr::null_mut());
    }
}

/// Takes the last error llama.cpp logged, if any.
pub(crate) fn take_last_error() -> Option<String> {
    LAST_ERROR.lock().ok()?.take()
}

/// Runs `f` and returns the error lines llama.cpp logged on this thread meanwhile (a
/// grammar that does not parse says why this way). They are the caller's to report, so they
/// go to `tracing` at debug level only. Per thread: requests on other threads cannot mix in.
pub(crate) fn capture_errors<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    // A message without its final newline is still buffered: it belongs to this call.
    let pending = LINE.with(|line| {
        let mut line = line.borrow_mut();
        let text = std::mem::take(&mut line.1);
        (line.0, text)
    });
    emit(pending.0, pending.1.trim_end());
    let lines = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (r, lines)
}

pub(crate) fn clear_last_error() {
    if let Ok(mut e) = LAST_ERROR.lock() {
        *e = None;
    }
}

unsafe extern "C" fn callback(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        if level != sys::GGML_LOG_LEVEL_CONT {
            line.0 = level;
        }
        line.1.push_str(&text);
        while let Some(nl) = line.1.find('\n') {
            let one: String = line.1.drain(..=nl).collect();
            emit(line.0, one.trim_end());
        }
    });
}

fn emit(level: sys::ggml_log_level, msg: &str) {
    if msg.is_empty() {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => {
            let captured = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
                Some(lines) => {
                    lines.push(msg.to_string());
                    true
                }
                None => false,
            });
            if captured {
                tracing::debug!(target: "llama.cpp", "{msg}");
                return;
            }
            if let Ok(mut e) = LAST_ERROR.lock() {
                *e = Some(msg.to_string());
            }
            tracing::error!(target: "llama.cpp", "{msg}")
        }
        sys::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama.cpp", "{msg}"),
        sys::GGML_LOG_LEVEL_INFO => tracing::info!(target: "llama.cpp", "{msg}"),
        _ => tracing::debug!(target: "llama.cpp", "{msg}"),
    }
}
