//! Access ends within seconds of its end at the source, on every replica (issue 26): two real `tollgate
//! serve` replicas sharing a real `redis-server`, the npm oidc-provider rig as the IdP.
//!
//! Proven here: `POST /invalidate` (and `tollgate invalidate`) for a user at T0 drops the user's cached
//! logins and refuses their refresh tokens on BOTH replicas (waited for with a 2 s bound; the measured time
//! is printed); a replica whose stream connection is cut, or that finds a message missing, drops its whole
//! cache; a back-channel logout from the IdP ends the user's session on both replicas; logout tokens with
//! a forged signature, a wrong audience, no `sub`/`sid`, a `nonce` or a replayed `jti` get 400 and change
//! nothing; a wrong bearer secret gets 401 and changes nothing; a Shared Signals transmitter's signed
//! `account-disabled` event ends the account on both replicas, while forged tokens get the RFC 8935 error
//! and unknown events or subjects change nothing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::ops::{sample, tollgate_bin, Tollgate};
use crate::rig::http::{http_request, HttpResponse};
use crate::rig::oidc_provider::CLIENT_ID;
use crate::rig::redis::RedisServer;
use crate::rig::{OidcProvider, OidcProviderOptions};

const ERIN: (&str, &str) = ("erin", "erin-idp-password");
/// Erin (role team-payments) may push and pull payments/** (the example policy's `team-namespaces`).
const PULL: &str = "scope=repository:payments/app:pull,push";
const SECRET: &str = "invalidation-secret-for-the-tests-0123456789";
/// The promise: no grant after T0 + 2 s on any replica.
const PROMISE: Duration = Duration::from_secs(2);

fn idp() -> OidcProvider {
    OidcProvider::start(
        json!({"erin": {"password": ERIN.1, "roles": ["team-payments"], "groups": ["/team-payments"]}}),
        OidcProviderOptions::default(),
    )
}

fn keycloak(idp: &OidcProvider) -> String {
    format!(
        "  - type: oidc\n    name: keycloak\n    issuer: {}\n    client_id: {CLIENT_ID}\n    client_secret_file: {}\n    groups_claim: realm_access.roles\n",
        idp.issuer(),
        idp.secret_file().display()
    )
}

/// Two replicas' shared config: one key, one refresh secret, state in `redis`, the invalidation secret.
fn env(redis: &RedisServer, providers: String) -> TestEnv {
    env_with(redis, providers, "")
}

/// [`env`], with more `token:` keys.
fn env_with(redis: &RedisServer, providers: String, token_yaml: &str) -> TestEnv {
    env_from(redis, Opts { extra_providers_yaml: providers, ..Opts::default() }, token_yaml)
}

/// [`env_with`] on `base` (its providers).
fn env_from(redis: &RedisServer, base: Opts, token_yaml: &str) -> TestEnv {
    let env = TestEnv::with(Opts {
        extra_token_yaml: format!(
            "{token_yaml}  keys:\n    - key_file: shared/signing.key\n      cert_file: shared/signing.crt\n"
        ),
        extra_yaml: format!(
            "refresh_tokens:\n  secret_file: shared/refresh-secret\n\
             state:\n  store: redis\n  redis_url_file: {}\n  key_prefix: \"tg-inval:\"\n  command_timeout: 500ms\n\
             invalidation:\n  secret_file: shared/invalidation-secret\n",
            redis.url_file().display()
        ),
        ..base
    });
    let shared = env.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    tollgate::token::keys::generate_key_files(&shared.join("signing.key"), &shared.join("signing.crt"), "inval")
        .expect("key");
    std::fs::write(shared.join("refresh-secret"), "a-refresh-secret-shared-by-every-replica-0123456789").unwrap();
    std::fs::write(shared.join("invalidation-secret"), SECRET).unwrap();
    env
}

fn replica(env: &TestEnv, name: &str) -> Tollgate {
    let data = env.path().join(format!("data-{name}"));
    Tollgate::start(env, &[("TOLLGATE_SERVER__DATA_DIR", data.to_str().unwrap())])
}

