//! The LDAP provider against a real OpenLDAP slapd (see `rig/slapd.rs` for the directory's content):
//! logins and both group strategies, StartTLS and LDAPS with a private CA, hostile usernames, the empty
//! password on a server that accepts it, the identity cache (group removal after the TTL, serving stale
//! while the directory is down), restarts, a server that never answers, two directories in one chain,
//! the number of LDAP operations per token request as counted by slapd itself, and a ppolicy lock
//! (`pwdAccountLockedTime`) stopping a refresh token. Active Directory itself: `ad.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tollgate::app::AppState;
use tollgate::config::ldap::{LdapConfig, LdapSettings};
use tollgate::identity::ldap::LdapProvider;
use tollgate::identity::{Failure, Outcome, Provider};

use crate::harness::*;
use crate::rig::slapd::{user_dn, ODD_USERS, PEOPLE, SERVICE_DN};
use crate::rig::*;

/// How the provider reaches the directory and reads groups.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// StartTLS, search then bind, groups from memberOf.
    StartTlsMemberOf,
    /// LDAPS, search then bind, groups from a group search (groupOfNames, groupOfUniqueNames, posixGroup).
    LdapsGroupSearch,
    /// Plain ldap://, bind directly through a DN template, groups from memberOf.
    DirectBind,
}

/// One `type: ldap` provider entry (list item, indented for `providers:`).
pub(crate) fn provider_entry(name: &str, slapd: &Slapd, mode: Mode, extra: &str) -> String {
    let conn = match mode {
        Mode::StartTlsMemberOf => {
            format!("url: {}\n    starttls: true\n    ca_file: {}", slapd.ldap_url(), slapd.ca_file().display())
        }
        Mode::LdapsGroupSearch => format!("url: {}\n    ca_file: {}", slapd.ldaps_url(), slapd.ca_file().display()),
        Mode::DirectBind => format!("url: {}", slapd.ldap_url()),
    };
    let lookup = match mode {
        Mode::DirectBind => format!("user_dn_template: 'uid={{username}},{PEOPLE}'"),
        _ => format!("user_base_dn: '{PEOPLE}'\n    user_filter: '(&(objectClass=inetOrgPerson)(uid={{username}}))'"),
    };
    let groups = match mode {
        Mode::LdapsGroupSearch => "groups: { from: search, base_dn: 'ou=groups,dc=example,dc=org', lowercase: true }",
        _ => "groups: { from: member_of, lowercase: true }",
    };
    format!(
        "  - type: ldap\n    name: {name}\n    {conn}\n    bind_dn: '{SERVICE_DN}'\n    bind_password_file: {}\n    {lookup}\n    disabled_filter: '(employeeType=disabled)'\n    {groups}\n    connect_timeout: 2s\n    timeout: 2s\n{extra}",
        slapd.service_password_file().display()
    )
}

fn env_with(providers: &str, cache: &str) -> TestEnv {
    TestEnv::with(Opts {
        providers_yaml: Some(format!("providers:\n{providers}identity_cache:\n{cache}")),
        ..Opts::default()
    })
}

pub(crate) fn env(slapd: &Slapd, mode: Mode, cache: &str) -> TestEnv {
    env_with(&provider_entry("corp", slapd, mode, ""), cache)
}

fn config(slapd: &Slapd, mode: Mode, extra: &str) -> LdapSettings {
    let text = provider_entry("corp", slapd, mode, extra);
    let mut value: serde_norway::Value = serde_norway::from_str(&text).expect("yaml");
    let item = value.as_sequence_mut().expect("a list").remove(0);
    let mut map = item;
    map.as_mapping_mut().expect("map").remove("type");
    checked(serde_norway::from_value(map).expect("an ldap config"))
}

/// An ldap entry validated as the config loader does (paths as written).
fn checked(raw: LdapConfig) -> LdapSettings {
    let mut problems = Vec::new();
    tollgate::config::ldap::validate(raw, "providers[0]", std::path::Path::new(""), &mut problems)
        .unwrap_or_else(|| panic!("an invalid ldap entry: {problems:?}"))
}

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

pub(crate) fn user(uid: &str) -> (String, String) {
    (uid.to_string(), Slapd::password(uid))
}

