//! The token endpoint in process: every client behaviour of the protocol and every kind of bad input,
//! through the real router (no socket). The real registry and clients are in `e2e`.

use axum::body::Body;
use axum::http::Request;

use crate::harness::*;

fn scope_q(scopes: &[&str]) -> String {
    scopes.iter().map(|s| format!("&scope={}", enc(s))).collect()
}

#[tokio::test]
async fn docker_login_probe_gets_an_empty_token_and_a_refresh_token() {
    let env = TestEnv::new();
    let state = env.state();
    let q = format!("account=alice&client_id=docker&offline_token=true&service={SERVICE}");
    let r = call(&state, get(&q, Some(&basic(ALICE.0, ALICE.1)))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["token"], j["access_token"]);
    assert!(j["expires_in"].as_u64().unwrap() >= 60);
    let issued_at = j["issued_at"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(issued_at).is_ok(), "{issued_at}");
    assert!(j["refresh_token"].as_str().unwrap().starts_with("tgr_"));
    assert!(j.get("scope").is_none(), "GET replies carry no scope field");
    assert_eq!(r.headers["cache-control"], "no-store");

    let jwks = call(&state, Request::get("/.well-known/jwks.json").body(Body::empty()).unwrap()).await.json();
    let claims = verify_with_jwks(j["token"].as_str().unwrap(), &jwks);
    assert_eq!(claims["sub"], "alice");
    assert!(claims["aud"].is_string(), "aud must be a single string for registry 2.8: {claims}");
    assert_eq!(claims["access"], serde_json::json!([]));
    for c in ["exp", "nbf", "iat"] {
        assert!(claims[c].is_u64(), "{c} must be an integer: {claims}");
    }
    assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
    let (header, _) = jwt_parts(j["token"].as_str().unwrap());
    assert_eq!(header["alg"], "ES256");
    assert!(header["x5c"][0].as_str().unwrap().starts_with("MII"), "standard base64 DER: {header}");
    assert_eq!(header["kid"].as_str().unwrap().split(':').count(), 12, "libtrust kid: {header}");

    let no_offline = call(&state, get(&format!("service={SERVICE}"), Some(&basic(ALICE.0, ALICE.1)))).await.json();
    assert!(no_offline.get("refresh_token").is_none(), "refresh tokens only when asked for");
}

#[tokio::test]
async fn scopes_repeated_space_separated_with_ports_and_plugin_class_are_all_answered() {
    let env = TestEnv::new();
    let state = env.state();
    let q = format!(
        "service={SERVICE}{}",
        scope_q(&[
            "repository:payments/api:pull,push repository:users/alice/x:*",
            "repository(plugin):payments/tool:pull",
            "repository:payments/api:pull,push",
            "repository:127.0.0.1:5000/payments/api:pull",
            "repository:web/site:pull",
        ])
    );
    let r = call(&state, get(&q, Some(&basic(ALICE.0, ALICE.1)))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, claims) = jwt_parts(r.json()["token"].as_str().unwrap());
    let access = claims["access"].as_array().unwrap();
    let find = |name: &str| access.iter().find(|a| a["name"] == name).map(|a| a["actions"].clone());
    assert_eq!(find("payments/api"), Some(serde_json::json!(["pull", "push"])));
    assert_eq!(find("users/alice/x"), Some(serde_json::json!(["*"])));
    assert_eq!(find("payments/tool"), Some(serde_json::json!(["pull"])));
    assert_eq!(find("web/site"), None, "nothing granted means no entry, not an error");
    assert_eq!(find("127.0.0.1:5000/payments/api"), None, "a host prefix is part of the name the rules see");
    assert_eq!(access.iter().filter(|a| a["name"] == "payments/api").count(), 1, "duplicates collapse");
}