/// A Basic login for PULL; with `offline`, a refresh token too.
fn login(t: &Tollgate, user: (&str, &str), offline: bool) -> HttpResponse {
    let extra =
        if offline { format!("&offline_token=true&client_id=docker&account={}", user.0) } else { String::new() };
    t.token(Some(user), &format!("{PULL}{extra}"), &[])
}

fn refresh_token(t: &Tollgate, user: (&str, &str)) -> String {
    let r = login(t, user, true);
    assert_eq!(r.status, 200, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    body["refresh_token"].as_str().expect("a refresh token").to_string()
}

fn use_refresh(t: &Tollgate, user: &str, refresh: &str) -> HttpResponse {
    t.token(Some((user, refresh)), PULL, &[])
}

/// The actions a token answer grants on payments/app, sorted.
fn granted(r: &HttpResponse) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let (_, claims) = jwt_parts(body["token"].as_str().expect("token"));
    claims["access"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(String::from))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn invalidate(t: &Tollgate, secret: &str, body: serde_json::Value) -> HttpResponse {
    let auth = format!("Bearer {secret}");
    let h = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    http_request(&t.addr, "POST", "/invalidate", &h, body.to_string().as_bytes()).expect("POST /invalidate")
}

/// Poll `check` until it holds, at most `bound`; the time it took.
fn within(what: &str, bound: Duration, check: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if check() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn misses(t: &Tollgate, provider: &str) -> f64 {
    sample(&t.metrics(), &format!("tollgate_identity_cache_misses_total{{provider=\"{provider}\"}}"))
}

#[test]
fn invalidating_a_user_drops_cached_logins_and_refuses_refresh_tokens_on_both_replicas_within_2s() {
    let idp = idp();
    let redis = RedisServer::start();
    let env = env(&redis, keycloak(&idp));
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));

    let refresh = refresh_token(&a, ERIN);
    for t in [&a, &b] {
        assert_eq!(granted(&login(t, ERIN, false)), ["pull", "push"], "erin may push");
        assert_eq!(use_refresh(t, ERIN.0, &refresh).status, 200);
    }
    // Erin leaves the team at the IdP. Each replica has her login cached: without an invalidation both
    // would go on granting the pull until the cache expires.
    idp.set_users(json!({"erin": {"password": ERIN.1, "roles": [], "groups": []}}));
    assert_eq!(granted(&login(&b, ERIN, false)), ["pull", "push"], "B still has erin's old groups cached");

    let t0 = Instant::now();
    let r = invalidate(&a, SECRET, json!({"user": "erin"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((report["refresh_tokens_refused"].as_bool(), report["fanout"].as_str()), (Some(true), Some("redis")));
    for (name, t) in [("A", &a), ("B", &b)] {
        within(
            &format!("{name} refuses erin's old refresh token and grants her cached login nothing"),
            PROMISE,
            || use_refresh(t, ERIN.0, &refresh).status == 401 && granted(&login(t, ERIN, false)).is_empty(),
        );
        println!("replica {name}: T0 -> refused in {} ms (POST /invalidate on A)", t0.elapsed().as_millis());
    }
    let lag = sample(&b.metrics(), "tollgate_invalidation_propagation_seconds_count");
    assert!(lag >= 1.0, "B observed the message's propagation lag");
    let audit = a.audit_lines().into_iter().find(|l| l["message"] == "invalidation").expect("an audit line");
    assert_eq!((audit["source"].as_str(), audit["outcome"].as_str()), (Some("api"), Some("ok")), "{audit}");
    assert_eq!(
        sample(&a.metrics(), "tollgate_invalidations_total{source=\"api\",outcome=\"ok\"}"),
        1.0,
        "{}",
        a.metrics()
    );
    // A token issued after the invalidation works: the moment is to the millisecond.
    let fresh = refresh_token(&b, ERIN);
    assert_eq!(use_refresh(&a, ERIN.0, &fresh).status, 200);

    // A wrong secret: 401, nothing changed.
    let r = invalidate(&a, "not-the-secret", json!({"user": "erin"}));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("Bearer"), "{}", r.body);
    assert_eq!(use_refresh(&b, ERIN.0, &fresh).status, 200, "a refused request changed nothing");
    let r = invalidate(&a, SECRET, json!({"user": "erin", "group": "x"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("exactly one subject"), "{}", r.body);
    assert_eq!(use_refresh(&b, ERIN.0, &fresh).status, 200, "a bad request changed nothing");
}

#[test]
fn the_cli_invalidates_through_the_endpoint_and_both_replicas_refuse() {
    let redis = RedisServer::start();
    let env = env(&redis, String::new());
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let refresh = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&b, ALICE.0, &refresh).status, 200);
    let before = misses(&b, "local");
    let t0 = Instant::now();
    let out = crate::rig::command(tollgate_bin())
        .args(["invalidate", "--config"])
        .arg(&env.config)
        .args(["--user", "alice", "--url", &format!("http://{}/invalidate", a.addr)])
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("tollgate invalidate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"source\":\"cli\""), "{stdout}");
    within("B refuses alice's refresh token", PROMISE, || use_refresh(&b, ALICE.0, &refresh).status == 401);
    println!("CLI: T0 -> refused on B in {} ms", t0.elapsed().as_millis());
    assert_eq!(login(&b, ALICE, false).status, 200, "alice can log in again");
    assert!(misses(&b, "local") > before, "B's cached login of alice was dropped: the password was checked again");
}

/// The ids of the replicas' stream connections.
fn stream_clients(redis: &RedisServer) -> Vec<String> {
    let list = redis.cli(&["CLIENT", "LIST"]);
    list.assert_ok();
    list.stdout
        .lines()
        .filter(|l| l.contains("name=tollgate-inval"))
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("id=")).map(String::from))
        .collect()
}

