//! The integration-test rig: real registries and real registry clients, driven from Rust tests.
//!
//! Everything here runs the actual Debian binaries (`docker-registry` 2.8, `skopeo`, `podman`,
//! `containerd`/`ctr`, the `docker` CLI, and the directories: OpenLDAP `slapd`, a Samba AD DC) on
//! loopback, each in its own temporary directories, so that tests run in parallel and never touch the
//! host's configuration or credentials.
//!
//! A typical tollgate test:
//! ```ignore
//! let reg = Registry::start(RegistryOptions { auth: Some(TokenAuth {
//!     realm: format!("http://{tollgate_addr}/token"), service: "registry.test".into(),
//!     issuer: "tollgate".into(), rootcertbundle: Some(cert_pem), jwks: None }) });
//! let tmp = tempfile::tempdir().unwrap();
//! let image = format!("oci:{}:latest", oci_image(tmp.path(), "my-test").display());
//! let out = Skopeo::new().copy(&image, &reg.docker_ref("team/app:1"), Some(("alice", "pw")));
//! out.assert_ok();                       // panics with the command line and both outputs
//! assert!(reg.auth_errors().is_empty()); // the registry's reasons for refusing tokens
//! ```
//! [`FakeRealm`] is a stand-in token server (real ES256 tokens, records what clients send) for testing
//! the rig itself, and a reference for the requests each client makes.
//!
//! Rules every part of the rig follows:
//! - Every child process is spawned through [`command`], which sets `PR_SET_PDEATHSIG = SIGKILL`: if the
//!   test binary dies (panic with `panic=abort`, SIGKILL from a CI timeout, Ctrl-C) nothing is left
//!   behind. PDEATHSIG fires when the *spawning thread* exits, which is why per-test processes are
//!   spawned from the test's own thread (and killed in `Drop`; `Registry` is not `Send` so it cannot
//!   be handed out of a helper thread), and the shared containerd daemon is spawned from a dedicated
//!   thread that lives as long as the daemon (see [`ctr`]).
//! - A missing binary is a loud panic naming the Debian package to install ([`require`]); a test that
//!   silently skips would hide exactly the regressions this rig exists to catch.
//! - Every client call has a timeout ([`DEFAULT_TIMEOUT`]) and returns an [`Output`] whose `Display`
//!   shows the full command line with the variables the rig set (secrets redacted) and both output
//!   streams, for assertion messages.
//!
//! Every rig call BLOCKS its thread (it waits for a process). In a `#[tokio::test]` (current-thread
//! runtime by default) that also serves tollgate from a spawned task, a blocking `skopeo.copy()` would
//! starve the server until the 120 s timeout: use `#[tokio::test(flavor = "multi_thread")]`, run the
//! server on its own runtime/thread, or call the rig through `spawn_blocking`. Keep a [`Registry`] on
//! the test's thread (it is `!Send`, see there); share `reg.addr().to_string()` instead.
//!
//! Pitfalls found while building this (details next to the code that handles each):
//! - registry 2.8 requires `rootcertbundle` (panics at start without it) and ignores the v3 `jwks` key;
//!   it logs why it refused a token (`error authorizing context: …`), the clients only say
//!   "unauthorized" ([`Registry::auth_errors`]).
//! - A registry must be considered ready only after it logged `listening on ADDR`: the free port can be
//!   taken by someone else between our probe and its bind ([`registry`]).
//! - containers/image (skopeo, podman) needs a trust policy (`/etc/containers/policy.json`); the rig
//!   passes its own (`--policy`, podman's hidden `--signature-policy`) plus an empty registries.conf.
//! - containers/image ignores an `identitytoken` unless `auth` is base64 `user:` ([`skopeo`]); it POSTs
//!   the OAuth2 form with `Transfer-Encoding: chunked` ([`realm`]).
//! - podman as root without systemd: `--storage-driver vfs --cgroup-manager cgroupfs --events-backend
//!   file`, and private `--root/--runroot/--tmpdir` plus `lock_type = "file"`, or it uses the host-wide
//!   `/run/libpod` and `/dev/shm/libpod_lock` ([`podman`]).
//! - `docker login` without a daemon works client-side, over plain HTTP only for `127.0.0.0/8`; force
//!   "no daemon" with a dead `DOCKER_HOST` and keep credential helpers out with `"credsStore": ""`
//!   ([`docker`]).
//! - containerd: `--snapshotter native` (overlayfs is not available everywhere), the `opt` plugin writes
//!   to `/opt/containerd` unless configured, `content_sharing_policy = "isolated"` so every namespace
//!   really downloads, and a sandbox PID 1 that does not reap orphans ([`ctr`]).
//! - Installing docker.io / docker-registry starts their services (port 5000, a dockerd that fails
//!   without cgroups): `scripts/test.sh` installs under a `policy-rc.d` that forbids it.
//! - A Samba AD DC listens on fixed ports (389, 636, 3268, 3269), so each gets a loopback address of its
//!   own; it refuses simple binds without TLS, its own certificate has no subjectAltName, and its pid file
//!   and sockets default to host-wide paths ([`samba`]).

