//! Property tests of everything that parses client or operator input: the scope parser, the Basic header
//! and the form and query parsers (through the public router, as a client reaches them), the policy loader,
//! refresh tokens and the group DNs a directory returns. The properties: nothing panics or answers 500, nothing but the right credentials gets
//! a token, what parses re-parses to the same thing, and a tampered refresh token is always refused. And one
//! of the policy engine: the rule index changes no decision (random policies and identities, indexed
//! `authorize` against evaluating every rule).
//!
//! A short run is part of the suite (64 cases per property, or `PROPTEST_CASES`; the index property runs
//! 32 times as many, its cases being cheap); a longer one is documented in BENCHMARKS.md
//! (`PROPTEST_CASES=20000 cargo test --release --test it props`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use proptest::prelude::*;
use tollgate::app::AppState;
use tollgate::identity::{AuthMethod, Identity, RequestContext};
use tollgate::policy::{Policy, PolicySource};
use tollgate::scope::Scope;
use tollgate::token::refresh::RefreshTokens;

use crate::harness::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

/// One environment for every case (building state hashes passwords and loads keys).
fn state() -> Arc<AppState> {
    static ENV: OnceLock<(TestEnv, Arc<AppState>)> = OnceLock::new();
    ENV.get_or_init(|| {
        // Near-miss passwords by the hundred from one address: the failed-login limit would answer 429.
        let env = TestEnv::with(Opts { extra_yaml: crate::faults::NO_RATE_LIMIT.into(), ..Opts::default() });
        let state = env.state();
        (env, state)
    })
    .1
    .clone()
}

