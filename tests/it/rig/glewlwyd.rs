//! A real Glewlwyd 2.7 (Debian package `glewlwyd`): an OpenID provider with the password grant and the
//! device grant built in.
//!
//! Each instance gets a private config and a SQLite database created from the package's shipped SQL,
//! wrapped in ONE transaction (statement by statement it takes seconds). The same transaction adds a
//! `groups` property to the user backend and the OIDC plugin instance (RSA key made with openssl here,
//! password and device grants on, `groups` and `preferred_username` claims in ID tokens and userinfo).
//! The confidential client and the users are then created through the admin API.
//!
//! Pitfalls (found here): the password grant also needs `allow-non-oidc` on the plugin and
//! `token_endpoint_auth_method` listed on the client, or Glewlwyd answers 403 / 500 with an empty body;
//! `sub` is random per start (tollgate uses `preferred_username`); refresh responses carry no ID token
//! (tollgate reads userinfo then); the TLS keys must be left out of the config entirely.
//!
//! Device approvals are scripted as a browser would do them, with a cookie jar: log in at
//! `/api/auth/`, grant the client's scope, then confirm the user code at `/api/oidc/device`.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::json;

use super::browser::Browser;
use super::service::wait_for_log_line;
use super::{command, require, tempdir};

pub const CLIENT_ID: &str = "tollgate";
pub const CLIENT_SECRET: &str = "tollgate-glewlwyd-client-secret";
/// The administrator of the package's initial database.
const ADMIN: (&str, &str) = ("admin", "password");

pub struct Glewlwyd {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    admin: Browser,
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn plugin_parameters(issuer: &str, key: &str, cert: &str) -> serde_json::Value {
    let claim = |name: &str, property: &str| {
        json!({"name": name, "user-property": property, "type": "string", "boolean-value-true": "",
               "boolean-value-false": "", "mandatory": true, "on-demand": false, "scope": []})
    };
    json!({
        "iss": issuer, "jwt-type": "rsa", "jwt-key-size": "256", "key": key, "cert": cert,
        "access-token-duration": 3600, "refresh-token-duration": 1209600, "code-duration": 600,
        "refresh-token-rolling": false, "refresh-token-one-use": "never",
        // Needed for the password grant (a non-OIDC OAuth2 grant in Glewlwyd's terms).
        "allow-non-oidc": true,
        "auth-type-code-enabled": true, "auth-type-token-enabled": false, "auth-type-id-token-enabled": true,
        "auth-type-none-enabled": false, "auth-type-password-enabled": true, "auth-type-client-enabled": false,
        "auth-type-device-enabled": true, "auth-type-refresh-enabled": true,
        "scope": [], "additional-parameters": [],
        "claims": [claim("groups", "groups"), claim("preferred_username", "username")],
        "jwks-show": true, "jwks-x5c": [], "subject-type": "public",
        "address-claim": {"type": "no", "formatted": "", "street_address": "", "locality": "", "region": "",
                          "postal_code": "", "country": "", "mandatory": false},
        "name-claim": "on-demand", "name-claim-scope": [], "email-claim": "no", "email-claim-scope": [],
        "scope-claim": "no", "scope-claim-scope": [], "allowed-scope": ["openid"],
        "device-authorization-expiration": 600, "device-authorization-interval": 5,
    })
}

const USER_MODULE: &str = r#"{"use-glewlwyd-connection":true,"data-format":{"picture":{"multiple":false,"read":true,"write":true,"profile-read":true,"profile-write":true},"reset-credentials-code":{"multiple":false,"read":true,"write":true,"profile-read":false,"profile-write":false},"user-code":{"multiple":false,"read":true,"write":true,"profile-read":true,"profile-write":true},"groups":{"multiple":true,"read":true,"write":true,"profile-read":false,"profile-write":false}}}"#;

impl Glewlwyd {
    /// Start with `users`: (username, password, groups).
    pub fn start(users: &[(&str, &str, &[&str])]) -> Glewlwyd {
        let bin = require("glewlwyd", "glewlwyd dbconfig-no-thanks sqlite3");
        let sqlite = require("sqlite3", "sqlite3");
        let dir = tempdir("glewlwyd");
        let d = dir.path();
        let init = Path::new("/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz");
        assert!(init.exists(), "{} is missing: reinstall the glewlwyd package", init.display());
        let (key, cert) = (d.join("oidc.key"), d.join("oidc.crt"));
        let mut openssl = command(require("openssl", "openssl"));
        openssl.args(["req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=glewlwyd-rig", "-newkey", "rsa:2048"]);
        openssl.arg("-keyout").arg(&key).arg("-out").arg(&cert);
        super::run(openssl, None, &[], Duration::from_secs(60)).assert_ok();
        let (key, cert) = (std::fs::read_to_string(key).unwrap(), std::fs::read_to_string(cert).unwrap());

        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let issuer = format!("http://127.0.0.1:{port}/api/oidc");
            let db = d.join(format!("glewlwyd-{port}.db"));
            let mut gz = command("gzip");
            gz.arg("-dc").arg(init);
            let shipped = super::run(gz, None, &[], Duration::from_secs(30));
            shipped.assert_ok();
            let sql = format!(
                "BEGIN;\n{}\nUPDATE g_user_module_instance SET gumi_parameters = {};\n\
                 INSERT INTO g_plugin_module_instance (gpmi_module, gpmi_name, gpmi_display_name, gpmi_parameters) \
                 VALUES ('oidc', 'oidc', 'OpenID Connect', {});\nCOMMIT;\n",
                shipped.stdout,
                sql_quote(USER_MODULE),
                sql_quote(&plugin_parameters(&issuer, &key, &cert).to_string())
            );
            let mut load = command(&sqlite);
            load.arg(&db);
            super::run(load, Some(sql.as_bytes()), &[], Duration::from_secs(60)).assert_ok();
            let conf = d.join(format!("glewlwyd-{port}.conf"));
            std::fs::write(&conf, config(port, &db)).unwrap();
            let log = d.join(format!("glewlwyd-{port}.log"));
            let out = std::fs::File::create(&log).unwrap();
            let mut cmd = command(&bin);
            cmd.arg(format!("--config-file={}", conf.display()))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            let mut child = cmd.spawn().expect("spawn glewlwyd");
            if wait_for_log_line(&mut child, &log, &format!("Glewlwyd started on port {port}"), "glewlwyd") {
                let mut g =
                    Glewlwyd { child: Some(child), port, admin: Browser::new(&format!("127.0.0.1:{port}")), dir };
                g.provision(users);
                return g;
            }
        }
        panic!("glewlwyd did not start after 5 attempts; logs in {}", dir.path().display());
    }

