//! `podman` as root without systemd: login, logout, pull, tag and push, each instance with its own
//! image store and auth file.
//!
//! The flags are what make podman usable in a CI sandbox: `--storage-driver vfs` (overlay needs kernel
//! support and a mount program we cannot count on; vfs just copies), `--cgroup-manager cgroupfs` (no
//! systemd to talk to), `--events-backend file` (the default `journald` fails without journald), and a
//! private `--root`/`--runroot`/`--tmpdir` so parallel tests never share storage or locks.

use super::{
    command, require, run, tempdir, version_line, version_number, write_containers_config, Output, DEFAULT_TIMEOUT,
};
use std::path::{Path, PathBuf};

/// A podman with a private image store, removed on drop.
pub struct Podman {
    bin: PathBuf,
    dir: tempfile::TempDir,
    authfile: PathBuf,
    policy: PathBuf,
    registries_conf: PathBuf,
    storage_conf: PathBuf,
    containers_conf: PathBuf,
}

impl Podman {
    pub fn new() -> Podman {
        let bin = require("podman", "podman");
        let dir = tempdir("podman");
        let d = dir.path();
        let (registries_conf, policy) = write_containers_config(d);
        for sub in ["home", "run", "root", "runroot", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).expect("create podman dirs");
        }
        // The host's storage.conf could name another driver or mount options; ours only repeats the
        // command-line flags so nothing else is picked up.
        let storage_conf = d.join("storage.conf");
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = {:?}\ngraphroot = {:?}\n",
                d.join("runroot"),
                d.join("root")
            ),
        )
        .expect("write storage.conf");
        // containers.conf: no journald (events), no systemd (cgroups), and file locks instead of the
        // host-wide `/dev/shm/libpod_lock` segment that every root podman otherwise shares.
        let containers_conf = d.join("containers.conf");
        std::fs::write(
            &containers_conf,
            "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
             lock_type = \"file\"\n",
        )
        .expect("write containers.conf");
        let authfile = d.join("auth.json");
        Podman { bin, dir, authfile, policy, registries_conf, storage_conf, containers_conf }
    }

    /// The `auth.json` that `login` writes and every other call reads.
    pub fn authfile(&self) -> &Path {
        &self.authfile
    }

    /// The auth file parsed, or `None` if podman has not written one (yet).
    pub fn auth_json(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.authfile).ok()?;
        Some(serde_json::from_str(&text).expect("podman auth.json is JSON"))
    }

    /// `podman login -u USER --password-stdin HOST`. The password goes through stdin so it never
    /// appears in a process list.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Output {
        self.run(
            &[
                "login",
                "--tls-verify=false",
                "--authfile",
                &self.authfile.to_string_lossy(),
                "-u",
                user,
                "--password-stdin",
                host,
            ],
            Some(password.as_bytes()),
            &[password],
        )
    }

    /// `podman logout HOST`.
    pub fn logout(&self, host: &str) -> Output {
        self.run(&["logout", "--authfile", &self.authfile.to_string_lossy(), host], None, &[])
    }

    /// `podman pull IMAGE` (a reference such as `127.0.0.1:PORT/team/app:1`, no transport prefix).
    pub fn pull(&self, image: &str) -> Output {
        self.run(
            &[
                "pull",
                "--tls-verify=false",
                "--authfile",
                &self.authfile.to_string_lossy(),
                "--signature-policy",
                &self.policy.to_string_lossy(),
                image,
            ],
            None,
            &[],
        )
    }

    /// `podman push LOCAL DEST` (DEST without `docker://`).
    pub fn push(&self, local: &str, dest: &str) -> Output {
        self.run(
            &[
                "push",
                "--tls-verify=false",
                "--authfile",
                &self.authfile.to_string_lossy(),
                "--signature-policy",
                &self.policy.to_string_lossy(),
                local,
                dest,
            ],
            None,
            &[],
        )
    }

    /// `podman tag SRC DEST` (local only).
    pub fn tag(&self, src: &str, dest: &str) -> Output {
        self.run(&["tag", src, dest], None, &[])
    }

    /// `podman images --format json`, for checking what is in the local store.
    pub fn images(&self) -> Output {
        self.run(&["images", "--format", "json"], None, &[])
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>, secrets: &[&str]) -> Output {
        let d = self.dir.path();
        let mut cmd = command(&self.bin);
        cmd.env("HOME", d.join("home"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("XDG_CONFIG_HOME", d.join("home/.config"))
            .env("TMPDIR", d.join("tmp"))
            .env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .env("CONTAINERS_CONF", &self.containers_conf)
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        run(cmd, stdin, secrets, DEFAULT_TIMEOUT)
    }

    /// The installed podman version, e.g. `4.3.1`.
    pub fn version() -> String {
        let bin = require("podman", "podman");
        version_number(&version_line(&bin, &["--version"]))
    }
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}
