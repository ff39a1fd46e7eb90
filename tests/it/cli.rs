//! The `tollgate` binary's subcommands, run as an operator would.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::harness::*;

pub(crate) fn tollgate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env_remove("TOLLGATE_CONFIG");
    let mut child = cmd.spawn().expect("tollgate runs");
    if let Some(input) = stdin {
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("tollgate finishes")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn check_config_accepts_a_good_config_and_lists_every_problem_of_a_bad_one() {
    let env = TestEnv::new();
    let cfg = env.config.to_str().unwrap();
    let o = tollgate(&["check-config", "--config", cfg], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains(": ok (1 key(s)") && out.contains("policy test(s) passed"), "{out}");

    let bad = env.path().join("bad.yaml");
    std::fs::write(&bad, "server:\n  listen: nowhere\ntoken:\n  lifetime: 1s\nproviders:\n  - type: static\n    name: x\n    file: missing.yaml\npolicy:\n  paths: [nope.yaml]\n").unwrap();
    let o = tollgate(&["check-config", "--config", bad.to_str().unwrap()], None);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    for want in
        ["server.listen", "token.issuer: required", "token.services: required", "token.lifetime: must be between"]
    {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}

#[test]
fn check_config_names_the_file_of_a_broken_accounts_file_or_policy() {
    let env = TestEnv::new();
    std::fs::write(&env.accounts, "accounts:\n  - username: eve\n    password_hash: hunter2\n").unwrap();
    std::fs::write(&env.policy, "rules:\n  - name: r\n    resources: [\"{team}/**\"]\n    actions: [pull]\n").unwrap();
    let o = tollgate(&["check-config", "--config", env.config.to_str().unwrap()], None);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("accounts.yaml: accounts[0] (\"eve\").password_hash: must be a bcrypt"), "{err}");
    assert!(err.contains("policy.yaml") && err.contains("{team}"), "{err}");
}

#[tokio::test]
async fn robot_add_prints_a_secret_once_that_then_logs_in() {
    let env = TestEnv::new();
    let cfg = env.config.to_str().unwrap();
    let o = tollgate(
        &[
            "robot",
            "add",
            "ci-web",
            "--config",
            cfg,
            "--groups",
            "robots,ci-web",
            "--expires-in",
            "30d",
            "--description",
            "web pipeline",
        ],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let secret = out.trim();
    assert!(secret.starts_with("tg_") && secret.len() > 40, "{out}");
    let file = std::fs::read_to_string(&env.accounts).unwrap();
    assert!(!file.contains(secret), "only the hash is stored");
    assert!(file.contains("ci-web") && file.contains("$argon2id$") && file.contains("expires_at"));
    let state = env.state();
    let q = format!("service={SERVICE}&scope={}", enc("repository:web/site:push"));
    let r = call(&state, get(&q, Some(&basic("ci-web", secret)))).await;
    assert_eq!(r.status, 200);
    let (_, c) = jwt_parts(r.json()["token"].as_str().unwrap());
    assert_eq!(c["access"][0]["actions"], serde_json::json!(["push"]));
    let o = tollgate(&["robot", "add", "ci-web", "--groups", "robots", "--file", env.accounts.to_str().unwrap()], None);
    assert!(!o.status.success() && text(&o).1.contains("already exists"));
}

#[tokio::test]
async fn token_revoke_cli_stops_one_token_or_all_of_a_user() {
    let env = TestEnv::new();
    let cfg = env.config.to_str().unwrap();
    let state = env.state();
    let login = || {
        let state = state.clone();
        async move {
            let r = call(&state, get(&format!("service={SERVICE}&offline_token=true"), Some(&basic(ALICE.0, ALICE.1))))
                .await;
            r.json()["refresh_token"].as_str().unwrap().to_string()
        }
    };
    let (t1, t2) = (login().await, login().await);
    let use_it = |t: String| {
        let state = state.clone();
        async move { call(&state, get(&format!("service={SERVICE}"), Some(&basic("alice", &t)))).await.status }
    };
    let o = tollgate(&["token", "revoke", "--config", cfg, "--token", "-"], Some(&t1));
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("revoked refresh token"));
    assert_eq!(use_it(t1).await, 401);
    assert_eq!(use_it(t2.clone()).await, 200);
    let o = tollgate(&["token", "revoke", "--config", cfg, "--user", "alice"], None);
    assert!(o.status.success());
    assert_eq!(use_it(t2).await, 401);
    let o = tollgate(&["token", "revoke", "--config", cfg, "--token", "tgr_not.a.token"], None);
    assert!(!o.status.success() && text(&o).1.contains("not issued by this server"));
    let o = tollgate(&["token", "revoke", "--config", cfg], None);
    assert!(!o.status.success() && text(&o).1.contains("say what to revoke"));
}

#[test]
fn token_revoke_says_where_it_wrote_refuses_a_place_no_server_reads_and_reports_unknown_users() {
    let env = TestEnv::new();
    let cfg = env.config.to_str().unwrap();
    let o = tollgate(&["token", "revoke", "--config", cfg, "--user", "alice"], None);
    let (out, err) = text(&o);
    let file = std::path::absolute(env.path().join("data/revocations.json")).unwrap();
    assert!(o.status.success() && out.contains(&format!("written to {}", file.display())), "{out}{err}");
    assert!(!err.contains("no account"), "alice exists: {err}");
    let o = tollgate(&["token", "revoke", "--config", cfg, "--user", "nobody-here"], None);
    let (out, err) = text(&o);
    assert!(o.status.success() && err.contains("warning: no account is named \"nobody-here\""), "{out}{err}");

    // No config, in a directory where no server keeps its data: refused, nothing written.
    let elsewhere = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["token", "revoke", "--user", "alice"])
        .current_dir(elsewhere.path())
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success() && err.contains("pass the --config of the server"), "{out}{err}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing was written");
}

