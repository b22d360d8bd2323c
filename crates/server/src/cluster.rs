//! `GET /api/cluster`: each worker's status (its devices and their memory), the models placed
//! on it, this machine's per-device budgets and use, the models that lost a worker, and the
//! traffic through each model's tunnels. 404 when the server has no workers.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{ApiError, OllamaError};
use crate::state::Shared;

pub async fn route(State(s): State<Shared>) -> Result<Response, OllamaError> {
    let sched = &s.runtime.sched;
    let Some(cluster) = sched.config.cluster.as_ref().filter(|c| !c.workers.is_empty()) else {
        return Err(ApiError::not_found("this server has no workers (start it with --workers HOST:PORT,...)").into());
    };
    let mut workers = cluster.status().await;
    let loaded = sched.loaded();
    for w in &mut workers {
        w.hosts = loaded.iter().filter(|m| m.workers.contains(&w.address)).map(|m| m.name.clone()).collect();
    }
    let unavailable: Vec<Value> = sched.unavailable().into_iter().map(|(m, e)| json!({"model": m, "error": e})).collect();
    let tunnels: Vec<Value> = loaded
        .iter()
        .flat_map(|m| m.tunnels.iter().map(move |t| json!({"model": m.name, "worker": t.worker(), "local_addr": t.local_addr().to_string(), "stats": t.stats()})))
        .collect();
    // This machine's budgets (RAM, each GPU) and what the loaded models hold of them.
    let local: Vec<Value> = sched
        .budgets()
        .into_iter()
        .map(|(device, budget)| json!({"device": device, "budget": budget, "used": loaded.iter().map(|m| m.uses(&device)).sum::<u64>()}))
        .collect();
    Ok(axum::Json(json!({"workers": workers, "local": local, "unavailable": unavailable, "tunnels": tunnels})).into_response())
}
