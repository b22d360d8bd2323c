//! The fixture over real sockets, with a raw HTTP/1.1 client so that stalls, cuts and redirects
//! are seen exactly as sent.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hearth_testkit::{media_type, Fault, FaultKind, Fixture, Listener, MANIFEST_MEDIA_TYPE};
use serde_json::Value;
use sha2::{Digest, Sha256};

// ---- a tiny blocking HTTP client ---------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The read timed out (the server stopped sending without closing).
    timed_out: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn content_length(&self) -> usize {
        self.header("content-length")
            .expect("content-length")
            .parse()
            .unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request with `Connection: close` and reads until EOF or `timeout` without bytes.
fn send(method: &str, url: &str, headers: &[(&str, &str)], timeout: Duration) -> Resp {
    let rest = url.strip_prefix("http://").expect("http url");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(authority).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let (raw, timed_out) = read_all(&mut stream);
    parse(&raw, timed_out)
}

fn read_all(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (raw, false),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (raw, true)
            }
            Err(_) => return (raw, false),
        }
    }
}

fn parse(raw: &[u8], timed_out: bool) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
        timed_out,
    }
}

const T: Duration = Duration::from_secs(5);

fn get(url: &str) -> Resp {
    send("GET", url, &[], T)
}
fn get_with(url: &str, headers: &[(&str, &str)]) -> Resp {
    send("GET", url, headers, T)
}
fn head(url: &str) -> Resp {
    send("HEAD", url, &[], T)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic, non-repeating-looking bytes.
fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// The port of an absolute `http://127.0.0.1:PORT/...` URL.
fn port_of(url: &str) -> u16 {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .expect("absolute local url");
    rest[..rest.find('/').unwrap()].parse().unwrap()
}

// ---- Hugging Face ------------------------------------------------------------------------------

#[test]
fn hf_tree_lists_files_and_paginates_with_link_header() {
    let fx = Fixture::start();
    let gguf = data(1000);
    fx.add_hf_file("user/repo", "model-Q4_K_M.gguf", &gguf);
    fx.add_hf_file("user/repo", "README.md", b"# readme\n");
    fx.add_hf_file("user/repo", "config.json", b"{}");
    fx.add_hf_file("user/repo", "sub/model-Q8_0.gguf", data(10));

    // One page by default.
    let r = get(&format!(
        "{}/api/models/user/repo/tree/main?recursive=true",
        fx.base_url()
    ));
    assert_eq!(r.status, 200);
    assert!(r.header("link").is_none());
    assert_eq!(r.json().as_array().unwrap().len(), 5);

    fx.set_hf_page_size(2);
    let mut url = format!(
        "{}/api/models/user/repo/tree/main?recursive=true",
        fx.base_url()
    );
    let mut entries = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&url);
        assert_eq!(r.status, 200, "{url}");
        let page = r.json();
        assert!(page.as_array().unwrap().len() <= 2);
        entries.extend(page.as_array().unwrap().iter().cloned());
        pages += 1;
        let Some(link) = r.header("link") else { break };
        let next = link
            .strip_prefix('<')
            .unwrap()
            .split_once(">; rel=\"next\"")
            .unwrap()
            .0;
        assert!(next.starts_with(&fx.base_url()), "{next}");
        assert!(
            next.contains("recursive=true") && next.contains("cursor="),
            "{next}"
        );
        url = next.to_string();
    }
    assert_eq!(pages, 3);
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "README.md",
            "config.json",
            "model-Q4_K_M.gguf",
            "sub",
            "sub/model-Q8_0.gguf"
        ]
    );
    let gguf_entry = &entries[2];
    assert_eq!(gguf_entry["type"], "file");
    assert_eq!(gguf_entry["size"], 1000);
    assert_eq!(gguf_entry["lfs"]["oid"], sha256(&gguf));
    assert_eq!(gguf_entry["lfs"]["size"], 1000);
    assert!(gguf_entry["lfs"]["pointerSize"].as_u64().unwrap() > 100);
    assert_eq!(gguf_entry["oid"].as_str().unwrap().len(), 40);
    assert!(entries[0].get("lfs").is_none(), "README.md is not LFS");
    assert_eq!(entries[3]["type"], "directory");

    // Not recursive: the root only.
    fx.set_hf_page_size(1000);
    let r = get(&format!("{}/api/models/user/repo/tree/main", fx.base_url()));
    assert_eq!(r.json().as_array().unwrap().len(), 4);
    // A sub-directory.
    let r = get(&format!(
        "{}/api/models/user/repo/tree/main/sub",
        fx.base_url()
    ));
    assert_eq!(r.json()[0]["path"], "sub/model-Q8_0.gguf");
    // A bad cursor.
    let r = get(&format!(
        "{}/api/models/user/repo/tree/main?cursor=zz",
        fx.base_url()
    ));
    assert_eq!(r.status, 400);
}