/// Every action an access token grants.
pub(crate) fn actions_of(token: &str) -> Vec<String> {
    let (_, claims) = jwt_parts(token);
    claims["access"]
        .as_array()
        .expect("access")
        .iter()
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The actions granted for `scope` to `user` through GET /token in process, and the HTTP status.
pub(crate) async fn granted(state: &Arc<AppState>, user: (&str, &str), scope: &str) -> (u16, Vec<String>) {
    let r = call(state, get(&format!("service={SERVICE}&scope={}", enc(scope)), Some(&basic(user.0, user.1)))).await;
    if r.status != 200 {
        return (r.status, Vec::new());
    }
    (200, actions_of(r.json()["token"].as_str().expect("token")))
}

async fn refresh_token(state: &Arc<AppState>, user: (&str, &str)) -> String {
    let r = call(
        state,
        get(&format!("service={SERVICE}&offline_token=true&client_id=docker"), Some(&basic(user.0, user.1))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["refresh_token"].as_str().expect("refresh token").to_string()
}

/// (status, granted actions) of a refresh-token grant.
async fn refresh(state: &Arc<AppState>, token: &str, scope: &str) -> (u16, Vec<String>) {
    let r = call(
        state,
        post(&format!(
            "grant_type=refresh_token&client_id=docker&service={SERVICE}&refresh_token={}&scope={}",
            enc(token),
            enc(scope)
        )),
    )
    .await;
    if r.status != 200 {
        return (r.status, Vec::new());
    }
    (200, actions_of(r.json()["access_token"].as_str().expect("token")))
}

pub(crate) const PUSH_PAYMENTS: &str = "repository:payments/api:push,pull";

#[test]
fn ldap_groups_grant_push_and_pull_through_the_registry() {
    let slapd = Slapd::start(SlapdOptions::default());
    for mode in [Mode::StartTlsMemberOf, Mode::LdapsGroupSearch] {
        let env = env(&slapd, mode, "  ttl: 5m\n");
        let tg = env.start();
        let reg = env.registry(&tg);
        let tmp = tempfile::tempdir().unwrap();
        let alice = user("alice");
        let bob = user("bob");
        let image = format!("oci:{}:latest", oci_image(tmp.path(), "ldap-payments").display());
        let skopeo = Skopeo::new();
        // alice is in the LDAP group team-payments: the example policy's team rule lets her push payments/.
        skopeo.copy(&image, &reg.docker_ref("payments/api:1"), Some((&alice.0, &alice.1))).assert_ok();
        skopeo.inspect(&reg.docker_ref("payments/api:1"), Some((&alice.0, &alice.1))).assert_ok();
        // bob (team-web) may not push there, and a wrong LDAP password gets nothing at all.
        let denied = skopeo.copy(&image, &reg.docker_ref("payments/api:2"), Some((&bob.0, &bob.1)));
        assert!(!denied.ok && denied.combined().contains("denied"), "{denied}");
        let wrong = skopeo.inspect(&reg.docker_ref("payments/api:1"), Some((&alice.0, "not-her-password")));
        assert!(!wrong.ok, "{wrong}");
        // bob pushes his own team's images: groups from the directory, for each strategy.
        let web = format!("oci:{}:latest", oci_image(tmp.path(), "ldap-web").display());
        skopeo.copy(&web, &reg.docker_ref("web/site:1"), Some((&bob.0, &bob.1))).assert_ok();
        let rejected = reg.token_rejections();
        assert!(rejected.is_empty(), "the registry rejected a tollgate token: {rejected:?}");
    }
}

#[tokio::test]
async fn both_group_strategies_and_nesting_give_short_names() {
    let slapd = Slapd::start(SlapdOptions::default());
    let groups = |cfg: LdapSettings, uid: &'static str| async move {
        let p = LdapProvider::new(&cfg).expect("provider");
        match p.authenticate(uid, &pw(&Slapd::password(uid))).await.expect("directory answers") {
            Outcome::Authenticated(id) => {
                assert_eq!(id.username, uid);
                assert_eq!(id.provider, "corp");
                assert_eq!(id.claims["dn"], serde_json::json!(user_dn(uid)));
                id.groups.clone()
            }
            other => panic!("{uid}: {other:?}"),
        }
    };
    // memberOf (filled in by the overlay) over StartTLS; names from the DN's first RDN, lower-cased.
    assert_eq!(groups(config(&slapd, Mode::StartTlsMemberOf, ""), "alice").await, ["developers", "team-payments"]);
    // A group search over LDAPS finds groupOfNames, groupOfUniqueNames and posixGroup (memberUid).
    assert_eq!(
        groups(config(&slapd, Mode::LdapsGroupSearch, ""), "bob").await,
        ["auditors", "developers", "release-managers", "team-web"]
    );
    // Prefix, case kept, and nested groups (engineering contains Developers) by bounded recursion.
    let mut cfg = config(&slapd, Mode::LdapsGroupSearch, "");
    cfg.groups.lowercase = false;
    cfg.groups.prefix = "ldap-".into();
    cfg.groups.nested = tollgate::config::ldap::Nested::Recursive;
    assert_eq!(groups(cfg, "alice").await, ["ldap-Developers", "ldap-engineering", "ldap-team-payments"]);
    // Binding directly through a DN template reads the entry as the user.
    assert_eq!(groups(config(&slapd, Mode::DirectBind, ""), "alice").await, ["developers", "team-payments"]);
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let slapd = Slapd::start(SlapdOptions::default());
    for mode in [Mode::StartTlsMemberOf, Mode::LdapsGroupSearch] {
        let mut cfg = config(&slapd, mode, "");
        cfg.ca_file = None; // the system trust store does not know the test CA
        let p = LdapProvider::new(&cfg).expect("provider");
        let err = p.authenticate("alice", &pw(&Slapd::password("alice"))).await.expect_err("must not connect");
        assert!(matches!(&err, Failure::Unavailable(m) if m.to_lowercase().contains("certificate")), "{err}");
        let env = env_with(
            &provider_entry("corp", &slapd, mode, "")
                .replace(&format!("    ca_file: {}\n", slapd.ca_file().display()), ""),
            "  ttl: 5m\n",
        );
        let (status, _) = granted(&env.state(), (&user("alice").0, &user("alice").1), PUSH_PAYMENTS).await;
        assert_eq!(status, 503);
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_remembered_without_locking_out_the_right_one() {
    let slapd = Slapd::start(SlapdOptions::default());
    let env = env(&slapd, Mode::StartTlsMemberOf, "  ttl: 5m\n  negative_ttl: 1m\n");
    let state = env.state();
    let before = slapd.op_counts();
    for _ in 0..5 {
        assert_eq!(granted(&state, ("alice", "guess"), PUSH_PAYMENTS).await.0, 401);
    }
    let after = slapd.op_counts();
    let (binds, _) = Slapd::ops_between(before, after);
    // One service bind (a new pooled connection) and one user bind; the four repeats cost nothing.
    assert_eq!(binds, 2, "repeated wrong passwords must not reach the directory");
    let (status, actions) = granted(&state, (&user("alice").0, &user("alice").1), PUSH_PAYMENTS).await;
    assert_eq!((status, actions.len()), (200, 2), "{actions:?}");
}

#[tokio::test]
async fn an_empty_password_is_refused_even_where_the_server_accepts_it() {
    let slapd = Slapd::start(SlapdOptions { allow_bind_anon_dn: true, ..SlapdOptions::default() });
    // The hostile server: alice's DN with an empty password binds (as anonymous).
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.ldap_url()).await.expect("connect");
    ldap3::drive!(conn);
    let rc = ldap.simple_bind(&user_dn("alice"), "").await.expect("bind").rc;
    assert_eq!(rc, 0, "slapd with bind_anon_dn accepts a DN with an empty password");

    for mode in [Mode::StartTlsMemberOf, Mode::DirectBind] {
        let p = LdapProvider::new(&config(&slapd, mode, "")).expect("provider");
        let outcome = p.authenticate("alice", &pw("")).await;
        assert!(matches!(outcome, Err(Failure::Refused(_))), "{outcome:?}");
        assert_eq!(p.counters().snapshot(), (0, 0, 0, 0), "refused before any connection or bind");
        let state = env(&slapd, mode, "  ttl: 5m\n").state();
        assert_eq!(granted(&state, ("alice", ""), PUSH_PAYMENTS).await.0, 401);
    }
}

#[tokio::test]
async fn hostile_usernames_match_nobody_and_odd_names_log_in_as_themselves() {
    let slapd = Slapd::start(SlapdOptions::default());
    let alice_pw = Slapd::password("alice");
    let hostile = [
        "*",
        "al*)(uid=*",
        "alice)(|(uid=*",
        "*)(uid=alice",
        "ali\0ce",
        "alice\0",
        "alice,ou=people,dc=example,dc=org",
        "uid=alice,ou=people,dc=example,dc=org",
        "alice+cn=alice",
        "alice\\",
        "#alice",
        " alice",
        "alice ",
        "  alice",
        "dev",
        "dev*",
    ];
    for mode in [Mode::StartTlsMemberOf, Mode::LdapsGroupSearch, Mode::DirectBind] {
        let p = LdapProvider::new(&config(&slapd, mode, "")).expect("provider");
        for name in hostile {
            match p.authenticate(name, &pw(&alice_pw)).await {
                Ok(Outcome::NotMine) | Err(Failure::Refused(_)) => {}
                other => panic!("{name:?} with alice's password gave {other:?}"),
            }
            assert!(matches!(p.recheck(name).await, Err(Failure::Refused(_))), "recheck of {name:?}");
        }
        // Names that need escaping are users like any other, with their own password only.
        for name in ODD_USERS {
            match p.authenticate(name, &pw(&Slapd::password(name))).await {
                Ok(Outcome::Authenticated(id)) => assert_eq!(id.username, *name),
                other => panic!("{name:?} could not log in: {other:?}"),
            }
            assert!(matches!(
                p.authenticate(name, &pw(&alice_pw)).await,
                Ok(Outcome::NotMine) | Err(Failure::Refused(_))
            ));
        }
        // The login name is matched without regard to ASCII case, and the identity carries the stored form.
        match p.authenticate("ALICE", &pw(&alice_pw)).await {
            Ok(Outcome::Authenticated(id)) => assert_eq!(id.username, "alice"),
            other => panic!("ALICE: {other:?}"),
        }
    }
    // Over HTTP: never a token, never a 5xx (and, once one address has failed often enough, 429).
    let state = env(&slapd, Mode::StartTlsMemberOf, "  ttl: 5m\n").state();
    for name in hostile {
        let (status, _) = granted(&state, (name, &alice_pw), PUSH_PAYMENTS).await;
        assert!(status == 401 || status == 400 || status == 429, "{name:?}: {status}");
    }
}

#[tokio::test]
async fn a_user_removed_from_a_group_loses_the_grant_after_the_cache_ttl() {
    let slapd = Slapd::start(SlapdOptions::default());
    for mode in [Mode::StartTlsMemberOf, Mode::LdapsGroupSearch] {
        let state = env(&slapd, mode, "  ttl: 2s\n").state();
        let alice = user("alice");
        let alice = (alice.0.as_str(), alice.1.as_str());
        let cached_at = Instant::now();
        let refresh_tok = refresh_token(&state, alice).await;
        let cached_by = Instant::now(); // the cache entry is younger than cached_at, older than this
        assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await.1.len(), 2);
        slapd.remove_member("team-payments", "alice");
        // Within the TTL the cache still vouches for the old groups (that is what the TTL means). Checked
        // only if this machine got here within the TTL, so a loaded CI runner cannot make it flaky.
        let within = (granted(&state, alice, PUSH_PAYMENTS).await, refresh(&state, &refresh_tok, PUSH_PAYMENTS).await);
        if cached_at.elapsed() < Duration::from_secs(2) {
            assert_eq!((within.0 .1.len(), within.1 .1.len()), (2, 2), "cached within the TTL");
        }
        tokio::time::sleep(Duration::from_millis(2100).saturating_sub(cached_by.elapsed())).await;
        assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await, (200, vec![]), "password login after the TTL");
        assert_eq!(refresh(&state, &refresh_tok, PUSH_PAYMENTS).await, (200, vec![]), "refresh token after the TTL");
        slapd.add_member("team-payments", "alice");
    }
}

#[tokio::test]
async fn refresh_tokens_of_deleted_or_disabled_users_are_refused_once_the_cache_expires() {
    let slapd = Slapd::start(SlapdOptions::default());
    let state = env(&slapd, Mode::StartTlsMemberOf, "  ttl: 3s\n").state();
    // carol is disabled from the start: her password is right, she still gets nothing.
    assert_eq!(granted(&state, (&user("carol").0, &user("carol").1), PUSH_PAYMENTS).await.0, 401);
    let cached_at = Instant::now();
    let alice = refresh_token(&state, (&user("alice").0, &user("alice").1)).await;
    let bob = refresh_token(&state, (&user("bob").0, &user("bob").1)).await;
    let cached_by = Instant::now();
    // While the login vouches for them, a refresh costs the directory nothing.
    let before = slapd.op_counts();
    assert_eq!(refresh(&state, &alice, PUSH_PAYMENTS).await.0, 200);
    assert_eq!(refresh(&state, &bob, PUSH_PAYMENTS).await.0, 200);
    let ops = Slapd::ops_between(before, slapd.op_counts());
    if cached_at.elapsed() < Duration::from_secs(3) {
        assert_eq!(ops, (0, 0), "refreshes within the TTL");
    }
    slapd.delete_user("alice");
    slapd.ldapmodify(&format!(
        "dn: {}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n",
        user_dn("bob")
    ));
    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(cached_by.elapsed())).await;
    assert_eq!(refresh(&state, &alice, PUSH_PAYMENTS).await.0, 401, "deleted user");
    assert_eq!(refresh(&state, &bob, PUSH_PAYMENTS).await.0, 401, "disabled user");
}

