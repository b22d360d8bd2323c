//! Faults a test injects into the fixture's answers, and which requests they hit.

use crate::util::{normalize_digest, rooted};

/// What goes wrong. Offsets in `Stall`/`Cut` count bytes of *this response's* body; the offset in
/// `Corrupt` is an absolute offset in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Send `after_bytes` body bytes, then send nothing more and keep the connection open until
    /// the client closes it or the fixture is dropped. The client must notice by itself.
    Stall { after_bytes: u64 },
    /// Send `after_bytes` body bytes, then close the connection: the body is cut short of its
    /// `Content-Length`.
    Cut { after_bytes: u64 },
    /// Answer 200 with the whole body even when a `Range` was asked (a server without ranges).
    IgnoreRange,
    /// Answer with this status and an empty-ish JSON body instead of the resource, with
    /// `Retry-After: secs` when given (for 429 and 503). A 416 also carries
    /// `Content-Range: bytes */total` when the resource is known.
    Status { code: u16, retry_after: Option<u64> },
    /// Flip (xor 0xff) the byte at this absolute file offset in the bytes sent. Only a response
    /// whose range covers the offset is hit (and only such a response uses up a `times`).
    Corrupt { offset: u64 },
    /// The resource now has these bytes, with a new `ETag` (and, for a Hugging Face LFS file, a
    /// new `X-Linked-Etag`/`X-Linked-Size`): the file changed upstream mid-download. The path
    /// (and a blob's CDN URL) stay the same. A `Range` with an `If-Range` naming the old ETag is
    /// answered 200 with the whole new body, as real servers do.
    ChangeContent { new_bytes: Vec<u8> },
    /// Send the body at about this many bytes per second (chunks of 1/20 s).
    Throttle { bytes_per_sec: u64 },
    /// Wait this long before answering.
    Delay { ms: u64 },
}

impl FaultKind {
    /// A short name for the request log.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Stall { .. } => "stall",
            FaultKind::Cut { .. } => "cut",
            FaultKind::IgnoreRange => "ignore-range",
            FaultKind::Status { .. } => "status",
            FaultKind::Corrupt { .. } => "corrupt",
            FaultKind::ChangeContent { .. } => "change-content",
            FaultKind::Throttle { .. } => "throttle",
            FaultKind::Delay { .. } => "delay",
        }
    }
}

/// Which requests a fault hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every request, on both listeners.
    Any,
    /// Requests whose (percent-decoded, query-less) path starts with this, e.g. `/cdn/`,
    /// `/files/model.gguf`, `/user/repo/resolve/`, `/v2/library/smollm2/manifests/`.
    PathPrefix(String),
    /// Requests for this blob, by sha256 (`sha256:<hex>` or `<hex>`): its CDN URL, its registry
    /// `/v2/.../blobs/` URL, a Hugging Face `resolve` of a file with that sha256, a plain URL
    /// file with that sha256.
    Blob(String),
}

/// A fault, what it targets, and how many times it fires before it clears itself.
///
/// ```
/// use hearth_testkit::{Fault, FaultKind, Target};
/// // The next GET of any CDN object stalls after 1 KiB.
/// let f = Fault::new(FaultKind::Stall { after_bytes: 1024 }).on_path("/cdn/").once();
/// assert_eq!(f.target, Target::PathPrefix("/cdn/".into()));
/// // Every request answers 503 with Retry-After: 1, until cleared.
/// let g = Fault::status(503).retry_after(1);
/// # let _ = g;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Which requests it hits.
    pub target: Target,
    /// How many matching requests it hits before it clears itself; `None` for until
    /// [`crate::Fixture::clear_faults`].
    pub times: Option<u32>,
    /// Only requests with this method (`"GET"`, `"HEAD"`), if set.
    pub method: Option<String>,
}

