//! containerd's `ctr` client against ONE containerd daemon shared by the whole test process.
//!
//! containerd takes a moment to boot and holds a bolt database, so one daemon serves every test; each
//! [`Ctr`] handle gets its own containerd *namespace*, and the content store is configured as
//! `isolated` so a blob pulled in one namespace is fetched again (through the registry, with a token)
//! in another instead of being shared silently.
//!
//! Process lifetime: the daemon is spawned from a dedicated thread that then blocks in `wait()` for as
//! long as the daemon lives. PR_SET_PDEATHSIG is tied to the spawning *thread*; spawned from a test
//! thread, the daemon would be SIGKILLed as soon as that one test finished. Its directory is never
//! removed while the process runs (a test may still be using it). At a normal exit an `atexit` hook
//! kills, reaps and removes it; after a crash PDEATHSIG kills it and the next run removes the directory
//! (its name carries the owning pid).
//!
//! Pitfalls found on Debian 12 (containerd 1.6.20):
//! - The default snapshotter is `overlayfs`, which needs overlay mounts that sandboxes and nested
//!   containers often forbid; pulls here use `--snapshotter native` (plain copies, works as root
//!   anywhere). overlay/btrfs/zfs/devmapper/aufs and the CRI plugin are disabled so the daemon does not
//!   probe the kernel or set up CNI.
//! - The `opt` plugin creates `/opt/containerd` unless its `path` is set: it is pointed into our dir.
//! - `ctr --user NAME` without `:password` prompts on the terminal; always pass `user:password`.
//! - `ctr images pull --refresh TOKEN` sends the token as an OAuth2 refresh token
//!   (`grant_type=refresh_token`); with `--user`, ctr first tries `grant_type=password` by POST.

use super::{command, require, run, version_line, version_number, Output, DEFAULT_TIMEOUT};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

struct Daemon {
    dir: PathBuf,
    address: PathBuf,
    log: PathBuf,
    /// Set by the owner thread when the daemon exits, so later calls can say why they fail.
    exited: Mutex<Option<String>>,
}

static DAEMON: OnceLock<Result<Daemon, String>> = OnceLock::new();
static DAEMON_PID: AtomicI32 = AtomicI32::new(0);
/// Set by the owner thread when the daemon exits: lets the start-up wait fail fast on a bad config.
static DAEMON_EXITED: AtomicBool = AtomicBool::new(false);
static DAEMON_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Runs when the test binary exits normally (libtest returns from `main`): kills and *reaps* the daemon
/// and removes its directory. PDEATHSIG alone would kill it, but the orphan is then re-parented to
/// PID 1, and a sandbox init that does not reap (as on this machine) keeps a `<defunct>` entry forever.
/// After a crash this does not run; the next run's `remove_stale_dirs` cleans up instead.
extern "C" fn stop_daemon_at_exit() {
    let pid = DAEMON_PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: plain syscalls on the pid we spawned. If the owner thread reaps it first, waitpid
        // just fails with ECHILD.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if let Some(dir) = DAEMON_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn daemon() -> &'static Daemon {
    match DAEMON.get_or_init(start_daemon) {
        Ok(d) => d,
        Err(e) => panic!("the shared containerd daemon could not start: {e}"),
    }
}

