//! Tests of the rig itself, against the real tools and without tollgate.
//!
//! If one of these fails, the tollgate tests built on the rig cannot be trusted: fix the rig (or the
//! machine, usually by running `bash scripts/test.sh`, which installs the tools) first. Each test uses
//! its own registry on its own port and its own client dirs, so they run in parallel.

use crate::rig::{
    self, auth_json_basic, auth_json_identity_token, http_get, manifest_digest, oci_image, Ctr, DockerCli, FakeRealm,
    FakeRealmOptions, Podman, RealmRequest, Registry, RegistryOptions, Skopeo, TokenAuth,
};
use std::path::Path;
use std::time::Duration;

/// Test credentials. Open registries ignore them; they must still never show up in messages.
const USER: &str = "alice";
const PASSWORD: &str = "rig-selftest-password";

fn open_registry() -> Registry {
    Registry::start(RegistryOptions::default())
}

fn oci_src(layout: &Path) -> String {
    format!("oci:{}:latest", layout.display())
}

/// Pushes a fresh image with `marker` to `repo_tag` on `reg` with skopeo, anonymously.
fn push_image(reg: &Registry, repo_tag: &str, marker: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = oci_image(tmp.path(), marker);
    Skopeo::new().copy(&oci_src(&layout), &reg.docker_ref(repo_tag), None).assert_ok();
}

/// The marker label `oci_image` put in the config, as `skopeo inspect` reports it.
fn marker_of(reg: &Registry, repo_tag: &str) -> String {
    let info = Skopeo::new().inspect(&reg.docker_ref(repo_tag), None).assert_ok().json();
    info["Labels"]["org.tollgate.rig.marker"]
        .as_str()
        .unwrap_or_else(|| panic!("no marker label in {info:#}"))
        .to_string()
}

#[test]
fn rig_oci_image_is_a_valid_layout_whose_digest_follows_the_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let a = oci_image(tmp.path(), "alpha");
    let b = oci_image(tmp.path(), "beta");
    let tmp2 = tempfile::tempdir().unwrap();
    let a_again = oci_image(tmp2.path(), "alpha");
    assert_ne!(manifest_digest(&a), manifest_digest(&b));
    assert_eq!(manifest_digest(&a), manifest_digest(&a_again), "same marker, same image");

    // Content addressing: every blob is named by its own sha256.
    let blobs = a.join("blobs/sha256");
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(rig::oci::sha256(&std::fs::read(&path).unwrap()), format!("sha256:{name}"));
    }

    // GNU tar accepts the hand-written ustar header (it verifies the checksum) and finds the marker.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(manifest_digest(&a).trim_start_matches("sha256:"))).unwrap())
            .unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
    let layer = blobs.join(manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let tar = rig::require("tar", "tar");
    let mut cmd = rig::command(&tar);
    cmd.arg("-xOf").arg(&layer);
    let out = rig::run(cmd, None, &[], Duration::from_secs(30));
    assert!(out.ok && out.stdout.contains("marker: alpha"), "{out}");
}

#[test]
fn rig_skopeo_pushes_inspects_lists_and_deletes_on_an_open_registry() {
    let reg = open_registry();
    let skopeo = Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = oci_image(tmp.path(), "skopeo-a");
    let b = oci_image(tmp.path(), "skopeo-b");
    skopeo.copy(&oci_src(&a), &reg.docker_ref("team/app:1"), None).assert_ok();
    skopeo.copy(&oci_src(&b), &reg.docker_ref("team/app:2"), None).assert_ok();

    assert_eq!(skopeo.tags(&reg.docker_ref("team/app"), None), ["1", "2"]);
    let info = skopeo.inspect(&reg.docker_ref("team/app:1"), None).assert_ok().json();
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1), "{info:#}");
    assert_eq!(marker_of(&reg, "team/app:1"), "skopeo-a");
    assert_eq!(marker_of(&reg, "team/app:2"), "skopeo-b");

    // Deletion is enabled in the rig's registry config; without it this answers 405 Unsupported.
    skopeo.delete(&reg.docker_ref("team/app:1"), None).assert_ok();
    assert_eq!(skopeo.tags(&reg.docker_ref("team/app"), None), ["2"]);
    skopeo.inspect(&reg.docker_ref("team/app:1"), None).assert_failed();
}

