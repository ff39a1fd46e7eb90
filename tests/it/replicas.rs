//! Two replicas behind one name: two real `tollgate serve` processes on different ports, each with its own
//! data directory, sharing one real Debian `redis-server` (`state.store: redis`), one signing key
//! (`token.keys`) and one refresh secret (`refresh_tokens.secret_file`), as a deployment behind Traefik or
//! a Kubernetes Service runs them.
//!
//! Proven here: a device login started on A completes by polling B; a refresh token revoked with the CLI is
//! refused by both at once; failed logins are counted across both; with Redis stopped refresh grants and
//! device polls fail closed (503) while password logins go on, without a panic; after Redis is back both
//! recover without a restart; and a client failing over from a killed replica to the other sees no errors.
//! The separate data directories make sure nothing here is shared through the local file stores.

use std::io::Write as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::ops::{sample, tollgate_bin, wait_until, Tollgate};
use crate::rig::http::{http_request, HttpResponse};
use crate::rig::redis::RedisServer;
use crate::rig::{OidcProvider, OidcProviderOptions};

const ERIN: (&str, &str) = ("erin", "erin-idp-password");
pub(crate) const PULL: &str = "scope=repository:team-payments/app:pull";

/// The shared config: one key and one refresh secret for both replicas, state in `redis`.
fn replica_env(redis: &RedisServer, extra_providers: String, client_account_failures: u32) -> TestEnv {
    replica_env_with(
        &format!("  redis_url_file: {}\n", redis.url_file().display()),
        extra_providers,
        &format!("  client_account_failures: {client_account_failures}\n  account_failures: 1000\n"),
    )
}

/// [`replica_env`] with more `state:` lines (the Redis to use among them) and `rate_limit:` lines.
pub(crate) fn replica_env_with(state: &str, extra_providers: String, rate_limit: &str) -> TestEnv {
    let env = TestEnv::with(Opts {
        extra_token_yaml: "  keys:\n    - key_file: shared/signing.key\n      cert_file: shared/signing.crt\n".into(),
        extra_providers_yaml: extra_providers,
        extra_yaml: format!(
            "refresh_tokens:\n  secret_file: shared/refresh-secret\n\
             state:\n  store: redis\n  key_prefix: \"tg-test:\"\n  command_timeout: 300ms\n{state}\
             rate_limit:\n{rate_limit}  window: 60s\n"
        ),
        ..Opts::default()
    });
    let shared = env.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    tollgate::token::keys::generate_key_files(&shared.join("signing.key"), &shared.join("signing.crt"), "replicas")
        .expect("key");
    std::fs::write(shared.join("refresh-secret"), "a-refresh-secret-shared-by-every-replica-0123456789").unwrap();
    env
}

/// Replica `name` with a data directory of its own.
pub(crate) fn replica(env: &TestEnv, name: &str) -> Tollgate {
    let data = env.path().join(format!("data-{name}"));
    Tollgate::start(env, &[("TOLLGATE_SERVER__DATA_DIR", data.to_str().unwrap())])
}

pub(crate) fn login(t: &Tollgate, user: (&str, &str)) -> HttpResponse {
    t.token(Some(user), &format!("{PULL}&offline_token=true&client_id=docker&account={}", user.0), &[])
}

