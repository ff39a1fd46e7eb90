//! `tollgate login REGISTRY`: device login from a terminal, for users whose IdP enforces MFA.
//!
//! It asks the registry's `/v2/` for its token realm (tollgate), starts a device flow at tollgate's
//! `/device/code`, shows the user code and the verification URL, polls `/token` honouring `interval` and
//! `slow_down`, and writes the resulting tollgate refresh token into docker's config.json as
//! `identitytoken`, with `auth` = base64(`user:`): docker uses the identity token as is, and
//! containers/image (podman, skopeo) and containerd-based tools need the `auth` entry to pick it up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::docker_config;

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
    /// A CA certificate (PEM) to trust besides the system's, for a registry whose certificate a private
    /// CA signed.
    pub ca_file: Option<PathBuf>,
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

pub fn login(opts: LoginOptions) -> Result<(), String> {
    crate::cli::block_on(run(opts))?
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

/// The client of the registry and of tollgate: the system's trust store (which `SSL_CERT_FILE` replaces,
/// as for most TLS clients), plus the certificates of `ca_file` when given.
pub fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-file {}: not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("--ca-file {}: holds no PEM certificate", path.display()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// What to do about a certificate this machine does not trust. Never "turn TLS off": a registry's
/// certificate signed by a company CA is the normal case, and its CA is what is missing.
pub const UNTRUSTED_HINT: &str = "this machine does not trust the certificate the registry presented. If a \
private (company) CA signed it, pass the CA's certificate with --ca-file CA.pem, or set SSL_CERT_FILE to a PEM \
bundle that holds it (tollgate, the credential helper and most TLS clients read it instead of the system's \
trust store); or install the CA in the system's trust store (Debian: copy it to /usr/local/share/ca-certificates/ \
as a .crt and run update-ca-certificates)";

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
            let user = super::unverified_claims(access)
                .and_then(|c| c.get("sub")?.as_str().map(str::to_string))
                .ok_or("cannot read the username from the access token")?;
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

async fn run(opts: LoginOptions) -> Result<(), String> {
    let http = http_client(opts.ca_file.as_deref())?;
    let reg = discover(&http, &opts.registry, opts.plain_http).await?;
    let terminal = {
        use std::io::IsTerminal as _;
        std::io::stderr().is_terminal()
    };
    let (user, refresh) =
        device_login(&http, &reg, opts.provider.as_deref(), opts.no_browser, &mut std::io::stderr(), terminal).await?;
    let host = &reg.host;
    let config = docker_config::config_file(opts.docker_config.as_deref())?;
    let current = docker_config::read_leniently(&config);
    // With a credential helper configured (Docker Desktop sets credsStore), docker never reads `auths`:
    // the token goes to the helper, as `docker login` would send it.
    match docker_config::helper_for(&current, host) {
        Some(name) => {
            docker_config::store_with_helper(&name, host, &refresh)?;
            eprintln!(
                "Logged in to {host} as {user}; identity token stored by docker-credential-{name} (named in {})",
                config.display()
            );
        }
        None => {
            docker_config::write_auth_entry(&config, host, &user, &refresh)?;
            eprintln!("Logged in to {host} as {user}; identity token written to {}", config.display());
        }
    }
    if let Some(a) = &opts.authfile {
        docker_config::write_auth_entry(a, host, &user, &refresh)?;
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

/// Whether an error chain (lower-cased) says the peer's certificate is not trusted: an unknown issuer, a
/// self-signed certificate, or one for another name.
pub fn untrusted(chain: &str) -> bool {
    ["unknownissuer", "invalid peer certificate", "certificate verify failed", "self-signed", "notvalidforname"]
        .iter()
        .any(|m| chain.contains(m))
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
    } else if untrusted(&lower) {
        // Checked before trying plain HTTP: a TLS port answers a plain request with a 400 too, and the fix
        // for an untrusted certificate is its CA, not dropping TLS.
        UNTRUSTED_HINT.to_string()
    } else {
        let plain = format!("http://{host}/v2/");
        let answers_http = guessed_https
            && http.get(&plain).timeout(Duration::from_secs(5)).send().await.is_ok_and(|r| r.status().as_u16() < 500);
        if answers_http {
            format!("{host} answers plain HTTP, not HTTPS: add --plain-http (for test setups; a production registry needs TLS)")
        } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            format!("the TLS connection to {host} failed: see the cause above")
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
}
