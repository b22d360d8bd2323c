//! The controller's view of its workers: their status, placing a model over them, the tunnels
//! a runner reaches them through, and naming the one that went away.
//!
//! A model placed on workers runs in an ordinary runner whose llama.cpp sees each worker as an
//! RPC device at a local forwarding port (a [`hearth_cluster::Tunnel`] owned by the server, so
//! the runner never holds the cluster token). A worker that dies aborts that runner only; the
//! scheduler then re-plans on the next request with the workers that answer.

use std::time::Duration;

use hearth_cluster::{ClusterToken, Tunnel, Versions};
use hearth_gguf::fit::ContextPlan;
use hearth_gguf::plan::{place, Device, Placement, Split};
use hearth_gguf::Gguf;
use serde::Serialize;
use serde_json::{json, Value};

use crate::RuntimeError;

/// How long a status query may take before the worker counts as unreachable.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The workers and the secret they share.
pub struct Cluster {
    pub workers: Vec<String>,
    token: ClusterToken,
    versions: Versions,
}

/// One device of a worker, as it reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DeviceStatus {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: String,
    pub free: u64,
    pub total: u64,
}

/// A worker as `GET /api/cluster` and `hearth cluster status` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerStatus {
    pub address: String,
    pub reachable: bool,
    pub hearth_version: Option<String>,
    pub rpc_version: Option<String>,
    pub devices: Vec<DeviceStatus>,
    pub free: u64,
    pub total: u64,
    pub rtt_ms: Option<f64>,
    /// ggml RPC connections open on it now.
    pub connections: u64,
    /// Models this server has placed on it.
    pub hosts: Vec<String>,
    pub error: Option<String>,
    /// It answered but refused this controller (token, versions): a configuration error, not
    /// an outage.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// A model placed over this machine and some workers: what the runner needs.
pub struct Placed {
    pub placement: Placement,
    /// The workers used, in llama.cpp's device order, with their tunnels.
    pub workers: Vec<String>,
    pub tunnels: Vec<Tunnel>,
    /// llama.cpp's parameters for the plan.
    pub gpu_layers: i32,
    pub tensor_split: Vec<f32>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("workers", &self.workers).field("versions", &self.versions).finish_non_exhaustive()
    }
}

impl Cluster {
    pub fn new(workers: Vec<String>, token: ClusterToken, versions: Versions) -> Cluster {
        Cluster { workers, token, versions }
    }

    async fn status_of(&self, address: &str) -> WorkerStatus {
        let mut s = WorkerStatus {
            address: address.to_string(),
            reachable: false,
            hearth_version: None,
            rpc_version: None,
            devices: Vec::new(),
            free: 0,
            total: 0,
            rtt_ms: None,
            connections: 0,
            hosts: Vec::new(),
            error: None,
            refused: false,
        };
        let req = json!({"op": "status"});
        match tokio::time::timeout(STATUS_TIMEOUT, hearth_cluster::control(address, &self.token, &self.versions, req)).await {
            Err(_) => s.error = Some(format!("no answer within {}s", STATUS_TIMEOUT.as_secs())),
            Ok(Err(e)) => {
                use hearth_cluster::Error as E;
                s.refused = matches!(e, E::WrongToken { .. } | E::VersionMismatch { .. } | E::Handshake { .. });
                s.error = Some(e.to_string());
            }
            Ok(Ok((v, rtt))) => {
                s.reachable = true;
                s.rtt_ms = Some(rtt.as_secs_f64() * 1e3);
                s.hearth_version = v.get("hearth_version").and_then(Value::as_str).map(String::from);
                s.rpc_version = v.get("rpc_version").and_then(Value::as_str).map(String::from);
                s.devices = v.get("devices").cloned().and_then(|d| serde_json::from_value(d).ok()).unwrap_or_default();
                s.free = s.devices.iter().map(|d| d.free).sum();
                s.total = s.devices.iter().map(|d| d.total).sum();
                s.connections = v.get("connections").and_then(Value::as_u64).unwrap_or(0);
            }
        }
        s
    }

    /// Every worker's status, asked all at once.
    pub async fn status(&self) -> Vec<WorkerStatus> {
        let all = self.workers.iter().map(|w| self.status_of(w));
        futures_util::future::join_all(all).await
    }

    /// Which of `workers` do not answer now, with why.
    pub async fn unreachable(&self, workers: &[String]) -> Vec<(String, String)> {
        let all = workers.iter().map(|w| self.status_of(w));
        futures_util::future::join_all(all)
            .await
            .into_iter()
            .filter(|s| !s.reachable)
            .map(|s| (s.address, s.error.unwrap_or_default()))
            .collect()
    }

