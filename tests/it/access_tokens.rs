//! Personal and group access tokens against the real `tollgate serve` binary, the real registry 2.8,
//! skopeo and the docker CLI (issue 25).
//!
//! Proven here: a token works with skopeo and `docker login -u anything`, and the registry refuses what is
//! outside its scope even where the rules would let its owner; no refresh token comes out of a token
//! login; creation is refused beyond what the rules give the caller now (403 naming the entry, nothing
//! written), with an access token (403), with a stale refresh token (403), and with an expiry past the cap;
//! a mistyped token is refused without a store read (a counter proves it); an expired and a revoked token
//! are refused with the reason on the audit line; group tokens only by group admins, with the group's
//! ceiling; one `last used` write for a burst of uses; and no secret in the data directory or the log after
//! 100 tokens.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::ops::{sample, Tollgate};
use crate::rig::http::{http_request, HttpResponse};
use crate::rig::*;

/// The config every test here adds: a short max_auth_age (so a stale refresh token can be shown without
/// waiting ten minutes) and `admins` as the group admins.
pub(crate) const ACCESS_YAML: &str = "access_tokens:\n  max_auth_age: 4s\n  group_admins: [admins]\n";

pub(crate) fn env_with(extra: &str) -> TestEnv {
    TestEnv::with(Opts { extra_yaml: format!("{ACCESS_YAML}{extra}"), ..Opts::default() })
}

