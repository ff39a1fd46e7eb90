//! Shared state that keeps its promise ("a revoked refresh token is never accepted again") when Redis
//! misbehaves: a Redis that evicts keys when full, and a master that dies right after a revocation. Real
//! Debian `redis-server`s on loopback (a master and a replica where needed), the real `tollgate serve` and
//! `tollgate token revoke`.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::ops::{sample, tollgate_bin, wait_until};
use crate::replicas::{refresh_token, replica, replica_env_with, revoke_cli, use_refresh};
use crate::rig::redis::RedisServer;

/// `tollgate token revoke ARGS` (token on stdin when given): (success, stdout + stderr).
fn revoke(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write as _;
    let mut cmd = crate::rig::command(tollgate_bin());
    cmd.args(["token", "revoke", "--config"]).arg(&env.config).args(args).env_remove("TOLLGATE_CONFIG");
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tollgate token revoke");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn info_field(redis: &RedisServer, section: &str, field: &str) -> u64 {
    let out = redis.cli(&["INFO", section]);
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}: {out}"))
}

/// The attack of issue 27: `volatile-lru` with a small `maxmemory`, then a flood of failed logins whose
/// counters fill the memory. Redis evicts keys (proven by `evicted_keys`); tollgate notices the policy,
/// refuses refresh tokens with a 503 that says why while it lasts, and, since keys were evicted, starts a
/// new epoch: after the operator sets `noeviction` again, the revoked token is still refused (401), and
/// only tokens issued after the eviction work.
#[test]
fn a_redis_that_evicts_keys_never_lets_a_revoked_refresh_token_work_again() {
    let redis = RedisServer::start();
    let env = replica_env_with(
        &format!("  redis_url_file: {}\n  health_interval: 1s\n", redis.url_file().display()),
        String::new(),
        "  client_account_failures: 1000\n  ip_failures: 100000\n  account_failures: 1000\n",
    );
    let a = replica(&env, "a");
    let revoked = refresh_token(&a, ALICE);
    let other = refresh_token(&a, ALICE);
    revoke_cli(&env, &["--token", "-"], Some(&revoked));
    assert_eq!(use_refresh(&a, ALICE.0, &revoked).status, 401);
    assert_eq!(use_refresh(&a, ALICE.0, &other).status, 200);
    assert_eq!(sample(&a.metrics(), "tollgate_redis_evicting"), 0.0);

    // Room for a few hundred small keys more than what is there now.
    let used = info_field(&redis, "memory", "used_memory");
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]).assert_ok();
    redis.cli(&["CONFIG", "SET", "maxmemory", &(used + 60_000).to_string()]).assert_ok();

    // The flood, while another client keeps trying the revoked token.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let tries = Arc::new(AtomicUsize::new(0));
    let addr = a.addr.clone();
    let checker = {
        let (stop, accepted, tries, revoked) = (stop.clone(), accepted.clone(), tries.clone(), revoked.clone());
        let addr = addr.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = crate::rig::http::http_request(
                    &addr,
                    "GET",
                    &format!("/token?service={SERVICE}&{}", crate::replicas::PULL),
                    &[("Authorization", &basic(ALICE.0, &revoked))],
                    b"",
                )
                .unwrap();
                tries.fetch_add(1, Ordering::Relaxed);
                if r.status == 200 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let flooders: Vec<_> = (0..3)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    let user = format!("flood-{t}-{i}-{}", "x".repeat(40));
                    let r = crate::rig::http::http_request(
                        &addr,
                        "GET",
                        &format!("/token?service={SERVICE}&{}", crate::replicas::PULL),
                        &[("Authorization", &basic(&user, "wrong"))],
                        b"",
                    )
                    .unwrap();
                    assert!(matches!(r.status, 401 | 429), "a failed login: {} {}", r.status, r.body);
                }
            })
        })
        .collect();
    for f in flooders {
        f.join().unwrap();
    }
    let evicted = info_field(&redis, "stats", "evicted_keys");
    assert!(evicted > 0, "the flood made Redis evict keys (else this test proves nothing)");

    // tollgate noticed within its health interval: refresh grants get a 503 that says why.
    wait_until("refresh grants refused while Redis evicts", Duration::from_secs(20), || {
        use_refresh(&a, ALICE.0, &other).status == 503
    });
    let r = use_refresh(&a, ALICE.0, &other);
    assert!(r.body.contains("may forget revocations") && r.header("retry-after") == Some("30"), "{}", r.body);
    assert_eq!(sample(&a.metrics(), "tollgate_redis_evicting"), 1.0);
    assert!(a.logs().contains("maxmemory-policy is volatile-lru"), "the log says what is wrong:\n{}", a.logs());
    wait_until("a new epoch after the evictions", Duration::from_secs(20), || a.logs().contains("new epoch"));

    // The operator fixes Redis: service resumes without a restart, and the revoked token stays refused.
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]).assert_ok();
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).assert_ok();
    wait_until("refresh grants checked again", Duration::from_secs(20), || {
        use_refresh(&a, ALICE.0, &other).status != 503
    });
    stop.store(true, Ordering::Relaxed);
    checker.join().unwrap();
    assert!(tries.load(Ordering::Relaxed) > 5, "the revoked token was tried during the flood");
    assert_eq!(accepted.load(Ordering::Relaxed), 0, "the revoked token was never accepted");
    assert_eq!(use_refresh(&a, ALICE.0, &revoked).status, 401, "still revoked after the fix");
    assert_eq!(use_refresh(&a, ALICE.0, &other).status, 401, "issued before the evictions: refused");
    let fresh = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&a, ALICE.0, &fresh).status, 200, "a token issued now works");
    assert_eq!(sample(&a.metrics(), "tollgate_redis_evicting"), 0.0);
}

