//! A tollgate instance for tests: a temp directory with a config, an accounts file and the example
//! policy, built into an `AppState` (for in-process requests) or served on a loopback port chosen at run
//! time (for the real registry and clients).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use tower::ServiceExt as _;

use tollgate::app::AppState;
use tollgate::config::Settings;
use tollgate::identity::hashing::hash_password;

/// Demo people and robot, with the groups the example policy expects.
pub const ALICE: (&str, &str) = ("alice", "alice-test-password");
pub const BOB: (&str, &str) = ("bob", "bob-test-password");
pub const ADMIN: (&str, &str) = ("admin", "admin-test-password");
pub const ROBOT: (&str, &str) = ("ci-payments", "tg_robot_test_secret");
pub const SERVICE: &str = "registry.test";
pub const ISSUER: &str = "tollgate-test";

/// Options for one environment.
pub struct Opts {
    pub kid_format: &'static str,
    pub header: &'static str,
    /// Extra YAML appended under `token:` (indented by the caller).
    pub extra_token_yaml: String,
    /// Replaces the whole `policy:` section when set.
    pub policy_yaml: Option<String>,
    /// Replaces the whole `providers:` section when set (it may add other top-level sections after it,
    /// such as `identity_cache:`).
    pub providers_yaml: Option<String>,
    /// Extra list entries appended under `providers:` (after the static provider `local`).
    pub extra_providers_yaml: String,
    /// Extra top-level sections appended at the end (e.g. `identity_cache:`).
    pub extra_yaml: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            kid_format: "libtrust",
            header: "x5c",
            extra_token_yaml: String::new(),
            policy_yaml: None,
            providers_yaml: None,
            extra_providers_yaml: String::new(),
            extra_yaml: String::new(),
        }
    }
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub accounts: PathBuf,
    pub policy: PathBuf,
}

fn account_yaml(name: &str, password: &str, groups: &[&str], robot: bool) -> String {
    let hash = hash_password(password).expect("hashing works");
    format!(
        "  - username: {name}\n    password_hash: \"{hash}\"\n    groups: [{}]\n    robot: {robot}\n",
        groups.join(", ")
    )
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv::with(Opts::default())
    }

    pub fn with(opts: Opts) -> TestEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let accounts = dir.path().join("accounts.yaml");
        let mut text = String::from("accounts:\n");
        text += &account_yaml(ALICE.0, ALICE.1, &["team-payments", "developers"], false);
        text += &account_yaml(BOB.0, BOB.1, &["team-web", "developers", "release-managers"], false);
        text += &account_yaml(ADMIN.0, ADMIN.1, &["admins"], false);
        text += &account_yaml(ROBOT.0, ROBOT.1, &["robots", "ci-payments"], true);
        std::fs::write(&accounts, text).expect("write accounts");
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, tollgate::policy::EXAMPLE_POLICY).expect("write policy");
        let policy_section = opts
            .policy_yaml
            .unwrap_or_else(|| format!("policy:\n  paths: [{}]\n  reload_interval: 0s\n", policy.display()));
        let providers_section = opts.providers_yaml.unwrap_or_else(|| {
            format!(
                "providers:\n  - type: static\n    name: local\n    file: accounts.yaml\n{}",
                opts.extra_providers_yaml
            )
        });
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "server:\n  listen: 127.0.0.1:0\n  data_dir: data\ntoken:\n  issuer: {ISSUER}\n  services: [{SERVICE}, other.test]\n  kid_format: {}\n  header: {}\n{}\n{providers_section}{policy_section}log:\n  level: warn\n{}",
                opts.kid_format, opts.header, opts.extra_token_yaml, opts.extra_yaml
            ),
        )
        .expect("write config");
        TestEnv { dir, config, accounts, policy }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn settings(&self) -> Settings {
        Settings::load(Some(&self.config)).unwrap_or_else(|e| panic!("test config invalid: {e:#?}"))
    }

    /// The registry's rootcertbundle for this environment's keys (generating the key on first use).
    pub fn bundle(&self) -> PathBuf {
        let keys = tollgate::token::keys::load_keys(&self.settings()).expect("keys load");
        let path = self.path().join("rootcertbundle.pem");
        std::fs::write(&path, keys.cert_bundle()).expect("write bundle");
        path
    }

    /// A real registry 2.8 in token mode trusting this environment's keys, with its realm at `running`.
    pub fn registry(&self, running: &Running) -> crate::rig::Registry {
        registry_trusting(running, self.bundle())
    }

    pub fn state(&self) -> Arc<AppState> {
        Arc::new(AppState::build(self.settings()).unwrap_or_else(|e| panic!("state: {e:#?}")))
    }

    /// Serve on 127.0.0.1 with a port chosen by the OS, in a thread of its own; stopped on drop.
    pub fn start(&self) -> Running {
        let state = self.state();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                let _ = tollgate::server::serve(listener, state, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        let addr = addr_rx.recv().expect("server thread started");
        Running { addr, stop: Some(stop_tx), thread: Some(thread) }
    }
}

