//! Workload identities through the real `tollgate serve`, the real registry 2.8 and real clients: a CI
//! job's or pod's signed JWT as the password (skopeo `--creds`, `docker login --password-stdin`, ctr
//! `--user`), RFC 8693 token exchange, the kubelet credential provider, and one test per attack.
//!
//! The issuers are real HTTP servers: the rig's issuer (rig/issuer.rs: discovery and JWKS, GitHub
//! Actions-, GitLab CI- and Kubernetes-shaped claims, RS256 and ES256), and the npm oidc-provider rig
//! issuing JWT access tokens to a client-credentials client.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::*;
use crate::ops::{tollgate_bin, Tollgate};
use crate::rig::issuer::{github_claims, gitlab_claims, jwks_of, kubernetes_claims};
use crate::rig::*;

const AUDIENCE: &str = "https://registry.test";

const POLICY: &str = r#"
rules:
  - name: gha-main-pushes
    description: A workflow of acme/<repo> running on main pushes ci/acme/<repo>/**.
    match: { provider: [github], claims: { repository: "acme/{repo}", ref: refs/heads/main } }
    resources: ["ci/acme/{repo}/**"]
    actions: [pull, push]
  - name: gha-jobs-pull
    description: Any other job of acme/<repo> (a pull request, say) only pulls.
    match: { provider: [github], claims: { sub: "repo:acme/{repo}:*" } }
    resources: ["ci/acme/{repo}/**"]
    actions: [pull]
  - name: gitlab-protected-pushes
    match: { provider: [gitlab], claims: { project_path: "platform/{project}", ref_protected: "true" } }
    resources: ["gl/{project}/**"]
    actions: [pull, push]
  - name: pods-pull
    match: { provider: [cluster], claims: { kubernetes.io.namespace: "{ns}" } }
    resources: ["k8s/{ns}/**"]
    actions: [pull]
  - name: rig-clients-push
    match: { provider: [idp], claims: { client_id: ci-workload, ci.pipeline: rig } }
    resources: ["ci/rig/**"]
    actions: [pull, push]
  - name: admins
    match: { group: [admins] }
    resources: ["**"]
    actions: ["*"]
tests:
  - name: a pull request job only pulls
    identity:
      username: "gha:acme/app"
      provider: github
      claims: { repository: acme/app, ref: refs/pull/3/merge, sub: "repo:acme/app:pull_request" }
    auth_method: workload
    scope: "repository:ci/acme/app/img:push,pull"
    expect: [pull]
"#;

/// A GitHub-shaped issuer entry (required owner id 100001, usernames `gha:<repository>`).
fn github_entry(issuer: &Issuer, extra: &str) -> String {
    format!(
        "  - type: workload\n    name: github\n    issuer: {}\n    audience: {AUDIENCE}\n    required_claims: {{ repository_owner_id: \"100001\" }}\n    username: \"gha:{{repository}}\"\n    groups: {{ fixed: [ci] }}\n{extra}",
        issuer.issuer()
    )
}

/// tollgate (the real binary) with these workload entries after the static `local` provider, the test
/// policy, and a registry 2.8 whose realm it is. Field order is drop order.
struct World {
    reg: Registry,
    tg: Tollgate,
    _env: TestEnv,
}

impl World {
    fn new(providers: &str, extra_yaml: &str) -> World {
        let env = TestEnv::with(Opts {
            extra_providers_yaml: providers.to_string(),
            policy_yaml: Some("policy:\n  paths: [workload-policy.yaml]\n  reload_interval: 0s\n".into()),
            extra_yaml: extra_yaml.to_string(),
            ..Opts::default()
        });
        std::fs::write(env.path().join("workload-policy.yaml"), POLICY).unwrap();
        let tg = Tollgate::start(&env, &[]);
        let reg = registry_at(format!("http://{}/token", tg.addr), env.bundle());
        World { reg, tg, _env: env }
    }

    /// GET /token with the JWT as the Basic password (any username).
    fn login(&self, jwt: &str, scope: &str) -> HttpResponse {
        self.tg.token(Some(("ci", jwt)), &format!("scope={scope}"), &[])
    }
}

fn granted(r: &HttpResponse) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    let (_, claims) = jwt_parts(body["token"].as_str().unwrap());
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["actions"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()))
        .collect()
}

fn image(dir: &std::path::Path, marker: &str) -> String {
    format!("oci:{}:latest", oci_image(dir, marker).display())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn github_and_gitlab_job_tokens_push_and_pull_with_skopeo_docker_and_ctr() {
    let gha_key = SigningKey::rsa("gha-1");
    let gl_key = SigningKey::ec("gl-1");
    let gha = Issuer::start(&[&gha_key]);
    let gitlab = Issuer::start(&[&gl_key]);
    let gl_entry = format!(
        "  - type: workload\n    name: gitlab\n    issuer: {}\n    audience: {AUDIENCE}\n    algorithms: [ES256]\n    required_claims: {{ namespace_id: \"72\" }}\n    username: \"gitlab:{{project_path}}\"\n",
        gitlab.issuer()
    );
    let w = World::new(&(github_entry(&gha, "") + &gl_entry), "");
    let tmp = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new();

    // A main-branch job of acme/app pushes its image with skopeo, the JWT as the password.
    let main = gha_key.sign(&github_claims(&gha.issuer(), AUDIENCE, "acme/app", "refs/heads/main", "push"));
    skopeo.copy(&image(tmp.path(), "gha-1"), &w.reg.docker_ref("ci/acme/app/api:1"), Some(("ci", &main))).assert_ok();
    // docker login keeps the JWT (no refresh token is issued that could outlive it), ctr pulls with it.
    let docker = DockerCli::new();
    docker.login(w.reg.addr(), "ci", &main).assert_ok();
    let config = docker.config_json();
    assert!(config["auths"][w.reg.addr()]["identitytoken"].is_null(), "no refresh token for a workload: {config}");
    assert!(config["auths"][w.reg.addr()]["auth"].is_string(), "{config}");
    Ctr::new().pull(&w.reg.reference("ci/acme/app/api:1"), Some(("ci", &main))).assert_ok();

    // A pull-request job of the same repository pulls, and may not push.
    let pr = gha_key.sign(&github_claims(&gha.issuer(), AUDIENCE, "acme/app", "refs/pull/3/merge", "pull_request"));
    skopeo.inspect(&w.reg.docker_ref("ci/acme/app/api:1"), Some(("ci", &pr))).assert_ok();
    let pushed = skopeo.copy(&image(tmp.path(), "pr"), &w.reg.docker_ref("ci/acme/app/api:pr"), Some(("ci", &pr)));
    assert!(!pushed.ok && pushed.combined().contains("denied"), "{pushed}");
    // Another repository of the same owner gets nothing in acme/app's namespace.
    let other = gha_key.sign(&github_claims(&gha.issuer(), AUDIENCE, "acme/other", "refs/heads/main", "push"));
    assert_eq!(granted(&w.login(&other, "repository:ci/acme/app/api:push,pull")), Vec::<String>::new());
    assert_eq!(granted(&w.login(&other, "repository:ci/acme/other/x:push,pull")), ["push", "pull"]);

    // GitLab CI (ES256): a protected branch of platform/web pushes gl/web/**, an unprotected one does not.
    let protected = gl_key.sign(&gitlab_claims(&gitlab.issuer(), AUDIENCE, "platform/web", "main", true));
    skopeo
        .copy(&image(tmp.path(), "gl"), &w.reg.docker_ref("gl/web/app:1"), Some(("gitlab-ci-token", &protected)))
        .assert_ok();
    let feature = gl_key.sign(&gitlab_claims(&gitlab.issuer(), AUDIENCE, "platform/web", "feature", false));
    assert_eq!(granted(&w.login(&feature, "repository:gl/web/app:push,pull")), Vec::<String>::new());

    // The audit line names the token's issuer, subject and jti; the metric counts logins per issuer.
    let audit = w.tg.audit_lines();
    let line = audit
        .iter()
        .find(|l| l["auth_method"] == "workload" && l["subject"] == "gitlab:platform/web")
        .unwrap_or_else(|| panic!("no audit line for the GitLab job: {audit:#?}"));
    assert_eq!(line["workload_issuer"], gitlab.issuer());
    assert_eq!(line["workload_subject"], "project_path:platform/web:ref_type:branch:ref:main");
    assert!(line["workload_jti"].as_str().unwrap().starts_with("gl-"), "{line}");
    let metrics = w.tg.metrics();
    let series = format!("tollgate_workload_logins_total{{issuer=\"{}\",outcome=\"ok\"}}", gha.issuer());
    assert!(metrics.lines().any(|l| l.starts_with(&series) && !l.ends_with(" 0")), "{series} in\n{metrics}");
    // No JWT ever reaches a log line.
    let logs = w.tg.logs();
    for jwt in [&main, &pr, &other, &protected, &feature] {
        assert!(!logs.contains(jwt.as_str()), "a JWT was logged");
    }
    assert!(w.reg.auth_errors().iter().all(|e| e == "authorization token required" || e == "insufficient scope"));
}

#[test]
fn token_exchange_returns_a_registry_token_and_says_what_it_issued() {
    let key = SigningKey::rsa("gha-x");
    let gha = Issuer::start(&[&key]);
    let w = World::new(&github_entry(&gha, ""), "");
    let jwt = key.sign(&github_claims(&gha.issuer(), AUDIENCE, "acme/app", "refs/heads/main", "push"));
    let form = |pairs: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let exchange = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", jwt.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", SERVICE),
        ("scope", "repository:ci/acme/app/api:push,pull"),
    ];
    let r = w.tg.post_form(&form(&exchange));
    assert_eq!(r.status, 200, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "repository:ci/acme/app/api:push,pull");
    assert!(body.get("refresh_token").is_none(), "{body}");
    // The access token works at the registry.
    let (_, claims) = jwt_parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "gha:acme/app");
    assert_eq!(claims["aud"], SERVICE);

    // Each malformed exchange names its problem, with 400; a refused token is 401 invalid_grant.
    type Form<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Form, u16, &str)] = &[
        (&[exchange[0], exchange[3]], 400, "subject_token is required"),
        (
            &[exchange[0], exchange[1], ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2"), exchange[3]],
            400,
            "token-type:saml2\\\" is not supported: use urn:ietf:params:oauth:token-type:jwt",
        ),
        (
            &[exchange[0], exchange[1], exchange[2], exchange[3], ("requested_token_type", "urn:x:refresh")],
            400,
            "requested_token_type",
        ),
        (&[exchange[0], ("subject_token", "not-a-jwt"), exchange[2], exchange[3]], 400, "subject_token is not a JWT"),
    ];
    for (pairs, status, want) in cases {
        let r = w.tg.post_form(&form(pairs));
        assert_eq!(r.status, *status, "{pairs:?}: {}", r.body);
        assert!(r.body.contains(want), "{pairs:?}: {}", r.body);
    }
    let wrong_aud = key.sign(&github_claims(&gha.issuer(), "https://elsewhere", "acme/app", "refs/heads/main", "push"));
    let r = w.tg.post_form(&form(&[exchange[0], ("subject_token", &wrong_aud), exchange[2], exchange[3]]));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["error"], "invalid_grant", "{}", r.body);
}

#[test]
fn oidc_provider_client_credentials_tokens_log_in_through_discovery() {
    let idp = OidcProvider::start(json!({}), OidcProviderOptions::default());
    let audience = "https://registry.test/";
    let entry = format!(
        "  - type: workload\n    name: idp\n    issuer: {}\n    audience: {audience}\n    username: \"client:{{client_id}}\"\n",
        idp.issuer()
    );
    let w = World::new(&entry, "");
    let tmp = tempfile::tempdir().unwrap();
    let token = idp.workload_token(audience);
    let skopeo = Skopeo::new();
    skopeo.copy(&image(tmp.path(), "cc"), &w.reg.docker_ref("ci/rig/app:1"), Some(("x", &token))).assert_ok();
    skopeo.inspect(&w.reg.docker_ref("ci/rig/app:1"), Some(("x", &token))).assert_ok();
    // /whoami shows who the token is and every verified claim, nested ones included.
    let r = w.tg.get(
        &format!("/whoami?service={SERVICE}&scope=repository:ci/rig/app:push"),
        &[("Authorization", &basic("x", &token))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let who: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(who["username"], "client:ci-workload", "{who:#}");
    assert_eq!(who["auth_method"], "workload", "{who:#}");
    assert_eq!(who["claims"]["ci"]["pipeline"], "rig", "{who:#}");
    assert!(who["explanations"].to_string().contains("rig-clients-push"), "{who:#}");
    // A token for another audience is refused.
    let other = idp.workload_token("https://other.test/");
    assert_eq!(w.login(&other, "repository:ci/rig/app:pull").status, 401);
}

#[test]
fn kubelet_credential_provider_answers_with_the_pods_token_and_skopeo_pulls_with_it() {
    let key = SigningKey::rsa("cluster-1");
    let env_dir = tempfile::tempdir().unwrap();
    let jwks = env_dir.path().join("cluster-jwks.json");
    std::fs::write(&jwks, jwks_of(&[&key]).to_string()).unwrap();
    let issuer = "https://kubernetes.default.svc.cluster.local";
    let entry = format!(
        "  - type: workload\n    name: cluster\n    issuer: {issuer}\n    audience: {AUDIENCE}\n    jwks_file: {}\n    username: \"k8s:{{kubernetes.io.namespace}}/{{kubernetes.io.serviceaccount.name}}\"\n",
        jwks.display()
    );
    let w = World::new(&entry, "");
    let tmp = tempfile::tempdir().unwrap();
    Skopeo::new().copy(&image(tmp.path(), "k8s"), &w.reg.docker_ref("k8s/shop/api:1"), Some(ADMIN)).assert_ok();

    let token = key.sign(&kubernetes_claims(issuer, AUDIENCE, "shop", "api"));
    let request = json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": w.reg.reference("k8s/shop/api:1"),
        "serviceAccountToken": token,
        "serviceAccountAnnotations": {"example.com/team": "shop"},
    });
    let mut cmd = command(tollgate_bin());
    cmd.arg("kubelet-credential-provider");
    let out = crate::rig::run(cmd, Some(request.to_string().as_bytes()), &[], Duration::from_secs(20));
    out.assert_ok();
    let answer: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(answer["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(answer["kind"], "CredentialProviderResponse");
    assert_eq!(answer["cacheKeyType"], "Registry");
    let secs: u64 = answer["cacheDuration"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!((3500..=3540).contains(&secs), "cacheDuration {secs}s: shorter than the token's hour, with a margin");
    let auth = answer["auth"].as_object().unwrap();
    assert_eq!(auth.keys().collect::<Vec<_>>(), [w.reg.addr()], "{answer}");
    let creds = &auth[w.reg.addr()];
    assert_eq!(creds["username"], "kubelet");
    assert_eq!(creds["password"], token.as_str());

    // The kubelet's credentials pull the pod's namespace, and nothing else.
    let (user, password) = (creds["username"].as_str().unwrap(), creds["password"].as_str().unwrap());
    let back = tmp.path().join("pulled");
    Skopeo::new()
        .copy(&w.reg.docker_ref("k8s/shop/api:1"), &format!("oci:{}:x", back.display()), Some((user, password)))
        .assert_ok();
    let pushed =
        Skopeo::new().copy(&image(tmp.path(), "k8s-2"), &w.reg.docker_ref("k8s/shop/api:2"), Some((user, password)));
    assert!(!pushed.ok, "a pod's token pushes nothing: {pushed}");
    let elsewhere = key.sign(&kubernetes_claims(issuer, AUDIENCE, "billing", "api"));
    assert!(granted(&w.login(&elsewhere, "repository:k8s/shop/api:pull")).is_empty());

    // A request without the token (no tokenAttributes in the kubelet config) says what to configure.
    let mut cmd = command(tollgate_bin());
    cmd.arg("kubelet-credential-provider");
    let bare = json!({"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderRequest", "image": "r.example/a"});
    let out = crate::rig::run(cmd, Some(bare.to_string().as_bytes()), &[], Duration::from_secs(20));
    assert!(!out.ok && out.stderr.contains("tokenAttributes"), "{out}");
}

/// One login per attack, each refused with 401 and no token.
#[test]
fn every_attack_on_a_workload_token_is_refused_with_401() {
    let key = SigningKey::rsa("gha-1");
    let attacker = SigningKey::rsa("attacker");
    let gha = Issuer::start(&[&key]);
    let liar_key = SigningKey::ec("liar-1");
    let liar = Issuer::start(&[&liar_key]);
    liar.set_discovery_issuer("https://elsewhere.example");
    let liar_entry = format!(
        "  - type: workload\n    name: liar\n    issuer: {}\n    audience: {AUDIENCE}\n    algorithms: [ES256]\n",
        liar.issuer()
    );
    // The limits would answer 429 after a few failures from one address; each attack is checked on its own.
    let w = World::new(&(github_entry(&gha, "") + &liar_entry), "rate_limit:\n  enabled: false\n");
    let iss = gha.issuer();
    let good = || github_claims(&iss, AUDIENCE, "acme/app", "refs/heads/main", "push");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good();
        f(&mut c);
        c
    };
    let now = unix_now();
    let header = |alg: Algorithm, kid: &str| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        h
    };
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let attacker_jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(attacker.jwk.clone()).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("wrong audience", key.sign(&with(&|c| c["aud"] = json!("https://other.example")))),
        ("no aud", key.sign(&with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))))),
        ("aud array without ours", key.sign(&with(&|c| c["aud"] = json!(["https://a.example", "https://b.example"])))),
        (
            "expired",
            key.sign(&with(&|c| {
                c["iat"] = json!(now - 400);
                c["nbf"] = json!(now - 400);
                c["exp"] = json!(now - 100);
            })),
        ),
        ("nbf in the future", key.sign(&with(&|c| c["nbf"] = json!(now + 300)))),
        ("iat in the future", key.sign(&with(&|c| c["iat"] = json!(now + 300)))),
        ("no iat", key.sign(&with(&|c| drop(c.as_object_mut().unwrap().remove("iat"))))),
        ("lifetime over max_lifetime", key.sign(&with(&|c| c["exp"] = json!(now + 7200)))),
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "kid": "gha-1"})), b64(&good()))),
        (
            "alg none with a signature",
            format!("{}.{}.AAAA", b64(&json!({"alg": "none", "kid": "gha-1"})), b64(&good())),
        ),
        (
            "HS256 keyed with the issuer's public key",
            jsonwebtoken::encode(
                &header(Algorithm::HS256, "gha-1"),
                &good(),
                &EncodingKey::from_secret(&key.public_pem).unwrap(),
            )
            .unwrap(),
        ),
        ("a known kid signed by another key", attacker.sign_with(header(Algorithm::RS256, "gha-1"), &good())),
        ("jku naming the attacker's keys", {
            let mut h = header(Algorithm::RS256, "attacker");
            h.jku = Some(format!("http://{}/jwks", liar.addr));
            attacker.sign_with(h, &good())
        }),
        ("x5u naming the attacker's certificate", {
            let mut h = header(Algorithm::RS256, "attacker");
            h.x5u = Some(format!("http://{}/cert", liar.addr));
            attacker.sign_with(h, &good())
        }),
        ("jwk header carrying the attacker's key", {
            let mut h = header(Algorithm::RS256, "attacker");
            h.jwk = Some(attacker_jwk.clone());
            attacker.sign_with(h, &good())
        }),
        ("x5c header carrying the attacker's certificate", {
            let mut h = Header::new(Algorithm::RS256);
            h.x5c = Some(vec![attacker.cert_b64.clone()]);
            attacker.sign_with(h, &good())
        }),
        ("crit header", {
            let mut h = header(Algorithm::RS256, "gha-1");
            h.crit = Some(vec!["exp".into()]);
            key.sign_with(h, &good())
        }),
        ("an issuer nobody trusts", key.sign(&with(&|c| c["iss"] = json!("https://token.evil.example")))),
        ("an issuer whose discovery names another issuer", liar_key.sign(&with(&|c| c["iss"] = json!(liar.issuer())))),
        (
            "another owner (required claim)",
            key.sign(&github_claims(&iss, AUDIENCE, "evil/app", "refs/heads/main", "push")),
        ),
        ("a tampered payload", {
            let t = key.sign(&good());
            let mut parts: Vec<String> = t.split('.').map(String::from).collect();
            parts[1] = b64(&github_claims(&iss, AUDIENCE, "acme/admin", "refs/heads/main", "push"));
            parts.join(".")
        }),
    ];
    for (what, token) in &cases {
        let r = w.login(token, "repository:ci/acme/app/api:push,pull");
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        let body: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{what}: not JSON: {}", r.body));
        assert!(body.get("token").is_none() && body["errors"].is_array(), "{what}: {body}");
    }
    // The good token works, so the refusals above were for what each case changed.
    assert_eq!(granted(&w.login(&key.sign(&good()), "repository:ci/acme/app/api:push,pull")), ["push", "pull"]);
    let logs = w.tg.logs();
    for (what, reason) in [
        ("audience", "aud does not contain"),
        ("expiry", "the token has expired"),
        ("lifetime", "more than max_lifetime"),
        ("signature", "the signature does not verify"),
        ("discovery", "names the issuer \\\"https://elsewhere.example\\\""),
        ("required claim", "required claim repository_owner_id is \\\"200002\\\""),
    ] {
        assert!(logs.contains(reason), "the log says why ({what}): {reason:?} not in\n{logs}");
    }
    for (_, token) in &cases {
        assert!(!logs.contains(token.as_str()), "a token was logged");
    }
}

#[test]
fn random_kids_cause_a_handful_of_jwks_fetches_and_an_issuer_down_stops_only_unknown_keys() {
    let key = SigningKey::rsa("gha-1");
    let gha = Issuer::start(&[&key]);
    let w = World::new(
        &github_entry(&gha, "    jwks_refresh_interval: 2s\n"),
        "rate_limit:\n  enabled: false\nidentity_cache:\n  ttl: 0s\n",
    );
    let iss = gha.issuer();
    let claims = || github_claims(&iss, AUDIENCE, "acme/app", "refs/heads/main", "push");
    let scope = "repository:ci/acme/app/api:pull";
    assert_eq!(granted(&w.login(&key.sign(&claims()), scope)), ["pull"]);
    let before = gha.jwks_fetches();

    // 10,000 logins with made-up key ids, from 4 threads, in a few seconds.
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (w, key, claims) = (&w, &key, &claims);
            s.spawn(move || {
                let c = claims();
                for i in 0..2500 {
                    let mut h = Header::new(Algorithm::RS256);
                    h.kid = Some(format!("bogus-{t}-{i}"));
                    let r = w.login(&key.sign_with(h, &c), scope);
                    assert_eq!(r.status, 401, "{}", r.body);
                }
            });
        }
    });
    let fetches = gha.jwks_fetches() - before;
    let secs = started.elapsed().as_secs_f64();
    let bound = 2 + (secs / 2.0).ceil() as u64;
    assert!(fetches <= bound, "{fetches} JWKS fetches for 10,000 unknown kids in {secs:.1}s (at most {bound})");
    println!("random kids: 10000 logins in {secs:.1}s caused {fetches} JWKS fetches");

    // The issuer goes down: a cached key still verifies new tokens; a key never seen gives 503, not 401.
    gha.set_down(true);
    assert_eq!(granted(&w.login(&key.sign(&claims()), scope)), ["pull"]);
    let rotated = SigningKey::rsa("gha-2");
    std::thread::sleep(Duration::from_millis(2100));
    let r = w.login(&rotated.sign(&claims()), scope);
    assert_eq!(r.status, 503, "{}", r.body);
    // Back up with the new key published: the rotated key works once the refetch interval has passed.
    gha.publish(&[&key, &rotated]);
    gha.set_down(false);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(granted(&w.login(&rotated.sign(&claims()), scope)), ["pull"]);
}

#[test]
fn a_token_replayed_after_exp_is_refused_even_when_cached_and_bad_tokens_block_only_their_subject() {
    let key = SigningKey::rsa("gha-1");
    let gha = Issuer::start(&[&key]);
    let w = World::new(&github_entry(&gha, "    leeway: 0s\n"), "identity_cache:\n  ttl: 5m\n");
    let iss = gha.issuer();
    let mut claims = github_claims(&iss, AUDIENCE, "acme/app", "refs/heads/main", "push");
    let now = unix_now();
    claims["iat"] = json!(now - 1);
    claims["nbf"] = json!(now - 1);
    claims["exp"] = json!(now + 3);
    let short = key.sign(&claims);
    let scope = "repository:ci/acme/app/api:push";
    let first = w.login(&short, scope);
    assert_eq!(first.status, 200, "{}\n{}", first.body, w.tg.logs());
    assert_eq!(granted(&first), ["push"]);
    assert_eq!(granted(&w.login(&short, scope)), ["push"], "served from the cache while valid");
    while unix_now() <= now + 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = w.login(&short, scope);
    assert_eq!(r.status, 401, "a replay after exp: {}", r.body);

    // One job retrying a bad token gets 429 for its own subject; another job of the same runner is served.
    let wrong = key.sign(&github_claims(&iss, "https://elsewhere", "acme/app", "refs/heads/main", "push"));
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(w.login(&wrong, scope).status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let other = key.sign(&github_claims(&iss, AUDIENCE, "acme/web", "refs/heads/main", "push"));
    assert_eq!(granted(&w.login(&other, "repository:ci/acme/web/x:push")), ["push"]);
    // The static robot's password logins are untouched by all this.
    assert_eq!(w.tg.token(Some(ADMIN), "scope=repository:ci/acme/app/api:pull", &[]).status, 200);
}
