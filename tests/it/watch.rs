//! The directory watchers against real directories: OpenLDAP slapd with the syncprov overlay (RFC 4533
//! refreshAndPersist) and the Samba AD DC (uSNChanged polling).
//!
//! - slapd: an `ldapmodify` removing alice from a group, and one disabling her, are reported (alice's
//!   account, the group under the name the provider gives it) within 2 s; the watcher's connection cut
//!   (through a proxy that can drop every connection) marks the provider degraded, shortening the identity
//!   cache's freshness, and a change made while it was cut is reported on recovery from the cookie; a
//!   watcher stopped and started again resumes from the cookie it persisted in the data dir.
//! - the real `tollgate serve`: the change counted in `tollgate_directory_changes_total` and logged, and
//!   `tollgate_ldap_watch_degraded` 1 while slapd is down and 0 once it is back.
//! - Samba AD DC: a membership change (`samba-tool group removemembers`) and `samba-tool user disable`
//!   reported within 2 s, deleted users too.
//!
//! Each delay from the directory change (the tool's return) to the report is printed.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate::config::ldap::{LdapConfig, LdapSettings};
use tollgate::identity::ldap::watch::{self, Watcher};
use tollgate::identity::watch::{Change, ChangeSink, Freshness};

use crate::harness::*;
use crate::ops::{sample, wait_until, Tollgate};
use crate::rig::slapd::{user_dn, GROUPS, PEOPLE, SERVICE_DN};
use crate::rig::*;

/// The changes a watcher reported, in order.
#[derive(Default)]
struct Seen {
    changes: Mutex<Vec<Change>>,
}

impl ChangeSink for Seen {
    fn changed(&self, change: Change, _at_ms: u64) {
        self.changes.lock().unwrap().push(change);
    }
}

impl Seen {
    fn len(&self) -> usize {
        self.changes.lock().unwrap().len()
    }