/// `state.min_replicas_acked: 1`: a revocation returns only once the replica has it. Revoke, SIGKILL the
/// master at once, promote the replica: a replica of tollgate on the promoted server refuses the token (and
/// accepts another token of the same user, so the refusal is the revocation, not a lost epoch). With the
/// replica gone, a revocation exits non-zero and says that no replica acknowledged it.
#[test]
fn a_revocation_acknowledged_by_a_replica_survives_the_master_being_killed() {
    let mut master = RedisServer::start();
    let mut replica_redis = RedisServer::replica_of(&master);
    // One URL file, pointed at the promoted server later (as an operator or a Service would).
    let url_dir = tempfile::tempdir().unwrap();
    let url_file = url_dir.path().join("redis-url");
    std::fs::copy(master.url_file(), &url_file).unwrap();
    let state =
        format!("  redis_url_file: {}\n  min_replicas_acked: 1\n  replica_ack_timeout: 500ms\n", url_file.display());
    let env = replica_env_with(&state, String::new(), "  client_account_failures: 10\n  account_failures: 1000\n");
    let a = replica(&env, "a");
    let revoked = refresh_token(&a, ALICE);
    let kept = refresh_token(&a, ALICE);
    let (ok, out) = revoke(&env, &["--token", "-"], Some(&revoked));
    assert!(ok, "{out}");
    master.kill9();
    replica_redis.cli(&["REPLICAOF", "NO", "ONE"]).assert_ok();
    std::fs::copy(replica_redis.url_file(), &url_file).unwrap();
    drop(a);

    let b = replica(&env, "b");
    assert_eq!(use_refresh(&b, ALICE.0, &revoked).status, 401, "the promoted replica has the revocation");
    assert_eq!(use_refresh(&b, ALICE.0, &kept).status, 200, "and the epoch: other tokens still work");

    // No replica left: the revocation is written to the master but fails loudly.
    let another = refresh_token(&b, ALICE);
    let started = Instant::now();
    let (ok, out) = revoke(&env, &["--token", "-"], Some(&another));
    assert!(!ok, "a revocation no replica acknowledged fails: {out}");
    assert!(
        out.contains("acknowledged by only 0 of the 1 replicas") && out.contains("a failover now could lose it"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "bounded by replica_ack_timeout");
    replica_redis.stop();
}

/// What one request of the load run saw.
struct Seen {
    at: Instant,
    /// 0 a good refresh token, 1 a good password, 2 the revoked token, 3 a wrong password.
    kind: usize,
    refresh: bool,
    status: u16,
    /// 200 for something that must be refused (a revoked token, a wrong password).
    wrong: bool,
    /// A 503 without `Retry-After`.
    no_retry_after: bool,
}

/// Sentinel: one master, one replica, three sentinels, two tollgate replicas under a bounded load of mixed
/// password and refresh-token logins (and a revoked token and a wrong password that must stay refused).
/// SIGKILL the master: Sentinel promotes the replica, tollgate asks the sentinels again on its own, and
/// refresh grants succeed again within seconds. No wrong grant, no restart; the figures are printed.
#[test]
fn under_sentinel_a_killed_master_is_replaced_without_a_restart_and_without_a_wrong_grant() {
    use crate::rig::sentinel::{Sentinels, MASTER_NAME};
    let mut master = RedisServer::start();
    let replica_redis = RedisServer::replica_of(&master);
    let sentinels = Sentinels::start(&master, 3, 1);
    let nodes = sentinels.nodes().iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let state = format!(
        "  redis_url_file: {}\n  min_replicas_acked: 1\n  replica_ack_timeout: 500ms\n\
         \x20 sentinel:\n    nodes: [{nodes}]\n    master_name: {MASTER_NAME}\n",
        master.url_file().display()
    );
    let env = replica_env_with(&state, String::new(), "  client_account_failures: 1000\n  account_failures: 1000\n");
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));
    let pids = (a.child.id(), b.child.id());
    let revoked = refresh_token(&a, ALICE);
    let (ok, out) = revoke(&env, &["--token", "-"], Some(&revoked));
    assert!(ok, "{out}");
    let tokens: Vec<String> = (0..4).map(|i| refresh_token(if i % 2 == 0 { &a } else { &b }, ALICE)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let addrs = [a.addr.clone(), b.addr.clone()];
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, seen, addrs) = (stop.clone(), seen.clone(), addrs.clone());
            let (token, revoked) = (tokens[w].clone(), revoked.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let addr = &addrs[(w + i) % 2];
                    // Mostly good refresh tokens and passwords; now and then a revoked token or a wrong password.
                    let (user, secret, kind) = match i % 6 {
                        0 => (ALICE.0, revoked.as_str(), 2),
                        1 => (BOB.0, "not-bob's-password", 3),
                        2 | 4 => (ALICE.0, token.as_str(), 0),
                        _ => (BOB.0, BOB.1, 1),
                    };
                    let must_fail = kind >= 2;
                    let r = crate::rig::http::http_request(
                        addr,
                        "GET",
                        &format!("/token?service={SERVICE}&{}", crate::replicas::PULL),
                        &[("Authorization", &basic(user, secret))],
                        b"",
                    )
                    .unwrap();
                    let wrong = must_fail && r.status == 200;
                    let no_retry_after = r.status == 503 && r.header("retry-after").is_none();
                    seen.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        kind,
                        refresh: kind == 0,
                        status: r.status,
                        wrong,
                        no_retry_after,
                    });
                    std::thread::sleep(Duration::from_millis(25));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    master.kill9();
    let deadline = killed + Duration::from_secs(60);
    while sentinels.master_port() != Some(replica_redis.port) {
        assert!(Instant::now() < deadline, "Sentinel never promoted the replica");
        std::thread::sleep(Duration::from_millis(50));
    }
    let promoted = Instant::now();
    // Run on until refresh grants have succeeded for 3 s in a row (bounded).
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let recent_failure =
            seen.lock().unwrap().iter().filter(|s| s.refresh && s.status != 200).map(|s| s.at).max().unwrap_or(killed);
        if recent_failure.elapsed() > Duration::from_secs(3) && recent_failure >= killed {
            break;
        }
        assert!(Instant::now() < promoted + Duration::from_secs(60), "refresh grants never recovered");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let after_kill: Vec<&Seen> = seen.iter().filter(|s| s.at >= killed).collect();
    let unavailable = |kind: usize| after_kill.iter().filter(|s| s.kind == kind && s.status == 503).count();
    let (refresh_503, password_503, revoked_503, wrong_503) =
        (unavailable(0), unavailable(1), unavailable(2), unavailable(3));
    let last_refresh_failure = after_kill.iter().filter(|s| s.refresh && s.status != 200).map(|s| s.at).max();
    let recovered_after = last_refresh_failure.map_or(0.0, |t| t.saturating_duration_since(promoted).as_secs_f64());
    let wrong = seen.iter().filter(|s| s.wrong).count();
    println!(
        "sentinel failover: {} requests ({} after the kill); promotion {:.1} s after SIGKILL; refresh grants \
         succeed again {:.1} s after the promotion; 503s after the kill: {refresh_503} refresh, {password_503} \
         password, {revoked_503} revoked token, {wrong_503} wrong password; wrong grants: {wrong}",
        seen.len(),
        after_kill.len(),
        (promoted - killed).as_secs_f64(),
        recovered_after
    );
    assert_eq!(wrong, 0, "no revoked token or wrong password was ever granted");
    assert_eq!(password_503, 0, "password logins need no shared state: they go on through the failover");
    assert!(!seen.iter().any(|s| s.no_retry_after), "every 503 says when to come back (Retry-After)");
    assert!(
        after_kill.iter().all(|s| s.status == 200 || s.status == 401 || s.status == 503),
        "only 200, 401 and 503 during the failover"
    );
    assert!(
        after_kill.iter().any(|s| s.refresh && s.status == 200 && s.at > promoted),
        "refresh works on the new master"
    );
    assert_eq!((a.child.id(), b.child.id()), pids, "no restart");
    for (t, name) in [(&a, "a"), (&b, "b")] {
        let logs = t.logs();
        assert!(!logs.contains("panicked"), "{name} panicked:\n{logs}");
        assert!(logs.contains("Redis master changed"), "{name} logged the failover:\n{logs}");
        assert_eq!(sample(&t.metrics(), "tollgate_redis_failovers_total"), 1.0, "{name} counted it");
        let ready = t.get("/readyz", &[]);
        assert!(ready.body.contains(&format!("\"master\":\"127.0.0.1:{}\"", replica_redis.port)), "{}", ready.body);
    }
    // The revocation made before the failover is on the new master.
    assert_eq!(use_refresh(&b, ALICE.0, &revoked).status, 401);
}

