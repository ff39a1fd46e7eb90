//! Active Directory, proven against a real domain controller (a Samba 4 AD DC, `rig/samba.rs`, whose
//! directory is described there), with `providers/active-directory.yaml` itself as the provider entry: only
//! the server, the paths and the DNs are replaced.
//!
//! - grants through the real registry 2.8 and skopeo, for a direct member, a nested member, a user whose DN
//!   needs escaping and a user logging in with the UPN; the contractor in a same-CN group gets nothing;
//! - each account state (disabled, expired, locked out, must change password) refused at password login,
//!   with AD's reason in the log and the audit line but not in the answer, and on its refresh token once the
//!   identity cache has expired; logon hours and workstation refusals explained too;
//! - group naming: the same CN in another OU and `BUILTIN\Guests` never confused with the groups the rules
//!   name, with `member_of` and with the in-chain search, nested groups both ways;
//! - the DC stopped: 503 for users not cached, cached users served within the TTL, recovery without a
//!   tollgate restart;
//! - `check-config` warning about `member_of` without a base and a filter that finds a logon name form
//!   the login attributes do not list (no DC needed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tollgate::config::ldap::LdapConfig;
use tollgate::identity::ldap::LdapProvider;
use tollgate::identity::{Failure, Outcome, Provider};

use crate::harness::*;
use crate::ldap::{actions_of, granted};
use crate::ops::Tollgate;
use crate::rig::samba::{BASE, GROUPS, SERVICE_DN, STAFF};
use crate::rig::*;

/// How tollgate reaches the DC.
#[derive(Clone, Copy)]
pub(crate) enum Tls {
    Ldaps,
    StartTls,
}

/// providers/active-directory.yaml's provider entry (as a YAML mapping) pointed at `dc`.
pub(crate) fn example_entry(dc: &SambaDc, tls: Tls) -> serde_norway::Mapping {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/providers/active-directory.yaml")).unwrap();
    let file: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut ad = file["providers"][0].as_mapping().unwrap().clone();
    let set = |m: &mut serde_norway::Mapping, k: &str, v: String| {
        m.insert(k.into(), serde_norway::Value::String(v));
    };
    match tls {
        Tls::Ldaps => set(&mut ad, "url", dc.ldaps_url()),
        Tls::StartTls => {
            set(&mut ad, "url", dc.ldap_url());
            ad.insert("starttls".into(), true.into());
        }
    }
    set(&mut ad, "ca_file", dc.ca_file().display().to_string());
    set(&mut ad, "bind_dn", SERVICE_DN.into());
    set(&mut ad, "bind_password_file", dc.service_password_file().display().to_string());
    set(&mut ad, "user_base_dn", STAFF.into());
    let groups = ad.get_mut("groups").unwrap().as_mapping_mut().unwrap();
    set(groups, "base_dn", GROUPS.into());
    ad
}

/// A tollgate environment whose only provider is the example entry, with `identity_cache:` `cache`.
fn env(dc: &SambaDc, tls: Tls, cache: &str) -> TestEnv {
    let providers = serde_norway::to_string(&vec![serde_norway::Value::Mapping(example_entry(dc, tls))]).unwrap();
    let providers = providers.lines().map(|l| format!("  {l}\n")).collect::<String>();
    TestEnv::with(Opts {
        providers_yaml: Some(format!("providers:\n{providers}identity_cache:\n{cache}")),
        ..Opts::default()
    })
}

/// The example entry as a provider config, with `tweak` applied (for the group-strategy variants).
fn provider(dc: &SambaDc, tweak: impl FnOnce(&mut serde_norway::Mapping)) -> LdapProvider {
    let mut entry = example_entry(dc, Tls::Ldaps);
    entry.remove("type");
    tweak(&mut entry);
    let cfg: LdapConfig = serde_norway::from_value(serde_norway::Value::Mapping(entry)).expect("an ldap config");
    let mut problems = Vec::new();
    let cfg = tollgate::config::ldap::validate(cfg, "providers[0]", std::path::Path::new(""), &mut problems)
        .unwrap_or_else(|| panic!("an invalid ldap entry: {problems:?}"));
    LdapProvider::new(&cfg).expect("provider")
}

fn pw(user: &str) -> String {
    SambaDc::password(user)
}

