//! A fake token server ("realm") that records every request and issues real ES256 tokens the
//! registry accepts. It is NOT tollgate and makes no policy decisions: it grants whatever scope a
//! correctly authenticated client asks for.
//!
//! It exists for two reasons:
//! - to prove the rig's authenticated paths (podman/skopeo credentials, `docker login` storing an
//!   `identitytoken`, `ctr --user` and `ctr --refresh`, skopeo with an auth file) against the real
//!   registry, before tollgate exists;
//! - as a reference for what each client actually sends to a token server: `requests()` returns them,
//!   so a test can see, e.g., that ctr POSTs `grant_type=password` while docker GETs with Basic auth.
//!
//! Tokens follow what registry 2.8 accepts (see RIGS.md): ES256, raw 64-byte `r||s` signature, an `x5c`
//! header with the standard-base64 DER certificate, `aud` as a single string.

use super::registry::TokenAuth;
use super::{command, require, run, tempdir};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request the realm received. Header names are lower-cased; `params` holds the query string for
/// GET and the form body for POST, in order (repeated `scope` parameters stay separate).
#[derive(Debug, Clone)]
pub struct RealmRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub params: Vec<(String, String)>,
    /// The HTTP status the realm answered with.
    pub status: u16,
}

impl RealmRequest {
    /// The first parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// `grant_type` for POSTs, `"basic"` for a GET with Basic credentials, `"anonymous"` otherwise.
    pub fn grant(&self) -> &str {
        if let Some(g) = self.param("grant_type") {
            g
        } else if self.header("authorization").is_some_and(|a| a.starts_with("Basic ")) {
            "basic"
        } else {
            "anonymous"
        }
    }
}

/// Who the realm accepts.
#[derive(Debug, Clone)]
pub struct FakeRealmOptions {
    pub service: String,
    pub issuer: String,
    pub user: String,
    pub password: String,
    /// Returned as `refresh_token` on password logins and accepted for `grant_type=refresh_token`.
    pub refresh_token: String,
}

impl Default for FakeRealmOptions {
    fn default() -> Self {
        FakeRealmOptions {
            service: "registry.test".into(),
            issuer: "rig-fake-realm".into(),
            user: "alice".into(),
            password: "rig-realm-password".into(),
            refresh_token: "rig-realm-refresh-token".into(),
        }
    }
}

struct Shared {
    opts: FakeRealmOptions,
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    requests: Mutex<Vec<RealmRequest>>,
    stop: AtomicBool,
    jti: AtomicUsize,
}