fn start_daemon() -> Result<Daemon, String> {
    let bin = require("containerd", "containerd");
    // Not a `TempDir`: it must outlive every test, and is removed at exit (see above). Named like the
    // rig's other temp dirs so a run killed with SIGKILL has it removed by the next run.
    let dir = super::tempdir("ctrd").keep();
    // A unix socket path must fit in 108 bytes; keep the names short.
    let address = dir.join("c.sock");
    let log = dir.join("containerd.log");
    let config = dir.join("config.toml");
    std::fs::write(&config, config_toml(&dir, &address)).map_err(|e| format!("write {}: {e}", config.display()))?;

    let (tx, rx) = mpsc::channel();
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("containerd-owner".into())
        .spawn(move || {
            let mut cmd = command(&bin);
            cmd.arg("--config")
                .arg(&config)
                .stdin(std::process::Stdio::null())
                .stdout(log_file.try_clone().expect("dup containerd log"))
                .stderr(log_file);
            match cmd.spawn() {
                Ok(mut child) => {
                    DAEMON_PID.store(child.id() as i32, Ordering::SeqCst);
                    let _ = tx.send(Ok(()));
                    // Block here for the daemon's whole life: this thread's exit would kill it.
                    let status = child.wait();
                    DAEMON_EXITED.store(true, Ordering::SeqCst);
                    let msg = format!("containerd exited: {status:?}");
                    if let Some(Ok(d)) = DAEMON.get() {
                        *d.exited.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("spawn {}: {e}", bin.display())));
                }
            }
        })
        .map_err(|e| format!("spawn containerd owner thread: {e}"))?;
    rx.recv().map_err(|e| e.to_string())??;
    let _ = DAEMON_DIR.set(dir.clone());
    // SAFETY: registering a plain `extern "C"` function; it runs once, in `exit()`.
    unsafe { libc::atexit(stop_daemon_at_exit) };

    // Ready when the gRPC socket accepts connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&address).is_err() {
        let exited = DAEMON_EXITED.load(Ordering::SeqCst);
        if exited || Instant::now() > deadline {
            return Err(format!(
                "socket {} not ready ({})\n--- containerd log ---\n{}",
                address.display(),
                if exited { "containerd exited" } else { "30 s" },
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Daemon { dir, address, log, exited: Mutex::new(None) })
}

fn config_toml(dir: &Path, address: &Path) -> String {
    let p = |sub: &str| format!("{:?}", dir.join(sub).to_string_lossy());
    format!(
        r#"# Generated by the tollgate test rig: a private containerd for `ctr images pull`.
version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]

[grpc]
  address = {address:?}

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
"#,
        root = p("root"),
        state = p("state"),
        opt = p("opt"),
        address = address.to_string_lossy(),
    )
}

/// A `ctr` bound to the shared daemon and to a namespace of its own.
pub struct Ctr {
    bin: PathBuf,
    namespace: String,
}

impl Ctr {
    /// Starts the shared daemon on first use.
    pub fn new() -> Ctr {
        let bin = require("ctr", "containerd");
        daemon();
        Ctr { bin, namespace: super::unique("rig") }
    }

    /// The containerd namespace this handle uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `ctr images pull --plain-http [--user U:P] REF`; REF like `127.0.0.1:PORT/team/app:1`.
    pub fn pull(&self, image_ref: &str, user: Option<(&str, &str)>) -> Output {
        let mut args = vec!["images".to_string(), "pull".into()];
        args.extend(Self::pull_flags());
        if let Some((u, p)) = user {
            args.extend(["--user".into(), format!("{u}:{p}")]);
        }
        args.push(image_ref.into());
        self.run(&args, &[user.map(|(_, p)| p).unwrap_or_default()])
    }

    /// `ctr images pull --plain-http --refresh TOKEN REF`: authenticates with an OAuth2 refresh token
    /// (for example the `identitytoken` that `docker login` stored) instead of a password.
    pub fn pull_with_refresh(&self, image_ref: &str, refresh_token: &str) -> Output {
        let mut args = vec!["images".to_string(), "pull".into()];
        args.extend(Self::pull_flags());
        args.extend(["--refresh".into(), refresh_token.into(), image_ref.into()]);
        self.run(&args, &[refresh_token])
    }

    fn pull_flags() -> Vec<String> {
        ["--plain-http", "--snapshotter", "native"].map(String::from).to_vec()
    }

    /// The image names in this handle's namespace (`ctr images ls -q`).
    pub fn images(&self) -> Vec<String> {
        let out = self.run(&["images".into(), "ls".into(), "-q".into()], &[]);
        out.assert_ok();
        out.stdout.lines().map(str::to_string).collect()
    }

    /// The shared daemon's log so far.
    pub fn daemon_log() -> String {
        std::fs::read_to_string(&daemon().log).unwrap_or_default()
    }

    /// The shared daemon's directory (root, state, socket, log).
    pub fn daemon_dir() -> &'static Path {
        &daemon().dir
    }

    fn run(&self, args: &[String], secrets: &[&str]) -> Output {
        let d = daemon();
        if let Some(why) = d.exited.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            panic!("{why}\n--- containerd log ---\n{}", Ctr::daemon_log());
        }
        let mut cmd = command(&self.bin);
        cmd.arg("--address").arg(&d.address).arg("--namespace").arg(&self.namespace).args(args);
        run(cmd, None, secrets, DEFAULT_TIMEOUT)
    }

    /// The installed `ctr` version, e.g. `1.6.20~ds1`. Does not start the daemon.
    pub fn version() -> String {
        let bin = require("ctr", "containerd");
        version_number(&version_line(&bin, &["--version"]))
    }
}

impl Default for Ctr {
    fn default() -> Self {
        Ctr::new()
    }
}

/// The installed containerd daemon version.
pub fn containerd_version() -> String {
    let bin = require("containerd", "containerd");
    version_number(&version_line(&bin, &["--version"]))
}
