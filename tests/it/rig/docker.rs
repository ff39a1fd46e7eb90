//! The `docker` CLI, used for `docker login` only, with no Docker daemon.
//!
//! When it cannot reach a daemon, the CLI performs the login itself (client side): it GETs `/v2/`,
//! follows the Bearer challenge to the token server with Basic credentials, and writes
//! `DOCKER_CONFIG/config.json`: `auth` (base64 `user:password`) or, when the token server returned a
//! `refresh_token`, `identitytoken` instead of the password. That is exactly the part of Docker that
//! talks to tollgate, so no engine is needed.
//!
//! Pitfalls handled here:
//! - `DOCKER_HOST` points at a socket that does not exist, so a daemon on the host (or a CI service
//!   container) can never be used by accident; the CLI then logs "Error logging in to endpoint, trying
//!   next endpoint" for https and succeeds over http, which it allows for `127.0.0.0/8` without any
//!   `insecure-registries` setting. Use `127.0.0.1:PORT`, not `localhost:PORT`.
//! - A pre-written `config.json` with `"credsStore": ""` keeps the CLI from picking a credential helper
//!   (`docker-credential-pass`/`-secretservice`) that happens to be installed; otherwise the secret would
//!   go to the helper and `config.json` would hold no `auth`/`identitytoken` to assert on.

use super::{command, require, run, tempdir, version_line, version_number, Output, DEFAULT_TIMEOUT};
use std::path::PathBuf;

/// A docker CLI with its own config dir, removed on drop.
pub struct DockerCli {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl DockerCli {
    pub fn new() -> DockerCli {
        let bin = require("docker", "docker.io");
        let dir = tempdir("docker");
        for sub in ["config", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create docker dirs");
        }
        std::fs::write(dir.path().join("config/config.json"), r#"{"auths":{},"credsStore":""}"#)
            .expect("write docker config.json");
        DockerCli { bin, dir }
    }

    /// `DOCKER_CONFIG`: the directory holding `config.json`.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// `config.json` parsed. Read `["auths"]["127.0.0.1:PORT"]["identitytoken"]` after a login to get
    /// the refresh token tollgate issued.
    pub fn config_json(&self) -> serde_json::Value {
        let path = self.config_dir().join("config.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
    }

    /// `docker login -u USER --password-stdin HOST`.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Output {
        self.run(
            &["login", "-u", user, "--password-stdin", host],
            Some(format!("{password}\n").as_bytes()),
            &[password],
        )
    }

    /// `docker logout HOST`.
    pub fn logout(&self, host: &str) -> Output {
        self.run(&["logout", host], None, &[])
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>, secrets: &[&str]) -> Output {
        let d = self.dir.path();
        let mut cmd = command(&self.bin);
        cmd.env("DOCKER_CONFIG", self.config_dir())
            .env("HOME", d.join("home"))
            .env("DOCKER_HOST", format!("unix://{}", d.join("no-daemon.sock").display()))
            // Keep the output to what the command says: no "What's next" hints, no telemetry.
            .env("DOCKER_CLI_HINTS", "false")
            .env("DOCKER_CLI_OTEL_EXPORTER_OTLP_ENDPOINT", "")
            .args(args);
        run(cmd, stdin, secrets, DEFAULT_TIMEOUT)
    }

    /// The installed CLI version, e.g. `20.10.24` (Debian `docker.io`) or `28.2.2`.
    pub fn version() -> String {
        let bin = require("docker", "docker.io");
        version_number(&version_line(&bin, &["--version"]))
    }
}

impl Default for DockerCli {
    fn default() -> Self {
        DockerCli::new()
    }
}