fn full_drops(t: &Tollgate, reason: &str) -> f64 {
    sample(&t.metrics(), &format!("tollgate_invalidation_full_drops_total{{reason=\"{reason}\"}}"))
}

#[test]
fn a_replica_that_lost_its_stream_or_missed_a_message_drops_its_whole_cache() {
    let redis = RedisServer::start();
    let env = env(&redis, String::new());
    let (_a, b) = (replica(&env, "a"), replica(&env, "b"));
    within("both replicas read the stream", Duration::from_secs(10), || stream_clients(&redis).len() == 2);

    assert_eq!(login(&b, ALICE, false).status, 200);
    let cached = misses(&b, "local");
    assert_eq!(login(&b, ALICE, false).status, 200);
    assert_eq!(misses(&b, "local"), cached, "alice's login is cached on B");

    // Cut the stream connections: B reconnects, and drops everything it had cached meanwhile.
    for id in stream_clients(&redis) {
        redis.cli(&["CLIENT", "KILL", "ID", &id]).assert_ok();
    }
    within("B reconnected and dropped its cache", Duration::from_secs(10), || full_drops(&b, "reconnected") >= 1.0);
    assert_eq!(sample(&b.metrics(), "tollgate_invalidation_stream_up"), 1.0, "B reads the stream again");
    assert_eq!(login(&b, ALICE, false).status, 200);
    assert_eq!(misses(&b, "local"), cached + 1.0, "alice's cached login was dropped: her password was checked again");

    // A message B never saw (trimmed from the stream before B read it): the next sequence number is not
    // the one B expects, so B drops everything rather than trust what it has.
    assert_eq!(login(&b, ALICE, false).status, 200);
    let cached = misses(&b, "local");
    let xadd = redis.cli(&["XADD", "tg-inval:{inval}:stream", "*", "seq", "999999", "msg", "{}"]);
    xadd.assert_ok();
    within("B noticed the gap", Duration::from_secs(10), || full_drops(&b, "trimmed") >= 1.0);
    assert_eq!(login(&b, ALICE, false).status, 200);
    assert_eq!(misses(&b, "local"), cached + 1.0, "the gap dropped alice's cached login");
}

/// POST a logout token to `t`'s back-channel logout endpoint for the keycloak provider.
fn logout(t: &Tollgate, token: &str) -> HttpResponse {
    let body = form_urlencoded::Serializer::new(String::new()).append_pair("logout_token", token).finish();
    let h = [("Content-Type", "application/x-www-form-urlencoded")];
    http_request(&t.addr, "POST", "/oidc/keycloak/backchannel-logout", &h, body.as_bytes()).expect("POST logout")
}

