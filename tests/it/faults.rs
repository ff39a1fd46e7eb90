//! Fault tests: tollgate under load while things break. Each prints the number of requests, the answers
//! by status and the wrong grants, and asserts there are none. A wrong grant is a 200 whose token holds an
//! action the same request was not granted while everything was healthy (the "truth" taken first), or any
//! 200 for a password that was refused then.
//!
//! - the LDAP server killed (SIGKILL) and restarted during a load run;
//! - the OIDC provider answering only after tollgate's timeout, then not at all (a proxy in front of it);
//! - the policy file replaced with broken versions under load;
//! - 1,000 concurrent logins of the same user on a cold cache: one upstream check (counted by slapd);
//! - clients that hang up mid-request (mid-headers, mid-body, before reading the answer, and the client
//!   whose login another 20 were waiting on);
//! - very slow clients (headers and bodies dripped a byte at a time) next to normal ones.
//!
//! No timing is asserted; every wait is bounded, so a hang fails the test instead of stalling the suite.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tollgate::app::AppState;

use crate::harness::*;
use crate::ldap::{actions_of, env as ldap_env, granted, user, Mode, PUSH_PAYMENTS};
use crate::rig::slow_proxy::{self, SlowProxy};
use crate::rig::*;

/// The load runs wrong passwords from one address on purpose; the failed-login limit is tested in ops.rs.
pub(crate) const NO_RATE_LIMIT: &str = "rate_limit:\n  enabled: false\n";

/// One kind of request the load mixes: a user, a password and a scope.
#[derive(Clone)]
struct Probe {
    user: String,
    password: String,
    scope: String,
}

impl Probe {
    fn new(user: &str, password: &str, scope: &str) -> Probe {
        Probe { user: user.into(), password: password.into(), scope: scope.into() }
    }
}

/// What a healthy tollgate answered: the granted actions, or None when it refused the login.
type Truth = Option<BTreeSet<String>>;

/// Requests and answers of one run.
#[derive(Default, Debug)]
struct Tally {
    requests: u64,
    by_status: BTreeMap<u16, u64>,
    wrong_grants: Vec<String>,
    /// 401 for a password that was accepted while healthy: a denial the user would be wrongly told is theirs.
    wrong_refusals: u64,
    /// Requests that did not finish within the bound (a hang).
    hung: u64,
}

impl Tally {
    fn print(&self, name: &str) {
        println!(
            "FAULT {name}: {} requests, by status {:?}, wrong grants {}, right passwords refused with 401 {}, hung {}",
            self.requests,
            self.by_status,
            self.wrong_grants.len(),
            self.wrong_refusals,
            self.hung
        );
    }

    fn assert_no_wrong_grants(&self) {
        assert!(self.wrong_grants.is_empty(), "wrong grants: {:?}", self.wrong_grants);
        assert_eq!(self.hung, 0, "requests hung");
    }