impl Fault {
    /// A fault hitting every request, until cleared.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            target: Target::Any,
            times: None,
            method: None,
        }
    }
    /// [`FaultKind::Stall`].
    pub fn stall(after_bytes: u64) -> Fault {
        Fault::new(FaultKind::Stall { after_bytes })
    }
    /// [`FaultKind::Cut`].
    pub fn cut(after_bytes: u64) -> Fault {
        Fault::new(FaultKind::Cut { after_bytes })
    }
    /// [`FaultKind::IgnoreRange`].
    pub fn ignore_range() -> Fault {
        Fault::new(FaultKind::IgnoreRange)
    }
    /// [`FaultKind::Status`] without `Retry-After`.
    pub fn status(code: u16) -> Fault {
        Fault::new(FaultKind::Status {
            code,
            retry_after: None,
        })
    }
    /// [`FaultKind::Corrupt`].
    pub fn corrupt(offset: u64) -> Fault {
        Fault::new(FaultKind::Corrupt { offset })
    }
    /// [`FaultKind::ChangeContent`].
    pub fn change_content(new_bytes: impl Into<Vec<u8>>) -> Fault {
        Fault::new(FaultKind::ChangeContent {
            new_bytes: new_bytes.into(),
        })
    }
    /// [`FaultKind::Throttle`].
    pub fn throttle(bytes_per_sec: u64) -> Fault {
        Fault::new(FaultKind::Throttle { bytes_per_sec })
    }
    /// [`FaultKind::Delay`].
    pub fn delay(ms: u64) -> Fault {
        Fault::new(FaultKind::Delay { ms })
    }

    /// Adds `Retry-After: secs` to a [`FaultKind::Status`] (no effect on other kinds).
    pub fn retry_after(mut self, secs: u64) -> Fault {
        if let FaultKind::Status { retry_after, .. } = &mut self.kind {
            *retry_after = Some(secs);
        }
        self
    }
    /// Only requests whose path starts with `prefix` (a leading `/` is added if missing).
    pub fn on_path(mut self, prefix: &str) -> Fault {
        self.target = Target::PathPrefix(rooted(prefix));
        self
    }
    /// Only requests for the blob with this sha256 (see [`Target::Blob`]).
    pub fn for_blob(mut self, digest: &str) -> Fault {
        self.target = Target::Blob(digest.to_string());
        self
    }
    /// Only requests with this method.
    pub fn on_method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    /// Fires for the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }
    /// Fires for the next matching request only.
    pub fn once(self) -> Fault {
        self.times(1)
    }
}

/// The handle [`crate::Fixture::inject`] returns, to remove one fault early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(pub(crate) u64);

/// A fault in force, with what is left of its `times`.
#[derive(Debug)]
pub(crate) struct ActiveFault {
    pub(crate) id: FaultId,
    pub(crate) fault: Fault,
}

/// What a request is, for matching faults.
pub(crate) struct Facts<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// The sha256 (hex) of the resource the request is about, if it is about one.
    pub(crate) digest: Option<&'a str>,
}

impl Fault {
    pub(crate) fn matches(&self, facts: &Facts<'_>) -> bool {
        if let Some(m) = &self.method {
            if !m.eq_ignore_ascii_case(facts.method) {
                return false;
            }
        }
        match &self.target {
            Target::Any => true,
            Target::PathPrefix(prefix) => facts.path.starts_with(prefix.as_str()),
            Target::Blob(d) => match (normalize_digest(d), facts.digest) {
                (Some(want), Some(have)) => want == have,
                _ => false,
            },
        }
    }
}

/// Takes, in order of injection, the faults that match `facts` and that `wanted` accepts; each
/// taken fault uses up one of its `times` and is removed when none are left.
pub(crate) fn take(
    faults: &mut Vec<ActiveFault>,
    facts: &Facts<'_>,
    wanted: impl Fn(&FaultKind) -> bool,
) -> Vec<FaultKind> {
    let mut taken = Vec::new();
    faults.retain_mut(|active| {
        if !active.fault.matches(facts) || !wanted(&active.fault.kind) {
            return true;
        }
        taken.push(active.fault.kind.clone());
        match &mut active.fault.times {
            None => true,
            Some(n) => {
                *n = n.saturating_sub(1);
                *n > 0
            }
        }
    });
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(faults: Vec<Fault>) -> Vec<ActiveFault> {
        faults
            .into_iter()
            .enumerate()
            .map(|(i, fault)| ActiveFault {
                id: FaultId(i as u64),
                fault,
            })
            .collect()
    }

    #[test]
    fn targets_match() {
        let d = "a".repeat(64);
        let facts = Facts {
            method: "GET",
            path: "/cdn/xyz",
            digest: Some(&d),
        };
        assert!(Fault::stall(1).matches(&facts));
        assert!(Fault::stall(1).on_path("cdn/").matches(&facts));
        assert!(!Fault::stall(1).on_path("/files/").matches(&facts));
        assert!(Fault::stall(1)
            .for_blob(&format!("sha256:{d}"))
            .matches(&facts));
        assert!(!Fault::stall(1).for_blob(&"b".repeat(64)).matches(&facts));
        assert!(!Fault::stall(1).for_blob("junk").matches(&facts));
        assert!(!Fault::stall(1).on_method("head").matches(&facts));
        let no_digest = Facts {
            method: "GET",
            path: "/x",
            digest: None,
        };
        assert!(!Fault::stall(1).for_blob(&d).matches(&no_digest));
    }

    #[test]
    fn times_count_down_and_clear() {
        let mut faults = active(vec![Fault::status(500).times(2), Fault::delay(5)]);
        let facts = Facts {
            method: "GET",
            path: "/",
            digest: None,
        };
        for _ in 0..2 {
            let got = take(&mut faults, &facts, |_| true);
            assert_eq!(got.len(), 2);
        }
        let got = take(&mut faults, &facts, |_| true);
        assert_eq!(got, vec![FaultKind::Delay { ms: 5 }]);
        // A fault that is not wanted is not used up.
        let mut faults = active(vec![Fault::stall(3).once()]);
        assert!(take(&mut faults, &facts, |k| matches!(
            k,
            FaultKind::Delay { .. }
        ))
        .is_empty());
        assert_eq!(faults.len(), 1);
    }
}
