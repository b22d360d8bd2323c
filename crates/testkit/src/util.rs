//! Small pure helpers: hashing, hex, percent-decoding, query strings, digest spelling.

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The sha256 of `bytes` as 64 lowercase hex digits.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The sha1 of `bytes` as 40 lowercase hex digits.
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    hex(&Sha1::digest(bytes))
}

/// The git blob id of `bytes`: `sha1("blob {len}\0" + bytes)`, what the Hub calls `oid`.
pub(crate) fn git_blob_oid(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex(&h.finalize())
}

/// `"sha256:ABC"`, `"sha256-abc"` or `"abc"` to `"abc"` (lowercase), if it is 64 hex digits.
pub(crate) fn normalize_digest(s: &str) -> Option<String> {
    let s = s.trim();
    let hex = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("sha256-"))
        .unwrap_or(s);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Decodes `%XX` escapes; an invalid escape or a result that is not UTF-8 leaves the input as it
/// was (a real server would answer 400 or 404, which the caller's lookup then does).
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let h = (bytes[i + 1] as char).to_digit(16);
            let l = (bytes[i + 2] as char).to_digit(16);
            if let (Some(h), Some(l)) = (h, l) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// The value of `key` in a query string `a=1&b=2` (percent-decoded), if present.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// A path as the fixture keys it: with exactly one leading `/`.
pub(crate) fn rooted(path: &str) -> String {
    format!("/{}", path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // `git hash-object` of an empty file.
        assert_eq!(
            git_blob_oid(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            git_blob_oid(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn digests_normalize() {
        let h = "A".repeat(64);
        assert_eq!(
            normalize_digest(&format!("sha256:{h}")),
            Some("a".repeat(64))
        );
        assert_eq!(
            normalize_digest(&format!("sha256-{h}")),
            Some("a".repeat(64))
        );
        assert_eq!(normalize_digest(&"b".repeat(64)), Some("b".repeat(64)));
        assert_eq!(normalize_digest("sha256:abc"), None);
        assert_eq!(normalize_digest(&"g".repeat(64)), None);
    }

    #[test]
    fn percent_decoding() {
        for (input, want) in [
            ("a%20b", "a b"),
            ("plain", "plain"),
            ("bad%zz", "bad%zz"),
            ("end%2", "end%2"),
            ("end%", "end%"),
            ("%41%42", "AB"),
            ("%ff", "%ff"),
        ] {
            assert_eq!(percent_decode(input), want, "{input}");
        }
    }

    #[test]
    fn query_params() {
        assert_eq!(
            query_param(Some("recursive=true&cursor=ab"), "cursor").as_deref(),
            Some("ab")
        );
        assert_eq!(
            query_param(Some("recursive"), "recursive").as_deref(),
            Some("")
        );
        assert_eq!(query_param(None, "x"), None);
        assert_eq!(query_param(Some("a=1"), "b"), None);
    }
}