#[tokio::test]
async fn star_is_granted_only_with_every_action_and_the_catalog_only_by_its_rule() {
    let env = TestEnv::new();
    let state = env.state();
    let grant = |user: (&'static str, &'static str), scope: &'static str| {
        let state = state.clone();
        async move {
            let r = call(&state, get(&format!("service={SERVICE}&scope={}", enc(scope)), Some(&basic(user.0, user.1))))
                .await;
            assert_eq!(r.status, 200);
            let (_, c) = jwt_parts(r.json()["token"].as_str().unwrap());
            c["access"].get(0).map(|a| a["actions"].clone()).unwrap_or(serde_json::json!([]))
        }
    };
    assert_eq!(grant(ALICE, "repository:payments/api:*").await, serde_json::json!([]));
    assert_eq!(grant(ALICE, "repository:users/alice/tmp:*").await, serde_json::json!(["*"]));
    assert_eq!(grant(ADMIN, "registry:catalog:*").await, serde_json::json!(["*"]));
    assert_eq!(grant(BOB, "registry:catalog:*").await, serde_json::json!([]));
    assert_eq!(grant(ADMIN, "repository:prod/base:push,pull").await, serde_json::json!(["pull"]));
}

#[tokio::test]
async fn bad_credentials_get_401_with_basic_challenge_and_never_an_anonymous_token() {
    let env = TestEnv::new();
    let state = env.state();
    for (u, p) in [(ALICE.0, "wrong"), ("nobody", "x"), (ALICE.0, ""), ("", "x"), (ROBOT.0, ALICE.1)] {
        let r = call(
            &state,
            get(&format!("service={SERVICE}&scope={}", enc("repository:public/x:pull")), Some(&basic(u, p))),
        )
        .await;
        assert_eq!(r.status, 401, "{u}:{p}");
        assert_eq!(r.headers["www-authenticate"], "Basic realm=\"tollgate\", charset=\"UTF-8\"");
        assert_eq!(
            r.error_message(),
            "invalid username or password",
            "same message for unknown users and wrong passwords"
        );
    }
}