/// OpenLDAP's ppolicy lock (`pwdAccountLockedTime`) stops a refresh token once the cache expires, as AD's
/// lockout does: a re-check carries no password, so it must read the lock from the entry.
#[tokio::test]
async fn a_ppolicy_locked_account_loses_its_refresh_token_after_the_cache_ttl() {
    let slapd = Slapd::start(SlapdOptions { ppolicy: true, ..SlapdOptions::default() });
    let state = env(&slapd, Mode::StartTlsMemberOf, "  ttl: 2s\n  negative_ttl: 0s\n").state();
    let alice = user("alice");
    let token = refresh_token(&state, (&alice.0, &alice.1)).await;
    let cached_by = Instant::now();
    let bob = refresh_token(&state, (&user("bob").0, &user("bob").1)).await;
    assert_eq!(refresh(&state, &token, PUSH_PAYMENTS).await.0, 200);
    slapd.lock_with_ppolicy("alice", "000001010000Z");
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(cached_by.elapsed())).await;
    assert_eq!(refresh(&state, &token, PUSH_PAYMENTS).await.0, 401, "locked: the refresh token stops");
    // slapd refuses the bind itself (ppolicy does not say why without its control).
    assert_eq!(granted(&state, (&alice.0, &alice.1), PUSH_PAYMENTS).await.0, 401, "and the password");
    let p = LdapProvider::new(&config(&slapd, Mode::StartTlsMemberOf, "")).expect("provider");
    // The entry, read before the bind, says what slapd's answer does not: the log names the lock.
    match p.authenticate(&alice.0, &pw(&alice.1)).await {
        Err(Failure::Refused(reason)) => {
            assert!(reason.contains("locked by the directory's password policy (pwdAccountLockedTime"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    match p.recheck("alice").await {
        Err(Failure::Refused(reason)) => assert_eq!(reason, "account locked (pwdAccountLockedTime)"),
        other => panic!("{other:?}"),
    }
    assert_eq!(refresh(&state, &bob, "repository:web/site:push").await, (200, vec!["push".to_string()]));
    // A lock whose duration ran out: slapd accepts the password (and clears the attribute), so tollgate
    // does too, at once; until that login a re-check, which has no bind to ask, still sees the lock.
    let an_hour_ago = tollgate::support::time::rfc3339(tollgate::support::time::unix_now() - 3600);
    let stamp: String = an_hour_ago.chars().filter(|c| c.is_ascii_digit()).take(14).collect::<String>() + "Z";
    let bob_cached_by = Instant::now();
    slapd.lock_with_ppolicy("bob", &stamp);
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(bob_cached_by.elapsed())).await;
    assert_eq!(refresh(&state, &bob, "repository:web/site:push").await.0, 401, "the attribute is still there");
    let bob_pw = user("bob");
    assert_eq!(granted(&state, (&bob_pw.0, &bob_pw.1), "repository:web/site:push").await.1, ["push"]);
    assert!(p.recheck("bob").await.is_ok(), "the login cleared the lapsed lock");
}

/// providers/active-directory.yaml against slapd with AD's attributes: `sAMAccountName` as the login name and
/// the `userAccountControl` disabled bit, which tollgate reads itself (slapd, unlike AD, lets a disabled
/// account bind). Only what slapd cannot do is replaced: the server, the bases, objectClass=user, and the
/// in-chain group rule (groups come from memberOf here). `tests/it/ad.rs` runs the file against Samba.
#[tokio::test]
async fn the_active_directory_example_refuses_accounts_with_the_disabled_bit() {
    use crate::rig::slapd::UAC_DISABLED;
    let slapd = Slapd::start(SlapdOptions::default());
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/providers/active-directory.yaml")).unwrap();
    let mut file: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let ad = file["providers"][0].as_mapping_mut().unwrap();
    let set = |m: &mut serde_norway::Mapping, k: &str, v: String| {
        m.insert(k.into(), serde_norway::Value::String(v));
    };
    assert_eq!(ad["username_attribute"], "sAMAccountName");
    assert!(ad.get("disabled_filter").is_none(), "the disabled bit is read without a filter");
    set(ad, "url", slapd.ldaps_url());
    set(ad, "ca_file", slapd.ca_file().display().to_string());
    set(ad, "bind_dn", SERVICE_DN.into());
    set(ad, "bind_password_file", slapd.service_password_file().display().to_string());
    set(ad, "user_base_dn", PEOPLE.into());
    set(ad, "user_filter", "(&(objectClass=adLikeUser)(sAMAccountName={username}))".into());
    ad.remove("login_attributes"); // slapd's schema has no userPrincipalName
    let groups: serde_norway::Value = serde_norway::from_str("{from: member_of, lowercase: true}").unwrap();
    ad.insert("groups".into(), groups);
    let providers = serde_norway::to_string(&file).unwrap();
    let state = TestEnv::with(Opts {
        providers_yaml: Some(format!("{providers}identity_cache:\n  ttl: 2s\n")),
        ..Opts::default()
    })
    .state();

    let bob = refresh_token(&state, (&user("bob").0, &user("bob").1)).await;
    // Measured after the login: the cache entry is at least this old.
    let cached_by = Instant::now();
    assert_eq!(granted(&state, (&user("bob").0, &user("bob").1), "repository:web/site:push").await.1, ["push"]);
    // dave's password is right, but his account has the disabled bit.
    assert_eq!(granted(&state, (&user("dave").0, &user("dave").1), "repository:web/site:pull").await.0, 401);
    // An administrator disables bob: his refresh token stops working once the cache entry expires.
    slapd.ldapmodify(&format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: {UAC_DISABLED}\n",
        user_dn("bob")
    ));
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(cached_by.elapsed())).await;
    assert_eq!(refresh(&state, &bob, "repository:web/site:push").await.0, 401);
    assert_eq!(granted(&state, (&user("bob").0, &user("bob").1), "repository:web/site:push").await.0, 401);
}

