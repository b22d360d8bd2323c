//! What goes wrong on the controller's side, worded for the person who runs the cluster.

use std::io;
use std::time::Duration;

use crate::Versions;

/// An error talking to a worker. Every message names the worker's address and says what to
/// check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach worker {worker}: {source}: is `hearth worker` running there?")]
    Unreachable { worker: String, source: io::Error },

    #[error("worker {worker} did not complete {what} within {}s: is `hearth worker` running there, on that port?", after.as_secs())]
    Timeout { worker: String, what: &'static str, after: Duration },

    #[error(
        "worker {worker} refused this controller's cluster token{}: set the same HEARTH_CLUSTER_TOKEN on both",
        if *controller_has_token { "" } else { " (this controller has none)" }
    )]
    WrongToken { worker: String, controller_has_token: bool },

    #[error("worker {worker} broke off the handshake ({detail}): is it a `hearth worker` (not a plain ggml rpc-server) of the same hearth version?")]
    Handshake { worker: String, detail: String },

    #[error("worker {worker} runs {theirs}, this controller runs {ours}: install the same hearth version on both")]
    VersionMismatch { worker: String, theirs: Versions, ours: Versions },

    /// The worker answered with an error: its control handler failed, or its ggml RPC server
    /// is not accepting connections.
    #[error("worker {worker}: {message}")]
    Worker { worker: String, message: String },

    #[error("connection to worker {worker} lost: {source}")]
    Lost { worker: String, source: io::Error },

    #[error("cannot open the local forwarding port for worker {worker}: {source}")]
    Listen { worker: String, source: io::Error },
}
