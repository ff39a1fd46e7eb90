//! `skopeo`: copy, inspect, list tags and delete against a registry, each instance isolated.
//!
//! skopeo (containers/image) looks for credentials in `--authfile`, then `$XDG_RUNTIME_DIR/containers/
//! auth.json`, `~/.docker/config.json` and `~/.dockercfg`; and for configuration in `/etc/containers`.
//! Every instance gets its own HOME, XDG dirs, DOCKER_CONFIG, registries.conf and policy.json so that
//! nothing from the host (or from another test) leaks into a call.

use super::{
    command, require, run, tempdir, version_line, version_number, write_containers_config, Output, DEFAULT_TIMEOUT,
};
use std::path::{Path, PathBuf};

/// A skopeo with private configuration. Temp files live until it is dropped.
pub struct Skopeo {
    bin: PathBuf,
    dir: tempfile::TempDir,
    authfile: PathBuf,
    policy: PathBuf,
    registries_conf: PathBuf,
}

impl Skopeo {
    /// A skopeo whose auth file (`auth.json` in its temp dir) starts out absent: calls without creds
    /// are anonymous.
    pub fn new() -> Skopeo {
        let bin = require("skopeo", "skopeo");
        let dir = tempdir("skopeo");
        let (registries_conf, policy) = write_containers_config(dir.path());
        for sub in ["home", "run", "docker", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create skopeo dirs");
        }
        let authfile = dir.path().join("auth.json");
        Skopeo { bin, dir, authfile, policy, registries_conf }
    }

    /// A skopeo that reads credentials from `authfile`, a containers/docker `auth.json` the test wrote
    /// (see [`auth_json_basic`], [`auth_json_identity_token`]). Calls with `creds: None` then use it.
    pub fn with_authfile(authfile: &Path) -> Skopeo {
        let mut s = Skopeo::new();
        s.authfile = authfile.to_path_buf();
        s
    }

    /// The auth file every call passes as `--authfile`.
    pub fn authfile(&self) -> &Path {
        &self.authfile
    }

    /// `skopeo copy SRC DEST`. `creds` go to whichever side is a `docker://` reference (both, when
    /// copying registry to registry). TLS verification is off: the rig's registries speak plain HTTP.
    pub fn copy(&self, src: &str, dest: &str, creds: Option<(&str, &str)>) -> Output {
        let mut args: Vec<String> =
            vec!["copy".into(), "--src-tls-verify=false".into(), "--dest-tls-verify=false".into()];
        if let Some((u, p)) = creds {
            if src.starts_with("docker://") {
                args.extend(["--src-creds".into(), format!("{u}:{p}")]);
            }
            if dest.starts_with("docker://") {
                args.extend(["--dest-creds".into(), format!("{u}:{p}")]);
            }
        }
        args.extend([src.to_string(), dest.to_string()]);
        self.run(&args, creds)
    }

    /// `skopeo inspect docker://…`: stdout is the image JSON (`Digest`, `Architecture`, `Layers`, …).
    pub fn inspect(&self, image: &str, creds: Option<(&str, &str)>) -> Output {
        self.simple("inspect", image, creds)
    }

    /// `skopeo list-tags docker://HOST/REPO`: stdout is `{"Repository": …, "Tags": [...]}`.
    pub fn list_tags(&self, repo: &str, creds: Option<(&str, &str)>) -> Output {
        self.simple("list-tags", repo, creds)
    }

    /// `skopeo delete docker://…`. Registries delete manifests by digest, so every tag pointing at the
    /// same manifest disappears with it.
    pub fn delete(&self, image: &str, creds: Option<(&str, &str)>) -> Output {
        self.simple("delete", image, creds)
    }

    /// The tags of `repo` (a `docker://` reference) or a panic with the whole output.
    #[track_caller]
    pub fn tags(&self, repo: &str, creds: Option<(&str, &str)>) -> Vec<String> {
        let out = self.list_tags(repo, creds);
        out.assert_ok();
        let mut tags: Vec<String> = out.json()["Tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        tags.sort();
        tags
    }

    fn simple(&self, verb: &str, image: &str, creds: Option<(&str, &str)>) -> Output {
        let mut args: Vec<String> = vec![verb.into(), "--tls-verify=false".into()];
        if let Some((u, p)) = creds {
            args.extend(["--creds".into(), format!("{u}:{p}")]);
        }
        args.push(image.to_string());
        self.run(&args, creds)
    }

    fn run(&self, args: &[String], creds: Option<(&str, &str)>) -> Output {
        let d = self.dir.path();
        let mut cmd = command(&self.bin);
        cmd.env("HOME", d.join("home"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("XDG_CONFIG_HOME", d.join("home/.config"))
            .env("DOCKER_CONFIG", d.join("docker"))
            .env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .env("TMPDIR", d.join("tmp"))
            .arg("--policy")
            .arg(&self.policy)
            .arg("--tmpdir")
            .arg(d.join("tmp"));
        // `--authfile` is a per-command flag: it must come after the verb.
        cmd.arg(&args[0]).arg("--authfile").arg(&self.authfile);
        cmd.args(&args[1..]);
        let secret = creds.map(|(_, p)| p).unwrap_or_default();
        run(cmd, None, &[secret], DEFAULT_TIMEOUT)
    }

    /// The installed skopeo version, e.g. `1.9.3`.
    pub fn version() -> String {
        let bin = require("skopeo", "skopeo");
        version_number(&version_line(&bin, &["--version"]))
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

/// An `auth.json` (docker config / containers auth file format) holding a username and password for
/// `host` (`127.0.0.1:PORT`).
pub fn auth_json_basic(host: &str, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({ "auths": { host: { "auth": auth } } }).to_string()
}

/// An `auth.json` holding an `identitytoken` (an OAuth2 refresh token, what `docker login` stores when
/// the token server returns `refresh_token`) for `host`. Clients then ask the realm for access tokens
/// with `grant_type=refresh_token` instead of sending a password.
///
/// `auth` is base64 `user:` (empty password), exactly what docker writes. It must not be empty:
/// containers/image 5.23 (skopeo 1.9, podman 4.3) only reads `identitytoken` when `auth` decodes to
/// `user:password`; with `"auth": ""` it silently goes anonymous (checked: a plain GET /token).
pub fn auth_json_identity_token(host: &str, user: &str, token: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    serde_json::json!({ "auths": { host: { "auth": auth, "identitytoken": token } } }).to_string()
}