#[tokio::test]
async fn slapd_stopped_gives_503_and_a_restart_recovers_without_restarting_tollgate() {
    let mut slapd = Slapd::start(SlapdOptions::default());
    for mode in [Mode::StartTlsMemberOf, Mode::LdapsGroupSearch] {
        let state = env(&slapd, mode, "  ttl: 1s\n").state();
        let alice = user("alice");
        let alice = (alice.0.as_str(), alice.1.as_str());
        assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await.0, 200);
        slapd.stop();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = call(
            &state,
            get(&format!("service={SERVICE}&scope={}", enc(PUSH_PAYMENTS)), Some(&basic(alice.0, alice.1))),
        )
        .await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.headers.contains_key("retry-after"));
        let probe = LdapProvider::new(&config(&slapd, mode, "")).expect("provider");
        assert!(probe.probe().await.is_err(), "the readiness probe sees the directory down");
        slapd.start_again();
        // The pooled connections died with the old server; the next request reconnects by itself.
        assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await.1.len(), 2);
        assert_eq!(granted(&state, (&user("bob").0, &user("bob").1), "repository:web/site:push").await.1, ["push"]);
        probe.probe().await.expect("the readiness probe sees the directory back");
    }
}

#[tokio::test]
async fn slapd_stopped_serves_the_stale_identity_where_configured() {
    let mut slapd = Slapd::start(SlapdOptions::default());
    let state = env(&slapd, Mode::StartTlsMemberOf, "  ttl: 1s\n  serve_stale_for: 1h\n").state();
    let alice = user("alice");
    let alice = (alice.0.as_str(), alice.1.as_str());
    let token = refresh_token(&state, alice).await;
    slapd.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await.1.len(), 2, "the stale identity, with its grants");
    assert_eq!(refresh(&state, &token, PUSH_PAYMENTS).await.1.len(), 2, "refresh tokens too");
    // Nothing the cache has not seen: another password, another user.
    assert_eq!(granted(&state, (alice.0, "other-password"), PUSH_PAYMENTS).await.0, 503);
    assert_eq!(granted(&state, (&user("bob").0, &user("bob").1), PUSH_PAYMENTS).await.0, 503);
}