#[test]
fn hf_unknown_repo_rev_and_file_are_404() {
    let fx = Fixture::start();
    fx.add_hf_file("user/repo", "a.gguf", b"abc");
    let r = get(&format!("{}/api/models/user/nope/tree/main", fx.base_url()));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "Repository not found");
    assert_eq!(r.header("x-error-code"), Some("RepoNotFound"));

    let r = head(&fx.hf_resolve_url("user/repo", "missing.gguf"));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-error-code"), Some("EntryNotFound"));

    let r = get(&format!("{}/user/repo/resolve/v9/a.gguf", fx.base_url()));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-error-code"), Some("RevisionNotFound"));

    // The commit works as a revision.
    let commit = fx.hf_commit("user/repo").unwrap();
    let r = head(&format!(
        "{}/user/repo/resolve/{commit}/a.gguf",
        fx.base_url()
    ));
    assert_eq!(r.status, 302);
}

#[test]
fn hf_private_repo_wants_the_token() {
    let fx = Fixture::start();
    fx.add_hf_file("user/secret", "model.gguf", data(100));
    fx.set_hf_private("user/secret", "secret-token");
    let tree = format!("{}/api/models/user/secret/tree/main", fx.base_url());
    let resolve = fx.hf_resolve_url("user/secret", "model.gguf");
    for url in [&tree, &resolve] {
        for auth in [None, Some("Bearer wrong"), Some("secret-token")] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let r = send("GET", url, &headers, T);
            assert_eq!(r.status, 401, "{url} with {auth:?}");
            assert_eq!(r.json()["error"], "Invalid username or password.");
        }
    }
    let auth = [("Authorization", "Bearer secret-token")];
    assert_eq!(get_with(&tree, &auth).status, 200);
    assert_eq!(send("HEAD", &resolve, &auth, T).status, 302);
    let info = get_with(&format!("{}/api/models/user/secret", fx.base_url()), &auth).json();
    assert_eq!(info["private"], true);

    fx.set_hf_public("user/secret");
    assert_eq!(get(&tree).status, 200);
}

#[test]
fn hf_lfs_resolve_redirects_to_the_cdn() {
    let fx = Fixture::start();
    let gguf = data(5000);
    let file = fx.add_hf_file("user/repo", "model-Q4_K_M.gguf", &gguf);
    assert!(file.lfs);
    assert_eq!(file.sha256, sha256(&gguf));

    let r = head(&fx.hf_resolve_url("user/repo", "model-Q4_K_M.gguf"));
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("x-linked-etag").unwrap(),
        format!("\"{}\"", file.sha256)
    );
    assert_eq!(r.header("x-linked-size"), Some("5000"));
    let commit = r.header("x-repo-commit").unwrap();
    assert_eq!(commit, file.commit);
    assert!(commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(r.header("etag").is_some());
    let location = r.header("location").unwrap().to_string();
    assert_eq!(port_of(&location), fx.cdn_port());
    assert_ne!(fx.cdn_port(), fx.port());
    assert!(location.contains("X-Amz-Signature="), "{location}");

    // GET redirects the same way, and the CDN serves the bytes.
    let r = get(&fx.hf_resolve_url("user/repo", "model-Q4_K_M.gguf"));
    assert_eq!(r.status, 302);
    assert!(r.body.is_empty());
    let r = get(&location);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, gguf);
    assert_eq!(r.header("etag").unwrap(), format!("\"{}\"", file.sha256));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    // The CDN only serves /cdn/, and the main listener never does.
    assert_eq!(
        get(&format!("{}/cdn/{}", fx.base_url(), file.sha256)).status,
        404
    );
    assert_eq!(
        get(&format!("{}/cdn/{}", fx.cdn_url(), "0".repeat(64))).status,
        404
    );
    assert_eq!(get(&format!("{}/cdn/junk", fx.cdn_url())).status, 404);

    let log = fx.requests();
    let last = log.last().unwrap();
    assert_eq!(last.listener, Listener::Cdn);
    assert_eq!(last.port, fx.cdn_port());
}

