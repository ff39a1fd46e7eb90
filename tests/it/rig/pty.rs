//! A command on a pseudo-terminal (util-linux `script`), for what only talks to a terminal: password
//! prompts that turn echo off, and credential helpers that log in on /dev/tty. Everything the terminal
//! shows is collected as it comes; the test answers prompts once they have appeared.

use std::io::{Read as _, Write as _};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::{command, require};

pub struct Pty {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Vec<u8>>,
    seen: String,
}

impl Pty {
    /// Run the shell command `line` on a new terminal, with `env` added.
    pub fn spawn(line: &str, env: &[(&str, &str)]) -> Pty {
        let mut cmd = command(require("script", "bsdutils"));
        cmd.args(["-qec", line, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("script runs");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Pty { child, stdin, rx, seen: String::new() }
    }

    fn collect(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(chunk) => {
                self.seen.push_str(&String::from_utf8_lossy(&chunk));
                true
            }
            Err(_) => false,
        }
    }

    /// Wait until the screen shows `text` (panics after `timeout`); what the screen showed so far.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> &str {
        let deadline = Instant::now() + timeout;
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(self.collect(left), "the terminal never showed {text:?}; it showed {:?}", self.seen);
        }
        &self.seen
    }

    /// Type `text` (with a carriage return, as the Enter key sends).
    pub fn type_line(&mut self, text: &str) {
        self.stdin.write_all(format!("{text}\r").as_bytes()).expect("type");
        self.stdin.flush().expect("flush");
    }

    /// The first line starting with `prefix` (after leading spaces) that has appeared, if any.
    pub fn line_with(&mut self, prefix: &str) -> Option<String> {
        while self.collect(Duration::ZERO) {}
        self.seen.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string()))
    }

    /// Whether the command has ended.
    pub fn done(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_some()
    }

    /// Wait for the end (panics after `timeout`): whether it succeeded, and the whole screen (stderr of
    /// `script` itself appended).
    pub fn finish(mut self, timeout: Duration) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "the command did not end; the terminal showed {:?}", self.seen);
            self.collect(Duration::from_millis(50));
        };
        while self.collect(Duration::from_millis(300)) {}
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.success(), self.seen + &err)
    }
}