#[tokio::test]
async fn a_directory_that_never_answers_times_out() {
    let silent = Silent::start();
    for url in [format!("ldap://{}", silent.addr), format!("ldaps://{}", silent.addr)] {
        let text =
            format!("{{name: slow, url: '{url}', user_base_dn: '{PEOPLE}', connect_timeout: 500ms, timeout: 500ms}}");
        let cfg = checked(serde_norway::from_str(&text).expect("config"));
        let p = LdapProvider::new(&cfg).expect("provider");
        let started = Instant::now();
        // The outer bound only keeps a broken build from hanging the suite; the provider's own timeout
        // is what must answer.
        let result = tokio::time::timeout(Duration::from_secs(30), p.authenticate("alice", &pw("pw")))
            .await
            .expect("the provider's timeout fired");
        let err = result.expect_err("a silent server is unavailable");
        let Failure::Unavailable(message) = &err else { panic!("{url}: {err:?}") };
        assert!(message.contains("timeout") || message.contains("timed out"), "{url}: {message}");
        eprintln!("{url}: unavailable after {:?}: {message}", started.elapsed());
    }
}

#[tokio::test]
async fn two_directories_in_one_chain() {
    let corp = Slapd::start(SlapdOptions::default());
    let partners = Slapd::start(SlapdOptions::default());
    partners.ldapadd(&format!(
        "dn: uid=dora,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: dora\ncn: dora\nsn: dora\nuserPassword: {}\n",
        Slapd::password("dora")
    ));
    let providers = provider_entry("corp", &corp, Mode::StartTlsMemberOf, "")
        + &provider_entry("partners", &partners, Mode::LdapsGroupSearch, "");
    let state = env_with(&providers, "  ttl: 5m\n").state();
    let provider_of = |token: &str| {
        let (_, claims) = jwt_parts(token.strip_prefix("tgr_").expect("prefix"));
        claims["prv"].as_str().expect("prv").to_string()
    };
    assert_eq!(provider_of(&refresh_token(&state, (&user("alice").0, &user("alice").1)).await), "corp");
    assert_eq!(provider_of(&refresh_token(&state, (&user("dora").0, &user("dora").1)).await), "partners");
    // alice exists in both: the first directory decides, and its refusal is final.
    assert_eq!(granted(&state, ("alice", "wrong"), PUSH_PAYMENTS).await.0, 401);
    assert_eq!(granted(&state, ("dora", "wrong"), PUSH_PAYMENTS).await.0, 401);
}