/// Start the real `tollgate serve` (JSON logs) after writing the registry's bundle (the key exists first).
fn serve(env: &TestEnv) -> (Tollgate, std::path::PathBuf) {
    let bundle = env.bundle();
    (Tollgate::start(env, &[]), bundle)
}

#[test]
fn ad_groups_grant_push_and_pull_through_the_registry_for_direct_nested_escaped_and_upn_logins() {
    let dc = SambaDc::start();
    let env = env(&dc, Tls::Ldaps, "  ttl: 5m\n");
    let (t, bundle) = serve(&env);
    let reg = registry_at(format!("http://{}/token", t.addr), bundle);
    let tmp = tempfile::tempdir().unwrap();
    let image = format!("oci:{}:latest", oci_image(tmp.path(), "ad-payments").display());
    let skopeo = Skopeo::new();
    // alice is a direct member of team-payments, carol a member through payments-leads (in_chain), smithj's
    // DN is `CN=Smith\, J (*) \\ x,...` (escaped in the in-chain filter), and the UPN is a login name too.
    for (user, tag) in [("alice", "1"), ("carol", "2"), ("smithj", "3"), ("alice@ad.example.org", "4")] {
        let password = pw(user.split('@').next().unwrap());
        skopeo.copy(&image, &reg.docker_ref(&format!("payments/api:{tag}")), Some((user, &password))).assert_ok();
    }
    skopeo.inspect(&reg.docker_ref("payments/api:4"), Some(("carol", &pw("carol")))).assert_ok();
    // bob (admins) reads everything; mallory is in the contractors' CN=admins and in BUILTIN\Guests: nothing.
    skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(("bob", &pw("bob")))).assert_ok();
    let denied = skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(("mallory", &pw("mallory"))));
    assert!(!denied.ok, "{denied}");
    let pushed = skopeo.copy(&image, &reg.docker_ref("payments/api:5"), Some(("mallory", &pw("mallory"))));
    assert!(!pushed.ok, "{pushed}");
    let rejected = reg.token_rejections();
    assert!(rejected.is_empty(), "the registry rejected a tollgate token: {rejected:?}");
    // The UPN login's token is alice's: the subject is the sAMAccountName whichever name was typed, and
    // `account` may repeat the typed name (docker and skopeo do).
    let r = t.token(
        Some(("alice@ad.example.org", &pw("alice"))),
        "scope=repository:payments/api:pull&account=alice%40ad.example.org",
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let (_, claims) = jwt_parts(body["token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(actions_of(body["token"].as_str().unwrap()), ["pull"]);
}

/// Reads the JSON log until a line for `user` with `message` appears; its `reason`.
fn logged_reason(t: &Tollgate, message: &str, user: &str) -> String {
    let line = t.wait_for_log(&format!("{message} for {user}"), |l| l["message"] == message && l["user"] == user);
    line["reason"].as_str().unwrap_or_default().to_string()
}

#[test]
fn ad_account_states_are_refused_at_password_login_with_ad_reasons_and_on_refresh_tokens_after_the_ttl() {
    let dc = SambaDc::start();
    let env = env(&dc, Tls::StartTls, "  ttl: 2s\n  negative_ttl: 0s\n");
    let (t, _) = serve(&env);
    let scope = "repository:payments/api:push,pull";
    let refresh_token = |user: &str| {
        let r = t.token(Some((user, &pw(user))), "offline_token=true&client_id=docker", &[]);
        assert_eq!(r.status, 200, "{user}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["refresh_token"].as_str().expect("a refresh token").to_string()
    };
    let refresh = |token: &str| {
        t.post_form(&format!(
            "grant_type=refresh_token&client_id=docker&service={SERVICE}&refresh_token={}&scope={}",
            enc(token),
            enc(scope)
        ))
    };
    // (user, what the administrator does, AD's sub-code at the next password login, the refresh token's
    // reason: None where AD's state is not an attribute a re-check can read).
    type Change = fn(&SambaDc, &str);
    let cases: [(&str, Change, &str, Option<&str>); 6] = [
        ("dave", SambaDc::disable, "account disabled (AD data 533)", Some("account disabled (userAccountControl)")),
        ("expired", SambaDc::expire, "account expired (AD data 701)", Some("account expired (accountExpires)")),
        (
            "locked",
            SambaDc::lock_out,
            "account locked out (AD data 775)",
            Some("account locked out (msDS-User-Account-Control-Computed)"),
        ),
        (
            "mustchange",
            SambaDc::must_change_password,
            "must change password (AD data 773)",
            Some("must change password (pwdLastSet=0)"),
        ),
        ("hours", SambaDc::no_logon_hours, "not permitted to log on at this time (logon hours) (AD data 530)", None),
        ("roamer", SambaDc::only_from_workstation, "not permitted to log on from this workstation (AD data 531)", None),
    ];
    let tokens: Vec<String> = cases.iter().map(|(user, ..)| refresh_token(user)).collect();
    let cached_by = Instant::now();
    for (token, (user, ..)) in tokens.iter().zip(&cases) {
        assert_eq!(refresh(token).status, 200, "{user}: a usable account's refresh token works");
    }
    for (user, change, ..) in &cases {
        change(&dc, user);
    }
    // Within the TTL the cache still vouches for them; after it, nothing does.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(cached_by.elapsed()));
    for ((user, _, login_reason, refresh_reason), token) in cases.iter().zip(&tokens) {
        let r = t.token(Some((user, &pw(user))), &format!("scope={}", enc(scope)), &[]);
        assert_eq!(r.status, 401, "{user}: {}", r.body);
        assert!(r.body.contains("invalid username or password"), "{user}: {}", r.body);
        for code in ["533", "701", "775", "773", "530", "531", "locked", "expired"] {
            assert!(!r.body.contains(code), "{user}: the answer says more than it may: {}", r.body);
        }
        assert_eq!(logged_reason(&t, "login refused", user), *login_reason, "{user}");
        let audit = t
            .audit_lines()
            .into_iter()
            .find(|l| l["subject"] == *user && l["outcome"] == "unauthorized")
            .unwrap_or_else(|| panic!("no audit line for {user}:\n{}", t.logs()));
        assert_eq!(audit["provider_reason"], *login_reason, "{user}: {audit}");
        assert_eq!(audit["reason"], "invalid username or password", "{user}: {audit}");
        let r = refresh(token);
        match refresh_reason {
            Some(reason) => {
                assert_eq!(r.status, 401, "{user}: the refresh token still works: {}", r.body);
                assert_eq!(logged_reason(&t, "refresh token refused", user), *reason, "{user}");
                let audit = t
                    .audit_lines()
                    .into_iter()
                    .find(|l| l["subject"] == *user && l["method"] == "POST" && l["outcome"] == "unauthorized")
                    .unwrap_or_else(|| panic!("no audit line for {user}'s refresh token:\n{}", t.logs()));
                assert_eq!(audit["provider_reason"], *reason, "{user}: {audit}");
            }
            // Logon hours and workstations restrict logons, which a refresh is not: the token still works.
            None => assert_eq!(r.status, 200, "{user}: {}", r.body),
        }
    }
    // A plain wrong password says so, with AD's code.
    assert_eq!(t.token(Some(("alice", "not-her-password")), "", &[]).status, 401);
    assert_eq!(logged_reason(&t, "login refused", "alice"), "wrong password (AD data 52e)");
    // An unlocked, usable user is untouched by all of this.
    assert_eq!(refresh(&refresh_token("alice")).status, 200);
}

/// Log `typed` in (with the password of the account it names) through `p`: (username, groups).
async fn groups_of(p: &LdapProvider, typed: &str) -> (String, Vec<String>) {
    let account = typed.split('@').next().unwrap().to_ascii_lowercase();
    match p.authenticate(typed, &SecretString::from(pw(&account))).await {
        Ok(Outcome::Authenticated(id)) => {
            // The primary group is not a membership AD lists: it never shows up.
            assert!(!id.groups.iter().any(|g| g.contains("domain users")), "{typed}: {:?}", id.groups);
            (id.username.clone(), id.groups.clone())
        }
        other => panic!("{typed}: {other:?}"),
    }
}

#[tokio::test]
async fn ad_groups_are_unambiguous_with_member_of_and_with_the_in_chain_search() {
    let dc = SambaDc::start();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // The example: in-chain search under OU=Groups, named by sAMAccountName.
    let example = provider(&dc, |_| {});
    assert_eq!(groups_of(&example, "alice").await, ("alice".into(), names(&["team-payments"])));
    assert_eq!(groups_of(&example, "carol").await.1, names(&["payments-leads", "team-payments"]), "nested");
    assert_eq!(groups_of(&example, "smithj").await.1, names(&["team-payments"]), "escaped DN");
    assert_eq!(groups_of(&example, "bob").await.1, names(&["admins"]));
    assert_eq!(groups_of(&example, "mallory").await.1, Vec::<String>::new(), "contractor and BUILTIN\\Guests");
    assert_eq!(groups_of(&example, "frank").await.1, names(&["admins"]));
    // Its sAMAccountName is unique even where its CN is not: across the whole domain it is told apart.
    let domain_wide = provider(&dc, |m| {
        let g = m.get_mut("groups").unwrap().as_mapping_mut().unwrap();
        g.insert("base_dn".into(), BASE.into());
    });
    assert_eq!(groups_of(&domain_wide, "mallory").await.1, names(&["contractor-admins", "guests"]));
    assert_eq!(groups_of(&domain_wide, "frank").await.1, names(&["admins", "contractor-admins"]));
    // member_of (the default strategy) with the example's base: only groups under OU=Groups count.
    let member_of = |base: &'static str, nested: &'static str| {
        provider(&dc, move |m| {
            let g: serde_norway::Value =
                serde_norway::from_str(&format!("{{base_dn: '{base}', lowercase: true, nested: {nested}}}")).unwrap();
            m.insert("groups".into(), g);
        })
    };
    let scoped = member_of(GROUPS, "none");
    assert_eq!(groups_of(&scoped, "mallory").await.1, Vec::<String>::new());
    assert_eq!(groups_of(&scoped, "frank").await.1, names(&["admins"]));
    assert_eq!(groups_of(&scoped, "carol").await.1, names(&["payments-leads"]), "memberOf lists direct groups only");
    assert_eq!(groups_of(&scoped, "smithj").await.1, names(&["team-payments"]));
    let recursive = member_of(GROUPS, "recursive");
    assert_eq!(groups_of(&recursive, "carol").await.1, names(&["payments-leads", "team-payments"]));
    // Scoped to the whole domain, frank's two CN=admins groups share a name: it counts for neither.
    let wide = member_of(BASE, "none");
    assert_eq!(groups_of(&wide, "frank").await.1, Vec::<String>::new());
    assert_eq!(groups_of(&wide, "bob").await.1, names(&["admins"]));
    // Through the policy: bob's admins may read prod/db, mallory's (another OU's) may not.
    let state = env(&dc, Tls::Ldaps, "  ttl: 5m\n").state();
    assert_eq!(granted(&state, ("bob", &pw("bob")), "repository:prod/db:pull").await, (200, vec!["pull".to_string()]));
    assert_eq!(granted(&state, ("mallory", &pw("mallory")), "repository:prod/db:pull").await, (200, vec![]));

    // Login names: sAMAccountName and UPN (any ASCII case) are alice; other forms and filter tricks nobody.
    for typed in ["alice", "ALICE", "alice@ad.example.org", "Alice@AD.EXAMPLE.ORG"] {
        assert_eq!(groups_of(&example, typed).await.0, "alice", "{typed}");
    }
    for typed in [
        "AD\\alice",
        "alice@domain",
        "alice@ad",
        "al*",
        "al*)(sAMAccountName=*",
        "*",
        " alice",
        "CN=alice,OU=Staff,DC=ad,DC=example,DC=org",
    ] {
        match example.authenticate(typed, &SecretString::from(pw("alice"))).await {
            Ok(Outcome::NotMine) | Err(Failure::Refused(_)) => {}
            other => panic!("{typed:?} with alice's password gave {other:?}"),
        }
        assert!(matches!(example.recheck(typed).await, Err(Failure::Refused(_))), "recheck of {typed:?}");
    }
    // An empty password never reaches the DC (a DN with an empty password is an anonymous bind there).
    let before = example.counters().snapshot();
    for typed in ["alice", "alice@ad.example.org"] {
        let outcome = example.authenticate(typed, &SecretString::from(String::new())).await;
        assert!(matches!(outcome, Err(Failure::Refused(ref r)) if r == "empty password"), "{typed}: {outcome:?}");
    }
    assert_eq!(example.counters().snapshot(), before, "no LDAP operation for an empty password");
    // A refresh token's subject is looked up by sAMAccountName only.
    assert!(matches!(example.recheck("alice").await, Ok(id) if id.username == "alice"));
    assert!(matches!(example.recheck("alice@ad.example.org").await, Err(Failure::Refused(_))));
    // The documented UPN-only variant: the UPN is the login name and the subject.
    let upn_only = provider(&dc, |m| {
        m.insert("user_filter".into(), "(userPrincipalName={username})".into());
        m.insert("username_attribute".into(), "userPrincipalName".into());
        m.remove("login_attributes");
    });
    assert_eq!(
        groups_of(&upn_only, "alice@ad.example.org").await,
        ("alice@ad.example.org".into(), names(&["team-payments"]))
    );
    assert!(matches!(upn_only.authenticate("alice", &SecretString::from(pw("alice"))).await, Ok(Outcome::NotMine)));
    assert!(matches!(upn_only.recheck("alice@ad.example.org").await, Ok(id) if id.username == "alice@ad.example.org"));
}

#[tokio::test]
async fn ad_dc_stopped_gives_503_to_uncached_users_serves_cached_ones_within_the_ttl_and_recovers() {
    let mut dc = SambaDc::start();
    let state: Arc<_> = env(&dc, Tls::Ldaps, "  ttl: 4s\n").state();
    let scope = "repository:payments/api:push,pull";
    let alice_pw = pw("alice");
    assert_eq!(granted(&state, ("alice", &alice_pw), scope).await.1.len(), 2);
    let cached_at = Instant::now();
    dc.stop();
    // alice is cached: served while the TTL lasts. carol was never seen: 503, with Retry-After.
    assert_eq!(granted(&state, ("alice", &alice_pw), scope).await.1.len(), 2, "cached within the TTL");
    assert!(cached_at.elapsed() < Duration::from_secs(4), "the check ran within the TTL");
    let r = call(&state, get(&format!("service={SERVICE}&scope={}", enc(scope)), Some(&basic("carol", &pw("carol")))))
        .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.headers.contains_key("retry-after"));
    let probe = provider(&dc, |_| {});
    assert!(probe.probe().await.is_err(), "the readiness probe sees the DC down");
    // After the TTL even alice gets a 503 (serve_stale_for is off): nobody vouches for her.
    tokio::time::sleep(Duration::from_millis(4100).saturating_sub(cached_at.elapsed())).await;
    assert_eq!(granted(&state, ("alice", &alice_pw), scope).await.0, 503);
    dc.start_again();
    // The pooled connections died with the old DC; the next request reconnects by itself.
    assert_eq!(granted(&state, ("carol", &pw("carol")), scope).await.1.len(), 2);
    assert_eq!(granted(&state, ("alice", &alice_pw), scope).await.1.len(), 2);
    probe.probe().await.expect("the readiness probe sees the DC back");
}

/// `tollgate check-config` (the real command) on an Active Directory entry that would confuse groups or
/// refuse a logon name without a word: it says so, and still passes (they are warnings). The shipped example
/// draws no warning.
#[test]
fn check_config_warns_about_member_of_without_a_base_and_logon_names_the_filter_finds_but_refuses() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/providers/active-directory.yaml")).unwrap();
    let file: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let example = file["providers"][0].as_mapping().unwrap().clone();
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("ad-bind-password");
    std::fs::write(&password, "not-a-real-password\n").unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let check = |entry: &serde_norway::Mapping| {
        let mut entry = entry.clone();
        entry.remove("ca_file"); // the system trust store: nothing is contacted
        entry.insert("bind_password_file".into(), password.display().to_string().into());
        let providers = serde_norway::to_string(&vec![serde_norway::Value::Mapping(entry)]).unwrap();
        let providers = providers.lines().map(|l| format!("  {l}\n")).collect::<String>();
        let env = TestEnv::with(Opts { providers_yaml: Some(format!("providers:\n{providers}")), ..Opts::default() });
        let out = std::process::Command::new(crate::ops::tollgate_bin())
            .args(["check-config", "--config"])
            .arg(&env.config)
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "warnings do not fail the check:\n{err}");
        err.lines().filter(|l| l.starts_with("warning:")).map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(check(&example), Vec::<String>::new(), "the shipped example");
    let mut risky = example.clone();
    risky.remove("login_attributes");
    risky.insert("groups".into(), serde_norway::from_str("{from: member_of, lowercase: true}").unwrap());
    let warnings = check(&risky).join("\n");
    assert!(warnings.contains("providers[0].groups.base_dn: not set, so with groups.from: member_of"), "{warnings}");
    assert!(
        warnings.contains(
            "providers[0].user_filter: finds users by userprincipalname, but a name typed in that form is refused"
        ),
        "{warnings}"
    );
}