/// One request through the router on a runtime of its own: (status, body as JSON when it is).
fn send(req: Request<Body>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(call(&state(), req));
    (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
}

/// Text that looks like what clients send: the characters of scopes, forms and headers, plus a few others.
fn texty(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::char::range('a', 'z'),
            2 => prop_oneof![Just(':'), Just(','), Just('/'), Just('*'), Just('='), Just('&'), Just('%'), Just('+')],
            1 => proptest::char::range('0', '9'),
            1 => any::<char>(),
        ],
        0..max,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn scope_parse_never_panics_and_what_parses_reparses_the_same(s in texty(80)) {
        if let Ok(scope) = Scope::parse(&s) {
            let again = Scope::parse(&scope.to_string()).expect("the displayed form of a scope parses");
            prop_assert_eq!((again.rtype, &again.name, &again.actions), (scope.rtype, &scope.name, &scope.actions));
        }
    }

    /// Group DNs come from the directory: any text is a DN or not, never a panic; a group DN built by
    /// escaping any CN is under its OU (in any letter case) and never under a sibling OU.
    #[test]
    fn group_dns_parse_without_panic_and_escaped_cns_stay_in_their_ou(junk in texty(80), cn in texty(24)) {
        use tollgate::identity::ldap::text::{is_under, normalized_rdns};
        let _ = normalized_rdns(&junk);
        let _ = is_under(&junk, "OU=Groups,DC=corp");
        prop_assume!(!cn.trim().is_empty());
        let dn = format!("CN={},OU=Groups,DC=corp", ldap3::dn_escape(&cn));
        prop_assert!(is_under(&dn, "ou=groups,dc=CORP"), "{}", dn);
        prop_assert!(!is_under(&dn, "OU=Contractors,DC=corp"), "{}", dn);
        prop_assert!(!is_under("OU=Groups,DC=corp", &dn), "{}", dn);
    }

    #[test]
    fn scope_parse_of_well_formed_scopes_keeps_name_and_actions(
        name in "[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,3}",
        actions in proptest::sample::subsequence(vec!["pull", "push", "delete"], 1..=3),
    ) {
        let s = format!("repository:{name}:{}", actions.join(","));
        let scope = Scope::parse(&s).expect("well-formed");
        prop_assert_eq!(&scope.name, &name);
        prop_assert_eq!(scope.actions.len(), actions.len());
    }

    /// Any Authorization header: a client error or a refusal, never a 500 and never a token.
    #[test]
    fn basic_header_of_any_bytes_is_refused_cleanly(
        raw in proptest::collection::vec(any::<u8>(), 0..120),
        creds in proptest::collection::vec(any::<u8>(), 0..60),
        as_basic in any::<bool>(),
    ) {
        let value = if as_basic {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&creds)).into_bytes()
        } else {
            raw
        };
        let Ok(header) = axum::http::HeaderValue::from_bytes(&value) else { return Ok(()) };
        let req = Request::get(format!("/token?service={SERVICE}&scope=repository:payments/api:pull"))
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let (status, body) = send(req);
        prop_assert!(matches!(status, 400 | 401), "status {} for {:?}: {}", status, String::from_utf8_lossy(&value), body);
        prop_assert!(body.get("token").is_none());
    }

    /// The right password with junk appended or a byte changed is refused.
    #[test]
    fn basic_header_with_a_near_miss_password_is_refused(extra in texty(8).prop_filter("non-empty", |s| !s.is_empty())) {
        let (status, body) = send(get(
            &format!("service={SERVICE}&scope=repository:payments/api:pull"),
            Some(&basic(ALICE.0, &format!("{}{extra}", ALICE.1))),
        ));
        prop_assert!(matches!(status, 400 | 401), "{} {}", status, body);
    }

    /// Any query string with the right credentials: 200 or 400, never a 500, and a 200 only grants what
    /// alice may have.
    #[test]
    fn query_parser_never_fails_hard(query in texty(120)) {
        let uri = format!("/token?{}", query.replace(' ', "%20").replace('#', "%23"));
        let Ok(req) = Request::get(uri).header("authorization", basic(ALICE.0, ALICE.1)).body(Body::empty()) else {
            return Ok(());
        };
        let (status, body) = send(req);
        prop_assert!(matches!(status, 200 | 400 | 401), "status {} for {:?}: {}", status, query, body);
        if status == 200 {
            let token = body["token"].as_str().unwrap_or_default().to_string();
            // The example policy gives alice (team-payments, developers) push on payments/**, everything on
            // users/alice/**, and pull elsewhere at most.
            for entry in jwt_parts(&token).1["access"].as_array().cloned().unwrap_or_default() {
                let name = entry["name"].as_str().unwrap_or_default();
                let actions: Vec<&str> = entry["actions"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
                let ok = name.starts_with("users/alice/")
                    || (name.starts_with("payments/") && actions.iter().all(|a| *a == "pull" || *a == "push"))
                    || actions.iter().all(|a| *a == "pull");
                prop_assert!(ok, "unexpected grant {} for {:?}", entry, query);
            }
        }
    }

    /// Any form body: never a 500 and never a token (none of these carries a valid password).
    #[test]
    fn form_parser_never_fails_hard(
        form in texty(160),
        grant in prop_oneof![Just("password"), Just("refresh_token"), Just("x"), Just("")],
    ) {
        let body = format!("grant_type={grant}&service={SERVICE}&client_id=c&{form}");
        let req = Request::post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.clone()))
            .unwrap();
        let (status, json) = send(req);
        prop_assert!(matches!(status, 400 | 401), "status {} for {:?}: {}", status, body, json);
        prop_assert!(json.get("access_token").is_none() && json.get("token").is_none());
    }

    /// Rules files assembled from plausible and broken pieces: compiled or refused with errors, never a panic.
    #[test]
    fn policy_loader_never_panics(
        pieces in proptest::collection::vec(prop_oneof![
            Just("rules:\n".to_string()),
            Just("  - name: r\n".to_string()),
            Just("    match:\n      group: [\"team-{team}\"]\n".to_string()),
            Just("    match:\n      group_regex: \"ci-(?P<team>[a-z0-9-]+)\"\n".to_string()),
            Just("    match:\n      group_regex: \"(\"\n".to_string()),
            Just("    resources: [\"{team}/**\"]\n".to_string()),
            Just("    resources: [\"users/{username}/**\"]\n".to_string()),
            Just("    type: registry\n    resources: [catalog]\n".to_string()),
            Just("    effect: deny\n".to_string()),
            Just("    actions: [pull, push]\n".to_string()),
            Just("    actions: [\"*\"]\n".to_string()),
            Just("tests:\n  - user: a\n    scope: \"repository:x:pull\"\n    expect: [pull]\n".to_string()),
            texty(40),
        ], 0..12),
    ) {
        let text: String = pieces.concat();
        let _ = Policy::compile(&[PolicySource { path: "prop.yaml".into(), text }]);
    }

    /// Refresh tokens: junk is refused, and so is any single-character change to a valid token.
    #[test]
    fn refresh_tokens_refuse_junk_and_any_tampering(junk in texty(200), at in any::<prop::sample::Index>(), with in proptest::char::range('A', 'z')) {
        let tokens = RefreshTokens::new(&[7u8; 32], "tollgate-test", Duration::from_secs(600)).unwrap();
        prop_assert!(tokens.verify(&junk, SERVICE).is_err());
        prop_assert!(tokens.inspect(&junk).is_err());
        let (token, _) = tokens.issue("alice", "local", SERVICE).unwrap();
        let mut chars: Vec<char> = token.chars().collect();
        let i = at.index(chars.len());
        if chars[i] != with {
            chars[i] = with;
            let tampered: String = chars.into_iter().collect();
            prop_assert!(tokens.verify(&tampered, SERVICE).is_err(), "tampered token accepted: position {}", i);
        }
    }
}