    /// Plans `shards` over this machine (`host_available` bytes) and the workers that answer,
    /// and opens tunnels to the ones that get layers. The workers that have the model in their
    /// own store are asked to fill their tensor cache from it first.
    /// `gpus` are this machine's GPUs (llama.cpp puts them after the workers' devices).
    #[allow(clippy::too_many_arguments)]
    pub async fn place(&self, model: &str, digests: &[String], shards: &[Gguf], plan: &ContextPlan, host_available: u64, gpus: &[Device], split: &Split) -> Result<Placed, RuntimeError> {
        let statuses = self.status().await;
        let refused: Vec<String> = statuses.iter().filter(|s| s.refused).filter_map(|s| s.error.clone()).collect();
        if !refused.is_empty() {
            return Err(RuntimeError::LoadFailed { model: model.to_string(), why: format!("the cluster refused this server: {}", refused.join("; ")) });
        }
        let down: Vec<&WorkerStatus> = statuses.iter().filter(|s| !s.reachable).collect();
        for s in &down {
            tracing::warn!(worker = %s.address, error = s.error.as_deref().unwrap_or(""), "worker unreachable; planning without it");
        }
        let up: Vec<&WorkerStatus> = statuses.iter().filter(|s| s.reachable).collect();
        let (devices, owner) = devices(host_available, &up, gpus);
        let placement = place(shards, plan, &devices, split);
        if !placement.fits {
            let mut table = format!("it does not fit on this machine and the workers that answer:\n{}", placement.table());
            for s in &down {
                table.push_str(&format!("(worker {} is unreachable: {})\n", s.address, s.error.as_deref().unwrap_or("")));
            }
            return Err(RuntimeError::TooLarge {
                model: model.to_string(),
                needed: placement.devices.iter().map(|d| d.total).sum(),
                available: devices.iter().map(|d| d.available).sum(),
                per_device: Some(table.trim_end().to_string()),
            });
        }
        // The workers that get anything, and the split over their devices only.
        let used: Vec<usize> = (0..up.len())
            .filter(|&wi| placement.devices.iter().zip(&owner).any(|(d, o)| *o == Some(wi) && (d.n_layers > 0 || d.output)))
            .collect();
        // This machine's GPUs stay in the split whatever they get: llama.cpp lists them.
        let tensor_split: Vec<f32> = placement
            .tensor_split
            .iter()
            .zip(&owner[1..])
            .filter(|(_, o)| o.is_none_or(|wi| used.contains(&wi)))
            .map(|(s, _)| *s)
            .collect();
        let tied = !shards.iter().flat_map(|g| g.tensors.iter()).any(|t| t.name == "output.weight");
        let mut preloads = Vec::new();
        for &wi in &used {
            let mine: Vec<_> = placement.devices.iter().zip(&owner).filter(|(_, o)| **o == Some(wi)).map(|(d, _)| d).collect();
            let first = mine.iter().filter(|d| d.n_layers > 0).map(|d| d.first_layer).min().unwrap_or(0);
            let n: u32 = mine.iter().map(|d| d.n_layers).sum();
            let req = json!({
                "op": "preload", "model": model, "digests": digests,
                "first_layer": first, "n_layers": n, "output": mine.iter().any(|d| d.output), "tied": tied,
            });
            let address = up[wi].address.clone();
            preloads.push(async move {
                match hearth_cluster::control(&address, &self.token, &self.versions, req).await {
                    Ok((v, _)) => tracing::info!(worker = %address, reply = %v, "preload"),
                    Err(e) => tracing::warn!(worker = %address, "preload failed, weights go over the network: {e}"),
                }
            });
        }
        futures_util::future::join_all(preloads).await;
        let mut tunnels = Vec::new();
        let mut workers = Vec::new();
        for &wi in &used {
            let address = &up[wi].address;
            let t = Tunnel::start(address.clone(), self.token.clone(), self.versions.clone())
                .await
                .map_err(|e| RuntimeError::LoadFailed { model: model.to_string(), why: e.to_string() })?;
            tunnels.push(t);
            workers.push(address.clone());
        }
        Ok(Placed { gpu_layers: placement.gpu_layers as i32, tensor_split, workers, tunnels, placement })
    }
}

/// The devices a plan may use: this machine first, then every device of the workers `up`, then
/// this machine's `gpus`, in llama.cpp's order, each with the index in `up` of its worker
/// (`None` for this machine's).
pub fn devices(host_available: u64, up: &[&WorkerStatus], gpus: &[Device]) -> (Vec<Device>, Vec<Option<usize>>) {
    let mut devices = vec![Device::new("this machine", host_available)];
    let mut owner = vec![None];
    for (wi, s) in up.iter().enumerate() {
        for d in &s.devices {
            devices.push(Device::new(format!("{} {}", s.address, d.name), d.free));
            owner.push(Some(wi));
        }
    }
    for g in gpus {
        devices.push(g.clone());
        owner.push(None);
    }
    (devices, owner)
}