#[test]
fn rig_skopeo_reads_the_auth_file_the_test_wrote() {
    let reg = open_registry();
    push_image(&reg, "team/app:1", "authfile");
    let tmp = tempfile::tempdir().unwrap();

    let good = tmp.path().join("good.json");
    std::fs::write(&good, auth_json_basic(reg.addr(), USER, PASSWORD)).unwrap();
    let out = Skopeo::with_authfile(&good).inspect(&reg.docker_ref("team/app:1"), None);
    out.assert_ok();
    assert!(!out.combined().contains(PASSWORD));

    // A broken file makes skopeo fail while looking up credentials: proof that it reads this file
    // (and not the host's ~/.docker/config.json or $XDG_RUNTIME_DIR/containers/auth.json).
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{ not json").unwrap();
    let out = Skopeo::with_authfile(&broken).inspect(&reg.docker_ref("team/app:1"), None);
    out.assert_failed();
    assert!(out.stderr.contains("broken.json"), "{out}");
}

#[test]
fn rig_podman_logs_in_pulls_tags_and_pushes_to_another_repo() {
    let reg = open_registry();
    push_image(&reg, "team/app:1", "podman");
    let podman = Podman::new();

    let out = podman.login(reg.addr(), USER, PASSWORD);
    out.assert_ok();
    assert!(!out.combined().contains(PASSWORD), "{out}");
    let auth = podman.auth_json().expect("login writes auth.json");
    assert!(auth["auths"][reg.addr()]["auth"].is_string(), "{auth:#}");

    podman.pull(&reg.reference("team/app:1")).assert_ok();
    let copy = reg.reference("other/copy:v2");
    podman.tag(&reg.reference("team/app:1"), &copy).assert_ok();
    podman.push(&copy, &copy).assert_ok();
    assert_eq!(Skopeo::new().tags(&reg.docker_ref("other/copy"), None), ["v2"]);
    assert_eq!(marker_of(&reg, "other/copy:v2"), "podman");

    podman.logout(reg.addr()).assert_ok();
    let auth = podman.auth_json().unwrap_or_default();
    assert!(auth["auths"].get(reg.addr()).is_none(), "{auth:#}");
}

#[test]
fn rig_ctr_pulls_through_the_shared_containerd() {
    let reg = open_registry();
    push_image(&reg, "team/app:1", "ctr");
    let image = reg.reference("team/app:1");

    let ctr = Ctr::new();
    ctr.pull(&image, None).assert_ok();
    assert_eq!(ctr.images(), vec![image.clone()]);

    // Credentials and refresh tokens are accepted by ctr; an open registry never challenges, so they
    // are not sent. Each handle has its own namespace, so each pull really fetches again.
    let with_user = Ctr::new();
    let out = with_user.pull(&image, Some((USER, PASSWORD)));
    out.assert_ok();
    assert!(!out.command.contains(PASSWORD), "{out}");
    let with_refresh = Ctr::new();
    with_refresh.pull_with_refresh(&image, "rig-refresh-token").assert_ok();
    assert_eq!(with_refresh.images(), vec![image.clone()]);
    assert_ne!(ctr.namespace(), with_refresh.namespace());

    // The isolated content store makes every namespace download the layer itself: three pulls, three
    // GETs of the blobs (what a token test relies on to see each client authenticate).
    let config_gets = reg.log().lines().filter(|l| l.contains("GET /v2/team/app/blobs/")).count();
    assert!(config_gets >= 3, "only {config_gets} blob GETs:\n{}", reg.log());
}

#[test]
fn rig_docker_cli_logs_in_without_a_daemon() {
    let reg = open_registry();
    let docker = DockerCli::new();
    let out = docker.login(reg.addr(), USER, PASSWORD);
    out.assert_ok();
    assert!(out.stdout.contains("Login Succeeded"), "{out}");
    assert!(!out.combined().contains(PASSWORD), "{out}");

    use base64::Engine as _;
    let config = docker.config_json();
    let stored = config["auths"][reg.addr()]["auth"].as_str().unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD.decode(stored).unwrap_or_default();
    assert_eq!(
        decoded,
        format!("{USER}:{PASSWORD}").as_bytes(),
        "config.json holds the login (not a credential helper)"
    );

    docker.logout(reg.addr()).assert_ok();
    assert!(docker.config_json()["auths"].get(reg.addr()).is_none());
}

fn token_auth(dir: &Path) -> TokenAuth {
    TokenAuth {
        realm: "http://127.0.0.1:1/token".into(),
        service: "registry.test".into(),
        issuer: "rig-issuer".into(),
        rootcertbundle: Some(rig::realm::self_signed_p256(dir).1),
        jwks: None,
    }
}

#[test]
fn rig_registry_with_token_auth_challenges_and_refuses_anonymous_push() {
    let tmp = tempfile::tempdir().unwrap();
    let mut auth = token_auth(tmp.path());
    // Registry 2.8 ignores the v3 `jwks` option rather than refusing to start.
    let jwks = tmp.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    auth.jwks = Some(jwks);
    let reg = Registry::start(RegistryOptions { auth: Some(auth), ..Default::default() });

    let r = http_get(reg.addr(), "/v2/", &[]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="http://127.0.0.1:1/token",service="registry.test""#)
    );
    let r = http_get(reg.addr(), "/v2/team/app/manifests/1", &[]).unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some_and(|h| h.contains(r#"scope="repository:team/app:pull""#)), "{r:?}");

    // A token the registry cannot parse is refused, and the log says why.
    let r = http_get(reg.addr(), "/v2/", &[("Authorization", "Bearer not-a-jwt")]).unwrap();
    assert_eq!(r.status, 401);
    assert!(reg.auth_errors().iter().any(|e| e == "malformed token"), "{:?}", reg.auth_errors());

    let tmp_img = tempfile::tempdir().unwrap();
    let layout = oci_image(tmp_img.path(), "refused");
    let out = Skopeo::new().copy(&oci_src(&layout), &reg.docker_ref("team/app:1"), None);
    out.assert_failed();
    // skopeo followed the challenge to the (dead) realm.
    assert!(out.stderr.contains("127.0.0.1:1"), "{out}");
}

/// A registry that trusts a fake realm (real ES256 tokens, any scope for the right password).
fn realm_and_registry() -> (FakeRealm, Registry) {
    let realm = FakeRealm::start(FakeRealmOptions::default());
    let reg = Registry::start(RegistryOptions { auth: Some(realm.token_auth()), ..Default::default() });
    (realm, reg)
}

/// The requests the realm received after the first `since`.
fn requests_since(realm: &FakeRealm, since: usize) -> Vec<RealmRequest> {
    realm.requests().into_iter().skip(since).collect()
}

#[test]
fn rig_token_auth_skopeo_and_podman_authenticate_with_a_password() {
    let (realm, reg) = realm_and_registry();
    let o = realm.options().clone();
    let creds = Some((o.user.as_str(), o.password.as_str()));
    let tmp = tempfile::tempdir().unwrap();
    let layout = oci_image(tmp.path(), "token-skopeo");

    let skopeo = Skopeo::new();
    skopeo.copy(&oci_src(&layout), &reg.docker_ref("team/app:1"), creds).assert_ok();
    assert_eq!(skopeo.tags(&reg.docker_ref("team/app"), creds), ["1"]);
    let push = realm
        .requests()
        .into_iter()
        .find(|r| r.param("scope").is_some_and(|s| s.contains("push")))
        .expect("skopeo asked for a push scope");
    assert_eq!((push.method.as_str(), push.grant()), ("GET", "basic"));
    assert_eq!(push.param("service"), Some("registry.test"));

    let podman = Podman::new();
    podman.login(reg.addr(), &o.user, &o.password).assert_ok();
    podman.pull(&reg.reference("team/app:1")).assert_ok();

    // The realm refuses a wrong password; the client only says "unauthorized" or similar.
    let before = realm.requests().len();
    skopeo.inspect(&reg.docker_ref("team/app:1"), Some((&o.user, "wrong"))).assert_failed();
    assert!(requests_since(&realm, before).iter().any(|r| r.status == 401), "{:?}", realm.requests());
}

#[test]
fn rig_token_auth_docker_login_identity_token_works_for_skopeo_and_ctr() {
    let (realm, reg) = realm_and_registry();
    let o = realm.options().clone();
    let tmp = tempfile::tempdir().unwrap();
    let layout = oci_image(tmp.path(), "token-docker");
    Skopeo::new().copy(&oci_src(&layout), &reg.docker_ref("team/app:1"), Some((&o.user, &o.password))).assert_ok();

    // docker login (no daemon) stores the realm's refresh token as `identitytoken`, not the password.
    let before = realm.requests().len();
    let docker = DockerCli::new();
    docker.login(reg.addr(), &o.user, &o.password).assert_ok();
    let entry = docker.config_json()["auths"][reg.addr()].clone();
    assert_eq!(entry["identitytoken"].as_str(), Some(o.refresh_token.as_str()), "{entry:#}");
    let login = requests_since(&realm, before);
    assert!(
        login.iter().any(|r| r.grant() == "basic" && r.param("offline_token") == Some("true")),
        "docker login asks for a refresh token with offline_token=true: {login:#?}"
    );

    // docker keeps the user name, without password, next to the token: `auth` = base64("alice:").
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str().unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(auth, format!("{}:", o.user).as_bytes());

    // skopeo with an auth file holding only that token: OAuth2 refresh grant.
    let authfile = tmp.path().join("auth.json");
    std::fs::write(&authfile, auth_json_identity_token(reg.addr(), &o.user, &o.refresh_token)).unwrap();
    let before = realm.requests().len();
    let out = Skopeo::with_authfile(&authfile).inspect(&reg.docker_ref("team/app:1"), None);
    let used = requests_since(&realm, before);
    assert!(out.ok, "{out}\n{used:#?}");
    assert!(used.iter().any(|r| r.method == "POST" && r.grant() == "refresh_token" && r.status == 200), "{used:#?}");

    // ctr: --refresh sends the refresh grant, --user the password grant (both POST).
    let image = reg.reference("team/app:1");
    let before = realm.requests().len();
    Ctr::new().pull_with_refresh(&image, &o.refresh_token).assert_ok();
    let used = requests_since(&realm, before);
    assert!(used.iter().all(|r| r.method == "POST" && r.grant() == "refresh_token"), "{used:#?}");
    let before = realm.requests().len();
    Ctr::new().pull(&image, Some((&o.user, &o.password))).assert_ok();
    let used = requests_since(&realm, before);
    assert!(used.iter().all(|r| r.method == "POST" && r.grant() == "password"), "{used:#?}");
}

#[test]
#[should_panic(expected = "rootcertbundle")]
fn rig_registry_2_8_refuses_token_auth_without_rootcertbundle() {
    let tmp = tempfile::tempdir().unwrap();
    let jwks = tmp.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys":[]}"#).unwrap();
    let auth = TokenAuth { rootcertbundle: None, jwks: Some(jwks), ..token_auth(tmp.path()) };
    // Panics in `start` with the registry's log, which names the missing option.
    let _reg = Registry::start(RegistryOptions { auth: Some(auth), ..Default::default() });
}

#[test]
fn rig_parallel_registries_get_distinct_ports() {
    // Each registry lives on the thread that started it (see `Registry`: not `Send`, because
    // PDEATHSIG would kill it when a helper thread returned); the barrier keeps all four alive at once.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let reg = open_registry();
                barrier.wait();
                let status = http_get(reg.addr(), "/v2/", &[]).map(|r| r.status);
                barrier.wait();
                (reg.addr().to_string(), status)
            })
        })
        .collect();
    let mut addrs = Vec::new();
    for h in handles {
        let (addr, status) = h.join().unwrap();
        assert_eq!(status, Ok(200), "{addr}");
        addrs.push(addr);
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 4, "{addrs:?}");
}