/// A JSON request to the token API with Basic credentials.
pub(crate) fn api(tg: &Tollgate, method: &str, path: &str, creds: (&str, &str), body: Option<Value>) -> HttpResponse {
    let auth = basic(creds.0, creds.1);
    let mut headers = vec![("Authorization", auth.as_str())];
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    if !bytes.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    http_request(&tg.addr, method, path, &headers, bytes.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Create a token; returns the whole answer.
pub(crate) fn create(tg: &Tollgate, creds: (&str, &str), scope: &[&str], expires: &str) -> HttpResponse {
    let body = json!({"name": "laptop", "scope": scope, "expires": expires});
    api(tg, "POST", "/access-tokens", creds, Some(body))
}

/// Create a token that must be created: (id, secret).
pub(crate) fn created(tg: &Tollgate, creds: (&str, &str), scope: &[&str], expires: &str) -> (String, String) {
    let r = create(tg, creds, scope, expires);
    assert_eq!(r.status, 201, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let secret = v["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("tgp_") && secret.len() == 42, "{secret}");
    (v["id"].as_str().unwrap().to_string(), secret)
}

pub(crate) fn registry_for(tg: &Tollgate, env: &TestEnv) -> Registry {
    registry_at(format!("http://{}/token", tg.addr), env.bundle())
}

fn json_of(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

/// A token request with the token as the Basic password.
fn use_token(tg: &Tollgate, secret: &str, scope: &str) -> HttpResponse {
    tg.token(Some(("anything", secret)), &format!("scope={}", enc(scope)), &[])
}

fn granted(r: &HttpResponse) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, claims) = jwt_parts(json_of(r)["token"].as_str().unwrap());
    claims["access"].as_array().cloned().unwrap_or_default()
}

fn last_audit(tg: &Tollgate) -> Value {
    tg.audit_lines().pop().expect("an audit line")
}

#[test]
fn a_token_works_with_skopeo_and_docker_login_and_the_registry_refuses_beyond_its_scope() {
    let env = env_with("");
    let tg = Tollgate::start(&env, &[]);
    let reg = registry_for(&tg, &env);
    let tmp = tempdir("pat");
    let (id, secret) = created(&tg, ALICE, &["repository:payments/**:pull,push"], "30d");
    let creds = ("anything", secret.as_str());

    let skopeo = Skopeo::new();
    let image = |m: &str| format!("oci:{}:latest", oci_image(tmp.path(), m).display());
    skopeo.copy(&image("one"), &reg.docker_ref("payments/api:1"), Some(creds)).assert_ok();
    skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(creds)).assert_ok();
    // alice may push under users/alice/ by the rules, but the token's scope does not reach there.
    let out = skopeo.copy(&image("two"), &reg.docker_ref("users/alice/x:1"), Some(creds));
    assert!(!out.ok, "a push outside the token's scope went through:\n{out}");
    skopeo.copy(&image("two"), &reg.docker_ref("users/alice/x:1"), Some(ALICE)).assert_ok();
    assert!(!skopeo.inspect(&reg.docker_ref("users/alice/x:1"), Some(creds)).ok, "pull outside the scope");
    assert!(reg.auth_errors().iter().any(|e| e == "insufficient scope"), "the registry refused by scope");

    let docker = DockerCli::new();
    docker.login(reg.addr(), "anything", &secret).assert_ok();

    // No refresh token out of a token login, even when asked for.
    let r = tg.token(Some(creds), "scope=repository:payments/api:pull&offline_token=true", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(json_of(&r).get("refresh_token").is_none(), "{}", r.body);
    let line = last_audit(&tg);
    assert_eq!(line["auth_method"], "access_token", "{line}");
    assert_eq!(line["access_token"], id.as_str(), "{line}");
    assert_eq!(line["subject"], "alice", "{line}");
    assert_eq!(line["refresh_token_issued"], false, "{line}");
    // /whoami with the token explains what the token gets, not what alice would.
    let auth = basic("anything", &secret);
    let who = tg.get(&format!("/whoami?scope={}", enc("repository:users/alice/x:push")), &[("Authorization", &auth)]);
    assert_eq!(who.status, 200, "{}", who.body);
    let v = json_of(&who);
    assert_eq!(v["access_token"]["id"], id.as_str(), "{v}");
    assert_eq!(v["explanations"][0]["granted"], json!([]), "{v}");
    assert_eq!(v["explanations"][0]["actions"][0]["granted"], false, "{v}");
    assert!(!tg.logs().contains(&secret), "the secret is in the log");
}

#[test]
fn creation_is_refused_beyond_the_rules_by_an_access_token_by_a_stale_login_and_past_the_cap() {
    let env = env_with("");
    let tg = Tollgate::start(&env, &[]);
    let file = env.path().join("data/access-tokens.json");

    let r = create(&tg, ALICE, &["repository:payments/**:pull", "repository:prod/**:push"], "30d");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("repository:prod/**:push"), "the refusal names the entry: {}", r.body);
    assert!(!r.body.contains("payments/**"), "only the first entry beyond the rules: {}", r.body);
    assert!(!file.exists(), "nothing written");
    let list = api(&tg, "GET", "/access-tokens", ALICE, None);
    assert_eq!(json_of(&list)["tokens"], json!([]), "{}", list.body);

    let r = create(&tg, ALICE, &["repository:payments/**:pull"], "91d");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("max_lifetime"), "{}", r.body);
    let r = create(&tg, ALICE, &["repository:payments/**:fly"], "1d");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("repository:payments/**:fly"), "{}", r.body);
    let r = api(&tg, "POST", "/access-tokens", ALICE, Some(json!({"name": "x", "scope": []})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!file.exists(), "nothing written by refused requests");

    // An access token cannot make another.
    let (_, secret) = created(&tg, ALICE, &["repository:payments/**:pull"], "1d");
    let r = create(&tg, ("alice", &secret), &["repository:payments/**:pull"], "1d");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("access token"), "{}", r.body);
    let r = api(&tg, "GET", "/access-tokens", ("alice", &secret), None);
    assert_eq!(r.status, 403, "{}", r.body);

    // A refresh token from a fresh password login may create; once older than max_auth_age, it may not.
    let login = tg.token(Some(ALICE), "scope=repository:payments/api:pull&offline_token=true", &[]);
    let refresh = json_of(&login)["refresh_token"].as_str().unwrap().to_string();
    created(&tg, ("alice", &refresh), &["repository:payments/**:pull"], "1d");
    std::thread::sleep(Duration::from_secs(5));
    let r = create(&tg, ("alice", &refresh), &["repository:payments/**:pull"], "1d");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("log in again"), "{}", r.body);
    // ...while it still lists and the password still creates.
    assert_eq!(api(&tg, "GET", "/access-tokens", ("alice", &refresh), None).status, 200);
    created(&tg, ALICE, &["repository:payments/**:pull"], "1d");
    // Bob is no group admin: no group token for him; the admin's group token has the group's ceiling.
    let body = json!({"name": "ci", "scope": ["repository:payments/**:pull,push"], "expires": "1d", "owner": "group:team-payments"});
    let r = api(&tg, "POST", "/access-tokens", BOB, Some(body.clone()));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = api(&tg, "POST", "/access-tokens", ADMIN, Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    let group_secret = json_of(&r)["token"].as_str().unwrap().to_string();
    assert_eq!(json_of(&r)["owner"], "group:team-payments");
    let body =
        json!({"name": "ci", "scope": ["repository:web/**:push"], "expires": "1d", "owner": "group:team-payments"});
    let r = api(&tg, "POST", "/access-tokens", ADMIN, Some(body));
    assert_eq!(r.status, 403, "the group's ceiling, not the admin's: {}", r.body);
    let access = granted(&use_token(&tg, &group_secret, "repository:payments/api:pull,push"));
    assert_eq!(access[0]["actions"], json!(["pull", "push"]), "{access:?}");
}