#[test]
fn hf_small_file_is_served_directly() {
    let fx = Fixture::start();
    let file = fx.add_hf_file("user/repo", "README.md", b"hello\n");
    assert!(!file.lfs);
    // `git hash-object` of "hello\n".
    assert_eq!(file.git_oid, "ce013625030ba8dba906f756967f9e9ca394464a");
    let r = get(&fx.hf_resolve_url("user/repo", "README.md"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello\n");
    assert_eq!(
        r.header("etag"),
        Some("\"ce013625030ba8dba906f756967f9e9ca394464a\"")
    );
    assert!(r.header("x-linked-etag").is_none());
    assert_eq!(
        r.header("x-repo-commit"),
        Some(fx.hf_commit("user/repo").unwrap().as_str())
    );

    // A .gguf can be stored in git too, and any file with LFS.
    fx.add_hf_file_lfs("user/repo", "tiny.gguf", b"x", false);
    assert_eq!(
        get(&fx.hf_resolve_url("user/repo", "tiny.gguf")).status,
        200
    );
    fx.add_hf_file_lfs("user/repo", "big.txt", b"x", true);
    assert_eq!(get(&fx.hf_resolve_url("user/repo", "big.txt")).status, 302);
    // Files in directories; removal.
    fx.add_hf_file("user/repo", "sub/dir/f.txt", b"deep");
    assert_eq!(
        get(&fx.hf_resolve_url("user/repo", "sub/dir/f.txt")).body,
        b"deep"
    );
    assert!(fx.remove_hf_file("user/repo", "sub/dir/f.txt"));
    assert_eq!(
        get(&fx.hf_resolve_url("user/repo", "sub/dir/f.txt")).status,
        404
    );
}

#[test]
fn hf_info_and_refs() {
    let fx = Fixture::start();
    fx.add_hf_file("user/repo", "a.gguf", b"abc");
    let commit = fx.hf_commit("user/repo").unwrap();
    let info = get(&format!(
        "{}/api/models/user/repo/revision/main?blobs=true",
        fx.base_url()
    ))
    .json();
    assert_eq!(info["sha"], commit.as_str());
    assert_eq!(info["siblings"][0]["rfilename"], "a.gguf");
    assert_eq!(info["siblings"][0]["lfs"]["sha256"], sha256(b"abc"));
    let refs = get(&format!("{}/api/models/user/repo/refs", fx.base_url())).json();
    assert_eq!(refs["branches"][0]["targetCommit"], commit.as_str());
}

// ---- Ollama registry ---------------------------------------------------------------------------

#[test]
fn ollama_manifest_and_blobs() {
    let fx = Fixture::start();
    let weights = data(3000);
    let model = fx.add_ollama_model(
        "library",
        "smollm2",
        "latest",
        &[
            (media_type::MODEL, &weights),
            (media_type::TEMPLATE, b"{{ .Prompt }}"),
            (media_type::LICENSE, b"MIT"),
        ],
    );
    let url = format!("{}/v2/library/smollm2/manifests/latest", fx.base_url());
    let r = get_with(&url, &[("Accept", MANIFEST_MEDIA_TYPE)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(MANIFEST_MEDIA_TYPE));
    assert_eq!(
        r.header("docker-content-digest"),
        Some(model.manifest_digest.as_str())
    );
    assert_eq!(r.body, model.manifest.as_bytes());
    assert_eq!(format!("sha256:{}", sha256(&r.body)), model.manifest_digest);
    let m = r.json();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(m["layers"][0]["mediaType"], media_type::MODEL);
    assert_eq!(
        m["layers"][0]["digest"],
        format!("sha256:{}", sha256(&weights))
    );
    assert_eq!(m["layers"][0]["size"], 3000);
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    assert!(model
        .manifest
        .starts_with("{\"schemaVersion\":2,\"mediaType\""));

    // HEAD, by digest, case-insensitive names.
    let r = head(&url);
    assert_eq!((r.status, r.content_length()), (200, model.manifest.len()));
    assert!(r.body.is_empty());
    let by_digest = format!(
        "{}/v2/library/smollm2/manifests/{}",
        fx.base_url(),
        model.manifest_digest
    );
    assert_eq!(get(&by_digest).body, model.manifest.as_bytes());
    assert_eq!(
        get(&format!(
            "{}/v2/library/SmolLM2/manifests/Latest",
            fx.base_url()
        ))
        .status,
        200
    );

    // Unknown.
    let r = get(&format!(
        "{}/v2/library/smollm2/manifests/nope",
        fx.base_url()
    ));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_UNKNOWN");

    // Blobs: 307 to the CDN, for GET and HEAD.
    let layer = &model.layers[0];
    let blob = format!(
        "{}/v2/library/smollm2/blobs/{}",
        fx.base_url(),
        layer.digest
    );
    for method in ["GET", "HEAD"] {
        let r = send(method, &blob, &[], T);
        assert_eq!(r.status, 307, "{method}");
        let location = r.header("location").unwrap();
        assert_eq!(port_of(location), fx.cdn_port());
        assert!(location.contains("X-Amz-Signature="));
    }
    let location = get(&blob).header("location").unwrap().to_string();
    let r = head(&location);
    assert_eq!((r.status, r.content_length()), (200, 3000));
    let r = get(&location);
    assert_eq!(r.body, weights);

    // The generated config lists the layers.
    let config = get(&fx.blob_url(&model.config.digest));
    assert_eq!(
        format!("sha256:{}", sha256(&config.body)),
        model.config.digest
    );
    let config = config.json();
    assert_eq!(config["model_format"], "gguf");
    assert_eq!(config["rootfs"]["diff_ids"][0], layer.digest.as_str());

    let r = get(&format!(
        "{}/v2/library/smollm2/blobs/sha256:{}",
        fx.base_url(),
        "0".repeat(64)
    ));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errors"][0]["code"], "BLOB_UNKNOWN");
    assert_eq!(
        get(&format!("{}/v2/library/smollm2/blobs/junk", fx.base_url())).status,
        400
    );
    assert_eq!(get(&format!("{}/v2/", fx.base_url())).status, 200);
}

// ---- plain URLs and ranges ---------------------------------------------------------------------

#[test]
fn url_files_head_and_ranges() {
    let fx = Fixture::start();
    let bytes = data(1000);
    let url = fx.add_url_file("files/model.gguf", &bytes);
    assert_eq!(url, format!("{}/files/model.gguf", fx.base_url()));

    let r = get(&url);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, bytes);
    let etag = format!("\"{}\"", sha256(&bytes));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let r = head(&url);
    assert_eq!((r.status, r.content_length()), (200, 1000));
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    for (range, start, end) in [
        ("bytes=100-199", 100, 199),
        ("bytes=900-", 900, 999),
        ("bytes=-10", 990, 999),
        ("bytes=990-5000", 990, 999),
    ] {
        let r = get_with(&url, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range").unwrap(),
            format!("bytes {start}-{end}/1000")
        );
        assert_eq!(r.body, &bytes[start..=end], "{range}");
        assert_eq!(r.content_length(), end - start + 1);
    }
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let r = get_with(&url, &[("Range", range)]);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */1000"));
        assert!(r.body.is_empty());
    }
    // Bad syntax, several ranges, another unit: ignored.
    for range in [
        "bytes=abc",
        "bytes=5-2",
        "bytes=0-1,5-6",
        "lines=1-2",
        "bytes",
        "bytes=--1",
    ] {
        let r = get_with(&url, &[("Range", range)]);
        assert_eq!((r.status, r.body.len()), (200, 1000), "{range}");
    }
    // HEAD with a range.
    let r = send("HEAD", &url, &[("Range", "bytes=10-19")], T);
    assert_eq!((r.status, r.content_length()), (206, 10));
    // If-Range: a matching ETag keeps the range, another one gets everything.
    let r = get_with(&url, &[("Range", "bytes=10-19"), ("If-Range", &etag)]);
    assert_eq!(r.status, 206);
    let r = get_with(&url, &[("Range", "bytes=10-19"), ("If-Range", "\"other\"")]);
    assert_eq!((r.status, r.body.len()), (200, 1000));

    // Empty files, redirects, unknown paths.
    let empty = fx.add_url_file("/files/empty", b"");
    let r = get(&empty);
    assert_eq!((r.status, r.content_length()), (200, 0));
    let cdn = fx.blob_url(&fx.add_blob(&bytes));
    let moved = fx.add_url_redirect("files/moved.gguf", &cdn);
    let r = get(&moved);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(cdn.as_str()));
    assert_eq!(get(&cdn).body, bytes);
    assert_eq!(get(&fx.url("files/nope")).status, 404);
}