#![allow(dead_code, unused_imports)] // A library for tests: not every helper is used by every module.

pub mod browser;
pub mod ctr;
pub mod docker;
pub mod glewlwyd;
pub mod haproxy;
pub mod http;
pub mod issuer;
pub mod oci;
pub mod oidc_provider;
pub mod podman;
pub mod pty;
pub mod realm;
pub mod redis;
pub mod registry;
pub mod samba;
pub mod sentinel;
pub mod service;
pub mod skopeo;
pub mod slapd;
pub mod slow_proxy;

pub use ctr::Ctr;
pub use docker::DockerCli;
pub use glewlwyd::Glewlwyd;
pub use http::{http_get, HttpResponse};
pub use issuer::{Issuer, SigningKey};
pub use oci::{manifest_digest, oci_image};
pub use oidc_provider::{OidcProvider, OidcProviderOptions};
pub use podman::Podman;
pub use realm::{FakeRealm, FakeRealmOptions, RealmRequest};
pub use registry::{Registry, RegistryOptions, TokenAuth};
pub use samba::SambaDc;
pub use skopeo::{auth_json_basic, auth_json_identity_token, Skopeo};
pub use slapd::{Silent, Slapd, SlapdOptions};

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a single client call may take before it is killed. Generous because CI machines have two
/// cores and podman with the `vfs` driver copies whole layers; a healthy call takes well under 5 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The result of one client invocation.
#[derive(Debug, Clone)]
pub struct Output {
    /// The process exited with status 0 (and was not killed by the timeout).
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    /// The command line as run, with secrets replaced by `***`.
    pub command: String,
    /// Exit code, `None` when killed by a signal (including our timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Output {
    /// Panics with the full command and its output unless the call succeeded. Returns `self` so a test
    /// can go on to inspect stdout.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok, "expected success:\n{self}");
        self
    }

    /// Panics with the full command and its output unless the call failed.
    #[track_caller]
    pub fn assert_failed(&self) -> &Self {
        assert!(!self.ok, "expected failure:\n{self}");
        self
    }

    /// stdout and stderr together, for `contains` checks that do not care which stream a tool used.
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Parses stdout as JSON, panicking with the whole output if it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.timed_out, self.code) {
            (true, _) => "KILLED after timeout".to_string(),
            (false, Some(c)) => format!("exit {c}"),
            (false, None) => "killed by signal".to_string(),
        };
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "  -> {status} in {:.1?}", self.elapsed)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Finds `bin` (a bare name searched on `PATH`, or an absolute path) or panics naming the Debian package
/// that provides it. Tests must not skip when a tool is missing: `bash scripts/test.sh` installs them.
#[track_caller]
pub fn require(bin: &str, package: &str) -> PathBuf {
    let found = if bin.contains('/') {
        Some(PathBuf::from(bin)).filter(|p| is_executable(p))
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(bin)).find(|p| is_executable(p)))
    };
    found.unwrap_or_else(|| {
        panic!(
            "\n\n*** `{bin}` is not installed: the integration tests need it.\n\
             *** Install it with: apt-get install -y --no-install-recommends {package}\n\
             *** (or run `bash scripts/test.sh`, which installs every tool the tests use)\n\n"
        )
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A `Command` whose process receives SIGKILL when the thread that spawned it exits.
///
/// Also clears inherited variables that would make a client read the host's configuration or talk to
/// the host's daemons instead of the rig's private ones.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "REGISTRY_AUTH_FILE",
        "CONTAINERD_ADDRESS",
        "CONTAINERD_NAMESPACE",
        "CONTAINERD_SNAPSHOTTER",
        "CONTAINERS_CONF",
        "CONTAINERS_REGISTRIES_CONF",
        "CONTAINERS_STORAGE_CONF",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "XDG_DATA_HOME",
        // A proxy set on a CI runner would swallow our 127.0.0.1 traffic.
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no signal would ever come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd
}

/// Renders a command line for messages, replacing every occurrence of each secret with `***`.
///
/// Variables the rig sets (HOME, DOCKER_CONFIG, …) are shown first, so the line can be pasted into a
/// shell to reproduce a failure while the temp dirs still exist.
pub fn render(cmd: &Command, secrets: &[&str]) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        let (k, Some(v)) = (k.to_string_lossy(), v) else {
            continue; // removed variables
        };
        if !k.eq_ignore_ascii_case("no_proxy") {
            s.push_str(&format!("{k}={} ", v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        s.push(' ');
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            s.push_str(&format!("'{arg}'"));
        } else {
            s.push_str(&arg);
        }
    }
    redact(&s, secrets)
}

/// Replaces each non-empty secret in `text` with `***`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "***");
    }
    out
}