#[tokio::test]
async fn anonymous_requests_get_what_the_policy_gives_anonymous() {
    let env = TestEnv::new();
    let state = env.state();
    let q =
        format!("service={SERVICE}{}", scope_q(&["repository:public/hello:pull,push", "repository:payments/api:pull"]));
    let r = call(&state, get(&q, None)).await;
    assert_eq!(r.status, 200);
    let (_, c) = jwt_parts(r.json()["token"].as_str().unwrap());
    assert_eq!(c["sub"], "");
    assert_eq!(c["access"], serde_json::json!([{"type": "repository", "name": "public/hello", "actions": ["pull"]}]));
    let r = call(&state, get(&format!("service={SERVICE}&account=alice"), None)).await;
    assert_eq!(r.status, 401, "an account without credentials is a prompt for credentials");
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_problem() {
    let env = TestEnv::new();
    let state = env.state();
    let auth = basic(ALICE.0, ALICE.1);
    let many: String = (0..2000).map(|i| format!("&scope=repository:a{i}:pull")).collect();
    let cases: Vec<(String, &str)> = vec![
        ("scope=repository:a:pull".into(), "service parameter is required"),
        (format!("service=evil.example&scope={}", enc("repository:a:pull")), "unknown service \"evil.example\""),
        (format!("service={SERVICE}&service=other.test"), "service is given twice"),
        (format!("service={SERVICE}&scope={}", enc("image:a:pull")), "unknown resource type \"image\""),
        (format!("service={SERVICE}&scope={}", enc("repository:a:fly")), "unknown action \"fly\""),
        (format!("service={SERVICE}&scope={}", enc("repository:a\u{7}b:pull")), "control or non-ASCII"),
        (format!("service={SERVICE}&scope={}", enc("repository:a\nb:pull")), "control or non-ASCII"),
        (format!("service={SERVICE}&scope={}", enc("repository:UPPER:pull")), "invalid repository name"),
        (format!("service={SERVICE}&scope={}", enc("repository")), "not of the form"),
        (format!("service={SERVICE}&scope=%FF%FE"), "control or non-ASCII"),
        (format!("service={SERVICE}{many}"), "too many"),
        (format!("service={SERVICE}&account=bob"), "account \"bob\" does not match"),
    ];
    for (q, want) in cases {
        let r = call(&state, get(&q, Some(&auth))).await;
        assert_eq!(r.status, 400, "{q:.80}");
        let msg = r.error_message();
        assert!(msg.contains(want), "{q:.80}: {msg:?} should contain {want:?}");
    }
}

#[tokio::test]
async fn malformed_authorization_headers_get_400_not_500() {
    let env = TestEnv::new();
    let state = env.state();
    let huge = format!("Basic {}", "A".repeat(20_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"Basic %%%".to_vec(), "not valid base64"),
        (b"Basic //79".to_vec(), "not UTF-8"),
        (b"Basic YWxpY2U=".to_vec(), "no ':'"),
        (b"Bearer abc.def.ghi".to_vec(), "use Basic"),
        (b"Basic \xc3\xa9t\xc3\xa9".to_vec(), "non-ASCII"),
        (huge.into_bytes(), "longer than 8192"),
        (
            format!("Basic {}", {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode("al\u{0}ice:pw")
            })
            .into_bytes(),
            "control characters",
        ),
    ];
    for (raw, want) in cases {
        let req = Request::get(format!("/token?service={SERVICE}"))
            .header("authorization", axum::http::HeaderValue::from_bytes(&raw).unwrap())
            .body(Body::empty())
            .unwrap();
        let r = call(&state, req).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
        let msg = r.error_message();
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
}

#[tokio::test]
async fn containerd_style_post_password_grant() {
    let env = TestEnv::new();
    let state = env.state();
    let form = format!(
        "grant_type=password&client_id=containerd-client&service={SERVICE}&username=alice&password={}&scope={}",
        enc(ALICE.1),
        enc("repository:payments/api:pull repository:payments/db:pull,push")
    );
    let r = call(&state, post(&form)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["token"], j["access_token"], "containerd reads access_token");
    assert_eq!(j["scope"], "repository:payments/api:pull repository:payments/db:pull,push");
    assert!(j.get("refresh_token").is_none());
    let offline = call(&state, post(&format!("{form}&access_type=offline"))).await.json();
    assert!(offline["refresh_token"].as_str().unwrap().starts_with("tgr_"));
}

#[tokio::test]
async fn chunked_post_bodies_without_content_length_are_read() {
    let env = TestEnv::new();
    let state = env.state();
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"grant_type=password&client_id=containers%2Fimage&".to_vec()),
        Ok(format!("service={SERVICE}&username=alice&password={}", enc(ALICE.1)).into_bytes()),
        Ok(format!("&scope={}&scope={}", enc("repository:payments/api:pull"), enc("repository:payments/api:pull"))
            .into_bytes()),
    ];
    let body = Body::from_stream(futures_stream(parts));
    let req = Request::post("/token").header("content-type", "application/x-www-form-urlencoded").body(body).unwrap();
    let r = call(&state, req).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["scope"], "repository:payments/api:pull");
}

/// A stream over ready chunks: what a chunked transfer looks like to the handler.
struct Chunks(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

fn futures_stream(parts: Vec<Result<Vec<u8>, std::io::Error>>) -> Chunks {
    Chunks(parts.into_iter())
}

#[tokio::test]
async fn post_errors_name_the_missing_or_wrong_field() {
    let env = TestEnv::new();
    let state = env.state();
    let big = format!("grant_type=password&client_id=x&password={}", "a".repeat(70_000));
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("grant_type=password&service={SERVICE}&username=alice&password=x"), 400, "client_id is required"),
        (format!("client_id=x&service={SERVICE}"), 400, "grant_type is required"),
        (format!("grant_type=magic&client_id=x&service={SERVICE}"), 400, "unsupported grant_type \"magic\""),
        (format!("grant_type=password&client_id=x&service={SERVICE}&password=x"), 400, "username is required"),
        (format!("grant_type=password&client_id=x&service={SERVICE}&username=alice"), 400, "password is required"),
        (format!("grant_type=refresh_token&client_id=x&service={SERVICE}"), 400, "refresh_token is required"),
        (
            format!("grant_type=refresh_token&client_id=x&service={SERVICE}&refresh_token=tgr_garbage"),
            401,
            "malformed or was not issued",
        ),
        (
            format!("grant_type=password&client_id=x&service={SERVICE}&username=alice&password=nope"),
            401,
            "invalid username or password",
        ),
        (big, 413, "larger than 65536"),
    ];
    for (form, status, want) in cases {
        let r = call(&state, post(&form)).await;
        assert_eq!(r.status, status, "{form:.80}");
        let msg = r.error_message();
        assert!(msg.contains(want), "{form:.80}: {msg:?} should contain {want:?}");
    }
    let json_body = Request::post("/token").header("content-type", "application/json").body(Body::from("{}")).unwrap();
    let r = call(&state, json_body).await;
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("x-www-form-urlencoded"));
}