/// The benchmark's assertions: LDAP operations per token request, counted by slapd itself.
#[tokio::test]
async fn ldap_operations_per_token_request_warm_zero_cold_one_search_one_bind_plus_groups() {
    let slapd = Slapd::start(SlapdOptions::default());
    for (mode, group_searches) in [(Mode::StartTlsMemberOf, 0), (Mode::LdapsGroupSearch, 1)] {
        let state = env(&slapd, mode, "  ttl: 5m\n").state();
        // Warm the service connection pool (its one service bind) with another user's login.
        assert_eq!(granted(&state, (&user("bob").0, &user("bob").1), "repository:web/a:pull").await.0, 200);
        let alice = user("alice");
        let alice = (alice.0.as_str(), alice.1.as_str());
        let before = slapd.op_counts();
        assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await.1.len(), 2);
        let cold = Slapd::ops_between(before, slapd.op_counts());
        assert_eq!(cold, (1, 1 + group_searches), "cold: (binds, searches)");
        let before = slapd.op_counts();
        for _ in 0..20 {
            assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await.1.len(), 2);
        }
        let token = refresh_token(&state, alice).await;
        for _ in 0..20 {
            assert_eq!(refresh(&state, &token, PUSH_PAYMENTS).await.1.len(), 2);
        }
        assert_eq!(Slapd::ops_between(before, slapd.op_counts()), (0, 0), "warm: nothing reaches the directory");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Latency of `/token` (in process, real slapd over StartTLS) with a warm identity cache against a cold