/// A private CA (openssl) with a server certificate for 127.0.0.1, and a second CA that signed nothing.
fn private_ca(dir: &std::path::Path) {
    let sh = |script: &str| {
        let mut cmd = crate::rig::command("sh");
        cmd.args(["-c", script]).current_dir(dir);
        crate::rig::run(cmd, None, &[], Duration::from_secs(60)).assert_ok();
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=rig-redis-ca 2>/dev/null \
        && openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.crt -days 2 -subj /CN=other-ca 2>/dev/null \
        && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null \
        && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext \
        && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null");
}

/// Redis over TLS only (`--port 0`), with an ACL user and the default user off; its config on stdin.
fn tls_redis(dir: &std::path::Path, port: u16, user: &str, password: &str) -> std::process::Child {
    use std::io::Write as _;
    let log = std::fs::File::create(dir.join("redis.log")).unwrap();
    let mut child = crate::rig::command("redis-server")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .current_dir(dir)
        .spawn()
        .unwrap();
    let conf = format!(
        "port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {d}\n\
         tls-cert-file {d}/server.crt\ntls-key-file {d}/server.key\ntls-ca-cert-file {d}/ca.crt\n\
         tls-auth-clients no\nuser default off\nuser {user} on >{password} ~tg-test:* +@all -@dangerous +info +config|get\n",
        d = dir.display()
    );
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    assert!(
        crate::rig::service::wait_for_log_line(&mut child, &dir.join("redis.log"), "Ready to accept", "redis tls"),
        "redis-server with TLS did not start"
    );
    child
}

/// TLS with a private CA and an ACL user (name and password from files): refresh tokens, revocations and
/// the probe work; a wrong CA or password is a clear error in check-config and in serve's log at start.
#[test]
fn redis_over_tls_with_an_acl_user_works_and_a_wrong_ca_or_password_says_so() {
    let dir = tempfile::tempdir().unwrap();
    private_ca(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (user, password) = ("tollgate-acl", "acl-password-7f3e9a");
    let mut redis = tls_redis(dir.path(), port, user, password);
    let d = dir.path();
    std::fs::write(d.join("url"), format!("rediss://127.0.0.1:{port}/0\n")).unwrap();
    std::fs::write(d.join("user"), format!("{user}\n")).unwrap();
    std::fs::write(d.join("password"), format!("{password}\n")).unwrap();
    std::fs::write(d.join("wrong-password"), "not-the-password\n").unwrap();
    let state = |ca: &str, password_file: &str| {
        format!(
            "  redis_url_file: {0}/url\n  username_file: {0}/user\n  password_file: {0}/{password_file}\n\
             \x20 tls:\n    ca_file: {0}/{ca}\n",
            d.display()
        )
    };
    let rate = "  client_account_failures: 10\n  account_failures: 1000\n";
    let probe = |env: &TestEnv| {
        let mut cmd = crate::rig::command(tollgate_bin());
        cmd.args(["check-config", "--probe", "--config"]).arg(&env.config).env_remove("TOLLGATE_CONFIG");
        let out = crate::rig::run(cmd, None, &[password], Duration::from_secs(60));
        (out.ok, format!("{}{}", out.stdout, out.stderr))
    };

    let env = replica_env_with(&state("ca.crt", "password"), String::new(), rate);
    let (ok, out) = probe(&env);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("ok   redis: connect: 127.0.0.1:{port} answers")), "{out}");
    assert!(out.contains("ok   redis: maxmemory-policy: noeviction"), "the ACL user may read the policy: {out}");
    let a = replica(&env, "a");
    let r1 = refresh_token(&a, ALICE);
    let r2 = refresh_token(&a, ALICE);
    revoke_cli(&env, &["--token", "-"], Some(&r1));
    assert_eq!(use_refresh(&a, ALICE.0, &r1).status, 401, "revoked over TLS");
    assert_eq!(use_refresh(&a, ALICE.0, &r2).status, 200);
    drop(a);

    for (ca, pw, says) in [
        ("other-ca.crt", "password", "state.tls.ca_file must hold the CA that signed it"),
        ("ca.crt", "wrong-password", "Redis refused the password"),
    ] {
        let env = replica_env_with(&state(ca, pw), String::new(), rate);
        let (ok, out) = probe(&env);
        assert!(!ok, "{ca} {pw}: {out}");
        assert!(out.contains("FAIL redis") && out.contains(says), "{ca} {pw}: {out}");
        assert!(!out.contains(password), "no password in the output");
        let b = replica(&env, "b");
        let logs = || b.logs();
        wait_until("an error at start", Duration::from_secs(20), || logs().contains("cannot use the shared state"));
        assert!(logs().contains(says), "{}", logs());
        assert!(logs().contains("cannot use the shared state in Redis"), "{}", logs());
        assert!(!logs().contains(password));
    }
    let _ = redis.kill();
    let _ = redis.wait();
}

