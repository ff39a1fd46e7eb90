//! The OIDC provider against a REAL OpenID provider (npm oidc-provider, Keycloak- and GitLab-shaped
//! claims; see rig/oidc_provider.rs), through the real registry 2.8 and real clients: password grant,
//! device login with `tollgate login`, denial at the IdP, expired and unknown device codes, wrong
//! passwords, the IdP down, and group changes at the IdP reaching refresh tokens.
//!
//! The bad-ID-token cases (wrong audience, wrong issuer, expired, bad signature) are unit tests in
//! src/identity/oidc/idp.rs with hand-signed tokens: a certified provider cannot be made to sign such tokens
//! on demand.

use std::io::Read as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::rig::http::http_request;
use crate::rig::*;

pub(crate) const CAROL: (&str, &str) = ("carol", "carol-idp-password");
const DAVE: (&str, &str) = ("dave", "dave-idp-password");
const ERIN: (&str, &str) = ("erin", "erin-idp-password");

/// Keycloak-shaped users: realm roles, and group paths.
pub(crate) fn keycloak_users() -> serde_json::Value {
    json!({
        "carol": {"password": CAROL.1, "roles": ["team-payments", "offline_access"], "groups": ["/team-payments"]},
        "erin": {"password": ERIN.1, "roles": ["team-payments"], "groups": ["/team-payments", "/developers"]},
    })
}

/// The tollgate provider entry for `idp`.
pub(crate) fn provider_yaml(name: &str, idp: &OidcProvider, extra: &[&str]) -> String {
    let mut s = format!(
        "  - type: oidc\n    name: {name}\n    issuer: {}\n    client_id: {}\n    client_secret_file: {}\n",
        idp.issuer(),
        crate::rig::oidc_provider::CLIENT_ID,
        idp.secret_file().display()
    );
    for line in extra {
        s += &format!("    {line}\n");
    }
    s
}

fn env_with(providers: String, cache_ttl: &str) -> TestEnv {
    TestEnv::with(Opts {
        extra_providers_yaml: providers,
        extra_yaml: format!("identity_cache:\n  ttl: {cache_ttl}\n"),
        ..Opts::default()
    })
}

/// tollgate with one Keycloak-shaped IdP (realm roles as groups), a registry whose realm it is, and a
/// scratch directory. Field order is drop order.
struct World {
    reg: Registry,
    tg: Running,
    /// Kept for its directory (config, keys, data).
    _env: TestEnv,
    idp: OidcProvider,
    tmp: tempfile::TempDir,
}

impl World {
    fn new(opts: OidcProviderOptions, extra: &[&str], cache_ttl: &str) -> World {
        let idp = OidcProvider::start(keycloak_users(), opts);
        let mut lines = vec!["groups_claim: realm_access.roles"];
        lines.extend_from_slice(extra);
        let env = env_with(provider_yaml("keycloak", &idp, &lines), cache_ttl);
        let tg = env.start();
        let reg = env.registry(&tg);
        World { reg, tg, _env: env, idp, tmp: tempfile::tempdir().unwrap() }
    }
}

fn image(dir: &Path, marker: &str) -> String {
    format!("oci:{}:latest", oci_image(dir, marker).display())
}

fn assert_refused(out: &Output, what: &str) {
    assert!(!out.ok, "{what} should have been refused:\n{out}");
    let text = out.combined().to_lowercase();
    assert!(
        text.contains("denied") || text.contains("unauthorized") || text.contains("authentication required"),
        "{what}: expected an authorization error:\n{out}"
    );
}

/// GET /token over HTTP as docker login does (offline_token=true): the refresh token.
fn docker_style_login(tg: &Running, user: (&str, &str)) -> HttpResponse {
    let path = format!("/token?service={SERVICE}&offline_token=true&client_id=docker&account={}", user.0);
    http_get(&tg.addr.to_string(), &path, &[("Authorization", &basic(user.0, user.1))]).expect("tollgate answers")
}

fn post_form(tg: &Running, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let r = http_request(
        &tg.addr.to_string(),
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .expect("tollgate answers");
    (r.status, serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.body)))
}