/// One rule of a random policy, in the rules language: every kind of condition, literal and not, each
/// present or not, so that rules are filed under every index key and many are not filable at all.
/// Combinations that do not compile (a resource using a capture the match does not bind) are dropped
/// by [`random_policy`].
fn random_rule() -> impl Strategy<Value = String> {
    use proptest::sample::select;
    // Each condition present in one rule of five: a rule with five conditions almost never applies, and a
    // property that only ever compares refusals would prove little.
    fn of<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
        proptest::option::weighted(0.2, s)
    }
    let who = (
        of(select(vec!["[alice]", "[alice, bob]", "[\"ci-*\"]", "[\"svc-{svc}\"]", "[bob, \"{who}-x\"]"])),
        of(select(vec!["[bob]", "[\"ci-*\"]"])),
        of(select(vec!["\"svc-(?P<svc>[a-z]+)\"", "\"a.*\"", "\"(?P<who>[a-z]+)-x\""])),
        of(select(vec![
            "[team-a]",
            "[team-a, dev]",
            "[\"team-{team}\"]",
            "[\"ci-{team}\"]",
            "[\"*\"]",
            "[dev, team-b]",
        ])),
        of(select(vec!["[\"ops-*\"]", "[dev]"])),
        of(select(vec!["\"ops-(?P<n>[0-9]+)\"", "\"ci-(?P<team>[a-z]+)\"", "\"team-.*\""])),
    );
    let how = (
        of(select(vec!["[corp]", "[corp, static]"])),
        of(select(vec!["[password]", "[workload, refresh_token]", "[anonymous]", "[device]"])),
        of(any::<bool>()),
        of(select(vec![
            "{dept: pay}",
            "{dept: [pay, 7]}",
            "{dept: \"pa*\"}",
            "{dept: \"{team}\"}",
            "{org.team: a}",
            "{level: 3, dept: pay}",
            "{level: true}",
        ])),
        of(select(vec!["[10.0.0.0/8]", "[\"::1\", 192.168.1.0/24]"])),
        of(select(vec!["[reg]", "[registry.test, reg]"])),
    );
    let what = (
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
        select(vec![
            "[team-a/**]",
            "[\"{team}/**\"]",
            "[\"users/{username}/**\"]",
            "[\"*/prod/**\", prod]",
            "[\"public/*\"]",
            "[\"**\"]",
            "[\"**\"]",
            "[\"*\", \"*/*\"]",
            "[\"{svc}/api\", \"{svc}\"]",
            "[\"{n}/*\"]",
            "[\"{who}/**\"]",
            "[\"team-*/app\"]",
        ]),
        select(vec!["[pull]", "[push]", "[pull, push]", "[delete]", "[\"*\"]", "[\"*\"]", "[pull, delete]"]),
    );
    (who, how, what).prop_map(|(who, how, (deny, registry, resources, actions))| {
        let (account, not_account, account_regex, group, not_group, group_regex) = who;
        let (provider, auth_method, anonymous, claims, network, service) = how;
        let mut conds = Vec::new();
        let mut add = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                conds.push(format!("{key}: {v}"));
            }
        };
        add("account", account.map(String::from));
        add("not_account", not_account.map(String::from));
        add("account_regex", account_regex.map(String::from));
        add("group", group.map(String::from));
        add("not_group", not_group.map(String::from));
        add("group_regex", group_regex.map(String::from));
        add("provider", provider.map(String::from));
        add("auth_method", auth_method.map(String::from));
        add("anonymous", anonymous.map(|b| b.to_string()));
        add("claims", claims.map(String::from));
        add("client_network", network.map(String::from));
        add("service", service.map(String::from));
        let effect = if deny { "deny" } else { "allow" };
        let (rtype, resources, actions) =
            if registry { ("registry", "[catalog]", "[\"*\"]") } else { ("repository", resources, actions) };
        let matched = if conds.is_empty() { String::new() } else { format!("\n    match: {{ {} }}", conds.join(", ")) };
        format!(
            "    effect: {effect}\n    type: {rtype}{matched}\n    resources: {resources}\n    actions: {actions}\n"
        )
    })
}

