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

/// A registry whose token server is tollgate, as its `/v2/` challenge names it.
pub struct Registry {
    /// `scheme://host[:port]`.
    pub base: String,
    /// `host[:port]`, the key of docker's `auths` and of credential helpers.
    pub host: String,
    pub realm: String,
    pub service: String,
}

pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| format!("HTTP client: {e}"))
}

/// Ask `registry` (`host[:port]` or a URL) for its token realm.
pub async fn discover(http: &reqwest::Client, registry: &str, plain_http: bool) -> Result<Registry, String> {
    let (base, host) = match registry.split_once("://") {
        Some((scheme, rest)) => {
            (format!("{scheme}://{}", rest.trim_end_matches('/')), rest.trim_end_matches('/').to_string())
        }
        None => {
            let scheme = if plain_http { "http" } else { "https" };
            (format!("{scheme}://{registry}"), registry.to_string())
        }
    };
    let challenge = match http.get(format!("{base}/v2/")).send().await {
        Ok(r) => r,
        Err(e) => {
            let guessed_https = !registry.contains("://") && !plain_http;
            return Err(explain(http, &e, &base, &host, guessed_https).await);
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
    Ok(Registry { base, host, realm, service })
}

/// Run the device login for `reg`, telling the user what to do on `out`: the user's name and the
/// tollgate refresh token it ends with.
pub async fn device_login(
    http: &reqwest::Client,
    reg: &Registry,
    provider: Option<&str>,
    no_browser: bool,
    out: &mut dyn std::io::Write,
    terminal: bool,
) -> Result<(String, String), String> {
    let Registry { host, realm, service, .. } = reg;
    let mut form = vec![("service", service.clone()), ("client_id", "tollgate-login".to_string())];
    if let Some(p) = provider {
        form.push(("provider", p.to_string()));
    }
    let device_url = device_endpoint(realm)?;
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
    let say = |out: &mut dyn std::io::Write, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(
        out,
        format!(
            "To log in to {host}, open {uri} and enter the code below (it expires in {} min).",
            expires_in.as_secs().div_ceil(60)
        ),
    );
    say(out, format!("user code: {user_code}"));
    if !no_browser && open_browser(complete.unwrap_or(&uri)) {
        say(out, "Opened the page in your browser (--no-browser to stop that).".into());
    }
    let mut interval = Duration::from_secs(start["interval"].as_u64().unwrap_or(5).max(1));
    let deadline = Instant::now() + expires_in;
    let mut progress = Progress { deadline, terminal, last_line: None };
    loop {
        tokio::time::sleep(interval).await;
        progress.show(out);
        let form = [
            ("grant_type", crate::authn::DEVICE_CODE_GRANT),
            ("device_code", device_code.as_str()),
            ("client_id", "tollgate-login"),
            ("service", service.as_str()),
        ];
        let resp = http.post(realm).form(&form).send().await.map_err(|e| format!("{realm}: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.map_err(|e| format!("{realm}: {e}"))?;
        if status.is_success() {
            progress.done(out);
            let refresh = body["refresh_token"].as_str().ok_or("tollgate answered without a refresh token")?;
            let access = body["access_token"].as_str().unwrap_or("");
            let user = jwt_subject(access).ok_or("cannot read the username from the access token")?;
            return Ok((user, refresh.to_string()));
        }
        let message = body["error_description"].as_str().unwrap_or("").to_string();
        let fail = |progress: &Progress, out: &mut dyn std::io::Write, m: String| {
            progress.done(out);
            Err(m)
        };
        match body["error"].as_str().unwrap_or("") {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            "access_denied" => return fail(&progress, out, format!("login denied: {message}")),
            "expired_token" => return fail(&progress, out, format!("login expired: {message}")),
            _ if status.is_server_error() => say(out, format!("tollgate answered {status} ({message}); retrying")),
            other => return fail(&progress, out, format!("login failed ({other}): {message}")),
        }
        if Instant::now() > deadline {
            return fail(&progress, out, "the login was not approved in time; run tollgate login again".into());
        }
    }
}

/// The credential helper docker's config names for `host` (`credHelpers`, else `credsStore`), if any.
pub fn helper_for(config: &serde_json::Value, host: &str) -> Option<String> {
    let named = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    config
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .and_then(named)
        .or_else(|| config.get("credsStore").and_then(named))
}

/// Hand an identity token to `docker-credential-NAME store`, as docker itself would.
pub fn store_with_helper(name: &str, host: &str, token: &str) -> Result<(), String> {
    use std::io::Write as _;
    let program = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&program)
        .arg("store")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("{program} (named by docker's config.json): {e}; install it or remove it from the config")
        })?;
    let doc = serde_json::json!({"ServerURL": host, "Username": "<token>", "Secret": token});
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(doc.to_string().as_bytes())
        .map_err(|e| format!("{program}: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} store failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

async fn run(opts: LoginOptions) -> Result<(), String> {
    let http = http_client()?;
    let reg = discover(&http, &opts.registry, opts.plain_http).await?;
    let terminal = {
        use std::io::IsTerminal as _;
        std::io::stderr().is_terminal()
    };
    let (user, refresh) =
        device_login(&http, &reg, opts.provider.as_deref(), opts.no_browser, &mut std::io::stderr(), terminal).await?;
    let host = &reg.host;
    let config_dir = match (&opts.docker_config, std::env::var_os("DOCKER_CONFIG")) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => PathBuf::from(d),
        (None, None) => {
            PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set; pass --docker-config")?).join(".docker")
        }
    };
    let config = config_dir.join("config.json");
    let current: serde_json::Value = std::fs::read(&config)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    // With a credential helper configured (Docker Desktop sets credsStore), docker never reads `auths`:
    // the token goes to the helper, as `docker login` would send it.
    match helper_for(&current, host) {
        Some(name) => {
            store_with_helper(&name, host, &refresh)?;
            eprintln!(
                "Logged in to {host} as {user}; identity token stored by docker-credential-{name} (named in {})",
                config.display()
            );
        }
        None => {
            write_auth_entry(&config, host, &user, &refresh)?;
            eprintln!("Logged in to {host} as {user}; identity token written to {}", config.display());
        }
    }
    if let Some(a) = &opts.authfile {
        write_auth_entry(a, host, &user, &refresh)?;
        eprintln!("Also written to {}", a.display());
    }
    Ok(())
}

/// The time left to approve the login: rewritten in place on a terminal, a line a minute otherwise.
struct Progress {
    deadline: Instant,
    terminal: bool,
    last_line: Option<Instant>,
}

impl Progress {
    fn show(&mut self, out: &mut dyn std::io::Write) {
        let left = self.deadline.saturating_duration_since(Instant::now()).as_secs();
        let text = format!("waiting for approval at the identity provider; {}:{:02} left", left / 60, left % 60);
        if self.terminal {
            let _ = write!(out, "\r{text} ");
        } else if self.last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            let _ = writeln!(out, "{text}");
            self.last_line = Some(Instant::now());
        }
        let _ = out.flush();
    }

    fn done(&self, out: &mut dyn std::io::Write) {
        if self.terminal {
            let _ = writeln!(out);
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