#[test]
fn policy_test_runs_every_example_policy_and_fails_on_a_wrong_expectation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<_> = [root.clone(), root.join("split")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    for f in &files {
        let o = tollgate(&["policy", "test", f.to_str().unwrap()], None);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{}: {out}{err}", f.display());
        assert!(out.contains("0 failed"), "{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(&f, "rules:\n  - name: pull-all\n    resources: [\"**\"]\n    actions: [pull]\ntests:\n  - name: wrong on purpose\n    scope: \"repository:a/b:push\"\n    expect: [push]\n").unwrap();
    let o = tollgate(&["policy", "test", f.to_str().unwrap()], None);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(out.contains("wrong on purpose") && err.contains("1 policy test(s) failed"), "{out}{err}");
}

#[test]
fn policy_explain_says_which_rules_decided() {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.yaml");
    let p = policy.to_str().unwrap();
    let o = tollgate(
        &[
            "policy",
            "explain",
            p,
            "--user",
            "alice",
            "--groups",
            "team-payments,developers",
            "--scope",
            "repository:payments/prod/api:push,pull",
        ],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("protected-prod") && out.contains("team-namespaces"), "{out}");
    let o = tollgate(
        &[
            "policy",
            "explain",
            p,
            "--json",
            "--user",
            "alice",
            "--groups",
            "team-payments",
            "--scope",
            "repository:payments/api:push",
        ],
        None,
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(j["granted"], serde_json::json!(["push"]));
    let o = tollgate(&["policy", "explain", p, "--scope", "repository:Bad:pull"], None);
    assert!(!o.status.success() && text(&o).1.contains("invalid repository name"));
}

#[test]
fn registry_config_writes_the_bundle_and_jwks_and_prints_the_block() {
    let env = TestEnv::new();
    let out_dir = env.path().join("reg");
    let o = tollgate(
        &[
            "registry-config",
            "--config",
            env.config.to_str().unwrap(),
            "--realm",
            "https://auth.example/token",
            "--out-dir",
            out_dir.to_str().unwrap(),
        ],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for want in [
        "auth:",
        "realm: https://auth.example/token",
        "service: registry.test",
        "issuer: tollgate-test",
        "rootcertbundle: ",
    ] {
        assert!(out.contains(want), "{want:?} missing in {out}");
    }
    let bundle = std::fs::read_to_string(out_dir.join("rootcertbundle.pem")).unwrap();
    assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----"));
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("jwks.json")).unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
}

#[test]
fn hash_password_makes_an_argon2_hash_and_refuses_empty_input() {
    let o = tollgate(&["hash-password"], Some("s3cret\n"));
    let (out, _) = text(&o);
    assert!(o.status.success() && out.starts_with("$argon2id$"), "{out}");
    let o = tollgate(&["hash-password"], Some(""));
    assert!(!o.status.success());
}

fn verifies(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
    argon2::Argon2::default().verify_password(password.as_bytes(), &PasswordHash::new(hash).unwrap()).is_ok()
}

/// Run `tollgate hash-password` on a pseudo-terminal, typing each answer only once its prompt has appeared.
fn hash_password_on_a_terminal(answers: &[&str]) -> (bool, String) {
    let cmd = format!("{} hash-password", env!("CARGO_BIN_EXE_tollgate"));
    let mut pty = crate::rig::pty::Pty::spawn(&cmd, &[]);
    for (i, answer) in answers.iter().enumerate() {
        let prompt = if i == 0 { "Password: " } else { "Again: " };
        pty.wait_for(prompt, std::time::Duration::from_secs(10));
        // As a person would, a moment after the prompt: the prompt is printed just before echo is turned off,
        // and typing into that microsecond gap would be echoed by any password prompt.
        std::thread::sleep(std::time::Duration::from_secs(1));
        pty.type_line(answer);
    }
    pty.finish(std::time::Duration::from_secs(30))
}

#[test]
fn hash_password_asks_twice_without_echo_on_a_terminal_and_reads_one_line_from_a_pipe() {
    let o = tollgate(&["hash-password"], Some("first-line\nsecond-line\n"));
    let (out, _) = text(&o);
    assert!(o.status.success() && verifies(out.trim(), "first-line"), "only the first line is the password: {out}");

    let (ok, screen) = hash_password_on_a_terminal(&["typed-on-a-tty", "typed-on-a-tty"]);
    assert!(ok, "{screen}");
    assert!(!screen.contains("typed-on-a-tty"), "the password was echoed: {screen:?}");
    let hash = screen.lines().rev().find(|l| l.contains("$argon2id$")).expect("a hash").trim();
    assert!(verifies(&hash[hash.find('$').unwrap()..], "typed-on-a-tty"), "{screen:?}");

    let (ok, screen) = hash_password_on_a_terminal(&["one", "another"]);
    assert!(!ok && screen.contains("the two passwords differ"), "{screen:?}");
}

#[test]
fn serve_with_the_embedded_default_answers_the_demo_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("serve")
        .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0")
        .env_remove("TOLLGATE_CONFIG")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Port 0 is chosen by the OS; read it back from the log line.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("tollgate logs its address");
        if let Some(i) = line.find("addr=") {
            break line[i + 5..]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string();
        }
    };
    let url = format!("/token?service=registry.local&scope={}", enc("repository:payments/api:push"));
    let resp = raw_get(&addr, &url, &basic("alice", "alice-demo-password"));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(dir.path().join("tollgate-data/signing.key").exists(), "a key is generated on first start");
}

/// A minimal HTTP/1.1 GET over a plain socket.
fn raw_get(addr: &str, path: &str, auth: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn check_config_refuses_a_missing_tls_file_and_warns_of_expired_keys_readable_secrets_and_open_proxies() {
    use std::os::unix::fs::PermissionsExt as _;
    // A signing key whose certificate ended in 2021.
    let env = TestEnv::with(Opts {
        extra_token_yaml: "  keys:\n    - key_file: old.key\n      cert_file: old.crt\n".into(),
        ..Opts::default()
    });
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(env.path().join("old.key"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(env.path().join("old.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // A directory others may enter: the key's mode is what keeps them out.
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(env.path().join("old.crt"), cert.pem()).unwrap();
    let cfg = env.config.to_str().unwrap();
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(["check-config", "--config", cfg]).env_remove("TOLLGATE_CONFIG");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };

    let o = run(&[("TOLLGATE_SERVER__TRUSTED_PROXIES", "[0.0.0.0/0]")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "warnings do not fail the check: {out}{err}");
    for want in [
        "certificate expired at 2021-01-01",
        "old.key: mode 644 lets other users read",
        "0.0.0.0/0 covers every address",
    ] {
        assert!(err.contains(want), "missing warning {want:?} in:\n{err}");
    }
    assert!(!err.contains("chmod 600 it"), "the advice names the directory way too: {err}");
    // The same key in a directory only its owner may enter, as compose/secrets.sh makes them: no one else
    // can read it, and check-config agrees with secrets.sh.
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let (_, err) = text(&run(&[]));
    assert!(!err.contains("lets other users read"), "{err}");

    let o = run(&[("TOLLGATE_SERVER__TLS__CERT_FILE", "missing.crt"), ("TOLLGATE_SERVER__TLS__KEY_FILE", "old.key")]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "a TLS file serve cannot load fails the check: {out}");
    assert!(err.contains("server.tls: cannot use certificate") && err.contains("missing.crt"), "{err}");
}

#[test]
fn the_readme_policy_commands_run_as_written_on_both_example_directories() {
    // README: `tollgate policy test policies/`; docs/policy.md: the split files work together too.
    for dir in ["policies/", "policies/split/"] {
        let o = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["policy", "test", dir])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success() && out.contains(" passed, 0 failed"), "{dir}: {out}{err}");
    }
}

#[test]
fn version_names_the_commit_and_completions_and_the_manual_page_cover_every_command() {
    let o = tollgate(&["--version"], None);
    let (out, _) = text(&o);
    let head = Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(o.status.success() && out.starts_with(&format!("tollgate {} (", env!("CARGO_PKG_VERSION"))), "{out}");
    if !head.is_empty() {
        assert!(out.contains(&head), "built from {head}: {out}");
    }
    let o = tollgate(&["completions", "bash"], None);
    let (out, _) = text(&o);
    assert!(o.status.success() && out.contains("complete -F _tollgate"), "{out}");
    for sub in ["check-config", "registry-config", "hash-password", "robot", "token", "policy", "login"] {
        assert!(out.contains(sub), "bash completion lacks {sub}");
    }
    let o = tollgate(&["man"], None);
    let (out, _) = text(&o);
    assert!(o.status.success() && out.contains(".TH tollgate 1"), "{out}");
    assert!(out.contains("check\\-config") || out.contains("check-config"), "{out}");
    assert!(!tollgate(&["completions", "tcsh"], None).status.success(), "an unknown shell is refused");
}

#[test]
fn init_writes_a_starter_that_checks_takes_a_robot_and_serves_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let o = tollgate(&["init", d], None);
    let (out, err) = text(&o);
    assert!(o.status.success() && out.contains("next steps"), "{out}{err}");
    let cfg = dir.path().join("tollgate.yaml");
    let before = std::fs::read(&cfg).unwrap();
    let o = tollgate(&["init", d], None);
    assert!(!o.status.success() && text(&o).1.contains("nothing was written"), "{:?}", text(&o));
    assert_eq!(std::fs::read(&cfg).unwrap(), before, "init never overwrites");

    let cfg = cfg.to_str().unwrap();
    let listing = || {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut todo = vec![dir.path().to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p.clone());
                    files.push((p.display().to_string(), Vec::new()));
                } else {
                    files.push((p.display().to_string(), std::fs::read(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let fresh = listing();
    let o = tollgate(&["check-config", "--config", cfg], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "the starter passes check-config: {out}{err}");
    assert_eq!(listing(), fresh, "check-config writes nothing on a fresh directory");
    assert!(err.contains("note: no signing key yet: `serve` creates"), "{err}");
    assert!(err.contains("note: no refresh-token secret yet"), "{err}");
    let o = tollgate(&["robot", "add", "ci-web", "--groups", "robots,ci-web", "--config", cfg], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let secret = out.split_whitespace().find(|w| w.starts_with("tg_")).expect("the secret is printed").to_string();

    let (mut child, addr) = crate::ops::serve_in(dir.path(), cfg);
    let auth = basic("ci-web", &secret);
    let r = crate::rig::http::http_request(
        &addr,
        "GET",
        "/token?service=registry.example.com&scope=repository:web/app:push",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.status, 200, "{}", r.body);
    let token = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["token"].as_str().unwrap().to_string();
    assert_eq!(
        jwt_parts(&token).1["access"][0]["actions"],
        serde_json::json!(["push"]),
        "the robot pushes its own images"
    );
}

/// A second after an edit, the running server must answer `want` for `user`: one request, made once the
/// second is up, so a slow request on a busy machine cannot blur the bound.
fn within_a_second(tg: &crate::ops::Tollgate, edited: std::time::Instant, user: (&str, &str), want: u16) {
    std::thread::sleep(std::time::Duration::from_secs(1).saturating_sub(edited.elapsed()));
    let status = tg.token(Some(user), "scope=repository:web/site:pull", &[]).status;
    assert_eq!(status, want, "{} a second after the edit", user.0);
}

#[test]
fn robot_lifecycle_edits_a_commented_file_in_place_and_the_running_server_follows_within_a_second() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = TestEnv::new();
    let generated = std::fs::read_to_string(&env.accounts).unwrap();
    let original = format!(
        "# accounts of the test team: people first, robots after\n{}\n  # the robots the pipelines use come below\n# end of the accounts file\n",
        generated.trim_end().replace("  - username: bob", "  # bob is the release manager\n  - username: bob")
    );
    std::fs::write(&env.accounts, &original).unwrap();
    std::fs::set_permissions(&env.accounts, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tg = crate::ops::Tollgate::start(&env, &[]);
    let cfg = env.config.to_str().unwrap();
    let read = || std::fs::read_to_string(&env.accounts).unwrap();
    let edited = std::cell::Cell::new(std::time::Instant::now());
    let run = |args: &[&str]| {
        edited.set(std::time::Instant::now());
        let mut all = args.to_vec();
        all.extend(["--config", cfg]);
        let o = tollgate(&all, None);
        let (out, err) = text(&o);
        (o.status.success(), out, err)
    };

    // add: groups are required; the entry is appended after the last one, every other byte kept.
    let (ok, _, err) = run(&["robot", "add", "ci-web"]);
    assert!(!ok && err.contains("--groups is required"), "{err}");
    assert_eq!(read(), original, "a refused add writes nothing");
    let (ok, out, err) = run(&["robot", "add", "ci-web", "--groups", "robots,ci-web", "--description", "web pipeline"]);
    assert!(ok, "{err}");
    let secret = out.trim().to_string();
    let added = read();
    let tail = "  # the robots the pipelines use come below\n# end of the accounts file\n";
    let (head, _) = original.split_at(original.len() - tail.len());
    assert!(added.starts_with(head) && added.ends_with(tail), "only lines were added:\n{added}");
    let entry = &added[head.len()..added.len() - tail.len()];
    assert!(entry.starts_with("  - username: \"ci-web\"\n") && !entry.contains(&secret), "{entry}");
    assert_eq!(std::fs::metadata(&env.accounts).unwrap().permissions().mode() & 0o777, 0o644, "the mode is kept");
    within_a_second(&tg, edited.get(), ("ci-web", &secret), 200);

    // list: a table and JSON.
    let (ok, out, _) = run(&["robot", "list"]);
    assert!(
        ok && out.lines().any(|l| l.starts_with("ci-web") && l.contains("active") && l.contains("robots,ci-web")),
        "{out}"
    );
    let (_, out, _) = run(&["robot", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, [ROBOT.0, "ci-web"], "robots only, in file order");

    // disable: one line added inside the entry; the server refuses within a second; enable undoes it.
    assert!(run(&["robot", "disable", "ci-web"]).0);
    let disabled = read();
    assert_eq!(disabled, added.replace(entry, &format!("{entry}    disabled: true\n")));
    within_a_second(&tg, edited.get(), ("ci-web", &secret), 401);
    assert!(run(&["robot", "enable", "ci-web"]).0);
    assert_eq!(read(), added, "enable gives the file back byte for byte");
    within_a_second(&tg, edited.get(), ("ci-web", &secret), 200);

    // rotate: a new secret; the old one stops at once without --grace, and works on with it.
    let (ok, out, err) = run(&["robot", "rotate", "ci-web"]);
    assert!(ok && err.contains("stops working now"), "{err}");
    let second = out.trim().to_string();
    within_a_second(&tg, edited.get(), ("ci-web", &secret), 401);
    within_a_second(&tg, edited.get(), ("ci-web", &second), 200);
    let (ok, out, err) = run(&["robot", "rotate", "ci-web", "--grace", "1h"]);
    assert!(ok && err.contains("keeps working for 1h"), "{err}");
    let third = out.trim().to_string();
    within_a_second(&tg, edited.get(), ("ci-web", &third), 200);
    within_a_second(&tg, edited.get(), ("ci-web", &second), 200);
    let (_, out, _) = run(&["robot", "list", "--json"]);
    assert!(
        out.contains("previous_secret_valid_until") && !out.contains("\"previous_secret_valid_until\": null\n  }\n]"),
        "{out}"
    );
    let rotated = read();
    assert!(rotated.starts_with(head) && rotated.ends_with(tail), "only the entry changed:\n{rotated}");

    // People are not robots; remove gives back the file as it was before the add, byte for byte.
    let (ok, _, err) = run(&["robot", "disable", ALICE.0]);
    assert!(!ok && err.contains("is not a robot"), "{err}");
    assert!(run(&["robot", "remove", "ci-web"]).0);
    assert_eq!(read(), original);
    within_a_second(&tg, edited.get(), ("ci-web", &third), 401);
    within_a_second(&tg, edited.get(), ROBOT, 200);

    // A file that cannot be edited line by line is refused, never rewritten.
    let flow = format!("accounts: [{{username: x, password_hash: \"{}\"}}]\n", hash_of("x-secret"));
    std::fs::write(&env.accounts, &flow).unwrap();
    let (ok, _, err) = run(&["robot", "add", "ci-x", "--no-groups"]);
    assert!(!ok && err.contains("cannot edit it in place"), "{err}");
    assert_eq!(read(), flow);
}

fn hash_of(secret: &str) -> String {
    tollgate::identity::hashing::hash_password(secret).unwrap()
}

#[test]
fn check_config_reports_mistakes_of_every_stage_in_one_run_with_their_place_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("bad.yaml"),
        "server:\n  listen: nowhere\n  lisen: 127.0.0.1:1\ntoken:\n  issuer: tollgate\n  services: [registry.test]\n  lifetim: 5m\nproviders:\n  - type: static\n    name: local\n    file: missing-accounts.yaml\n  - type: ldpa\n    name: corp\n  - type: oidc\n    name: kc\n    issuer: https://sso.example.com\n    clent_id: tollgate\npolicy:\n  paths: [broken.yaml, tested.yaml]\nidentity_cach:\n  ttl: 5m\n",
    )
    .unwrap();
    std::fs::write(d.join("broken.yaml"), "rules:\n  - name: r\n    resources: [\"{team}/**\"]\n    actions: [pull]\n")
        .unwrap();
    std::fs::write(
        d.join("tested.yaml"),
        "rules:\n  - name: ok\n    resources: [\"public/**\"]\n    actions: [pull]\ntests:\n  - name: wrong expectation\n    scope: \"repository:public/x:pull\"\n    expect: [push]\n",
    )
    .unwrap();
    let before: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["check-config", "--config", "bad.yaml", "--format", format])
            .current_dir(d)
            .env_remove("TOLLGATE_CONFIG")
            .env("TOLLGATE_SERVER__MAX_SCOPEZ", "3")
            .env("TOLLGATE_PORT", "tcp://10.96.0.12:5001")
            .env("TOLLGATE_SERVICE_HOST", "10.96.0.12")
            .output()
            .unwrap()
    };
    let o = run("text");
    let (_, err) = text(&o);
    assert!(!o.status.success());
    for want in [
        "bad.yaml:12: providers[1].type: must be one of: static, ldap, oidc, workload; found \"ldpa\" (did you mean `ldap`?)",
        "bad.yaml:17: providers[2].clent_id: unknown key (did you mean `providers[2].client_id`?)",
        "bad.yaml:3: server.lisen: unknown key (did you mean `server.listen`?)",
        "environment variable TOLLGATE_SERVER__MAX_SCOPEZ: server.max_scopez: unknown key (did you mean `server.max_scopes`?)",
        "bad.yaml:7: token.lifetim: unknown key (did you mean `token.lifetime`?)",
        "bad.yaml:20: identity_cach: unknown key (did you mean `identity_cache`?)",
        "bad.yaml:2: server.listen: \"nowhere\" is not an address",
        "missing-accounts.yaml: No such file",
        "broken.yaml: rule 1 \"r\": field `resources[0]`: unknown capture {team}",
        "FAIL tested.yaml: test \"wrong expectation\"",
        "warning: ignored 2 environment variable(s) that start with TOLLGATE_ but name no config section",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("TOLLGATE_PORT, TOLLGATE_SERVICE_HOST"), "{err}");
    let o = run("json");
    assert!(!o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["errors"].as_array().unwrap().len() >= 10, "{report:#}");
    assert_eq!(report["warnings"].as_array().unwrap().len(), 1, "{report:#}");
    let after: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len(), "check-config wrote nothing: {after:?}");
}

#[test]
fn login_failures_name_their_cause_and_suggest_the_fix() {
    let reg = crate::rig::Registry::start(crate::rig::RegistryOptions::default());
    let login = |target: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["login", target, "--no-browser", "--docker-config"])
            .arg(std::env::temp_dir().join(crate::rig::unique("login-docker")))
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap();
        assert!(!o.status.success(), "{target}");
        text(&o).1
    };
    // The real registry 2.8, over plain HTTP, reached without --plain-http.
    let err = login(reg.addr());
    assert!(err.contains("InvalidContentType") && err.contains("add --plain-http"), "{err}");
    let err = login("no-such-registry.invalid");
    assert!(err.contains("dns error") && err.contains("does not resolve (DNS)"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = login(&format!("127.0.0.1:{port}"));
    assert!(err.contains("Connection refused") && err.contains("nothing accepts connections"), "{err}");
}

#[test]
fn check_config_says_every_wrong_value_at_its_own_line_in_words_and_invents_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("types.yaml"),
        "# max_body_bytes: 1024 would do\nserver: {listn: 127.0.0.1:1, max_body_bytes: lots}\ntoken: {services: registry.example.com, issuer: x}\nrefresh_tokens:\n  enabled: yes please\n  lifetime: 90\nproviders:\n  - type: static\n    name: local\n    accounts:\n      - username: a\n        password_hash: \"HASH\"\n        groups: [devs, [ops]]\n  - type: ldap\n    name: corp\n    url: ldap://ldap.example.com\n    user_base_dn: dc=example,dc=com\n    groups:\n      base_dn: ou=groups,dc=example,dc=com\n      nested: recursiv\n  - type: ldpa\npolicy:\n  builtin_example: true\n".replace("HASH", &hash_of("s3cret")),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check-config", "--config", "types.yaml"])
        .current_dir(dir.path())
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_SERVER__MAX_SCOPES", "many")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    let list = "must be a list (write `[a, b]` or one `- item` per line)";
    let want = [
        "tollgate: 9 problems found:".to_string(),
        "  - types.yaml:2: server.max_body_bytes: must be a whole number; found \"lots\"".to_string(),
        "  - types.yaml:2: server.listn: unknown key (did you mean `server.listen`?)".to_string(),
        format!("  - types.yaml:3: token.services: {list}; found \"registry.example.com\""),
        "  - types.yaml:5: refresh_tokens.enabled: must be true or false; found \"yes please\"".to_string(),
        "  - types.yaml:6: refresh_tokens.lifetime: must be a duration such as 30s or 5m; found 90".to_string(),
        "  - types.yaml:13: providers[0].accounts[0].groups[1]: must be a text; found a list".to_string(),
        "  - types.yaml:20: providers[1].groups.nested: must be one of: none, in_chain, recursive; found \"recursiv\" (did you mean `recursive`?)".to_string(),
        "  - types.yaml:21: providers[2].type: must be one of: static, ldap, oidc, workload; found \"ldpa\" (did you mean `ldap`?)".to_string(),
        "  - environment variable TOLLGATE_SERVER__MAX_SCOPES: server.max_scopes: must be a whole number; found \"many\"".to_string(),
    ];
    // Every line is a problem above, in this order, or a note of what `serve` would create.
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note: ")).collect();
    assert_eq!(lines, want, "{err}");
}
