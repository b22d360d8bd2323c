//! Placement: which layers of a model go on which device, and what each device then needs.
//! One planner for `hearth fit` (hypothetical hardware) and for the cluster (the controller's
//! memory and its workers'), so what `fit` promises is what `serve` does.
//!
//! The model is cut the way llama.cpp cuts it: the input embedding stays on the host; the
//! repeating layers `0..n_layer` and then the output layer (index `n_layer`) are laid out in
//! order, the first ones on the host's CPU, the rest over the offload devices in llama.cpp's
//! device order (RPC devices first, then local GPUs). [`Placement::gpu_layers`] and
//! [`Placement::tensor_split`] are the llama.cpp parameters that reproduce the plan exactly:
//! integer layer counts as the split make llama.cpp's float split points fall on the same
//! layers (see [`assign_like_llama`]).

use serde::Serialize;

use crate::fit::{compute_parts, kv_per_layer, ContextPlan};

/// llama.cpp's pattern of the Mixture-of-Experts expert tensors (`LLM_FFN_EXPS_REGEX`).
/// (`hearth_protocol::settings::EXPERTS_REGEX` is the same: neither crate depends on the other.)
pub const EXPERTS_REGEX: &str = "\\.ffn_(up|down|gate|gate_up)_(ch|)exps";
use crate::Gguf;

/// A device layers can go to. `available` is what the plan may use on it, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub name: String,
    pub available: u64,
    /// A GPU of this machine: faster than the host, so it is filled first (the host keeps
    /// the first layers that do not fit, as llama.cpp's `--fit` does).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gpu: bool,
    /// An integrated GPU: its memory is the host's RAM, so what it holds also counts against
    /// the host's `available` (counted once).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

impl Device {
    /// The host, or a device of a worker: the planner spreads layers over these by room.
    pub fn new(name: impl Into<String>, available: u64) -> Device {
        Device { name: name.into(), available, gpu: false, shared: false }
    }

    /// A GPU of this machine (`shared`: an integrated one, whose memory is the host's RAM).
    pub fn gpu(name: impl Into<String>, available: u64, shared: bool) -> Device {
        Device { name: name.into(), available, gpu: true, shared }
    }
}

/// How to split: by the planner, or as the user forced it with llama.cpp's flags.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    /// `--gpu-layers`: how many of the `n_layer + 1` layers leave the host. `None`: all of them
    /// when forced by `tensor_split`, or the planner's choice.
    pub gpu_layers: Option<u32>,
    /// `--tensor-split`: proportions over the offload devices (empty: the planner's choice, or
    /// by available memory when `gpu_layers` is given, as llama.cpp does).
    pub tensor_split: Vec<f32>,
    /// Patterns of tensors kept in RAM whatever layer device they belong to (`--override-tensor
    /// REGEX=CPU`, `--cpu-moe`, `--n-cpu-moe`), llama.cpp's regex search on the tensor name.
    pub cpu_tensors: Vec<String>,
    /// The planner may keep the expert tensors of the first layers in RAM (llama.cpp's
    /// `--n-cpu-moe`) when that lets more layers onto the GPUs. Off when the user placed
    /// tensors or layers themselves.
    pub auto_moe: bool,
}

impl Split {
    pub fn is_auto(&self) -> bool {
        self.gpu_layers.is_none() && self.tensor_split.iter().all(|&x| x == 0.0)
    }
}

