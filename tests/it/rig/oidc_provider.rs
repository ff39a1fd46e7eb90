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
//! A second, confidential client ([`WORKLOAD_CLIENT_ID`]) has only the client-credentials grant and gets
//! RFC 9068 JWT access tokens for any absolute-URL `resource` ([`OidcProvider::workload_token`]): what a
//! CI platform's workload token looks like to a relying party. Header `{"alg":"RS256","typ":"at+jwt",
//! "kid":…}` (the provider's key, published at the discovery document's `jwks_uri`); claims `iss` (the
//! issuer), `aud` (the resource, verbatim, as a string), `sub` and `client_id` (both the client id),
//! `jti`, `iat`, `exp` (`iat` + 600) and a nested `"ci": {"pipeline": "rig"}`.
//!
//! The process is spawned through [`command`] (it dies with the test) on a port chosen at run time and
//! is killed on drop; [`OidcProvider::stop`] kills it early ("IdP down").

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::browser::Browser;
use super::http::http_request;
use super::service::wait_for_log_line;
use super::{command, require, tempdir};

pub const CLIENT_ID: &str = "tollgate";
pub const CLIENT_SECRET: &str = "tollgate-rig-client-secret";
/// The CI-workload client: client-credentials grant only, JWT access tokens ([`OidcProvider::workload_token`]).
pub const WORKLOAD_CLIENT_ID: &str = "ci-workload";
pub const WORKLOAD_CLIENT_SECRET: &str = "ci-workload-rig-secret";

/// Options for one provider.
#[derive(Default, Clone)]
pub struct OidcProviderOptions {
    /// Lifetime of device codes in seconds (default 600).
    pub device_ttl: Option<u64>,
    /// Issue no refresh tokens (tollgate then relies on its group snapshot and max_group_age).
    pub no_refresh: bool,
    /// The port of a proxy in front of the provider: the issuer (and every endpoint it advertises) names it.
    pub issuer_port: Option<u16>,
}

pub struct OidcProvider {
    child: Option<Child>,
    port: u16,
    issuer_port: u16,
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
                .env("WORKLOAD_CLIENT_ID", WORKLOAD_CLIENT_ID)
                .env("WORKLOAD_CLIENT_SECRET", WORKLOAD_CLIENT_SECRET)
                .env("DEVICE_TTL", opts.device_ttl.unwrap_or(600).to_string())
                .env("NO_REFRESH", if opts.no_refresh { "1" } else { "0" })
                .env("ISSUER_PORT", opts.issuer_port.unwrap_or(port).to_string())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            let mut child = cmd.spawn().expect("spawn node");
            if wait_for_log_line(&mut child, &log, &format!("listening on {port}"), "oidc-provider") {
                return OidcProvider {
                    child: Some(child),
                    port,
                    issuer_port: opts.issuer_port.unwrap_or(port),
                    dir,
                    users_file,
                };
            }
        }
        panic!("oidc-provider did not start after 5 attempts; logs in {}", dir.path().display());
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The issuer URL: through the proxy when `issuer_port` was given.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.issuer_port)
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

    /// A JWT access token for `audience` from the client-credentials grant of the `ci-workload` client.
    ///
    /// `audience` must be an absolute URL (or URN) without a fragment: oidc-provider refuses anything else
    /// with `invalid_target`. It becomes the token's `aud` exactly as given (no trailing slash added).
    /// The request goes to the provider itself (`self.addr()`), not through a proxy named by the issuer;
    /// the token's `iss` is the issuer all the same.
    pub fn workload_token(&self, audience: &str) -> String {
        let basic = STANDARD.encode(format!("{WORKLOAD_CLIENT_ID}:{WORKLOAD_CLIENT_SECRET}"));
        let authorization = format!("Basic {basic}");
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("resource", audience)
            .finish();
        // oidc-provider's default token route (server.js configures no `routes`): `token_endpoint` in the
        // discovery document is `{issuer}/token`.
        let r = http_request(
            &self.addr(),
            "POST",
            "/token",
            &[("Content-Type", "application/x-www-form-urlencoded"), ("Authorization", authorization.as_str())],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("client-credentials request to oidc-provider at {}: {e}", self.addr()));
        assert_eq!(
            r.status, 200,
            "client-credentials grant for audience {audience:?} failed: {}: {}",
            r.status, r.body
        );
        let json: serde_json::Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("client-credentials response is not JSON ({e}): {}: {}", r.status, r.body));
        let token = json["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in the client-credentials response: {}: {}", r.status, r.body));
        // Without a resource server oidc-provider issues an opaque token; a JWT has three dot-separated parts.
        assert_eq!(
            token.split('.').count(),
            3,
            "the client-credentials access token is not a JWT: {}: {}",
            r.status,
            r.body
        );
        token.to_string()
    }

    /// As a user in a browser: enter `user_code`, log in, and approve (or deny) the device.
    pub fn answer_device(&self, user_code: &str, user: (&str, &str), approve: bool) -> Result<(), String> {
        let mut b = Browser::new(&self.addr());
        let page = b.form("GET", "/device", &[])?;
        let xsrf = page
            .body
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| format!("no xsrf field on the device page: {}", page.body))?
            .to_string();
        let r = b.form("POST", "/device", &[("xsrf", &xsrf), ("user_code", user_code), ("confirm", "yes")])?;
        let login = r.location.clone().ok_or_else(|| format!("user code not accepted ({}): {}", r.status, r.body))?;
        let r = b.form("POST", &format!("{login}/login"), &[("login", user.0), ("password", user.1)])?;
        let resume = r.location.clone().ok_or_else(|| format!("login refused ({}): {}", r.status, r.body))?;
        let r = b.form("GET", &resume, &[])?;
        let consent = r.location.clone().ok_or_else(|| format!("no consent step ({}): {}", r.status, r.body))?;
        let action = if approve { "confirm" } else { "abort" };
        let r = b.form("POST", &format!("{consent}/{action}"), &[])?;
        let done = r.location.clone().ok_or_else(|| format!("consent not taken ({}): {}", r.status, r.body))?;
        let r = b.form("GET", &done, &[])?;
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