/// `claims` signed by the IdP's key (or, `forge`, by another key under the same kid).
fn signed(idp: &OidcProvider, claims: serde_json::Value, forge: bool) -> String {
    let body = json!({"claims": claims, "forge": forge}).to_string();
    let r = http_request(&idp.addr(), "POST", "/rig/sign", &[("Content-Type", "application/json")], body.as_bytes())
        .expect("rig sign");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["token"].as_str().unwrap().to_string()
}

fn logout_claims(idp: &OidcProvider, jti: &str) -> serde_json::Value {
    let now = tollgate::support::time::unix_now();
    json!({"iss": idp.issuer(), "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": jti, "sub": "erin",
           "events": {"http://schemas.openid.net/event/backchannel-logout": {}}})
}

#[test]
fn a_back_channel_logout_at_the_idp_ends_the_session_on_both_replicas_and_bad_logout_tokens_change_nothing() {
    let idp = idp();
    let redis = RedisServer::start();
    let env = env(&redis, keycloak(&idp));
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let refresh = refresh_token(&a, ERIN);
    for t in [&a, &b] {
        assert_eq!(use_refresh(t, ERIN.0, &refresh).status, 200, "both replicas have erin's session");
    }

    // Each of these is refused with a 400 naming the problem; erin's session goes on.
    let mut no_subject = logout_claims(&idp, "t-none");
    no_subject.as_object_mut().unwrap().remove("sub");
    let mut nonce = logout_claims(&idp, "t-nonce");
    nonce["nonce"] = json!("n-1");
    let mut audience = logout_claims(&idp, "t-aud");
    audience["aud"] = json!("another-client");
    let mut no_event = logout_claims(&idp, "t-event");
    no_event["events"] = json!({});
    let cases = [
        ("bad signature", signed(&idp, logout_claims(&idp, "t-forged"), true)),
        ("wrong audience", signed(&idp, audience, false)),
        ("neither sub nor sid", signed(&idp, no_subject, false)),
        ("nonce", signed(&idp, nonce, false)),
        ("backchannel-logout", signed(&idp, no_event, false)),
        ("not a signed JWT", "not-a-jwt".to_string()),
    ];
    for (why, token) in &cases {
        let r = logout(&a, token);
        assert_eq!(r.status, 400, "{why}: {}", r.body);
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("a JSON error");
        assert!(body["error_description"].as_str().unwrap().contains(why), "{why}: {body}");
    }
    // A valid token about a subject tollgate does not know: accepted, nothing to end. Sent again: replayed.
    let mut stranger = logout_claims(&idp, "t-replay");
    stranger["sub"] = json!("someone-else");
    let token = signed(&idp, stranger, false);
    assert_eq!(logout(&a, &token).status, 200);
    let r = logout(&b, &token);
    assert_eq!(r.status, 400, "the replayed jti is refused by the other replica too: {}", r.body);
    assert!(r.body.contains("replayed"), "{}", r.body);
    for t in [&a, &b] {
        assert_eq!(use_refresh(t, ERIN.0, &refresh).status, 200, "no refused logout token changed anything");
    }

    // The IdP ends erin's session (an administrator's logout): oidc-provider posts its own logout token to A.
    let t0 = Instant::now();
    let uri = format!("http://{}/oidc/keycloak/backchannel-logout", a.addr);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs([("user", "erin"), ("uri", &uri)]).finish();
    let h = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http_request(&idp.addr(), "POST", "/rig/logout", &h, body.as_bytes()).expect("rig logout");
    let sent: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(sent["sent"], 1, "tollgate answered the IdP's logout token with 200: {sent}");
    for (name, t) in [("A", &a), ("B", &b)] {
        within(&format!("{name} refuses the ended session's refresh token"), PROMISE, || {
            use_refresh(t, ERIN.0, &refresh).status == 401
        });
        println!("back-channel logout: T0 -> refused on {name} in {} ms", t0.elapsed().as_millis());
    }
    // The operator's audit lines say what happened and why (the client is told only that the account is
    // gone): the invalidation, and the refusal (A saw the mark and removed the session; B found it gone).
    let audit = a.audit_lines();
    let inval = audit
        .iter()
        .find(|l| l["message"] == "invalidation" && l["subject"].as_str().unwrap().contains("sub=erin"))
        .expect("an audit line of the IdP's logout");
    assert_eq!((&inval["source"], &inval["outcome"]), (&json!("backchannel_logout"), &json!("ok")), "{inval}");
    assert!(inval["subject"].as_str().unwrap().starts_with("session at keycloak sid="), "{inval}");
    assert_eq!(inval["users"], "[\"erin\"]", "{inval}");
    let why: Vec<String> = audit.iter().filter_map(|l| l["provider_reason"].as_str().map(String::from)).collect();
    assert!(why.iter().any(|r| r.contains("back-channel logout")), "{why:?}");
    // Only that session ended: erin logs in again, and the new session's refresh token works on both.
    let again = refresh_token(&b, ERIN);
    assert_eq!(use_refresh(&a, ERIN.0, &again).status, 200);

    // A logout naming only the subject ends every session of erin: her new refresh token too.
    let token = signed(&idp, logout_claims(&idp, "t-sub"), false);
    let r = logout(&b, &token);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"refresh_tokens_refused\":true"), "{}", r.body);
    for t in [&a, &b] {
        within("erin's every refresh token is refused", PROMISE, || use_refresh(t, ERIN.0, &again).status == 401);
    }
}