/// A manual failover (`SENTINEL FAILOVER`) demotes a master that stays up: a connection tollgate keeps to it
/// would read a replica and get `READONLY` on writes. tollgate moves to the new master by itself: a failed
/// login (a write) is counted, a revocation made through the sentinels is seen at once, and the failover is
/// counted once on /metrics.
#[test]
fn after_a_manual_sentinel_failover_tollgate_writes_to_the_new_master() {
    use crate::rig::sentinel::{Sentinels, MASTER_NAME};
    // masterauth: demoted, it replicates from the new master.
    let master = RedisServer::start_with(&["--masterauth", crate::rig::redis::PASSWORD]);
    let replica_redis = RedisServer::replica_of(&master);
    let sentinels = Sentinels::start(&master, 3, 1);
    let nodes = sentinels.nodes().iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let state = format!(
        "  redis_url_file: {}\n  min_replicas_acked: 1\n  health_interval: 1s\n\
         \x20 sentinel:\n    nodes: [{nodes}]\n    master_name: {MASTER_NAME}\n",
        master.url_file().display()
    );
    let env = replica_env_with(&state, String::new(), "  client_account_failures: 1000\n  account_failures: 1000\n");
    let a = replica(&env, "a");
    let r1 = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&a, ALICE.0, &r1).status, 200);

    sentinels.cli(sentinels.ports[0], &["SENTINEL", "FAILOVER", MASTER_NAME]).assert_ok();
    wait_until("the replica is promoted", Duration::from_secs(60), || {
        sentinels.master_port() == Some(replica_redis.port)
            && master.cli(&["INFO", "replication"]).stdout.contains("master_link_status:up")
    });
    // Writes from tollgate land on the new master (a failed login counts there).
    wait_until("tollgate writes to the new master", Duration::from_secs(30), || {
        let r = a.token(Some((BOB.0, "a-wrong-password")), crate::replicas::PULL, &[]);
        assert_ne!(r.status, 200);
        replica_redis.cli(&["--scan", "--pattern", "tg-test:rl:acct:*"]).stdout.lines().count() > 0
    });
    let (ok, out) = revoke(&env, &["--token", "-"], Some(&r1));
    assert!(ok, "the CLI finds the new master, and the demoted one acknowledges as its replica: {out}");
    assert_eq!(use_refresh(&a, ALICE.0, &r1).status, 401, "revoked on the new master, refused at once");
    wait_until("the failover counted", Duration::from_secs(20), || {
        sample(&a.metrics(), "tollgate_redis_failovers_total") == 1.0
    });
    let fresh = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&a, ALICE.0, &fresh).status, 200);
    assert!(!a.logs().contains("panicked"));
}