/// A policy of the rules that compile on their own, named r0, r1, ... in order.
fn random_policy(rules: &[String]) -> Option<(Policy, usize)> {
    let compiles = |body: &str| {
        let text = format!("rules:\n  - name: r\n{body}");
        Policy::compile(&[PolicySource { path: "p.yaml".into(), text }]).is_ok()
    };
    let kept: Vec<&String> = rules.iter().filter(|r| compiles(r)).collect();
    let text: String = std::iter::once("rules:\n".to_string())
        .chain(kept.iter().enumerate().map(|(i, r)| format!("  - name: r{i}\n{r}")))
        .collect();
    let policy = Policy::compile(&[PolicySource { path: "p.yaml".into(), text }])
        .unwrap_or_else(|e| panic!("rules that compile alone compile together: {e:?}"));
    (!kept.is_empty()).then_some((policy, kept.len()))
}

/// Who asks: usernames, groups, providers, claims, auth methods, addresses and services that the random
/// rules' conditions match and miss, hostile names included.
fn random_request() -> impl Strategy<Value = RequestContext> {
    use proptest::sample::{select, subsequence};
    (
        select(vec!["alice", "bob", "ci-web", "svc-api", "who-x", "bob/evil", "a.b", ""]),
        subsequence(
            vec!["team-a", "team-b", "dev", "ci-web", "ops-1", "ops-x", "*", "a/b", "team-..", "team-a"],
            0..=5,
        ),
        select(vec!["corp", "static", ""]),
        (
            select(vec![
                None,
                Some(serde_json::json!("pay")),
                Some(serde_json::json!(7)),
                Some(serde_json::json!(["x", "pay"])),
                Some(serde_json::json!("pax")),
                Some(serde_json::json!("a")),
            ]),
            select(vec![None, Some(serde_json::json!({"team": "a"})), Some(serde_json::json!({"team": ["b", "a"]}))]),
            select(vec![None, Some(serde_json::json!(3)), Some(serde_json::json!("3")), Some(serde_json::json!(true))]),
        ),
        select(vec![
            AuthMethod::Password,
            AuthMethod::RefreshToken,
            AuthMethod::Device,
            AuthMethod::Workload,
            AuthMethod::Anonymous,
        ]),
        select(vec!["10.1.2.3", "192.168.1.7", "::1", "::ffff:10.0.0.1", "172.16.0.1"]),
        select(vec!["registry.test", "reg"]),
    )
        .prop_map(|(username, groups, provider, (dept, org, level), auth_method, ip, service)| {
            let mut claims = std::collections::BTreeMap::new();
            for (key, value) in [("dept", dept), ("org", org), ("level", level)] {
                if let Some(v) = value {
                    claims.insert(key.to_string(), v);
                }
            }
            RequestContext {
                identity: Arc::new(Identity {
                    username: username.into(),
                    provider: provider.into(),
                    groups: groups.into_iter().map(String::from).collect(),
                    claims,
                    account: None,
                    expires_at: None,
                }),
                auth_method,
                client_ip: ip.parse().unwrap(),
                service: service.into(),
            }
        })
}