/// The actions granted on `scope` for a refresh token, through the POST refresh grant.
fn refresh_grant(tg: &Running, refresh: &str, scope: &str) -> (u16, serde_json::Value) {
    post_form(
        tg,
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "test"),
            ("service", SERVICE),
            ("scope", scope),
        ],
    )
}

fn granted_actions(reply: &serde_json::Value) -> Vec<String> {
    let (_, claims) = jwt_parts(reply["access_token"].as_str().expect("access_token"));
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["actions"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn password_grant_at_a_keycloak_shaped_idp_then_push_and_pull_through_the_registry() {
    let w = World::new(OidcProviderOptions::default(), &[], "5m");
    let World { reg, tg, tmp, .. } = &w;
    let skopeo = Skopeo::new();

    skopeo.copy(&image(tmp.path(), "kc-1"), &reg.docker_ref("payments/api:1"), Some(CAROL)).assert_ok();
    let back = tmp.path().join("pulled");
    skopeo.copy(&reg.docker_ref("payments/api:1"), &format!("oci:{}:x", back.display()), Some(CAROL)).assert_ok();
    Ctr::new().pull(&reg.reference("payments/api:1"), Some(CAROL)).assert_ok();
    // docker login with the IdP password stores tollgate's identity token, never the password.
    let docker = DockerCli::new();
    docker.login(reg.addr(), CAROL.0, CAROL.1).assert_ok();
    let config = docker.config_json();
    assert!(config["auths"][reg.addr()]["identitytoken"].as_str().is_some_and(|t| t.starts_with("tgr_")), "{config}");
    assert!(!config.to_string().contains(CAROL.1), "{config}");
    // Her realm roles do not include team-web.
    let denied = skopeo.copy(&image(tmp.path(), "kc-2"), &reg.docker_ref("web/site:1"), Some(CAROL));
    assert!(!denied.ok && denied.combined().contains("denied"), "{denied}");
    // A wrong IdP password is a 401 with the Basic challenge, never a 503, never a token.
    assert_refused(&skopeo.inspect(&reg.docker_ref("payments/api:1"), Some((CAROL.0, "wrong"))), "a wrong password");
    let r = http_get(
        &tg.addr.to_string(),
        &format!("/token?service={SERVICE}&scope=repository:payments/api:pull"),
        &[("Authorization", &basic(CAROL.0, "wrong"))],
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.header("www-authenticate").unwrap_or("").starts_with("Basic"), "{:?}", r.headers);
    assert_eq!(reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");
}

#[tokio::test(flavor = "multi_thread")]
async fn keycloak_group_paths_and_gitlab_groups_direct_side_by_side() {
    let kc = OidcProvider::start(keycloak_users(), OidcProviderOptions::default());
    let gitlab = OidcProvider::start(
        json!({"dave": {"password": DAVE.1, "gitlab_groups": ["web", "acme/infra"]}}),
        OidcProviderOptions::default(),
    );
    let providers = provider_yaml("keycloak", &kc, &["username_regex: carol|erin", "strip_group_prefix: /"])
        + &provider_yaml(
            "gitlab",
            &gitlab,
            &["groups_claim: groups_direct", "group_prefix: team-", "claims_source: userinfo", "username_claim: email"],
        );
    let env = env_with(providers, "5m");
    let state = env.state();
    let ask = |user: (&str, &str), scope: &str| {
        let state = state.clone();
        let req = get(&format!("service={SERVICE}&scope={}", enc(scope)), Some(&basic(user.0, user.1)));
        async move { call(&state, req).await }
    };
    // Keycloak's `/team-payments` group path, stripped to team-payments: the team rule applies.
    let r = ask(CAROL, "repository:payments/api:push,pull").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(granted_actions(&r.json()), vec!["pull", "push"]);
    // GitLab's groups_direct `web`, prefixed to team-web, at the second provider.
    // Read from userinfo, with the email as the username.
    let r = ask(DAVE, "repository:web/site:push").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(granted_actions(&r.json()), vec!["push"]);
    assert_eq!(jwt_parts(r.json()["token"].as_str().unwrap()).1["sub"], "dave@example.test");
    let r = ask(DAVE, "repository:payments/api:push").await;
    assert_eq!(granted_actions(&r.json()), Vec::<String>::new(), "dave is not in payments");
    // carol is not routed to the GitLab IdP, and dave not to Keycloak.
    let r = ask((DAVE.0, CAROL.1), "").await;
    assert_eq!(r.status, 401);
}

/// `tollgate login REGISTRY` as a user runs it; `answer` approves or denies the user code at the IdP
/// while it polls.
fn tollgate_login(reg: &Registry, dir: &Path, answer: impl FnOnce(&str) -> Result<(), String>) -> Output {
    let stderr_path = dir.join("login.stderr");
    let authfile = dir.join("auth.json");
    let mut cmd = command(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["login", reg.addr(), "--plain-http", "--docker-config"])
        .arg(dir.join("docker"))
        .arg("--authfile")
        .arg(&authfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn tollgate login");
    let code = loop {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if let Some(line) = text.lines().find_map(|l| l.strip_prefix("user code: ")) {
            break line.trim().to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tollgate login exited ({status}) before showing a code:\n{text}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no user code shown:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    answer(&code).expect("the scripted browser gets through the IdP's pages");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("tollgate login did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::fs::File::open(&stderr_path).unwrap().read_to_string(&mut stderr).unwrap();
    Output {
        ok: status.success(),
        stdout: String::new(),
        stderr,
        command: "tollgate login".into(),
        code: status.code(),
        timed_out: false,
        elapsed: start.elapsed(),
    }
}

#[test]
fn device_login_then_skopeo_podman_and_containerd_use_the_written_identity_token() {
    let w = World::new(OidcProviderOptions::default(), &[], "5m");
    let World { reg, tg, idp, tmp, .. } = &w;
    Skopeo::new().copy(&image(tmp.path(), "seed"), &reg.docker_ref("payments/api:1"), Some(CAROL)).assert_ok();

    let out = tollgate_login(reg, tmp.path(), |code| idp.answer_device(code, ERIN, true));
    assert!(out.ok, "{out}");
    assert!(out.stderr.contains("Logged in") && out.stderr.contains("as erin"), "{out}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("docker/config.json")).unwrap()).unwrap();
    let entry = &config["auths"][reg.addr()];
    assert_eq!(entry["auth"], "ZXJpbjo=", "auth is base64(\"erin:\"): {config}");
    let token = entry["identitytoken"].as_str().unwrap().to_string();
    assert!(token.starts_with("tgr_"), "{config}");
    let authfile = tmp.path().join("auth.json");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&authfile).unwrap()).unwrap()["auths"]
            [reg.addr()],
        *entry
    );

    // skopeo with the written auth.json: pull and push.
    let skopeo = Skopeo::with_authfile(&authfile);
    skopeo.inspect(&reg.docker_ref("payments/api:1"), None).assert_ok();
    skopeo.copy(&image(tmp.path(), "erin-1"), &reg.docker_ref("payments/api:2"), None).assert_ok();
    assert_refused(&skopeo.copy(&image(tmp.path(), "erin-2"), &reg.docker_ref("web/x:1"), None), "erin pushing web/");
    // podman with the same entry.
    let podman = Podman::new();
    std::fs::copy(&authfile, podman.authfile()).unwrap();
    podman.pull(&reg.reference("payments/api:2")).assert_ok();
    podman.tag(&reg.reference("payments/api:2"), &reg.reference("payments/api:3")).assert_ok();
    podman.push(&reg.reference("payments/api:3"), &reg.reference("payments/api:3")).assert_ok();
    // containerd with the identity token as its refresh token.
    Ctr::new().pull_with_refresh(&reg.reference("payments/api:3"), &token).assert_ok();
    // The identity token is also a Basic password.
    let r = http_get(
        &tg.addr.to_string(),
        &format!("/token?service={SERVICE}&scope=repository:payments/api:pull"),
        &[("Authorization", &basic("erin", &token))],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");
}

#[test]
fn device_login_denied_at_the_idp_expired_and_unknown_codes_each_say_so() {
    let w = World::new(OidcProviderOptions::default(), &[], "5m");
    let World { reg, tg, idp, tmp, .. } = &w;

    // Denied by the user at the IdP: tollgate login stops and says so; nothing is written.
    let out = tollgate_login(reg, tmp.path(), |code| idp.answer_device(code, ERIN, false));
    assert!(!out.ok && out.stderr.contains("login denied"), "{out}");
    assert!(!tmp.path().join("docker/config.json").exists());

    // Polling before approval: pending, then slow_down when polling faster than the interval.
    let (status, start) = post_form(tg, "/device/code", &[("service", SERVICE), ("client_id", "test")]);
    assert_eq!(status, 200, "{start}");
    assert!(start["user_code"].is_string() && start["verification_uri"].is_string(), "{start}");
    assert!(start["interval"].as_u64().unwrap() >= 1, "{start}");
    let code = start["device_code"].as_str().unwrap();
    let poll = |code: &str| {
        post_form(
            tg,
            "/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", code),
                ("client_id", "t"),
                ("service", SERVICE),
            ],
        )
    };
    let (status, body) = poll(code);
    assert_eq!((status, body["error"].as_str()), (400, Some("authorization_pending")), "{body}");
    let (status, body) = poll(code);
    assert_eq!((status, body["error"].as_str()), (400, Some("slow_down")), "{body}");

    // Unknown device code.
    let (status, body) = poll("tgd_never-issued");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("unknown device code"), "{body}");

    // Expired: an IdP whose device codes live 2 seconds.
    let short =
        OidcProvider::start(keycloak_users(), OidcProviderOptions { device_ttl: Some(2), ..Default::default() });
    let env2 = env_with(provider_yaml("keycloak", &short, &[]), "5m");
    let tg2 = env2.start();
    let (status, start) = post_form(&tg2, "/device/code", &[("service", SERVICE)]);
    assert_eq!(status, 200, "{start}");
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = post_form(
        &tg2,
        "/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", start["device_code"].as_str().unwrap()),
            ("client_id", "t"),
            ("service", SERVICE),
        ],
    );
    assert_eq!((status, body["error"].as_str()), (400, Some("expired_token")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("expired"), "{body}");
}

#[test]
fn idp_down_is_503_not_401() {
    let mut w = World::new(OidcProviderOptions::default(), &[], "5m");
    let tg = &w.tg;
    let path = format!("/token?service={SERVICE}&scope=repository:payments/api:pull");
    let ok = http_get(&tg.addr.to_string(), &path, &[("Authorization", &basic(CAROL.0, CAROL.1))]).unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    w.idp.stop();
    let tg = &w.tg;
    // A password not in the identity cache must reach the IdP, which is gone.
    let down = http_get(&tg.addr.to_string(), &path, &[("Authorization", &basic(ERIN.0, ERIN.1))]).unwrap();
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.body.contains("temporarily_unavailable"), "{}", down.body);
    let (status, body) = post_form(tg, "/device/code", &[("service", SERVICE)]);
    assert_eq!(status, 503, "{body}");
}

#[test]
fn a_group_change_at_the_idp_reaches_refresh_tokens_once_the_cache_entry_expires() {
    // The documented bound: identity_cache.ttl (here 2s).
    let w = World::new(OidcProviderOptions::default(), &[], "2s");
    let World { reg, tg, idp, tmp, .. } = &w;

    let refresh_of = |login: &HttpResponse| {
        assert_eq!(login.status, 200, "{}", login.body);
        serde_json::from_str::<serde_json::Value>(&login.body).unwrap()["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string()
    };
    let refresh = refresh_of(&docker_style_login(tg, CAROL));
    // docker login again at once: an identity cache hit. Its refresh token must be tied to the same IdP
    // session (the cached identity keeps the session id that the first response took out of its copy).
    let refresh_again = refresh_of(&docker_style_login(tg, CAROL));
    let session_of = |token: &str| {
        use base64::Engine as _;
        let jwt = token.strip_prefix(tollgate::token::refresh::PREFIX).expect("a tollgate refresh token");
        let payload = jwt.split('.').nth(1).expect("a JWT");
        let claims: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims["sid"].as_str().expect("the refresh token names its login session").to_string()
    };
    assert_eq!(session_of(&refresh_again), session_of(&refresh), "the cache hit is the same login session");
    let authfile = tmp.path().join("auth.json");
    std::fs::write(&authfile, auth_json_identity_token(reg.addr(), CAROL.0, &refresh)).unwrap();
    let skopeo = Skopeo::with_authfile(&authfile);
    skopeo.copy(&image(tmp.path(), "g1"), &reg.docker_ref("payments/api:1"), None).assert_ok();

    // carol leaves team-payments at the IdP.
    let mut users = keycloak_users();
    users["carol"]["roles"] = json!(["offline_access"]);
    idp.set_users(users.clone());
    std::thread::sleep(Duration::from_secs(3));
    let denied = skopeo.copy(&image(tmp.path(), "g2"), &reg.docker_ref("payments/api:2"), None);
    assert!(!denied.ok && denied.combined().contains("denied"), "the old group still grants push:\n{denied}");
    // Past the cache TTL both refresh tokens go to the IdP through their session: still valid, new groups.
    for token in [&refresh, &refresh_again] {
        let (status, body) = refresh_grant(tg, token, "repository:payments/api:pull");
        assert_eq!(status, 200, "{body}");
        assert_eq!(granted_actions(&body), Vec::<String>::new());
    }

    // carol is deleted at the IdP: the IdP refuses the session's refresh token, and so does tollgate.
    users.as_object_mut().unwrap().remove("carol");
    idp.set_users(users);
    std::thread::sleep(Duration::from_secs(3));
    for token in [&refresh, &refresh_again] {
        let (status, body) = refresh_grant(tg, token, "repository:payments/api:pull");
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
}

#[test]
fn without_an_idp_refresh_token_the_group_snapshot_ends_after_max_group_age() {
    let w = World::new(OidcProviderOptions { no_refresh: true, ..Default::default() }, &["max_group_age: 3s"], "1s");
    let tg = &w.tg;
    let login = docker_style_login(tg, CAROL);
    assert_eq!(login.status, 200, "{}", login.body);
    let refresh =
        serde_json::from_str::<serde_json::Value>(&login.body).unwrap()["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = refresh_grant(tg, &refresh, "repository:payments/api:pull");
    assert_eq!(status, 200, "{body}");
    assert_eq!(granted_actions(&body), vec!["pull"]);
    std::thread::sleep(Duration::from_secs(4));
    let (status, body) = refresh_grant(tg, &refresh, "repository:payments/api:pull");
    assert_eq!(status, 401, "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("no longer exists"), "{body}");
}

/// Glewlwyd (Debian), where both grants are built in: groups as a list in the ID token, refresh answers
/// without an ID token (so tollgate re-reads groups from userinfo).
#[test]
fn glewlwyd_password_grant_device_login_and_group_changes_through_the_registry() {
    let mut idp =
        Glewlwyd::start(&[(CAROL.0, CAROL.1, &["team-payments", "developers"]), (ERIN.0, ERIN.1, &["team-payments"])]);
    let entry = format!(
        "  - type: oidc\n    name: glewlwyd\n    issuer: {}\n    client_id: {}\n    client_secret_file: {}\n    scopes: [openid]\n",
        idp.issuer(),
        crate::rig::glewlwyd::CLIENT_ID,
        idp.secret_file().display()
    );
    let env = env_with(entry, "2s");
    let tg = env.start();
    let reg = env.registry(&tg);
    let tmp = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new();

    // Password grant: push and pull with the Glewlwyd password; a wrong one is refused.
    skopeo.copy(&image(tmp.path(), "glw-1"), &reg.docker_ref("payments/api:1"), Some(CAROL)).assert_ok();
    skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(CAROL)).assert_ok();
    assert_refused(&skopeo.inspect(&reg.docker_ref("payments/api:1"), Some((CAROL.0, "wrong"))), "a wrong password");

    // Device login approved at Glewlwyd; the identity token then pushes with skopeo.
    let out = tollgate_login(&reg, tmp.path(), |code| idp.approve_device(code, ERIN));
    assert!(out.ok, "{out}");
    let authfile = tmp.path().join("auth.json");
    let erin = Skopeo::with_authfile(&authfile);
    erin.copy(&image(tmp.path(), "glw-2"), &reg.docker_ref("payments/api:2"), None).assert_ok();

    // erin leaves team-payments at Glewlwyd: her identity token loses push once the cache entry expires.
    idp.set_groups(ERIN.0, &["developers"]);
    std::thread::sleep(Duration::from_secs(3));
    let denied = erin.copy(&image(tmp.path(), "glw-3"), &reg.docker_ref("payments/api:3"), None);
    assert!(!denied.ok && denied.combined().contains("denied"), "the old group still grants push:\n{denied}");
    assert_eq!(reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");

    // Glewlwyd down: 503, not 401.
    idp.stop();
    let down = http_get(
        &tg.addr.to_string(),
        &format!("/token?service={SERVICE}&scope=repository:payments/api:pull"),
        &[("Authorization", &basic(ERIN.0, ERIN.1))],
    )
    .unwrap();
    assert_eq!(down.status, 503, "{}", down.body);
}

/// A command line for `script -c`, each word single-quoted.
fn shell_line(words: &[&str]) -> String {
    words.iter().map(|w| format!("'{}'", w.replace('\'', "'\\''"))).collect::<Vec<_>>().join(" ")
}

/// Run `line` on a pseudo-terminal, so that a credential helper it starts can talk to the user on
/// /dev/tty; when a user code shows up, `answer` approves it. Whether it succeeded, and the screen.
fn on_a_terminal(line: &str, env: &[(&str, &str)], answer: &dyn Fn(&str)) -> (bool, String) {
    let mut pty = crate::rig::pty::Pty::spawn(line, env);
    let start = Instant::now();
    while !pty.done() {
        if let Some(code) = pty.line_with("user code: ") {
            answer(&code);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{line} did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    pty.finish(Duration::from_secs(90))
}

#[test]
fn docker_credential_tollgate_logs_in_on_the_terminal_once_serves_the_token_and_logs_in_again_after_a_revocation() {
    let w = World::new(OidcProviderOptions::default(), &[], "5m");
    let World { reg, tmp, idp, _env: env, .. } = &w;
    let host = reg.addr().to_string();
    // The helper: a link named docker-credential-tollgate on PATH, its store in a private config home.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tollgate"), bin.join("docker-credential-tollgate")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let xdg = tmp.path().join("xdg");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let store = xdg.join("tollgate/credentials.json");
    let helper_env =
        [("PATH", path.as_str()), ("XDG_CONFIG_HOME", xdg.to_str().unwrap()), ("HOME", home.to_str().unwrap())];
    let helper = |action: &str, input: &str| {
        let mut cmd = command(bin.join("docker-credential-tollgate"));
        cmd.arg(action).envs(helper_env);
        crate::rig::run(cmd, Some(input.as_bytes()), &[], Duration::from_secs(60))
    };
    skopeo_push(reg, tmp.path(), "payments/api:1");
    let stored_token = || {
        let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
        assert_eq!(stored[host.as_str()]["username"], "<token>", "{stored}");
        stored[host.as_str()]["secret"].as_str().unwrap().to_string()
    };

    // skopeo, told by its auth file to ask the helper: with no token yet, the helper runs the device login
    // on the terminal (approved at the IdP), then the pull goes on; the next pull asks nobody.
    let authfile = tmp.path().join("auth.json");
    std::fs::write(&authfile, json!({"credHelpers": {host.as_str(): "tollgate"}}).to_string()).unwrap();
    let inspect = || {
        let skopeo = crate::rig::require("skopeo", "skopeo");
        let image = format!("docker://{host}/payments/api:1");
        let words = [
            skopeo.to_str().unwrap(),
            "inspect",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            &image,
        ];
        on_a_terminal(&shell_line(&words), &helper_env, &|code| {
            idp.answer_device(code, CAROL, true).expect("carol approves at the IdP");
        })
    };
    let (ok, screen) = inspect();
    assert!(ok && screen.contains("user code:"), "no token yet: one device login, then the pull:\n{screen}");
    let from_device = stored_token();
    assert!(from_device.starts_with("tgr_"));
    let (ok, screen) = inspect();
    assert!(ok && !screen.contains("user code:"), "a valid token is used without asking:\n{screen}");

    // docker login, with credHelpers naming the helper: the real docker CLI hands carol's identity token to it.
    let docker_config = tmp.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(docker_config.join("config.json"), json!({"credHelpers": {host.as_str(): "tollgate"}}).to_string())
        .unwrap();
    let mut cmd = command(crate::rig::require("docker", "docker.io"));
    cmd.args(["login", "-u", CAROL.0, "--password-stdin", &host])
        .envs(helper_env)
        .env("DOCKER_CONFIG", &docker_config)
        .env("DOCKER_HOST", format!("unix://{}", tmp.path().join("no-daemon.sock").display()));
    crate::rig::run(cmd, Some(format!("{}\n", CAROL.1).as_bytes()), &[CAROL.1], Duration::from_secs(60)).assert_ok();
    let first = stored_token();
    assert!(first.starts_with("tgr_") && first != from_device, "docker login stored its own token");
    let config = std::fs::read_to_string(docker_config.join("config.json")).unwrap();
    assert!(!config.contains("tgr_"), "docker wrote nothing but through the helper: {config}");

    // get: the stored token, still accepted, without any login; list and the protocol's refusals.
    let got = helper("get", &host);
    got.assert_ok();
    assert_eq!(got.json()["Secret"], first.as_str());
    assert_eq!(got.json()["Username"], "<token>");
    assert_eq!(helper("list", "").json()[host.as_str()], "<token>");
    let unknown = helper("get", "no-such-registry.invalid");
    assert!(!unknown.ok && unknown.stdout.contains("credentials not found in native keychain"), "{unknown}");

    // The token is revoked: the next pull logs in once on the terminal, then goes on with the new token.
    let mut cmd = command(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["token", "revoke", "--all", "--config"]).arg(&env.config).env_remove("TOLLGATE_CONFIG");
    crate::rig::run(cmd, None, &[], Duration::from_secs(30)).assert_ok();
    let (ok, screen) = inspect();
    assert!(ok && screen.contains("user code:"), "a revoked token leads to one device login:\n{screen}");
    let second = stored_token();
    assert_ne!(second, first, "the new token is stored");
    let (ok, screen) = inspect();
    assert!(ok && !screen.contains("user code:"), "and used from then on:\n{screen}");

    // tollgate login itself honours credHelpers: the token goes to the helper, not into config.json.
    helper("erase", &host).assert_ok();
    let line = shell_line(&[
        env!("CARGO_BIN_EXE_tollgate"),
        "login",
        &host,
        "--plain-http",
        "--no-browser",
        "--docker-config",
        docker_config.to_str().unwrap(),
    ]);
    let (ok, screen) = on_a_terminal(&line, &helper_env, &|code| {
        idp.answer_device(code, CAROL, true).expect("carol approves at the IdP");
    });
    assert!(ok && screen.contains("stored by docker-credential-tollgate"), "{screen}");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert!(stored[host.as_str()]["secret"].as_str().unwrap().starts_with("tgr_"), "{stored}");
    assert!(!std::fs::read_to_string(docker_config.join("config.json")).unwrap().contains("tgr_"));
}

/// Push an image to `reg` at `repo_tag` as carol, with her IdP password.
fn skopeo_push(reg: &Registry, dir: &Path, repo_tag: &str) {
    Skopeo::new().copy(&image(dir, repo_tag), &reg.docker_ref(repo_tag), Some(CAROL)).assert_ok();
}
