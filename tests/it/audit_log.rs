//! The audit line as the real `tollgate serve` writes it now that its log writer's thread formats it from
//! the record a request hands over: the very bytes the release before wrote, in the text and the JSON
//! format (the expected lines below were written by that release for the same requests, with only the
//! timestamp and the `jti` left out), each client's lines in the order of its requests, and nothing at
//! all (but the metrics) when the log filter turns the audit target off. A full queue and a shutdown are
//! in `ops.rs` (`a_stuck_log_reader_drops_lines_but_never_holds_a_request`,
//! `sigterm_during_a_stream_of_requests_stops_the_server`).

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::ops::{sample, tollgate_bin, Tollgate};

/// `tollgate serve` on the embedded demo config in a directory of its own, its log in `format`, listening
/// on a port chosen at run time.
fn demo(dir: &std::path::Path, format: &str) -> Tollgate {
    let log = dir.join("tollgate.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = crate::rig::command(tollgate_bin());
    cmd.arg("serve")
        .current_dir(dir)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_LOG")
        .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0")
        .env("TOLLGATE_LOG__FORMAT", format)
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .stdin(std::process::Stdio::null());
    let child = cmd.spawn().expect("tollgate serve starts");
    let mut t = Tollgate { child, log, addr: String::new(), metrics_addr: None };
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.addr.is_empty() {
        let logs = t.logs();
        let listening = logs.lines().find(|l| l.contains("tollgate listening"));
        if let Some(line) = listening {
            t.addr = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => v["addr"].as_str().unwrap().to_string(),
                Err(_) => line.split("addr=").nth(1).unwrap().split(' ').next().unwrap().to_string(),
            };
        }
        assert!(t.child.try_wait().unwrap().is_none(), "tollgate exited during start:\n{logs}");
        assert!(Instant::now() < deadline, "tollgate did not start:\n{logs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t
}

/// The demo's three decisions: a partial grant with a client id that needs no escaping in JSON but has a
/// quote and a non-ASCII character, a refused login for a name with a quote and a backslash, and a
/// refused service with a space and a quote.
fn three_decisions(t: &Tollgate) {
    let alice = basic("alice", "alice-demo-password");
    let q = "/token?service=registry.local&scope=repository:payments/api:push,pull&scope=repository:prod/web:push\
             &client_id=my%22tool%E2%9C%93";
    assert_eq!(t.get(q, &[("Authorization", &alice)]).status, 200);
    let wrong = basic("bo\"b\\", "wrong-password-z");
    assert_eq!(
        t.get("/token?service=registry.local&scope=repository:web/x:pull", &[("Authorization", &wrong)]).status,
        401
    );
    assert_eq!(t.get("/token?service=no%20pe%22&scope=repository:web/x:pull", &[]).status, 400);
}

/// The audit lines of `t`'s log with the timestamp and the jti replaced by `<time>` and `<jti>`.
fn audit_lines_without_time_and_jti(t: &Tollgate) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = t.logs();
        let lines: Vec<String> = logs
            .lines()
            .filter(|l| l.contains("tollgate::audit: decision") || l.contains("\"target\":\"tollgate::audit\""))
            .map(mask)
            .collect();
        if lines.len() >= 3 || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mask(line: &str) -> String {
    let mut s = line.to_string();
    let stamp = "2026-12-06T22:15:50.123456Z".len();
    let at = s.find("\"timestamp\":\"").map_or(0, |i| i + "\"timestamp\":\"".len());
    s.replace_range(at..at + stamp, "<time>");
    for key in ["jti=\"", "\"jti\":\""] {
        if let Some(i) = s.find(key).map(|i| i + key.len()) {
            let end = i + s[i..].find('"').unwrap();
            if end > i {
                s.replace_range(i..end, "<jti>");
            }
        }
    }
    s
}

/// Written by the release before (8562ad7) for [`three_decisions`].
#[rustfmt::skip]
const TEXT: [&str; 3] = [
    r#"<time>  INFO tollgate::audit: decision endpoint="token" method="GET" outcome="partial" status=200 subject="alice" provider=demo auth_method="password" client_ip=127.0.0.1 client_id=my"tool✓ service=registry.local requested=["repository:payments/api:push,pull","repository:prod/web:push"] granted=["repository:payments/api:push,pull"] rules=["team-namespaces"] refresh_token_issued=false jti="<jti>" workload_issuer="" workload_subject="" workload_jti="" access_token="" reason= provider_reason="#,
    r#"<time>  INFO tollgate::audit: decision endpoint="token" method="GET" outcome="unauthorized" status=401 subject="bo\"b\\" provider= auth_method="none" client_ip=127.0.0.1 client_id=none service=registry.local requested=["repository:web/x:pull"] granted=[] rules=[] refresh_token_issued=false jti="" workload_issuer="" workload_subject="" workload_jti="" access_token="" reason=invalid username or password provider_reason=unknown user"#,
    r#"<time>  INFO tollgate::audit: decision endpoint="token" method="GET" outcome="bad_request" status=400 subject="" provider= auth_method="none" client_ip=127.0.0.1 client_id=none service=no pe" requested=[] granted=[] rules=[] refresh_token_issued=false jti="" workload_issuer="" workload_subject="" workload_jti="" access_token="" reason=unknown service "no pe\""; this server issues tokens for: registry.local provider_reason="#,
];

#[rustfmt::skip]
const JSON: [&str; 3] = [
    r#"{"access_token":"","auth_method":"password","client_id":"my\"tool✓","client_ip":"127.0.0.1","endpoint":"token","granted":["repository:payments/api:push,pull"],"jti":"<jti>","level":"INFO","message":"decision","method":"GET","outcome":"partial","provider":"demo","provider_reason":"","reason":"","refresh_token_issued":false,"requested":["repository:payments/api:push,pull","repository:prod/web:push"],"rules":["team-namespaces"],"service":"registry.local","status":200,"subject":"alice","target":"tollgate::audit","timestamp":"<time>","workload_issuer":"","workload_jti":"","workload_subject":""}"#,
    r#"{"access_token":"","auth_method":"none","client_id":"none","client_ip":"127.0.0.1","endpoint":"token","granted":[],"jti":"","level":"INFO","message":"decision","method":"GET","outcome":"unauthorized","provider":"","provider_reason":"unknown user","reason":"invalid username or password","refresh_token_issued":false,"requested":["repository:web/x:pull"],"rules":[],"service":"registry.local","status":401,"subject":"bo\"b\\","target":"tollgate::audit","timestamp":"<time>","workload_issuer":"","workload_jti":"","workload_subject":""}"#,
    r#"{"access_token":"","auth_method":"none","client_id":"none","client_ip":"127.0.0.1","endpoint":"token","granted":[],"jti":"","level":"INFO","message":"decision","method":"GET","outcome":"bad_request","provider":"","provider_reason":"","reason":"unknown service \"no pe\\\"\"; this server issues tokens for: registry.local","refresh_token_issued":false,"requested":[],"rules":[],"service":"no pe\"","status":400,"subject":"","target":"tollgate::audit","timestamp":"<time>","workload_issuer":"","workload_jti":"","workload_subject":""}"#,
];

#[test]
fn the_audit_line_is_byte_for_byte_the_line_of_the_release_before_in_text_and_json() {
    for (format, expected) in [("text", TEXT), ("json", JSON)] {
        let dir = tempfile::tempdir().unwrap();
        let t = demo(dir.path(), format);
        three_decisions(&t);
        let lines = audit_lines_without_time_and_jti(&t);
        assert_eq!(lines, expected, "{format}:\n{}", t.logs());
    }
}

/// Four clients, each sending its requests one after another, numbered in `client_id`: every request has
/// its line, and each client's lines come in the order of its requests.
#[test]
fn each_clients_audit_lines_come_in_the_order_of_its_requests() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[]);
    let n = 300;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let addr = t.addr.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    let path = format!("/token?service={SERVICE}&scope=repository:public/x:pull&client_id=c{c}-{i}");
                    let r = crate::rig::http::http_request(&addr, "GET", &path, &[], b"").unwrap();
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            })
        })
        .collect();
    clients.into_iter().for_each(|c| c.join().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = t.audit_lines();
        if lines.len() >= 4 * n || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for c in 0..4 {
        let prefix = format!("c{c}-");
        let seen: Vec<usize> =
            lines.iter().filter_map(|l| l["client_id"].as_str()?.strip_prefix(&prefix)?.parse().ok()).collect();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "client {c}'s lines, every one and in order");
    }
}

