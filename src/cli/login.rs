//! `tollgate login REGISTRY`: device login from a terminal, for users whose IdP enforces MFA.
//!
//! It asks the registry's `/v2/` for its token realm (tollgate), starts a device flow at tollgate's
//! `/device/code`, shows the user code and the verification URL, polls `/token` honouring `interval` and
//! `slow_down`, and writes the resulting tollgate refresh token into docker's config.json as
//! `identitytoken`, with `auth` = base64(`user:`): docker uses the identity token as is, and
//! containers/image (podman, skopeo) and containerd-based tools need the `auth` entry to pick it up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// What `tollgate login` was asked to do.
pub struct LoginOptions {
    /// `host[:port]`, or a URL (`http://…` for a registry without TLS).
    pub registry: String,
    /// Talk to the registry over plain HTTP (when REGISTRY has no scheme).
    pub plain_http: bool,
    /// The tollgate provider to log in with. Default: the first that offers device login.
    pub provider: Option<String>,
    /// docker's config directory. Default: $DOCKER_CONFIG, else ~/.docker.
    pub docker_config: Option<PathBuf>,
    /// Also write this containers auth.json (podman, skopeo, buildah).
    pub authfile: Option<PathBuf>,
    /// Never open a browser, even with a display.
    pub no_browser: bool,
}

/// The parameters of a `WWW-Authenticate: Bearer …` challenge.
pub fn parse_challenge(header: &str) -> Option<(String, Option<String>)> {
    let rest = header.trim().strip_prefix("Bearer ").or_else(|| header.trim().strip_prefix("bearer "))?;
    let (mut realm, mut service) = (None, None);
    let mut s = rest;
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((realm?, service))
}

/// tollgate's device endpoint next to its token endpoint.
pub fn device_endpoint(realm: &str) -> Result<String, String> {
    let base = realm.split('?').next().unwrap_or(realm);
    base.strip_suffix("/token")
        .map(|b| format!("{b}/device/code"))
        .ok_or_else(|| format!("the registry's token realm {realm:?} does not end in /token: is it tollgate?"))
}

/// Put `auths[host] = {auth: base64("user:"), identitytoken}` into the JSON file at `path`, keeping everything
/// else in it. The file holds a credential: it is written owner-only.
pub fn write_auth_entry(path: &Path, host: &str, username: &str, identity_token: &str) -> Result<(), String> {
    let mut doc: serde_json::Value = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let obj = doc.as_object_mut().ok_or_else(|| format!("{}: not a JSON object", path.display()))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| format!("{}: `auths` is not an object", path.display()))?;
    auths.insert(
        host.to_string(),
        serde_json::json!({
            "auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:")),
            "identitytoken": identity_token,
        }),
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    crate::support::fs::write_private(path, &text).map_err(|e| e.to_string())
}

/// The `sub` of a JWT, read without verification (only to name the user in the auth entry; the token
/// itself was just received from tollgate).
fn jwt_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")?.as_str().map(str::to_string)
}

pub fn login(opts: LoginOptions) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(run(opts))
}