// ---- faults ------------------------------------------------------------------------------------

#[test]
fn ignore_range_answers_200_with_everything() {
    let fx = Fixture::start();
    let bytes = data(500);
    let url = fx.add_url_file("files/a", &bytes);
    fx.inject(Fault::ignore_range().once());
    // A HEAD does not use it up.
    assert_eq!(
        send("HEAD", &url, &[("Range", "bytes=10-19")], T).status,
        206
    );
    let r = get_with(&url, &[("Range", "bytes=10-19")]);
    assert_eq!((r.status, r.body.as_slice()), (200, bytes.as_slice()));
    assert!(r.header("content-range").is_none());
    assert_eq!(fx.requests().last().unwrap().faults, ["ignore-range"]);
    // Cleared itself.
    assert_eq!(get_with(&url, &[("Range", "bytes=10-19")]).status, 206);
    assert!(fx.faults().is_empty());
}

#[test]
fn stall_sends_some_bytes_then_nothing() {
    let fx = Fixture::start();
    let bytes = data(100_000);
    let url = fx.add_url_file("files/a", &bytes);
    fx.inject(Fault::stall(1000).on_path("/files/").once());
    let started = Instant::now();
    let r = send("GET", &url, &[], Duration::from_millis(400));
    assert!(r.timed_out, "the read must time out");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 100_000);
    assert_eq!(r.body, &bytes[..1000]);
    // The next one is fine.
    assert_eq!(get(&url).body, bytes);
}

