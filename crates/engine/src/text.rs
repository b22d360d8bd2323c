//! Streaming text: turning token bytes into valid UTF-8 and holding back stop strings.
//!
//! Pure logic, no llama.cpp: a token's piece may end in the middle of a multi-byte character,
//! and a stop string may arrive split over several tokens. Neither may ever reach the client
//! broken: [`Utf8Stream`] holds incomplete characters back, [`StopMatcher`] holds back any tail
//! that could still become a stop string, and never emits the stop string itself.

/// Assembles token pieces (raw bytes) into valid UTF-8 text.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    /// Bytes of a character that has not been completed yet (at most 3).
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds a piece and returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safety of the slice: from_utf8 said these bytes are valid.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: keep it for the next piece.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never become valid: replace them, go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: what is still pending can never be completed.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Finds stop strings in streamed text, across any number of pieces.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not released, because it may be the start of a stop string.
    held: String,
    /// The stop string that ended the text, once one did.
    matched: Option<String>,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// This text may be emitted; generation goes on.
    Continue(String),
    /// A stop string was found: emit this text (what came before it) and stop.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            matched: None,
        }
    }

    /// The stop string that ended the text, if one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_string());
        }
        self.held.push_str(text);
        // The earliest stop string wins.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = found {
            self.matched = Some(stop.clone());
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopOutcome::Stopped(out);
        }
        // Hold back the longest tail of `held` that is a prefix of some stop string.
        let mut keep = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(self.held.len());
            for len in (keep + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && stop.starts_with(&self.held[start..]) {
                    keep = len;
                    break;
                }
            }
        }
        let release = self.held.len() - keep;
        let out = self.held[..release].to_string();
        self.held.drain(..release);
        StopOutcome::Continue(out)
    }

    /// Generation ended without a stop string: what was held back is ordinary text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_pieces_is_never_emitted_broken() {
        let snowman = "☃".as_bytes(); // 3 bytes
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"a"), "a");
        assert_eq!(s.push(&snowman[..1]), "");
        assert_eq!(s.push(&snowman[1..2]), "");
        assert_eq!(s.push(&[snowman[2], b'b']), "☃b");
        let emoji = "😀".as_bytes(); // 4 bytes
        assert_eq!(s.push(&emoji[..3]), "");
        assert_eq!(s.push(&emoji[3..]), "😀");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn utf8_invalid_bytes_are_replaced_not_held() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[b'x', 0xff, b'y']), "x\u{fffd}y");
        assert_eq!(s.push(&[0xe2, 0x98]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_string_split_across_pieces() {
        let mut m = StopMatcher::new(vec!["</end>".into()]);
        assert_eq!(m.push("hello <"), StopOutcome::Continue("hello ".into()));
        assert_eq!(m.push("/en"), StopOutcome::Continue("".into()));
        assert_eq!(m.push("d> tail"), StopOutcome::Stopped("".into()));
    }

    #[test]
    fn held_text_is_released_when_it_stops_matching() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("a ST"), StopOutcome::Continue("a ".into()));
        assert_eq!(m.push("x"), StopOutcome::Continue("STx".into()));
        assert_eq!(m.push("ST"), StopOutcome::Continue("".into()));
        assert_eq!(m.finish(), "ST");
    }

    #[test]
    fn earliest_of_several_stops_wins_and_text_before_is_kept() {
        let mut m = StopMatcher::new(vec!["bb".into(), "a".into()]);
        assert_eq!(m.push("xxbbya"), StopOutcome::Stopped("xx".into()));
        let mut m = StopMatcher::new(vec!["\n\n".into()]);
        assert_eq!(m.push("line\n"), StopOutcome::Continue("line".into()));
        assert_eq!(m.push("\nnext"), StopOutcome::Stopped("".into()));
    }

    #[test]
    fn multibyte_text_near_a_stop_prefix() {
        let mut m = StopMatcher::new(vec!["é!".into()]);
        assert_eq!(m.push("café"), StopOutcome::Continue("caf".into()));
        assert_eq!(m.push("?"), StopOutcome::Continue("é?".into()));
    }
}
