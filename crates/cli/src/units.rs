//! Units on the command line: byte sizes (`12G`, `800M`) and addresses (`HOST:PORT`). Used by
//! serve, worker and fit alike, so none of them imports another for it.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use hearth_cluster::Versions;

/// A worker's public port unless `--listen` says otherwise (llama.cpp's `rpc-server`'s).
pub const WORKER_PORT: u16 = 50052;

/// The versions a controller and a worker must share.
pub fn versions() -> Versions {
    Versions { hearth: env!("CARGO_PKG_VERSION").to_string(), rpc_proto: hearth_engine::rpc::RPC_PROTO.to_string() }
}

/// `HOST:PORT`, `HOST` (port 11434) or `http://HOST:PORT`.
pub fn parse_host(s: &str) -> Result<SocketAddr> {
    parse_host_port(s, 11434)
}

/// `HOST:PORT`, or `HOST` with `default_port`.
pub fn parse_host_port(s: &str, default_port: u16) -> Result<SocketAddr> {
    let s = s.trim().trim_start_matches("http://").trim_end_matches('/');
    let with_port = if s.parse::<SocketAddr>().is_ok() || s.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        s.to_string()
    } else {
        format!("{s}:{default_port}")
    };
    use std::net::ToSocketAddrs;
    with_port
        .to_socket_addrs()
        .with_context(|| format!("{s:?} is not an address (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("{s:?} resolves to no address"))
}

/// `12G`, `800M`, `1.5G`, or a number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: f64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1.0,
                "K" => 1024.0,
                "M" => 1024.0 * 1024.0,
                "G" => 1024.0 * 1024.0 * 1024.0,
                "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                _ => bail!("{s:?} is not a size (use e.g. 800M or 12G)"),
            };
            (&s[..i], m)
        }
        None => (s, 1.0),
    };
    let n: f64 = num.trim().parse().with_context(|| format!("{s:?} is not a size (use e.g. 800M or 12G)"))?;
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_sizes() {
        assert_eq!(parse_host("127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(parse_host("http://127.0.0.1:9/").unwrap().port(), 9);
        assert_eq!(parse_host("127.0.0.1").unwrap().port(), 11434);
        assert!(parse_host("no such host:x").is_err());
        assert_eq!(parse_bytes("800M").unwrap(), 800 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("12GiB").unwrap(), 12 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
    }
}