/// The registry-side promise, through a real registry 2.8 and skopeo: after a back-channel logout at T0 a
/// new pull fails at once (within 2 s), while a registry token issued before T0 stays usable until the
/// registry stops honouring it: its `exp` (`token.lifetime` after issue) plus the registry's own 60 s
/// leeway for clock skew. Both times are printed.
#[test]
fn after_a_logout_a_new_pull_fails_at_once_and_a_token_already_issued_lives_at_most_its_lifetime() {
    let idp = idp();
    let redis = RedisServer::start();
    // exp 60 s earlier than the lifetime: the registry's own 60 s leeway past exp brings it back.
    let env = env_with(&redis, keycloak(&idp), "  lifetime: 60s\n  registry_leeway: 60s\n");
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let reg = registry_at(format!("http://{}/token", a.addr), env.bundle());
    let skopeo = crate::rig::skopeo::Skopeo::new();
    let tmp = tempfile::tempdir().unwrap();
    let refresh = refresh_token(&a, ERIN);
    let source = format!("oci:{}:latest", crate::rig::oci_image(tmp.path(), "inval-1").display());
    skopeo.copy(&source, &reg.docker_ref("payments/app:1"), Some((ERIN.0, &refresh))).assert_ok();
    let pull = || {
        let dest = format!("oci:{}:x", tmp.path().join(crate::rig::unique("pulled")).display());
        skopeo.copy(&reg.docker_ref("payments/app:1"), &dest, Some((ERIN.0, &refresh)))
    };
    pull().assert_ok();
    // A registry token erin holds before T0, as a client in the middle of a pull does.
    let held = use_refresh(&a, ERIN.0, &refresh);
    let held: serde_json::Value = serde_json::from_str(&held.body).unwrap();
    let bearer = format!("Bearer {}", held["token"].as_str().unwrap());
    let tags = || {
        http_request(reg.addr(), "GET", "/v2/payments/app/tags/list", &[("Authorization", bearer.as_str())], b"")
            .expect("registry answers")
            .status
    };
    assert_eq!(tags(), 200);
    let (_, claims) = jwt_parts(held["token"].as_str().unwrap());
    assert_eq!(claims["exp"], claims["iat"], "exp = issued + lifetime - registry_leeway");
    assert_eq!(held["expires_in"], 60, "the client is told the full lifetime");

    let t0 = Instant::now();
    let uri = format!("http://{}/oidc/keycloak/backchannel-logout", b.addr);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs([("user", "erin"), ("uri", &uri)]).finish();
    let h = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http_request(&idp.addr(), "POST", "/rig/logout", &h, body.as_bytes()).expect("rig logout");
    assert!(r.body.contains("\"sent\":1"), "{}", r.body);
    within("a new pull through the registry fails", PROMISE, || !pull().ok);
    println!("skopeo pull: T0 -> refused in {} ms", t0.elapsed().as_millis());
    assert_eq!(tags(), 200, "the registry still honours the token it was given before T0");
    // The promise: no registry access after T0 + lifetime + 2 s (the token was issued just before T0); the
    // bound adds a margin for a loaded machine, the measured time is printed.
    let lived = within("the registry refuses the held token", Duration::from_secs(70), || tags() == 401);
    println!("registry token held at T0: refused by the registry {} ms after T0", lived.as_millis());
    assert!(lived >= Duration::from_secs(55), "the registry honoured the token for its lifetime: {lived:?}");
}

