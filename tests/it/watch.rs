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
    std::thread::sleep(Duration::from_millis(300));
    let mut after: Vec<Change> = seen.changes.lock().unwrap()[from..].to_vec();
    after.sort();
    after.dedup();
    assert_eq!(after, [account(name, "carol"), group(name, "team-web", &["bob"])], "that change and nothing else");

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

/// Wait (at most `bound` from `t0`) until the changes reported after the first `from` satisfy `done`.
fn wait_match(seen: &Seen, t0: Instant, from: usize, bound: Duration, what: &str, done: impl Fn(&[Change]) -> bool) {
    loop {
        let got: Vec<Change> = seen.changes.lock().unwrap()[from..].to_vec();
        if done(&got) {
            println!("WATCH {what}: reported after {} ms", t0.elapsed().as_millis());
            return;
        }
        assert!(t0.elapsed() < bound, "{what}: not reported within {bound:?}; got {got:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The Samba DC, watched twice at once: `auto` (which picks uSNChanged polling on AD) and `ad_notify`.
#[test]
fn ad_watchers_report_a_membership_change_a_disabled_and_a_deleted_account_within_2s() {
    use crate::ad::{example_entry, Tls};
    let dc = SambaDc::start();
    let root = dc.admin_search("", "base", "(objectClass=*)", &["supportedControl"]);
    root.assert_ok();
    let offers_notify = root.stdout.contains(watch::NOTIFY_OID);
    println!("WATCH samba AD DC offers LDAP_SERVER_NOTIFICATION_OID: {offers_notify}");
    let cfg = |name: &str, mode: &str| {
        let mut entry = example_entry(&dc, Tls::Ldaps);
        entry.remove("type");
        entry.insert("name".into(), name.into());
        let w: serde_norway::Value = serde_norway::from_str(&format!("{{mode: {mode}, degraded_after: 5s}}")).unwrap();
        entry.insert("watch".into(), w);
        let raw: LdapConfig = serde_norway::from_value(serde_norway::Value::Mapping(entry)).unwrap();
        let mut problems = Vec::new();
        tollgate::config::ldap::validate(raw, "providers[0]", Path::new(""), &mut problems).unwrap()
    };
    // Tombstones are readable by administrators only: the service account gets List Contents and Read
    // Property on CN=Deleted Objects, as docs/directory-watch.md tells an operator to grant.
    let shown = dc.samba_tool(&["user", "show", "svc-tollgate", "--attributes=objectSid"]);
    let sid = shown.stdout.lines().find_map(|l| l.strip_prefix("objectSid: ")).expect("the service account's SID");
    dc.allow_reading_deleted_objects(sid.trim());
    let rt = runtime();
    let (data, seen) = (tempdir("watch-ad"), Arc::new(Seen::default()));
    let (data2, seen2) = (tempdir("watch-ad-notify"), Arc::new(Seen::default()));
    let w = start(&rt, &cfg("watch-ad", "auto"), data.path(), &seen);
    let w2 = start(&rt, &cfg("watch-ad-notify", "ad_notify"), data2.path(), &seen2);
    wait_in_sync(&w, Duration::from_secs(60));
    wait_in_sync(&w2, Duration::from_secs(60));
    assert_eq!(w.status.mode(), "usn_poll");
    assert_eq!(w2.status.mode(), if offers_notify { "ad_notify" } else { "usn_poll" });
    assert_eq!((seen.len(), seen2.len()), (0, 0), "the first full read reports nothing");

    for (what, act, user, group) in [
        (
            "alice removed from team-payments",
            vec!["group", "removemembers", "team-payments", "alice"],
            "alice",
            Some("team-payments"),
        ),
        ("bob disabled", vec!["user", "disable", "bob"], "bob", None),
        ("frank deleted", vec!["user", "delete", "frank"], "frank", None),
    ] {
        let (from, from2) = (seen.len(), seen2.len());
        // samba-tool writes sam.ldb directly and takes ~1 s of Python start-up: the change exists when it
        // returns, so that is T0.
        let started = Instant::now();
        dc.samba_tool(&act);
        let t0 = Instant::now();
        println!("WATCH samba-tool {} took {} ms", act.join(" "), (t0 - started).as_millis());
        for (s, from, name, mode) in
            [(&seen, from, "watch-ad", "usn_poll"), (&seen2, from2, "watch-ad-notify", w2.status.mode())]
        {
            wait_match(s, t0, from, Duration::from_secs(2), &format!("AD ({mode}): {what}"), |got| {
                got.contains(&account(name, user))
                    && group.is_none_or(|g| {
                        got.iter().any(|c| {
                            matches!(c, Change::Group { group, members, .. }
                            if group == g && !members.iter().any(|m| m == user) && !members.is_empty())
                        })
                    })
            });
        }
    }
    // A write through LDAP (samba-tool above writes sam.ldb directly, which a DC's notification machinery may
    // not see): carol disabled with an LDAP modify.
    let (from, from2) = (seen.len(), seen2.len());
    let t0 = Instant::now();
    dc.admin_modify(&format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n",
        SambaDc::user_dn("carol")
    ));
    wait_match(&seen, t0, from, Duration::from_secs(2), "AD (usn_poll): carol disabled over LDAP", |got| {
        got.contains(&account("watch-ad", "carol"))
    });
    let mode = w2.status.mode();
    wait_match(&seen2, t0, from2, Duration::from_secs(2), &format!("AD ({mode}): carol disabled over LDAP"), |got| {
        got.contains(&account("watch-ad-notify", "carol"))
    });
    println!(
        "WATCH AD ad_notify: {} change notifications received from the DC",
        w2.status.notifications.load(Ordering::Relaxed)
    );
    // The position survives a restart: a change made while stopped is reported by the next watcher.
    drop(w);
    let from = seen.len();
    dc.samba_tool(&["group", "addmembers", "team-payments", "alice"]);
    let t0 = Instant::now();
    let _w = start(&rt, &cfg("watch-ad", "auto"), data.path(), &seen);
    wait_match(&seen, t0, from, Duration::from_secs(30), "AD: change made while stopped, after restart", |got| {
        got.contains(&account("watch-ad", "alice"))
    });
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// One measured window: LDAP operations the watcher sent, changes it reported, CPU of this process and of
/// the directory server.
struct Window {
    watcher_ops: u64,
    changes: u64,
    writes: u64,
    our_cpu: f64,
    server_cpu: f64,
    secs: f64,
}

/// Run `window` with an optional watcher while `writes_per_s` group-membership writes (add then remove a
/// member, one modify each) go to the directory through `admin`.
#[allow(clippy::too_many_arguments)]
fn measure(
    rt: &tokio::runtime::Runtime,
    url: &str,
    ca: Option<&Path>,
    admin: (String, String),
    group: &str,
    member: &str,
    watcher: Option<&Watcher>,
    seen: &Seen,
    server_pid: u32,
    writes_per_s: u32,
    window: Duration,
) -> Window {
    let ops0 = watcher.map(|w| w.counters.snapshot()).unwrap_or_default();
    let changes0 = seen.len();
    let (cpu0, server0) = (cpu_seconds(std::process::id()), cpu_seconds(server_pid));
    let start = Instant::now();
    let writes = rt.block_on(async {
        let mut settings = ldap3::LdapConnSettings::new();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile_certs(&pem) {
                roots.add(c).unwrap();
            }
            let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            settings = settings.set_config(Arc::new(cfg));
        }
        let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, url).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(&admin.0, &admin.1).await.unwrap().success().unwrap();
        let mut writes = 0u64;
        if writes_per_s == 0 {
            tokio::time::sleep(window).await;
            return 0;
        }
        let every = Duration::from_secs_f64(1.0 / writes_per_s as f64);
        let mut tick = tokio::time::interval(every);
        while start.elapsed() < window {
            tick.tick().await;
            let m = std::collections::HashSet::from([member]);
            let op =
                if writes.is_multiple_of(2) { ldap3::Mod::Add("member", m) } else { ldap3::Mod::Delete("member", m) };
            ldap.modify(group, vec![op]).await.unwrap().success().unwrap();
            writes += 1;
        }
        // Leave the group as it was.
        if !writes.is_multiple_of(2) {
            let m = std::collections::HashSet::from([member]);
            ldap.modify(group, vec![ldap3::Mod::Delete("member", m)]).await.unwrap();
        }
        writes
    });
    std::thread::sleep(Duration::from_millis(1500));
    let ops1 = watcher.map(|w| w.counters.snapshot()).unwrap_or_default();
    let sent = |s: (u64, u64, u64, u64)| s.0 + s.1 + s.2;
    Window {
        watcher_ops: sent(ops1) - sent(ops0),
        changes: (seen.len() - changes0) as u64,
        writes,
        our_cpu: cpu_seconds(std::process::id()) - cpu0,
        server_cpu: cpu_seconds(server_pid) - server0,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap()).collect()
}

fn report(label: &str, base: &Window, with: &Window) {
    let per_min = |n: u64, w: &Window| n as f64 * 60.0 / w.secs;
    println!(
        "BENCH {label}: watcher LDAP ops/min {:.1}, changes reported {} for {} writes; CPU over {:.0} s: tollgate side \
         {:.3} s with the watcher vs {:.3} s without ({:+.2}% of one core), directory server {:.3} s vs {:.3} s ({:+.2}% of one core)",
        per_min(with.watcher_ops, with),
        with.changes,
        with.writes,
        with.secs,
        with.our_cpu,
        base.our_cpu,
        (with.our_cpu - base.our_cpu) / with.secs * 100.0,
        with.server_cpu,
        base.server_cpu,
        (with.server_cpu - base.server_cpu) / with.secs * 100.0,
    );
}

/// The watchers' cost: `bash scripts/bench-ldap.sh watch`. For slapd (syncrepl) and the Samba DC (uSNChanged
/// polling every 1 s): an idle directory and one taking `BENCH_WATCH_WRITES` group-membership writes a second
/// (default 10), each window (`BENCH_WATCH_SECS`, default 30) measured without a watcher first (the
/// baseline, same load) and then with one.
#[test]
#[ignore = "benchmark: bash scripts/bench-ldap.sh watch"]
fn bench_watch_cost() {
    let secs: u64 = std::env::var("BENCH_WATCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let rate: u32 = std::env::var("BENCH_WATCH_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let window = Duration::from_secs(secs);
    let rt = runtime();
    {
        let slapd = Slapd::start(SlapdOptions::default());
        let pid = slapd.pid().unwrap();
        let cfg = settings(&slapd_entry("bench-slapd", &slapd, slapd.ldap_port, ""));
        let seen = Arc::new(Seen::default());
        let data = tempdir("bench-watch");
        let (url, admin, g, m) =
            (slapd.ldap_url(), slapd.admin_credentials(), crate::rig::slapd::group_dn("team-web"), user_dn("carol"));
        for (label, rate) in [("slapd syncrepl, idle", 0), ("slapd syncrepl, busy", rate)] {
            let base = measure(&rt, &url, None, admin.clone(), &g, &m, None, &seen, pid, rate, window);
            let w = start(&rt, &cfg, data.path(), &seen);
            wait_in_sync(&w, Duration::from_secs(30));
            let with = measure(&rt, &url, None, admin.clone(), &g, &m, Some(&w), &seen, pid, rate, window);
            report(label, &base, &with);
        }
    }
    let dc = SambaDc::start();
    let pid = dc.pid().unwrap();
    let mut entry = crate::ad::example_entry(&dc, crate::ad::Tls::Ldaps);
    entry.remove("type");
    entry.insert("name".into(), "bench-ad".into());
    let raw: LdapConfig = serde_norway::from_value(serde_norway::Value::Mapping(entry)).unwrap();
    let mut problems = Vec::new();
    let cfg = tollgate::config::ldap::validate(raw, "providers[0]", Path::new(""), &mut problems).unwrap();
    let seen = Arc::new(Seen::default());
    let data = tempdir("bench-watch-ad");
    let g = format!("CN=admins,{}", crate::rig::samba::GROUPS);
    let m = SambaDc::user_dn("carol");
    let ca = dc.ca_file();
    for (label, rate) in [("Samba AD uSNChanged poll 1 s, idle", 0), ("Samba AD uSNChanged poll 1 s, busy", rate)] {
        let base =
            measure(&rt, &dc.ldaps_url(), Some(&ca), dc.admin_credentials(), &g, &m, None, &seen, pid, rate, window);
        let w = start(&rt, &cfg, data.path(), &seen);
        wait_in_sync(&w, Duration::from_secs(60));
        let with = measure(
            &rt,
            &dc.ldaps_url(),
            Some(&ca),
            dc.admin_credentials(),
            &g,
            &m,
            Some(&w),
            &seen,
            pid,
            rate,
            window,
        );
        report(label, &base, &with);
    }
}