async fn refresh_token_for(state: &std::sync::Arc<tollgate::app::AppState>, user: (&str, &str)) -> String {
    let r = call(
        state,
        get(&format!("service={SERVICE}&offline_token=true&client_id=docker"), Some(&basic(user.0, user.1))),
    )
    .await;
    assert_eq!(r.status, 200);
    r.json()["refresh_token"].as_str().unwrap().to_string()
}

fn refresh_form(token: &str, scope: &str) -> String {
    format!(
        "grant_type=refresh_token&client_id=docker&service={SERVICE}&refresh_token={}&scope={}",
        enc(token),
        enc(scope)
    )
}

#[tokio::test]
async fn refresh_tokens_are_reusable_and_bound_to_user_and_service() {
    let env = TestEnv::new();
    let state = env.state();
    let rt = refresh_token_for(&state, ALICE).await;
    for _ in 0..3 {
        let r = call(&state, post(&refresh_form(&rt, "repository:payments/api:push,pull"))).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        assert_eq!(j["scope"], "repository:payments/api:push,pull");
        assert!(j.get("refresh_token").is_none(), "refresh tokens are never rotated");
        let (_, c) = jwt_parts(j["token"].as_str().unwrap());
        assert_eq!(c["sub"], "alice");
    }
    // As a Basic password: with the right username, and with an empty one (containerd's GET fallback).
    for user in ["alice", ""] {
        let r = call(
            &state,
            get(&format!("service={SERVICE}&scope={}", enc("repository:payments/api:pull")), Some(&basic(user, &rt))),
        )
        .await;
        assert_eq!(r.status, 200, "user {user:?}");
        let (_, c) = jwt_parts(r.json()["token"].as_str().unwrap());
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["access"][0]["actions"], serde_json::json!(["pull"]));
    }
    let r = call(&state, get(&format!("service={SERVICE}"), Some(&basic("bob", &rt)))).await;
    assert_eq!(r.status, 401);
    assert!(r.error_message().contains("different user"));
    let other = format!("grant_type=refresh_token&client_id=docker&service=other.test&refresh_token={}", enc(&rt));
    let r = call(&state, post(&other)).await;
    assert_eq!(r.status, 401);
    assert!(r.error_message().contains("issued for service \"registry.test\""));
}

