//! End to end: tollgate as the realm of a real distribution registry 2.8, driven by real clients
//! (skopeo, podman, the docker CLI, containerd's ctr). Every grant here is verified by the registry itself.

use crate::harness::*;
use crate::rig::*;

fn image(dir: &std::path::Path, marker: &str) -> String {
    format!("oci:{}:latest", oci_image(dir, marker).display())
}

/// tollgate, a registry whose realm it is, and a scratch directory. Field order is drop order: the
/// registry stops before tollgate.
struct World {
    reg: Registry,
    tg: Running,
    env: TestEnv,
    tmp: tempfile::TempDir,
}

impl World {
    fn new(opts: Opts) -> World {
        let env = TestEnv::with(opts);
        let tg = env.start();
        let reg = env.registry(&tg);
        World { reg, tg, env, tmp: tempfile::tempdir().unwrap() }
    }

    /// A fresh local image as an `oci:` reference.
    fn image(&self, marker: &str) -> String {
        image(self.tmp.path(), marker)
    }

    /// Push a fresh image to `repo_tag` as `user` with skopeo.
    fn seed(&self, repo_tag: &str, user: (&str, &str)) {
        Skopeo::new().copy(&self.image(repo_tag), &self.reg.docker_ref(repo_tag), Some(user)).assert_ok();
    }
}

/// Fetch an access token from tollgate over HTTP, as a client would.
fn token_for(tollgate: &Running, user: Option<(&str, &str)>, scope: &str) -> String {
    let path = format!("/token?service={SERVICE}&scope={}", enc(scope));
    let auth = user.map(|(u, p)| basic(u, p));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = http_get(&tollgate.addr.to_string(), &path, &headers).expect("tollgate answers");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["token"].as_str().unwrap().to_string()
}

/// A policy denial: the credentials were good, the token lacked the action, and the client says "denied".
fn assert_denied(out: &Output, what: &str) {
    assert!(!out.ok, "{what} should have been denied:\n{out}");
    assert!(out.combined().contains("denied"), "{what}: expected \"denied\":\n{out}");
}

fn assert_refused(out: &Output, what: &str) {
    assert!(!out.ok, "{what} should have been refused:\n{out}");
    let text = out.combined().to_lowercase();
    assert!(
        text.contains("denied")
            || text.contains("unauthorized")
            || text.contains("authentication required")
            || text.contains("invalid username/password"),
        "{what}: expected an authorization error:\n{out}"
    );
}

#[test]
fn skopeo_push_pull_inspect_tags_delete_and_denials_through_registry_2_8() {
    let w = World::new(Opts::default());
    let World { reg, tmp, .. } = &w;
    let skopeo = Skopeo::new();

    skopeo.copy(&image(tmp.path(), "payments-1"), &reg.docker_ref("payments/api:1"), Some(ALICE)).assert_ok();
    skopeo.copy(&image(tmp.path(), "payments-2"), &reg.docker_ref("payments/api:2"), Some(ALICE)).assert_ok();
    let inspect = skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(ALICE));
    inspect.assert_ok();
    assert!(inspect.stdout.contains("\"Digest\""), "{inspect}");
    let mut tags = skopeo.tags(&reg.docker_ref("payments/api"), Some(ALICE));
    tags.sort();
    assert_eq!(tags, vec!["1", "2"]);
    let back = tmp.path().join("pulled");
    skopeo.copy(&reg.docker_ref("payments/api:1"), &format!("oci:{}:x", back.display()), Some(ALICE)).assert_ok();

    // Denials: another team's namespace, a deletion the team rules do not allow, a wrong password.
    assert_denied(
        &skopeo.copy(&image(tmp.path(), "web"), &reg.docker_ref("web/site:1"), Some(ALICE)),
        "alice pushing web/",
    );
    assert_denied(&skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(BOB)), "bob pulling payments/");
    // skopeo prints the registry's own body for a refused DELETE: UNAUTHORIZED with the missing action.
    let delete = skopeo.delete(&reg.docker_ref("payments/api:2"), Some(ALICE));
    assert_refused(&delete, "alice deleting");
    assert!(delete.stderr.contains("Action") && delete.stderr.contains("delete"), "{delete}");
    assert_refused(&skopeo.inspect(&reg.docker_ref("payments/api:1"), Some((ALICE.0, "wrong"))), "a wrong password");
    assert_refused(&skopeo.inspect(&reg.docker_ref("payments/api:1"), None), "anonymous pulling payments/");

    // skopeo delete asks for `*`: granted to admins (every action), so the tag goes away.
    skopeo.delete(&reg.docker_ref("payments/api:2"), Some(ADMIN)).assert_ok();
    assert_eq!(skopeo.tags(&reg.docker_ref("payments/api"), Some(ALICE)), vec!["1"]);

    // The public area: pushed by an admin, pulled anonymously.
    skopeo.copy(&image(tmp.path(), "public"), &reg.docker_ref("public/hello:1"), Some(ADMIN)).assert_ok();
    skopeo.inspect(&reg.docker_ref("public/hello:1"), None).assert_ok();

    assert_eq!(reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");
    assert!(reg.auth_errors().iter().any(|e| e == "insufficient scope"), "denials are the registry's, by scope");
}

