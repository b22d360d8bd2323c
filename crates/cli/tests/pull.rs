//! `hearth pull`, `add`, `list`, `rm`, `import`/`export` through the real binary, against the
//! local fixture server (Hugging Face API, Ollama registry v2, a "CDN" host, plain URLs) that
//! serves the real test model and injects stalls, cuts, wrong bytes and error answers.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use hearth_testkit::{media_type, Fault, Fixture};
use sha2::Digest;

mod common;

use common::{model_path, text, UPSTREAM_GREEDY};

const REPO: &str = "test/SmolLM2-135M-Instruct-GGUF";
const FILE: &str = "SmolLM2-135M-Instruct-Q4_1.gguf";

fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(model_path()).unwrap())
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// A scratch home for one test: its own store, HF cache and Ollama dir.
struct Env {
    dir: tempfile::TempDir,
    fx: Fixture,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::tempdir().unwrap(), fx: Fixture::start() }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
        c.args(args)
            .env("HEARTH_MODELS", self.store())
            .env("HF_ENDPOINT", self.fx.base_url())
            .env("HF_HUB_CACHE", self.dir.path().join("hf-cache"))
            .env("HF_HOME", self.dir.path().join("hf-home"))
            .env("OLLAMA_MODELS", self.dir.path().join("ollama"))
            .env("HEARTH_STALL_TIMEOUT", "2")
            .env_remove("HF_TOKEN")
            .env_remove("HUGGING_FACE_HUB_TOKEN")
            .env_remove("HEARTH_LOG")
            .env("HEARTH_HOST", "127.0.0.1:1")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(out.status.success(), "hearth {args:?} failed: {}", text(&out.stderr));
        out
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn blob(&self, sha: &str) -> PathBuf {
        self.store().join("blobs").join(format!("sha256-{sha}"))
    }

    fn hf_model(&self) -> String {
        self.fx.set_hf_page_size(2);
        self.fx.add_hf_file(REPO, "README.md", b"# SmolLM2\n");
        self.fx.add_hf_file(REPO, ".gitattributes", b"*.gguf filter=lfs\n");
        self.fx.add_hf_file(REPO, FILE, model_bytes()).sha256
    }
}

fn greedy_answer(env: &Env, name: &str) -> String {
    let out = env.ok(&["run", name, "What is the capital of France?", "--temp", "0", "-n", "32", "-t", "2"]);
    text(&out.stdout).trim_end().to_string()
}

#[test]
fn hugging_face_pull_lists_pages_picks_the_quant_verifies_and_runs() {
    let env = Env::new();
    let sha = env.hf_model();
    env.fx.add_hf_file(REPO, "SmolLM2-135M-Instruct-Q8_0.gguf", b"not this one");
    let out = env.ok(&["pull", &format!("hf.co/{REPO}:q4_1"), "--no-progress"]);
    assert!(text(&out.stderr).contains("pulled hf.co/test/SmolLM2-135M-Instruct-GGUF:q4_1"), "{}", text(&out.stderr));
    // The listing was paginated, the bytes came from the CDN host after a redirect.
    let reqs = env.fx.requests();
    assert!(reqs.iter().filter(|r| r.path.contains("/tree/")).count() >= 2, "several listing pages");
    assert!(reqs.iter().any(|r| r.port == env.fx.cdn_port() && r.status == 206));
    assert_eq!(sha256_hex(&std::fs::read(env.blob(&sha)).unwrap()), sha);
    assert_eq!(greedy_answer(&env, &format!("hf.co/{REPO}:q4_1")), UPSTREAM_GREEDY.trim_end());
    let list = text(&env.ok(&["list", "--json"]).stdout);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["name"], format!("hf.co/{REPO}:q4_1"));
    assert_eq!(v[0]["details"]["quantization"], "Q4_1");
    // A second pull of the same model downloads nothing.
    let before = env.fx.bytes_served(&sha);
    env.ok(&["pull", &format!("hf.co/{REPO}:q4_1"), "--no-progress"]);
    assert_eq!(env.fx.bytes_served(&sha), before);
}