const SSF_ISSUER: &str = "https://signals.example.test";
const SSF_AUDIENCE: &str = "https://tollgate.example.test/ssf";

/// A security event token from the transmitter: `events`, about `sub_id`, signed with `key`.
fn set(key: &crate::rig::SigningKey, jti: &str, sub_id: serde_json::Value, events: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    header.typ = Some("secevent+jwt".into());
    let now = tollgate::support::time::unix_now();
    let claims =
        json!({"iss": SSF_ISSUER, "aud": SSF_AUDIENCE, "iat": now, "jti": jti, "sub_id": sub_id, "events": events});
    key.sign_with(header, &claims)
}

fn push(t: &Tollgate, token: &str) -> HttpResponse {
    let h = [("Content-Type", "application/secevent+jwt")];
    http_request(&t.addr, "POST", "/ssf/signals", &h, token.as_bytes()).expect("POST /ssf")
}

#[test]
fn a_shared_signals_account_disabled_event_ends_the_account_on_both_replicas_and_forged_events_change_nothing() {
    let key = crate::rig::SigningKey::rsa("ssf-1");
    let forger = crate::rig::SigningKey::rsa("ssf-1");
    let redis = RedisServer::start();
    let env = env(&redis, String::new());
    std::fs::write(env.path().join("shared/ssf-jwks.json"), crate::rig::issuer::jwks_of(&[&key]).to_string()).unwrap();
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config = config.replace(
        "invalidation:\n  secret_file: shared/invalidation-secret\n",
        &format!(
            "invalidation:\n  secret_file: shared/invalidation-secret\n  transmitters:\n    - name: signals\n      \
             issuer: {SSF_ISSUER}\n      audience: {SSF_AUDIENCE}\n      jwks_file: shared/ssf-jwks.json\n      \
             username_from: email_local_part\n"
        ),
    );
    std::fs::write(&env.config, config).unwrap();
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let refresh = refresh_token(&a, ALICE);
    let alice = json!({"format": "email", "email": "alice@example.com"});
    let disabled = json!({"https://schemas.openid.net/secevent/risc/event-type/account-disabled": {}});

    // Refused with the RFC 8935 error code; alice's token still works everywhere.
    let wrong_audience = {
        let mut header = jsonwebtoken::Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        header.typ = Some("secevent+jwt".into());
        let now = tollgate::support::time::unix_now();
        let claims = json!({"iss": SSF_ISSUER, "aud": "https://elsewhere.example", "iat": now, "jti": "s-aud",
            "sub_id": alice, "events": disabled});
        key.sign_with(header, &claims)
    };
    for (token, code) in [
        (set(&forger, "s-forged", alice.clone(), disabled.clone()), "invalid_key"),
        (wrong_audience, "invalid_audience"),
        ("not-a-token".to_string(), "invalid_request"),
    ] {
        let r = push(&a, &token);
        assert_eq!(r.status, 400, "{code}: {}", r.body);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["err"], code, "{body}");
    }
    // Accepted, nothing done: an event tollgate does not act on; a subject it cannot name; verification.
    let other = json!({"https://example.test/event-type/unknown": {}});
    assert_eq!(push(&a, &set(&key, "s-other", alice.clone(), other)).status, 202);
    let phone = json!({"format": "phone_number", "phone_number": "+1 555 0100"});
    assert_eq!(push(&a, &set(&key, "s-phone", phone, disabled.clone())).status, 202);
    let verify = json!({"https://schemas.openid.net/secevent/ssf/event-type/verification": {"state": "v-42"}});
    assert_eq!(push(&b, &set(&key, "s-verify", json!({"format": "opaque", "id": "stream"}), verify)).status, 202);
    for t in [&a, &b] {
        assert_eq!(use_refresh(t, ALICE.0, &refresh).status, 200, "nothing refused or ignored changed anything");
    }
    assert!(b.logs().contains("v-42"), "the verification event's state is logged");

    let t0 = Instant::now();
    assert_eq!(push(&a, &set(&key, "s-disabled", alice, disabled)).status, 202);
    for (name, t) in [("A", &a), ("B", &b)] {
        within(&format!("{name} refuses alice's refresh token"), PROMISE, || {
            use_refresh(t, ALICE.0, &refresh).status == 401
        });
        println!("SSF account-disabled: T0 -> refused on {name} in {} ms", t0.elapsed().as_millis());
    }
    let audit = a.audit_lines().into_iter().find(|l| l["message"] == "invalidation").expect("audit line");
    assert_eq!((audit["source"].as_str(), audit["users"].as_str()), (Some("ssf"), Some("[\"alice\"]")), "{audit}");
}