#[test]
fn a_mistyped_token_costs_no_store_read_and_expired_or_revoked_ones_say_why_in_the_audit() {
    let env = env_with("");
    let tg = Tollgate::start(&env, &[]);
    let (id, secret) = created(&tg, ALICE, &["repository:payments/**:pull"], "3s");
    assert_eq!(granted(&use_token(&tg, &secret, "repository:payments/api:pull")).len(), 1);

    let before = tg.metrics();
    let lookups = sample(&before, "tollgate_access_token_lookups_total");
    let malformed = sample(&before, "tollgate_access_token_logins_total{outcome=\"malformed\"}");
    let mut typo = secret.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let r = use_token(&tg, &typo, "repository:payments/api:pull");
    assert_eq!(r.status, 401, "{}", r.body);
    let after = tg.metrics();
    assert_eq!(sample(&after, "tollgate_access_token_lookups_total"), lookups, "a bad checksum read the store");
    assert_eq!(sample(&after, "tollgate_access_token_logins_total{outcome=\"malformed\"}"), malformed + 1.0);
    // A well-formed token that does not exist is looked up, and refused.
    let unknown = tollgate::token::access::new_secret();
    assert_eq!(use_token(&tg, &unknown, "repository:payments/api:pull").status, 401);
    assert_eq!(sample(&tg.metrics(), "tollgate_access_token_lookups_total"), lookups + 1.0);

    std::thread::sleep(Duration::from_secs(4));
    let r = use_token(&tg, &secret, "repository:payments/api:pull");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!r.body.contains("expired"), "the client gets the usual 401: {}", r.body);
    let line = last_audit(&tg);
    assert_eq!(line["status"], 401, "{line}");
    assert!(line["provider_reason"].as_str().unwrap().contains("expired"), "{line}");
    assert!(line["provider_reason"].as_str().unwrap().contains(&id), "{line}");
    assert!(tg.json_lines().iter().any(|l| l["reason"] == "expired" && l["token"] == id.as_str()), "the log says so");

    let (id, secret) = created(&tg, ALICE, &["repository:payments/**:pull"], "1d");
    let r = api(&tg, "DELETE", &format!("/access-tokens/{id}"), ALICE, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(use_token(&tg, &secret, "repository:payments/api:pull").status, 401);
    assert!(last_audit(&tg)["provider_reason"].as_str().unwrap().contains("revoked"));
    // Bob cannot see or revoke alice's token.
    assert_eq!(api(&tg, "DELETE", &format!("/access-tokens/{id}"), BOB, None).status, 404);
    let m = tg.metrics();
    assert_eq!(sample(&m, "tollgate_access_tokens{state=\"expired\"}"), 1.0);
    assert_eq!(sample(&m, "tollgate_access_tokens{state=\"revoked\"}"), 1.0);
    for outcome in ["expired", "revoked", "unknown", "ok"] {
        assert!(
            sample(&m, &format!("tollgate_access_token_logins_total{{outcome=\"{outcome}\"}}")) >= 1.0,
            "{outcome}"
        );
    }
    assert!(!tg.logs().contains(&secret) && !tg.logs().contains(&typo[4..20]));
}