/// What one device gets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePlan {
    pub name: String,
    pub available: u64,
    /// Repeating layers `first_layer .. first_layer + n_layers`.
    pub first_layer: u32,
    pub n_layers: u32,
    /// Holds the output layer (norm + head).
    pub output: bool,
    /// Holds the input embedding (the host).
    pub input: bool,
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
    pub total: u64,
    /// A GPU of this machine.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gpu: bool,
    /// Its memory is the host's RAM: its `total` also counts in the host's `shared_ram`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// The host only: what integrated GPUs hold of its RAM (their totals), counted with its own
    /// `total` against its `available`.
    #[serde(skip_serializing_if = "is_zero")]
    pub shared_ram: u64,
    pub fits: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl DevicePlan {
    /// "0-11", "12-29 + output", "input", "-".
    pub fn layers_text(&self) -> String {
        let mut parts = Vec::new();
        if self.input {
            parts.push("input".to_string());
        }
        match self.n_layers {
            0 => {}
            1 => parts.push(format!("{}", self.first_layer)),
            n => parts.push(format!("{}-{}", self.first_layer, self.first_layer + n - 1)),
        }
        if self.output {
            parts.push("output".into());
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" + ")
        }
    }
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    /// The host first, then the offload devices in llama.cpp's order.
    pub devices: Vec<DevicePlan>,
    pub n_layer: u32,
    /// llama.cpp's `n_gpu_layers` for this plan (output layer counted).
    pub gpu_layers: u32,
    /// llama.cpp's `tensor_split` for this plan: layers per offload device.
    pub tensor_split: Vec<f32>,
    /// The first layers whose experts the planner kept in RAM (`--n-cpu-moe`; 0: none).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub n_cpu_moe: u32,
    pub fits: bool,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl Placement {
    /// The devices that do not fit, as "name: needs X, has Y" lines.
    pub fn shortfalls(&self) -> Vec<&DevicePlan> {
        self.devices.iter().filter(|d| !d.fits).collect()
    }

    /// A plain-text table: device, layers, weights, KV, compute, total, available, verdict.
    pub fn table(&self) -> String {
        let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
        let mut rows = vec![["device", "layers", "weights", "KV cache", "compute", "total", "available", ""].map(String::from).to_vec()];
        for d in &self.devices {
            rows.push(vec![
                d.name.clone(),
                d.layers_text(),
                mib(d.weights),
                mib(d.kv_cache),
                mib(d.compute),
                mib(d.total),
                if d.shared { "shares RAM".into() } else { mib(d.available) },
                if d.fits {
                    "ok".into()
                } else if d.shared {
                    "RAM short".into()
                } else {
                    format!("short by {}", mib((d.total + d.shared_ram).saturating_sub(d.available)))
                },
            ]);
        }
        let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for r in rows {
            let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// Bytes of weights per unit of placement, read from tensor names.
#[derive(Debug, Clone, PartialEq)]
struct Units {
    /// Input embedding and other tensors that stay on the host.
    input: u64,
    /// Repeating layers, `blk.N.*`.
    layers: Vec<u64>,
    /// `output.weight`, `output_norm.*` (and anything else after the layers).
    output: u64,
    /// With tied embeddings (no `output.weight`) the output device gets a copy of
    /// `token_embd.weight` unless it is the host.
    tied_copy: u64,
    /// Per layer: bytes of its tensors kept in RAM by the split's `cpu_tensors`.
    pinned: Vec<u64>,
    /// Bytes of the output tensors kept in RAM by `cpu_tensors`.
    output_pinned: u64,
    /// The output head itself (`output.weight`, or `token_embd.weight` when tied) is kept in
    /// RAM: the logits are computed on the host, whichever device llama.cpp names for them.
    head_on_host: bool,
    /// Per layer: bytes of its expert tensors not already pinned (0 for a dense model).
    experts: Vec<u64>,
}

fn units(shards: &[Gguf], split: &Split) -> Units {
    let n_layer = shards.first().and_then(|g| g.arch_u64("block_count")).unwrap_or(0) as usize;
    let mut u = Units {
        input: 0,
        layers: vec![0; n_layer],
        output: 0,
        tied_copy: 0,
        pinned: vec![0; n_layer],
        output_pinned: 0,
        head_on_host: false,
        experts: vec![0; n_layer],
    };
    let pinned: Vec<regex::Regex> = split.cpu_tensors.iter().filter_map(|p| regex::Regex::new(p).ok()).collect();
    let experts = regex::Regex::new(EXPERTS_REGEX).expect("a valid pattern");
    let mut has_output = false;
    let mut token_embd = 0;
    for t in shards.iter().flat_map(|g| g.tensors.iter()) {
        let bytes = t.n_bytes().unwrap_or(0);
        let layer = t.name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok());
        match layer {
            Some(i) if i < n_layer => {
                u.layers[i] += bytes;
                if pinned.iter().any(|r| r.is_match(&t.name)) {
                    u.pinned[i] += bytes;
                } else if experts.is_match(&t.name) {
                    u.experts[i] += bytes;
                }
            }
            _ if t.name.starts_with("output") => {
                has_output |= t.name == "output.weight";
                u.output += bytes;
                if pinned.iter().any(|r| r.is_match(&t.name)) {
                    u.output_pinned += bytes;
                    u.head_on_host |= t.name == "output.weight";
                }
            }
            _ => {
                if t.name == "token_embd.weight" {
                    token_embd = bytes;
                }
                u.input += bytes;
            }
        }
    }
    if !has_output {
        // Pinned, the copy is the input's own tensor (llama.cpp reuses a duplicate in the
        // same buffer type): no second copy anywhere.
        if pinned.iter().any(|r| r.is_match("token_embd.weight")) {
            u.head_on_host = true;
        } else {
            u.tied_copy = token_embd;
        }
    }
    u
}

/// llama.cpp's own assignment (`llama_model::load_tensors`): unit `il` of `n_units`
/// (`n_layer + 1`) goes to the host below `n_units - gpu_layers`, else to the offload device
/// whose cumulative split point (f32, as llama.cpp computes it) first exceeds its position.
/// Returns the device index per unit, 0 being the host.
pub fn assign_like_llama(n_units: u32, gpu_layers: u32, splits: &[f32]) -> Vec<usize> {
    let n_dev = splits.len();
    let start = n_units.saturating_sub(gpu_layers);
    let act = if n_dev == 0 { 0 } else { gpu_layers.min(n_units) };
    let mut cum = Vec::with_capacity(n_dev);
    let mut sum = 0f32;
    for &s in splits {
        sum += s;
        cum.push(sum);
    }
    for c in &mut cum {
        *c /= sum;
    }
    (0..n_units)
        .map(|il| {
            if il < start || il - start >= act {
                return 0;
            }
            let x = (il - start) as f32 / act as f32;
            1 + cum.iter().position(|&c| c > x).unwrap_or(n_dev - 1).min(n_dev - 1)
        })
        .collect()
}

/// How many multi-token-prediction ("NextN") layers the model has: the last ones of its
/// `block_count`.
pub fn mtp_layers(first: &Gguf) -> u32 {
    let n_layer = first.arch_u64("block_count").unwrap_or(0);
    first.arch_u64("nextn_predict_layers").unwrap_or(0).min(n_layer) as u32
}

/// The tensors `--spec mtp` keeps on this machine when the model's last layers would
/// otherwise sit on a worker (a cluster, no GPU here; the engine lists this machine's CPU as
/// the device of those units): the MTP layers and the output head they share
/// (`output.weight` and `output_norm.weight`, or `token_embd.weight` where the output is tied
/// to it). The block then drafts without a round trip, and the model's own logits come from
/// here too: a worker sends back the last hidden state instead of the logits. As regexes for
/// [`Split::cpu_tensors`], so the plan counts them in RAM; none for a model without the block.
pub fn mtp_on_host(first: &Gguf) -> Vec<String> {
    let n_layer = first.arch_u64("block_count").unwrap_or(0);
    let nextn = u64::from(mtp_layers(first));
    if nextn == 0 {
        return Vec::new();
    }
    let layers: Vec<String> = (n_layer - nextn..n_layer).map(|i| i.to_string()).collect();
    // `token_embd.weight` is the input's too, which is on the host anyway.
    vec![format!("^blk\\.({})\\.", layers.join("|")), "^(output|output_norm|token_embd)\\.weight$".to_string()]
}

/// Plans `shards` with `plan` over `devices` (the host first). With an automatic split the
/// layers are spread in proportion to what each device can hold beyond its fixed needs
/// (llama.cpp's default spreads by free memory too), falling back to filling devices in order
/// when proportions do not fit; a forced split is laid out exactly as llama.cpp would.
pub fn place(shards: &[Gguf], plan: &ContextPlan, devices: &[Device], split: &Split) -> Placement {
    let Some(first) = shards.first() else {
        return evaluate_empty(devices);
    };
    let u = units(shards, split);
    let n_layer = u.layers.len() as u32;
    let n_units = n_layer + 1;
    let kv_layer = kv_per_layer(first, plan);
    let c = compute_parts(first, plan);
    // The output layer brings the logits buffer with it.
    let cost = |i: usize| if i < u.layers.len() { u.layers[i] + kv_layer } else { u.output + c.logits };
    let eval = |assign: &[usize]| evaluate(first, plan, devices, &u, kv_layer, assign, 0);
    let offload = devices.len().saturating_sub(1);
    if devices.is_empty() {
        return evaluate_empty(devices);
    }
    if !split.is_auto() {
        let gpu_layers = split.gpu_layers.unwrap_or(n_units).min(n_units);
        let splits: Vec<f32> = if split.tensor_split.iter().any(|&x| x != 0.0) {
            (0..offload).map(|i| split.tensor_split.get(i).copied().unwrap_or(0.0)).collect()
        } else {
            devices[1..].iter().map(|d| d.available as f32).collect()
        };
        let assign = if splits.iter().sum::<f32>() > 0.0 { assign_like_llama(n_units, gpu_layers, &splits) } else { vec![0; n_units as usize] };
        return eval(&assign);
    }
    if devices[1..].iter().any(|d| d.gpu) {
        let moe = split.auto_moe && split.is_auto() && u.experts.iter().any(|&e| e > 0);
        let eval_moe = |assign: &[usize], k: u32| evaluate(first, plan, devices, &u, kv_layer, assign, k);
        return gpus_first(n_units, devices, &u, kv_layer, &c, moe, &eval_moe);
    }
    // Fixed needs per device, whatever layers it gets.
    let fixed = |d: usize| if d == 0 { u.input + c.input } else { c.layers_only() };
    let room: Vec<u64> = devices.iter().enumerate().map(|(i, d)| d.available.saturating_sub(fixed(i))).collect();
    let total_cost: u64 = (0..n_units as usize).map(cost).sum::<u64>();
    let room_sum: u64 = room.iter().sum();
    // Proportional: each device's share of the bytes, layers in order, rounding each cut to
    // the nearer layer boundary.
    let mut proportional = vec![0usize; n_units as usize];
    if room_sum > 0 {
        let mut target_end = 0f64;
        let mut at = 0usize;
        let mut acc = 0f64;
        let last = room.iter().rposition(|&r| r > 0).unwrap_or(0);
        for (d, r) in room.iter().enumerate() {
            target_end += total_cost as f64 * *r as f64 / room_sum as f64;
            while at < n_units as usize && (d == last || acc + cost(at) as f64 / 2.0 <= target_end) {
                proportional[at] = d;
                acc += cost(at) as f64;
                at += 1;
            }
        }
    }
    let p = eval(&proportional);
    if p.fits {
        return p;
    }
    // In order: each device takes what it can hold, the output reserved on one device (the
    // last that gets layers, as llama.cpp puts it), trying the last devices first.
    let out_cost = cost(n_layer as usize);
    for d_out in (0..devices.len()).rev() {
        if room[d_out] < out_cost {
            continue;
        }
        let mut left = room.clone();
        left[d_out] -= out_cost;
        let mut greedy = vec![d_out; n_units as usize];
        let mut d = 0;
        let mut placed = true;
        for (i, slot) in greedy.iter_mut().enumerate().take(n_layer as usize) {
            while d < d_out && left[d] < cost(i) {
                d += 1;
            }
            if left[d] < cost(i) {
                placed = false;
                break;
            }
            left[d] -= cost(i);
            *slot = d;
        }
        if placed {
            let g = eval(&greedy);
            if g.fits {
                return g;
            }
        }
    }
    p
}

/// With GPUs: as many layers as fit leave the host (the last ones, as llama.cpp offloads), spread
/// over the offload devices in proportion to their room as llama.cpp's default split does; the
/// host keeps the first layers. The most layers that fit wins: compute on a GPU is faster than
/// on the host, whatever the host's room.
fn gpus_first(
    n_units: u32,
    devices: &[Device],
    u: &Units,
    kv_layer: u64,
    c: &crate::fit::ComputeParts,
    moe: bool,
    eval: &dyn Fn(&[usize], u32) -> Placement,
) -> Placement {
    let n_layer = n_units - 1;
    let avg_layer = u.layers.iter().sum::<u64>() / u.layers.len().max(1) as u64 + kv_layer;
    let rooms: Vec<f32> = devices[1..].iter().map(|d| d.available.saturating_sub(c.with_output()) as f32).collect();
    let by_room = |g: u32| if rooms.iter().sum::<f32>() > 0.0 { assign_like_llama(n_units, g, &rooms) } else { vec![0; n_units as usize] };
    // A Mixture-of-Experts model: every layer on the GPUs with the experts of the first k
    // layers in RAM beats fewer layers on the GPUs (attention and the shared weights are where
    // a token's compute is; the experts it uses are a small part of theirs).
    let k_all = if moe { n_layer } else { 0 };
    if moe {
        for k in 0..=n_layer {
            let p = eval(&by_room(n_units), k);
            if p.fits {
                return p;
            }
        }
    }
    let mut best = None;
    for g in (0..=n_units).rev() {
        let p = eval(&by_room(g), k_all);
        if p.fits {
            return p;
        }
        // Proportions by room can leave one device short while another has room: the same
        // number of layers split by what each device can hold in whole layers.
        let counts: Vec<f32> = devices[1..]
            .iter()
            .map(|d| (d.available.saturating_sub(c.with_output() + u.output + u.tied_copy) / avg_layer.max(1)) as f32)
            .collect();
        if counts.iter().sum::<f32>() > 0.0 {
            let q = eval(&assign_like_llama(n_units, g, &counts), k_all);
            if q.fits {
                return q;
            }
        }
        best.get_or_insert(p);
    }
    best.unwrap_or_else(|| eval(&vec![0; n_units as usize], k_all))
}

fn evaluate_empty(devices: &[Device]) -> Placement {
    Placement { devices: Vec::new(), n_layer: 0, gpu_layers: 0, tensor_split: vec![0.0; devices.len().saturating_sub(1)], n_cpu_moe: 0, fits: false }
}

/// The plan for `assign` (device per unit), with the expert tensors of layers below `moe_k`
/// and the pinned tensors of every layer kept on the host.
fn evaluate(first: &Gguf, plan: &ContextPlan, devices: &[Device], u: &Units, kv_layer: u64, assign: &[usize], moe_k: u32) -> Placement {
    let n_layer = u.layers.len();
    let c = compute_parts(first, plan);
    let mut out: Vec<DevicePlan> = devices
        .iter()
        .map(|d| DevicePlan {
            name: d.name.clone(),
            available: d.available,
            first_layer: 0,
            n_layers: 0,
            output: false,
            input: false,
            weights: 0,
            kv_cache: 0,
            compute: 0,
            total: 0,
            gpu: d.gpu,
            shared: d.shared,
            shared_ram: 0,
            fits: true,
        })
        .collect();
    out[0].input = true;
    out[0].weights += u.input;
    for (i, &d) in assign.iter().enumerate() {
        let in_ram = if d == 0 || i >= n_layer { 0 } else { u.pinned[i] + if (i as u32) < moe_k { u.experts[i] } else { 0 } };
        out[0].weights += in_ram;
        let dp = &mut out[d];
        if i < n_layer {
            if dp.n_layers == 0 {
                dp.first_layer = i as u32;
            }
            dp.n_layers += 1;
            dp.weights += u.layers[i] - in_ram;
            dp.kv_cache += kv_layer;
        } else if d != 0 && u.head_on_host {
            // The head is computed on the host; the device keeps only what is not pinned.
            out[0].output = true;
            out[0].weights += u.output_pinned;
            out[d].weights += u.output - u.output_pinned;
        } else {
            let held = if d == 0 { 0 } else { u.output_pinned };
            out[0].weights += held;
            let dp = &mut out[d];
            dp.output = true;
            dp.weights += u.output - held + if d == 0 { 0 } else { u.tied_copy };
        }
    }
    // With every layer offloaded over two or more devices llama.cpp pipelines micro-batches:
    // its scheduler keeps 4 copies of each device's inputs (the mask and the hidden state).
    let on_host = assign.iter().filter(|&&d| d == 0).count();
    let pipelined = on_host == 0 && devices.len() > 2;
    let extra = if pipelined { 4 * (c.mask + c.input - (2 << 20)) } else { 0 };
    // With layers on a GPU of this machine, the host's compute buffer is the GPU backend's
    // pinned host memory: the batch's inputs, the mask and the embeddings staged for upload.
    let on_gpu = devices.iter().zip(&out).any(|(d, p)| d.gpu && (p.n_layers > 0 || p.output));
    for (i, dp) in out.iter_mut().enumerate() {
        dp.compute = if dp.output {
            c.with_output()
        } else if dp.n_layers > 0 {
            c.layers_only()
        } else {
            0
        };
        if i == 0 {
            dp.compute = if on_gpu { c.input + c.mask + (c.input - (2 << 20)) } else { dp.compute.max(c.input) };
        }
        dp.compute += extra;
        dp.total = dp.weights + dp.kv_cache + dp.compute;
        dp.fits = dp.total <= dp.available;
    }
    // Integrated GPUs take their memory from the host's RAM.
    let shared: u64 = out.iter().filter(|d| d.shared).map(|d| d.total).sum();
    if shared > 0 {
        out[0].shared_ram = shared;
        out[0].fits = out[0].total + shared <= out[0].available;
        if !out[0].fits {
            for d in out.iter_mut().filter(|d| d.shared && d.total > 0) {
                d.fits = false;
            }
        }
    }
    let on_host = on_host as u32;
    let tensor_split = (1..devices.len()).map(|d| assign.iter().filter(|&&x| x == d).count() as f32).collect();
    let fits = out.iter().all(|d| d.fits);
    let n_cpu_moe = if u.experts.iter().any(|&e| e > 0) { moe_k } else { 0 };
    Placement { devices: out, n_layer: n_layer as u32, gpu_layers: (n_layer as u32 + 1) - on_host, tensor_split, n_cpu_moe, fits }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorData;

    /// A llama-like model: 8 layers of 1 MiB each, a 2 MiB embedding, tied output.
    fn model(tied: bool) -> Gguf {
        model_with_mtp(tied, 0)
    }

    /// The same, the last `nextn` of its layers marked as multi-token-prediction layers.
    fn model_with_mtp(tied: bool, nextn: u32) -> Gguf {
        let mut w = crate::fit::tests::llama_header(8);
        if nextn > 0 {
            w.set("llama.nextn_predict_layers", nextn);
        }
        w.tensor("token_embd.weight", vec![512u64, 1024], 0, TensorData::Zeros(2 << 20));
        for i in 0..8 {
            w.tensor(&format!("blk.{i}.ffn_up.weight"), vec![256u64, 1024], 0, TensorData::Zeros(1 << 20));
        }
        w.tensor("output_norm.weight", vec![64u64], 0, TensorData::Zeros(256));
        if !tied {
            w.tensor("output.weight", vec![512u64, 1024], 0, TensorData::Zeros(2 << 20));
        }
        let bytes = w.to_bytes().unwrap();
        Gguf::read(&bytes[..], Some(bytes.len() as u64)).unwrap()
    }

    fn dev(name: &str, mib: u64) -> Device {
        Device::new(name, mib << 20)
    }

    const PLAN: ContextPlan = ContextPlan { n_ctx: 1024, n_ubatch: 1, k_bytes_per_elem: 2.0, v_bytes_per_elem: 2.0, parallel: 1, flash_attn: true };

    #[test]
    fn one_device_is_the_whole_estimate() {
        let g = model(false);
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 1 << 20)], &Split::default());
        let e = crate::fit::estimate(std::slice::from_ref(&g), &PLAN);
        assert!(p.fits);
        assert_eq!(p.devices[0].weights, e.weights);
        assert_eq!(p.devices[0].kv_cache, e.kv_cache);
        assert_eq!(p.devices[0].total, e.total);
        assert_eq!(p.gpu_layers, 0);
        assert_eq!(p.devices[0].layers_text(), "input + 0-7 + output");
    }

    #[test]
    fn equal_devices_share_equally_and_llama_agrees() {
        let g = model(false);
        let devs = [dev("cpu", 100), dev("w1", 100), dev("w2", 100)];
        let p = place(std::slice::from_ref(&g), &PLAN, &devs, &Split::default());
        assert!(p.fits, "{}", p.table());
        let layers: Vec<u32> = p.devices.iter().map(|d| d.n_layers).collect();
        assert_eq!(layers.iter().sum::<u32>(), 8);
        assert!(layers.iter().all(|&n| n >= 1), "{layers:?}");
        // Balanced by bytes: no device is more than one layer plus the output ahead of another.
        let totals: Vec<u64> = p.devices.iter().map(|d| d.total).collect();
        let spread = totals.iter().max().unwrap() - totals.iter().min().unwrap();
        assert!(spread <= (4 << 20), "{totals:?}");
        assert!(p.devices[2].output);
        // The llama.cpp parameters of the plan reproduce it.
        let back = assign_like_llama(9, p.gpu_layers, &p.tensor_split);
        let mut expect = Vec::new();
        for (d, dp) in p.devices.iter().enumerate() {
            expect.extend(std::iter::repeat_n(d, dp.n_layers as usize + dp.output as usize));
        }
        assert_eq!(back, expect);
    }

    #[test]
    fn a_small_device_gets_less_and_overflow_is_reported() {
        let g = model(false);
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 8), dev("big", 100)], &Split::default());
        assert!(p.fits, "{}", p.table());
        assert!(p.devices[0].n_layers < p.devices[1].n_layers);
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 3), dev("w1", 4)], &Split::default());
        assert!(!p.fits);
        assert!(!p.shortfalls().is_empty());
        assert!(p.table().contains("short by"), "{}", p.table());
    }

    #[test]
    fn the_output_goes_where_it_fits() {
        let g = model(false);
        // The last device is too small for the output layer: it gets nothing, the one before
        // takes the output.
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 9), dev("w1", 9), dev("w2", 1)], &Split::default());
        assert!(p.fits, "{}", p.table());
        assert!(p.devices[1].output && p.devices[2].n_layers == 0 && !p.devices[2].output, "{}", p.table());
        assert_eq!(p.tensor_split.last(), Some(&0.0));
    }

    #[test]
    fn with_mtp_over_workers_the_block_and_the_head_stay_on_the_host() {
        assert!(mtp_on_host(&model(false)).is_empty(), "no block, nothing kept");
        for tied in [false, true] {
            let g = model_with_mtp(tied, 1);
            let pins = mtp_on_host(&g);
            assert_eq!(pins[0], "^blk\\.(7)\\.");
            let split = Split { gpu_layers: Some(9), cpu_tensors: pins, ..Split::default() };
            let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), dev("w1", 100)], &split);
            // llama.cpp's assignment is the same (every layer and the output named for the
            // worker); the block's weights and the head are in RAM, the logits computed here.
            assert_eq!((p.gpu_layers, p.devices[1].n_layers), (9, 8));
            assert!(p.devices[0].output && !p.devices[1].output, "tied {tied}");
            assert_eq!(p.devices[1].weights, 7 << 20, "tied {tied}: no copy of the embedding either");
            let head = if tied { 0 } else { 2 << 20 };
            assert_eq!(p.devices[0].weights, (2 << 20) + (1 << 20) + 256 + head, "tied {tied}");
            assert_eq!(p.devices[0].compute, compute_parts(&g, &PLAN).with_output().max(compute_parts(&g, &PLAN).input));
        }
    }

    #[test]
    fn tied_output_is_copied_to_a_remote_output_device() {
        let g = model(true);
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), dev("w1", 100)], &Split { gpu_layers: Some(9), ..Split::default() });
        assert_eq!(p.devices[0].n_layers, 0);
        assert!(p.devices[1].output);
        assert_eq!(p.devices[1].weights, (8 << 20) + 256 + (2 << 20));
        let local = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100)], &Split::default());
        assert_eq!(local.devices[0].weights, (10 << 20) + 256);
    }

    #[test]
    fn forced_splits_follow_llama() {
        let g = model(false);
        let devs = [dev("cpu", 100), dev("w1", 100), dev("w2", 100)];
        let p = place(std::slice::from_ref(&g), &PLAN, &devs, &Split { gpu_layers: Some(4), tensor_split: vec![1.0, 3.0], ..Split::default() });
        assert_eq!(p.devices[0].n_layers, 5);
        assert_eq!(p.devices[1].n_layers, 1);
        assert_eq!(p.devices[2].n_layers, 2);
        assert!(p.devices[2].output);
        assert_eq!(p.gpu_layers, 4);
        assert_eq!(assign_like_llama(9, 0, &[1.0]), vec![0; 9]);
        assert_eq!(assign_like_llama(9, 99, &[1.0, 1.0]), vec![1, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(assign_like_llama(9, 9, &[4.0, 5.0]), vec![1, 1, 1, 1, 2, 2, 2, 2, 2]);
    }

    /// A Mixture-of-Experts model: 8 layers, each 256 KiB of attention and 1 MiB of experts.
    fn moe_model() -> Gguf {
        let mut w = crate::fit::tests::llama_header(8);
        w.tensor("token_embd.weight", vec![512u64, 1024], 0, TensorData::Zeros(2 << 20));
        for i in 0..8 {
            w.tensor(&format!("blk.{i}.attn_q.weight"), vec![64u64, 1024], 0, TensorData::Zeros(256 << 10));
            w.tensor(&format!("blk.{i}.ffn_up_exps.weight"), vec![256u64, 1024], 0, TensorData::Zeros(1 << 20));
        }
        w.tensor("output_norm.weight", vec![64u64], 0, TensorData::Zeros(256));
        w.tensor("output.weight", vec![512u64, 1024], 0, TensorData::Zeros(2 << 20));
        let bytes = w.to_bytes().unwrap();
        Gguf::read(&bytes[..], Some(bytes.len() as u64)).unwrap()
    }

    fn gpu(name: &str, mib: u64) -> Device {
        Device::gpu(name, mib << 20, false)
    }

    #[test]
    fn a_gpu_is_filled_first_and_the_host_keeps_the_first_layers() {
        let g = model(false);
        // Room for the output and about four layers on the GPU: the last layers go there.
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), gpu("Vulkan0", 9)], &Split::default());
        assert!(p.fits, "{}", p.table());
        let (host, gpu0) = (&p.devices[0], &p.devices[1]);
        assert!(gpu0.output && gpu0.n_layers >= 3, "{}", p.table());
        assert_eq!(host.first_layer, 0);
        assert_eq!(gpu0.first_layer, host.n_layers, "{}", p.table());
        assert!(gpu0.total <= 9 << 20);
        assert_eq!(p.gpu_layers, gpu0.n_layers + 1);
        // The llama.cpp parameters reproduce it.
        let back = assign_like_llama(9, p.gpu_layers, &p.tensor_split);
        assert_eq!(back.iter().filter(|&&d| d == 1).count() as u32, p.gpu_layers);
        // A GPU with room for everything takes everything, even with a big host.
        let all = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 1000), gpu("Vulkan0", 100)], &Split::default());
        assert_eq!(all.gpu_layers, 9);
        assert_eq!(all.devices[0].n_layers, 0);
        assert_eq!(all.devices[0].layers_text(), "input");
        // No room on the GPU at all: everything on the host, still a plan that fits.
        let none = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), gpu("Vulkan0", 1)], &Split::default());
        assert!(none.fits && none.gpu_layers == 0, "{}", none.table());
    }

    #[test]
    fn two_gpus_and_a_worker_share_by_room() {
        let g = model(false);
        let devs = [dev("cpu", 100), dev("w1 CPU", 100), gpu("CUDA0", 100), gpu("CUDA1", 100)];
        let p = place(std::slice::from_ref(&g), &PLAN, &devs, &Split::default());
        assert!(p.fits, "{}", p.table());
        assert_eq!(p.gpu_layers, 9);
        let layers: Vec<u32> = p.devices.iter().map(|d| d.n_layers).collect();
        assert_eq!(layers[0], 0);
        assert!(layers[1..].iter().all(|&n| (2..=3).contains(&n)), "{layers:?}");
        assert!(p.devices[3].output);
    }

    #[test]
    fn an_integrated_gpu_counts_in_the_hosts_ram_once() {
        let g = model(false);
        let shared = |mib: u64| Device::gpu("Vulkan0", mib << 20, true);
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 40), shared(40)], &Split::default());
        assert!(p.fits, "{}", p.table());
        assert_eq!(p.gpu_layers, 9);
        assert_eq!(p.devices[0].shared_ram, p.devices[1].total);
        assert!(p.table().contains("shares RAM"), "{}", p.table());
        // The GPU's budget alone would hold it, the RAM both share would not.
        let short = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 12), shared(100)], &Split::default());
        assert!(!short.fits, "{}", short.table());
        assert!(short.table().contains("short by"), "{}", short.table());
    }

    #[test]
    fn moe_experts_go_to_ram_before_layers_leave_the_gpu() {
        let g = moe_model();
        let auto = Split { auto_moe: true, ..Split::default() };
        // Everything needs about 14 MiB; the GPU has 10: the experts of the first layers stay
        // in RAM and every layer is on the GPU.
        let p = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), gpu("Vulkan0", 10)], &auto);
        assert!(p.fits, "{}", p.table());
        assert_eq!(p.gpu_layers, 9, "{}", p.table());
        assert!(p.n_cpu_moe > 0 && p.n_cpu_moe < 8, "{}", p.n_cpu_moe);
        assert_eq!(p.devices[0].weights, (2 << 20) + p.n_cpu_moe as u64 * (1 << 20));
        // The planner's choice is the smallest such k.
        let fewer = Split { cpu_tensors: (0..p.n_cpu_moe - 1).map(|i| format!("blk\\.{i}{EXPERTS_REGEX}")).collect(), ..Split::default() };
        let q = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), gpu("Vulkan0", 10)], &Split { gpu_layers: Some(9), ..fewer });
        assert!(!q.fits, "{}", q.table());
        // --cpu-moe: every expert in RAM, whatever the room.
        let all = Split { cpu_tensors: vec![EXPERTS_REGEX.to_string()], ..Split::default() };
        let c = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), gpu("Vulkan0", 100)], &all);
        assert_eq!(c.gpu_layers, 9);
        assert_eq!(c.devices[0].weights, (2 << 20) + 8 * (1 << 20));
        assert_eq!(c.n_cpu_moe, 0);
        // Without the planner's MoE moves (the user placed tensors), layers leave the GPU.
        let plain = place(std::slice::from_ref(&g), &PLAN, &[dev("cpu", 100), gpu("Vulkan0", 10)], &Split::default());
        assert!(plain.gpu_layers < 9 && plain.n_cpu_moe == 0, "{}", plain.table());
    }
}
