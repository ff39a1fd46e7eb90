//! `tollgate check-config --probe` and `tollgate workload verify`, run as an operator would (the real
//! binary) against a real slapd, a real Redis and the rig's workload issuer: each check's line in words,
//! and the exit status.

use std::path::Path;

use serde_json::json;

use crate::harness::*;
use crate::rig::issuer::{github_claims, jwks_of};
use crate::rig::redis::RedisServer;
use crate::rig::slapd::{PEOPLE, SERVICE_DN};
use crate::rig::*;

const AUDIENCE: &str = "https://registry.test";

/// The real binary (`cli::tollgate`): whether it succeeded, its stdout and its stderr.
fn tollgate(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let o = crate::cli::tollgate(args, stdin);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn probe(config: &Path) -> (bool, String, String) {
    tollgate(&["check-config", "--probe", "--config", config.to_str().unwrap()], None)
}

/// An ldap entry over LDAPS with the rig's CA, both base DNs, and `password_file` for the service account.
fn ldap_entry(slapd: &Slapd, password_file: &Path, user_base: &str) -> String {
    format!(
        "  - type: ldap\n    name: corp\n    url: {}\n    ca_file: {}\n    bind_dn: '{SERVICE_DN}'\n    bind_password_file: {}\n    user_base_dn: '{user_base}'\n    user_filter: '(uid={{username}})'\n    groups: {{ from: search, base_dn: 'ou=groups,dc=example,dc=org' }}\n    connect_timeout: 2s\n    timeout: 2s\n",
        slapd.ldaps_url(),
        slapd.ca_file().display(),
        password_file.display()
    )
}

fn env_with_providers(providers: &str, extra: &str) -> TestEnv {
    TestEnv::with(Opts {
        providers_yaml: Some(format!("providers:\n{providers}")),
        extra_yaml: extra.into(),
        ..Opts::default()
    })
}

#[test]
fn probe_reports_a_directory_bind_and_base_dns_in_words() {
    let slapd = Slapd::start(SlapdOptions::default());
    let good = slapd.service_password_file();
    let env = env_with_providers(&ldap_entry(&slapd, &good, PEOPLE), "");
    let (ok, out, err) = probe(&env.config);
    assert!(ok, "{out}{err}");
    for want in [
        &format!("ok   ldap corp: connect to {} over TLS: connected", slapd.ldaps_url()),
        &format!("ok   ldap corp: bind as {SERVICE_DN}: the service account's password is accepted"),
        &format!("ok   ldap corp: read user_base_dn {PEOPLE}: exists and is readable"),
        "ok   ldap corp: read groups.base_dn ou=groups,dc=example,dc=org: exists and is readable",
        "probe: 4 check(s), 0 failed, 0 warning(s)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // A wrong service password: offline still passes (nothing is contacted), the probe names the cause.
    let wrong = env.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let env = env_with_providers(&ldap_entry(&slapd, &wrong, PEOPLE), "");
    let (ok, out, _) = tollgate(&["check-config", "--config", env.config.to_str().unwrap()], None);
    assert!(ok, "offline check-config contacts nothing: {out}");
    let (ok, out, err) = probe(&env.config);
    assert!(!ok, "{out}");
    let line = out.lines().find(|l| l.contains("bind as")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("FAIL") && line.contains("the bind DN or its password is wrong"), "{line}");
    assert!(line.contains("invalid credentials (rc=49)"), "{line}");
    assert!(!out.contains("read user_base_dn"), "no search after a failed bind: {out}");
    assert!(err.contains("1 probe check(s) failed"), "{err}");

    // A base DN that does not exist.
    let env = env_with_providers(&ldap_entry(&slapd, &good, "ou=nobody,dc=example,dc=org"), "");
    let (ok, out, _) = probe(&env.config);
    assert!(!ok, "{out}");
    let line = out.lines().find(|l| l.contains("read user_base_dn")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("FAIL") && line.contains("the base DN does not exist"), "{line}");
    assert!(line.contains("no such object (rc=32)"), "{line}");

    // A server certificate no configured CA signed: the TLS problem is named.
    let entry = ldap_entry(&slapd, &good, PEOPLE).replace(&format!("    ca_file: {}\n", slapd.ca_file().display()), "");
    let env = env_with_providers(&entry, "");
    let (ok, out, _) = probe(&env.config);
    assert!(!ok, "{out}");
    let line = out.lines().find(|l| l.contains("connect to")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("FAIL") && line.contains("the server's certificate is not trusted"), "{line}");

    // JSON: the same lines, machine-readable.
    let env = env_with_providers(&ldap_entry(&slapd, &wrong, PEOPLE), "");
    let (ok, out, _) =
        tollgate(&["check-config", "--probe", "--format", "json", "--config", env.config.to_str().unwrap()], None);
    assert!(!ok);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["probe"][1]["verdict"], "fail", "{report:#}");
    assert_eq!(report["probe"][1]["subject"], "ldap corp");
}

fn redis_state(url_file: &Path) -> String {
    format!("state:\n  store: redis\n  redis_url_file: {}\n  key_prefix: \"tg-probe:\"\n", url_file.display())
}

#[test]
fn probe_checks_redis_auth_and_fails_on_an_evicting_memory_policy() {
    let redis = RedisServer::start();
    let env = TestEnv::with(Opts { extra_yaml: redis_state(&redis.url_file()), ..Opts::default() });
    let (ok, out, err) = probe(&env.config);
    assert!(ok, "{out}{err}");
    for want in [
        &format!("ok   redis: connect: 127.0.0.1:{} answers", redis.port),
        "ok   redis: AUTH (the password of state.redis_url_file): accepted",
        "ok   redis: PING: PONG",
        "ok   redis: maxmemory-policy: noeviction",
        "ok   redis: read the data-loss epoch key tg-probe:epoch: readable, not set yet",
        "WARN redis: replication: no replica: this Redis is a single point of failure",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(redis.cli(&["EXISTS", "tg-probe:epoch"]).combined().contains('0'), "the probe writes nothing");

    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]).assert_ok();
    let (ok, out, _) = probe(&env.config);
    assert!(ok, "a warning does not fail: {out}");
    let line = out.lines().find(|l| l.contains("maxmemory-policy")).unwrap();
    assert!(line.starts_with("WARN") && line.contains("allkeys-lru") && line.contains("revocations"), "{line}");
    assert!(out.contains("0 failed, 2 warning(s)"), "{out}");
    // With a memory limit the policy evicts for real: tollgate refuses refresh tokens, and the probe fails.
    redis.cli(&["CONFIG", "SET", "maxmemory", "50mb"]).assert_ok();
    let (ok, out, _) = probe(&env.config);
    assert!(!ok, "an evicting Redis fails the probe: {out}");
    let line = out.lines().find(|l| l.contains("maxmemory-policy")).unwrap();
    assert!(
        line.starts_with("FAIL") && line.contains("allkeys-lru with maxmemory 52428800") && line.contains("noeviction"),
        "{line}"
    );

    let wrong = env.path().join("wrong-url");
    std::fs::write(&wrong, format!("redis://:wrong@127.0.0.1:{}/0\n", redis.port)).unwrap();
    let env = TestEnv::with(Opts { extra_yaml: redis_state(&wrong), ..Opts::default() });
    let (ok, out, _) = probe(&env.config);
    assert!(!ok, "{out}");
    let line = out.lines().find(|l| l.contains("AUTH")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("FAIL") && line.contains("refused the password"), "{line}");
    assert!(!out.contains("wrong@"), "the URL's password is never printed: {out}");
}