/// What is asked: names the random resources match and miss, any actions, and the catalog.
fn random_scope() -> impl Strategy<Value = Scope> {
    use proptest::sample::{select, subsequence};
    (
        select(vec![
            "team-a/app",
            "team-a",
            "a/x",
            "users/alice/x",
            "users/bob/evil/x",
            "web/prod/api",
            "prod",
            "public/x",
            "api/api",
            "api",
            "1/x",
            "pay/x",
            "team-b/app",
            "web/x",
        ]),
        subsequence(vec!["pull", "push", "delete", "*"], 1..=3),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(name, actions, catalog)| {
            let text = if catalog {
                "registry:catalog:*".to_string()
            } else {
                format!("repository:{name}:{}", actions.join(","))
            };
            Scope::parse(&text).unwrap()
        })
}

/// The rule index only skips rules that cannot apply: for random policies (literal, glob, regex and capture
/// matchers, allows and denies, every condition) and random requests, `authorize` grants the same actions
/// and names the same rules in the same order as evaluating every rule, and `explain` agrees; and the bounded
/// explanation `/whoami` gives (`explain_bounded`, with a bound of 0 to 5 rules) names the same rules per
/// action, lists in order a part of what `explain` lists, counts the rest, and is `explain` itself whenever
/// everything fits. Runs 32 times
/// `PROPTEST_CASES` policies (its cases are cheap and its input space wide), and checks that the run
/// exercised real decisions, not only refusals.
#[test]
fn the_rule_index_changes_no_decision() {
    use std::cell::Cell;
    let config = ProptestConfig { cases: cases() * 32, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config.clone());
    let (policies, compared, granted, denied) =
        (Cell::new(0usize), Cell::new(0usize), Cell::new(0usize), Cell::new(0usize));
    let strategy = (
        proptest::collection::vec(random_rule(), 1..12),
        proptest::collection::vec((random_request(), random_scope()), 1..16),
    );
    let result = runner.run(&strategy, |(rules, requests)| {
        let Some((policy, _)) = random_policy(&rules) else { return Ok(()) };
        policies.set(policies.get() + 1);
        for (ctx, scope) in &requests {
            let indexed = policy.authorize(ctx, scope);
            let scanned = policy.authorize_scan(ctx, scope);
            prop_assert_eq!(&indexed, &scanned, "{:?} asking {}", ctx, scope);
            let full = policy.explain(ctx, scope);
            prop_assert_eq!(&full.granted, &indexed.granted);
            let limit = compared.get() % 6;
            let bounded = policy.explain_bounded(ctx, scope, limit);
            let (f, b) = (serde_json::to_value(&full).unwrap(), serde_json::to_value(&bounded).unwrap());
            prop_assert_eq!(&b["actions"], &f["actions"], "{:?} asking {}", ctx, scope);
            prop_assert_eq!(&bounded.granted, &full.granted);
            prop_assert_eq!(bounded.not_applied.len() + bounded.not_applied_omitted, full.not_applied.len());
            if full.not_applied.len() <= limit {
                prop_assert_eq!(&b, &f, "everything fits in {}: the bounded explanation is the full one", limit);
            } else {
                // Only rules the identity reaches are listed, so there may be fewer than the bound.
                prop_assert!(bounded.not_applied.len() <= limit);
                // Listed in file order, each as `explain` words it: a subsequence of the full list.
                let mut full_entries = f["not_applied"].as_array().unwrap().iter();
                for listed in b["not_applied"].as_array().unwrap() {
                    prop_assert!(full_entries.any(|e| e == listed), "{} not in order in {}", listed, f["not_applied"]);
                }
            }
            compared.set(compared.get() + 1);
            granted.set(granted.get() + usize::from(!indexed.granted.is_empty()));
            denied.set(denied.get() + usize::from(!indexed.denied_by.is_empty()));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "rule index property: {} cases, {} policies, {} decisions compared ({} granting, {} with a deny), 0 differences",
        config.cases,
        policies.get(),
        compared.get(),
        granted.get(),
        denied.get()
    );
    assert!(policies.get() * 2 > config.cases as usize, "most random policies must compile: {}", policies.get());
    assert!(granted.get() * 8 > compared.get(), "too few grants to prove anything: {granted:?} of {compared:?}");
    assert!(denied.get() * 100 > compared.get(), "too few denials to prove anything: {denied:?} of {compared:?}");
}