/// A refresh token from a docker-style login on `t`.
pub(crate) fn refresh_token(t: &Tollgate, user: (&str, &str)) -> String {
    let r = login(t, user);
    assert_eq!(r.status, 200, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    body["refresh_token"].as_str().expect("a refresh token").to_string()
}

/// Use a refresh token as docker does (the password of a basic-auth token request).
pub(crate) fn use_refresh(t: &Tollgate, user: &str, refresh: &str) -> HttpResponse {
    t.token(Some((user, refresh)), PULL, &[])
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

fn post(t: &Tollgate, path: &str, pairs: &[(&str, &str)]) -> HttpResponse {
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    http_request(&t.addr, "POST", path, &ct, form(pairs).as_bytes()).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

pub(crate) fn revoke_cli(env: &TestEnv, args: &[&str], stdin: Option<&str>) {
    let mut cmd = crate::rig::command(tollgate_bin());
    cmd.args(["token", "revoke", "--config"]).arg(&env.config).args(args).env_remove("TOLLGATE_CONFIG");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tollgate token revoke");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "revoke failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn assert_alive(t: &Tollgate, name: &str) {
    let logs = t.logs();
    assert!(!logs.contains("panicked"), "replica {name} panicked:\n{logs}");
}

#[test]
fn a_refresh_token_revoked_with_the_cli_is_refused_by_both_replicas_at_once() {
    let redis = RedisServer::start();
    let env = replica_env(&redis, String::new(), 10);
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));

    let r1 = refresh_token(&a, ALICE);
    let r2 = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&b, ALICE.0, &r1).status, 200, "B accepts A's refresh token (same secret)");
    // The access token B signs verifies with the key A publishes: one key set for both.
    let jwks_a = a.get("/.well-known/jwks.json", &[]);
    let jwks_b = b.get("/.well-known/jwks.json", &[]);
    assert_eq!((jwks_a.status, &jwks_a.body), (200, &jwks_b.body), "both replicas publish the same keys");

    revoke_cli(&env, &["--token", "-"], Some(&r1));
    // At once: no cache to expire, no reload.
    let (ra, rb) = (use_refresh(&a, ALICE.0, &r1), use_refresh(&b, ALICE.0, &r1));
    assert_eq!((ra.status, rb.status), (401, 401), "revoked token refused by A ({}) and B ({})", ra.body, rb.body);
    assert_eq!(use_refresh(&b, ALICE.0, &r2).status, 200, "the other token of alice still works");

    revoke_cli(&env, &["--user", "alice"], None);
    assert_eq!(use_refresh(&a, ALICE.0, &r2).status, 401);
    assert_eq!(use_refresh(&b, ALICE.0, &r2).status, 401);
    // Revocations are to the millisecond: a token issued right after, likely in the same second, works.
    let r3 = refresh_token(&b, ALICE);
    assert_eq!(use_refresh(&a, ALICE.0, &r3).status, 200, "a token issued after the revocation works");

    // The revocations live in Redis, under the configured prefix, not in either replica's data directory.
    let keys = redis.cli(&["--scan", "--pattern", "tg-test:revoked:*"]);
    keys.assert_ok();
    assert!(keys.stdout.contains("tg-test:revoked:user-ms:alice"), "{keys}");
    for name in ["a", "b"] {
        assert!(!env.path().join(format!("data-{name}/revocations.json")).exists());
    }
}

/// The warning `check-config` prints and `serve` logs when replicas sharing Redis would each generate their
/// own access-token secret (the default, in data_dir), and its absence once a shared one is configured.
#[test]
fn each_replicas_own_access_token_secret_is_warned_of_by_check_config_and_serve_until_one_is_shared() {
    const WARNING: &str = "generated by each replica in its own data_dir";
    let redis = RedisServer::start();
    let env = replica_env(&redis, String::new(), 5);
    let check = || {
        let o = std::process::Command::new(tollgate_bin())
            .args(["check-config", "--config"])
            .arg(&env.config)
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "a warning does not fail the check: {err}");
        err
    };
    let err = check();
    let line = err.lines().find(|l| l.contains(WARNING)).unwrap_or_else(|| panic!("no warning in:\n{err}"));
    let default = env.path().join("data/access-token-secret");
    assert!(line.starts_with(&format!("warning: access_tokens.secret_file is {}", default.display())), "{line}");
    assert!(line.contains("state.store: redis"), "{line}");
    let a = replica(&env, "a");
    let logged = a.wait_for_log("the per-replica secret warning", |l| {
        l["message"].as_str().is_some_and(|m| m.contains(WARNING) && m.contains("data-a/access-token-secret"))
    });
    assert_eq!(logged["level"], "WARN", "{logged}");
    drop(a);

    std::fs::write(env.path().join("shared/access-token-secret"), "an-access-token-secret-for-every-replica-0123456")
        .unwrap();
    let mut config = std::fs::read_to_string(&env.config).unwrap();
    config += "access_tokens:\n  secret_file: shared/access-token-secret\n";
    std::fs::write(&env.config, config).unwrap();
    let err = check();
    assert!(!err.contains("access_tokens.secret_file"), "{err}");
    let b = replica(&env, "b");
    assert_alive(&b, "b");
    assert!(!b.logs().contains(WARNING), "{}", b.logs());
}