/// one (cache TTL 0: every request searches, binds and reads groups). Run by `scripts/bench-ldap.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run scripts/bench-ldap.sh"]
async fn bench_ldap_token_latency() {
    let slapd = Slapd::start(SlapdOptions::default());
    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let alice = user("alice");
    let alice = (alice.0.as_str(), alice.1.as_str());
    println!("\nGET /token for alice, scope {PUSH_PAYMENTS}, {n} requests each, one after another");
    println!("{:<34} {:>10} {:>10} {:>10} {:>14}", "case", "p50", "p95", "mean", "LDAP ops/req");
    let mut medians = Vec::new();
    for (label, mode, cache) in [
        ("cold cache, memberOf, StartTLS", Mode::StartTlsMemberOf, "  ttl: 0s\n  negative_ttl: 0s\n"),
        ("cold cache, group search, LDAPS", Mode::LdapsGroupSearch, "  ttl: 0s\n  negative_ttl: 0s\n"),
        ("warm cache", Mode::StartTlsMemberOf, "  ttl: 5m\n"),
    ] {
        let state = env(&slapd, mode, cache).state();
        assert_eq!(granted(&state, alice, PUSH_PAYMENTS).await.1.len(), 2); // pool and cache warm-up
        let before = slapd.op_counts();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let (status, _) = granted(&state, alice, PUSH_PAYMENTS).await;
            times.push(t.elapsed());
            assert_eq!(status, 200);
        }
        let (binds, searches) = Slapd::ops_between(before, slapd.op_counts());
        times.sort();
        let mean = times.iter().sum::<Duration>() / n as u32;
        let p50 = percentile(&times, 0.5);
        medians.push((label, p50));
        println!(
            "{label:<34} {:>10.3?} {:>10.3?} {:>10.3?} {:>14}",
            p50,
            percentile(&times, 0.95),
            mean,
            format!("{:.2}", (binds + searches) as f64 / n as f64)
        );
    }
    // The baseline users complained about (docker_auth): a new connection per request, StartTLS, service
    // bind, search, user bind. LDAP work only, no token: the /token cases above include signing.
    let tls = tollgate::identity::ldap::pool::tls_config(Some(&slapd.ca_file())).expect("tls");
    let filter = format!("(uid={})", alice.0);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let settings = ldap3::LdapConnSettings::new().set_starttls(true).set_config(tls.clone());
        let (conn, mut ldap) = ldap3::LdapConnAsync::with_settings(settings, &slapd.ldap_url()).await.expect("connect");
        ldap3::drive!(conn);
        ldap.simple_bind(SERVICE_DN, crate::rig::slapd::SERVICE_PW).await.unwrap().success().unwrap();
        let (entries, _) =
            ldap.search(PEOPLE, ldap3::Scope::Subtree, &filter, vec!["memberOf"]).await.unwrap().success().unwrap();
        let dn = ldap3::SearchEntry::construct(entries.into_iter().next().expect("alice")).dn;
        ldap.simple_bind(&dn, alice.1).await.unwrap().success().unwrap();
        ldap.unbind().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let baseline = percentile(&times, 0.5);
    println!(
        "{:<34} {:>10.3?} {:>10.3?} {:>10.3?} {:>14}",
        "new connection per request (LDAP)",
        baseline,
        percentile(&times, 0.95),
        times.iter().sum::<Duration>() / n as u32,
        "3.00"
    );
    let warm = medians[2].1.as_secs_f64();
    for (label, p50) in &medians[..2] {
        println!("p50 ratio {label} / warm cache: {:.1}x", p50.as_secs_f64() / warm);
    }
    println!("p50 ratio new connection per request (LDAP only) / warm cache: {:.1}x", baseline.as_secs_f64() / warm);
    println!(
        "p50 ratio new connection per request (LDAP only) / cold cache with pooled connections: {:.1}x",
        baseline.as_secs_f64() / medians[0].1.as_secs_f64()
    );
}