/// Calls of each Redis command so far (`INFO commandstats`), without the `AUTH` and `INFO` redis-cli sends for it.
fn command_calls(redis: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    let out = redis.cli(&["INFO", "commandstats"]);
    out.stdout
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            (name != "info" && name != "auth").then(|| (name.to_string(), calls))
        })
        .collect()
}

/// Redis commands per `/token` request, by login kind (for BENCHMARKS.md): each kind 20 times in a row on a
/// quiet Redis, the commands it ran counted by Redis itself. Asserted: a refresh grant and a warm password
/// login stay within a handful of commands (they are one pipelined round trip each, plus the limiter's).
#[test]
fn redis_commands_per_token_request_by_login_kind() {
    let redis = RedisServer::start();
    let env = replica_env_with(
        &format!("  redis_url_file: {}\n  health_interval: 1h\n", redis.url_file().display()),
        String::new(),
        "  client_account_failures: 1000\n  ip_failures: 100000\n  account_failures: 1000\n",
    );
    let a = replica(&env, "a");
    let refresh = refresh_token(&a, ALICE);
    assert_eq!(use_refresh(&a, ALICE.0, &refresh).status, 200);
    assert_eq!(a.token(Some(BOB), crate::replicas::PULL, &[]).status, 200, "warm: bob's address is known");
    const N: u64 = 20;
    let mut rows = Vec::new();
    let kinds: [(&str, &dyn Fn() -> u16); 4] = [
        ("password login (warm cache)", &|| a.token(Some(BOB), crate::replicas::PULL, &[]).status),
        ("password login + refresh token issued", &|| {
            a.token(Some(BOB), &format!("{}&offline_token=true&client_id=docker", crate::replicas::PULL), &[]).status
        }),
        ("refresh grant", &|| use_refresh(&a, ALICE.0, &refresh).status),
        ("failed login (wrong password)", &|| a.token(Some((BOB.0, "wrong")), crate::replicas::PULL, &[]).status),
    ];
    for (kind, request) in kinds {
        let before = command_calls(&redis);
        for _ in 0..N {
            let status = request();
            assert!(matches!(status, 200 | 401), "{kind}: {status}");
        }
        let after = command_calls(&redis);
        let mut per: Vec<(String, f64)> = after
            .iter()
            .map(|(c, n)| (c.clone(), (n - before.get(c).copied().unwrap_or(0)) as f64 / N as f64))
            .filter(|(_, n)| *n > 0.0)
            .collect();
        per.sort_by(|x, y| x.0.cmp(&y.0));
        let total: f64 = per.iter().map(|(_, n)| n).sum();
        rows.push((kind, total, per));
    }
    println!("Redis commands per /token request ({N} requests per kind, INFO commandstats):");
    for (kind, total, per) in &rows {
        let detail: Vec<String> = per.iter().map(|(c, n)| format!("{c} {n}")).collect();
        println!("  {kind:<40} {total:>5.1}  ({})", detail.join(", "));
    }
    let total = |k: &str| rows.iter().find(|r| r.0 == k).unwrap().1;
    assert!(total("refresh grant") <= 16.0, "{}", total("refresh grant"));
    assert!(total("password login (warm cache)") <= 8.0, "{}", total("password login (warm cache)"));
}

