//! The `server:` section: where tollgate listens, where it keeps its files, and how much one request may
//! ask. The section's operations keys (TLS, metrics listener, proxies, probes, connections) are read
//! here too and checked in [`super::ops`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::check::resolve;
use super::ops;
use super::problem::Problem;

/// `server:` as written in the config.
#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    /// Address to listen on. Default: 127.0.0.1:5001.
    listen: Option<String>,
    /// Where generated keys, the refresh secret and the revocation list live. Default: ./tollgate-data
    /// (relative paths are relative to the config file).
    data_dir: Option<PathBuf>,
    /// Largest accepted POST body. Default: 65536.
    max_body_bytes: Option<usize>,
    /// Most scopes accepted in one request. Default: 64.
    max_scopes: Option<usize>,
    /// HTTPS on `listen` (`cert_file`, `key_file`). Default: plain HTTP. See [`ops::RawTls`].
    tls: Option<ops::RawTls>,
    /// Serve `/metrics` only on this address. Default: on `listen`.
    metrics_listen: Option<String>,
    /// Addresses or networks whose X-Forwarded-For is believed. Default: none.
    trusted_proxies: Option<Vec<String>>,
    /// How often providers are probed for /readyz. Default: 15s.
    #[serde(default, deserialize_with = "super::check::duration")]
    probe_interval: Option<String>,
    /// Connection deadlines and caps. See [`ops::RawConnections`].
    connections: Option<ops::RawConnections>,
}

impl RawServer {
    /// The keys [`ops::validate`] checks, taken out of the section.
    pub fn take_ops(&mut self) -> ops::RawServerOps {
        ops::RawServerOps {
            tls: self.tls.take(),
            metrics_listen: self.metrics_listen.take(),
            trusted_proxies: self.trusted_proxies.take(),
            probe_interval: self.probe_interval.take(),
            connections: self.connections.take(),
        }
    }
}

/// The validated `server:` section (its operations keys are in [`ops::OpsSettings`]).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub max_scopes: usize,
}

/// Validate `server:`; every problem is pushed, each naming its key.
pub fn validate(raw: RawServer, base: &Path, problems: &mut Vec<Problem>) -> ServerSettings {
    let listen_s = raw.listen.unwrap_or_else(|| "127.0.0.1:5001".into());
    let listen = listen_s.parse().unwrap_or_else(|_| {
        problems
            .push(Problem::new("server.listen", format!("{listen_s:?} is not an address; write e.g. 0.0.0.0:5001")));
        SocketAddr::from(([127, 0, 0, 1], 5001))
    });
    let data_dir = resolve(base, &raw.data_dir.unwrap_or_else(|| PathBuf::from("tollgate-data")));
    let max_body_bytes = raw.max_body_bytes.unwrap_or(65536);
    if !(1024..=16 << 20).contains(&max_body_bytes) {
        problems.push(Problem::new("server.max_body_bytes", "must be between 1024 and 16777216"));
    }
    let max_scopes = raw.max_scopes.unwrap_or(64);
    if !(1..=10_000).contains(&max_scopes) {
        problems.push(Problem::new("server.max_scopes", "must be between 1 and 10000"));
    }
    ServerSettings { listen, data_dir, max_body_bytes, max_scopes }
}
