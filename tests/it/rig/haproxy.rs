//! A private Debian `haproxy` in front of several tollgate replicas: the load balancer of a deployment
//! (Traefik in compose/, a Service in Kubernetes) with an active HTTP health check on a given path.
//!
//! It listens on a loopback port chosen at run time, balances round-robin over the servers, checks each
//! every 300 ms with `GET {health_path}` (down after 2 failures, up after 1 success), retries a failed
//! connection on another server, and serves its own statistics as CSV, so a test can ask which servers
//! the balancer considers up. Like the other servers of the rig it dies with the thread that started it
//! (PDEATHSIG through [`command`]) and is not `Send`.

use std::marker::PhantomData;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{command, http_get, require, tempdir};

pub struct Haproxy {
    child: Child,
    /// `127.0.0.1:PORT`, where clients connect.
    pub addr: String,
    stats: String,
    dir: tempfile::TempDir,
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl Haproxy {
    /// Balances over `servers` (`(name, "127.0.0.1:PORT")`), checking `health_path`; returns once every
    /// server is checked up. Panics with haproxy's output if it does not start.
    pub fn start(servers: &[(&str, &str)], health_path: &str) -> Haproxy {
        let bin = require("/usr/sbin/haproxy", "haproxy");
        let dir = tempdir("haproxy");
        for attempt in 1..=5 {
            let (port, stats_port) = (free_port(), free_port());
            let mut config = format!(
                "global\n  maxconn 512\n\
                 defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  \
                 retries 3\n  option redispatch 1\n\
                 frontend registry_auth\n  bind 127.0.0.1:{port}\n  default_backend tollgate\n\
                 backend tollgate\n  balance roundrobin\n  option forwardfor\n  option httpchk GET {health_path}\n  \
                 default-server inter 300ms fall 2 rise 1\n"
            );
            for (name, addr) in servers {
                config.push_str(&format!("  server {name} {addr} check\n"));
            }
            config.push_str(&format!(
                "listen stats\n  bind 127.0.0.1:{stats_port}\n  stats enable\n  stats uri /stats\n"
            ));
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(&cfg, config).expect("write haproxy.cfg");
            let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("haproxy log");
            let mut cmd = command(&bin);
            cmd.arg("-db").arg("-f").arg(&cfg).stdin(Stdio::null()).stdout(log.try_clone().expect("dup")).stderr(log);
            let mut child = cmd.spawn().expect("start haproxy");
            let (addr, stats) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{stats_port}"));
            let log = || std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    // A port taken between the probe and haproxy's bind: try others.
                    assert!(attempt < 5 && log().contains("cannot bind"), "haproxy exited with {status}:\n{}", log());
                    break;
                }
                let states = server_states(&stats);
                if states.len() == servers.len() && states.iter().all(|(_, s)| s == "UP") {
                    return Haproxy { child, addr, stats, dir, _not_send: PhantomData };
                }
                assert!(Instant::now() < deadline, "haproxy's servers are not up: {states:?}\n{}", log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Each backend server's state as the balancer sees it (`UP`, `DOWN`, ...).
    pub fn server_states(&self) -> Vec<(String, String)> {
        server_states(&self.stats)
    }

    /// Waits until server `name` is in `state` (`UP` or `DOWN`); panics after 10 s.
    pub fn wait_for(&self, name: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let states = self.server_states();
            if states.iter().any(|(n, s)| n == name && s == state) {
                return;
            }
            assert!(Instant::now() < deadline, "haproxy never saw {name} {state}: {states:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

/// The backend servers' states from haproxy's CSV statistics at `stats`.
fn server_states(stats: &str) -> Vec<(String, String)> {
    let Ok(r) = http_get(stats, "/stats;csv", &[]) else { return Vec::new() };
    r.body
        .lines()
        .filter_map(|l| {
            // pxname, svname, ..., status (the 18th field)
            let f: Vec<&str> = l.split(',').collect();
            let (proxy, server, status) = (*f.first()?, *f.get(1)?, *f.get(17)?);
            (proxy == "tollgate" && server != "BACKEND" && server != "FRONTEND")
                .then(|| (server.to_string(), status.to_string()))
        })
        .collect()
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