async fn run(opts: LoginOptions) -> Result<(), String> {
    let (base, host) = match opts.registry.split_once("://") {
        Some((scheme, rest)) => {
            (format!("{scheme}://{}", rest.trim_end_matches('/')), rest.trim_end_matches('/').to_string())
        }
        None => {
            let scheme = if opts.plain_http { "http" } else { "https" };
            (format!("{scheme}://{}", opts.registry), opts.registry.clone())
        }
    };
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| format!("HTTP client: {e}"))?;
    let challenge = match http.get(format!("{base}/v2/")).send().await {
        Ok(r) => r,
        Err(e) => {
            let guessed_https = !opts.registry.contains("://") && !opts.plain_http;
            return Err(explain(&http, &e, &base, &host, guessed_https).await);
        }
    };
    let header = challenge
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| format!("{base}/v2/ answered {} without a token challenge", challenge.status()))?;
    let (realm, service) =
        parse_challenge(header).ok_or_else(|| format!("{base}/v2/: not a Bearer challenge: {header:?}"))?;
    let service = service.ok_or_else(|| format!("{base}/v2/: the challenge names no service"))?;
    let mut form = vec![("service", service.clone()), ("client_id", "tollgate-login".to_string())];
    if let Some(p) = &opts.provider {
        form.push(("provider", p.clone()));
    }
    let device_url = device_endpoint(&realm)?;
    let resp = http.post(&device_url).form(&form).send().await.map_err(|e| format!("{device_url}: {e}"))?;
    let status = resp.status();
    let start: serde_json::Value = resp.json().await.map_err(|e| format!("{device_url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{device_url}: {status}: {}", start["error_description"].as_str().unwrap_or("")));
    }
    let field = |k: &str| start[k].as_str().map(str::to_string).ok_or(format!("{device_url}: no {k} in the answer"));
    let device_code = field("device_code")?;
    let user_code = field("user_code")?;
    let uri = field("verification_uri")?;
    let expires_in = Duration::from_secs(start["expires_in"].as_u64().unwrap_or(600));
    let complete = start["verification_uri_complete"].as_str();
    eprintln!(
        "To log in to {host}, open {uri} and enter the code below (it expires in {} min).",
        expires_in.as_secs().div_ceil(60)
    );
    eprintln!("user code: {user_code}");
    if !opts.no_browser && open_browser(complete.unwrap_or(&uri)) {
        eprintln!("Opened the page in your browser (--no-browser to stop that).");
    }
    let mut interval = Duration::from_secs(start["interval"].as_u64().unwrap_or(5).max(1));
    let deadline = Instant::now() + expires_in;
    let mut progress = Progress::new(deadline);
    loop {
        tokio::time::sleep(interval).await;
        progress.show();
        let form = [
            ("grant_type", crate::http::device::GRANT_TYPE),
            ("device_code", device_code.as_str()),
            ("client_id", "tollgate-login"),
            ("service", service.as_str()),
        ];
        let resp = http.post(&realm).form(&form).send().await.map_err(|e| format!("{realm}: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(|e| format!("{realm}: {e}"))?;
        if status.is_success() {
            progress.done();
            let refresh = body["refresh_token"].as_str().ok_or("tollgate answered without a refresh token")?;
            let access = body["access_token"].as_str().unwrap_or("");
            let user = jwt_subject(access).ok_or("cannot read the username from the access token")?;
            let config_dir = match (&opts.docker_config, std::env::var_os("DOCKER_CONFIG")) {
                (Some(d), _) => d.clone(),
                (None, Some(d)) => PathBuf::from(d),
                (None, None) => PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set; pass --docker-config")?)
                    .join(".docker"),
            };
            let config = config_dir.join("config.json");
            write_auth_entry(&config, &host, &user, refresh)?;
            eprintln!("Logged in to {host} as {user}; identity token written to {}", config.display());
            if let Some(a) = &opts.authfile {
                write_auth_entry(a, &host, &user, refresh)?;
                eprintln!("Also written to {}", a.display());
            }
            return Ok(());
        }
        let message = body["error_description"].as_str().unwrap_or("").to_string();
        match body["error"].as_str().unwrap_or("") {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            "access_denied" => {
                progress.done();
                return Err(format!("login denied: {message}"));
            }
            "expired_token" => {
                progress.done();
                return Err(format!("login expired: {message}"));
            }
            _ if status.is_server_error() => {
                eprintln!("tollgate answered {status} ({message}); retrying");
            }
            other => {
                progress.done();
                return Err(format!("login failed ({other}): {message}"));
            }
        }
        if Instant::now() > deadline {
            return Err("the login was not approved in time; run tollgate login again".into());
        }
    }
}

/// The time left to approve the login: rewritten in place on a terminal, a line a minute otherwise.
struct Progress {
    deadline: Instant,
    terminal: bool,
    last_line: Option<Instant>,
}

impl Progress {
    fn new(deadline: Instant) -> Progress {
        use std::io::IsTerminal as _;
        Progress { deadline, terminal: std::io::stderr().is_terminal(), last_line: None }
    }

    fn show(&mut self) {
        let left = self.deadline.saturating_duration_since(Instant::now()).as_secs();
        let text = format!("waiting for approval at the identity provider; {}:{:02} left", left / 60, left % 60);
        if self.terminal {
            eprint!("\r{text} ");
        } else if self.last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            eprintln!("{text}");
            self.last_line = Some(Instant::now());
        }
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Open `url` in the user's browser when there is a display to show it on. Whether a browser was started.
fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some() {
        "xdg-open"
    } else {
        return false;
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// Why the registry could not be reached, with the whole cause and what to try: the name does not resolve,
/// nothing listens, no answer, or TLS failed; when HTTPS was only guessed and plain HTTP answers, say
/// `--plain-http`.
async fn explain(http: &reqwest::Client, e: &reqwest::Error, base: &str, host: &str, guessed_https: bool) -> String {
    let chain = crate::support::error_chain(e);
    let lower = chain.to_ascii_lowercase();
    let hint = if lower.contains("dns error") || lower.contains("failed to lookup address") {
        format!("the name in {host:?} does not resolve (DNS): check its spelling")
    } else if lower.contains("connection refused") {
        format!("nothing accepts connections at {host}: check the host and port")
    } else if e.is_timeout() {
        format!("{host} did not answer within 30 s")
    } else {
        let plain = format!("http://{host}/v2/");
        let answers_http = guessed_https
            && http.get(&plain).timeout(Duration::from_secs(5)).send().await.is_ok_and(|r| r.status().as_u16() < 500);
        if answers_http {
            format!("{host} answers plain HTTP, not HTTPS: add --plain-http (for test setups; a production registry needs TLS)")
        } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            format!("the TLS connection to {host} failed: is its certificate trusted by this machine?")
        } else {
            "see the cause above".to_string()
        }
    };
    format!("cannot reach {base}/v2/: {chain}\nhint: {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_challenges_are_parsed() {
        let (realm, service) =
            parse_challenge(r#"Bearer realm="http://127.0.0.1:5001/token",service="registry.test""#).unwrap();
        assert_eq!(realm, "http://127.0.0.1:5001/token");
        assert_eq!(service.as_deref(), Some("registry.test"));
        let (realm, service) = parse_challenge(r#"Bearer service="a b", realm="https://x/token?y=1""#).unwrap();
        assert_eq!((realm.as_str(), service.as_deref()), ("https://x/token?y=1", Some("a b")));
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
        assert_eq!(device_endpoint("https://auth.example.com/token").unwrap(), "https://auth.example.com/device/code");
        assert!(device_endpoint("https://auth.example.com/oauth").is_err());
    }

    #[test]
    fn the_auth_entry_is_added_next_to_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"other:1":{"auth":"eDp5"}},"credsStore":""}"#).unwrap();
        write_auth_entry(&path, "reg:5000", "alice", "tgr_x").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["auths"]["other:1"]["auth"], "eDp5");
        assert_eq!(v["auths"]["reg:5000"]["auth"], "YWxpY2U6");
        assert_eq!(v["auths"]["reg:5000"]["identitytoken"], "tgr_x");
        assert_eq!(v["credsStore"], "");
    }
}