#[test]
fn failed_logins_are_counted_across_both_replicas() {
    let redis = RedisServer::start();
    let env = replica_env(&redis, String::new(), 4);
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    // Four failures from one address, alternating: each replica saw only two, which alone would be far
    // from its limit of four.
    for (i, t) in [&a, &b, &a, &b].into_iter().enumerate() {
        let r = t.token(Some((BOB.0, &format!("wrong-password-{i}"))), PULL, &[]);
        assert_eq!(r.status, 401, "failure {i}: {}", r.body);
    }
    let r = a.token(Some((BOB.0, "wrong-password-4")), PULL, &[]);
    assert_eq!(r.status, 429, "the fifth failure, counted on both replicas, is limited: {}", r.body);
    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1), "{:?}", r.headers);
    let r = b.token(Some((BOB.0, BOB.1)), PULL, &[]);
    assert_eq!(
        r.status, 429,
        "bob from that address is blocked on B as well, before any password is checked: {}",
        r.body
    );
    assert_eq!(sample(&b.metrics(), "tollgate_rate_limit_fallbacks_total"), 0.0, "Redis answered every time");
}

#[test]
fn a_device_login_started_on_one_replica_completes_by_polling_the_other() {
    let idp = OidcProvider::start(
        json!({"erin": {"password": ERIN.1, "roles": ["team-payments"], "groups": ["/team-payments"]}}),
        OidcProviderOptions::default(),
    );
    let provider = format!(
        "  - type: oidc\n    name: keycloak\n    issuer: {}\n    client_id: {}\n    client_secret_file: {}\n    groups_claim: realm_access.roles\n",
        idp.issuer(),
        crate::rig::oidc_provider::CLIENT_ID,
        idp.secret_file().display()
    );
    let redis = RedisServer::start();
    let env = replica_env(&redis, provider, 10);
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));

    let start = post(&a, "/device/code", &[("service", SERVICE), ("client_id", "test")]);
    assert_eq!(start.status, 200, "{}", start.body);
    let start: serde_json::Value = serde_json::from_str(&start.body).unwrap();
    let device_code = start["device_code"].as_str().unwrap();
    idp.answer_device(start["user_code"].as_str().unwrap(), ERIN, true).expect("approved at the IdP");
    let poll = |t: &Tollgate| {
        post(
            t,
            "/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", "test"),
                ("service", SERVICE),
                ("scope", "repository:team-payments/app:pull"),
            ],
        )
    };
    let done = poll(&b);
    assert_eq!(done.status, 200, "B completes the login A started: {}", done.body);
    let body: serde_json::Value = serde_json::from_str(&done.body).unwrap();
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() > 20), "{body}");
    // The flow is finished for both replicas: a repeated poll on A is not a second login.
    let again = poll(&a);
    assert_ne!(again.status, 200, "a finished device code is not redeemed twice: {}", again.body);
    for name in ["a", "b"] {
        assert!(!env.path().join(format!("data-{name}/sessions.json")).exists(), "sessions live in Redis");
    }
}

