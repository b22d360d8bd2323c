//! The cluster token: the shared secret that controller and workers prove to each other.

use sha2::{Digest, Sha256};

/// Prefixed to the secret before hashing, so the pre-shared key of hearth's cluster protocol
/// never equals a hash of the same secret used anywhere else.
const DOMAIN: &[u8] = b"hearth cluster token v1\0";

/// The pre-shared key of the Noise handshake, derived from the shared secret
/// (`HEARTH_CLUSTER_TOKEN` / `--token`).
///
/// No secret (or an empty one) gives the well-known key derived from the empty string: the
/// channel is still encrypted, but anyone can connect, so [`is_authenticated`] is false and
/// callers should refuse to expose such a worker beyond loopback without an explicit opt-in.
///
/// The secret is trimmed of surrounding whitespace (a trailing newline from a file or a shell
/// is the usual way two "equal" tokens differ). `Debug` never shows the secret or the key.
///
/// [`is_authenticated`]: ClusterToken::is_authenticated
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterToken {
    /// SHA-256 of [`DOMAIN`] followed by the trimmed secret: Noise's 32-byte PSK.
    psk: [u8; 32],
    /// Whether a non-empty secret was given.
    authenticated: bool,
}

impl ClusterToken {
    /// The token for a shared secret; an empty (or all-whitespace) secret is [`none`](Self::none).
    pub fn new(secret: &str) -> Self {
        let secret = secret.trim();
        let psk: [u8; 32] = Sha256::new().chain_update(DOMAIN).chain_update(secret).finalize().into();
        ClusterToken { psk, authenticated: !secret.is_empty() }
    }

    /// No secret: encrypted, not authenticated.
    pub fn none() -> Self {
        Self::new("")
    }

    /// `Some(secret)` or `None`, as settings usually hold it.
    pub fn from_option(secret: Option<&str>) -> Self {
        Self::new(secret.unwrap_or(""))
    }

    /// Whether a secret was given: only then does a completed handshake prove that the peer
    /// knows it.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    pub(crate) fn psk(&self) -> &[u8; 32] {
        &self.psk
    }
}

impl std::fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.authenticated { "ClusterToken(<secret>)" } else { "ClusterToken(none)" };
        f.write_str(shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation() {
        let cases: &[(&str, &str, bool)] = &[
            // (a, b, same key)
            ("s3cret", "s3cret", true),
            ("s3cret", " s3cret\n", true),
            ("s3cret", "S3cret", false),
            ("", "  ", true),
            ("", "x", false),
        ];
        for &(a, b, same) in cases {
            assert_eq!(ClusterToken::new(a) == ClusterToken::new(b), same, "{a:?} vs {b:?}");
        }
        assert!(ClusterToken::new("x").is_authenticated());
        assert!(!ClusterToken::none().is_authenticated());
        assert_eq!(ClusterToken::from_option(None), ClusterToken::none());
        // The key is not the bare hash of the secret.
        let bare: [u8; 32] = Sha256::digest(b"x").into();
        assert_ne!(ClusterToken::new("x").psk(), &bare);
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", ClusterToken::new("hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(format!("{:?}", ClusterToken::none()), "ClusterToken(none)");
    }
}
