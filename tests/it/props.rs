//! Property tests of everything that parses client or operator input: the scope parser, the Basic header
//! and the form and query parsers (through the public router, as a client reaches them), the policy loader,
//! refresh tokens and the group DNs a directory returns. The properties: nothing panics or answers 500, nothing but the right credentials gets
//! a token, what parses re-parses to the same thing, and a tampered refresh token is always refused.
//!
//! A short run is part of the suite (64 cases per property, or `PROPTEST_CASES`); a longer one is
//! documented in BENCHMARKS.md (`PROPTEST_CASES=20000 cargo test --release --test it props`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use proptest::prelude::*;
use tollgate::app::AppState;
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