/// Runs `cmd` to completion (or until `timeout`), feeding `stdin` and capturing both streams.
///
/// Output goes to anonymous temp files rather than pipes: a client that leaves a grandchild holding
/// the pipe open (podman's helpers can) would otherwise make us wait forever for EOF.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, secrets: &[&str], timeout: Duration) -> Output {
    let rendered = render(&cmd, secrets);
    let mut out = tempfile::tempfile().expect("create temp file for stdout");
    let mut err = tempfile::tempfile().expect("create temp file for stderr");
    cmd.stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"))
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn `{rendered}`: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        // A tool that exits early closes its stdin; that shows up in its output, not here.
        let _ = pipe.write_all(input);
    }
    let (status, timed_out) = wait_timeout(&mut child, timeout);
    let read = |f: &mut std::fs::File| {
        let mut s = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("rewind capture file");
        f.read_to_end(&mut s).expect("read capture file");
        redact(&String::from_utf8_lossy(&s), secrets)
    };
    Output {
        ok: !timed_out && status.is_some_and(|s| s.success()),
        stdout: read(&mut out),
        stderr: read(&mut err),
        command: rendered,
        code: status.and_then(|s| s.code()),
        timed_out,
        elapsed: start.elapsed(),
    }
}

/// Waits for `child`, killing it after `timeout`. Returns its status (None if it could not be reaped)
/// and whether the timeout fired.
fn wait_timeout(child: &mut Child, timeout: Duration) -> (Option<std::process::ExitStatus>, bool) {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                return (child.wait().ok(), true);
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
    }
}

/// Runs `BIN ARGS…` and returns the first line of its output, trimmed; panics if it fails.
fn version_line(bin: &Path, args: &[&str]) -> String {
    let mut cmd = command(bin);
    cmd.args(args);
    let out = run(cmd, None, &[], Duration::from_secs(30));
    out.assert_ok();
    let text = if out.stdout.trim().is_empty() { &out.stderr } else { &out.stdout };
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Picks the version number out of a `--version` line: the first word that starts with a digit
/// (`Docker version 28.2.2, build e6534b4` -> `28.2.2`).
fn version_number(line: &str) -> String {
    line.split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(line)
        .to_string()
}

/// The version of every tool the rig drives, for a client-matrix report. Panics if a tool is missing.
pub fn versions() -> BTreeMap<&'static str, String> {
    let mut v = BTreeMap::new();
    v.insert("docker-registry", Registry::version());
    v.insert("skopeo", Skopeo::version());
    v.insert("podman", Podman::version());
    v.insert("ctr", Ctr::version());
    v.insert("containerd", ctr::containerd_version());
    v.insert("docker", DockerCli::version());
    v
}

/// A small, collision-free label (pid + counter) for names that must be unique per test process and
/// across parallel test processes: containerd namespaces, repository names.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Every rig temp dir is named `tollgate-rig-{what}-{pid}[-{random}]` in the system temp dir.
const TEMP_PREFIX: &str = "tollgate-rig-";

/// A private temp dir for one client instance, removed on drop. Named after the owning process so
/// that dirs left behind by a killed test run (no destructors run on SIGKILL) can be recognised and
/// removed by the next run.
pub fn tempdir(what: &str) -> tempfile::TempDir {
    static CLEAN_ONCE: std::sync::Once = std::sync::Once::new();
    CLEAN_ONCE.call_once(remove_stale_temp_dirs);
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{what}-{}-", std::process::id()))
        .tempdir()
        .expect("create temp dir")
}

/// Removes rig temp dirs whose owning process no longer exists.
fn remove_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|rest| rest.split('-').nth(1))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `containers/image` (used by skopeo and podman) reads `/etc/containers/registries.conf`, where a host
/// may configure mirrors or blocked registries. Each client gets this empty one instead, via
/// `CONTAINERS_REGISTRIES_CONF`.
const REGISTRIES_CONF: &str = "unqualified-search-registries = []\n";

/// A trust policy accepting anything. `containers/image` refuses to copy at all without a policy
/// (`open /etc/containers/policy.json: no such file or directory`), and the host's file is owned by
/// `golang-github-containers-common` and may be stricter; we pass ours explicitly.
const POLICY_JSON: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

/// Writes `registries.conf` and `policy.json` into `dir` and returns their paths.
fn write_containers_config(dir: &Path) -> (PathBuf, PathBuf) {
    let registries = dir.join("registries.conf");
    let policy = dir.join("policy.json");
    std::fs::write(&registries, REGISTRIES_CONF).expect("write registries.conf");
    std::fs::write(&policy, POLICY_JSON).expect("write policy.json");
    (registries, policy)
}
