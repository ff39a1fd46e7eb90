//! A private Debian `redis-server` per test: loopback, a port chosen at run time, a password, no
//! persistence (`--save '' --appendonly no`), its own directory and log.
//!
//! [`RedisServer::stop`] and [`RedisServer::start_again`] restart it on the same port (with an empty
//! dataset: nothing is persisted), so a test can take the shared store away from running tollgate
//! replicas and give it back. Like the other servers of the rig it dies with the thread that spawned it
//! (PDEATHSIG through [`command`]) and is not `Send`.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::service::wait_for_log_line;
use super::{command, require, run, tempdir, Output};

/// The password every rig Redis requires (so the URL tollgate reads from its file carries one).
pub const PASSWORD: &str = "redis-rig-password-4b1d";

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    starts: u32,
    /// More arguments for redis-server (a replica's `--replicaof`, a memory limit).
    extra: Vec<String>,
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A replica of `master` (same password), replicating before this returns.
    pub fn replica_of(master: &RedisServer) -> RedisServer {
        let port = master.port.to_string();
        let r = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port, "--masterauth", PASSWORD]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !r.cli(&["INFO", "replication"]).stdout.contains("master_link_status:up") {
            assert!(std::time::Instant::now() < deadline, "replica on {} never linked to {}", r.port, master.port);
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }

    /// With more redis-server arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        require("redis-server", "redis-server");
        let mut r = RedisServer {
            child: None,
            port: 0,
            dir: tempdir("redis"),
            starts: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _not_send: PhantomData,
        };
        for _attempt in 0..5 {
            r.port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if r.spawn() {
                return r;
            }
        }
        panic!("redis-server did not start after 5 attempts; logs in {}", r.dir.path().display());
    }

    /// Spawn on `self.port`; false when it exited first (the port was taken).
    fn spawn(&mut self) -> bool {
        self.starts += 1;
        let log = self.dir.path().join(format!("redis-{}-{}.log", self.port, self.starts));
        let out = std::fs::File::create(&log).expect("create log");
        let mut cmd = command("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", PASSWORD, "--daemonize", "no", "--loglevel", "notice"])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let mut child = cmd.spawn().expect("spawn redis-server");
        if wait_for_log_line(&mut child, &log, "Ready to accept connections", "redis-server") {
            self.child = Some(child);
            true
        } else {
            false
        }
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}/0", self.port)
    }

    /// The URL in a file (tollgate's `state.redis_url_file`).
    pub fn url_file(&self) -> PathBuf {
        let p = self.dir.path().join("redis-url");
        std::fs::write(&p, self.url() + "\n").expect("write url file");
        p
    }

    /// The process id (to kill it with a signal of the test's choice).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// SIGKILL, as a crashed host: no goodbye to clients or replicas.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// Kill it ("Redis down").
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port (empty: nothing was persisted).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is running");
        for _ in 0..20 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Freeze it (SIGSTOP): connections stay open but nothing is answered, like a Redis stuck on a slow
    /// disk or behind a black-holed route.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Undo [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server is running");
        // SAFETY: kill(2) on the pid of our own child.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0, "kill({sig})");
    }

    /// Run `redis-cli` against it.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = command(require("redis-cli", "redis-tools"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--no-auth-warning", "-a", PASSWORD]).args(args);
        run(cmd, None, &[PASSWORD], Duration::from_secs(10))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT); // a stopped process would not die until continued
        }
        self.stop();
    }
}
