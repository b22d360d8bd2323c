//! The planner (hearth_gguf::plan) against what llama.cpp allocates on each device when the
//! starter model is split over this process's CPU and two RPC servers (on 127.0.0.1, in this
//! process): layers land where the plan says, and each device's model, KV and compute buffers
//! are within 5% or 64 MiB of the plan's. Its own test binary: it installs a global log
//! subscriber and registers RPC devices process-wide.

mod common;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::Captured;
use hearth_engine::{Engine, EngineOptions, FlashAttn, ModelOptions};
use hearth_gguf::fit::ContextPlan;
use hearth_gguf::plan::{place, Device, Split};

/// Sum of the MiB figures on log lines that contain `what` and `device`.
fn reported(log: &str, device: &str, what: &str) -> f64 {
    log.lines()
        .filter(|l| l.contains(what) && l.contains(device))
        .filter_map(|l| l.split('=').nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

fn rpc_server() -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let ep = endpoint.clone();
    std::thread::spawn(move || hearth_engine::rpc::serve(&ep, 1, None, &[], false));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&endpoint).is_err() {
        assert!(Instant::now() < deadline, "the RPC server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    endpoint
}

#[test]
fn each_device_gets_what_the_plan_says() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt().with_env_filter("llama.cpp=info").with_writer(move || writer.clone()).with_ansi(false).init();
    let servers = [rpc_server(), rpc_server()];
    let path = common::model_path();
    let gguf = hearth_gguf::Gguf::open(&path).unwrap();
    let gib = 1u64 << 30;
    let mut rows = Vec::new();
    let cases: [(&str, [u64; 3], Split, u32, bool); 3] = [
        ("auto, equal devices", [gib, gib, gib], Split::default(), 4096, true),
        ("auto, a small host", [120 << 20, gib, gib], Split::default(), 4096, true),
        ("forced -ngl 31 -ts 1,1", [gib, gib, gib], Split { gpu_layers: Some(31), tensor_split: vec![1.0, 1.0], ..Split::default() }, 8192, true),
    ];
    for (name, avail, split, ctx, fa) in cases {
        let plan = ContextPlan { flash_attn: fa, ..ContextPlan::f16(ctx as u64, 512) };
        let devices = [
            Device::new("CPU", avail[0]),
            Device::new(servers[0].clone(), avail[1]),
            Device::new(servers[1].clone(), avail[2]),
        ];
        let p = place(std::slice::from_ref(&gguf), &plan, &devices, &split);
        assert!(p.fits, "{}", p.table());
        log.0.lock().unwrap().clear();
        let mut m = ModelOptions::new(&path);
        m.rpc_servers = servers.to_vec();
        m.gpu_layers = Some(p.gpu_layers as i32);
        m.tensor_split = p.tensor_split.clone();
        // Read, not mapped: with mmap the host's buffer is reported as the whole mapped span
        // of the file, offloaded tensors included.
        m.mmap = false;
        let mut o = EngineOptions::new(m);
        o.ctx_size = ctx;
        o.threads = Some(2);
        o.flash_attn = if fa { FlashAttn::On } else { FlashAttn::Off };
        drop(Engine::start(o).unwrap());
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        let offloaded = format!("offloaded {}/31 layers", p.gpu_layers);
        assert!(text.contains(&offloaded), "{offloaded}: {text}");
        rows.push(format!("{name}, ctx {ctx}, flash attention {}:\n{}", if fa { "on" } else { "off" }, p.table()));
        for (d, dev) in p.devices.iter().enumerate() {
            let key = if d == 0 { "CPU".to_string() } else { format!("[{}]", dev.name) };
            let real = [reported(&text, &key, "model buffer size"), reported(&text, &key, "KV buffer size"), reported(&text, &key, "compute buffer size")];
            let mib = |n: u64| n as f64 / (1 << 20) as f64;
            let ours = [mib(dev.weights), mib(dev.kv_cache), mib(dev.compute)];
            rows.push(format!(
                "  {:<22} {:<16} model {:6.1} / {:6.1}  KV {:6.1} / {:6.1}  compute {:6.1} / {:6.1} MiB (plan / llama.cpp)",
                dev.name,
                dev.layers_text(),
                ours[0],
                real[0],
                ours[1],
                real[1],
                ours[2],
                real[2]
            ));
            for (i, what) in ["model", "KV", "compute"].iter().enumerate() {
                let diff = (ours[i] - real[i]).abs();
                assert!(diff <= 64.0 || diff / real[i].max(1e-9) <= 0.05, "{what} on {}: plan {} vs llama.cpp {}\n{}\n{text}", dev.name, ours[i], real[i], rows.join("\n"));
            }
        }
    }
    println!("{}", rows.join("\n"));
}
