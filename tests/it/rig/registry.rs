//! A real Docker/OCI distribution registry (Debian `docker-registry`, distribution 2.8) per test.
//!
//! Each [`Registry`] listens on its own free loopback port, stores blobs in its own temp dir, has
//! deletion enabled, and optionally delegates authentication to a token server ([`TokenAuth`]), which is
//! how tollgate is exercised end to end. Its log is kept in a file because the clients report every
//! token problem as a bare `unauthorized: authentication required`; only the registry says *why*.

use super::{command, http_get, require, tempdir, version_line, version_number};
use std::marker::PhantomData;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Path of the registry binary in Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Token authentication settings (`auth.token` in the registry config).
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// Where clients fetch tokens, e.g. `http://127.0.0.1:PORT/token`. Sent in the challenge.
    pub realm: String,
    /// The `service` the registry names in challenges and expects as the token's `aud`.
    pub service: String,
    /// The `iss` the registry requires in tokens.
    pub issuer: String,
    /// PEM certificates whose keys may sign tokens. REQUIRED by registry 2.8: without it 2.8 panics at
    /// startup with `token auth requires a valid option string: "rootcertbundle"`.
    pub rootcertbundle: Option<PathBuf>,
    /// A JWKS file of trusted keys: a distribution **v3** option. Checked on 2.8.2: 2.8 passes `auth.token`
    /// to its token module as a free-form map and ignores keys it does not know, so `jwks` is accepted
    /// and has no effect (2.8 still requires `rootcertbundle`). Written only when `Some`.
    pub jwks: Option<PathBuf>,
}

/// How to start a [`Registry`]. `Default` is an open registry (no authentication).
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `None`: anyone may pull and push. `Some`: every request needs a bearer token.
    pub auth: Option<TokenAuth>,
    /// The registry's own Basic authentication from an htpasswd file (bcrypt lines): the usual
    /// alternative to a token server, for the benchmarks. Ignored when `auth` is set.
    pub htpasswd: Option<PathBuf>,
    /// Run THIS config file (a deployment's own) instead of writing one; `auth` and `htpasswd` are then
    /// ignored. The rig only moves the listener and the storage onto its own through `REGISTRY_HTTP_ADDR`
    /// and `REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY`, as a deployment sets its realm with `env`.
    pub config_file: Option<PathBuf>,
    /// More `REGISTRY_*` variables, e.g. `REGISTRY_AUTH_TOKEN_REALM`.
    pub env: Vec<(String, String)>,
}

