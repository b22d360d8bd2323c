//! `Range: bytes=...` as a real file server reads it (RFC 9110 §14): one range is honoured, an
//! invalid or multi-range header is ignored (full 200), a range starting past the end is 416.

/// What to send for a `Range` header against a body of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// 200 with the whole body (no header, or one the server ignores).
    Full,
    /// 206 with bytes `start..=end` (inclusive, as in `Content-Range`).
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */total`.
    Unsatisfiable,
}

/// Reads a `Range` header value. Never fails: what a server would ignore is [`RangeRequest::Full`].
pub(crate) fn parse_range(header: Option<&str>, total: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    let header = header.trim();
    let Some((unit, spec)) = header.split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        // Another unit, or several ranges: real servers may ignore these, and so do we.
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            let Some(n) = digits(last).then(|| last.parse::<u64>().ok()).flatten() else {
                return RangeRequest::Full;
            };
            if n == 0 || total == 0 {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial {
                start: total.saturating_sub(n),
                end: total - 1,
            }
        }
        // bytes=A- or bytes=A-B.
        (false, _) => {
            let Some(start) = digits(first).then(|| first.parse::<u64>().ok()).flatten() else {
                return RangeRequest::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match digits(last).then(|| last.parse::<u64>().ok()).flatten() {
                    Some(end) if end >= start => end,
                    // Unparsable or last < first: an invalid range, ignored.
                    _ => return RangeRequest::Full,
                }
            };
            if start >= total {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial {
                start,
                end: end.min(total - 1),
            }
        }
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;
    use super::RangeRequest::{self, *};

    #[test]
    fn table() {
        let p = |start, end| Partial { start, end };
        let cases: &[(Option<&str>, u64, RangeRequest)] = &[
            (None, 10, Full),
            (Some("bytes=0-4"), 10, p(0, 4)),
            (Some("bytes=5-"), 10, p(5, 9)),
            (Some("bytes=5-100"), 10, p(5, 9)),
            (Some("bytes=9-9"), 10, p(9, 9)),
            (Some("bytes=-3"), 10, p(7, 9)),
            (Some("bytes=-30"), 10, p(0, 9)),
            (Some(" Bytes = 2 - 3 "), 10, p(2, 3)),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=10-20"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            (Some("bytes=5-2"), 10, Full),
            (Some("bytes=a-b"), 10, Full),
            (Some("bytes=+1-2"), 10, Full),
            (Some("bytes=-"), 10, Full),
            (Some("bytes=0-1,3-4"), 10, Full),
            (Some("items=0-1"), 10, Full),
            (Some("bytes"), 10, Full),
            (Some(""), 10, Full),
            (Some("bytes=99999999999999999999999-"), 10, Full),
        ];
        for (header, total, want) in cases {
            assert_eq!(parse_range(*header, *total), *want, "{header:?} of {total}");
        }
    }
}
