//! The cluster transport: an authenticated, encrypted tunnel between a hearth controller and
//! its `hearth worker`s.
//!
//! A worker serves its devices with llama.cpp's ggml RPC server, which speaks unauthenticated
//! plaintext and so listens on loopback only. In front of it the worker runs a [`Gate`] on its
//! public port. On the controller, a [`Tunnel`] per worker listens on 127.0.0.1; the runner's
//! llama.cpp connects there as if it were the worker, and the tunnel carries the bytes,
//! encrypted, to the gate, which forwards them to the ggml RPC server:
//!
//! ```text
//! llama.cpp ──plain──▶ Tunnel 127.0.0.1:X ══Noise══▶ Gate worker:50052 ──plain──▶ ggml RPC 127.0.0.1:Y
//! ```
//!
//! ```
//! use std::sync::Arc;
//!
//! use hearth_cluster::{ClusterToken, Gate, NoControl, Tunnel, Versions};
//! use tokio::net::TcpListener;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let versions = Versions::new(env!("CARGO_PKG_VERSION"), "7.0.0");
//! let token = ClusterToken::new("s3cret");
//!
//! // The worker: ggml's RPC server on 127.0.0.1:50053, the gate on the public port
//! // (0.0.0.0:50052 in real use).
//! let public = TcpListener::bind("127.0.0.1:0").await?;
//! let worker = public.local_addr()?.to_string();
//! let gate = Gate::new(token.clone(), "127.0.0.1:50053".parse()?, versions.clone(), Arc::new(NoControl));
//! tokio::spawn(gate.serve(public, std::future::pending()));
//!
//! // The controller: one tunnel per worker; llama.cpp's RPC device is its local port.
//! let tunnel = Tunnel::start(worker, token, versions).await?;
//! let rpc_server = tunnel.local_addr().to_string(); // for ggml_backend_rpc_add_server
//! # let _ = rpc_server;
//! # Ok(())
//! # }
//! ```
//!
//! # Protocol
//!
//! Every connection is one purpose and starts afresh:
//!
//! 1. **Handshake.** `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` with the prologue
//!    `hearth-cluster/1`. The pre-shared key is SHA-256 of a domain-separation string and the
//!    cluster token ([`ClusterToken`]); no token means the key of the empty token. Each of the
//!    two handshake messages is a frame (below) of at most 128 bytes (they are 48); the gate
//!    answers a first message that does not decrypt with an empty frame (a refusal, so the
//!    controller can say "wrong token") and closes. Both messages must arrive within
//!    [`HANDSHAKE_TIMEOUT`].
//! 2. **Frames.** On the wire everything is `u16` big-endian length + bytes. After the
//!    handshake each frame is one Noise transport message: at most 65535 bytes, carrying at
//!    most 65519 bytes of plaintext; larger writes are split. Each direction has its own
//!    nonce, so frames must arrive in order and exactly once. An empty plaintext ends that
//!    direction (half-close); a connection that closes without it was cut.
//! 3. **Hello.** The controller's first frame is JSON: `{"hearth_version", "rpc_proto",
//!    "purpose", "request"?}`. The gate answers `{"hearth_version", "rpc_proto", "ok",
//!    "reply"?, "error"?}`, always with its own versions. Versions that differ in any way are
//!    an error on both sides, worded with both ([`Error::VersionMismatch`]).
//! 4. **Purposes.** `"ping"`: the answer is all. `"control"`: `request` goes to the worker's
//!    [`Control`] handler, its result is the answer ([`control`]). `"rpc"`: after an ok answer
//!    the channel carries raw ggml RPC bytes both ways until either side ends.
//!
//! # Security
//!
//! - With a token, a peer that does not hold it cannot complete the handshake, and the gate
//!   drops it (logging a warning with its address) before a single byte reaches the ggml RPC
//!   server. A plaintext ggml client is dropped at its first two bytes (they read as a length
//!   far above the handshake bound). Until a peer has proven the token the gate holds nothing
//!   for it but fixed buffers of a few hundred bytes, no length prefix is trusted beyond its
//!   bound (128 bytes in the handshake, 65535 after), and at most 64 peers can be
//!   mid-handshake at once.
//! - The channel is confidential and integrity-protected (ChaCha20-Poly1305), with forward
//!   secrecy from the ephemeral X25519 keys; both sides prove the token, so neither can be
//!   impersonated by someone without it.
//! - Without a token the channel is still encrypted, but anyone can connect
//!   ([`ClusterToken::is_authenticated`] is false): a worker should then listen on loopback only
//!   unless the user explicitly accepts an open port.
//!
//! **Non-goals:** protection against a peer that holds the token (it can do anything the ggml
//! RPC server allows, which includes reading and writing the worker's device memory and the
//! files in its cache directory); hiding traffic volume or timing; resistance to
//! denial of service beyond the bounds above (a peer can always fill the port with
//! connections); identity of individual machines (one shared secret for the whole cluster,
//! no per-worker keys, no revocation short of changing the token everywhere); replaying a
//! recorded first handshake message is possible but leads nowhere, since the answer needs the
//! ephemeral key's secret.
//!
//! # Testing and benchmarks
//!
//! [`DelayProxy`] adds a fixed one-way delay to a TCP connection, to simulate 1 ms or 5 ms
//! links where the kernel has no `netem`.
//!
//! Invariants: no llama.cpp (the caller passes its ggml RPC protocol version in
//! [`Versions`]); no byte from an unauthenticated peer ever reaches the backend; every error a
//! controller sees names the worker's address.

mod delay;
mod error;
mod gate;
mod hello;
mod net;
mod noise;
mod pump;
mod token;
mod tunnel;

use std::time::Duration;

pub use delay::DelayProxy;
pub use error::Error;
pub use gate::{Control, ControlContext, Gate, GateCounters, GateStats, NoControl};
pub use hello::Versions;
pub use token::ClusterToken;
pub use tunnel::{control, ping, Tunnel, TunnelCounters, TunnelStats};

/// The longest a handshake and hello may take, on either side (a slow link's round trips are
/// milliseconds; this only ends peers that stall).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a controller waits for a worker's TCP connection to be accepted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