#[test]
fn with_redis_stopped_refresh_grants_fail_closed_password_logins_work_and_all_recovers_on_restart() {
    let mut redis = RedisServer::start();
    let env = replica_env(&redis, String::new(), 10);
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let refresh = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&b, ALICE.0, &refresh).status, 200);

    redis.stop();
    for t in [&a, &b, &a, &b] {
        let r = use_refresh(t, ALICE.0, &refresh);
        assert_eq!(r.status, 503, "a revocation that cannot be checked refuses the token: {}", r.body);
        let r = post(
            t,
            "/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", "tgd_some-device-code"),
                ("client_id", "test"),
                ("service", SERVICE),
            ],
        );
        assert_eq!(r.status, 503, "unreadable device sessions are not 'unknown': {}", r.body);
        let r = t.token(Some(BOB), PULL, &[]);
        assert_eq!(r.status, 200, "password logins of static accounts do not need Redis: {}", r.body);
        let r = t.token(Some((BOB.0, "a-wrong-password")), PULL, &[]);
        assert_eq!(r.status, 401, "limits fall back to this replica's counts: {}", r.body);
    }
    assert!(sample(&a.metrics(), "tollgate_rate_limit_fallbacks_total") >= 2.0, "the fallback is counted");
    a.wait_for_log("the fallback warning", |l| l["message"].as_str().is_some_and(|m| m.contains("per replica")));

    redis.start_again();
    // Redis came back EMPTY: whatever it forgot may have been revoked, so every refresh token issued before
    // is refused (fail closed), on both replicas; new logins work at once. No tollgate restart: the next
    // commands reconnect.
    // Each replica probes again after its own backoff (at most 5 s).
    wait_until("B to use Redis again", Duration::from_secs(10), || use_refresh(&b, ALICE.0, &refresh).status == 401);
    wait_until("A to refuse the pre-loss token too", Duration::from_secs(10), || {
        use_refresh(&a, ALICE.0, &refresh).status == 401
    });
    let fresh = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&b, ALICE.0, &fresh).status, 200, "a token issued after the loss works everywhere");
    revoke_cli(&env, &["--token", "-"], Some(&fresh));
    assert_eq!(use_refresh(&a, ALICE.0, &fresh).status, 401, "revocations work again after the restart");
    assert_eq!(use_refresh(&b, ALICE.0, &fresh).status, 401);
    for (t, name) in [(&a, "a"), (&b, "b")] {
        assert_alive(t, name);
    }
    let logs = a.logs() + &b.logs();
    assert!(!logs.contains(crate::rig::redis::PASSWORD), "the Redis password never reaches the logs");
}

#[test]
fn a_redis_that_hangs_is_given_up_after_the_command_timeout_and_the_answer_is_503_not_a_hang() {
    let redis = RedisServer::start();
    let env = replica_env(&redis, String::new(), 10);
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let refresh = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&b, ALICE.0, &refresh).status, 200);
    redis.pause();
    for t in [&a, &b] {
        let started = Instant::now();
        let r = use_refresh(t, ALICE.0, &refresh);
        assert_eq!(r.status, 503, "{}", r.body);
        // Not a speed target: the request must END (command_timeout is 300 ms), not wait for Redis forever.
        assert!(started.elapsed() < Duration::from_secs(10), "the request waited {:?}", started.elapsed());
        assert_eq!(t.token(Some(BOB), PULL, &[]).status, 200, "password logins go on");
    }
    redis.resume();
    wait_until("A to use Redis again", Duration::from_secs(10), || use_refresh(&a, ALICE.0, &refresh).status == 200);
    wait_until("B to use Redis again", Duration::from_secs(10), || use_refresh(&b, ALICE.0, &refresh).status == 200);
}