#[test]
fn cut_closes_the_connection_short() {
    let fx = Fixture::start();
    let bytes = data(100_000);
    let url = fx.add_url_file("files/a", &bytes);
    fx.inject(Fault::cut(5000).once());
    let r = get(&url);
    assert!(!r.timed_out);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 100_000);
    assert_eq!(r.body, &bytes[..5000]);
    // Within a range, the count is of the response's bytes.
    fx.inject(Fault::cut(10).once());
    let r = get_with(&url, &[("Range", "bytes=50000-")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &bytes[50000..50010]));
    // Cut at 0: headers only.
    fx.inject(Fault::cut(0).once());
    assert!(get(&url).body.is_empty());
    assert_eq!(get(&url).body, bytes);
}

#[test]
fn corrupt_flips_exactly_one_byte_where_asked() {
    let fx = Fixture::start();
    let bytes = data(10_000);
    let digest = fx.add_blob(&bytes);
    let url = fx.blob_url(&digest);
    fx.inject(Fault::corrupt(7000).for_blob(&digest).once());
    // A range that does not cover the offset is untouched and does not use the fault up.
    let r = get_with(&url, &[("Range", "bytes=0-999")]);
    assert_eq!(r.body, &bytes[..1000]);
    assert_eq!(fx.faults().len(), 1);
    let r = get_with(&url, &[("Range", "bytes=6000-")]);
    assert_eq!(r.status, 206);
    let diffs: Vec<usize> = (0..r.body.len())
        .filter(|&i| r.body[i] != bytes[6000 + i])
        .collect();
    assert_eq!(diffs, [1000]);
    assert_eq!(r.body[1000], bytes[7000] ^ 0xff);
    assert!(fx.faults().is_empty());
    assert_eq!(get(&url).body, bytes);
}

