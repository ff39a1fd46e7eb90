//! A workload token issuer, as CI platforms and Kubernetes run them: an HTTP server on a loopback port
//! chosen at run time that serves OIDC discovery and a JWKS, and mints JWTs with the claim sets GitHub
//! Actions, GitLab CI and Kubernetes document (RS256 and ES256 keys made by `openssl`).
//!
//! The server counts JWKS fetches, can be turned "down" (every request answered 503), can publish other
//! keys, and can make its discovery document name another issuer, for the tests that need each.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{command, tempdir};

/// A signing key with everything a test needs to use it honestly or abuse it.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    /// The public key as a JWK (with `kid`, `alg`, `use: sig`).
    pub jwk: Value,
    /// The public key as PEM: the "secret" of the HS256 confusion attack.
    pub public_pem: Vec<u8>,
    /// A self-signed certificate of the key, base64 DER, for `x5c` headers.
    pub cert_b64: String,
}

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = command("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

impl SigningKey {
    /// A fresh RSA 2048 key (RS256).
    pub fn rsa(kid: &str) -> SigningKey {
        let dir = tempdir("issuer-key");
        let d = dir.path();
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "k.pem"], d);
        let modulus = String::from_utf8(openssl(&["rsa", "-in", "k.pem", "-noout", "-modulus"], d)).unwrap();
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"});
        SigningKey::finish(kid, Algorithm::RS256, d, EncodingKey::from_rsa_pem, jwk)
    }

    /// A fresh P-256 key (ES256).
    pub fn ec(kid: &str) -> SigningKey {
        let dir = tempdir("issuer-key");
        let d = dir.path();
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem"], d);
        let der = openssl(&["pkey", "-in", "k.pem", "-pubout", "-outform", "DER"], d);
        // SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 4, "uncompressed point");
        let jwk = json!({"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
        SigningKey::finish(kid, Algorithm::ES256, d, EncodingKey::from_ec_pem, jwk)
    }

    fn finish(
        kid: &str,
        alg: Algorithm,
        d: &Path,
        load: fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>,
        jwk: Value,
    ) -> SigningKey {
        let private = std::fs::read(d.join("k.pem")).unwrap();
        let public_pem = openssl(&["pkey", "-in", "k.pem", "-pubout"], d);
        let cert =
            openssl(&["req", "-x509", "-new", "-key", "k.pem", "-subj", "/CN=rig", "-days", "1", "-outform", "DER"], d);
        SigningKey {
            kid: kid.to_string(),
            alg,
            encoding: load(&private).expect("key loads"),
            jwk,
            public_pem,
            cert_b64: STANDARD.encode(cert),
        }
    }

    /// A JWT of `claims` signed with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    /// A JWT of `claims` with exactly `header`, signed with this key.
    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document of `keys`.
pub fn jwks_of(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

struct Shared {
    issuer: String,
    jwks: Mutex<Value>,
    discovery_issuer: Mutex<Option<String>>,
    down: AtomicBool,
    jwks_fetches: AtomicU64,
}

/// The issuer's HTTP server, stopped on drop.
pub struct Issuer {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let named = s.discovery_issuer.lock().unwrap().clone().unwrap_or_else(|| s.issuer.clone());
    Json(json!({"issuer": named, "jwks_uri": format!("{}/jwks", s.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"], "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"]}))
    .into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(s.jwks.lock().unwrap().clone()).into_response()
}

impl Issuer {
    /// Serve discovery and a JWKS of `keys`.
    pub fn start(keys: &[&SigningKey]) -> Issuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            jwks: Mutex::new(jwks_of(keys)),
            discovery_issuer: Mutex::new(None),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(Arc::clone(&shared));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        Issuer { addr, shared, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Publish other keys from now on.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.shared.jwks.lock().unwrap() = jwks_of(keys);
    }

    /// Answer every request with 503 (true) or serve again (false).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Make the discovery document name `issuer` instead of this issuer.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.shared.discovery_issuer.lock().unwrap() = Some(issuer.to_string());
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The claims of a GitHub Actions job token (as GitHub documents them) for a job of `repository` (e.g.
/// `acme/app`) on `git_ref`, triggered by `event` (`push`, `pull_request`, ...), valid for 5 minutes.
pub fn github_claims(issuer: &str, audience: &str, repository: &str, git_ref: &str, event: &str) -> Value {
    let (owner, _) = repository.split_once('/').unwrap();
    let t = now();
    let sub = if event == "pull_request" {
        format!("repo:{repository}:pull_request")
    } else {
        format!("repo:{repository}:ref:{git_ref}")
    };
    let ref_type = if git_ref.starts_with("refs/tags/") { "tag" } else { "branch" };
    json!({
        "jti": format!("gha-{}", super::unique("jti")),
        "sub": sub,
        "aud": audience,
        "ref": git_ref,
        "ref_type": ref_type,
        "ref_protected": "false",
        "sha": "d6ae1ddc2a7a4e6b4f8c38f2f1ed1b2f0e0d3c11",
        "repository": repository,
        "repository_id": if owner == "acme" { "690001" } else { "790002" },
        "repository_owner": owner,
        "repository_owner_id": if owner == "acme" { "100001" } else { "200002" },
        "repository_visibility": "private",
        "run_id": "8123456789",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "actor_id": "583231",
        "workflow": "release",
        "workflow_ref": format!("{repository}/.github/workflows/release.yml@{git_ref}"),
        "job_workflow_ref": format!("{repository}/.github/workflows/release.yml@{git_ref}"),
        "head_ref": if event == "pull_request" { "feature" } else { "" },
        "base_ref": if event == "pull_request" { "main" } else { "" },
        "event_name": event,
        "iss": issuer,
        "nbf": t - 5,
        "iat": t - 5,
        "exp": t + 295,
    })
}

/// The claims of a GitLab CI `id_tokens` token for a job of `project_path` on `branch`.
pub fn gitlab_claims(issuer: &str, audience: &str, project_path: &str, branch: &str, protected: bool) -> Value {
    let (namespace, _) = project_path.rsplit_once('/').unwrap();
    let t = now();
    json!({
        "namespace_id": "72",
        "namespace_path": namespace,
        "project_id": "2025",
        "project_path": project_path,
        "user_id": "7",
        "user_login": "devon",
        "user_email": "devon@example.com",
        "user_access_level": "developer",
        "pipeline_id": "5511",
        "pipeline_source": "push",
        "job_id": "120034",
        "ref": branch,
        "ref_type": "branch",
        "ref_path": format!("refs/heads/{branch}"),
        "ref_protected": if protected { "true" } else { "false" },
        "runner_id": 3,
        "runner_environment": "self-hosted",
        "sha": "714a629c0b401fdce83e847fc9589983fc6f46bc",
        "project_visibility": "private",
        "ci_config_ref_uri": format!("gitlab.example.com/{project_path}//.gitlab-ci.yml@refs/heads/{branch}"),
        "jti": format!("gl-{}", super::unique("jti")),
        "iss": issuer,
        "iat": t - 2,
        "nbf": t - 7,
        "exp": t + 3598,
        "sub": format!("project_path:{project_path}:ref_type:branch:ref:{branch}"),
        "aud": audience,
    })
}

/// The claims of a Kubernetes projected service-account token for `namespace`/`service_account`, bound
/// to a pod; `aud` is a list, as the API server writes it.
pub fn kubernetes_claims(issuer: &str, audience: &str, namespace: &str, service_account: &str) -> Value {
    let t = now();
    json!({
        "aud": [audience],
        "exp": t + 3600,
        "iat": t,
        "nbf": t,
        "iss": issuer,
        "jti": format!("k8s-{}", super::unique("jti")),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "node-1", "uid": "5b4f6e0c-0d1c-4a8e-9a55-7c2b4f3e2a10"},
            "pod": {"name": format!("{service_account}-7d9c8b"), "uid": "a1f0c3de-6b1f-4c55-8e0e-2d9b6a1c7f00"},
            "serviceaccount": {"name": service_account, "uid": "0f3a2c1b-9e8d-4c7b-a6f5-e4d3c2b1a090"},
        },
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
    })
}