#[test]
fn a_burst_of_uses_writes_last_used_once_and_no_secret_is_kept_after_a_hundred_tokens() {
    let env = env_with("");
    let tg = Tollgate::start(&env, &[]);
    let (id, secret) = created(&tg, ALICE, &["repository:payments/**:pull"], "1d");
    let started = std::time::Instant::now();
    let mut uses = 0;
    while uses < 1000 {
        assert_eq!(use_token(&tg, &secret, "repository:payments/api:pull").status, 200);
        uses += 1;
    }
    let took = started.elapsed();
    let writes = sample(&tg.metrics(), "tollgate_access_token_last_used_writes_total");
    // At most one write per started minute of the burst (one on any machine faster than 60 s for 1,000).
    let minutes = took.as_secs() / 60 + 1;
    assert!(writes >= 1.0 && writes <= minutes as f64, "{writes} writes for {uses} uses in {took:?}");
    let list = json_of(&api(&tg, "GET", "/access-tokens", ALICE, None));
    let mine = list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert_eq!(mine["last_used"]["address"], "127.0.0.1", "{mine}");
    assert_eq!(mine["state"], "active");
    assert!(mine.get("token").is_none() && !list.to_string().contains(&secret));

    let mut secrets = vec![secret];
    for _ in 0..99 {
        let (_, s) = created(&tg, ALICE, &["repository:payments/**:pull"], "1d");
        assert_eq!(use_token(&tg, &s, "repository:payments/api:pull").status, 200);
        secrets.push(s);
    }
    let m = tg.metrics();
    assert_eq!(sample(&m, "tollgate_access_tokens{state=\"active\"}"), 100.0);
    assert_eq!(sample(&m, "tollgate_access_tokens_expiring_7d"), 100.0, "every one ends within a day");
    let mut at_rest = String::new();
    for entry in walk(&env.path().join("data")) {
        at_rest += &String::from_utf8_lossy(&std::fs::read(entry).unwrap());
    }
    let logs = tg.logs();
    assert!(at_rest.contains(&id), "the store was read");
    for s in &secrets {
        // The random part alone, too: no encoding of the secret may hide it.
        for needle in [s.as_str(), &s[4..36]] {
            assert!(!at_rest.contains(needle), "a secret at rest");
            assert!(!logs.contains(needle), "a secret in the log");
        }
    }
}