#[test]
fn status_faults_with_retry_after_and_counts() {
    let fx = Fixture::start();
    let url = fx.add_url_file("files/a", b"abc");
    fx.inject(Fault::status(429).retry_after(7).on_path("/files/a").once());
    let r = get(&url);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(get(&url).status, 200);

    // Twice, for HEAD only.
    fx.inject(Fault::status(503).on_method("HEAD").times(2));
    assert_eq!(get(&url).status, 200);
    assert_eq!(head(&url).status, 503);
    assert_eq!(head(&url).status, 503);
    assert_eq!(head(&url).status, 200);

    // 416 names the size; other codes; a status on a redirecting route.
    fx.inject(Fault::status(416).once());
    let r = get(&url);
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */3"))
    );
    for code in [500, 401, 403, 404] {
        fx.inject(
            Fault::new(FaultKind::Status {
                code,
                retry_after: None,
            })
            .once(),
        );
        assert_eq!(get(&url).status, code);
    }
    let m = fx.add_ollama_model("library", "m", "latest", &[(media_type::MODEL, b"w")]);
    fx.inject(Fault::status(500).for_blob(&m.layers[0].digest).once());
    let blob = format!(
        "{}/v2/library/m/blobs/{}",
        fx.base_url(),
        m.layers[0].digest
    );
    assert_eq!(get(&blob).status, 500);
    assert_eq!(get(&blob).status, 307);
    // Until cleared.
    fx.inject(Fault::status(500));
    assert_eq!(get(&url).status, 500);
    assert_eq!(get(&url).status, 500);
    fx.clear_faults();
    assert_eq!(get(&url).status, 200);
}