#[tokio::test]
async fn expired_and_foreign_refresh_tokens_are_refused() {
    let env = TestEnv::new();
    let state = env.state();
    let secret = std::fs::read_to_string(env.path().join("data/refresh-secret")).unwrap();
    let expired =
        tollgate::token::refresh::RefreshTokens::new(secret.trim().as_bytes(), ISSUER, std::time::Duration::ZERO)
            .unwrap();
    let (old, _) = expired.issue("alice", "local", SERVICE).unwrap();
    let foreign =
        tollgate::token::refresh::RefreshTokens::new(&[7u8; 32], ISSUER, std::time::Duration::from_secs(999)).unwrap();
    let (theirs, _) = foreign.issue("alice", "local", SERVICE).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = call(&state, post(&refresh_form(&old, "repository:payments/api:pull"))).await;
    assert_eq!(r.status, 401);
    assert!(r.error_message().contains("expired"));
    let r = call(&state, post(&refresh_form(&theirs, "repository:payments/api:pull"))).await;
    assert_eq!(r.status, 401);
    assert!(r.error_message().contains("not issued by this server"));
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let env = TestEnv::new();
    let state = env.state();
    let alice_rt = refresh_token_for(&state, ALICE).await;
    let alice_rt2 = refresh_token_for(&state, ALICE).await;
    let bob_rt = refresh_token_for(&state, BOB).await;
    let store = tollgate::store::revocation::FileStore::new(env.settings().revocation_file());
    let secret = std::fs::read_to_string(env.path().join("data/refresh-secret")).unwrap();
    let tokens = tollgate::token::refresh::RefreshTokens::new(
        secret.trim().as_bytes(),
        ISSUER,
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    let c = tokens.inspect(&alice_rt).unwrap();
    store.revoke_sync(tollgate::store::revocation::Revocation::Token { jti: c.jti, exp: c.exp }).unwrap();
    let status = |rt: String| {
        let state = state.clone();
        async move { call(&state, post(&refresh_form(&rt, "repository:payments/api:pull"))).await }
    };
    let r = status(alice_rt.clone()).await;
    assert_eq!(r.status, 401);
    assert!(r.error_message().contains("revoked"));
    assert_eq!(status(alice_rt2.clone()).await.status, 200, "only that one token");
    store
        .revoke_sync(tollgate::store::revocation::Revocation::All { before_ms: tollgate::support::time::unix_now_ms() })
        .unwrap();
    assert_eq!(status(alice_rt2).await.status, 401);
    assert_eq!(status(bob_rt).await.status, 401);
}

#[tokio::test]
async fn a_disabled_robot_stops_within_a_tenth_of_a_second_despite_the_cache() {
    let env = TestEnv::new();
    let state = env.state();
    let q = format!("service={SERVICE}&offline_token=true&scope={}", enc("repository:payments/api:push"));
    let r = call(&state, get(&q, Some(&basic(ROBOT.0, ROBOT.1)))).await;
    assert_eq!(r.status, 200);
    let robot_rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(call(&state, get(&q, Some(&basic(ROBOT.0, ROBOT.1)))).await.status, 200, "now cached");

    let text = std::fs::read_to_string(&env.accounts).unwrap();
    let disabled = text.replace("    robot: true\n", "    robot: true\n    disabled: true\n");
    assert_ne!(text, disabled);
    replace_file(&env.accounts, &disabled);
    // Requests look at the file at most every RECHECK_FILE (0.1 s), not at the cache TTL (minutes).
    tokio::time::sleep(tollgate::identity::accounts::RECHECK_FILE).await;
    let r = call(&state, get(&q, Some(&basic(ROBOT.0, ROBOT.1)))).await;
    assert_eq!(r.status, 401, "disabled must beat the identity cache");
    let r = call(&state, post(&refresh_form(&robot_rt, "repository:payments/api:pull"))).await;
    assert_eq!(r.status, 401);
    assert!(r.error_message().contains("no longer exists or is disabled"));
}

#[tokio::test]
async fn policy_hot_reload_applies_valid_changes_and_keeps_the_old_policy_on_errors() {
    let env = TestEnv::new();
    let state = env.state();
    let q = format!("service={SERVICE}&scope={}", enc("repository:web/site:pull"));
    let granted = |state: std::sync::Arc<tollgate::app::AppState>| {
        let q = q.clone();
        async move {
            let r = call(&state, get(&q, Some(&basic(ALICE.0, ALICE.1)))).await;
            let (_, c) = jwt_parts(r.json()["token"].as_str().unwrap());
            !c["access"].as_array().unwrap().is_empty()
        }
    };
    assert!(!granted(state.clone()).await);
    // Saved as editors do, by a rename: whole at once, so applied at once (an in-place write must settle).
    let save = |text: &str| {
        let tmp = env.policy.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &env.policy).unwrap();
    };
    save("rules:\n  - name: everyone-pulls-web\n    resources: [\"web/**\"]\n    actions: [pull]\n");
    assert!(granted(state.clone()).await, "the new rules apply on the next request");
    save("rules:\n  - name: broken\n    resources: [\"web/***\"]\n    actions: [fly]\n");
    assert!(granted(state.clone()).await, "an invalid policy leaves the previous one in force");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let env = TestEnv::new();
    let state = env.state();
    let r = call(&state, Request::get("/v2/").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 404);
    r.error_message();
    let r = call(&state, Request::put("/token").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 405);
    r.error_message();
    let r = call(&state, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 200);
    let r = call(&state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.json()["status"], "ready");
}