/// A running `docker-registry serve`, killed on drop.
///
/// Not `Send`: the process has PR_SET_PDEATHSIG set, which the kernel fires when the *thread* that
/// spawned it exits. A registry started in a helper thread and handed back would be SIGKILLed the moment
/// that thread returned (the rig's own parallel-start test hit exactly this: "connection reset by
/// peer"). Start it on the test's thread; sharing `&Registry` with other threads is fine.
pub struct Registry {
    child: Child,
    port: u16,
    addr: String,
    log_path: PathBuf,
    config_path: PathBuf,
    // Dropped last (fields drop in order): the process is killed before its storage disappears.
    _dir: tempfile::TempDir,
    /// `MutexGuard` is `Sync` but not `Send`: exactly the auto traits wanted here (see above).
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers. Panics (with the registry's log) if it
    /// does not start.
    pub fn start(opts: RegistryOptions) -> Registry {
        let bin = require(REGISTRY_BIN, "docker-registry");
        let mut dir = tempdir("registry");
        let log_path = dir.path().join("registry.log");
        let config_path = opts.config_file.clone().unwrap_or_else(|| dir.path().join("config.yml"));
        // The port is chosen by the kernel (bind to port 0), released, then handed to the registry.
        // Another process can grab it in between, so a start that fails with "address already in use"
        // is retried on a fresh port.
        for attempt in 1..=10 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let mut cmd = command(&bin);
            if opts.config_file.is_some() {
                cmd.env("REGISTRY_HTTP_ADDR", &addr)
                    .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", dir.path().join("data"));
            } else {
                std::fs::write(&config_path, config_yaml(dir.path(), &addr, &opts)).expect("write registry config");
            }
            cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
            let log = std::fs::File::create(&log_path).expect("create registry log");
            cmd.arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log file"))
                .stderr(log);
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut reg = Registry {
                child,
                port,
                addr,
                log_path: log_path.clone(),
                config_path: config_path.clone(),
                _dir: dir,
                _not_send: PhantomData,
            };
            match reg.wait_ready() {
                Ok(()) => return reg,
                Err(e) if attempt < 10 && reg.log().contains("address already in use") => {
                    eprintln!("registry port {port} was taken, retrying: {e}");
                    dir = reg.into_dir();
                }
                Err(e) => panic!(
                    "docker-registry did not start: {e}\n--- config ---\n{}\n--- log ---\n{}",
                    std::fs::read_to_string(&reg.config_path).unwrap_or_default(),
                    reg.log()
                ),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Polls until the registry has logged that it listens and `GET /v2/` answers (200 when open, 401
    /// with token auth).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll registry") {
                return Err(format!("exited with {status}"));
            }
            // Only trust a GET once OUR process says it is listening: if another process took the
            // port in the meantime, it could answer /v2/ while our registry is failing to bind.
            // (2.8 logs "listening on ADDR" right after a successful listen.)
            // Not even connecting before that: a foreign listener might accept and never answer.
            if !self.log().contains(&format!("listening on {}", self.addr)) {
                last = "the registry has not logged `listening on` yet".into();
            } else {
                match http_get(&self.addr, "/v2/", &[]) {
                    Ok(r) if r.status == 200 || r.status == 401 => return Ok(()),
                    Ok(r) => last = format!("GET /v2/ answered {}", r.status),
                    Err(e) => last = e,
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 20 s: {last}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process and hands back the temp dir (for a retry on another port).
    fn into_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let dir = tempdir("registry");
        // Swap in a throwaway so `Drop` has something to delete; return the real one.
        std::mem::replace(&mut self._dir, dir)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `127.0.0.1:PORT`: what clients use as the registry host (docker/podman login, image references).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The IP alone, `127.0.0.1`. Loopback matters: the docker CLI and containerd treat `127.0.0.0/8`
    /// as insecure (plain HTTP allowed) without any configuration.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT/{repo_tag}`, e.g. `reference("team/app:1")`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// `docker://127.0.0.1:PORT/{repo_tag}`, the skopeo form.
    pub fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    /// Everything the registry has written to stdout/stderr so far (it logs to stderr). Read this to
    /// see why a token was refused: e.g. `token intended for another audience`, `invalid token issuer`,
    /// `unable to verify token signature`.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The reasons the registry gave for refusing requests, oldest first: the text after `error
    /// authorizing context: ` in its log, e.g. `authorization token required`, `malformed token`,
    /// `invalid token issuer`, `token intended for another audience`.
    pub fn auth_errors(&self) -> Vec<String> {
        const MARK: &str = "error authorizing context: ";
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(MARK)? + MARK.len()..];
                Some(rest.split('"').next().unwrap_or(rest).to_string())
            })
            .collect()
    }

    /// The registry's reasons for rejecting a token itself. "authorization token required" (the first,
    /// token-less request of every client) and "insufficient scope" (a valid token without the action: a
    /// denial by policy) are the protocol working, not a rejected token.
    pub fn token_rejections(&self) -> Vec<String> {
        self.auth_errors()
            .into_iter()
            .filter(|e| e != "authorization token required" && e != "insufficient scope")
            .collect()
    }

    /// The config file it runs, for messages.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The version of the installed registry, e.g. `2.8.2+ds1`. Does not need a running registry.
    pub fn version() -> String {
        let bin = require(REGISTRY_BIN, "docker-registry");
        version_number(&version_line(&bin, &["--version"]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        // A failing test gets the end of the registry log: usually the reason a token was refused.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            eprintln!("--- last lines of registry {} log ---\n{}", self.addr, tail.join("\n"));
        }
    }
}

/// Asks the kernel for a free loopback port and releases it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// A YAML string literal. JSON string syntax is valid YAML double-quoted syntax, so paths and URLs
/// with any characters are safe.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

fn config_yaml(dir: &Path, addr: &str, opts: &RegistryOptions) -> String {
    let data = dir.join("data");
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: tollgate-rig-not-a-secret\n",
        data = q(&data.to_string_lossy()),
        addr = q(addr),
    );
    if let Some(a) = &opts.auth {
        y.push_str(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n",
            q(&a.realm),
            q(&a.service),
            q(&a.issuer)
        ));
        if let Some(p) = &a.rootcertbundle {
            y.push_str(&format!("    rootcertbundle: {}\n", q(&p.to_string_lossy())));
        }
        if let Some(p) = &a.jwks {
            y.push_str(&format!("    jwks: {}\n", q(&p.to_string_lossy())));
        }
    } else if let Some(p) = &opts.htpasswd {
        y.push_str(&format!("auth:\n  htpasswd:\n    realm: tollgate-bench\n    path: {}\n", q(&p.to_string_lossy())));
    }
    y
}