#[test]
fn probe_fetches_a_workload_issuers_keys_and_names_a_down_issuer() {
    let key = SigningKey::rsa("gha-1");
    let issuer = Issuer::start(&[&key]);
    let entry = format!(
        "  - type: workload\n    name: github\n    issuer: {}\n    audience: {AUDIENCE}\n    timeout: 2s\n",
        issuer.issuer()
    );
    let env = TestEnv::with(Opts { extra_providers_yaml: entry, ..Opts::default() });
    let (ok, out, err) = probe(&env.config);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("ok   workload github: keys of http://")
            && out.contains("1 usable signing key(s): kid gha-1 (RS256)"),
        "{out}"
    );
    issuer.set_down(true);
    let (ok, out, _) = probe(&env.config);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL workload github") && out.contains("HTTP 503"), "{out}");
}

const POLICY: &str = r#"
rules:
  - name: gha-main-pushes
    description: A workflow of acme/<repo> running on main pushes ci/acme/<repo>/**.
    match: { provider: [github], claims: { repository: "acme/{repo}", ref: refs/heads/main } }
    resources: ["ci/acme/{repo}/**"]
    actions: [pull, push]
"#;

/// A config with a `jwks_file` workload provider trusting `key`, and the policy above.
fn verify_env(key: &SigningKey) -> TestEnv {
    let env = TestEnv::with(Opts {
        policy_yaml: Some("policy:\n  paths: [workload-policy.yaml]\n  reload_interval: 0s\n".into()),
        ..Opts::default()
    });
    std::fs::write(env.path().join("workload-policy.yaml"), POLICY).unwrap();
    std::fs::write(env.path().join("jwks.json"), jwks_of(&[key]).to_string()).unwrap();
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "providers:\n",
        &format!(
            "providers:\n  - type: workload\n    name: github\n    issuer: https://token.actions.githubusercontent.com\n    audience: {AUDIENCE}\n    jwks_file: jwks.json\n    username: \"gha:{{repository}}\"\n    groups: {{ fixed: [ci] }}\n"
        ),
    );
    std::fs::write(&env.config, text).unwrap();
    env
}

#[test]
fn workload_verify_prints_the_identity_and_grants_or_the_reason_of_a_refusal() {
    let key = SigningKey::rsa("gha-1");
    let env = verify_env(&key);
    let cfg = env.config.to_str().unwrap();
    let iss = "https://token.actions.githubusercontent.com";
    let good = github_claims(iss, AUDIENCE, "acme/app", "refs/heads/main", "push");
    let token_file = env.path().join("token.jwt");
    std::fs::write(&token_file, key.sign(&good) + "\n").unwrap();
    let (ok, out, err) = tollgate(
        &[
            "workload",
            "verify",
            "--config",
            cfg,
            "--provider",
            "github",
            "--token",
            token_file.to_str().unwrap(),
            "--scope",
            "repository:ci/acme/app/img:push,pull",
            "--scope",
            "repository:ci/other/img:pull",
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    for want in [
        "verified by provider \"github\"",
        "username: gha:acme/app",
        "groups:   ci",
        "  repository: \"acme/app\"",
        "scope:    repository:ci/acme/app/img:push,pull",
        "result:   granted [push, pull]",
        "allowed by gha-main-pushes",
        "scope:    repository:ci/other/img:pull",
        "result:   NOTHING GRANTED",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // The same from standard input, as JSON.
    let (ok, out, _) = tollgate(
        &["workload", "verify", "--config", cfg, "--json", "--scope", "repository:ci/acme/app/img:push"],
        Some(&key.sign(&good)),
    );
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["identity"]["username"], "gha:acme/app");
    assert_eq!(report["scopes"][0]["granted"], json!(["push"]));

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let impostor = SigningKey::rsa("gha-1"); // the same kid, another key
    for (what, token, reason) in [
        (
            "expired",
            key.sign(&with(&|c| {
                c["iat"] = json!(now - 900);
                c["nbf"] = json!(now - 900);
                c["exp"] = json!(now - 600);
            })),
            "the token has expired (exp)",
        ),
        (
            "wrong audience",
            key.sign(&with(&|c| c["aud"] = json!("https://elsewhere.example"))),
            "aud does not contain \"https://registry.test\"",
        ),
        ("another key", impostor.sign(&good), "the signature does not verify with the issuer's keys"),
    ] {
        let (ok, out, err) = tollgate(
            &["workload", "verify", "--config", cfg, "--scope", "repository:ci/acme/app/img:pull"],
            Some(&token),
        );
        assert!(!ok, "{what}: {out}");
        assert!(err.contains(&format!("refused by provider \"github\": {reason}")), "{what}: {err}");
        assert!(!out.contains("granted"), "{what}: nothing is explained for a refused token: {out}");
    }
    let (ok, _, err) = tollgate(&["workload", "verify", "--config", cfg, "--provider", "gitlab"], Some("x"));
    assert!(!ok && err.contains("no type: workload provider of that name; the config has: github"), "{err}");
}

/// An OIDC provider (the rig's npm oidc-provider): discovery naming the configured issuer, its signing keys,
/// and a device login started at its device endpoint; an issuer URL that is not the IdP's fails.
#[test]
fn probe_reports_an_oidc_providers_discovery_keys_and_device_endpoint() {
    use crate::rig::oidc_provider::{OidcProvider, OidcProviderOptions};
    let idp = OidcProvider::start(json!({}), OidcProviderOptions::default());
    let entry = crate::oidc::provider_yaml("kc", &idp, &[]);
    let env = env_with_providers(&entry, "");
    let (ok, out, err) = probe(&env.config);
    assert!(ok, "{out}{err}");
    let issuer = idp.issuer();
    for want in [
        format!("ok   oidc kc: discovery {issuer}/.well-known/openid-configuration: the document names this issuer"),
        "signing key(s)".to_string(),
        "ok   oidc kc: device login at".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }

    // The same IdP under another issuer URL: no discovery document there, and the probe says so.
    let env = env_with_providers(&entry.replace(&issuer, &format!("{issuer}/realms/other")), "");
    let (ok, out, _) = probe(&env.config);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("FAIL oidc kc: discovery {issuer}/realms/other/.well-known/openid-configuration")),
        "{out}"
    );
}