#[tokio::test]
async fn arbitrary_garbage_never_yields_a_5xx_or_a_grant() {
    let env = TestEnv::new();
    let state = env.state();
    // A deterministic generator: the same inputs every run, so a failure reproduces.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"repository:registry*catalog/()%20%00%FF,:&=+.-_ scopeservicepullpushdelete\\\"'";
    for i in 0..400 {
        let len = (next() % 120) as usize;
        let junk: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect();
        let q = format!("service={SERVICE}&scope={junk}");
        let uri = format!("/token?{}", q.replace(' ', "%20"));
        let Ok(req) = Request::get(&uri).body(Body::empty()) else { continue };
        let r = call(&state, req).await;
        assert!(r.status < 500, "case {i}: {uri} gave {}", r.status);
        if r.status == 200 {
            let (_, c) = jwt_parts(r.json()["token"].as_str().unwrap());
            for a in c["access"].as_array().unwrap() {
                assert!(
                    a["name"].as_str().unwrap().starts_with("public/"),
                    "anonymous grant outside public/: {a} for {uri}"
                );
            }
        }
    }
}

/// Make a key and self-signed certificate with openssl, as an operator would.
pub(crate) fn openssl_key(dir: &std::path::Path, name: &str, rsa: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let newkey = if rsa { "rsa:2048".to_string() } else { "ec".to_string() };
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["req", "-x509", "-nodes", "-days", "30", "-subj", &format!("/CN={name}"), "-newkey", &newkey]);
    if !rsa {
        cmd.args(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    cmd.arg("-keyout").arg(&key).arg("-out").arg(&crt);
    let out = cmd.output().expect("openssl is installed (package openssl)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (key, crt)
}

#[tokio::test]
async fn rotation_publishes_every_key_and_signs_with_the_active_one_including_rs256() {
    let keys = tempfile::tempdir().unwrap();
    let (old_key, old_crt) = openssl_key(keys.path(), "old", false);
    let (new_key, new_crt) = openssl_key(keys.path(), "new", true);
    let extra = format!(
        "  keys:\n    - key_file: {}\n      cert_file: {}\n    - key_file: {}\n      cert_file: {}\n      active: true\n",
        old_key.display(),
        old_crt.display(),
        new_key.display(),
        new_crt.display()
    );
    let env = TestEnv::with(Opts { extra_token_yaml: extra, ..Opts::default() });
    let state = env.state();
    let jwks = call(&state, Request::get("/.well-known/jwks.json").body(Body::empty()).unwrap()).await.json();
    let kinds: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kty"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["RSA", "EC"], "active key first, the other still published");
    let r = call(
        &state,
        get(
            &format!("service={SERVICE}&scope={}", enc("repository:payments/api:pull")),
            Some(&basic(ALICE.0, ALICE.1)),
        ),
    )
    .await;
    let token = r.json()["token"].as_str().unwrap().to_string();
    let (header, _) = jwt_parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
    let claims = verify_with_jwks(&token, &jwks);
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));
}

#[tokio::test]
async fn kid_formats_follow_the_config() {
    let env = TestEnv::with(Opts { kid_format: "rfc7638", header: "kid", ..Opts::default() });
    let state = env.state();
    let r = call(&state, get(&format!("service={SERVICE}"), Some(&basic(ALICE.0, ALICE.1)))).await;
    let (header, _) = jwt_parts(r.json()["token"].as_str().unwrap());
    assert!(header.get("x5c").is_none(), "kid-only header: {header}");
    let kid = header["kid"].as_str().unwrap();
    assert_eq!(kid.len(), 43, "base64url SHA-256 thumbprint: {kid}");
    assert_eq!(kid, state.issuer.keys.active().thumbprint);
}