#[test]
fn change_content_serves_new_bytes_with_a_new_etag() {
    let fx = Fixture::start();
    let old = data(2000);
    let file = fx.add_hf_file("user/repo", "m.gguf", &old);
    let location = head(&fx.hf_resolve_url("user/repo", "m.gguf"))
        .header("location")
        .unwrap()
        .to_string();
    let old_etag = get(&location).header("etag").unwrap().to_string();

    let new = vec![9u8; 1500];
    fx.inject(Fault::change_content(new.clone()).for_blob(&file.sha256));
    let r = head(&fx.hf_resolve_url("user/repo", "m.gguf"));
    assert_eq!(
        r.header("x-linked-etag").unwrap(),
        format!("\"{}\"", sha256(&new))
    );
    assert_eq!(r.header("x-linked-size"), Some("1500"));
    // A resumed download: the old ETag in If-Range gets the whole new file.
    let r = get_with(
        &location,
        &[("Range", "bytes=1000-"), ("If-Range", &old_etag)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, new);
    let new_etag = r.header("etag").unwrap().to_string();
    assert_ne!(new_etag, old_etag);
    // Without If-Range, a range of the new bytes.
    let r = get_with(&location, &[("Range", "bytes=1000-")]);
    assert_eq!((r.status, r.body.len()), (206, 500));
    fx.clear_faults();
    assert_eq!(get(&location).body, old);
}

#[test]
fn throttle_paces_the_body() {
    let fx = Fixture::start();
    let bytes = data(20_000);
    let url = fx.add_url_file("files/a", &bytes);
    fx.inject(Fault::throttle(40_000).once());
    let started = Instant::now();
    let r = get(&url);
    let took = started.elapsed();
    assert_eq!(r.body, bytes);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn delay_waits_before_answering() {
    let fx = Fixture::start();
    let url = fx.add_url_file("files/a", b"abc");
    fx.inject(Fault::delay(300).once());
    let started = Instant::now();
    assert_eq!(head(&url).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

// ---- log, counters, robustness, shutdown ------------------------------------------------------

#[test]
fn request_log_and_bytes_served() {
    let fx = Fixture::start();
    let gguf = data(4000);
    let file = fx.add_hf_file("user/repo", "m.gguf", &gguf);
    let resolve = fx.hf_resolve_url("user/repo", "m.gguf");
    let location = get_with(&resolve, &[("Authorization", "Bearer abc")])
        .header("location")
        .unwrap()
        .to_string();
    get_with(&location, &[("Range", "bytes=0-999")]);
    get_with(&location, &[("Range", "bytes=1000-")]);
    head(&location);

    let log = fx.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].listener, Listener::Main);
    assert_eq!(log[0].port, fx.port());
    assert_eq!(log[0].path, "/user/repo/resolve/main/m.gguf");
    assert_eq!(log[0].authorization.as_deref(), Some("Bearer abc"));
    assert_eq!((log[0].status, log[0].body_bytes), (302, 0));
    assert_eq!(log[1].listener, Listener::Cdn);
    assert_eq!(log[1].range.as_deref(), Some("bytes=0-999"));
    assert!(log[1].query.as_deref().unwrap().contains("X-Amz-Signature"));
    assert_eq!((log[1].status, log[1].body_bytes), (206, 1000));
    assert_eq!((log[2].status, log[2].body_bytes), (206, 3000));
    assert_eq!((log[3].method.as_str(), log[3].body_bytes), ("HEAD", 0));
    assert_eq!(
        log[3].host.as_deref(),
        Some(&location[7..location.find("/cdn").unwrap()])
    );

    assert_eq!(fx.bytes_served(&file.sha256), 4000);
    assert_eq!(fx.bytes_served(&format!("sha256:{}", file.sha256)), 4000);
    assert_eq!(fx.bytes_served(&format!("/cdn/{}", file.sha256)), 4000);
    assert_eq!(fx.bytes_served("/nothing"), 0);

    // A cut download counts what was sent.
    let url = fx.add_url_file("files/x", data(10_000));
    fx.inject(Fault::cut(1234).once());
    get(&url);
    assert_eq!(fx.bytes_served("files/x"), 1234);
    assert_eq!(fx.requests().last().unwrap().faults, ["cut"]);

    fx.clear_requests();
    assert!(fx.requests().is_empty());
    assert_eq!(fx.bytes_served(&file.sha256), 0);
}

#[test]
fn odd_requests_do_not_break_it() {
    let fx = Fixture::start();
    let url = fx.add_url_file("files/a", b"abc");
    assert_eq!(
        send("POST", &url, &[("Content-Length", "3")], T).status,
        405
    );
    assert_eq!(send("DELETE", &url, &[], T).status, 405);
    assert_eq!(get(&fx.url(&"x/".repeat(2000))).status, 404);
    assert_eq!(get(&fx.url("files/%zz%")).status, 404);
    assert_eq!(get(&fx.url("user/repo/resolve/main/")).status, 404);
    assert_eq!(get(&fx.url("user//resolve//a")).status, 404);
    assert_eq!(
        get(&fx.url("api/models/u/r/tree/main?cursor=%")).status,
        404
    );
    assert_eq!(get(&format!("{}/?%%%", fx.base_url())).status, 404);
    // Garbage on the socket: the server answers or closes, and keeps serving.
    for garbage in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "\r\n\r\n\r\n",
        "GET /files/a HTTP/1.1\r\nRange: \u{7f}\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", fx.port())).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(garbage.as_bytes()).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = read_all(&mut s);
    }
    // A client that goes away mid-body.
    let big = fx.add_url_file("files/big", data(5_000_000));
    {
        let mut s = TcpStream::connect(("127.0.0.1", fx.port())).unwrap();
        s.write_all(b"GET /files/big HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 100];
        s.read_exact(&mut buf).unwrap();
    }
    assert_eq!(get(&url).body, b"abc");
    assert_eq!(get(&big).body.len(), 5_000_000);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let fx = Fixture::start();
    fx.add_url_file("files/a", b"abc");
    let mut s = TcpStream::connect(("127.0.0.1", fx.port())).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /files/a HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"abc") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }
    assert_eq!(fx.requests().len(), 3);
}

#[test]
fn drop_stops_listeners_and_stalled_connections() {
    let fx = Fixture::start();
    let url = fx.add_url_file("files/a", data(100_000));
    let port = fx.port();
    fx.inject(Fault::stall(10));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /files/a HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(
        fx.wait_for(T, |fx| fx.bytes_served("files/a") == 10),
        "the stall is in force"
    );
    let started = Instant::now();
    drop(fx);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The stalled connection is closed (EOF or reset), not left hanging.
    let (_, timed_out) = read_all(&mut s);
    assert!(!timed_out);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "{url} still answers"
    );
}

#[test]
fn a_fixture_starts_inside_an_async_runtime_too() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fx = Fixture::start();
        let url = fx.add_url_file("files/a", b"abc");
        let body = tokio::task::spawn_blocking(move || get(&url).body)
            .await
            .unwrap();
        assert_eq!(body, b"abc");
        drop(fx);
    });
}
