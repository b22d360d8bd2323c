//! Pull benchmark against the local fixture server (run by `bench/pull.sh`):
//!
//! 1. throughput of `hearth pull URL` vs `curl -o FILE URL` for the same file from the same
//!    local server, alternating, 3 runs each (ratio = hearth / curl, higher is better; hearth
//!    also hashes and verifies every byte, curl does not);
//! 2. bytes fetched again after a `hearth pull` is SIGKILLed at 50% and run again (target:
//!    less than one range).
//!
//! Usage: pull_bench HEARTH_BINARY MODEL.gguf

use std::process::Command;
use std::time::{Duration, Instant};

use hearth_testkit::{Fault, Fixture};
use sha2::Digest;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [hearth, model] = args.as_slice() else {
        eprintln!("usage: pull_bench HEARTH_BINARY MODEL.gguf");
        std::process::exit(2);
    };
    let bytes = std::fs::read(model).expect("read the model");
    let size = bytes.len() as u64;
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let fx = Fixture::start();
    let url = fx.add_url_file("files/model.gguf", &bytes);
    let scratch = tempfile::tempdir().unwrap();

    // Unthrottled loopback: CPU-bound on a small machine (the server shares the cores, and
    // hearth hashes and fsyncs every byte, curl does neither). Then a CDN-like 40 MB/s limit per
    // connection, where parallel ranges pay off.
    for limit in [None, Some(40_000_000u64)] {
        let fault = limit.map(|l| fx.inject(Fault::throttle(l).on_path("/files/")));
        let mut curl_s = Vec::new();
        let mut hearth_s = Vec::new();
        for run in 0..3 {
            let out = scratch.path().join(format!("curl-{run}"));
            let t = Instant::now();
            let st = Command::new("curl").args(["-sSf", "-o"]).arg(&out).arg(&url).status().expect("run curl");
            assert!(st.success());
            curl_s.push(t.elapsed().as_secs_f64());
            std::fs::remove_file(&out).unwrap();

            let store = scratch.path().join(format!("store-{run}"));
            let t = Instant::now();
            let st = Command::new(hearth)
                .args(["pull", &url, "--no-progress"])
                .env("HEARTH_MODELS", &store)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run hearth");
            assert!(st.success());
            hearth_s.push(t.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&store).unwrap();
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let mb = size as f64 / 1e6;
        let (c, h) = (mb / mean(&curl_s), mb / mean(&hearth_s));
        let what = limit.map_or("loopback, no limit".to_string(), |l| format!("{} MB/s per connection", l / 1_000_000));
        println!("throughput ({what}): curl {c:.0} MB/s, hearth pull {h:.0} MB/s, ratio {:.2} ({} MB file, 3 runs each)", h / c, mb.round());
        if let Some(f) = fault {
            fx.remove_fault(f);
        }
    }

    // SIGKILL at 50%, then resume.
    let store = scratch.path().join("store-kill");
    fx.clear_requests();
    let throttle = fx.inject(Fault::throttle(4 << 20).on_path("/files/"));
    let mut child = Command::new(hearth)
        .args(["pull", &url, "--no-progress"])
        .env("HEARTH_MODELS", &store)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(fx.wait_for(Duration::from_secs(120), |fx| fx.bytes_served(&sha) >= size / 2));
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = fx.bytes_served(&sha);
    fx.remove_fault(throttle);
    let st = Command::new(hearth)
        .args(["pull", &url, "--no-progress"])
        .env("HEARTH_MODELS", &store)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let total = fx.bytes_served(&sha);
    let range = size / 8;
    println!(
        "resume after SIGKILL at {:.0}%: {} bytes fetched again ({:.2} of one {} byte range); {} served in all for a {} byte file",
        100.0 * at_kill as f64 / size as f64,
        total - size,
        (total - size) as f64 / range as f64,
        range,
        total,
        size
    );
}
