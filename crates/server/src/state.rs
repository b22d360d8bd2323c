//! What every handler shares: the runtime, the server's settings and its metrics.

use std::sync::Arc;
use std::time::Instant;

use hearth_runtime::Runtime;

use crate::metrics;

/// Server settings beyond the runtime's.
#[derive(Debug, Clone, Default)]
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
}

/// Shared by every handler.
pub struct AppState {
    pub runtime: Runtime,
    pub config: ServerConfig,
    pub metrics: metrics::Metrics,
    pub started: Instant,
}

pub type Shared = Arc<AppState>;