/// Three masters from `redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`.
fn cluster_of_three() -> Vec<RedisServer> {
    cluster(3, 0)
}

/// `masters * (1 + replicas)` nodes joined by `redis-cli --cluster create`; a node is declared failed after
/// 1 s without an answer.
fn cluster(masters: usize, replicas: usize) -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
        .map(|_| {
            RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--masterauth",
                crate::rig::redis::PASSWORD,
            ])
        })
        .collect();
    let mut create = crate::rig::command("redis-cli");
    create.args(["--no-auth-warning", "-a", crate::rig::redis::PASSWORD, "--cluster", "create"]);
    create.args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
    create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
    crate::rig::run(create, None, &[crate::rig::redis::PASSWORD], Duration::from_secs(60)).assert_ok();
    for n in &nodes {
        wait_until("the cluster is up, every replica linked", Duration::from_secs(60), || {
            let info = n.cli(&["INFO", "replication"]).stdout;
            n.cli(&["CLUSTER", "INFO"]).stdout.contains("cluster_state:ok")
                && (info.contains("master_link_status:up")
                    || info.contains(&format!("connected_slaves:{replicas}\r"))
                    || info.contains(&format!("connected_slaves:{replicas}\n")))
        });
    }
    nodes
}

/// Redis Cluster: three masters. Two tollgate replicas given the seed nodes find the node of tollgate's one
/// hash slot; the replica suite's shared-state checks hold (a CLI revocation refused by both at once, failed
/// logins counted across both, a token issued after a revocation working), every key is on that one node
/// under one tag, and no command crossed slots (Redis would answer CROSSSLOT; tollgate would log it).
#[test]
fn on_a_redis_cluster_every_key_shares_one_slot_and_the_shared_state_checks_hold() {
    let nodes = cluster_of_three();
    let seeds = nodes.iter().map(|n| format!("\"127.0.0.1:{}\"", n.port)).collect::<Vec<_>>().join(", ");
    let state = format!("  redis_url_file: {}\n  cluster:\n    nodes: [{seeds}]\n", nodes[0].url_file().display());
    let env = replica_env_with(&state, String::new(), "  client_account_failures: 4\n  account_failures: 1000\n");
    let mut cmd = crate::rig::command(tollgate_bin());
    cmd.args(["check-config", "--probe", "--config"]).arg(&env.config).env_remove("TOLLGATE_CONFIG");
    let probe = crate::rig::run(cmd, None, &[], Duration::from_secs(60));
    assert!(probe.ok && probe.stdout.contains("ask the cluster which node serves tollgate's slot"), "{probe}");
    let (a, b) = (replica(&env, "a"), replica(&env, "b"));

    let r1 = refresh_token(&a, ALICE);
    let r2 = refresh_token(&b, ALICE);
    assert_eq!(use_refresh(&b, ALICE.0, &r1).status, 200);
    revoke_cli(&env, &["--token", "-"], Some(&r1));
    assert_eq!((use_refresh(&a, ALICE.0, &r1).status, use_refresh(&b, ALICE.0, &r1).status), (401, 401));
    assert_eq!(use_refresh(&a, ALICE.0, &r2).status, 200);
    revoke_cli(&env, &["--user", "alice"], None);
    assert_eq!((use_refresh(&a, ALICE.0, &r2).status, use_refresh(&b, ALICE.0, &r2).status), (401, 401));
    let r3 = refresh_token(&b, ALICE);
    assert_eq!(use_refresh(&a, ALICE.0, &r3).status, 200, "a token issued after the revocation works");

    for (i, t) in [&a, &b, &a, &b].into_iter().enumerate() {
        assert_eq!(t.token(Some((BOB.0, &format!("wrong-{i}"))), crate::replicas::PULL, &[]).status, 401);
    }
    assert_eq!(a.token(Some((BOB.0, "wrong-4")), crate::replicas::PULL, &[]).status, 429, "counted across both");
    assert_eq!(sample(&b.metrics(), "tollgate_rate_limit_fallbacks_total"), 0.0, "Redis answered every time");

    // Every key on one node, under the one tag.
    let counts: Vec<usize> = nodes
        .iter()
        .map(|n| n.cli(&["--scan", "--pattern", "*tg-test:*"]).stdout.lines().filter(|l| !l.is_empty()).count())
        .collect();
    assert_eq!(counts.iter().filter(|&&c| c > 0).count(), 1, "one node holds them all: {counts:?}");
    let holder = &nodes[counts.iter().position(|&c| c > 0).unwrap()];
    let keys = holder.cli(&["--scan", "--pattern", "*"]).stdout;
    assert!(keys.lines().all(|k| k.starts_with("{tg-test:}")), "{keys}");
    assert!(keys.contains("{tg-test:}revoked:user-ms:alice") && keys.contains("{tg-test:}epoch"), "{keys}");
    for (t, name) in [(&a, "a"), (&b, "b")] {
        let logs = t.logs();
        assert!(
            !logs.contains("CROSSSLOT") && !logs.contains("MOVED") && !logs.contains("panicked"),
            "{name}:\n{logs}"
        );
        let ready = t.get("/readyz", &[]);
        assert!(ready.body.contains("\"mode\":\"cluster\""), "{}", ready.body);
    }
}