#[test]
fn killing_one_replica_during_a_load_run_costs_the_clients_of_the_other_nothing() {
    let redis = RedisServer::start();
    let env = replica_env(&redis, String::new(), 10);
    let (mut a, b) = (replica(&env, "a"), replica(&env, "b"));
    let refresh = Arc::new(refresh_token(&a, ALICE));
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = Arc::new((a.addr.clone(), b.addr.clone()));

    // Client 1 alternates between A and B and fails over when a replica does not answer, as a load
    // balancer does; client 2 uses B only. Each mixes password logins and refresh grants (Redis).
    let spawn_client = |failover: bool| {
        let (stop, addrs, refresh) = (stop.clone(), addrs.clone(), refresh.clone());
        std::thread::spawn(move || {
            let (mut ok, mut errors, mut failovers, mut i) = (0u32, Vec::<String>::new(), 0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let auth = if i % 2 == 0 { basic(ALICE.0, &refresh) } else { basic(BOB.0, BOB.1) };
                let path = format!("/token?service={SERVICE}&{PULL}");
                let targets: Vec<&str> = match (failover, i % 2) {
                    (true, 0) => vec![&addrs.0, &addrs.1],
                    (true, _) => vec![&addrs.1, &addrs.0],
                    (false, _) => vec![&addrs.1],
                };
                let mut answered = false;
                for (n, addr) in targets.iter().enumerate() {
                    match http_request(addr, "GET", &path, &[("Authorization", &auth)], b"") {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            failovers += n as u32;
                            answered = true;
                            break;
                        }
                        Ok(r) => {
                            errors.push(format!("{addr}: {} {}", r.status, r.body));
                            answered = true;
                            break;
                        }
                        Err(_) => continue, // not answering: try the next replica
                    }
                }
                if !answered {
                    errors.push("no replica answered".into());
                }
            }
            (ok, errors, failovers)
        })
    };
    let (c1, c2) = (spawn_client(true), spawn_client(false));
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    a.child.kill().expect("kill replica A");
    a.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let (ok1, errors1, failovers1) = c1.join().unwrap();
    let (ok2, errors2, _) = c2.join().unwrap();
    assert!(errors1.is_empty(), "the failing-over client saw errors: {errors1:?}");
    assert!(errors2.is_empty(), "the client of replica B saw errors: {errors2:?}");
    assert!(failovers1 > 0, "the failing-over client did meet the dead replica");
    assert!(ok1 > 20 && ok2 > 20, "both clients kept working: {ok1} and {ok2} answers");
    assert!(killed_at.elapsed() >= Duration::from_secs(2));
    assert_alive(&b, "b");
}

#[test]
fn a_redis_restarted_empty_never_lets_a_revoked_token_back_and_a_refused_redis_costs_logins_nothing() {
    let mut redis = RedisServer::start();
    let env = replica_env(&redis, String::new(), 10);
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let revoked = refresh_token(&a, ALICE);
    let kept = refresh_token(&b, BOB);
    revoke_cli(&env, &["--token", "-"], Some(&revoked));
    assert_eq!(use_refresh(&b, ALICE.0, &revoked).status, 401);
    assert_eq!(use_refresh(&a, BOB.0, &kept).status, 200);

    // Refused connections: password logins (right and wrong) must not wait for Redis each time.
    redis.stop();
    let mut times = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let (user, status) = if i % 2 == 0 { (BOB, 200) } else { ((BOB.0, "wrong-password"), 401) };
        assert_eq!(a.token(Some(user), PULL, &[]).status, status);
        times.push(started.elapsed());
    }
    times.sort();
    println!("HOSTILE password logins while Redis refuses connections: median {:?}, max {:?}", times[10], times[19]);
    assert!(times[10] < Duration::from_millis(50), "logins wait for Redis: median {:?}", times[10]);

    // Back, empty (a restart without persistence, or a failover to a stale replica).
    redis.start_again();
    wait_until("the replicas to reach Redis again", Duration::from_secs(15), || {
        use_refresh(&a, ALICE.0, &revoked).status == 401 && use_refresh(&b, BOB.0, &kept).status == 401
    });
    for t in [&a, &b, &a, &b] {
        assert_eq!(use_refresh(t, ALICE.0, &revoked).status, 401, "the revoked token stays refused");
        assert_eq!(use_refresh(t, BOB.0, &kept).status, 401, "tokens from before the loss are refused (fail closed)");
    }
    let fresh = refresh_token(&b, BOB);
    assert_eq!(use_refresh(&a, BOB.0, &fresh).status, 200, "a new login's refresh token works on the other replica");
    let logs = a.logs() + &b.logs();
    assert!(logs.contains("lost its data"), "the loss is logged");
    for (t, name) in [(&a, "a"), (&b, "b")] {
        assert_alive(t, name);
    }
}
