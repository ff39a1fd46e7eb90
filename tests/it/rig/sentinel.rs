//! Redis Sentinels for a rig [`RedisServer`] master: real Debian `redis-server FILE --sentinel` processes on
//! loopback, each with its own writable config (Sentinel rewrites it), watching the master under
//! [`MASTER_NAME`] with a quorum of two and `down-after-milliseconds` 1000, so a killed master is replaced
//! within seconds. Like the rest of the rig they die with the thread that spawned them.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::redis::{RedisServer, PASSWORD};
use super::service::wait_for_log_line;
use super::{command, require, run, tempdir, Output};

/// The name the sentinels watch the master under.
pub const MASTER_NAME: &str = "rigmaster";

pub struct Sentinels {
    children: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Sentinels {
    /// `n` sentinels watching `master`; returns once each knows the master, its replicas (`replicas` of
    /// them) and the other sentinels, so a failover can happen.
    pub fn start(master: &RedisServer, n: usize, replicas: usize) -> Sentinels {
        let bin = require("redis-server", "redis-server");
        let dir = tempdir("sentinel");
        let mut s = Sentinels { children: Vec::new(), ports: Vec::new(), _dir: dir };
        for i in 0..n {
            let mut started = false;
            for _attempt in 0..5 {
                let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let conf = s._dir.path().join(format!("sentinel-{i}-{port}.conf"));
                let log = s._dir.path().join(format!("sentinel-{i}-{port}.log"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {m} 2\n\
                         sentinel auth-pass {MASTER_NAME} {PASSWORD}\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 10000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir = s._dir.path().display(),
                        m = master.port
                    ),
                )
                .unwrap();
                let out = std::fs::File::create(&log).unwrap();
                let mut cmd = command(&bin);
                cmd.arg(&conf).arg("--sentinel").stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
                let mut child = cmd.spawn().expect("spawn redis-server --sentinel");
                if wait_for_log_line(&mut child, &log, "+monitor master", "redis sentinel") {
                    s.children.push(child);
                    s.ports.push(port);
                    started = true;
                    break;
                }
            }
            assert!(started, "sentinel {i} did not start");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for &port in &s.ports {
            loop {
                let others = s.cli(port, &["SENTINEL", "sentinels", MASTER_NAME]).stdout.matches("name").count();
                let known = s.cli(port, &["SENTINEL", "replicas", MASTER_NAME]).stdout.matches("name").count();
                if others >= n - 1 && known >= replicas {
                    break;
                }
                assert!(Instant::now() < deadline, "sentinel {port} sees {others} sentinels, {known} replicas");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        s
    }

    /// `host:port` of each, for `state.sentinel.nodes`.
    pub fn nodes(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }

    /// The port of the master as the first sentinel that answers names it.
    pub fn master_port(&self) -> Option<u16> {
        self.ports.iter().find_map(|&p| {
            let out = self.cli(p, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
            out.stdout.lines().nth(1).and_then(|l| l.trim().parse().ok())
        })
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> Output {
        let mut cmd = command(require("redis-cli", "redis-tools"));
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
        run(cmd, None, &[], Duration::from_secs(10))
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
