//! Tests of the policy engine as a whole: the shipped example files, the semantics promised in the
//! spec (union minus deny, literal captures, `*`, the catalog), explanations and error reporting.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::identity::{AuthMethod, Identity};

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn compile(text: &str) -> Policy {
    Policy::compile(&[PolicySource { path: "test.yaml".into(), text: text.into() }])
        .unwrap_or_else(|errors| panic!("{}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))
}

fn errors_of(text: &str) -> Vec<String> {
    match Policy::compile(&[PolicySource { path: "policies/bad.yaml".into(), text: text.into() }]) {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn ctx(username: &str, groups: &[&str]) -> RequestContext {
    RequestContext {
        identity: Arc::new(Identity {
            username: username.into(),
            provider: if username.is_empty() { String::new() } else { "static".into() },
            groups: groups.iter().map(|g| g.to_string()).collect(),
            claims: BTreeMap::new(),
            account: None,
            expires_at: None,
        }),
        auth_method: if username.is_empty() { AuthMethod::Anonymous } else { AuthMethod::Password },
        client_ip: IpAddr::from([10, 1, 2, 3]),
        service: "registry.test".into(),
    }
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn granted(policy: &Policy, ctx: &RequestContext, s: &str) -> Vec<&'static str> {
    policy.authorize(ctx, &scope(s)).granted.iter().map(|a| a.as_str()).collect()
}

/// The demo accounts tollgate ships with.
fn demo_accounts() -> Vec<RequestContext> {
    vec![
        ctx("alice", &["team-payments", "developers"]),
        ctx("bob", &["team-web", "developers", "release-managers"]),
        ctx("admin", &["admins"]),
        ctx("ci-payments", &["robots", "ci-payments"]),
        ctx("", &[]),
    ]
}

const PROBE_SCOPES: &[&str] = &[
    "repository:payments/api:push,pull,delete",
    "repository:payments/api:*",
    "repository:payments/prod/api:push,pull,delete",
    "repository:web/frontend:push,pull",
    "repository:web/prod/frontend:*",
    "repository:prod/base:push,pull,delete",
    "repository:public/hello:pull,push",
    "repository:shared/base:pull",
    "repository:users/alice/x:*",
    "repository:users/bob/x:pull,delete",
    "repository:users/ci-payments/x:delete",
    "registry:catalog:*",
    "repository:catalog:pull",
];

#[test]
fn every_example_policy_compiles_alone_and_passes_its_tests() {
    let mut files: Vec<PathBuf> = [policies_dir(), policies_dir().join("split")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).expect("policies/ and policies/split/ exist"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "expected the seven example files, found {files:?}");
    for file in files {
        let policy = Policy::load(std::slice::from_ref(&file))
            .unwrap_or_else(|errors| panic!("{}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")));
        let report = policy.run_tests();
        assert!(policy.test_count() > 0, "{} has no tests", file.display());
        assert_eq!(report.passed(), policy.test_count());
        assert_eq!(report.failed(), 0, "{}:\n{report}", file.display());
    }
}

#[test]
fn the_split_example_files_also_work_together() {
    let files: Vec<PathBuf> =
        ["team-namespaces", "personal-namespaces", "public-read", "ci-robots", "admins", "protected-prod"]
            .iter()
            .map(|n| policies_dir().join("split").join(format!("{n}.yaml")))
            .collect();
    let policy = Policy::load(&files).unwrap_or_else(|e| panic!("{e:?}"));
    let report = policy.run_tests();
    assert_eq!(report.failed(), 0, "{report}");
}

#[test]
fn embedded_example_is_default_yaml_and_passes() {
    let policy = compile(EXAMPLE_POLICY);
    assert!(policy.rule_count() >= 8);
    let report = policy.run_tests();
    assert_eq!(report.failed(), 0, "{report}");
    assert!(report.to_string().ends_with(&format!("{} passed, 0 failed", policy.test_count())));
}

#[test]
fn each_example_directory_loads_as_one_policy_and_both_together_report_duplicate_names_with_both_files() {
    for dir in [policies_dir(), policies_dir().join("split")] {
        let policy = Policy::load(std::slice::from_ref(&dir)).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
        assert_eq!(policy.run_tests().failed(), 0, "{}", dir.display());
    }
    let errors = Policy::load(&[policies_dir(), policies_dir().join("split")])
        .expect_err("default.yaml repeats the split files' names");
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let dup = text.iter().find(|e| e.contains("duplicate rule name \"admins\"")).expect("duplicate reported");
    assert!(dup.contains("default.yaml") && dup.contains("admins.yaml"), "{dup}");
}

#[test]
fn default_policy_grants_what_the_spec_promises() {
    let policy = compile(EXAMPLE_POLICY);
    let [alice, bob, admin, robot, anon] = <[RequestContext; 5]>::try_from(demo_accounts()).expect("five accounts");
    let table: &[(&RequestContext, &str, &[&str])] = &[
        (&alice, "repository:payments/api:push,pull,delete", &["push", "pull"]),
        (&alice, "repository:payments/api:*", &[]),
        (&alice, "repository:web/frontend:pull", &[]),
        (&alice, "repository:users/alice/x:*", &["*"]),
        (&alice, "repository:users/alice/x:delete", &["delete"]),
        (&alice, "repository:payments/prod/api:pull,push", &["pull"]),
        (&bob, "repository:web/prod/frontend:push,pull", &["push", "pull"]),
        (&bob, "repository:users/alice/x:pull", &[]),
        (&admin, "repository:anything/at/all:*", &["*"]),
        (&admin, "repository:prod/base:*", &[]),
        (&admin, "registry:catalog:*", &["*"]),
        (&robot, "repository:payments/api:pull,push,delete", &["pull", "push"]),
        (&robot, "repository:users/ci-payments/x:pull", &[]),
        (&anon, "repository:public/hello:push,pull", &["pull"]),
        (&anon, "registry:catalog:*", &[]),
    ];
    for (who, s, want) in table {
        assert_eq!(granted(&policy, who, s), *want, "{} {s}", who.identity.username);
    }
}

#[test]
fn anonymous_gets_only_public_pulls() {
    let policy = compile(EXAMPLE_POLICY);
    let anon = ctx("", &[]);
    for s in PROBE_SCOPES {
        let got = granted(&policy, &anon, s);
        let want: &[&str] = if s.starts_with("repository:public/") { &["pull"] } else { &[] };
        assert_eq!(got, want, "{s}");
    }
    // Even with a username-shaped capture in play, anonymous never reaches users/**.
    assert!(granted(&policy, &anon, "repository:users/x/y:pull").is_empty());
}

#[test]
fn hostile_group_names_widen_nothing() {
    let policy = compile(
        r#"
rules:
  - name: team
    match: { group: ["team-{team}"] }
    resources: ["{team}/**"]
    actions: ["*"]
"#,
    );
    let hostile =
        ["*", "**", "team-*", "team-**", "team-../x", "team-a/b", "team-", "team-{team}", "team-a b", "team-é"];
    for group in hostile {
        let who = ctx("mallory", &[group]);
        for s in PROBE_SCOPES.iter().chain(&["repository:a/b/c:pull", "repository:x/y:pull"]) {
            assert!(granted(&policy, &who, s).is_empty(), "group {group:?} widened {s}");
        }
    }
    // The same rule with a normal group still works, and `team-a.b` is the literal namespace `a.b`.
    assert_eq!(granted(&policy, &ctx("x", &["team-a.b"]), "repository:a.b/app:pull"), ["pull"]);
    assert!(granted(&policy, &ctx("x", &["team-a.b"]), "repository:axb/app:pull").is_empty());
}

#[test]
fn every_matching_group_binding_is_tried() {
    let policy = compile(
        r#"
rules:
  - name: team
    match: { group: ["team-{team}"] }
    resources: ["{team}/**"]
    actions: [pull]
"#,
    );
    let who = ctx("carol", &["team-a", "other", "team-b"]);
    assert_eq!(granted(&policy, &who, "repository:a/x:pull"), ["pull"]);
    assert_eq!(granted(&policy, &who, "repository:b/x:pull"), ["pull"]);
    assert!(granted(&policy, &who, "repository:other/x:pull").is_empty());
}

/// Reorder the rules of a policy text.
fn reorder(text: &str, order: impl Fn(&mut Vec<serde_norway::Value>)) -> String {
    let mut doc: serde_norway::Value = serde_norway::from_str(text).expect("valid yaml");
    let rules = doc.get_mut("rules").and_then(|r| r.as_sequence_mut()).expect("rules list");
    order(rules);
    serde_norway::to_string(&doc).expect("serializes")
}

#[test]
fn rule_order_never_changes_a_result() {
    let original = compile(EXAMPLE_POLICY);
    let variants = [
        reorder(EXAMPLE_POLICY, |r| r.reverse()),
        reorder(EXAMPLE_POLICY, |r| r.rotate_left(3)),
        reorder(EXAMPLE_POLICY, |r| r.sort_by_key(|v| v.get("effect").is_none())), // denies first
        reorder(EXAMPLE_POLICY, |r| r.sort_by_key(|v| v.get("effect").is_some())), // denies last
    ];
    for text in &variants {
        let shuffled = compile(text);
        for who in demo_accounts() {
            for s in PROBE_SCOPES {
                let (a, b) = (original.authorize(&who, &scope(s)), shuffled.authorize(&who, &scope(s)));
                assert_eq!(a.granted, b.granted, "{} {s}", who.identity.username);
                let sorted = |mut v: Vec<String>| {
                    v.sort();
                    v
                };
                assert_eq!(sorted(a.allowed_by), sorted(b.allowed_by));
                assert_eq!(sorted(a.denied_by), sorted(b.denied_by));
            }
        }
    }
}

#[test]
fn star_is_granted_only_when_every_action_is() {
    let policy = compile(
        r#"
rules:
  - name: pull-push
    resources: ["a/**"]
    actions: [pull, push]
  - name: everything
    resources: ["b/**", "c/**"]
    actions: ["*"]
  - name: no-delete-c
    effect: deny
    resources: ["c/**"]
    actions: [delete]
  - name: deny-all-d
    effect: deny
    resources: ["b/d/**"]
    actions: ["*"]
"#,
    );
    let who = ctx("x", &[]);
    let table: &[(&str, &[&str])] = &[
        ("repository:a/x:*", &[]),
        ("repository:a/x:*,pull", &["pull"]),
        ("repository:b/x:*", &["*"]),
        ("repository:b/x:pull,*,delete", &["pull", "*", "delete"]),
        ("repository:c/x:*,push", &["push"]),
        ("repository:b/d/x:*,pull", &[]),
    ];
    for (s, want) in table {
        assert_eq!(granted(&policy, &who, s), *want, "{s}");
    }
    let d = policy.authorize(&who, &scope("repository:b/x:*"));
    assert_eq!(d.granted, [Action::All]);
    assert_eq!(d.allowed_by, ["everything"]);
}

#[test]
fn the_catalog_needs_an_explicit_registry_rule() {
    let policy = compile(
        r#"
rules:
  - name: everything
    resources: ["**"]
    actions: ["*"]
"#,
    );
    assert!(granted(&policy, &ctx("x", &[]), "registry:catalog:*").is_empty());
    assert_eq!(granted(&policy, &ctx("x", &[]), "repository:catalog:pull"), ["pull"]);
    let policy = compile(
        r#"
rules:
  - name: catalog
    type: registry
    resources: [catalog]
    actions: ["*"]
"#,
    );
    assert_eq!(granted(&policy, &ctx("x", &[]), "registry:catalog:*"), ["*"]);
    assert!(granted(&policy, &ctx("x", &[]), "repository:catalog:pull").is_empty());
}

#[test]
fn conditions_narrow_rules() {
    let policy = compile(
        r#"
rules:
  - { name: by-account, match: { account: ["ci-*", alice], not_account: [ci-evil] }, resources: [acct/*], actions: [pull] }
  - { name: by-regex, match: { account_regex: "svc-(?P<team>[a-z]+)" }, resources: ["{team}/svc"], actions: [pull] }
  - { name: by-provider, match: { provider: [corp-ldap] }, resources: [prov/*], actions: [pull] }
  - { name: by-method, match: { auth_method: [refresh_token] }, resources: [method/*], actions: [pull] }
  - { name: authenticated, match: { anonymous: false }, resources: [authn/*], actions: [pull] }
  - { name: only-anonymous, match: { anonymous: true }, resources: [anon/*], actions: [pull] }
  - { name: by-claims, match: { claims: { department: payments, "org.teams": [a, b], level: 3 } }, resources: [claims/*], actions: [pull] }
  - { name: by-network, match: { client_network: ["10.0.0.0/8", "192.168.1.7", "fd00::/8"] }, resources: [net/*], actions: [pull] }
  - { name: by-service, match: { service: [registry.corp] }, resources: [svc/*], actions: [pull] }
  - { name: not-contractors, match: { not_group: ["contractor-*"] }, resources: [staff/*], actions: [pull] }
"#,
    );
    let base = ctx("alice", &[]);
    let check = |who: &RequestContext, s: &str, want: bool| {
        assert_eq!(!granted(&policy, who, s).is_empty(), want, "{} {s}", who.identity.username);
    };
    check(&base, "repository:acct/x:pull", true);
    check(&ctx("ci-payments", &[]), "repository:acct/x:pull", true);
    check(&ctx("ci-evil", &[]), "repository:acct/x:pull", false);
    check(&ctx("bob", &[]), "repository:acct/x:pull", false);
    check(&ctx("svc-web", &[]), "repository:web/svc:pull", true);
    check(&ctx("svc-web", &[]), "repository:other/svc:pull", false);
    check(&ctx("x-svc-web", &[]), "repository:web/svc:pull", false); // anchored
    check(&ctx("svc-web2", &[]), "repository:web2/svc:pull", false);
    check(&base, "repository:prov/x:pull", false);
    let mut ldap = base.clone();
    Arc::make_mut(&mut ldap.identity).provider = "corp-ldap".into();
    check(&ldap, "repository:prov/x:pull", true);
    check(&base, "repository:method/x:pull", false);
    let mut refresh = base.clone();
    refresh.auth_method = AuthMethod::RefreshToken;
    check(&refresh, "repository:method/x:pull", true);
    check(&base, "repository:authn/x:pull", true);
    check(&ctx("", &[]), "repository:authn/x:pull", false);
    check(&base, "repository:anon/x:pull", false);
    check(&ctx("", &[]), "repository:anon/x:pull", true);

    let mut claims = base.clone();
    let set = |ctx: &mut RequestContext, key: &str, value: Option<serde_json::Value>| {
        let claims = &mut Arc::make_mut(&mut ctx.identity).claims;
        match value {
            Some(v) => claims.insert(key.into(), v),
            None => claims.remove(key),
        };
    };
    set(&mut claims, "department", Some(serde_json::json!("payments")));
    set(&mut claims, "org", Some(serde_json::json!({"teams": ["z", "b"]})));
    set(&mut claims, "level", Some(serde_json::json!(3)));
    check(&claims, "repository:claims/x:pull", true);
    set(&mut claims, "level", Some(serde_json::json!(4)));
    check(&claims, "repository:claims/x:pull", false);
    set(&mut claims, "level", Some(serde_json::json!("3")));
    set(&mut claims, "org.teams", Some(serde_json::json!("a"))); // literal dotted key wins
    check(&claims, "repository:claims/x:pull", true);
    set(&mut claims, "department", None);
    check(&claims, "repository:claims/x:pull", false);

    check(&base, "repository:net/x:pull", true);
    for (ip, want) in
        [("192.168.1.7", true), ("192.168.1.8", false), ("::ffff:10.9.9.9", true), ("fd12::1", true), ("::1", false)]
    {
        let mut c = base.clone();
        c.client_ip = ip.parse().expect("ip");
        check(&c, "repository:net/x:pull", want);
    }
    check(&base, "repository:svc/x:pull", false);
    let mut corp = base.clone();
    corp.service = "registry.corp".into();
    check(&corp, "repository:svc/x:pull", true);
    check(&ctx("x", &["staff"]), "repository:staff/x:pull", true);
    check(&ctx("x", &["staff", "contractor-acme"]), "repository:staff/x:pull", false);
}

#[test]
fn regex_captures_outside_the_safe_characters_are_dropped() {
    let policy = compile(
        r#"
rules:
  - name: any-group
    match: { group_regex: "grp:(?P<ns>.+)" }
    resources: ["{ns}/**"]
    actions: [pull]
"#,
    );
    assert_eq!(granted(&policy, &ctx("x", &["grp:web"]), "repository:web/a:pull"), ["pull"]);
    assert!(granted(&policy, &ctx("x", &["grp:web/a"]), "repository:web/a/b:pull").is_empty());
    assert!(granted(&policy, &ctx("x", &["grp:*"]), "repository:web/a:pull").is_empty());
}

#[test]
fn decision_names_the_rules_that_decided() {
    let policy = compile(EXAMPLE_POLICY);
    let d = policy
        .authorize(&ctx("alice", &["team-payments", "developers"]), &scope("repository:payments/prod/api:push,pull"));
    assert_eq!(d.granted, [Action::Pull]);
    assert_eq!(d.allowed_by, ["team-namespaces"]);
    assert_eq!(d.denied_by, ["protected-prod"]);
    let d = policy.authorize(&ctx("", &[]), &scope("repository:payments/api:pull"));
    assert_eq!(d, Decision::default());
}

#[test]
fn explain_says_why_each_rule_did_not_apply() {
    let policy = compile(
        r#"
rules:
  - name: team
    match: { group: ["team-{team}"] }
    resources: ["{team}/**"]
    actions: [pull, push]
  - name: office
    match: { client_network: ["10.0.0.0/8"] }
    resources: ["**"]
    actions: [pull, push]
  - name: catalog
    type: registry
    resources: [catalog]
    actions: ["*"]
  - name: pull-only
    resources: ["payments/**"]
    actions: [pull]
"#,
    );
    let mut who = ctx("bob", &["team-web"]);
    who.client_ip = "192.168.1.5".parse().expect("ip");
    let e = policy.explain(&who, &scope("repository:payments/api:push"));
    let reasons: BTreeMap<&str, &str> = e.not_applied.iter().map(|r| (r.rule.as_str(), r.reason.as_str())).collect();
    assert_eq!(reasons["team"], r#"resource: "payments/api" does not match "{team}/**" with team=web"#);
    assert_eq!(reasons["office"], "client_network: 192.168.1.5 is not in [10.0.0.0/8]");
    assert_eq!(reasons["catalog"], "type: rule is for the registry catalog, not repositories");
    assert_eq!(reasons["pull-only"], "action: rule allows [pull], not push");

    let e = policy.explain(&ctx("bob", &["developers"]), &scope("repository:web/x:pull"));
    let team = e.not_applied.iter().find(|r| r.rule == "team").expect("team listed");
    assert_eq!(team.reason, r#"group: none of [developers] matches "team-{team}""#);

    let text = e.to_string();
    assert!(text.contains("identity: bob"), "{text}");
    assert!(text.contains("rules that did not apply"), "{text}");
    let json = serde_json::to_value(&e).expect("serializes");
    assert_eq!(json["granted"], serde_json::json!(["pull"]));
    assert_eq!(json["actions"][0]["allowed_by"], serde_json::json!(["office"]));
    assert_eq!(json["not_applied"][0]["rule"], serde_json::json!("team"));
}

/// `/whoami`'s explanation of a rules file with one rule per team: the rules the user's teams reach are
/// listed (up to the bound), the thousands of others counted, and the decision is the full explanation's.
#[test]
fn a_bounded_explanation_lists_what_the_identity_reaches_and_counts_the_rest() {
    let mut text = String::from(
        "rules:\n  - name: deny-prod\n    effect: deny\n    resources: [\"*/prod/**\"]\n    actions: [push]\n",
    );
    for n in 0..2000 {
        text.push_str(&format!(
            "  - name: team-{n}\n    match: {{ group: [team-{n}] }}\n    resources: [\"team-{n}/**\"]\n    actions: [pull, push]\n"
        ));
    }
    let policy = compile(&text);
    let who = ctx("alice", &["team-3", "team-1500", "team-1999"]);
    let asked = scope("repository:team-1500/prod/api:pull,push");
    let full = policy.explain(&who, &asked);
    let bounded = policy.explain_bounded(&who, &asked, 100);
    assert_eq!(bounded.granted, vec![Action::Pull]);
    assert_eq!(serde_json::to_value(&bounded.actions).unwrap(), serde_json::to_value(&full.actions).unwrap());
    assert_eq!(bounded.actions[1].denied_by, vec!["deny-prod".to_string()]);
    // The two other teams of alice's, in file order; the other 1,997 team rules are only counted.
    let listed: Vec<&str> = bounded.not_applied.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(listed, ["team-3", "team-1999"]);
    assert_eq!(full.not_applied.len(), 1999);
    assert_eq!(bounded.not_applied_omitted, 1997);
    assert_eq!(bounded.not_applied[0].reason, full.not_applied.iter().find(|r| r.rule == "team-3").unwrap().reason);
    let json = serde_json::to_value(&bounded).unwrap();
    assert_eq!(json["not_applied_omitted"], serde_json::json!(1997));
    assert!(bounded.to_string().contains("and 1997 more rules that did not apply"), "{bounded}");

    // A bound below what the identity reaches: the first ones in file order.
    let tight = policy.explain_bounded(&who, &asked, 1);
    assert_eq!(tight.not_applied.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>(), ["team-3"]);
    assert_eq!(tight.not_applied_omitted, 1998);

    // A small file fits: the bounded explanation is the full one, and its JSON has no count.
    let small =
        compile("rules:\n  - name: a\n    match: { group: [x] }\n    resources: [\"**\"]\n    actions: [pull]\n");
    let (f, b) = (small.explain(&who, &asked), small.explain_bounded(&who, &asked, 100));
    assert_eq!(serde_json::to_value(&b).unwrap(), serde_json::to_value(&f).unwrap());
    assert!(serde_json::to_value(&b).unwrap().get("not_applied_omitted").is_none());
}

#[test]
fn explain_shows_allowed_and_denied_per_action() {
    let policy = compile(EXAMPLE_POLICY);
    let e = policy
        .explain(&ctx("alice", &["team-payments", "developers"]), &scope("repository:payments/prod/api:push,pull,*"));
    assert_eq!(e.granted, [Action::Pull]);
    let push = &e.actions[0];
    assert!(!push.granted);
    assert_eq!(push.allowed_by, ["team-namespaces"]);
    assert_eq!(push.denied_by, ["protected-prod"]);
    let star = &e.actions[2];
    assert!(star.note.as_deref().is_some_and(|n| n.contains("not granted: push, delete")), "{star:?}");
    let text = e.to_string();
    assert!(text.contains("push    REFUSED  allowed by team-namespaces; denied by protected-prod"), "{text}");
}

#[test]
fn error_display_names_file_rule_and_field() {
    let errors = errors_of(
        r#"
rules:
  - name: fine
    resources: ["a/**"]
    actions: [pull]
  - name: team-push
    match: { group: ["team-{team}"] }
    resources: ["{tem}/**"]
    actions: [push]
"#,
    );
    assert_eq!(
        errors,
        [
            r#"policies/bad.yaml: rule 2 "team-push": field `resources[0]`: unknown capture {tem} (available: team, username)"#
        ]
    );
}

#[test]
fn several_errors_are_reported_together() {
    let errors = errors_of(
        r#"
rules:
  - resources: ["a/**"]
    actions: [pull]
  - name: typo
    resources: ["a/**"]
    actions: [pull]
    mtach: {}
  - name: bad-values
    effect: permit
    type: image
    resources: ["a/***", "", "x/{y"]
    actions: [pul, push]
  - name: bad-match
    match:
      account_regex: "ci-("
      client_network: ["10.0.0/8"]
      auth_method: [kerberos]
      not_group: ["team-{x}"]
      grup: [x]
    resources: ["a"]
    actions: []
  - name: bad-match-values
    match:
      account_regex: "ci-("
      client_network: ["10.0.0/8"]
      auth_method: [kerberos]
      not_group: ["team-{x}"]
      anonymous: true
      group: [a]
    resources: ["a"]
    actions: [pull]
  - name: catalog
    type: registry
    resources: [catalog, everything]
    actions: [pull]
  - name: typo
    resources: ["b"]
    actions: [pull]
  - name: partial
    match: { group: ["team-{team}", admins] }
    resources: ["{team}/**"]
    actions: [pull]
tests:
  - name: bad scope
    scope: "repository:Bad:pull"
    expect: [pull]
  - name: bad expect
    scope: "repository:a/b:pull"
    expect: [pulll]
  - name: unknown field
    scope: "repository:a/b:pull"
    expect: []
    identiy: {}
"#,
    );
    let wanted = [
        "rule 1 (unnamed): field `name`: required",
        "rule 2 \"typo\": unknown field `mtach`",
        "rule 3 \"bad-values\": field `effect`: unknown effect \"permit\"",
        "rule 3 \"bad-values\": field `type`: unknown type \"image\"",
        "rule 3 \"bad-values\": field `actions[0]`: unknown action \"pul\"",
        "rule 3 \"bad-values\": field `resources[0]`: \"a/***\": `***` is not a wildcard",
        "rule 3 \"bad-values\": field `resources[1]`: empty pattern",
        "rule 3 \"bad-values\": field `resources[2]`: \"x/{y\": unbalanced `{`",
        "rule 4 \"bad-match\": field `match`: unknown field `grup`",
        "rule 4 \"bad-match\": field `actions`: empty list",
        "rule 5 \"bad-match-values\": field `match.account_regex`: invalid regex",
        "rule 5 \"bad-match-values\": field `match.client_network[0]`: invalid network \"10.0.0/8\"",
        "rule 5 \"bad-match-values\": field `match.auth_method[0]`: unknown auth method \"kerberos\"",
        "rule 5 \"bad-match-values\": field `match.not_group[0]`: \"team-{x}\": captures like {x} are not allowed here",
        "rule 5 \"bad-match-values\": field `match.anonymous`: anonymous: true contradicts `group`",
        "rule 6 \"catalog\": field `resources[1]`: \"everything\": a registry rule only takes `catalog`",
        "rule 6 \"catalog\": field `actions`: a registry rule must list \"*\"",
        "rule 7 \"typo\": field `name`: duplicate rule name \"typo\": rule 2 in policies/bad.yaml has it too",
        "rule 8 \"partial\": field `resources[0]`: capture {team} is bound by only some",
        "test 1 \"bad scope\": field `scope`: scope \"repository:Bad:pull\" has an invalid repository name",
        "test 2 \"bad expect\": field `expect[0]`: unknown action \"pulll\"",
        "test 3 \"unknown field\": unknown field `identiy`",
    ];
    for want in wanted {
        assert!(
            errors.iter().any(|e| e.starts_with("policies/bad.yaml: ") && e.contains(want)),
            "missing {want:?} in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn file_level_errors_are_reported() {
    let errors = errors_of("rules:\n  - name: a\n    resources: [\"x\"\n    actions: [pull]\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("policies/bad.yaml: YAML syntax error:") && errors[0].contains("line"), "{errors:?}");
    let errors = errors_of("rulez: []\n");
    assert!(errors.iter().any(|e| e.contains("unknown top-level key `rulez`")), "{errors:?}");
    let errors = errors_of("");
    assert!(errors[0].contains("file is empty"), "{errors:?}");
    let missing = Policy::load(&[PathBuf::from("/nonexistent/policy.yaml")]).expect_err("missing file");
    assert!(missing[0].to_string().starts_with("/nonexistent/policy.yaml: cannot read"), "{missing:?}");
}

#[test]
fn failing_tests_are_reported_with_expected_got_and_explanation() {
    let policy = compile(
        r#"
rules:
  - name: pull-all
    resources: ["**"]
    actions: [pull]
tests:
  - name: passes
    scope: "repository:a/b:pull"
    expect: [pull]
  - name: wrong on purpose
    identity: { username: alice, groups: [devs] }
    scope: "repository:a/b:push,pull"
    expect: [push, pull]
"#,
    );
    let report = policy.run_tests();
    assert_eq!((report.passed(), report.failed()), (1, 1));
    let text = report.to_string();
    for want in [
        "FAIL test.yaml: test \"wrong on purpose\"",
        "scope:    repository:a/b:push,pull",
        "expected: [pull, push]",
        "got:      [pull]",
        "push    REFUSED  no allow rule covers it",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(text.ends_with("1 passed, 1 failed"), "{text}");
}

#[test]
fn policy_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<Policy>();
    let p = compile(EXAMPLE_POLICY);
    assert!(format!("{p:?}").contains("team-namespaces"));
}

/// A GitHub Actions token's claims for a job of `repository` with `sub` and `ref`.
fn workload(repository: &str, sub: &str, git_ref: &str) -> RequestContext {
    let mut c = ctx("gha", &[]);
    c.auth_method = AuthMethod::Workload;
    let id = Arc::make_mut(&mut c.identity);
    id.username = format!("gha:{repository}");
    id.provider = "github-actions".into();
    for (k, v) in [
        ("repository", serde_json::json!(repository)),
        ("sub", serde_json::json!(sub)),
        ("ref", serde_json::json!(git_ref)),
        ("repository_owner_id", serde_json::json!("1234")),
        ("kubernetes.io", serde_json::json!({"namespace": "shop", "serviceaccount": {"name": "api"}})),
        ("run_number", serde_json::json!(42)),
    ] {
        id.claims.insert(k.into(), v);
    }
    c
}

#[test]
fn claims_bind_captures_literally_and_their_stars_stay_within_a_part() {
    let policy = compile(
        r#"
rules:
  - name: main-pushes
    match: { provider: github-actions, claims: { repository: "acme/{repo}", ref: refs/heads/main } }
    resources: ["ci/acme/{repo}/**"]
    actions: [pull, push]
  - name: any-job-of-acme-pulls
    match: { claims: { sub: "repo:acme/{repo}:*" } }
    resources: ["ci/acme/{repo}/**"]
    actions: [pull]
  - name: pods
    match: { claims: { kubernetes.io.namespace: "{ns}", kubernetes.io.serviceaccount.name: [api, worker] } }
    resources: ["k8s/{ns}/**"]
    actions: [pull]
  - name: numbers-match-literally
    match: { claims: { run_number: 42 } }
    resources: [runs/*]
    actions: [pull]
"#,
    );
    let main = workload("acme/app", "repo:acme/app:ref:refs/heads/main", "refs/heads/main");
    assert_eq!(granted(&policy, &main, "repository:ci/acme/app/img:push,pull"), ["push", "pull"]);
    assert!(granted(&policy, &main, "repository:ci/acme/other/img:push,pull").is_empty(), "another repository");
    let pr = workload("acme/app", "repo:acme/app:pull_request", "refs/pull/7/merge");
    assert_eq!(granted(&policy, &pr, "repository:ci/acme/app/img:push,pull"), ["pull"]);
    // `*` stops at `:`, so an environment job (`repo:acme/app:environment:prod`) is not "any job".
    let env = workload("acme/app", "repo:acme/app:environment:prod", "refs/heads/dev");
    assert!(granted(&policy, &env, "repository:ci/acme/app/img:pull").is_empty());
    // A repository named to look like a path never binds `{repo}`.
    let nested = workload("acme/app/x", "repo:acme/app/x:ref:refs/heads/main", "refs/heads/main");
    assert!(granted(&policy, &nested, "repository:ci/acme/app/x/img:pull").is_empty());
    let fork = workload("evil/app", "repo:evil/app:ref:refs/heads/main", "refs/heads/main");
    assert!(granted(&policy, &fork, "repository:ci/acme/app/img:pull").is_empty());
    assert_eq!(granted(&policy, &main, "repository:k8s/shop/api:pull"), ["pull"], "dotted claim names");
    assert!(granted(&policy, &main, "repository:k8s/other/api:pull").is_empty());
    assert_eq!(granted(&policy, &main, "repository:runs/x:pull"), ["pull"]);

    let text = policy.explain(&pr, &scope("repository:ci/acme/app/img:push")).to_string();
    assert!(text.contains("main-pushes") && text.contains("ref is \"refs/pull/7/merge\""), "{text}");
}

#[test]
fn claim_patterns_are_checked_at_load() {
    let errs = errors_of(
        r#"
rules:
  - { name: a, match: { claims: { sub: "repo:acme/**" } }, resources: [x], actions: [pull] }
  - { name: b, match: { claims: { sub: ["repo:{owner}/x", "repo:y/z"] } }, resources: ["{owner}/*"], actions: [pull] }
  - { name: c, match: { claims: { "a..b": x } }, resources: [x], actions: [pull] }
"#,
    )
    .join("\n");
    assert!(errs.contains("rule 1 \"a\"") && errs.contains("`**` is not allowed in a claim value"), "{errs}");
    assert!(
        errs.contains("capture {owner} is bound by only some of the `account`/`group`/`claims` alternatives"),
        "{errs}"
    );
    assert!(errs.contains("`match.claims.a..b`: not a claim path"), "{errs}");
}

/// Every example file and both example directories, as one policy each.
fn example_policies() -> Vec<Policy> {
    let mut out = vec![compile(EXAMPLE_POLICY)];
    for dir in [policies_dir(), policies_dir().join("split")] {
        out.push(Policy::load(std::slice::from_ref(&dir)).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display())));
    }
    out
}

#[test]
fn the_indexed_decision_is_the_full_scans_for_every_example_policy() {
    for policy in example_policies() {
        for who in demo_accounts() {
            for s in PROBE_SCOPES {
                let s = scope(s);
                assert_eq!(policy.authorize(&who, &s), policy.authorize_scan(&who, &s), "{who:?} {s}");
            }
        }
    }
}

#[test]
fn literal_conditions_are_indexed_and_the_rest_checked_on_every_request() {
    let policy = compile(
        r#"
rules:
  - { name: one-account, match: { account: [alice, bob] }, resources: [a/*], actions: [pull] }
  - { name: glob-account, match: { account: ["ci-*"], provider: corp }, resources: [b/*], actions: [pull] }
  - { name: one-group, match: { group: [team-a], account_regex: "x.*" }, resources: [c/*], actions: [pull] }
  - { name: capture-group, match: { group: ["team-{t}"] }, resources: ["{t}/*"], actions: [pull] }
  - { name: claim, match: { claims: { dept: [pay, "7"] } }, resources: [d/*], actions: [pull] }
  - { name: claim-glob, match: { claims: { dept: "pay*" }, service: [reg] }, resources: [e/*], actions: [pull] }
  - { name: method, match: { auth_method: [workload] }, resources: [f/*], actions: [pull] }
  - { name: anon, match: { anonymous: true }, resources: [g/*], actions: [pull] }
  - { name: regex, match: { group_regex: "ops-.*" }, resources: [h/*], actions: [pull] }
  - { name: network, match: { client_network: [10.0.0.0/8] }, resources: [i/*], actions: [pull] }
  - { name: everyone, resources: [j/*], actions: [pull] }
"#,
    );
    // capture-group, regex, network and everyone cannot be looked up by a value.
    assert_eq!(policy.inner.index.unfiled(), 4);
    let mut people = demo_accounts();
    people.push(ctx("xavier", &["team-a", "ops-1"]));
    let mut numeric = ctx("carol", &["team-b"]);
    Arc::make_mut(&mut numeric.identity).claims.insert("dept".into(), serde_json::json!([7, "x"]));
    numeric.auth_method = AuthMethod::Workload;
    numeric.service = "reg".into();
    people.push(numeric);
    let mut corp = ctx("ci-web", &[]);
    Arc::make_mut(&mut corp.identity).provider = "corp".into();
    Arc::make_mut(&mut corp.identity).claims.insert("dept".into(), serde_json::json!("payroll"));
    corp.service = "reg".into();
    people.push(corp);
    let mut granted_somewhere = 0;
    for who in &people {
        for dir in ["a", "b", "c", "team-a", "a", "b", "d", "e", "f", "g", "h", "i", "j"] {
            let s = scope(&format!("repository:{dir}/x:pull"));
            let (fast, scan) = (policy.authorize(who, &s), policy.authorize_scan(who, &s));
            assert_eq!(fast, scan, "{who:?} {s}");
            granted_somewhere += usize::from(!fast.granted.is_empty());
        }
    }
    assert!(granted_somewhere > 20, "the probes must reach most rules, not only refusals: {granted_somewhere}");
}

#[test]
fn patterns_and_regexes_shared_by_rules_are_compiled_once_and_keep_their_own_captures() {
    let policy = compile(
        r#"
rules:
  - { name: a, effect: deny, match: { not_group: [admins] }, resources: ["prod/**"], actions: [delete] }
  - { name: b, effect: deny, match: { not_group: [admins] }, resources: ["prod/**"], actions: [push] }
  - name: c
    match: { group_regex: "ci-(?P<team>[a-z]+)" }
    resources: ["{team}/**"]
    actions: [pull]
  - name: d
    match: { group: ["{first}-x"], group_regex: "ci-(?P<team>[a-z]+)" }
    resources: ["{team}/{first}/**"]
    actions: [push]
"#,
    );
    let rules = &policy.inner.rules;
    assert!(Arc::ptr_eq(&rules[0].resources[0], &rules[1].resources[0]), "one `prod/**`");
    assert!(Arc::ptr_eq(&rules[0].cond.not_group[0], &rules[1].cond.not_group[0]), "one `admins`");
    let (c, d) = (rules[2].cond.group_regex.as_ref().unwrap(), rules[3].cond.group_regex.as_ref().unwrap());
    assert!(Arc::ptr_eq(&c.regex, &d.regex), "one compiled regex");
    // `{team}` is capture 1 in c and 2 in d: the resource patterns differ, and each rule binds its own.
    assert!(!Arc::ptr_eq(&rules[2].resources[0], &rules[3].resources[0]));
    let who = ctx("robot", &["ci-web", "a-x"]);
    assert_eq!(granted(&policy, &who, "repository:web/a/img:push,pull"), ["push", "pull"]);
    assert_eq!(granted(&policy, &who, "repository:web/b/img:push,pull"), ["pull"]);
}

/// Documents whose YAML handling is easy to get subtly wrong: syntax errors before and after good rules,
/// duplicate and unknown top-level keys in every order, aliases, merge keys, tags, non-list `rules:`,
/// several documents, a huge integer. Each maps to exactly what compiling it reports (a compiled policy
/// as its rule names and test count), so a change to how files are read cannot change what is accepted
/// or any message.
const TRICKY_DOCUMENTS: &[(&str, &str)] = &[
    ("", "ERR policies/bad.yaml: file is empty: expected `rules:` (and optionally `tests:`)"),
    ("# only a comment\n", "ERR policies/bad.yaml: file is empty: expected `rules:` (and optionally `tests:`)"),
    ("[a, b]\n", "ERR policies/bad.yaml: expected a mapping with `rules:` and `tests:` at the top level"),
    ("!tag {rules: []}\n", "ERR policies/bad.yaml: expected a mapping with `rules:` and `tests:` at the top level"),
    ("hello\n", "ERR policies/bad.yaml: expected a mapping with `rules:` and `tests:` at the top level"),
    ("rules:\n", "OK rules=[] tests=0"),
    ("rules: ~\ntests:\n", "OK rules=[] tests=0"),
    ("{}\n", "ERR policies/bad.yaml: file has neither `rules:` nor `tests:`"),
    ("rules: 3\n", "ERR policies/bad.yaml: `rules` must be a list (each item starting with `- `)"),
    ("rules: 99999999999999999999999999999999999999999\n", "ERR policies/bad.yaml: `rules` must be a list (each item starting with `- `)"),
    ("rules: {a: 1}\n", "ERR policies/bad.yaml: `rules` must be a list (each item starting with `- `)"),
    ("rules: !tag [ ]\n", "ERR policies/bad.yaml: `rules` must be a list (each item starting with `- `)"),
    ("rules: []\nrules: []\n", "ERR policies/bad.yaml: YAML syntax error: duplicate entry with key \"rules\""),
    ("rules: []\ntests: []\ntests: []\n", "ERR policies/bad.yaml: YAML syntax error: duplicate entry with key \"tests\""),
    ("? [x]\n: 1\nrules: []\n", "ERR policies/bad.yaml: unknown top-level key Sequence [String(\"x\")] (expected `rules` and `tests`)"),
    ("1: a\ntrue: b\n~: c\nrules: []\n", "ERR policies/bad.yaml: unknown top-level key Number(1) (expected `rules` and `tests`)\nERR policies/bad.yaml: unknown top-level key Bool(true) (expected `rules` and `tests`)\nERR policies/bad.yaml: unknown top-level key Null (expected `rules` and `tests`)"),
    ("rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\nextra: 1\nmore: 2\n", "ERR policies/bad.yaml: unknown top-level key `extra` (expected `rules` and `tests`)\nERR policies/bad.yaml: unknown top-level key `more` (expected `rules` and `tests`)"),
    ("extra: 1\nrules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n  - name: a\n", "ERR policies/bad.yaml: unknown top-level key `extra` (expected `rules` and `tests`)\nERR policies/bad.yaml: rule 2 \"a\": field `name`: duplicate rule name \"a\": rule 1 in policies/bad.yaml has it too\nERR policies/bad.yaml: rule 2 \"a\": field `actions`: required: a list of pull, push, delete or \"*\"\nERR policies/bad.yaml: rule 2 \"a\": field `resources`: required: repository name patterns such as [\"team/**\"], or [catalog] for type registry"),
    ("tests:\n  - name: t\n    scope: \"repository:x:pull\"\n    expect: [pull]\n    bogus: 1\nrules:\n  - nam: a\n", "ERR policies/bad.yaml: rule 1 (unnamed): unknown field `nam`, expected one of `name`, `description`, `effect`, `match`, `type`, `resources`, `actions`\nERR policies/bad.yaml: test 1 \"t\": unknown field `bogus`, expected one of `name`, `identity`, `auth_method`, `client_ip`, `service`, `scope`, `expect`"),
    ("rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n  - name: b\n    resources: [x\n", "ERR policies/bad.yaml: YAML syntax error: did not find expected ',' or ']' at line 7 column 1, while parsing a flow sequence at line 6 column 16"),
    ("rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n  - name: b\n   bad: indent\n", "ERR policies/bad.yaml: YAML syntax error: did not find expected '-' indicator at line 6 column 4, while parsing a block collection at line 2 column 3"),
    ("rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n---\nrules: []\n", "ERR policies/bad.yaml: YAML syntax error: deserializing from YAML containing more than one document is not supported"),
    ("rules:\n  - &r\n    name: a\n    resources: [x]\n    actions: [pull]\n  - *r\n", "ERR policies/bad.yaml: rule 2 \"a\": field `name`: duplicate rule name \"a\": rule 1 in policies/bad.yaml has it too"),
    ("rules:\n  - name: a\n    resources: &res [x, y]\n    actions: &act [pull]\n  - name: b\n    resources: *res\n    actions: *act\n", "OK rules=[\"a\", \"b\"] tests=0"),
    ("rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n  - *nope\n", "ERR policies/bad.yaml: YAML syntax error: unknown anchor at line 5 column 5"),
    ("base: &b {resources: [x], actions: [pull]}\nrules:\n  - <<: *b\n    name: a\n", "ERR policies/bad.yaml: unknown top-level key `base` (expected `rules` and `tests`)\nERR policies/bad.yaml: rule 1 \"a\": unknown field `<<`, expected one of `name`, `description`, `effect`, `match`, `type`, `resources`, `actions`"),
    ("rules: &all\n  - name: a\n    resources: [x]\n    actions: [pull]\ntests: *all\n", "ERR policies/bad.yaml: test 1 \"a\": unknown field `resources`, expected one of `name`, `identity`, `auth_method`, `client_ip`, `service`, `scope`, `expect`"),
    ("rules:\n  - !rule {name: a, resources: [x], actions: [pull]}\n  - name: b\n    resources: [x]\n    actions: [pull]\n", "OK rules=[\"a\", \"b\"] tests=0"),
    ("rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n    name: b\n", "ERR policies/bad.yaml: YAML syntax error: rules[0]: duplicate entry with key \"name\" at line 2 column 5"),
    ("rules:\n  - name: a\n    match: [1]\n    resources: [x]\n    actions: [pull]\n  - 7\n  - ~\n", "ERR policies/bad.yaml: rule 1 \"a\": field `match`: invalid type: sequence, expected struct RawMatch\nERR policies/bad.yaml: rule 2 (unnamed): invalid type: integer `7`, expected struct RawRule\nERR policies/bad.yaml: rule 3 (unnamed): field `name`: required: every rule needs a unique name, shown in logs and `policy explain`\nERR policies/bad.yaml: rule 3 (unnamed): field `actions`: required: a list of pull, push, delete or \"*\"\nERR policies/bad.yaml: rule 3 (unnamed): field `resources`: required: repository name patterns such as [\"team/**\"], or [catalog] for type registry"),
    ("rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n  - name: b\n    effect: maybe\n    resources: [\"{team}/**\"]\n    actions: [pull]\n", "ERR policies/bad.yaml: rule 2 \"b\": field `effect`: unknown effect \"maybe\" (expected allow or deny)\nERR policies/bad.yaml: rule 2 \"b\": field `resources[0]`: unknown capture {team} (available: username)"),
    ("\"rules\": [{name: a, resources: [x], actions: [pull]}]\n!!str tests: []\n", "OK rules=[\"a\"] tests=0"),
];

fn compile_outcome(text: &str) -> String {
    match Policy::compile(&[PolicySource { path: "policies/bad.yaml".into(), text: text.into() }]) {
        Ok(p) => format!(
            "OK rules={:?} tests={}",
            p.inner.rules.iter().map(|r| r.name.to_string()).collect::<Vec<_>>(),
            p.test_count()
        ),
        Err(errors) => format!("ERR {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\nERR ")),
    }
}

#[test]
fn tricky_documents_are_read_as_before() {
    let mut wrong = Vec::new();
    for (text, expected) in TRICKY_DOCUMENTS {
        let got = compile_outcome(text);
        if got != *expected {
            wrong.push(format!("    ({text:?}, {got:?}),"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_file_that_does_not_parse_leaves_no_rule_names_behind() {
    // Rule `a` of the broken file was compiled before the syntax error was reached; the other file's `a`
    // is then no duplicate, and the broken file reports nothing but its syntax error.
    let broken = PolicySource {
        path: "broken.yaml".into(),
        text: "rules:\n  - name: a\n    resources: [x]\n    actions: [pull]\n  - name: b\n    resources: [x\n".into(),
    };
    let good = PolicySource {
        path: "good.yaml".into(),
        text: "rules:\n  - name: a\n    resources: [y]\n    actions: [push]\n".into(),
    };
    let errors = Policy::compile(&[broken, good.clone()]).expect_err("broken file");
    let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("broken.yaml: YAML syntax error: did not find expected ','"), "{shown:?}");
    let alone = Policy::compile(&[good]).expect("good file");
    assert_eq!(alone.rule_count(), 1);
}