/// `TOLLGATE_LOG=info,tollgate::audit=off` writes no audit line (the filter is asked once, at start, and
/// the request then builds nothing for the line) but still counts the request; other lines still come.
#[test]
fn the_log_filter_turns_the_audit_line_off_but_not_the_metrics() {
    let env = TestEnv::new();
    let t = Tollgate::start(&env, &[("TOLLGATE_LOG", "info,tollgate::audit=off")]);
    for _ in 0..3 {
        assert_eq!(t.token(Some(ALICE), "scope=repository:payments/api:pull", &[]).status, 200);
    }
    t.signal(libc::SIGHUP);
    t.wait_for_log("of the reload", |l| l["message"] == "configuration reloaded");
    assert!(t.audit_lines().is_empty(), "audit lines although the filter turned them off:\n{}", t.logs());
    let m = t.metrics();
    assert_eq!(sample(&m, "tollgate_token_requests_total{outcome=\"granted\",client_id=\"none\"}"), 3.0, "{m}");
}

/// The text format writes a refused `service` and the `client_id` as the client sent them; a newline in one
/// must not let an unauthenticated client start a log line of its own (here a forged audit line). Every
/// line of the log is one the server began: the control characters are escaped inside the decision's line.
#[test]
fn a_newline_in_what_a_client_sends_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let t = demo(dir.path(), "text");
    let forged = "2026-01-01T00:00:00.000000Z  INFO tollgate::audit: decision outcome=\"granted\" subject=\"mallory\"";
    let q = format!(
        "/token?service=registry.local%0A{}&client_id=ci%0D%0A{}&scope=repository:payments/api:pull",
        enc(forged),
        enc(forged)
    );
    assert_eq!(t.get(&q, &[]).status, 400);
    let logs = t.logs();
    let decision = logs.lines().find(|l| l.contains("tollgate::audit: decision endpoint=")).expect("the audit line");
    assert!(decision.contains("registry.local\\n2026-01-01T00:00:00.000000Z"), "{decision}");
    for line in logs.lines() {
        assert!(
            line.starts_with("20") && !line.starts_with("2026-01-01T00:00:00"),
            "a line the server did not begin: {line:?}\n{logs}"
        );
    }
}