/// A real registry 2.8 in token mode whose realm is `running` and which trusts the keys in `bundle`.
pub fn registry_trusting(running: &Running, bundle: PathBuf) -> crate::rig::Registry {
    registry_at(running.realm(), bundle)
}

/// A registry whose token realm is `realm` (`http://ADDR/token` of a tollgate), trusting `bundle`.
pub fn registry_at(realm: String, bundle: PathBuf) -> crate::rig::Registry {
    crate::rig::Registry::start(crate::rig::RegistryOptions {
        auth: Some(crate::rig::TokenAuth {
            realm,
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: Some(bundle),
            jwks: None,
        }),
        ..Default::default()
    })
}

pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response read whole.
pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error message of an error reply, checking both JSON shapes are present and agree.
    pub fn error_message(&self) -> String {
        let j = self.json();
        let d = j["error_description"].as_str().unwrap_or_else(|| panic!("no error_description in {j}")).to_string();
        assert_eq!(j["errors"][0]["message"].as_str(), Some(d.as_str()), "{j}");
        assert!(j.get("token").is_none() && j.get("access_token").is_none(), "an error reply carries a token: {j}");
        d
    }
}

pub async fn call(state: &Arc<AppState>, req: Request<Body>) -> Reply {
    let resp: Response<Body> = tollgate::http::router(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body").to_vec();
    Reply { status, headers, body }
}

/// Replace `path` with `text` as editors and `tollgate robot` do: a new file renamed over the old one, which
/// tollgate applies at once (a file rewritten in place is applied only once it has stopped changing).
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("replacing");
    std::fs::write(&tmp, text).expect("write the new version");
    std::fs::rename(&tmp, path).expect("rename it over the old one");
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

pub fn get(query: &str, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::get(format!("/token?{query}"));
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Body::empty()).expect("request")
}

pub fn post(form: &str) -> Request<Body> {
    Request::post("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .expect("request")
}

pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Decode a JWT's header and claims without verifying (verification is done separately).
pub fn jwt_parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    let mut it = token.split('.');
    let dec = |p: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    };
    (dec(it.next().expect("header")), dec(it.next().expect("claims")))
}

/// Verify an access token against the JWKS, as an independent implementation would.
pub fn verify_with_jwks(token: &str, jwks: &serde_json::Value) -> serde_json::Value {
    let (header, _) = jwt_parts(token);
    let kid = header["kid"].as_str().expect("kid");
    let jwk = jwks["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid).expect("kid in JWKS");
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk parses");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let alg = match header["alg"].as_str() {
        Some("RS256") => jsonwebtoken::Algorithm::RS256,
        _ => jsonwebtoken::Algorithm::ES256,
    };
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_audience(&[SERVICE]);
    v.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).expect("token verifies").claims
}

/// `TOLLGATE_*` overrides that point every absolute path in a tollgate config (a JSON view of its YAML) at
/// `host(path)`: how a test runs a deployment's own config (compose, Kubernetes) with the container's paths
/// moved onto this machine. List items are addressed by index (`TOLLGATE_POLICY__PATHS__0`).
pub fn path_overrides(config: &serde_json::Value, host: &dyn Fn(&str) -> PathBuf) -> Vec<(String, String)> {
    fn walk(
        v: &serde_json::Value,
        at: &mut Vec<String>,
        host: &dyn Fn(&str) -> PathBuf,
        out: &mut Vec<(String, String)>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    at.push(k.to_uppercase());
                    walk(v, at, host, out);
                    at.pop();
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    at.push(i.to_string());
                    walk(v, at, host, out);
                    at.pop();
                }
            }
            serde_json::Value::String(s) if s.starts_with('/') => {
                out.push((format!("TOLLGATE_{}", at.join("__")), host(s).display().to_string()));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(config, &mut Vec::new(), host, &mut out);
    out
}