    fn count(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

/// Ask tollgate once, in process: (status, granted actions when 200).
async fn ask(state: &Arc<AppState>, p: &Probe) -> (u16, BTreeSet<String>) {
    let (status, actions) = granted(state, (&p.user, &p.password), &p.scope).await;
    (status, actions.into_iter().collect())
}

async fn truth(state: &Arc<AppState>, probes: &[Probe]) -> Vec<Truth> {
    let mut out = Vec::new();
    for p in probes {
        match ask(state, p).await {
            (200, actions) => out.push(Some(actions)),
            (401, _) => out.push(None),
            (s, _) => panic!("the healthy answer for {} on {} is {s}", p.user, p.scope),
        }
    }
    out
}

/// Judge one answer against the truth.
fn record(tally: &mut Tally, p: &Probe, truth: &Truth, status: u16, actions: &BTreeSet<String>) {
    tally.requests += 1;
    *tally.by_status.entry(status).or_default() += 1;
    match (status, truth) {
        (200, None) => tally.wrong_grants.push(format!("{} got {actions:?} with a refused password", p.user)),
        (200, Some(allowed)) if !actions.is_subset(allowed) => {
            tally.wrong_grants.push(format!("{} got {actions:?} on {}, allowed {allowed:?}", p.user, p.scope))
        }
        (401, Some(_)) => tally.wrong_refusals += 1,
        _ => {}
    }
}

/// `workers` tasks cycling through `probes` in process until `stop` is set. Each request is bounded by 30 s.
async fn load(
    state: Arc<AppState>,
    probes: Vec<Probe>,
    truths: Vec<Truth>,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (state, probes, truths, stop, tally) =
            (state.clone(), probes.clone(), truths.clone(), stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::SeqCst) {
                let (p, t) = (&probes[i % probes.len()], &truths[i % probes.len()]);
                i += 1;
                match tokio::time::timeout(Duration::from_secs(30), ask(&state, p)).await {
                    Ok((status, actions)) => record(&mut tally.lock().unwrap(), p, t, status, &actions),
                    Err(_) => tally.lock().unwrap().hung += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("load worker");
    }
    Arc::try_unwrap(tally).expect("workers done").into_inner().unwrap()
}

/// Run `load` on a runtime of its own while `faults` runs on this thread; returns the tally.
fn under_load(state: &Arc<AppState>, probes: &[Probe], workers: usize, faults: impl FnOnce()) -> Tally {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let truths = rt.block_on(truth(state, probes));
    let stop = Arc::new(AtomicBool::new(false));
    let run = rt.spawn(load(state.clone(), probes.to_vec(), truths, workers, stop.clone()));
    faults();
    stop.store(true, Ordering::SeqCst);
    rt.block_on(run).expect("load run")
}

/// Retry until `p` gets `want` (the service recovered), for at most 20 s.
fn recovers(state: &Arc<AppState>, p: &Probe, want: u16) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = rt.block_on(ask(state, p));
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "{} still gets {status}, not {want}, 20 s after the fault ended", p.user);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What alice (team-payments) is granted on payments/api when everything is healthy.
fn push_pull() -> Truth {
    Some(["pull".to_string(), "push".to_string()].into_iter().collect())
}

fn ldap_probes() -> Vec<Probe> {
    let (alice, alice_pw) = user("alice");
    let (bob, bob_pw) = user("bob");
    vec![
        Probe::new(&alice, &alice_pw, PUSH_PAYMENTS),
        Probe::new(&alice, "not-her-password", PUSH_PAYMENTS),
        Probe::new(&bob, &bob_pw, PUSH_PAYMENTS),
        Probe::new("nobody-here", "whatever", PUSH_PAYMENTS),
    ]
}

#[test]
fn ldap_killed_and_restarted_under_load_grants_nothing_wrong_and_recovers() {
    let mut slapd = Slapd::start(SlapdOptions::default());
    // No cache: every request reaches the directory, so the outage is seen by every request in it. The load
    // sends wrong passwords from one address: the failed-login limit (429) would soon answer everything.
    let state =
        ldap_env(&slapd, Mode::StartTlsMemberOf, &format!("  ttl: 0s\n  negative_ttl: 0s\n{NO_RATE_LIMIT}")).state();
    let probes = ldap_probes();
    let tally = under_load(&state, &probes, 8, || {
        std::thread::sleep(Duration::from_millis(1500));
        slapd.stop();
        std::thread::sleep(Duration::from_secs(3));
        slapd.start_again();
        std::thread::sleep(Duration::from_secs(3));
    });
    tally.print("LDAP killed and restarted");
    tally.assert_no_wrong_grants();
    assert!(tally.count(503) > 0, "the outage was never seen: {tally:?}");
    assert_eq!(tally.wrong_refusals, 0, "a directory outage told a user their right password was wrong");
    recovers(&state, &probes[0], 200);
}

/// A token request for carol through the OIDC password grant, with the IdP behind a proxy.
#[test]
fn oidc_provider_slow_then_silent_grants_nothing_wrong_and_recovers() {
    use crate::oidc::{keycloak_users, provider_yaml, CAROL};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let idp =
        OidcProvider::start(keycloak_users(), OidcProviderOptions { issuer_port: Some(port), ..Default::default() });
    let upstream: SocketAddr = idp.addr().parse().unwrap();
    let proxy = SlowProxy::start(listener, upstream, Duration::from_secs(3));
    let env = TestEnv::with(Opts {
        extra_providers_yaml: provider_yaml("keycloak", &idp, &["groups_claim: realm_access.roles", "timeout: 1s"]),
        extra_yaml: format!("identity_cache:\n  ttl: 0s\n  negative_ttl: 0s\n{NO_RATE_LIMIT}"),
        ..Opts::default()
    });
    let state = env.state();
    let probes = vec![
        Probe::new(CAROL.0, CAROL.1, PUSH_PAYMENTS),
        Probe::new(CAROL.0, "not-carols-password", PUSH_PAYMENTS),
        Probe::new(ALICE.0, ALICE.1, PUSH_PAYMENTS), // a static account next to the IdP: unaffected
    ];
    let tally = under_load(&state, &probes, 6, || {
        std::thread::sleep(Duration::from_secs(1));
        proxy.set(slow_proxy::Mode::Slow);
        std::thread::sleep(Duration::from_secs(4));
        proxy.set(slow_proxy::Mode::Silent);
        std::thread::sleep(Duration::from_secs(4));
        proxy.set(slow_proxy::Mode::Pass);
        std::thread::sleep(Duration::from_secs(2));
    });
    tally.print("OIDC provider slow, then silent");
    tally.assert_no_wrong_grants();
    assert!(tally.count(503) > 0, "the slow IdP was never seen: {tally:?}");
    assert_eq!(tally.wrong_refusals, 0, "a hung IdP told a user their right password was wrong");
    recovers(&state, &probes[0], 200);
}

/// Truncated YAML, a rule with an unknown key, and an empty file, each in place of the policy for a while.
#[test]
fn policy_replaced_with_broken_versions_under_load_keeps_the_last_good_one() {
    let env = TestEnv::with(Opts {
        policy_yaml: Some("policy:\n  paths: [policy.yaml]\n  reload_interval: 20ms\n".into()),
        ..Opts::default()
    });
    let state = env.state();
    let good = tollgate::policy::EXAMPLE_POLICY;
    let probes = vec![
        Probe::new(ALICE.0, ALICE.1, "repository:payments/api:push,pull"),
        Probe::new(BOB.0, BOB.1, "repository:payments/api:push,pull,delete"),
        Probe::new(ROBOT.0, ROBOT.1, "repository:payments/api:push,pull,delete"),
        Probe::new(ADMIN.0, ADMIN.1, "repository:payments/api:*"),
    ];
    let broken = [
        good[..good.len() / 2].to_string(),
        format!("{good}\n  - name: typo\n    match:\n      usrname: [mallory]\n    resources: [\"**\"]\n    actions: [\"*\"]\n"),
        String::new(),
        "rules: [ {".to_string(),
    ];
    let path = env.policy.clone();
    let tally = under_load(&state, &probes, 6, || {
        for round in 0..10 {
            for b in &broken {
                // A plain write, not an atomic rename: a reader may also see the half-written file.
                std::fs::write(&path, b).unwrap();
                std::thread::sleep(Duration::from_millis(60 + round * 5));
            }
        }
    });
    tally.print("policy replaced with broken versions");
    tally.assert_no_wrong_grants();
    assert_eq!(tally.requests, tally.count(200) + tally.count(401), "only healthy answers expected: {tally:?}");
    // The last good version is still in force, and a good new version is taken.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, actions) = rt.block_on(ask(&state, &probes[0]));
    assert_eq!((status, actions.len()), (200, 2), "alice lost her push on payments");
    std::fs::write(&path, "rules:\n  - name: public-read\n    resources: [\"public/**\"]\n    actions: [pull]\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.block_on(ask(&state, &probes[0])).1.is_empty() {
        assert!(Instant::now() < deadline, "the valid new policy (public-read only) never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_burst_of_1000_cold_logins_of_one_user_makes_one_directory_check() {
    let slapd = Slapd::start(SlapdOptions::default());
    let state = ldap_env(&slapd, Mode::StartTlsMemberOf, "  ttl: 5m\n").state();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (bob, bob_pw) = user("bob");
    let (alice, alice_pw) = user("alice");
    // Open the pooled connection (its service bind) with another user, so the count is alice's alone.
    assert_eq!(rt.block_on(granted(&state, (&bob, &bob_pw), "repository:web/a:pull")).0, 200);
    let before = slapd.op_counts();
    let probe = Probe::new(&alice, &alice_pw, PUSH_PAYMENTS);
    let truth = push_pull();
    let tally = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let (state, probe) = (state.clone(), probe.clone());
            tasks.push(tokio::spawn(async move { ask(&state, &probe).await }));
        }
        let mut tally = Tally::default();
        for t in tasks {
            let (status, actions) = t.await.unwrap();
            record(&mut tally, &probe, &truth, status, &actions);
        }
        tally
    });
    let (binds, searches) = Slapd::ops_between(before, slapd.op_counts());
    tally.print("1000 concurrent cold logins of one user");
    println!("FAULT 1000 concurrent cold logins of one user: LDAP binds {binds}, searches {searches}");
    tally.assert_no_wrong_grants();
    assert_eq!(tally.count(200), 1000, "{tally:?}");
    assert_eq!((binds, searches), (1, 1), "one search and one bind for the whole burst");
}

/// Write raw bytes to a fresh connection from `from`, then drop it without reading.
async fn hang_up_after(addr: SocketAddr, from: std::net::IpAddr, bytes: Vec<u8>) {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else { return };
    if socket.bind(SocketAddr::new(from, 0)).is_err() {
        return;
    }
    if let Ok(mut s) = socket.connect(addr).await {
        let _ = s.write_all(&bytes).await;
    }
}

fn token_get(user: (&str, &str)) -> Vec<u8> {
    format!(
        "GET /token?service={SERVICE}&scope=repository:payments/api:push,pull HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\r\n",
        basic(user.0, user.1)
    )
    .into_bytes()
}

/// One request on a fresh connection, read to the end (`Connection: close`): (status, granted actions).
async fn over_tcp(addr: SocketAddr, user: (&str, &str)) -> (u16, BTreeSet<String>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = String::from_utf8(token_get(user)).unwrap();
    req.insert_str(req.len() - 2, "Connection: close\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let actions = match serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|j| j["token"].as_str().map(String::from))
    {
        Some(t) => actions_of(&t).into_iter().collect(),
        None => BTreeSet::new(),
    };
    (status, actions)
}

#[test]
fn clients_hanging_up_mid_request_do_not_disturb_the_others() {
    // Cold cache: every login hashes (argon2id), so hang-ups land while work is in progress.
    let env = TestEnv::with(Opts {
        extra_yaml: "identity_cache:\n  ttl: 0s\n  negative_ttl: 0s\n".into(),
        ..Opts::default()
    });
    let tg = env.start();
    let addr = tg.addr;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let alice_truth = push_pull();
    let probe = Probe::new(ALICE.0, ALICE.1, PUSH_PAYMENTS);
    let tally = rt.block_on(async {
        let get = token_get(ALICE);
        let mut hangups = Vec::new();
        for i in 0..300 {
            let bytes = match i % 3 {
                0 => get[..get.len() / 2].to_vec(), // mid-headers
                1 => get.clone(),                   // whole request, then gone before the answer
                _ => b"POST /token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\ngrant_type=password&username=alice".to_vec(),
            };
            // From addresses of their own: a login abandoned by its client is charged to its sender's
            // failed-login budget (fairness.rs proves that), and the point here is the others.
            hangups.push(tokio::spawn(hang_up_after(addr, crate::fairness::source(42, i), bytes)));
        }
        let mut normal = Vec::new();
        for _ in 0..30 {
            normal.push(tokio::spawn(over_tcp(addr, ALICE)));
        }
        for h in hangups {
            h.await.unwrap();
        }
        let mut tally = Tally::default();
        for n in normal {
            let (status, actions) = tokio::time::timeout(Duration::from_secs(30), n).await.expect("bounded").unwrap();
            record(&mut tally, &probe, &alice_truth, status, &actions);
        }
        tally
    });
    tally.print("300 clients hanging up mid-request, 30 normal ones alongside");
    tally.assert_no_wrong_grants();
    assert_eq!(tally.count(200), 30, "{tally:?}");

    // The client whose login the others wait on (single-flight) hangs up: the waiters still get answers.
    // Default cache (5 minutes). All 40 come from one in-process address, and a login abandoned by its
    // client is charged to its sender's failed-login budget (fairness.rs proves that): limits off here,
    // where the point is the single flight.
    let cached = TestEnv::with(Opts { extra_yaml: "rate_limit:\n  enabled: false\n".into(), ..Opts::default() });
    let state = cached.state();
    let tally = rt.block_on(async {
        let mut all = Vec::new();
        for _ in 0..40 {
            let (state, probe) = (state.clone(), probe.clone());
            all.push(tokio::spawn(async move { ask(&state, &probe).await }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The first half (the leader among them) goes away while the check runs.
        for t in &all[..20] {
            t.abort();
        }
        let mut tally = Tally::default();
        for t in all.into_iter().skip(20) {
            let (status, actions) = tokio::time::timeout(Duration::from_secs(30), t).await.expect("bounded").unwrap();
            record(&mut tally, &probe, &alice_truth, status, &actions);
        }
        tally
    });
    tally.print("20 of 40 concurrent cold logins hang up, the leader among them");
    tally.assert_no_wrong_grants();
    assert_eq!(tally.count(200), 20, "{tally:?}");
}

/// A connection that sends `bytes` one at a time, `every` apart, until the server closes it or `until`.
/// Returns true when the server closed it first.
/// Writes `bytes` (cycled) a byte every `every` until the server closes the connection (true) or `within`
/// has passed since the connection was made (false). A close is seen at once: the client reads while it
/// waits, so it does not depend on a later write failing.
async fn drip(addr: SocketAddr, from: std::net::IpAddr, bytes: Vec<u8>, every: Duration, within: Duration) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else { return true };
    if socket.bind(SocketAddr::new(from, 0)).is_err() {
        return true;
    }
    let Ok(s) = socket.connect(addr).await else { return true };
    let until = Instant::now() + within;
    let (mut r, mut w) = s.into_split();
    let mut buf = [0u8; 1024];
    for b in bytes.iter().cycle() {
        if Instant::now() >= until {
            return false;
        }
        if w.write_all(&[*b]).await.is_err() {
            return true;
        }
        tokio::select! {
            n = r.read(&mut buf) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return true;
                }
            }
            _ = tokio::time::sleep(every) => {}
        }
    }
    false
}

/// 1,000 clients drip their headers or bodies a byte every 300 ms. Normal clients alongside are served, and
/// the server closes every slow connection once past its header or body deadline (src/server/conn.rs), so
/// they cannot pile up until the file descriptors run out.
#[test]
fn very_slow_clients_do_not_exhaust_the_server() {
    use tollgate::server::conn::{BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT};
    let env = TestEnv::new();
    let tg = env.start();
    let addr = tg.addr;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let probe = Probe::new(ALICE.0, ALICE.1, PUSH_PAYMENTS);
    let alice_truth = push_pull();
    // Counted from each connection's own start: under the full suite on two cores, 1,000 connects can take
    // seconds to be accepted, and the server's deadlines start at its accept.
    let grace = HEADER_READ_TIMEOUT.max(BODY_READ_TIMEOUT) + Duration::from_secs(4);
    let (tally, closed, slow) = rt.block_on(async {
        assert_eq!(over_tcp(addr, ALICE).await.0, 200); // warm the cache
        let start = Instant::now();
        let mut slow = Vec::new();
        for i in 0..1000 {
            let bytes = if i % 4 == 0 {
                // Headers complete, then a body that never ends.
                b"POST /token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\ngrant_type=password&username=alice&password=".to_vec()
            } else {
                token_get(ALICE)
            };
            // From 100 addresses, 10 each: under the per-address cap, so every one holds its slot to its
            // deadline (one address holding many is what the cap and hostile.rs are about).
            let from = crate::fairness::source(41, i / 10);
            slow.push(tokio::spawn(drip(addr, from, bytes, Duration::from_millis(300), grace)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut tally = Tally::default();
        let mut times = Vec::new();
        while start.elapsed() < Duration::from_secs(6) {
            let t = Instant::now();
            let (status, actions) =
                tokio::time::timeout(Duration::from_secs(30), over_tcp(addr, ALICE)).await.expect("a normal client hung");
            times.push(t.elapsed());
            record(&mut tally, &probe, &alice_truth, status, &actions);
        }
        times.sort();
        println!(
            "FAULT 1000 slow clients: normal requests alongside p50 {:?}, max {:?}",
            times[times.len() / 2],
            times.last().unwrap()
        );
        let n = slow.len();
        let mut closed = 0;
        for s in slow {
            closed += u32::from(s.await.unwrap());
        }
        (tally, closed, n)
    });
    tally.print("1000 slow clients dripping headers and bodies, normal clients alongside");
    println!("FAULT 1000 slow clients: {closed} of {slow} slow connections closed by the server within {grace:?}");
    tally.assert_no_wrong_grants();
    assert!(tally.requests > 0 && tally.count(200) == tally.requests, "normal clients were not served: {tally:?}");
    assert_eq!(closed as usize, slow, "slow connections outlived their deadlines");
}
