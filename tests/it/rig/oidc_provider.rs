//! A real OpenID provider: the npm `oidc-provider` app in `tests/it/rig/oidc-provider/` (run
//! `npm ci` there; `scripts/test.sh` does), configured to emit Keycloak-shaped `realm_access.roles` and
//! `resource_access.tollgate.roles`, Keycloak group paths in `groups`, and a GitLab-shaped
//! `groups_direct`. The password grant is a registered extension grant, the development login is
//! disabled, and the device flow is on.
//!
//! Users live in a JSON file the app re-reads on every lookup, so a test changes a user's groups (or
//! deletes the user) with [`OidcProvider::set_users`]. Device approvals are scripted over HTTP with a
//! cookie jar through the provider's own pages: the user-code form (with its xsrf token), then the login
//! and consent interactions.
//!
//! The process is spawned through [`command`] (it dies with the test) on a port chosen at run time and
//! is killed on drop; [`OidcProvider::stop`] kills it early ("IdP down").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::http::http_request;
use super::{command, require, tempdir};

pub const CLIENT_ID: &str = "tollgate";
pub const CLIENT_SECRET: &str = "tollgate-rig-client-secret";

/// Options for one provider.
#[derive(Default, Clone)]
pub struct OidcProviderOptions {
    /// Lifetime of device codes in seconds (default 600).
    pub device_ttl: Option<u64>,
    /// Issue no refresh tokens (tollgate then relies on its group snapshot and max_group_age).
    pub no_refresh: bool,
}

pub struct OidcProvider {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    users_file: PathBuf,
}

fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/rig/oidc-provider")
}

impl OidcProvider {
    /// Start with `users`: `{name: {password, groups, roles, client_roles, gitlab_groups}}`.
    pub fn start(users: serde_json::Value, opts: OidcProviderOptions) -> OidcProvider {
        let node = require("node", "nodejs npm");
        let app = app_dir();
        assert!(
            app.join("node_modules/oidc-provider").is_dir(),
            "\n\n*** {}/node_modules is missing: run `npm ci` there (scripts/test.sh does)\n\n",
            app.display()
        );
        let dir = tempdir("oidc-provider");
        let users_file = dir.path().join("users.json");
        std::fs::write(&users_file, users.to_string()).expect("write users");
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = dir.path().join(format!("provider-{port}.log"));
            let out = std::fs::File::create(&log).expect("create log");
            let mut cmd = command(&node);
            cmd.arg(app.join("server.js"))
                .env("PORT", port.to_string())
                .env("USERS_FILE", &users_file)
                .env("CLIENT_ID", CLIENT_ID)
                .env("CLIENT_SECRET", CLIENT_SECRET)
                .env("DEVICE_TTL", opts.device_ttl.unwrap_or(600).to_string())
                .env("NO_REFRESH", if opts.no_refresh { "1" } else { "0" })
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            let mut child = cmd.spawn().expect("spawn node");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(&format!("listening on {port}")) {
                    return OidcProvider { child: Some(child), port, dir, users_file };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken between probe and bind: try another
                }
                assert!(Instant::now() < deadline, "oidc-provider did not start:\n{text}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("oidc-provider did not start after 5 attempts; logs in {}", dir.path().display());
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The client secret in a file, for tollgate's `client_secret_file`.
    pub fn secret_file(&self) -> PathBuf {
        let p = self.dir.path().join("client-secret");
        std::fs::write(&p, CLIENT_SECRET).expect("write secret");
        p
    }

    /// Replace the users (groups changed, user deleted): effective at the next lookup.
    pub fn set_users(&self, users: serde_json::Value) {
        std::fs::write(&self.users_file, users.to_string()).expect("write users");
    }

    /// Kill the provider: "the IdP is down".
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// As a user in a browser: enter `user_code`, log in, and approve (or deny) the device.
    pub fn answer_device(&self, user_code: &str, user: (&str, &str), approve: bool) -> Result<(), String> {
        let mut b = Browser { addr: self.addr(), cookies: BTreeMap::new() };
        let page = b.request("GET", "/device", &[])?;
        let xsrf = page
            .body
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| format!("no xsrf field on the device page: {}", page.body))?
            .to_string();
        let r = b.request("POST", "/device", &[("xsrf", &xsrf), ("user_code", user_code), ("confirm", "yes")])?;
        let login = r.location().ok_or_else(|| format!("user code not accepted ({}): {}", r.status, r.body))?;
        let r = b.request("POST", &format!("{login}/login"), &[("login", user.0), ("password", user.1)])?;
        let resume = r.location().ok_or_else(|| format!("login refused ({}): {}", r.status, r.body))?;
        let r = b.request("GET", &resume, &[])?;
        let consent = r.location().ok_or_else(|| format!("no consent step ({}): {}", r.status, r.body))?;
        let action = if approve { "confirm" } else { "abort" };
        let r = b.request("POST", &format!("{consent}/{action}"), &[])?;
        let done = r.location().ok_or_else(|| format!("consent not taken ({}): {}", r.status, r.body))?;
        let r = b.request("GET", &done, &[])?;
        if r.status != 200 {
            return Err(format!("device flow did not finish ({}): {}", r.status, r.body));
        }
        Ok(())
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scripted browser: a cookie jar over the rig's one-request-per-connection HTTP client.
struct Browser {
    addr: String,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Page {
    fn location(&self) -> Option<String> {
        self.location.clone()
    }
}

impl Browser {
    fn request(&mut self, method: &str, path: &str, form: &[(&str, &str)]) -> Result<Page, String> {
        let path = path.strip_prefix(&format!("http://{}", self.addr)).unwrap_or(path).to_string();
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if !cookie.is_empty() {
            headers.push(("Cookie", cookie.as_str()));
        }
        let r = http_request(&self.addr, method, &path, &headers, body.as_bytes())?;
        for (k, v) in &r.headers {
            if k != "set-cookie" {
                continue;
            }
            let pair = v.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().to_string(), value.to_string());
                }
            }
        }
        let location =
            r.header("location").map(|l| l.strip_prefix(&format!("http://{}", self.addr)).unwrap_or(l).to_string());
        Ok(Page { status: r.status, location, body: r.body })
    }
}