/// A failover inside the Cluster: three masters with a replica each; the master serving tollgate's slot is
/// SIGKILLed and the Cluster promotes its replica. tollgate (asking the seed nodes again) follows without a
/// restart: refresh grants work again, a revocation made before (acknowledged by the replica) still holds,
/// and the failover is counted.
#[test]
fn on_a_redis_cluster_a_killed_master_of_the_slot_is_followed_to_its_promoted_replica() {
    let mut nodes = cluster(3, 1);
    let seeds = nodes.iter().map(|n| format!("\"127.0.0.1:{}\"", n.port)).collect::<Vec<_>>().join(", ");
    let state = format!(
        "  redis_url_file: {}\n  min_replicas_acked: 1\n  cluster:\n    nodes: [{seeds}]\n",
        nodes[0].url_file().display()
    );
    let env = replica_env_with(&state, String::new(), "  client_account_failures: 1000\n  account_failures: 1000\n");
    let a = replica(&env, "a");
    let pid = a.child.id();
    let revoked = refresh_token(&a, ALICE);
    let kept = refresh_token(&a, ALICE);
    let (ok, out) = revoke(&env, &["--token", "-"], Some(&revoked));
    assert!(ok, "acknowledged by the slot master's replica: {out}");
    // The master holding tollgate's keys.
    let holder = nodes
        .iter()
        .position(|n| {
            n.cli(&["INFO", "replication"]).stdout.contains("role:master") && {
                let slot = n.cli(&["CLUSTER", "KEYSLOT", "{tg-test:}epoch"]).stdout.trim().to_string();
                n.cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot]).stdout.trim() != "0"
            }
        })
        .expect("a master holds the slot");
    let killed = Instant::now();
    nodes[holder].kill9();
    wait_until("refresh grants work again after the Cluster's failover", Duration::from_secs(60), || {
        use_refresh(&a, ALICE.0, &kept).status == 200
    });
    println!("cluster failover: refresh grants work again {:.1} s after SIGKILL", killed.elapsed().as_secs_f64());
    assert_eq!(use_refresh(&a, ALICE.0, &revoked).status, 401, "the revocation survived the failover");
    assert_eq!(sample(&a.metrics(), "tollgate_redis_failovers_total"), 1.0);
    assert_eq!(a.child.id(), pid, "no restart");
    let logs = a.logs();
    assert!(!logs.contains("CROSSSLOT") && !logs.contains("panicked"), "{logs}");
}