/// A running fake realm on a free loopback port; stops on drop.
pub struct FakeRealm {
    addr: String,
    shared: Arc<Shared>,
    bundle: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakeRealm {
    pub fn start(opts: FakeRealmOptions) -> FakeRealm {
        let dir = tempdir("realm");
        let (key_pem, bundle) = self_signed_p256(dir.path());
        let pkcs8 = pem_der(&std::fs::read_to_string(&key_pem).expect("read key"));
        let cert_der = pem_der(&std::fs::read_to_string(&bundle).expect("read cert"));
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &SystemRandom::new())
            .expect("openssl wrote a PKCS#8 P-256 key");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind realm");
        let addr = listener.local_addr().expect("realm addr").to_string();
        let shared = Arc::new(Shared {
            opts,
            key,
            cert_der,
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            jti: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-realm".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let s = s.clone();
                        // One thread per connection: clients may hold a keep-alive connection open.
                        std::thread::spawn(move || serve(&s, conn));
                    }
                }
            })
            .expect("spawn realm thread");
        FakeRealm { addr, shared, bundle, thread: Some(thread), _dir: dir }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Registry settings that trust this realm.
    pub fn token_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: self.realm(),
            service: self.shared.opts.service.clone(),
            issuer: self.shared.opts.issuer.clone(),
            rootcertbundle: Some(self.bundle.clone()),
            jwks: None,
        }
    }

    pub fn options(&self) -> &FakeRealmOptions {
        &self.shared.opts
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RealmRequest> {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FakeRealm {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `openssl req -x509 -newkey ec …`: a throwaway self-signed P-256 certificate and its PKCS#8 key
/// (OpenSSL 3 writes `BEGIN PRIVATE KEY`, which is what ring wants). Returns (key, cert) paths.
pub fn self_signed_p256(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = require("openssl", "openssl");
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let mut cmd = command(&openssl);
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=rig", "-days", "1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    run(cmd, None, &[], Duration::from_secs(30)).assert_ok();
    (key, cert)
}

/// The DER bytes of the first PEM block in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(b64).expect("PEM body is base64")
}

fn serve(s: &Shared, conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone realm conn"));
    let mut conn = conn;
    // Answer requests on this connection until the client closes it.
    while let Some((method, target, headers, body)) = read_request(&mut reader) {
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let params: Vec<(String, String)> = if method == "POST" {
            form_urlencoded::parse(&body).into_owned().collect()
        } else {
            form_urlencoded::parse(query.as_bytes()).into_owned().collect()
        };
        let mut req = RealmRequest { method, path: path.to_string(), headers, params, status: 0 };
        let (status, body) = respond(s, &req);
        req.status = status;
        s.requests.lock().unwrap_or_else(|p| p.into_inner()).push(req);
        let reason = if status == 200 { "OK" } else { "Unauthorized" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

type Request = (String, String, Vec<(String, String)>, Vec<u8>);

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok().filter(|&n| n > 0)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        // skopeo/podman (containers/image) POST the OAuth2 form with `Transfer-Encoding: chunked`
        // and no Content-Length: a token server must accept that.
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok().filter(|&n| n > 0)?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2]; // data + CRLF
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break; // (no trailers from these clients)
            }
            body.extend_from_slice(&chunk[..size]);
        }
        body
    } else {
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some((method, target, headers, body))
}

/// Decides and builds the answer: (status, JSON body).
fn respond(s: &Shared, req: &RealmRequest) -> (u16, String) {
    let o = &s.opts;
    let basic = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|up| up.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let password_ok = |u: &str, p: &str| u == o.user && p == o.password;
    let (subject, login) = match req.grant() {
        "password" => {
            let ok = password_ok(req.param("username").unwrap_or_default(), req.param("password").unwrap_or_default());
            (ok.then(|| o.user.clone()), true)
        }
        "refresh_token" => {
            let ok = req.param("refresh_token") == Some(o.refresh_token.as_str());
            (ok.then(|| o.user.clone()), false)
        }
        "basic" => {
            let ok = basic.as_ref().is_some_and(|(u, p)| password_ok(u, p));
            (ok.then(|| o.user.clone()), true)
        }
        _ => (None, false),
    };
    let Some(subject) = subject else {
        return (401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"fake realm: bad credentials"}]}"#.into());
    };
    // GET carries repeated `scope=` parameters; POST one space-separated `scope`.
    let access: Vec<serde_json::Value> = req
        .params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()
            }))
        })
        .collect();
    let token = sign(s, &subject, access);
    let mut body = serde_json::json!({
        "token": token, "access_token": token, "expires_in": 300,
    });
    if login {
        body["refresh_token"] = o.refresh_token.clone().into();
    }
    (200, body.to_string())
}

fn sign(s: &Shared, subject: &str, access: Vec<serde_json::Value>) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let header = serde_json::json!({
        "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&s.cert_der)],
    });
    let claims = serde_json::json!({
        "iss": s.opts.issuer, "sub": subject, "aud": s.opts.service,
        "iat": now, "nbf": now - 10, "exp": now + 300,
        "jti": format!("rig-{}", s.jti.fetch_add(1, Ordering::Relaxed)),
        "access": access,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = s.key.sign(&SystemRandom::new(), signing_input.as_bytes()).expect("ECDSA signing");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}