/// The directory is the source (issue 26, item 2, end to end): slapd with `syncprov`, two replicas on
/// Redis, each with alice's login cached for the default 5 minutes. Removing her from her group at T0
/// takes push away on both replicas within 2 s; disabling her account refuses her cached login and her
/// refresh token on both within 2 s.
#[test]
fn a_directory_change_ends_access_on_both_replicas_within_2s_while_the_login_is_cached() {
    let slapd = crate::rig::Slapd::start(crate::rig::SlapdOptions::default());
    let redis = RedisServer::start();
    let providers = format!(
        "providers:\n  - {{type: ldap, name: corp, url: 'ldap://127.0.0.1:{}', bind_dn: '{}', \
         bind_password_file: '{}', user_base_dn: '{}', \
         user_filter: '(&(objectClass=inetOrgPerson)(uid={{username}}))', \
         disabled_filter: '(employeeType=disabled)', groups: {{base_dn: '{}', lowercase: true}}, \
         connect_timeout: 2s, timeout: 2s}}\n",
        slapd.ldap_port,
        crate::rig::slapd::SERVICE_DN,
        slapd.service_password_file().display(),
        crate::rig::slapd::PEOPLE,
        crate::rig::slapd::GROUPS,
    );
    let env = env_from(&redis, Opts { providers_yaml: Some(providers), ..Opts::default() }, "");
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let alice = ("alice", crate::rig::Slapd::password("alice"));
    let alice = (alice.0, alice.1.as_str());
    for t in [&a, &b] {
        crate::ops::wait_until("the watcher in sync", Duration::from_secs(20), || {
            t.json_lines().iter().any(|l| l["message"] == "directory watcher in sync")
        });
        assert_eq!(granted(&login(t, alice, false)), ["pull", "push"], "alice (team-payments) may push");
    }
    let refresh = refresh_token(&a, alice);
    let cached = misses(&b, "corp");

    let t0 = Instant::now();
    slapd.remove_member("team-payments", "alice");
    for (name, t) in [("A", &a), ("B", &b)] {
        within(&format!("{name} no longer grants alice push"), PROMISE, || {
            !granted(&login(t, alice, false)).contains(&"push".to_string())
        });
        println!("replica {name}: group removal at T0 -> push refused in {} ms", t0.elapsed().as_millis());
    }
    assert!(misses(&b, "corp") > cached, "B read alice again from the directory");
    let audit = a.audit_lines().into_iter().find(|l| l["message"] == "invalidation").expect("an audit line");
    assert_eq!(audit["source"].as_str(), Some("ldap_watch"), "{audit}");
    assert_eq!(use_refresh(&b, alice.0, &refresh).status, 200, "a membership change keeps her refresh token");

    let t0 = Instant::now();
    slapd.ldapmodify(&format!(
        "dn: {}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n",
        crate::rig::slapd::user_dn("alice")
    ));
    for (name, t) in [("A", &a), ("B", &b)] {
        within(&format!("{name} refuses disabled alice's login and refresh token"), PROMISE, || {
            login(t, alice, false).status == 401 && use_refresh(t, alice.0, &refresh).status != 200
        });
        println!("replica {name}: account disabled at T0 -> refused in {} ms", t0.elapsed().as_millis());
    }
}
