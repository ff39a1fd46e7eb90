//! Operating tollgate: the real `tollgate serve` process, as an operator runs it.
//!
//! Metrics after a known sequence of requests, readiness while a provider's data goes away and comes back,
//! failed-login limits (429 + Retry-After, the right password from another address still works),
//! X-Forwarded-For only from trusted proxies, TLS with a private CA and certificate reload, reload on
//! SIGHUP and on file change (a broken file keeps the old version), SIGTERM with a request in flight, the
//! audit line, `/whoami` = `policy explain`, and a scan of every line tollgate wrote for every secret used.
//! The compose deployment files are validated here too.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::rig::http::{http_request, HttpResponse};

/// A `tollgate serve` child process with JSON logs captured to a file.
pub(crate) struct Tollgate {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
    pub(crate) addr: String,
    pub(crate) metrics_addr: Option<String>,
}

pub(crate) fn tollgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// `tollgate serve --config CONFIG` run in `dir` as a user runs it (JSON logs on stderr), listening on a
/// port chosen at run time: the child and the address it logged. Started through the rig's `command`, so a
/// test that fails before it kills the server does not leave it running.
pub(crate) fn serve_in(dir: &Path, config: &str) -> (Child, String) {
    let mut cmd = crate::rig::command(tollgate_bin());
    cmd.args(["serve", "--config", config]).current_dir(dir);
    let (child, lines, addr) = spawn_listening(cmd);
    // Keep reading: a closed pipe would make the server's next log line its last.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// The server's log lines on its stderr pipe, not yet read.
type LogPipe = std::io::Lines<std::io::BufReader<std::process::ChildStderr>>;

/// Spawn `cmd` (a `tollgate serve`) on a loopback port chosen at run time, with its JSON log on a pipe, and
/// read that log until it listens: the child, the rest of its log, and its address.
fn spawn_listening(mut cmd: std::process::Command) -> (Child, LogPipe, String) {
    use std::io::BufRead as _;
    cmd.env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = cmd.spawn().expect("tollgate serve starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("tollgate exited before listening").expect("a log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "tollgate listening" {
            break v["addr"].as_str().expect("addr").to_string();
        }
    };
    (child, lines, addr)
}

impl Tollgate {
    pub(crate) fn start(env: &TestEnv, vars: &[(&str, &str)]) -> Tollgate {
        Tollgate::start_with(env, vars, |_| {})
    }

    /// [`Tollgate::start`], with `tweak` applied to the command before it is spawned (limits, for example).
    pub(crate) fn start_with(
        env: &TestEnv,
        vars: &[(&str, &str)],
        tweak: impl FnOnce(&mut std::process::Command),
    ) -> Tollgate {
        let log = env.path().join(format!("tollgate-{}.log", crate::rig::unique("run")));
        let mut cmd = crate::rig::command(tollgate_bin());
        cmd.args(["serve", "--config"]).arg(&env.config);
        cmd.env_remove("TOLLGATE_CONFIG").env("TOLLGATE_LOG", "info").env("TOLLGATE_LOG__FORMAT", "json");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        tweak(&mut cmd);
        Tollgate::launch(cmd, log)
    }

    /// Spawn `cmd` (which ends up running `tollgate serve`, e.g. through `sh -c`) with its output in a new
    /// log file in `dir`, and wait until it listens.
    pub(crate) fn launch_in(cmd: std::process::Command, dir: &Path) -> Tollgate {
        Tollgate::launch(cmd, dir.join(format!("tollgate-{}.log", crate::rig::unique("run"))))
    }

    fn launch(mut cmd: std::process::Command, log: PathBuf) -> Tollgate {
        let file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(Stdio::from(file.try_clone().expect("dup"))).stderr(Stdio::from(file)).stdin(Stdio::null());
        let child = cmd.spawn().expect("tollgate serve starts");
        let mut t = Tollgate { child, log, addr: String::new(), metrics_addr: None };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for line in t.json_lines() {
                match line["message"].as_str() {
                    Some("tollgate listening") => t.addr = line["addr"].as_str().unwrap_or_default().to_string(),
                    Some("metrics listening") => t.metrics_addr = line["addr"].as_str().map(str::to_string),
                    _ => {}
                }
            }
            if !t.addr.is_empty() {
                return t;
            }
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("tollgate exited with {status} during start:\n{}", t.logs());
            }
            assert!(Instant::now() < deadline, "tollgate did not start:\n{}", t.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server has logged so far. Lines reach stderr from a writer thread of their own
    /// (`cli/logs.rs`), a moment after the answer they record: the file is read until it stops growing for
    /// 30 ms (at most 3 s), so a check right after a request sees that request's lines.
    pub(crate) fn logs(&self) -> String {
        let read = || std::fs::read_to_string(&self.log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut text = read();
        loop {
            std::thread::sleep(Duration::from_millis(30));
            let again = read();
            if again.len() == text.len() || Instant::now() > deadline {
                return again;
            }
            text = again;
        }
    }

    pub(crate) fn json_lines(&self) -> Vec<serde_json::Value> {
        self.logs().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    pub(crate) fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.json_lines().into_iter().filter(|l| l["target"] == "tollgate::audit").collect()
    }

    pub(crate) fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(&self.addr, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub(crate) fn token(&self, user: Option<(&str, &str)>, query: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let auth = user.map(|(u, p)| basic(u, p));
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        self.get(&format!("/token?service={SERVICE}&{query}"), &h)
    }

    pub(crate) fn post_form(&self, form: &str) -> HttpResponse {
        let ct = [("Content-Type", "application/x-www-form-urlencoded")];
        http_request(&self.addr, "POST", "/token", &ct, form.as_bytes()).unwrap_or_else(|e| panic!("POST: {e}"))
    }

    pub(crate) fn metrics(&self) -> String {
        let addr = self.metrics_addr.as_deref().unwrap_or(&self.addr);
        let r = http_request(addr, "GET", "/metrics", &[], b"").expect("scrape");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    pub(crate) fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Wait until a JSON log line satisfies `pred`.
    pub(crate) fn wait_for_log(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.json_lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(Instant::now() < deadline, "no log line {what}:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample, e.g. `tollgate_failed_logins_total{provider="local"}`; 0 when absent.
pub(crate) fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("numeric sample"))
        .unwrap_or(0.0)
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every secret must be absent from everything tollgate wrote.
fn assert_no_secrets(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(s.len() >= 8, "a short secret would match by accident: {s:?}");
        if let Some(pos) = text.find(s) {
            let start = pos.saturating_sub(200);
            panic!("secret leaked into tollgate's output: ...{}...", &text[start..(pos + s.len()).min(text.len())]);
        }
    }
}

const PEOPLE_SECRETS: [&str; 4] = [ALICE.1, BOB.1, ADMIN.1, ROBOT.1];

#[test]
fn metrics_count_a_known_sequence_of_requests_on_the_separate_metrics_listener() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[("TOLLGATE_SERVER__METRICS_LISTEN", "127.0.0.1:0")]);
    assert!(t.metrics_addr.is_some(), "metrics listener announced:\n{}", t.logs());
    assert_eq!(t.get("/metrics", &[]).status, 404, "metrics only on the metrics listener");
    let scope = "scope=repository:payments/api:push,pull";
    for _ in 0..2 {
        assert_eq!(t.token(Some(ALICE), &format!("{scope}&client_id=docker"), &[]).status, 200);
    }
    assert_eq!(t.token(Some((ALICE.0, "wrong-password-1")), scope, &[]).status, 401);
    assert_eq!(t.token(Some(BOB), &format!("{scope}&client_id=docker"), &[]).status, 200, "bob: denied, still 200");
    assert_eq!(t.token(None, "scope=repository:public/x:pull&client_id=attacker-chosen-label", &[]).status, 200);
    let form = format!(
        "grant_type=password&client_id=containerd-client&username={}&password={}&service={SERVICE}&{scope}",
        ALICE.0,
        enc(ALICE.1)
    );
    let r = t.post_form(&form);
    assert_eq!(r.status, 200, "{}", r.body);

    let m = t.metrics();
    let want = [
        (r#"tollgate_token_requests_total{outcome="granted",client_id="docker"}"#, 2.0),
        (r#"tollgate_token_requests_total{outcome="granted",client_id="containerd-client"}"#, 1.0),
        (r#"tollgate_token_requests_total{outcome="unauthorized",client_id="none"}"#, 1.0),
        (r#"tollgate_token_requests_total{outcome="denied",client_id="docker"}"#, 1.0),
        (r#"tollgate_token_requests_total{outcome="granted",client_id="other"}"#, 1.0),
        (r#"tollgate_failed_logins_total{provider="local"}"#, 1.0),
        (r#"tollgate_identity_cache_hits_total{provider="local"}"#, 2.0),
        (r#"tollgate_identity_cache_misses_total{provider="local"}"#, 3.0),
        (r#"tollgate_request_duration_seconds_count{endpoint="token"}"#, 6.0),
        (r#"tollgate_provider_up{provider="local"}"#, 1.0),
        (r#"tollgate_provider_requests_total{provider="local",operation="authenticate",outcome="ok"}"#, 2.0),
        (r#"tollgate_provider_requests_total{provider="local",operation="authenticate",outcome="refused"}"#, 1.0),
        (r#"tollgate_provider_duration_seconds_count{provider="local",operation="authenticate"}"#, 3.0),
    ];
    for (series, value) in want {
        assert_eq!(sample(&m, series), value, "{series} in:\n{m}");
    }
    assert!(m.contains(r#"tollgate_request_duration_seconds_bucket{endpoint="token",le="0.1"}"#), "{m}");
    assert!(!m.contains("attacker-chosen-label"), "client_id values from callers never become labels");
    let kid = t.json_lines().iter().find_map(|l| l["kid"].as_str().map(str::to_string)).expect("kid logged");
    let not_after =
        sample(&m, &format!(r#"tollgate_signing_key_not_after_timestamp_seconds{{kid="{kid}",active="true"}}"#));
    assert!(not_after > 4.0e9, "the generated key's certificate expires in 2099: {not_after}");
    assert_no_secrets(&(t.logs() + &m), &PEOPLE_SECRETS);
}

#[test]
fn readiness_flips_while_the_accounts_provider_is_gone_and_liveness_does_not() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[("TOLLGATE_SERVER__PROBE_INTERVAL", "200ms")]);
    assert_eq!(t.get("/readyz", &[]).status, 200);
    let moved = env.path().join("accounts.away");
    std::fs::rename(&env.accounts, &moved).unwrap();
    wait_until("readyz 503", Duration::from_secs(10), || t.get("/readyz", &[]).status == 503);
    let r = t.get("/readyz", &[]);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["status"], "degraded");
    assert_eq!(j["unreachable"], serde_json::json!(["local"]));
    assert!(j["providers"]["local"]["error"].as_str().unwrap().contains("accounts.yaml"), "{j}");
    assert_eq!(t.get("/healthz", &[]).status, 200, "a degraded provider never fails liveness");
    assert_eq!(sample(&t.metrics(), r#"tollgate_provider_up{provider="local"}"#), 0.0);
    std::fs::rename(&moved, &env.accounts).unwrap();
    wait_until("readyz 200", Duration::from_secs(10), || t.get("/readyz", &[]).status == 200);
    assert_eq!(sample(&t.metrics(), r#"tollgate_provider_up{provider="local"}"#), 1.0);
}

#[test]
fn readiness_flips_while_the_directory_is_stopped_and_started() {
    use crate::rig::slapd::{Slapd, SlapdOptions, PEOPLE, SERVICE_DN};
    let mut slapd = Slapd::start(SlapdOptions::default());
    let providers = format!(
        "providers:\n  - type: ldap\n    name: corp\n    url: {}\n    bind_dn: '{SERVICE_DN}'\n    bind_password_file: {}\n    user_dn_template: 'uid={{username}},{PEOPLE}'\n    groups: {{ from: member_of, lowercase: true }}\n    connect_timeout: 1s\n    timeout: 1s\n  - type: static\n    name: local\n    file: accounts.yaml\n",
        slapd.ldap_url(),
        slapd.service_password_file().display()
    );
    let env = TestEnv::with(Opts { providers_yaml: Some(providers), ..Opts::default() });
    let t = Tollgate::start(&env, &[("TOLLGATE_SERVER__PROBE_INTERVAL", "200ms")]);
    let ready = |t: &Tollgate| t.get("/readyz", &[]).status;
    assert_eq!(ready(&t), 200, "{}", t.get("/readyz", &[]).body);
    let bob = ("bob", Slapd::password("bob"));
    assert_eq!(t.token(Some((bob.0, &bob.1)), "", &[]).status, 200, "bob logs in through the directory");

    slapd.stop();
    wait_until("readyz 503", Duration::from_secs(10), || ready(&t) == 503);
    let j: serde_json::Value = serde_json::from_str(&t.get("/readyz", &[]).body).unwrap();
    assert_eq!(j["unreachable"], serde_json::json!(["corp"]), "{j}");
    assert_eq!(j["providers"]["local"]["reachable"], true, "{j}");
    assert_eq!(t.get("/healthz", &[]).status, 200, "a directory outage never fails liveness");
    assert_eq!(sample(&t.metrics(), r#"tollgate_provider_up{provider="corp"}"#), 0.0);

    slapd.start_again();
    wait_until("readyz 200", Duration::from_secs(10), || ready(&t) == 200);
    assert_eq!(sample(&t.metrics(), r#"tollgate_provider_up{provider="corp"}"#), 1.0);
    let lines = t.json_lines();
    assert!(lines.iter().any(|l| l["message"] == "provider unreachable" && l["provider"] == "corp"));
    assert!(lines.iter().any(|l| l["message"] == "provider reachable" && l["provider"] == "corp"));
    assert_no_secrets(&t.logs(), &[&bob.1]);
}

#[test]
fn failed_logins_get_429_with_retry_after_and_the_right_password_works_from_another_address() {
    let env = TestEnv::new();
    let t = Tollgate::start(
        &env,
        &[
            ("TOLLGATE_SERVER__TRUSTED_PROXIES", "[127.0.0.1]"),
            ("TOLLGATE_RATE_LIMIT__CLIENT_ACCOUNT_FAILURES", "3"),
            ("TOLLGATE_RATE_LIMIT__IP_FAILURES", "3"),
            ("TOLLGATE_RATE_LIMIT__ACCOUNT_FAILURES", "10"),
            ("TOLLGATE_RATE_LIMIT__WINDOW", "6s"),
        ],
    );
    let attacker = [("X-Forwarded-For", "198.51.100.66")];
    for i in 0..3 {
        let r = t.token(Some((ALICE.0, &format!("wrong-password-{i}"))), "", &attacker);
        assert_eq!(r.status, 401, "failure {i} is an ordinary 401");
    }
    let r = t.token(Some((ALICE.0, "wrong-password-3")), "", &attacker);
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "one attempt refills every 2s: {retry}");
    assert!(r.body.contains("too many failed logins"), "{}", r.body);
    let r = t.token(Some(ALICE), "", &attacker);
    assert_eq!(r.status, 429, "a blocked (address, account) gets no password check, not even the right one");
    let r = t.token(Some(BOB), "", &attacker);
    assert_eq!(r.status, 200, "another account from the same address is not blocked: {}", r.body);

    let r = t.token(Some(ALICE), "scope=repository:payments/api:pull", &[("X-Forwarded-For", "192.0.2.10")]);
    assert_eq!(r.status, 200, "the right password from another address works at once: {}", r.body);

    // Spraying: a fourth account from one address is one more than its budget of three accounts.
    let sprayer = [("X-Forwarded-For", "198.51.100.99")];
    for (i, user) in ["u1", "u2", "u3", "u4"].into_iter().enumerate() {
        let r = t.token(Some((user, "guess")), "", &sprayer);
        assert_eq!(r.status, if i < 3 { 401 } else { 429 }, "spraying {user}: {}", r.body);
    }
    assert_eq!(t.token(Some(ADMIN), "", &sprayer).status, 429, "the spraying address is blocked for every account");

    std::thread::sleep(Duration::from_secs(retry + 1));
    let r = t.token(Some(ALICE), "", &attacker);
    assert_eq!(r.status, 200, "the block ends by itself: {}", r.body);
    let m = t.metrics();
    assert!(sample(&m, r#"tollgate_rate_limited_total{limit="client_account"}"#) >= 2.0, "{m}");
    assert!(sample(&m, r#"tollgate_rate_limited_total{limit="ip"}"#) >= 2.0, "{m}");
    assert_eq!(sample(&m, r#"tollgate_token_requests_total{outcome="rate_limited",client_id="none"}"#), 4.0);
    assert_no_secrets(&t.logs(), &PEOPLE_SECRETS);
}

#[test]
fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let env = TestEnv::new();
    let whoami_ip = |t: &Tollgate, xff: &str| {
        let auth = basic(ALICE.0, ALICE.1);
        let r = t.get("/whoami", &[("Authorization", &auth), ("X-Forwarded-For", xff)]);
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["client_ip"].as_str().unwrap().to_string()
    };
    let untrusted = Tollgate::start(&env, &[]);
    assert_eq!(whoami_ip(&untrusted, "203.0.113.5"), "127.0.0.1", "no trusted proxies: header ignored");
    let other_proxy = Tollgate::start(&env, &[("TOLLGATE_SERVER__TRUSTED_PROXIES", "[10.0.0.0/8]")]);
    assert_eq!(whoami_ip(&other_proxy, "203.0.113.5"), "127.0.0.1", "peer is not a trusted proxy");
    let trusted = Tollgate::start(&env, &[("TOLLGATE_SERVER__TRUSTED_PROXIES", "[127.0.0.0/8]")]);
    assert_eq!(whoami_ip(&trusted, "203.0.113.5"), "203.0.113.5");
    assert_eq!(whoami_ip(&trusted, "6.6.6.6, 203.0.113.5"), "203.0.113.5", "a forged left entry is skipped");
    let audit = trusted.audit_lines();
    assert!(audit.iter().all(|l| l["client_ip"] == "203.0.113.5"), "{audit:?}");
}

#[test]
fn the_audit_line_says_who_from_where_asked_what_got_what_and_which_rules_decided() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[]);
    let q = "scope=repository:payments/api:push,pull&scope=repository:prod/web:push&client_id=docker";
    assert_eq!(t.token(Some(ALICE), q, &[]).status, 200);
    assert_eq!(t.token(Some((BOB.0, "wrong-password-x")), "scope=repository:web/x:pull", &[]).status, 401);
    let r = t.get("/token?service=nope.example&scope=repository:web/x:pull", &[]);
    assert_eq!(r.status, 400);
    let lines = t.audit_lines();
    assert_eq!(lines.len(), 3, "one audit line per decision: {lines:?}");
    let a = &lines[0];
    assert_eq!(a["subject"], "alice");
    assert_eq!(a["provider"], "local");
    assert_eq!(a["client_ip"], "127.0.0.1");
    assert_eq!(a["client_id"], "docker");
    assert_eq!(a["outcome"], "partial");
    assert_eq!(a["auth_method"], "password");
    // Lists are JSON arrays, not JSON text inside a string.
    assert_eq!(a["requested"], serde_json::json!(["repository:payments/api:push,pull", "repository:prod/web:push"]));
    assert_eq!(a["granted"], serde_json::json!(["repository:payments/api:push,pull"]));
    assert_eq!(a["rules"], serde_json::json!(["team-namespaces"]));
    assert!(a["jti"].as_str().is_some_and(|j| j.len() >= 16));
    let b = &lines[1];
    assert_eq!(b["subject"], "bob", "a failed login records who it claimed to be");
    assert_eq!(b["outcome"], "unauthorized");
    assert_eq!(b["status"], 401);
    assert_eq!(b["requested"], serde_json::json!(["repository:web/x:pull"]));
    assert_eq!(b["client_id"], "none", "an absent client id is spelled as the metric spells it");
    let c = &lines[2];
    assert_eq!((c["status"].as_u64(), c["outcome"].as_str()), (Some(400), Some("bad_request")));
    assert_eq!(c["service"], "nope.example", "the refused service is recorded as asked");
    assert_no_secrets(&t.logs(), &["wrong-password-x"]);
}

#[test]
fn whoami_returns_identity_groups_and_the_same_explanation_as_policy_explain() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[]);
    let scope = "repository:payments/prod/api:push";
    let auth = basic(ALICE.0, ALICE.1);
    let r = t.get(&format!("/whoami?scope={}", enc(scope)), &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["username"], "alice");
    assert_eq!(j["provider"], "local");
    assert_eq!(j["groups"], serde_json::json!(["team-payments", "developers"]));
    let out = std::process::Command::new(tollgate_bin())
        .args(["policy", "explain", "--json", "--config"])
        .arg(&env.config)
        .args(["--user", "alice", "--groups", "team-payments,developers", "--provider", "local"])
        .args(["--service", SERVICE, "--client-ip", "127.0.0.1", "--claims", r#"{"robot": false}"#, "--scope", scope])
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["explanations"][0], cli, "whoami and `policy explain` give the same answer");
    assert!(r.body.contains("protected-prod"), "the deny rule is named: {}", r.body);

    let r = t.get("/whoami", &[("Authorization", &basic(ALICE.0, "wrong-password-w"))]);
    assert_eq!(r.status, 401);
    assert_eq!(t.get("/whoami", &[]).status, 401, "whoami needs credentials");
}

/// A rules file generated from a directory (the example rules plus 20,000 team rules): a `/whoami` of 64
/// scopes stays small in time, answer and memory. Each explanation lists at most 100 rules that did not
/// apply, those alice's identity reaches first, and counts the rest; the decision and the rules named per
/// action are `policy explain`'s, which still lists every rule. Before the bound, the same request answered
/// 64 x 20,000 entries and grew the server by gigabytes.
#[test]
fn whoami_on_a_rules_file_of_twenty_thousand_teams_is_bounded() {
    let env = TestEnv::new();
    let example = tollgate::policy::EXAMPLE_POLICY;
    let tests_at = example.find("\ntests:").expect("the example policy has tests") + 1;
    let mut rules = String::from(&example[..tests_at]);
    for n in 0..20_000 {
        rules.push_str(&format!(
            "  - name: team-{n}\n    match: {{ group: [team-{n}] }}\n    resources: [\"team-{n}/**\"]\n    actions: [pull, push]\n"
        ));
    }
    rules.push_str(&example[tests_at..]);
    std::fs::write(&env.policy, &rules).unwrap();
    let t = Tollgate::start(&env, &[]);
    let pid = t.child.id();
    let idle = crate::hostile::proc_kib(pid, "VmHWM");
    let scopes: Vec<String> = (0..64).map(|n| format!("repository:payments/prod/app-{n}:push,pull")).collect();
    let query: Vec<String> = scopes.iter().map(|s| format!("scope={}", enc(s))).collect();
    let auth = basic(ALICE.0, ALICE.1);
    let r = t.get(&format!("/whoami?{}", query.join("&")), &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let grown_mib = (crate::hostile::proc_kib(pid, "VmHWM") - idle) / 1024;
    println!("whoami, 64 scopes, 20,000 team rules: answer {} bytes, peak RSS +{grown_mib} MiB", r.body.len());
    assert!(r.body.len() < 2_000_000, "the answer is bounded: {} bytes", r.body.len());
    assert!(grown_mib < 200, "the server's peak grew by {grown_mib} MiB");

    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let explanations = j["explanations"].as_array().unwrap();
    assert_eq!(explanations.len(), 64);
    let out = std::process::Command::new(tollgate_bin())
        .args(["policy", "explain", "--json", "--config"])
        .arg(&env.config)
        .args(["--user", "alice", "--groups", "team-payments,developers", "--provider", "local"])
        .args(["--service", SERVICE, "--client-ip", "127.0.0.1", "--claims", r#"{"robot": false}"#])
        .args(["--scope", &scopes[0]])
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let full = cli["not_applied"].as_array().unwrap();
    assert!(full.len() > 20_000, "policy explain lists every rule that did not apply: {}", full.len());
    for e in explanations {
        assert_eq!(e["granted"], cli["granted"], "{e}");
        assert_eq!(e["actions"], cli["actions"], "the same rules decide: {e}");
        assert_eq!(e["actions"][0]["denied_by"], serde_json::json!(["protected-prod"]));
        let listed = e["not_applied"].as_array().unwrap();
        assert!(!listed.is_empty() && listed.len() <= 100, "{} listed", listed.len());
        let generated = |r: &serde_json::Value| {
            r["rule"].as_str().unwrap().strip_prefix("team-").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        };
        assert!(!listed.iter().any(generated), "no other team's rule is listed: {listed:?}");
        assert_eq!(listed.len() as u64 + e["not_applied_omitted"].as_u64().unwrap(), full.len() as u64);
    }
    // The listed entries are worded as `policy explain` words them.
    let first = &explanations[0]["not_applied"][0];
    assert!(full.contains(first), "{first} is one of policy explain's entries");
}

/// A private CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
fn make_cert(dir: &Path, ca: Option<&Path>, name: &str) -> (PathBuf, PathBuf) {
    let openssl = crate::rig::require("openssl", "openssl");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(&openssl).args(args).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    let subject = format!("/CN={name}");
    let new_key =
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &key, "-subj", &subject];
    match ca {
        None => run(&[&["req", "-x509", "-out", &crt, "-days", "2"][..], &new_key].concat()),
        Some(ca) => {
            let csr = format!("{name}.csr");
            run(&[&["req", "-out", &csr][..], &new_key].concat());
            let ext = "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n";
            std::fs::write(dir.join("ext.cnf"), ext).unwrap();
            let (ca_crt, ca_key) = (ca.to_str().unwrap(), ca.with_extension("key"));
            let ca_key = ca_key.to_str().unwrap();
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                ca_crt,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ]);
        }
    }
    (dir.join(crt), dir.join(key))
}

fn curl_https(addr: &str, ca: &Path, path: &str) -> (bool, String) {
    let curl = crate::rig::require("curl", "curl");
    let o = std::process::Command::new(curl)
        .args(["-sS", "--cacert"])
        .arg(ca)
        .arg(format!("https://{addr}{path}"))
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

fn served_subject(addr: &str, ca: &Path) -> String {
    let o = std::process::Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or_default().to_string()
}

#[test]
fn tls_listener_with_a_private_ca_serves_and_reloads_its_certificate() {
    let env = TestEnv::new();
    let (ca, _) = make_cert(env.path(), None, "test-ca");
    let (crt, key) = make_cert(env.path(), Some(&ca), "tollgate-one");
    let t = Tollgate::start(
        &env,
        &[
            ("TOLLGATE_SERVER__TLS__CERT_FILE", crt.to_str().unwrap()),
            ("TOLLGATE_SERVER__TLS__KEY_FILE", key.to_str().unwrap()),
        ],
    );
    let (ok, out) = curl_https(&t.addr, &ca, "/healthz");
    assert!(ok && out.contains("\"ok\""), "{out}");
    let (ok, out) = curl_https(&t.addr, &ca, &format!("/token?service={SERVICE}"));
    assert!(ok && out.contains("access_token"), "{out}");
    assert!(
        http_request(&t.addr, "GET", "/healthz", &[], b"").map(|r| r.status != 200).unwrap_or(true),
        "no plain HTTP"
    );
    assert!(served_subject(&t.addr, &ca).contains("tollgate-one"));

    // A renewed certificate (cert-manager, certbot) is picked up from the files without a restart.
    let (crt2, key2) = make_cert(env.path(), Some(&ca), "tollgate-two");
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&crt2, &crt).unwrap();
    t.signal(libc::SIGHUP);
    wait_until("the new certificate", Duration::from_secs(10), || {
        served_subject(&t.addr, &ca).contains("tollgate-two")
    });
    let (ok, out) = curl_https(&t.addr, &ca, "/healthz");
    assert!(ok, "{out}");

    // A broken pair is refused and the running certificate kept.
    let refused = |t: &Tollgate| t.logs().matches("reload refused").count();
    let before = refused(&t);
    std::fs::write(&crt, "not a certificate").unwrap();
    t.signal(libc::SIGHUP);
    wait_until("the refusal", Duration::from_secs(10), || refused(&t) > before);
    assert!(served_subject(&t.addr, &ca).contains("tollgate-two"));
}

/// `tollgate login` to a registry whose certificate a private CA signed: the hint names the CA (`--ca-file`,
/// `SSL_CERT_FILE`) and never plain HTTP; with either, TLS works. tollgate's own TLS listener stands in for
/// the registry: what is proven is the TLS connection, not the registry's answer after it.
#[test]
fn login_behind_a_private_ca_is_told_about_the_ca_never_to_drop_tls() {
    let env = TestEnv::new();
    let (ca, _) = make_cert(env.path(), None, "corp-ca");
    let (crt, key) = make_cert(env.path(), Some(&ca), "registry");
    let t = Tollgate::start(
        &env,
        &[
            ("TOLLGATE_SERVER__TLS__CERT_FILE", crt.to_str().unwrap()),
            ("TOLLGATE_SERVER__TLS__KEY_FILE", key.to_str().unwrap()),
        ],
    );
    let login = |extra: &[&str], ssl_cert_file: Option<&Path>| {
        let mut cmd = std::process::Command::new(tollgate_bin());
        cmd.args(["login", &t.addr, "--no-browser", "--docker-config"])
            .arg(env.path().join("docker"))
            .args(extra)
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("SSL_CERT_FILE");
        if let Some(f) = ssl_cert_file {
            cmd.env("SSL_CERT_FILE", f);
        }
        let o = cmd.output().unwrap();
        assert!(!o.status.success(), "tollgate is no registry: the login cannot complete");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = login(&[], None);
    assert!(
        err.contains("UnknownIssuer") && err.contains("--ca-file CA.pem") && err.contains("SSL_CERT_FILE"),
        "{err}"
    );
    assert!(!err.contains("--plain-http"), "never the advice to drop TLS: {err}");
    for (how, err) in
        [("--ca-file", login(&["--ca-file", ca.to_str().unwrap()], None)), ("SSL_CERT_FILE", login(&[], Some(&ca)))]
    {
        assert!(!err.contains("UnknownIssuer") && err.contains("without a token challenge"), "{how}: TLS works: {err}");
    }
    let err = login(&["--ca-file", "/nonexistent/ca.pem"], None);
    assert!(err.contains("--ca-file /nonexistent/ca.pem: No such file"), "{err}");
}

fn granted(t: &Tollgate, user: (&str, &str), scope: &str) -> serde_json::Value {
    let r = t.token(Some(user), &format!("scope={scope}"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, claims) = jwt_parts(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["token"].as_str().unwrap());
    claims["access"].clone()
}

const PULL_ONLY_POLICY: &str = "rules:\n  - name: pull-only\n    match: { group: [\"team-{team}\"] }\n    resources: [\"{team}/**\"]\n    actions: [pull]\n";

#[test]
fn a_changed_rules_file_is_reloaded_and_a_broken_one_keeps_the_old_policy() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[]);
    let scope = "repository:payments/api:push,pull";
    let before = granted(&t, ALICE, scope);
    assert_eq!(before[0]["actions"], serde_json::json!(["push", "pull"]));

    std::fs::write(&env.policy, "rules:\n  - name: broken\n    resources: [\"{team}/**\"]\n    actions: [pull]\n")
        .unwrap();
    wait_until("the policy error to be counted", Duration::from_secs(10), || {
        sample(&t.metrics(), r#"tollgate_policy_reloads_total{result="error"}"#) >= 1.0
    });
    assert_eq!(granted(&t, ALICE, scope), before, "a broken file keeps the running policy");
    t.wait_for_log("policy invalid", |l| l["message"] == "policy invalid; keeping the previous version");

    std::fs::write(&env.policy, PULL_ONLY_POLICY).unwrap();
    wait_until("the new policy", Duration::from_secs(10), || {
        granted(&t, ALICE, scope)[0]["actions"] == serde_json::json!(["pull"])
    });
    assert!(sample(&t.metrics(), r#"tollgate_policy_reloads_total{result="ok"}"#) >= 1.0);
}

#[test]
fn sighup_reloads_config_and_policy_and_an_invalid_config_keeps_running() {
    // A long check interval: only SIGHUP can explain a change here.
    let env = TestEnv::with(Opts {
        policy_yaml: Some("policy:\n  paths: [policy.yaml]\n  reload_interval: 1h\n".into()),
        ..Opts::default()
    });
    let text = std::fs::read_to_string(&env.config).unwrap();
    let t = Tollgate::start(&env, &[]);
    let scope = "repository:payments/api:push,pull";

    // An invalid config: refused, counted, logged with the reason; the server keeps its config.
    std::fs::write(&env.config, text.replace("token:\n", "token:\n  lifetime: 1s\n")).unwrap();
    t.signal(libc::SIGHUP);
    let line =
        t.wait_for_log("reload refused", |l| l["message"].as_str().is_some_and(|m| m.contains("reload refused")));
    assert!(line["errors"].as_str().unwrap_or_default().contains("token.lifetime"), "{line}");
    assert_eq!(sample(&t.metrics(), r#"tollgate_config_reloads_total{result="error"}"#), 1.0);
    let r = t.token(Some(ALICE), &format!("scope={scope}"), &[]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["expires_in"], 300);

    // A valid config with a new token lifetime and a new policy: both applied by SIGHUP.
    std::fs::write(&env.config, text.replace("token:\n", "token:\n  lifetime: 10m\n")).unwrap();
    std::fs::write(&env.policy, PULL_ONLY_POLICY).unwrap();
    t.signal(libc::SIGHUP);
    wait_until("the reload", Duration::from_secs(10), || {
        sample(&t.metrics(), r#"tollgate_config_reloads_total{result="ok"}"#) >= 1.0
    });
    let r = t.token(Some(ALICE), &format!("scope={scope}"), &[]);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["expires_in"], 600, "the new token lifetime applies");
    assert_eq!(jwt_parts(j["token"].as_str().unwrap()).1["access"][0]["actions"], serde_json::json!(["pull"]));
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[]);
    let body = format!(
        "grant_type=password&client_id=containerd-client&username=alice&password={}&service={SERVICE}&scope=repository:payments/api:pull",
        enc(ALICE.1)
    );
    let mut s = std::net::TcpStream::connect(&t.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    t.signal(libc::SIGTERM);
    t.wait_for_log("shutting down", |l| l["message"].as_str().is_some_and(|m| m.starts_with("shutting down")));
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&body.as_bytes()[10..]).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "the request in flight completed: {raw}");
    assert!(raw.contains("access_token"), "{raw}");
    let mut t = t;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = t.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "tollgate did not exit after SIGTERM:\n{}", t.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "clean exit: {status}\n{}", t.logs());
    assert!(t.logs().contains("every request in flight was answered"));
}

/// SIGTERM while requests keep coming must still stop the server (axum-server forgets a shutdown request
/// made while its accept loop is between two awaits; `reload::run` repeats it).
#[test]
fn sigterm_during_a_stream_of_requests_stops_the_server() {
    let env = TestEnv::new();
    let mut t = Tollgate::start(&env, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (addr, stop) = (t.addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = format!("/token?service={SERVICE}&scope=repository:public/x:pull");
                    if http_request(&addr, "GET", &path, &[], b"").is_ok_and(|r| r.status == 200) {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    t.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = t.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "tollgate ignored SIGTERM under load:\n{}", t.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(answered > 0, "the stream was served before the signal");
    assert!(status.success(), "{status}");
    // The log is written off the request path; a graceful shutdown still writes every queued line.
    let granted = t.audit_lines().iter().filter(|l| l["status"] == 200).count();
    assert!(granted >= answered, "{answered} answered, {granted} audit lines: lines were lost at shutdown");
}

/// A log reader that stops reading (a stuck collector, a full pipe) never stops the answers: lines beyond
/// the writer's queue are dropped and counted, and every request is still answered at once.
#[test]
fn a_stuck_log_reader_drops_lines_but_never_holds_a_request() {
    let env = TestEnv::new();
    // One audit line a request: the pipe's 64 KiB and the writer's queue (8,192 lines) hold about 8,300.
    let mut cmd = crate::rig::command(tollgate_bin());
    cmd.args(["serve", "--config"]).arg(&env.config).env("TOLLGATE_LOG", "info").env("TOLLGATE_LOG__FORMAT", "json");
    let (mut child, lines, addr) = spawn_listening(cmd);
    // From here on nobody reads the pipe: its 64 KiB fill, then the writer's queue.
    let path = format!("/token?service={SERVICE}&scope=repository:public/x:pull");
    let mut slowest = Duration::ZERO;
    let mut dropped = 0.0;
    for i in 0..20_000 {
        let started = Instant::now();
        let r = http_request(&addr, "GET", &path, &[], b"").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}");
        slowest = slowest.max(started.elapsed());
        if i % 500 == 499 {
            let m = http_request(&addr, "GET", "/metrics", &[], b"").expect("metrics");
            dropped = sample(&m.body, "tollgate_log_lines_dropped_total");
            if dropped > 0.0 {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(lines);
    assert!(dropped > 0.0, "20,000 audit lines never overflowed the queue");
    assert!(slowest < Duration::from_secs(5), "a request waited {slowest:?} for the log");
}

/// One run through every way in and out (passwords, robot secrets, refresh tokens as grant and as Basic
/// password, whoami, failures, 429s, reloads) with debug logs, then every byte tollgate wrote is searched
/// for every secret it saw.
#[test]
fn a_full_run_never_writes_a_password_token_or_secret_to_its_logs_or_metrics() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[("TOLLGATE_LOG", "debug"), ("TOLLGATE_RATE_LIMIT__CLIENT_ACCOUNT_FAILURES", "2")]);
    let mut secrets: Vec<String> = PEOPLE_SECRETS.iter().map(|s| s.to_string()).collect();
    let scope = "scope=repository:payments/api:push,pull";
    let r = t.token(Some(ALICE), &format!("{scope}&offline_token=true&client_id=docker"), &[]);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let refresh = j["refresh_token"].as_str().expect("refresh token").to_string();
    secrets.push(j["token"].as_str().unwrap().to_string());
    secrets.push(refresh.clone());
    let form =
        format!("grant_type=refresh_token&client_id=docker&refresh_token={}&service={SERVICE}&{scope}", enc(&refresh));
    let r = t.post_form(&form);
    assert_eq!(r.status, 200, "{}", r.body);
    secrets.push(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["access_token"].as_str().unwrap().to_string(),
    );
    assert_eq!(t.token(Some(("", &refresh)), scope, &[]).status, 200, "refresh token as a Basic password");
    assert_eq!(t.token(Some(ROBOT), "scope=repository:payments/api:push", &[]).status, 200);
    assert_eq!(t.token(Some(BOB), scope, &[]).status, 200);
    let wh = basic(ADMIN.0, ADMIN.1);
    assert_eq!(t.get("/whoami?scope=registry:catalog:*", &[("Authorization", &wh)]).status, 200);
    let tampered = format!("{}x", &refresh);
    assert_eq!(t.token(Some(("alice", &tampered)), scope, &[]).status, 401);
    secrets.push(tampered);
    for i in 0..4 {
        let wrong = format!("wrong-secret-number-{i}");
        t.token(Some((ROBOT.0, &wrong)), scope, &[]);
        secrets.push(wrong);
    }
    t.signal(libc::SIGHUP);
    t.wait_for_log_text("configuration reloaded");
    let m = t.metrics();
    let all = t.logs() + &m;
    assert!(all.contains("tollgate::audit"), "the run was logged");
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secrets(&all, &refs);
}

impl Tollgate {
    fn wait_for_log_text(&self, needle: &str) {
        wait_until(needle, Duration::from_secs(20), || self.logs().contains(needle));
    }
}

/// The compose Prometheus's alert rules: promtool checks the config that loads them and runs their unit
/// tests, and every metric they name is one a running tollgate exports.
#[test]
fn the_alert_rules_load_pass_their_promtool_tests_and_watch_metrics_tollgate_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let promtool = crate::rig::require("promtool", "prometheus");
    let prom_dir = root.join("compose/prometheus");
    // The config as the container sees it, with the mounted rules file at its place in the repository.
    let compose = std::fs::read_to_string(root.join("compose/docker-compose.full.yml")).unwrap();
    assert!(compose.contains("./prometheus/alerts.yml:/etc/prometheus/alerts.yml"), "the rules are mounted");
    let config = std::fs::read_to_string(prom_dir.join("prometheus.yml")).unwrap();
    assert!(config.contains("/etc/prometheus/alerts.yml"), "prometheus.yml loads the rules");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("prometheus.yml");
    std::fs::write(&local, config.replace("/etc/prometheus/alerts.yml", prom_dir.join("alerts.yml").to_str().unwrap()))
        .unwrap();
    for args in [vec!["check", "config", local.to_str().unwrap()], vec!["test", "rules", "alerts.test.yml"]] {
        let o = std::process::Command::new(&promtool).args(&args).current_dir(&prom_dir).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
    // The series the rules and the Grafana dashboard query.
    let rules = std::fs::read_to_string(prom_dir.join("alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root.join("compose/grafana/dashboards/tollgate.json")).unwrap();
    let series = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("tollgate_"))
            .map(str::to_string)
            .collect()
    };
    let (from_rules, from_dashboard) = (series(&rules), series(&dashboard));
    assert!(from_rules.len() >= 7 && from_dashboard.len() >= 10, "{from_rules:?} {from_dashboard:?}");
    let mut names: Vec<String> = from_rules.into_iter().chain(from_dashboard).collect();
    names.sort();
    names.dedup();
    // The full deployment's shape: the accounts file and a directory; a login through each.
    use crate::rig::slapd::{Slapd, SlapdOptions};
    let slapd = Slapd::start(SlapdOptions::default());
    let providers = format!(
        "providers:\n  - type: static\n    name: local\n    file: accounts.yaml\n{}",
        crate::ldap::provider_entry("corp", &slapd, crate::ldap::Mode::DirectBind, "")
    );
    let env = TestEnv::with(Opts { providers_yaml: Some(providers), ..Opts::default() });
    let tg = Tollgate::start(&env, &[("TOLLGATE_SERVER__PROBE_INTERVAL", "1s")]);
    for (user, password) in [(ALICE.0.to_string(), ALICE.1.to_string()), ("a+b".into(), Slapd::password("a+b"))] {
        let login = tg.token(Some((&user, &password)), "scope=repository:team-payments/app:pull", &[]);
        assert_eq!(login.status, 200, "{user}: {}", login.body);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = tg.metrics();
        let exported = |n: &str| {
            metrics
                .lines()
                .any(|l| l.strip_prefix(n).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        };
        let missing: Vec<&String> = names.iter().filter(|n| !exported(n)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alert rules or the dashboard name series tollgate does not export: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