#[test]
fn a_missing_quant_lists_the_ones_that_exist_and_a_private_repo_asks_for_a_token() {
    let env = Env::new();
    env.hf_model();
    let out = env.run(&["pull", &format!("hf.co/{REPO}:Q5_K_M")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Q5_K_M") && err.contains("available: Q4_1"), "{err}");
    let out = env.run(&["pull", "hf.co/test/no-such-repo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));

    env.fx.set_hf_private(REPO, "sesame");
    let out = env.run(&["pull", &format!("hf.co/{REPO}:Q4_1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("HF_TOKEN"), "{}", text(&out.stderr));
    let out = env.cmd(&["pull", &format!("hf.co/{REPO}:Q4_1"), "--no-progress"]).env("HF_TOKEN", "sesame").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The token went to the Hub, never to the CDN host.
    for r in env.fx.requests() {
        if r.port == env.fx.cdn_port() {
            assert!(r.authorization.is_none(), "token leaked to the CDN: {r:?}");
        }
    }
}

#[test]
fn ollama_registry_pull_follows_the_cdn_redirect_and_keeps_the_layers() {
    let env = Env::new();
    let template = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n";
    let params = br#"{"stop":["<|im_start|>","<|im_end|>"]}"#;
    let m = env.fx.add_ollama_model(
        "library",
        "smollm2",
        "135m",
        &[(media_type::MODEL, model_bytes()), (media_type::TEMPLATE, template.as_bytes()), (media_type::PARAMS, params)],
    );
    let reference = format!("{}/library/smollm2:135m", env.fx.registry_host());
    // Without --insecure the plain-http registry is refused with a hint.
    let out = env.run(&["pull", &reference]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--insecure"), "{}", text(&out.stderr));
    env.ok(&["pull", &reference, "--insecure", "--no-progress"]);
    assert!(env.fx.requests().iter().any(|r| r.port == env.fx.cdn_port()), "blobs came from the CDN host");
    let name = format!("{}/library/smollm2:135m", env.fx.registry_host());
    let show = text(&env.ok(&["show", &name, "--json"]).stdout);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["details"]["architecture"], "llama");
    assert_eq!(v["supported"], true);
    for layer in &m.layers {
        assert!(env.blob(layer.digest.trim_start_matches("sha256:")).is_file());
    }
    assert_eq!(greedy_answer(&env, &name), UPSTREAM_GREEDY.trim_end());
    let out = env.run(&["pull", &format!("{}/library/nope:1", env.fx.registry_host()), "--insecure"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("model library/nope:1 not found"), "{}", text(&out.stderr));
}

#[test]
fn url_pull_names_the_model_after_the_file() {
    let env = Env::new();
    let url = env.fx.add_url_file("files/SmolLM2-135M-Instruct.Q4_1.gguf", model_bytes());
    env.ok(&["pull", &url, "--no-progress"]);
    assert_eq!(greedy_answer(&env, "smollm2-135m-instruct.q4_1"), UPSTREAM_GREEDY.trim_end());
    // Not a GGUF: refused, nothing committed.
    let bad = env.fx.add_url_file("files/page.gguf", b"<html>not a model</html>");
    let out = env.run(&["pull", &bad, "--no-progress"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a usable GGUF"), "{}", text(&out.stderr));
    assert!(!text(&env.ok(&["list"]).stdout).contains("page"));
}

#[test]
fn a_pull_killed_at_several_points_resumes_without_fetching_finished_ranges_again() {
    let env = Env::new();
    let sha = env.hf_model();
    let size = model_bytes().len() as u64;
    // 4 connections of 4 MB/s each: about 6 s for the whole file.
    let throttle = env.fx.inject(Fault::throttle(4 << 20).for_blob(&sha));
    let reference = format!("hf.co/{REPO}:Q4_1");
    for fraction in [0.25, 0.6] {
        let mut child = env.spawn(&["pull", &reference, "--no-progress"]);
        let target = (size as f64 * fraction) as u64;
        assert!(env.fx.wait_for(Duration::from_secs(60), |fx| fx.bytes_served(&sha) >= target), "the download progressed");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(!env.blob(&sha).exists(), "no blob from a killed pull");
        assert!(text(&env.ok(&["list"]).stdout).lines().count() == 1, "no manifest from a killed pull");
    }
    env.fx.remove_fault(throttle);
    let out = env.ok(&["pull", &reference, "--no-progress"]);
    assert!(text(&out.stderr).contains("resuming"), "{}", text(&out.stderr));
    let served = env.fx.bytes_served(&sha);
    // Ranges are size / 8 (4 connections, 2 ranges each).
    let range = size / 8;
    assert!(served < size + range, "re-downloaded {} bytes, one range is {range}", served - size);
    assert_eq!(sha256_hex(&std::fs::read(env.blob(&sha)).unwrap()), sha);
    assert!(!env.store().join("blobs").read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("partial")));
}

#[test]
fn stalls_cuts_and_error_answers_are_survived() {
    let env = Env::new();
    let sha = env.hf_model();
    env.fx.inject(Fault::stall(1 << 20).for_blob(&sha).once());
    env.fx.inject(Fault::cut(3 << 20).for_blob(&sha).once());
    env.fx.inject(Fault::status(429).retry_after(1).for_blob(&sha).on_path("/cdn/").once());
    env.fx.inject(Fault::status(503).for_blob(&sha).on_path("/cdn/").times(2));
    env.fx.inject(Fault::status(416).for_blob(&sha).on_path("/cdn/").on_method("GET").once());
    let out = env.ok(&["pull", &format!("hf.co/{REPO}:Q4_1"), "--no-progress"]);
    let err = text(&out.stderr);
    assert!(err.contains("no data for"), "the stall is reported: {err}");
    assert!(err.contains("retrying"), "{err}");
    assert_eq!(sha256_hex(&std::fs::read(env.blob(&sha)).unwrap()), sha);
    assert!(env.fx.faults().is_empty(), "every fault was hit");
}

#[test]
fn a_stall_that_never_ends_fails_with_the_url_and_bytes_done() {
    let env = Env::new();
    let sha = env.hf_model();
    env.fx.inject(Fault::stall(0).for_blob(&sha));
    let out = env
        .cmd(&["pull", &format!("hf.co/{REPO}:Q4_1"), "--no-progress", "--stall-timeout", "0.5", "--retries", "2", "--connections", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("download of") && err.contains("resolve/main") && err.contains("bytes done"), "{err}");
    assert!(err.contains("hint: the partial download is kept"), "{err}");
}

#[test]
fn wrong_bytes_are_found_and_only_the_bad_range_is_rewritten() {
    let env = Env::new();
    let sha = env.hf_model();
    env.fx.inject(Fault::corrupt(50_000_000).for_blob(&sha).once());
    let out = env.ok(&["pull", &format!("hf.co/{REPO}:Q4_1"), "--no-progress"]);
    let err = text(&out.stderr);
    assert!(err.contains("sha256 mismatch") && err.contains("repaired 1 range"), "{err}");
    assert_eq!(sha256_hex(&std::fs::read(env.blob(&sha)).unwrap()), sha);

    // A server that always sends wrong bytes: the pull fails and leaves no model.
    let env = Env::new();
    let sha = env.hf_model();
    env.fx.inject(Fault::corrupt(1000).for_blob(&sha));
    let out = env.run(&["pull", &format!("hf.co/{REPO}:Q4_1"), "--no-progress"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("sha256 mismatch"), "{}", text(&out.stderr));
    assert!(!env.blob(&sha).exists());
    assert_eq!(text(&env.ok(&["list"]).stdout).lines().count(), 1);
}

#[test]
fn a_server_that_ignores_ranges_or_changes_the_file_is_handled() {
    let env = Env::new();
    let url = env.fx.add_url_file("files/model.gguf", model_bytes());
    env.fx.inject(Fault::ignore_range().on_path("/files/"));
    env.ok(&["pull", &url, "--no-progress", "--name", "whole"]);
    env.fx.clear_faults();

    // The file changes on the server mid-download: the pull starts over and gets the new one.
    let env = Env::new();
    let url = env.fx.add_url_file("files/model.gguf", model_bytes());
    let sha = sha256_hex(model_bytes());
    let mut changed = model_bytes().to_vec();
    let n = changed.len();
    changed[n - 1] ^= 0xff;
    env.fx.inject(Fault::throttle(4 << 20).on_path("/files/"));
    let child = env.spawn(&["pull", &url, "--no-progress", "--name", "changing"]);
    assert!(env.fx.wait_for(Duration::from_secs(60), |fx| fx.bytes_served(&sha) > 8 << 20));
    env.fx.clear_faults();
    env.fx.inject(Fault::change_content(changed.clone()).on_path("/files/"));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("changed"), "{}", text(&out.stderr));
    assert!(env.blob(&sha256_hex(&changed)).is_file());
}

#[test]
fn the_hugging_face_cache_is_hardlinked_not_downloaded() {
    let env = Env::new();
    let sha = env.hf_model();
    let cached = env.dir.path().join(format!("hf-cache/models--{}/blobs/{sha}", REPO.replace('/', "--")));
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, model_bytes()).unwrap();
    let out = env.ok(&["pull", &format!("hf.co/{REPO}:Q4_1"), "--no-progress"]);
    assert!(text(&out.stderr).contains("Hugging Face cache"), "{}", text(&out.stderr));
    assert_eq!(env.fx.bytes_served(&sha), 0);
    assert_eq!(std::fs::metadata(&cached).unwrap().ino(), std::fs::metadata(env.blob(&sha)).unwrap().ino());
}

#[test]
fn ollama_export_and_import_round_trip_by_hardlink() {
    let env = Env::new();
    env.ok(&["add", model_path().to_str().unwrap(), "--name", "smol:q4", "--no-progress"]);
    let sha = sha256_hex(model_bytes());
    let ollama = env.dir.path().join("ollama");
    env.ok(&["export", "ollama", "smol:q4", "--no-progress"]);
    let manifest_path = ollama.join("manifests/registry.ollama.ai/library/smol/q4");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers[0]["mediaType"], "application/vnd.ollama.image.model");
    assert_eq!(layers[0]["digest"], format!("sha256:{sha}"));
    assert!(layers.iter().any(|l| l["mediaType"] == "application/vnd.ollama.image.template"));
    // Every blob named as Ollama names it, with the content its name says; the model by hardlink.
    for d in layers.iter().map(|l| &l["digest"]).chain([&manifest["config"]["digest"]]) {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        let blob = ollama.join(format!("blobs/sha256-{hex}"));
        assert_eq!(sha256_hex(&std::fs::read(&blob).unwrap()), hex);
    }
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&ollama.join(format!("blobs/sha256-{sha}"))), ino(&env.blob(&sha)));
    assert_eq!(ino(&model_path()), ino(&env.blob(&sha)), "`add` hardlinked the file");

    // Into a fresh store: the model comes back under Ollama's name, same inode, and runs.
    let other = Env::new();
    let out = other.ok(&["import", "ollama", "--from", ollama.to_str().unwrap(), "--no-progress"]);
    assert_eq!(text(&out.stdout).trim(), "smol:q4");
    assert_eq!(ino(&other.blob(&sha)), ino(&env.blob(&sha)));
    assert_eq!(greedy_answer(&other, "smol:q4"), UPSTREAM_GREEDY.trim_end());
}

#[test]
fn rm_collects_only_unused_blobs() {
    let env = Env::new();
    env.ok(&["add", model_path().to_str().unwrap(), "--name", "a", "--no-progress"]);
    env.ok(&["cp", "a", "b:two"]);
    let sha = sha256_hex(model_bytes());
    env.ok(&["rm", "a"]);
    assert!(env.blob(&sha).is_file(), "b still uses it");
    assert_eq!(greedy_answer(&env, "b:two"), UPSTREAM_GREEDY.trim_end());
    env.ok(&["rm", "b:two"]);
    assert!(!env.blob(&sha).exists());
    assert!(model_path().is_file(), "the original file is untouched");
    let out = env.run(&["rm", "b:two"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"));
}

#[test]
fn bad_references_are_rejected_clearly() {
    let env = Env::new();
    for r in ["hf.co/", "a:b:c", "../../etc", "hf.co/u/r/notes.txt", "https://"] {
        let out = env.run(&["pull", r]);
        assert_eq!(out.status.code(), Some(1), "{r}");
        let err = text(&out.stderr);
        assert!(err.contains("invalid model reference"), "{r}: {err}");
        assert!(!err.contains("panicked"));
    }
    assert!(env.fx.requests().is_empty(), "nothing was sent for a bad reference");
}

#[test]
fn two_pulls_of_the_same_model_share_one_download() {
    let env = Env::new();
    let sha = env.hf_model();
    env.fx.inject(Fault::throttle(8 << 20).for_blob(&sha));
    let reference = format!("hf.co/{REPO}:Q4_1");
    let a = env.spawn(&["pull", &reference, "--no-progress"]);
    let b = env.spawn(&["pull", &reference, "--no-progress"]);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let size = model_bytes().len() as u64;
    assert!(env.fx.bytes_served(&sha) < size + size / 4, "served {} for {size}", env.fx.bytes_served(&sha));
    assert_eq!(sha256_hex(&std::fs::read(env.blob(&sha)).unwrap()), sha);
}

/// The real model rewritten as a split GGUF of `n` shards by our GGUF writer.
fn split_model(dir: &Path, n: u16) -> Vec<PathBuf> {
    use hearth_gguf::{Gguf, GgufWriter, TensorData};
    let bytes = model_bytes();
    let g = Gguf::read(bytes, Some(bytes.len() as u64)).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &g.metadata {
        w.set(k.clone(), v.clone());
    }
    for t in &g.tensors {
        let start = (g.data_offset + t.offset) as usize;
        let len = t.n_bytes().unwrap() as usize;
        w.tensor(t.name.clone(), t.dims.clone(), t.ggml_type, TensorData::Bytes(bytes[start..start + len].to_vec()));
    }
    w.write_split(&dir.join("SmolLM2-135M-Instruct-Q4_1"), n).unwrap()
}

#[test]
fn a_split_model_is_pulled_whole_and_runs_from_its_first_shard() {
    let env = Env::new();
    let shards = split_model(env.dir.path(), 3);
    assert_eq!(shards.len(), 3);
    for s in &shards {
        let name = s.file_name().unwrap().to_str().unwrap();
        env.fx.add_hf_file(REPO, &format!("split/{name}"), std::fs::read(s).unwrap());
    }
    env.ok(&["pull", &format!("hf.co/{REPO}:Q4_1"), "--no-progress"]);
    let show = text(&env.ok(&["show", &format!("hf.co/{REPO}:Q4_1"), "--json"]).stdout);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["split_count"], 3);
    assert_eq!(greedy_answer(&env, &format!("hf.co/{REPO}:Q4_1")), UPSTREAM_GREEDY.trim_end());

    // `hearth add` of the first shard brings the others, and a path to it runs too.
    env.ok(&["add", shards[0].to_str().unwrap(), "--name", "local-split", "--no-progress"]);
    assert_eq!(greedy_answer(&env, "local-split"), UPSTREAM_GREEDY.trim_end());
    assert_eq!(greedy_answer(&env, shards[0].to_str().unwrap()), UPSTREAM_GREEDY.trim_end());
    // A missing shard is named.
    std::fs::remove_file(&shards[2]).unwrap();
    let out = env.run(&["add", shards[0].to_str().unwrap(), "--name", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("00003-of-00003.gguf"), "{}", text(&out.stderr));
}

#[test]
fn fit_reads_only_the_header_of_a_remote_model() {
    let env = Env::new();
    let sha = env.hf_model();
    let out = env.ok(&["fit", &format!("hf.co/{REPO}:Q4_1"), "-c", "2048", "--json"]);
    let remote: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let read = remote["header_bytes_read"].as_u64().unwrap();
    assert!(read < 10 << 20, "read {read} bytes");
    assert!(env.fx.bytes_served(&sha) < 10 << 20, "served {}", env.fx.bytes_served(&sha));
    assert!(!env.blob(&sha).exists(), "nothing was downloaded into the store");
    assert_eq!(remote["summary"]["architecture"], "llama");
    // The same estimate as from the local file.
    let out = env.ok(&["fit", model_path().to_str().unwrap(), "-c", "2048", "--json"]);
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(remote["estimate"], local["estimate"]);
    assert!(local["estimate"]["weights"].as_u64().unwrap() > 90_000_000);
    assert_eq!(local["fits"], true);
    let out = env.ok(&["fit", model_path().to_str().unwrap(), "--devices", "cpu=50M"]);
    assert!(text(&out.stdout).contains("does NOT fit") && text(&out.stdout).contains("no context fits"), "{}", text(&out.stdout));

    // Not a GGUF: a clear error naming the URL.
    let url = env.fx.add_url_file("files/page.gguf", b"<html>not a model</html>");
    let out = env.run(&["fit", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a usable GGUF model") && text(&out.stderr).contains("page.gguf"), "{}", text(&out.stderr));
}