    /// Wait (at most `bound` from `t0`, taken just before the directory was changed) until every change in
    /// `want` was reported after the first `from`; the delay since `t0`.
    fn wait_for(&self, t0: Instant, from: usize, want: &[Change], bound: Duration, what: &str) -> Duration {
        let start = t0;
        loop {
            let got: Vec<Change> = self.changes.lock().unwrap()[from..].to_vec();
            if want.iter().all(|w| got.contains(w)) {
                let delay = start.elapsed();
                println!("WATCH {what}: reported after {} ms", delay.as_millis());
                return delay;
            }
            assert!(start.elapsed() < bound, "{what}: not all of {want:?} reported within {bound:?}; got {got:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn account(provider: &str, u: &str) -> Change {
    Change::Account { provider: provider.into(), username: u.into() }
}

fn group(provider: &str, g: &str, members: &[&str]) -> Change {
    Change::Group {
        provider: provider.into(),
        group: g.into(),
        members: members.iter().map(|m| m.to_string()).collect(),
    }
}

fn settings(yaml: &str) -> LdapSettings {
    let raw: LdapConfig = serde_norway::from_str(yaml).expect("an ldap entry");
    let mut problems = Vec::new();
    tollgate::config::ldap::validate(raw, "providers[0]", Path::new(""), &mut problems)
        .unwrap_or_else(|| panic!("invalid: {problems:?}"))
}

/// The rig directory's provider entry (memberOf groups, lower-cased, under ou=groups) reaching slapd at
/// `port`, named `name` (unique per test: degraded marks are per provider name and process-wide).
fn slapd_entry(name: &str, slapd: &Slapd, port: u16, watch: &str) -> String {
    format!(
        "{{name: {name}, url: 'ldap://127.0.0.1:{port}', bind_dn: '{SERVICE_DN}', bind_password_file: '{}', \
         user_base_dn: '{PEOPLE}', user_filter: '(&(objectClass=inetOrgPerson)(uid={{username}}))', \
         disabled_filter: '(employeeType=disabled)', groups: {{base_dn: '{GROUPS}', lowercase: true}}, \
         connect_timeout: 2s, timeout: 2s, watch: {{{watch}}}}}",
        slapd.service_password_file().display()
    )
}

/// A TCP proxy whose connections can all be cut at once (and new ones refused) while the server behind it
/// keeps running: the watcher's connection killed, with the directory still taking changes.
struct Cutter {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Cutter {
    fn start(upstream: u16) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, open, stop) =
            (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (c, o, s) = (cut.clone(), open.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                o.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Cutter { port, cut, open, stop }
    }

    /// Drop every open connection and refuse new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn start(rt: &tokio::runtime::Runtime, cfg: &LdapSettings, data: &Path, sink: &Arc<Seen>) -> Watcher {
    let _in = rt.enter();
    let sink: Arc<dyn ChangeSink> = sink.clone();
    watch::spawn(cfg, data, sink).expect("watcher config").expect("a watcher")
}

fn wait_in_sync(w: &Watcher, bound: Duration) {
    let start = Instant::now();
    while !w.status.up.load(Ordering::Relaxed) {
        assert!(start.elapsed() < bound, "the watcher did not get in sync within {bound:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn syncrepl_reports_a_group_removal_and_a_disabled_account_within_2s_and_resumes_from_its_cookie() {
    let slapd = Slapd::start(SlapdOptions::default());
    let proxy = Cutter::start(slapd.ldap_port);
    let name = "watch-slapd";
    let cfg = settings(&slapd_entry(name, &slapd, proxy.port, "degraded_after: 1s, degraded_ttl: 3s"));
    let data = tempdir("watch-data");
    let rt = runtime();
    let seen = Arc::new(Seen::default());
    let w = start(&rt, &cfg, data.path(), &seen);
    wait_in_sync(&w, Duration::from_secs(20));
    assert_eq!(w.status.mode(), "syncrepl");
    assert_eq!(seen.len(), 0, "the first full load reports nothing: {:?}", seen.changes.lock().unwrap());

    // alice leaves Developers: her account and the group (as the provider names it: lower-cased).
    let from = seen.len();
    let t0 = Instant::now();
    slapd.remove_member("Developers", "alice");
    let delay = seen.wait_for(
        t0,
        from,
        &[account(name, "alice"), group(name, "developers", &["bob"])],
        Duration::from_secs(2),
        "slapd: alice removed from Developers",
    );
    assert!(delay < Duration::from_secs(2));

    // alice disabled (what disabled_filter tests).
    let from = seen.len();
    let t0 = Instant::now();
    slapd.ldapmodify(&format!(
        "dn: {}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n",
        user_dn("alice")
    ));
    seen.wait_for(t0, from, &[account(name, "alice")], Duration::from_secs(2), "slapd: alice disabled");
    // An edit nothing depends on reports nothing.
    let from = seen.len();
    let t0 = Instant::now();
    slapd.ldapmodify(&format!("dn: {}\nchangetype: modify\nreplace: description\ndescription: x\n", user_dn("bob")));
    slapd.add_member("team-web", "carol");
    seen.wait_for(
        t0,
        from,
        &[group(name, "team-web", &["bob", "carol"]), account(name, "carol")],
        Duration::from_secs(2),
        "slapd: carol added to team-web",
    );
    assert!(
        !seen.changes.lock().unwrap()[from..].contains(&account(name, "bob")),
        "bob's description is nobody's business"
    );

    // The watcher's connection killed while the directory keeps taking changes: degraded after the bound,
    // identities fresh for the degraded TTL only; a change made meanwhile is reported on recovery.
    proxy.cut();
    let cut_at = Instant::now();
    while !w.status.degraded.load(Ordering::Relaxed) {
        assert!(cut_at.elapsed() < Duration::from_secs(15), "never degraded");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("WATCH slapd: degraded {} ms after the cut (bound 1 s)", cut_at.elapsed().as_millis());
    assert_eq!(Freshness::of(name).ttl(Duration::from_secs(300)), Duration::from_secs(3));
    let from = seen.len();
    slapd.remove_member("team-payments", "alice");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seen.len(), from, "nothing can be seen while cut");
    proxy.restore();
    let restored = Instant::now();
    let t0 = restored;
    seen.wait_for(
        t0,
        from,
        &[account(name, "alice"), group(name, "team-payments", &["carol"])],
        Duration::from_secs(15),
        "slapd: change made while cut, after recovery",
    );
    while w.status.degraded.load(Ordering::Relaxed) {
        assert!(restored.elapsed() < Duration::from_secs(15), "never recovered");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(Freshness::of(name).ttl(Duration::from_secs(300)), Duration::from_secs(300), "recovery clears the mark");

    // Stopped, a change, started again: the persisted cookie brings the change, and only it.
    drop(w);
    let from = seen.len();
    let t0 = Instant::now();
    slapd.remove_member("team-web", "carol");
    let w = start(&rt, &cfg, data.path(), &seen);
    seen.wait_for(
        t0,
        from,
        &[account(name, "carol"), group(name, "team-web", &["bob"])],
        Duration::from_secs(15),
        "slapd: change made while stopped, after restart",
    );
    wait_in_sync(&w, Duration::from_secs(15));
    let after: Vec<Change> = seen.changes.lock().unwrap()[from..].to_vec();
    assert!(!after.contains(&account(name, "bob")), "nothing else is reported: {after:?}");

    // A deleted user.
    let from = seen.len();
    let t0 = Instant::now();
    slapd.delete_user("dev,ops");
    seen.wait_for(t0, from, &[account(name, "dev,ops")], Duration::from_secs(2), "slapd: user deleted");
}

#[test]
fn the_real_server_counts_directory_changes_and_shows_a_degraded_watcher() {
    let mut slapd = Slapd::start(SlapdOptions::default());
    let entry = slapd_entry("corp", &slapd, slapd.ldap_port, "degraded_after: 1s, degraded_ttl: 2s");
    let env = TestEnv::with(Opts {
        providers_yaml: Some(format!("providers:\n  - {{type: ldap, {}\n", &entry[1..])),
        ..Opts::default()
    });
    let t = Tollgate::start(&env, &[("TOLLGATE_SERVER__METRICS_LISTEN", "127.0.0.1:0")]);
    wait_until("the watcher in sync", Duration::from_secs(20), || {
        t.json_lines().iter().any(|l| l["message"] == "directory watcher in sync")
    });
    let series = r#"tollgate_directory_changes_total{provider="corp",kind="group"}"#;
    let before = sample(&t.metrics(), series);
    let t0 = Instant::now();
    slapd.remove_member("Developers", "alice");
    wait_until("the group change counted", Duration::from_secs(2), || sample(&t.metrics(), series) > before);
    println!("WATCH tollgate serve: group change counted after {} ms", t0.elapsed().as_millis());
    wait_until("the account change logged", Duration::from_secs(2), || {
        t.json_lines().iter().any(|l| l["message"] == "directory change: account" && l["user"] == "alice")
    });
    let degraded = r#"tollgate_ldap_watch_degraded{provider="corp"}"#;
    assert_eq!(sample(&t.metrics(), degraded), 0.0);
    slapd.stop();
    wait_until("degraded", Duration::from_secs(15), || sample(&t.metrics(), degraded) == 1.0);
    assert!(t.json_lines().iter().any(|l| l["message"].as_str().unwrap_or("").starts_with("freshness degraded")));
    slapd.start_again();
    let recovered = Instant::now();
    while sample(&t.metrics(), degraded) != 0.0 {
        let log: Vec<String> = t.logs().lines().filter(|l| l.contains("watch")).map(str::to_string).collect();
        assert!(recovered.elapsed() < Duration::from_secs(20), "not recovered:\n{}", log.join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sample(&t.metrics(), r#"tollgate_ldap_watch_degradations_total{provider="corp"}"#), 1.0);
}