/// Every file under `dir`.
pub(crate) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `tollgate` run as a user runs it, with `stdin`; (ok, stdout, stderr).
fn tollgate_cli(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    use std::io::Write as _;
    let mut cmd = std::process::Command::new(crate::ops::tollgate_bin());
    cmd.args(args).env_remove("TOLLGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_cli_creates_lists_rotates_and_revokes_through_the_registrys_tollgate() {
    let env = env_with("");
    let tg = Tollgate::start(&env, &[]);
    let reg = registry_for(&tg, &env);
    let docker = tempdir("docker-config");
    let dc = docker.path().to_str().unwrap();
    let host = reg.addr();
    let login = ["--plain-http", "--login-user", "alice", "--password-stdin", "--docker-config", dc];
    let pw = format!("{}\n", ALICE.1);
    let mut create = vec!["token", "create", host, "--name", "ci laptop", "--scope", "repository:payments/**:pull"];
    create.extend(["--scope", "repository:payments/**:push", "--expires", "7d"]);
    create.extend(login);
    let (ok, secret, err) = tollgate_cli(&create, &pw, &[]);
    assert!(ok, "{err}");
    let secret = secret.trim().to_string();
    assert!(tollgate::token::access::well_formed(&secret), "stdout is the secret alone: {secret:?}");
    assert!(err.contains("shown only now") && !err.contains(&secret), "{err}");
    let access = granted(&use_token(&tg, &secret, "repository:payments/api:pull,push"));
    assert_eq!(access[0]["actions"], json!(["pull", "push"]));

    // Beyond the rules: refused, naming the entry, and the CLI fails.
    let mut beyond =
        vec!["token", "create", host, "--name", "x", "--scope", "repository:prod/**:push", "--expires", "1d"];
    beyond.extend(login);
    let (ok, _, err) = tollgate_cli(&beyond, &pw, &[]);
    assert!(!ok && err.contains("403") && err.contains("repository:prod/**:push"), "{err}");

    let mut list = vec!["token", "list", host, "--json"];
    list.extend(login);
    let (ok, out, err) = tollgate_cli(&list, &pw, &[]);
    assert!(ok, "{err}");
    let tokens: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{out}");
    let id = tokens[0]["id"].as_str().unwrap().to_string();
    assert_eq!(tokens[0]["name"], "ci laptop");

    let mut rotate = vec!["token", "rotate", host, id.as_str(), "--grace", "1h"];
    rotate.extend(login);
    let (ok, new_secret, err) = tollgate_cli(&rotate, &pw, &[]);
    assert!(ok, "{err}");
    let new_secret = new_secret.trim().to_string();
    assert!(tollgate::token::access::well_formed(&new_secret) && new_secret != secret);
    // Both work during the grace.
    assert_eq!(use_token(&tg, &secret, "repository:payments/api:pull").status, 200);
    assert_eq!(use_token(&tg, &new_secret, "repository:payments/api:pull").status, 200);

    let mut revoke = vec!["token", "revoke", "--registry", host, "--id", id.as_str()];
    revoke.extend(login);
    let (ok, out, err) = tollgate_cli(&revoke, &pw, &[]);
    assert!(ok && out.contains(&id), "{out}{err}");
    assert_eq!(use_token(&tg, &secret, "repository:payments/api:pull").status, 401);
    assert_eq!(use_token(&tg, &new_secret, "repository:payments/api:pull").status, 200);

    // Offboarding on the server: every token of alice, refresh and access.
    let config = env.config.to_str().unwrap();
    let (ok, out, err) = tollgate_cli(&["token", "revoke", "--config", config, "--user", "alice"], "", &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("revoked 1 access token(s) of \"alice\""), "{out}");
    assert_eq!(use_token(&tg, &new_secret, "repository:payments/api:pull").status, 401);
}

/// Two replicas on one real Redis sharing the signing key, the refresh secret and the access-token secret.
fn two_replicas(redis: &crate::rig::redis::RedisServer) -> (TestEnv, Tollgate, Tollgate) {
    let state = format!("  redis_url_file: {}\n", redis.url_file().display());
    let env = crate::replicas::replica_env_with(&state, String::new(), "");
    std::fs::write(
        env.path().join("shared/access-token-secret"),
        "an-access-token-secret-shared-by-every-replica-0123",
    )
    .unwrap();
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config += "access_tokens:\n  secret_file: shared/access-token-secret\n  group_admins: [admins]\n";
    std::fs::write(&env.config, config).unwrap();
    let (a, b) = (crate::replicas::replica(&env, "a"), crate::replicas::replica(&env, "b"));
    (env, a, b)
}

/// Every key and value in Redis, as text.
fn redis_dump(redis: &crate::rig::redis::RedisServer) -> String {
    let script = "local out = {} for _, k in ipairs(redis.call('KEYS', '*')) do table.insert(out, k) \
        local t = redis.call('TYPE', k).ok \
        if t == 'string' then table.insert(out, redis.call('GET', k)) \
        elseif t == 'set' then for _, m in ipairs(redis.call('SMEMBERS', k)) do table.insert(out, m) end \
        elseif t == 'hash' then for _, m in ipairs(redis.call('HGETALL', k)) do table.insert(out, m) end end end \
        return out";
    let out = redis.cli(&["EVAL", script, "0"]);
    out.assert_ok();
    out.stdout.clone()
}

#[test]
fn rotation_with_grace_revocation_and_offboarding_hold_on_two_replicas_and_redis_keeps_no_secret() {
    let redis = crate::rig::redis::RedisServer::start();
    let (env, a, b) = two_replicas(&redis);
    let pull = "repository:payments/api:pull";
    let (id, secret) = created(&a, ALICE, &["repository:payments/**:pull"], "1d");
    assert_eq!(use_token(&b, &secret, pull).status, 200, "created on A, used on B");

    // Rotate on A with a grace: the old secret works on both until it ends, the new one at once.
    let r = api(&a, "POST", &format!("/access-tokens/{id}/rotate"), ALICE, Some(json!({"grace": "3s"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let new_secret = json_of(&r)["token"].as_str().unwrap().to_string();
    for t in [&a, &b] {
        assert_eq!(use_token(t, &secret, pull).status, 200, "the old secret within the grace");
        assert_eq!(use_token(t, &new_secret, pull).status, 200, "the new secret");
    }
    std::thread::sleep(Duration::from_secs(4));
    for t in [&a, &b] {
        assert_eq!(use_token(t, &secret, pull).status, 401, "the old secret after the grace");
        assert!(last_audit(t)["provider_reason"].as_str().unwrap().contains("expired"));
        assert_eq!(use_token(t, &new_secret, pull).status, 200);
    }
    let listed = json_of(&api(&b, "GET", "/access-tokens", ALICE, None));
    let old = listed["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert_eq!(old["state"], "expired", "{old}");
    assert!(old["rotated_to"].is_string(), "{old}");

    // Revoked on B: refused on A at its next request.
    let new_id = json_of(&r)["id"].as_str().unwrap().to_string();
    assert_eq!(api(&b, "DELETE", &format!("/access-tokens/{new_id}"), ALICE, None).status, 200);
    assert_eq!(use_token(&a, &new_secret, pull).status, 401);
    assert!(last_audit(&a)["provider_reason"].as_str().unwrap().contains("revoked"));

    // 100 tokens over both replicas, each used on the other; then offboarding through the API (an admin).
    let mut secrets = vec![secret, new_secret];
    for i in 0..100 {
        let (mine, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (_, s) = created(mine, ALICE, &["repository:payments/**:pull"], "1d");
        assert_eq!(use_token(other, &s, pull).status, 200);
        secrets.push(s);
    }
    let r = api(&a, "POST", "/access-tokens/revoke", ALICE, Some(json!({"user": "alice"})));
    assert_eq!(r.status, 403, "only group admins offboard: {}", r.body);
    let r = api(&a, "POST", "/access-tokens/revoke", ADMIN, Some(json!({"user": "alice"})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r)["revoked"].as_array().unwrap().len(), 100, "{}", r.body);
    for s in secrets.iter().rev().take(3) {
        assert_eq!(use_token(&b, s, pull).status, 401);
    }
    let expiring = json_of(&api(&b, "GET", "/access-tokens?all=true", ADMIN, None));
    assert!(expiring["tokens"].as_array().unwrap().len() >= 102);

    let dump = redis_dump(&redis);
    assert!(dump.contains("{atok}:hmac:"), "the dump holds the token keys: {:.300}", dump);
    let mut at_rest = dump;
    for dir in ["data-a", "data-b"] {
        for f in walk(&env.path().join(dir)) {
            at_rest += &String::from_utf8_lossy(&std::fs::read(f).unwrap());
        }
    }
    let logs = a.logs() + &b.logs();
    for s in &secrets {
        for needle in [s.as_str(), &s[4..36]] {
            assert!(!at_rest.contains(needle), "a secret at rest");
            assert!(!logs.contains(needle), "a secret in a log");
        }
    }
}

/// The live ceiling: alice's token, checked against the real slapd on every use (within the identity
/// cache's TTL, 2 s here). Taking her out of her group (ldapmodify) takes push away from the token;
/// disabling her account makes it 401.
#[test]
fn an_ldap_owner_removed_from_her_group_or_disabled_takes_her_token_with_her() {
    use crate::ldap::{provider_entry, Mode};
    use crate::rig::slapd::user_dn;
    let slapd = Slapd::start(SlapdOptions::default());
    let providers = provider_entry("corp", &slapd, Mode::StartTlsMemberOf, "");
    let env = TestEnv::with(Opts {
        providers_yaml: Some(format!("providers:\n{providers}identity_cache:\n  ttl: 2s\n{ACCESS_YAML}")),
        ..Opts::default()
    });
    let tg = Tollgate::start(&env, &[]);
    let alice_pw = Slapd::password("alice");
    let (id, secret) = created(&tg, ("alice", &alice_pw), &["repository:payments/**:pull,push"], "1d");
    let scope = "repository:payments/api:pull,push";
    assert_eq!(granted(&use_token(&tg, &secret, scope))[0]["actions"], json!(["pull", "push"]));

    slapd.remove_member("team-payments", "alice");
    let removed = std::time::Instant::now();
    // Bounded wait: the TTL is 2 s; a loaded machine gets 15 s before this fails.
    loop {
        let access = granted(&use_token(&tg, &secret, scope));
        if access.is_empty() {
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(15),
            "push still granted {:?} after removal",
            removed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Her token never grants more than she has now, even for what its scope names.
    let line = last_audit(&tg);
    assert_eq!((line["access_token"].as_str(), &line["granted"]), (Some(id.as_str()), &json!([])), "{line}");

    slapd.add_member("team-payments", "alice");
    slapd.ldapmodify(&format!(
        "dn: {}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n",
        user_dn("alice")
    ));
    let disabled = std::time::Instant::now();
    loop {
        let r = use_token(&tg, &secret, scope);
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(disabled.elapsed() < Duration::from_secs(15), "a disabled owner's token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    let line = last_audit(&tg);
    assert!(line["provider_reason"].as_str().unwrap().contains("owner refused"), "{line}");
    let m = tg.metrics();
    assert!(sample(&m, "tollgate_access_token_logins_total{outcome=\"owner_refused\"}") >= 1.0);
}

/// The secret-scanning rules on the operator page find real tokens and nothing shorter.
#[test]
fn the_documented_scanning_rules_match_every_token_format() {
    let page = include_str!("../../docs/access-tokens-operators.md");
    let gitleaks = page.split("regex = '''").nth(1).and_then(|r| r.split("'''").next()).expect("a gitleaks regex");
    let github = "tgp_[0-9A-Za-z]{38}";
    assert!(page.contains(&format!("| Secret format | `{github}` |")), "the GitHub pattern is documented");
    for pattern in [gitleaks.to_string(), format!("(?:\\A|[^0-9A-Za-z_]){github}(?:\\z|[^0-9A-Za-z_])")] {
        let re = regex::Regex::new(&pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        for _ in 0..50 {
            let s = tollgate::token::access::new_secret();
            assert!(re.is_match(&format!("password: {s}\n")), "{pattern} misses {s}");
            assert!(!re.is_match(&format!("x{s}")[..s.len()]), "{pattern} matches a cut token");
        }
        assert!(!re.is_match("tgp_short tgr_abc"), "{pattern}");
    }
}

/// The live ceiling for an OIDC owner: her token lives on her IdP login session, re-checked at the IdP
/// (within `identity_cache.ttl`, 2 s here): a group taken away at the IdP shrinks it, and the user deleted
/// at the IdP (the session's refresh refused) makes it 401.
#[test]
fn an_oidc_owner_whose_idp_session_ends_takes_her_token_with_her() {
    use crate::oidc::{keycloak_users, provider_yaml, CAROL};
    let idp = OidcProvider::start(keycloak_users(), OidcProviderOptions::default());
    let env = TestEnv::with(Opts {
        extra_providers_yaml: provider_yaml("keycloak", &idp, &["groups_claim: realm_access.roles"]),
        extra_yaml: format!("identity_cache:\n  ttl: 2s\n{ACCESS_YAML}"),
        ..Opts::default()
    });
    let tg = Tollgate::start(&env, &[]);
    let (_, secret) = created(&tg, CAROL, &["repository:payments/**:pull,push"], "1d");
    let scope = "repository:payments/api:pull,push";
    assert_eq!(granted(&use_token(&tg, &secret, scope))[0]["actions"], json!(["pull", "push"]));

    let mut users = keycloak_users();
    users["carol"]["roles"] = json!(["offline_access"]);
    idp.set_users(users.clone());
    let changed = std::time::Instant::now();
    while !granted(&use_token(&tg, &secret, scope)).is_empty() {
        assert!(changed.elapsed() < Duration::from_secs(15), "the IdP group change never reached the token");
        std::thread::sleep(Duration::from_millis(200));
    }

    users.as_object_mut().unwrap().remove("carol");
    idp.set_users(users);
    let deleted = std::time::Instant::now();
    loop {
        let r = use_token(&tg, &secret, scope);
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(deleted.elapsed() < Duration::from_secs(15), "a deleted IdP user's token still works");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(last_audit(&tg)["provider_reason"].as_str().unwrap().contains("owner refused"));
}