    fn api(&mut self, method: &str, path: &str, body: serde_json::Value) {
        let r = self.admin.json(method, &format!("/api{path}"), &body).expect("glewlwyd answers");
        assert_eq!(r.status, 200, "glewlwyd {method} /api{path}: {}", r.body);
    }

    fn provision(&mut self, users: &[(&str, &str, &[&str])]) {
        self.api("POST", "/auth/", json!({"username": ADMIN.0, "password": ADMIN.1}));
        self.api(
            "POST",
            "/client/",
            json!({"client_id": CLIENT_ID, "name": "tollgate", "confidential": true, "password": CLIENT_SECRET,
                   "authorization_type": ["password", "device_authorization", "refresh_token"],
                   "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
                   "scope": ["openid"], "redirect_uri": [], "enabled": true}),
        );
        for (name, password, groups) in users {
            self.api(
                "POST",
                "/user/",
                json!({"username": name, "name": name, "email": format!("{name}@example.test"), "password": password,
                       "enabled": true, "scope": ["openid"], "groups": groups}),
            );
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn issuer(&self) -> String {
        format!("http://{}/api/oidc", self.addr())
    }

    /// The client secret in a file, for tollgate's `client_secret_file`.
    pub fn secret_file(&self) -> std::path::PathBuf {
        let p = self.dir.path().join("client-secret");
        std::fs::write(&p, CLIENT_SECRET).unwrap();
        p
    }

    /// Change a user's groups at the IdP.
    pub fn set_groups(&mut self, user: &str, groups: &[&str]) {
        self.api(
            "PUT",
            &format!("/user/{user}"),
            json!({"name": user, "email": format!("{user}@example.test"), "enabled": true, "scope": ["openid"],
                   "groups": groups}),
        );
    }

    /// As the user in a browser: log in, grant the client, and confirm `user_code`.
    pub fn approve_device(&self, user_code: &str, user: (&str, &str)) -> Result<(), String> {
        let mut b = Browser::new(&self.addr());
        let r = b.json("POST", "/api/auth/", &json!({"username": user.0, "password": user.1}))?;
        if r.status != 200 {
            return Err(format!("login refused ({}): {}", r.status, r.body));
        }
        let r = b.json("PUT", &format!("/api/auth/grant/{CLIENT_ID}"), &json!({"scope": "openid"}))?;
        if r.status != 200 {
            return Err(format!("grant refused ({}): {}", r.status, r.body));
        }
        let code: String = form_urlencoded::byte_serialize(user_code.as_bytes()).collect();
        let r = b.form("GET", &format!("/api/oidc/device?code={code}&g_continue"), &[])?;
        match r.location {
            Some(l) if l.contains("prompt=deviceComplete") => Ok(()),
            other => Err(format!("device not confirmed ({}): {other:?} {}", r.status, r.body)),
        }
    }

    /// Kill the server: "the IdP is down".
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Glewlwyd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private config: loopback port, our database, no TLS keys at all (with `use_secure_connection=false`
/// and no key files Glewlwyd exits; leaving the keys out works).
fn config(port: u16, db: &Path) -> String {
    format!(
        "port={port}\nexternal_url=\"http://127.0.0.1:{port}\"\nlogin_url=\"login.html\"\napi_prefix=\"api\"\n\
         static_files_path=\"/usr/share/glewlwyd/webapp/\"\nallow_origin=\"*\"\nlog_mode=\"console\"\n\
         log_level=\"INFO\"\ncookie_secure=0\nsession_expiration=3600\nsession_key=\"GLEWLWYD2_SESSION_ID\"\n\
         admin_session_authentication=\"cookie\"\nprofile_session_authentication=\"cookie\"\n\
         allow_multiple_user_per_session=true\nlogin_api_enabled=true\nadmin_scope=\"g_admin\"\n\
         profile_scope=\"g_profile\"\nuser_module_path=\"/usr/lib/glewlwyd/user\"\n\
         user_middleware_module_path=\"/usr/lib/glewlwyd/user_middleware\"\n\
         client_module_path=\"/usr/lib/glewlwyd/client\"\nuser_auth_scheme_module_path=\"/usr/lib/glewlwyd/scheme\"\n\
         plugin_module_path=\"/usr/lib/glewlwyd/plugin\"\nhash_algorithm = \"SHA512\"\n\
         database =\n{{\n  type = \"sqlite3\"\n  path = \"{}\"\n}};\n",
        db.display()
    )
}
