//! What every handler shares: the runtime, the server's settings and its metrics.

use std::sync::Arc;
use std::time::Instant;

use hearth_runtime::Runtime;

use crate::metrics;

/// Server settings beyond the runtime's.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Required as `Authorization: Bearer <key>` on every route but `/`, `/health` and the web
    /// page's assets.
    pub api_key: Option<String>,
    /// Origins allowed by CORS besides localhost.
    pub cors_origins: Vec<String>,
    /// Largest JSON body accepted.
    pub max_body: usize,
    /// The web page's conversation database.
    pub db: std::path::PathBuf,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    pub header_timeout: std::time::Duration,
}

impl ServerConfig {
    /// The defaults of `hearth serve`, with no API key and no extra origins.
    pub fn new(db: std::path::PathBuf) -> ServerConfig {
        ServerConfig {
            api_key: None,
            cors_origins: Vec::new(),
            max_body: 64 << 20,
            db,
            max_connections: 1024,
            header_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub runtime: Runtime,
    pub config: ServerConfig,
    pub metrics: metrics::Metrics,
    pub started: Instant,
}

pub type Shared = Arc<AppState>;