#[test]
fn rig_versions_reports_every_tool() {
    let versions = rig::versions();
    for tool in ["docker-registry", "skopeo", "podman", "ctr", "containerd", "docker"] {
        let v = versions.get(tool).unwrap_or_else(|| panic!("{tool} missing"));
        assert!(v.starts_with(|c: char| c.is_ascii_digit()), "{tool}: {v:?}");
    }
    // The client matrix, visible with --nocapture.
    eprintln!("tool versions: {versions:?}");
}

#[test]
fn rig_run_times_out_and_redacts_secrets() {
    let mut cmd = rig::command("sh");
    cmd.args(["-c", "echo token=rig-secret-xyz; sleep 30"]);
    let out = rig::run(cmd, None, &["rig-secret-xyz"], Duration::from_millis(300));
    assert!(!out.ok && out.timed_out, "{out}");
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
    let shown = out.to_string();
    assert!(!shown.contains("rig-secret-xyz"), "{shown}");
    assert!(shown.contains("token=***") && shown.contains("KILLED"), "{shown}");
}

/// The Samba AD DC rig: provisioned privately, TLS with an IP subjectAltName (ldap-utils checks it with
/// `LDAPTLS_REQCERT=demand`), the directory the AD tests rely on, each account-state helper producing the
/// sub-code Active Directory gives for it, and a stop and restart on the same address.
#[test]
fn rig_samba_dc_provisions_builds_the_directory_and_answers_with_ad_sub_codes() {
    let started = std::time::Instant::now();
    let mut dc = rig::SambaDc::start();
    eprintln!("samba AD DC at {}: provisioned in {:?}, ready in {:?}", dc.ip, dc.provision_time, started.elapsed());
    let ok = |dc: &rig::SambaDc, user: &str| dc.bind_as(user, &rig::SambaDc::password(user));
    ok(&dc, "alice").assert_ok();
    let wrong = dc.bind_as("alice", "not-her-password");
    assert!(wrong.combined().contains("data 52e"), "{wrong}");
    // memberOf: direct groups only, never the primary group; nesting is not in it.
    let member_of = |user: &str| {
        let out = dc.admin_search(&rig::SambaDc::user_dn(user), "base", "(objectClass=*)", &["memberOf"]);
        out.assert_ok();
        let mut v: Vec<String> =
            out.stdout.lines().filter_map(|l| l.strip_prefix("memberOf: ")).map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(member_of("carol"), [format!("CN=payments-leads,{}", rig::samba::GROUPS)]);
    assert_eq!(
        member_of("mallory"),
        [format!("CN=Guests,CN=Builtin,{}", rig::samba::BASE), format!("CN=admins,{}", rig::samba::CONTRACTORS)]
    );
    assert_eq!(member_of("frank").len(), 2, "frank is in both CN=admins groups");
    let smith = dc.admin_search(rig::samba::STAFF, "sub", "(sAMAccountName=smithj)", &["dn"]);
    assert!(smith.stdout.contains(&rig::SambaDc::user_dn("smithj")), "{smith}");
    // Each state helper, and the sub-code AD gives for it with the right password.
    for (user, change, code) in [
        ("dave", rig::SambaDc::disable as fn(&rig::SambaDc, &str), "data 533"),
        ("expired", rig::SambaDc::expire, "data 701"),
        ("mustchange", rig::SambaDc::must_change_password, "data 773"),
        ("hours", rig::SambaDc::no_logon_hours, "data 530"),
        ("roamer", rig::SambaDc::only_from_workstation, "data 531"),
        ("locked", rig::SambaDc::lock_out, "data 775"),
    ] {
        ok(&dc, user).assert_ok();
        change(&dc, user);
        let refused = ok(&dc, user);
        assert!(!refused.ok && refused.combined().contains(code), "{user}: expected {code}:\n{refused}");
    }
    dc.stop();
    assert!(!ok(&dc, "alice").ok, "the DC is stopped");
    dc.start_again();
    ok(&dc, "alice").assert_ok();
}