#[test]
fn catalog_only_through_its_rule() {
    let w = World::new(Opts::default());
    let World { reg, tg, .. } = &w;
    w.seed("payments/api:1", ALICE);
    let catalog = |user| {
        let token = token_for(tg, user, "registry:catalog:*");
        let auth = format!("Bearer {token}");
        http_get(reg.addr(), "/v2/_catalog", &[("Authorization", &auth)]).expect("registry answers")
    };
    let admin = catalog(Some(ADMIN));
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert!(admin.body.contains("payments/api"), "{}", admin.body);
    let bob = catalog(Some(BOB));
    assert_eq!(bob.status, 401, "{}", bob.body);
    assert!(!bob.body.contains("payments/api"));
}

#[test]
fn podman_login_push_pull_and_denied_push() {
    let w = World::new(Opts::default());
    let World { reg, .. } = &w;
    w.seed("payments/base:1", ALICE);

    let podman = Podman::new();
    podman.login(reg.addr(), ALICE.0, ALICE.1).assert_ok();
    podman.pull(&reg.reference("payments/base:1")).assert_ok();
    podman.tag(&reg.reference("payments/base:1"), &reg.reference("payments/app:2")).assert_ok();
    podman.push(&reg.reference("payments/app:2"), &reg.reference("payments/app:2")).assert_ok();
    podman.tag(&reg.reference("payments/base:1"), &reg.reference("web/app:2")).assert_ok();
    assert_denied(&podman.push(&reg.reference("web/app:2"), &reg.reference("web/app:2")), "podman pushing web/");
    let bad = Podman::new();
    assert_refused(&bad.login(reg.addr(), ALICE.0, "wrong"), "podman login with a wrong password");
    assert_eq!(reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");
}

#[test]
fn docker_login_identity_token_is_used_by_skopeo_and_podman_through_the_refresh_grant() {
    let w = World::new(Opts::default());
    let World { reg, env, tmp, .. } = &w;
    w.seed("payments/api:1", ALICE);

    let docker = DockerCli::new();
    docker.login(reg.addr(), ALICE.0, ALICE.1).assert_ok();
    let config = docker.config_json();
    let entry = &config["auths"][reg.addr()];
    let identity_token =
        entry["identitytoken"].as_str().unwrap_or_else(|| panic!("no identitytoken: {config}")).to_string();
    assert!(identity_token.starts_with("tgr_"));
    assert!(!config.to_string().contains(ALICE.1), "docker dropped the password");

    let authfile = tmp.path().join("auth.json");
    std::fs::write(&authfile, auth_json_identity_token(reg.addr(), ALICE.0, &identity_token)).unwrap();
    let skopeo = Skopeo::with_authfile(&authfile);
    skopeo.inspect(&reg.docker_ref("payments/api:1"), None).assert_ok();
    skopeo.copy(&image(tmp.path(), "dl2"), &reg.docker_ref("payments/api:2"), None).assert_ok();
    assert_refused(
        &skopeo.copy(&image(tmp.path(), "dl3"), &reg.docker_ref("web/api:2"), None),
        "identity token pushing web/",
    );

    let podman = Podman::new();
    std::fs::write(podman.authfile(), auth_json_identity_token(reg.addr(), ALICE.0, &identity_token)).unwrap();
    podman.pull(&reg.reference("payments/api:2")).assert_ok();

    // Revoking every token of alice stops the identity token at once.
    tollgate::store::revocation::FileStore::new(env.settings().revocation_file())
        .revoke_sync(tollgate::store::revocation::Revocation::User {
            username: "alice".into(),
            before_ms: tollgate::support::time::unix_now_ms(),
        })
        .unwrap();
    assert_refused(&skopeo.inspect(&reg.docker_ref("payments/api:1"), None), "a revoked identity token");
    assert_eq!(reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");
}

#[test]
fn containerd_pulls_with_password_grant_and_refresh_token() {
    let w = World::new(Opts::default());
    let World { reg, tg, .. } = &w;
    w.seed("payments/api:1", ALICE);

    Ctr::new().pull(&reg.reference("payments/api:1"), Some(ALICE)).assert_ok();
    assert_refused(
        &Ctr::new().pull(&reg.reference("payments/api:1"), Some((ALICE.0, "wrong"))),
        "ctr with a wrong password",
    );
    assert_refused(&Ctr::new().pull(&reg.reference("payments/api:1"), Some(BOB)), "ctr as bob");

    let refresh = {
        let path = format!("/token?service={SERVICE}&offline_token=true&client_id=test");
        let auth = basic(ALICE.0, ALICE.1);
        let r = http_get(&tg.addr.to_string(), &path, &[("Authorization", &auth)]).unwrap();
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["refresh_token"].as_str().unwrap().to_string()
    };
    Ctr::new().pull_with_refresh(&reg.reference("payments/api:1"), &refresh).assert_ok();
    assert_eq!(reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");
}

#[test]
fn a_disabled_robot_stops_at_once_through_the_registry() {
    let w = World::new(Opts::default());
    let World { reg, env, tmp, .. } = &w;
    let skopeo = Skopeo::new();
    skopeo.copy(&image(tmp.path(), "robot"), &reg.docker_ref("payments/api:1"), Some(ROBOT)).assert_ok();
    assert_refused(&skopeo.delete(&reg.docker_ref("payments/api:1"), Some(ROBOT)), "a robot deleting");
    let text = std::fs::read_to_string(&env.accounts).unwrap();
    replace_file(&env.accounts, &text.replace("    robot: true\n", "    robot: true\n    disabled: true\n"));
    std::thread::sleep(tollgate::identity::accounts::RECHECK_FILE); // how often requests look at the file
    assert_refused(&skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(ROBOT)), "a disabled robot");
    skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(ALICE)).assert_ok();
}

#[test]
fn kid_only_libtrust_and_rs256_x5c_tokens_are_verified_by_registry_2_8() {
    // kid only, libtrust form: the registry finds the key in its rootcertbundle by kid.
    let w = World::new(Opts { header: "kid", ..Opts::default() });
    let (header, _) = jwt_parts(&token_for(&w.tg, Some(ALICE), "repository:payments/api:pull"));
    assert!(header.get("x5c").is_none(), "{header}");
    w.seed("payments/api:1", ALICE);
    assert_eq!(w.reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");

    // RS256 with x5c.
    let keys = tempfile::tempdir().unwrap();
    let (key, crt) = crate::api::openssl_key(keys.path(), "rsa", true);
    let extra = format!("  keys:\n    - key_file: {}\n      cert_file: {}\n", key.display(), crt.display());
    let w = World::new(Opts { extra_token_yaml: extra, ..Opts::default() });
    let (header, _) = jwt_parts(&token_for(&w.tg, Some(ALICE), "repository:payments/api:pull"));
    assert_eq!(header["alg"], "RS256");
    w.seed("payments/api:1", ALICE);
    assert_eq!(w.reg.token_rejections(), Vec::<String>::new(), "the registry rejected a tollgate token");
}

#[test]
fn tokens_from_an_untrusted_key_are_refused_by_the_registry() {
    // The registry trusts env A's key; tollgate B signs with another. This proves the registry really
    // verifies what tollgate signs (the other tests would pass against a registry that checked nothing).
    let trusted = TestEnv::new();
    let other = TestEnv::new();
    let tg = other.start();
    let reg = registry_trusting(&tg, trusted.bundle());
    let tmp = tempfile::tempdir().unwrap();
    assert_refused(
        &Skopeo::new().copy(&image(tmp.path(), "x"), &reg.docker_ref("payments/api:1"), Some(ALICE)),
        "an untrusted key",
    );
    let rejections = reg.token_rejections();
    assert!(!rejections.is_empty(), "the registry should log why it refused");
}

#[test]
fn oversized_requests_over_a_real_socket_are_refused_and_the_server_keeps_serving() {
    use std::io::{Read as _, Write as _};
    let env = TestEnv::new();
    let tg = env.start();
    let send = |raw: Vec<u8>| {
        let mut s = std::net::TcpStream::connect(tg.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&raw);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let huge_header = format!(
        "GET /token?service={SERVICE} HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let reply = send(huge_header.into_bytes());
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 431") || reply.starts_with("HTTP/1.1 400"), "{reply:.200}");
    let huge_uri = format!(
        "GET /token?service={SERVICE}&scope={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let reply = send(huge_uri.into_bytes());
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 4"), "{reply:.200}");
    let body = "a".repeat(1 << 20);
    let big_post = format!("POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let reply = send(big_post.into_bytes());
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply:.200}");
    // Still alive and answering.
    let ok = http_get(&tg.addr.to_string(), "/healthz", &[]).expect("tollgate still answers");
    assert_eq!(ok.status, 200);
}
