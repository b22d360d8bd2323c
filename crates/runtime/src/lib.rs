//! What `hearth serve` runs, knowing no HTTP: the scheduler of runner processes, placement
//! over workers, and requests run on them as typed streams with typed errors.
//!
//! - [`Runtime`]: [`Runtime::resolve`] a model name once, then [`Runtime::generate`] (a
//!   [`Generation`] of [`Event`]s) or [`Runtime::embed`].
//! - [`scheduler`]: which model is loaded where, memory budget, keep-alive, queue bounds.
//! - [`runner`]: the server's side of a runner process (spawn, requests, death).
//! - [`placement`]: the workers of a cluster, their status, and placing a model over them.
//! - [`RuntimeError`]: one enum for everything that can fail; each API maps it to its own
//!   statuses.
//!
//! Invariants: no HTTP and no llama.cpp (`cargo tree -p hearth-runtime` has neither axum nor
//! llama-cpp-sys-2): engines live in runner processes, which speak
//! [`hearth_protocol::runner`]; a runner's death fails its requests and nothing else; every
//! error names the model and what to change.

mod error;
mod generate;
pub mod gpus;
mod keep_alive;
mod model;
mod options;
pub mod placement;
pub mod runner;
pub mod scheduler;

pub use error::{gib, RuntimeError};
pub use generate::{Embeddings, Event, Generation, Rendered, Runtime};
pub use hearth_protocol as protocol;
pub use keep_alive::KeepAlive;
pub use model::{context_plan, split, Model};
pub use options::Options;
pub use scheduler::{Config, Lease, Loaded, LoadOptions, Scheduler};
