//! The compose deployments, run for real with the programs Debian packages (no Docker engine here).
//!
//! A [`Deployment`] reads a compose file and runs a service's own command, with the container paths it
//! mounts (bind mounts, named volumes and Docker secrets) mapped onto the machine through the
//! environment only: `TOLLGATE_*` overrides for every path in the tollgate config the service mounts,
//! `REGISTRY_*` for the registry's. Host names (`openldap`, `redis`) are what DNS would map: the tests
//! point them at the rig's servers. Every secret comes from `compose/secrets.sh`, run as documented.
//!
//! Proven here: the secrets command creates every secret each compose file names, with no placeholder
//! left; the full deployment's tollgate binds to a slapd loaded from `compose/openldap/` by the image's
//! own steps, grants an LDAP user's groups, and skopeo pushes through registry 2.8 started from
//! `compose/registry/config.yml`; two replicas from `tollgate.replicas.yaml` with Redis started by the
//! compose command line, behind haproxy checking the compose health-check path, keep pushes going when
//! one replica stops, keep robots logging in with a directory down, and take an access token created
//! through one replica on the other (one access-token secret); no deployment file carries a demo account,
//! and `serve --config` refuses one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{basic, enc, path_overrides};
use crate::ldap::actions_of;
use crate::ops::{tollgate_bin, wait_until, Tollgate};
use crate::rig::haproxy::Haproxy;
use crate::rig::http::http_request;
use crate::rig::{command, oci_image, run, Registry, RegistryOptions, Skopeo, Slapd};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A YAML file as JSON, with merge keys (`<<: *anchor`) applied as compose applies them.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v.apply_merge().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(v).expect("YAML as JSON")
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

/// `bash compose/secrets.sh DIR` as documented, with the tollgate under test on PATH.
fn make_secrets(dir: &Path) -> PathBuf {
    let out = dir.join("secrets");
    let mut cmd = command("bash");
    cmd.arg(root().join("compose/secrets.sh")).arg(&out).env("PATH", path_with_tollgate());
    let o = run(cmd, None, &[], Duration::from_secs(60));
    o.assert_ok();
    assert!(o.stdout.contains("created in"), "{o}");
    out
}

/// PATH with the tollgate under test first, so a compose command's `tollgate` is this build.
fn path_with_tollgate() -> String {
    let bin_dir = Path::new(tollgate_bin()).parent().expect("bin dir").display().to_string();
    format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// A compose file and where its mounts land on this machine.
struct Deployment {
    compose: Value,
    secrets: PathBuf,
    volumes: PathBuf,
}

impl Deployment {
    fn new(file: &str, secrets: &Path, scratch: &Path) -> Deployment {
        let volumes = scratch.join("volumes");
        std::fs::create_dir_all(&volumes).unwrap();
        Deployment { compose: yaml(&root().join("compose").join(file)), secrets: secrets.to_path_buf(), volumes }
    }

    fn service(&self, name: &str) -> &Value {
        let s = &self.compose["services"][name];
        assert!(s.is_object(), "no service {name}");
        s
    }

    /// A host path of the compose file (`./x` in compose/, `../x` in the repository; `./secrets/` is the
    /// directory the secrets command wrote) or a named volume (a scratch directory).
    fn host(&self, source: &str) -> PathBuf {
        if let Some(rest) = source.strip_prefix("./secrets/") {
            self.secrets.join(rest)
        } else if source.starts_with("./") || source.starts_with("../") {
            root().join("compose").join(source)
        } else {
            let dir = self.volumes.join(source);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        }
    }

    /// (container path, host path) of every mount of `service`: volumes and `/run/secrets/NAME`.
    fn mounts(&self, service: &str) -> Vec<(String, PathBuf)> {
        let s = self.service(service);
        let mut mounts: Vec<(String, PathBuf)> = s["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|v| !v.starts_with('/')) // the docker socket
            .map(|v| {
                let mut parts = v.split(':');
                let (src, dst) = (parts.next().unwrap(), parts.next().expect("a container path"));
                (dst.to_string(), self.host(src))
            })
            .collect();
        for name in s["secrets"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let file = self.compose["secrets"][name]["file"].as_str().unwrap_or_else(|| panic!("secret {name}"));
            let host = self.host(file);
            assert!(host.is_file(), "secret {name}: {} was not made by secrets.sh", host.display());
            mounts.push((format!("/run/secrets/{name}"), host));
        }
        mounts
    }

    /// Where `path` (inside `service`'s container) is on this machine, if it is mounted.
    fn map(&self, service: &str, path: &str) -> Option<PathBuf> {
        self.mounts(service)
            .into_iter()
            .filter(|(c, _)| path == c || path.starts_with(&format!("{c}/")))
            .max_by_key(|(c, _)| c.len())
            .map(|(c, h)| if path == c { h } else { h.join(&path[c.len() + 1..]) })
    }

    /// `text` with every mounted container path in it replaced by its host path.
    fn map_text(&self, service: &str, text: &str) -> String {
        let mut mounts = self.mounts(service);
        mounts.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        let mut out = text.to_string();
        for (c, h) in mounts {
            out = out.replace(&c, h.to_str().unwrap());
        }
        out
    }

    /// The service's command, mapped, as one `sh -c` script (a compose `command` is either a list that
    /// already is `sh -c SCRIPT`, or argv).
    fn script(&self, service: &str) -> String {
        let cmd = &self.service(service)["command"];
        let argv: Vec<String> =
            cmd.as_array().expect("command list").iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let script = match argv.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["sh", "-c", script, ..] => script.to_string(),
            _ => argv.join(" "),
        };
        // `$$` is compose's escape for a literal `$`.
        self.map_text(service, &script.replace("$$", "$"))
    }

    /// The tollgate config the service mounts at /etc/tollgate/tollgate.yaml, and `TOLLGATE_*` variables
    /// pointing every container path in it at the host (list items by index), plus the service's own
    /// `environment`.
    fn tollgate_env(&self, service: &str) -> (PathBuf, Vec<(String, String)>) {
        let config = self.map(service, "/etc/tollgate/tollgate.yaml").expect("the config is mounted");
        let mut env: Vec<(String, String)> = self.service(service)["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let host = |p: &str| {
            // data_dir and the like, not mounted: a directory of the container's own, empty at start.
            self.map(service, p)
                .unwrap_or_else(|| self.volumes.join(format!("{service}-own")).join(p.trim_start_matches('/')))
        };
        env.extend(path_overrides(&yaml(&config), &host));
        (config, env)
    }

    /// Run `service`'s command with tollgate's paths mapped, listening on loopback ports chosen at run
    /// time; `extra` comes last (host names, added providers).
    fn start_tollgate(&self, service: &str, scratch: &Path, extra: &[(&str, String)]) -> Tollgate {
        let (_, env) = self.tollgate_env(service);
        let mut cmd = command("sh");
        let script = self.script(service);
        // The server must be the process itself (killed by the test), not a child of sh.
        let script = if script.contains("exec ") { script } else { format!("exec {script}") };
        cmd.arg("-c").arg(script);
        cmd.env_remove("TOLLGATE_CONFIG").env("PATH", path_with_tollgate());
        cmd.envs(env);
        cmd.env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0").env("TOLLGATE_SERVER__METRICS_LISTEN", "127.0.0.1:0");
        cmd.envs(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Tollgate::launch_in(cmd, scratch)
    }

    /// The registry service, run from the compose registry config with its own `environment` (the realm
    /// pointed at `realm`) and the bundle path mapped through the volume it mounts.
    fn start_registry(&self, realm: &str) -> Registry {
        let config = self.map("registry", "/etc/docker/registry/config.yml").expect("the registry config is mounted");
        let registry_config = yaml(&config);
        let bundle = registry_config["auth"]["token"]["rootcertbundle"].as_str().expect("rootcertbundle");
        let bundle_host = self.map("registry", bundle).expect("the registry mounts its bundle");
        assert!(
            bundle_host.is_file(),
            "tollgate wrote no bundle where the registry reads it: {}",
            bundle_host.display()
        );
        let mut env: Vec<(String, String)> = self.service("registry")["environment"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "REGISTRY_HTTP_HOST")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        assert!(env.iter().any(|(k, _)| k == "REGISTRY_AUTH_TOKEN_REALM"), "the compose file sets the realm");
        for (k, v) in env.iter_mut() {
            if k == "REGISTRY_AUTH_TOKEN_REALM" {
                *v = realm.to_string();
            }
        }
        env.push(("REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE".into(), bundle_host.display().to_string()));
        Registry::start(RegistryOptions { config_file: Some(config), env, ..Default::default() })
    }
}

fn token(addr: &str, user: &str, password: &str, scope: &str) -> (u16, Value) {
    let path = format!("/token?service=registry.example.com&scope={}", enc(scope));
    let r = http_request(addr, "GET", &path, &[("Authorization", &basic(user, password))], b"")
        .unwrap_or_else(|e| panic!("GET /token via {addr}: {e}"));
    (r.status, serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

/// The actions a /token answer grants, sorted.
fn granted(reply: &Value) -> Vec<String> {
    let mut actions = actions_of(reply["token"].as_str().unwrap_or_else(|| panic!("no token: {reply}")));
    actions.sort();
    actions
}

#[test]
fn the_secrets_command_makes_every_secret_the_compose_files_name_and_leaves_no_placeholder() {
    // As docs/operations.md writes it, `cd compose && bash secrets.sh`, in a copy of compose/ (the secrets
    // land in its secrets/, next to the files that mount them).
    let dir = crate::rig::tempdir("secrets");
    let compose_dir = dir.path().join("compose");
    crate::docs::copy_dir(&root().join("compose"), &compose_dir);
    for e in std::fs::read_dir(compose_dir.join("secrets")).unwrap() {
        let p = e.unwrap().path();
        if !matches!(p.file_name().and_then(|n| n.to_str()), Some("README.md" | ".gitignore")) {
            std::fs::remove_file(&p).unwrap(); // a developer's own secrets, never committed
        }
    }
    let as_documented = || {
        let mut cmd = command("bash");
        cmd.arg("secrets.sh").current_dir(&compose_dir).env("PATH", path_with_tollgate());
        let o = run(cmd, None, &[], Duration::from_secs(60));
        o.assert_ok();
        o
    };
    assert!(as_documented().stdout.contains("created in"));
    let out = compose_dir.join("secrets");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o700, "the directory is private");
    // Every file a compose file takes from ./secrets/ (as a secret or a mount) exists.
    for file in
        ["docker-compose.yml", "docker-compose.full.yml", "docker-compose.replicas.yml", "docker-compose.sentinel.yml"]
    {
        let compose = std::fs::read_to_string(root().join("compose").join(file)).unwrap();
        let named: Vec<&str> =
            compose.split("./secrets/").skip(1).map(|r| r.split([':', '\n', ' ']).next().unwrap()).collect();
        assert!(named.len() >= 3, "{file}: {named:?}");
        for n in named {
            let p = out.join(n);
            assert!(p.is_file() && std::fs::metadata(&p).unwrap().len() > 0, "{file} names secrets/{n}, not made");
        }
    }
    // No placeholder left anywhere, and nothing the demo ships.
    for entry in std::fs::read_dir(&out).unwrap() {
        let p = entry.unwrap().path();
        let t = std::fs::read_to_string(&p).unwrap();
        // `@NAME@`: a piece between two `@` that is only capitals and `_`.
        let parts: Vec<&str> = t.split('@').collect();
        let placeholder = parts.len() > 2
            && parts[1..parts.len() - 1]
                .iter()
                .any(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        assert!(!placeholder, "{}: a placeholder is left:\n{t}", p.display());
        for bad in ["change-me", "replace-with", "demo-password", "tg_demo"] {
            assert!(!t.contains(bad), "{}: {bad}", p.display());
        }
    }
    // The realm carries what tollgate needs, with the secrets filled in.
    let realm: Value = serde_json::from_str(&text(&out.join("realm-tollgate.json"))).unwrap();
    let client =
        realm["clients"].as_array().unwrap().iter().find(|c| c["clientId"] == "tollgate").expect("client tollgate");
    assert_eq!(client["secret"], text(&out.join("oidc_client_secret.txt")));
    assert_eq!(client["publicClient"], false);
    assert_eq!(client["directAccessGrantsEnabled"], true, "the password grant");
    assert_eq!(client["attributes"]["oauth2.device.authorization.grant.enabled"], "true", "the device grant");
    let mapper = client["protocolMappers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["protocolMapper"] == "oidc-group-membership-mapper")
        .expect("groups mapper");
    assert_eq!(mapper["config"]["claim.name"], "groups");
    assert_eq!(mapper["config"]["full.path"], "false");
    assert_eq!(mapper["config"]["access.token.claim"], "true");
    for user in realm["users"].as_array().unwrap() {
        let name = user["username"].as_str().unwrap();
        let cred = &user["credentials"][0];
        assert_eq!(cred["value"], text(&out.join(format!("{name}_password.txt"))), "{name}");
        assert_eq!(cred["temporary"], false, "{name} can log in without a first-login password change");
    }
    // The robot's secret matches the hash in the accounts file; the accounts file has no demo hash.
    let accounts = std::fs::read_to_string(out.join("accounts.yaml")).unwrap();
    assert!(accounts.contains("username: ci-payments") && accounts.contains("$argon2id$"), "{accounts}");
    // The access-token secret every replica mounts: long enough for tollgate, and not the refresh secret.
    let access = text(&out.join("access_token_secret.txt"));
    assert!(access.len() >= 32 && access != text(&out.join("refresh_secret.txt")), "{access:?}");
    // A second run keeps every secret.
    let before: BTreeMap<String, String> = [
        "ldap_bind_password.txt",
        "refresh_secret.txt",
        "access_token_secret.txt",
        "signing.key",
        "tls.key",
        "accounts.yaml",
    ]
    .iter()
    .map(|f| (f.to_string(), text(&out.join(f))))
    .collect();
    let o = as_documented();
    assert!(o.stdout.contains("every secret already exists"), "{o}");
    for (f, t) in before {
        assert_eq!(text(&out.join(&f)), t, "{f} was replaced");
    }
}

#[test]
fn every_compose_file_validates_and_the_minimal_deployment_pushes_with_its_robot() {
    let compose = crate::rig::require("docker-compose", "docker-compose");
    let files: Vec<PathBuf> = std::fs::read_dir(root().join("compose"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("docker-compose")))
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    for f in &files {
        let mut cmd = command(&compose);
        cmd.arg("-f").arg(f).args(["config", "-q"]);
        run(cmd, None, &[], Duration::from_secs(60)).assert_ok();
    }

    // The first try is published on loopback only, as its comment promises.
    let minimal: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(root().join("compose/docker-compose.yml")).unwrap()).unwrap();
    for (name, service) in minimal["services"].as_mapping().unwrap() {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{name:?} publishes {port} beyond loopback");
        }
    }
    // The secrets secrets.sh writes under compose/ never reach an image: the build context is the whole tree.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim().trim_end_matches('/') == "compose/secrets"), "{ignore}");

    let dir = crate::rig::tempdir("compose-minimal");
    let secrets = make_secrets(dir.path());
    let d = Deployment::new("docker-compose.yml", &secrets, dir.path());
    let tg = d.start_tollgate("tollgate", dir.path(), &[]);
    let reg = d.start_registry(&format!("http://{}/token", tg.addr));
    let robot = ("ci-payments", text(&secrets.join("robot-ci-payments.txt")));
    let image = format!("oci:{}:latest", oci_image(dir.path(), "minimal").display());
    Skopeo::new().copy(&image, &reg.docker_ref("payments/api:1"), Some((robot.0, &robot.1))).assert_ok();
    // The robot may not go beyond its team, and the demo robot does not exist here.
    assert!(granted(&token(&tg.addr, robot.0, &robot.1, "repository:web/site:push").1).is_empty());
    assert_eq!(token(&tg.addr, "ci-payments", "tg_demo_ci_payments_secret", "repository:payments/api:pull").0, 401);
}

#[test]
fn the_full_deployment_binds_to_its_ldap_seed_grants_directory_groups_and_skopeo_pushes() {
    let dir = crate::rig::tempdir("compose-full");
    let secrets = make_secrets(dir.path());
    let d = Deployment::new("docker-compose.full.yml", &secrets, dir.path());

    // OpenLDAP as its image sets it up: an empty database for LDAP_ROOT with the admin as root DN, then
    // every LDIF mounted into the custom LDIF directory, added with ldapadd in name order.
    let ldap = d.service("openldap");
    let env = &ldap["environment"];
    let suffix = env["LDAP_ROOT"].as_str().unwrap();
    let admin = format!("cn={},{suffix}", env["LDAP_ADMIN_USERNAME"].as_str().unwrap());
    let admin_pw =
        text(&d.map("openldap", env["LDAP_ADMIN_PASSWORD_FILE"].as_str().unwrap()).expect("admin password secret"));
    let ldif_dir = env["LDAP_CUSTOM_LDIF_DIR"].as_str().unwrap();
    let slapd = Slapd::start_bare(suffix, &admin, &admin_pw);
    let mut seeds: Vec<(String, PathBuf)> = d
        .mounts("openldap")
        .into_iter()
        .filter(|(c, _)| c.starts_with(&format!("{ldif_dir}/")) && c.ends_with(".ldif"))
        .collect();
    seeds.sort();
    assert_eq!(seeds.len(), 2, "the tree and the passwords: {seeds:?}");
    for (_, file) in &seeds {
        slapd.ldapadd_file(file);
    }

    let tg = d.start_tollgate(
        "tollgate",
        dir.path(),
        &[("TOLLGATE_PROVIDERS__1__URL", slapd.ldap_url())], // the host `openldap`
    );
    let alice_pw = text(&secrets.join("alice_password.txt"));
    let (status, reply) = token(&tg.addr, "alice", &alice_pw, "repository:payments/api:push,pull");
    assert_eq!(status, 200, "{reply}\n{}", tg.logs());
    assert_eq!(granted(&reply), ["pull", "push"], "alice is in team-payments in the directory: {reply}");
    let (status, _) = token(&tg.addr, "alice", "alice-demo-password", "repository:payments/api:pull");
    assert_eq!(status, 401, "the demo password opens nothing");
    let (status, reply) =
        token(&tg.addr, "bob", &text(&secrets.join("bob_password.txt")), "repository:payments/api:push,pull");
    assert_eq!(status, 200, "{reply}");
    assert!(reply["token"].is_string() && granted(&reply).is_empty(), "bob is not in team-payments: {reply}");
    let audit: Vec<Value> = tg.audit_lines();
    assert!(audit.iter().any(|l| l["subject"] == "alice" && l["provider"] == "corp-ldap"), "{audit:?}");

    // registry:2 from the compose registry config, trusting the bundle the tollgate command wrote.
    let reg = d.start_registry(&format!("http://{}/token", tg.addr));
    let robot_pw = text(&secrets.join("robot-ci-payments.txt"));
    let skopeo = Skopeo::new();
    let image = |m: &str| format!("oci:{}:latest", oci_image(dir.path(), m).display());
    skopeo.copy(&image("alice"), &reg.docker_ref("payments/api:alice"), Some(("alice", &alice_pw))).assert_ok();
    skopeo.copy(&image("robot"), &reg.docker_ref("payments/api:ci"), Some(("ci-payments", &robot_pw))).assert_ok();
    assert!(
        !skopeo
            .copy(
                &image("bob"),
                &reg.docker_ref("payments/api:bob"),
                Some(("bob", &text(&secrets.join("bob_password.txt"))))
            )
            .ok
    );
    assert_eq!(skopeo.tags(&reg.docker_ref("payments/api"), Some(("alice", &alice_pw))), ["alice", "ci"]);
}

/// Redis as the compose file starts it (its command line, the password from its secret), on a loopback
/// port of the rig's choosing; the URL secret then names that port instead of the host `redis`.
fn start_compose_redis(d: &Deployment, dir: &Path) -> (std::process::Child, u16) {
    let script = d.script("redis");
    assert!(script.contains("requirepass") && script.contains("--appendonly yes"), "{script}");
    assert!(!script.contains("--requirepass"), "the password is config on stdin, not an argument: {script}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = dir.join("redis-data");
    std::fs::create_dir_all(&data).unwrap();
    let log = std::fs::File::create(dir.join("redis.log")).unwrap();
    let child = command("sh")
        .arg("-c")
        .arg(script.replacen(
            "redis-server -",
            &format!("redis-server - --port {port} --bind 127.0.0.1 --dir {} --daemonize no", data.display()),
            1,
        ))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("redis-server");
    let password = text(&d.secrets.join("redis_password.txt"));
    wait_until("redis answers with its password", Duration::from_secs(20), || {
        let mut cli = command("redis-cli");
        cli.args(["-p", &port.to_string(), "ping"]).env("REDISCLI_AUTH", &password);
        run(cli, None, &[&password], Duration::from_secs(5)).stdout.contains("PONG")
    });
    let url = d.secrets.join("redis_url.txt");
    let text = std::fs::read_to_string(&url).unwrap();
    assert!(text.contains("@redis:6379/"), "{text}");
    std::fs::write(&url, text.replace("@redis:6379/", &format!("@127.0.0.1:{port}/"))).unwrap();
    (child, port)
}

#[test]
fn two_replicas_behind_a_balancer_checking_healthz_keep_pushes_and_robots_going() {
    let dir = crate::rig::tempdir("compose-replicas");
    let secrets = make_secrets(dir.path());
    let d = Deployment::new("docker-compose.replicas.yml", &secrets, dir.path());
    let (mut redis, redis_port) = start_compose_redis(&d, dir.path());
    // A person next to the robot (robots may not make access tokens under the example policy), added to the
    // accounts file the way docs/providers.md adds people: a hash only.
    let carol = ("carol", "carol-has-a-long-password-for-tokens");
    let hash = tollgate::identity::hashing::hash_password(carol.1).unwrap();
    let mut accounts = text(&secrets.join("accounts.yaml"));
    accounts += &format!("\n  - username: {}\n    password_hash: \"{hash}\"\n    groups: [team-payments]\n", carol.0);
    std::fs::write(secrets.join("accounts.yaml"), accounts).unwrap();

    // The init job: the registry's bundle, then check-config of what every replica reads.
    let mut init = command("sh");
    init.arg("-c").arg(d.script("tollgate-init")).env("PATH", path_with_tollgate()).env_remove("TOLLGATE_CONFIG");
    init.envs(d.tollgate_env("tollgate-init").1);
    let o = run(init, None, &[], Duration::from_secs(60));
    o.assert_ok();
    assert!(o.stdout.contains(": ok"), "check-config: {o}");
    // The replicas share one access-token secret: no warning of a per-replica one.
    assert!(!o.stderr.contains("access_tokens.secret_file"), "check-config: {o}");

    // Two replicas; a directory that is down sits behind the robots (LDAP is asked after the accounts
    // file), so their readiness is 503 the whole time.
    let dead_ldap = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let ldap = [
        ("TOLLGATE_PROVIDERS__1__TYPE", "ldap".to_string()),
        ("TOLLGATE_PROVIDERS__1__NAME", "corp-ldap".to_string()),
        ("TOLLGATE_PROVIDERS__1__URL", format!("ldap://{dead_ldap}")),
        ("TOLLGATE_PROVIDERS__1__USER_BASE_DN", "ou=people,dc=example,dc=com".to_string()),
        ("TOLLGATE_PROVIDERS__1__CONNECT_TIMEOUT", "300ms".to_string()),
        ("TOLLGATE_SERVER__PROBE_INTERVAL", "1s".to_string()),
    ];
    let scratch_a = dir.path().join("a");
    let scratch_b = dir.path().join("b");
    std::fs::create_dir_all(&scratch_a).unwrap();
    std::fs::create_dir_all(&scratch_b).unwrap();
    let mut a = d.start_tollgate("tollgate-a", &scratch_a, &ldap);
    let b = d.start_tollgate("tollgate-b", &scratch_b, &ldap);
    for t in [&a, &b] {
        wait_until("readiness reports the directory down", Duration::from_secs(20), || {
            http_request(&t.addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 503)
        });
    }

    // The balancer checks the path the compose file's Traefik labels name.
    let labels = d.compose["x-tollgate"]["labels"].as_array().expect("x-tollgate labels");
    let path = labels
        .iter()
        .filter_map(Value::as_str)
        .find_map(|l| l.strip_prefix("traefik.http.services.tollgate.loadbalancer.healthcheck.path="))
        .expect("a health-check path");
    assert_eq!(path, "/healthz");
    let lb = Haproxy::start(&[("a", &a.addr), ("b", &b.addr)], path);
    let reg = d.start_registry(&format!("http://{}/token", lb.addr));

    let robot = ("ci-payments", text(&secrets.join("robot-ci-payments.txt")));
    let skopeo = Skopeo::new();
    let image = |m: &str| format!("oci:{}:latest", oci_image(dir.path(), m).display());
    for i in 0..4 {
        let (status, reply) = token(&lb.addr, robot.0, &robot.1, "repository:payments/api:push,pull");
        assert_eq!(
            (status, granted(&reply)),
            (200, vec!["pull".to_string(), "push".to_string()]),
            "login {i}: {reply}"
        );
    }
    skopeo.copy(&image("one"), &reg.docker_ref("payments/api:1"), Some((robot.0, &robot.1))).assert_ok();
    // A directory user meanwhile gets a 503 that names the directory, not a vague "identity provider".
    let (status, reply) = token(&a.addr, "alice", "a-directory-password", "repository:payments/api:pull");
    assert_eq!(status, 503, "{reply}");
    let said = reply["error_description"].as_str().unwrap_or_default();
    assert_eq!(said, "the identity provider \"corp-ldap\" cannot be reached; try again shortly", "{reply}");
    // The replicas keep their state in that Redis: the robot's good logins are recorded there.
    let password = text(&secrets.join("redis_password.txt"));
    let mut scan = command("redis-cli");
    scan.args(["-p", &redis_port.to_string(), "--scan", "--pattern", "tollgate:rl:good:*"])
        .env("REDISCLI_AUTH", &password);
    let keys = run(scan, None, &[&password], Duration::from_secs(10));
    assert!(keys.ok && keys.stdout.lines().count() >= 1, "no shared state in the compose Redis: {keys}");
    let served = |t: &Tollgate| t.audit_lines().iter().filter(|l| l["subject"] == "ci-payments").count();
    assert!(served(&a) > 0 && served(&b) > 0, "both replicas served: a {} b {}", served(&a), served(&b));

    // An access token created through replica A logs in through replica B and pulls through the balancer:
    // both key token hashes with the one access-token secret secrets.sh made (each data_dir is its own).
    let body = serde_json::json!({"name": "ci", "scope": ["repository:payments/api:pull"], "expires": "1d"});
    let auth = basic(carol.0, carol.1);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let r = http_request(&a.addr, "POST", "/access-tokens", &headers, body.to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 201, "POST /access-tokens on A: {}", r.body);
    let created: Value = serde_json::from_str(&r.body).unwrap();
    let pat = created["token"].as_str().expect("the token's secret").to_string();
    let (status, reply) = token(&b.addr, "anything", &pat, "repository:payments/api:push,pull");
    assert_eq!((status, granted(&reply)), (200, vec!["pull".to_string()]), "the token on B: {reply}");
    let line = b.audit_lines().pop().expect("B's audit line");
    assert_eq!((&line["auth_method"], &line["access_token"]), (&Value::from("access_token"), &created["id"]), "{line}");
    skopeo.inspect(&reg.docker_ref("payments/api:1"), Some(("anything", &pat))).assert_ok();

    // One replica stops: the balancer takes it out and pushes go on through the other.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    lb.wait_for("a", "DOWN");
    assert!(lb.server_states().contains(&("b".to_string(), "UP".to_string())), "{:?}", lb.server_states());
    for i in 2..5 {
        skopeo
            .copy(&image(&format!("n{i}")), &reg.docker_ref(&format!("payments/api:{i}")), Some((robot.0, &robot.1)))
            .assert_ok();
    }
    let (status, _) = token(&lb.addr, robot.0, &robot.1, "repository:payments/api:pull");
    assert_eq!(status, 200);
    assert_eq!(skopeo.tags(&reg.docker_ref("payments/api"), Some((robot.0, &robot.1))).len(), 4);
    let _ = redis.kill();
    let _ = redis.wait();
}

/// The accounts of the embedded demo, whose passwords README publishes.
fn demo_markers() -> Vec<String> {
    let default = std::fs::read_to_string(root().join("src/config/default.yaml")).unwrap();
    let mut markers: Vec<String> = default
        .lines()
        .filter_map(|l| l.trim().strip_prefix("password_hash: "))
        .map(|h| h.trim_matches('"').to_string())
        .collect();
    assert_eq!(markers.len(), 4, "{markers:?}");
    // The hash's own salt and digest, so a re-quoted copy is found too.
    markers.extend(markers.clone().iter().map(|h| h.rsplit('$').next().unwrap().to_string()));
    markers.extend(
        ["alice-demo-password", "bob-demo-password", "admin-demo-password", "tg_demo_ci_payments_secret"]
            .map(String::from),
    );
    markers
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn no_deployment_file_carries_a_demo_account_and_each_trusts_only_its_proxy() {
    let markers = demo_markers();
    let mut checked = 0;
    let git_ignored = |p: &Path| {
        let mut cmd = command("git");
        cmd.arg("-C").arg(root()).args(["check-ignore", "-q"]).arg(p);
        run(cmd, None, &[], Duration::from_secs(10)).ok
    };
    for dir in ["compose", "deploy"] {
        for f in files_under(&root().join(dir)) {
            if git_ignored(&f) {
                continue; // generated by secrets.sh, never committed
            }
            let Ok(t) = std::fs::read_to_string(&f) else { continue };
            for m in &markers {
                assert!(!t.contains(m.as_str()), "{}: contains the demo account marker {m}", f.display());
            }
            for bad in ["providers/robots.yaml", "change-me", "replace-with"] {
                assert!(!t.contains(bad), "{}: {bad}", f.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} deployment files checked");

    // Behind Traefik, X-Forwarded-For is believed from Traefik's own fixed address only; with no proxy
    // (the minimal deployment), from nobody. Load balancers check /healthz.
    for (file, config) in [
        ("docker-compose.full.yml", "tollgate.full.yaml"),
        ("docker-compose.replicas.yml", "tollgate.replicas.yaml"),
        ("docker-compose.sentinel.yml", "tollgate.sentinel.yaml"),
        ("docker-compose.yml", "tollgate.yaml"),
    ] {
        let compose = yaml(&root().join("compose").join(file));
        let trusted = yaml(&root().join("compose/tollgate").join(config))["server"]["trusted_proxies"].clone();
        match compose["services"]["traefik"]["networks"]["edge"]["ipv4_address"].as_str() {
            Some(ip) => {
                assert_eq!(trusted, serde_json::json!([format!("{ip}/32")]), "{config}");
                let subnet = compose["networks"]["edge"]["ipam"]["config"][0]["subnet"].as_str().unwrap();
                assert!(ip.starts_with(subnet.trim_end_matches("0/24")), "{file}: {ip} in {subnet}");
            }
            None => {
                assert!(compose["services"]["traefik"].is_null(), "{file}: Traefik without a fixed address");
                assert_eq!(trusted, serde_json::json!([]), "{config}: no proxy, nobody is believed");
            }
        }
        let text = std::fs::read_to_string(root().join("compose").join(file)).unwrap();
        let checks = text.lines().filter(|l| !l.trim_start().starts_with('#'));
        for l in checks.filter(|l| l.contains("healthcheck") || l.contains("/healthz") || l.contains("/readyz")) {
            assert!(!l.contains("/readyz"), "{file}: load balancers and health checks use /healthz: {l}");
        }
    }
    // A named volume the tollgate image writes into takes the ownership of the image's directory on first
    // use: each must exist in the image, owned by the unprivileged user tollgate runs as.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let owned: Vec<&str> = dockerfile
        .split("chown 65534:65534")
        .skip(1)
        .flat_map(|rest| rest.lines().next().unwrap_or("").split_whitespace())
        .collect();
    for file in
        ["docker-compose.yml", "docker-compose.full.yml", "docker-compose.replicas.yml", "docker-compose.sentinel.yml"]
    {
        let compose = yaml(&root().join("compose").join(file));
        for (name, service) in compose["services"].as_object().unwrap() {
            if service["image"] != "tollgate:latest" {
                continue;
            }
            for v in service["volumes"].as_array().unwrap().iter().filter_map(Value::as_str) {
                let parts: Vec<&str> = v.split(':').collect();
                let named = !parts[0].starts_with('.') && !parts[0].starts_with('/');
                if named && parts.get(2) != Some(&"ro") {
                    assert!(
                        owned.contains(&parts[1]),
                        "{file}: {name} writes {} but the image does not own it",
                        parts[1]
                    );
                }
            }
        }
    }

    // tollgate reaches Keycloak by its public name through Traefik, trusting the CA secrets.sh makes.
    let full = yaml(&root().join("compose/docker-compose.full.yml"));
    let aliases = full["services"]["traefik"]["networks"]["edge"]["aliases"].clone();
    let oidc = yaml(&root().join("compose/tollgate/tollgate.full.yaml"))["providers"][2].clone();
    let host = oidc["issuer"].as_str().unwrap().trim_start_matches("https://").split('/').next().unwrap().to_string();
    assert!(aliases.as_array().unwrap().contains(&Value::String(host.clone())), "{host} is not an alias: {aliases}");
    assert_eq!(oidc["ca_file"], "/run/secrets/tls_ca");
    assert_eq!(full["secrets"]["tls_ca"]["file"], "./secrets/tls-ca.crt");
    assert!(full["services"]["tollgate"]["secrets"].as_array().unwrap().contains(&Value::String("tls_ca".into())));
}

#[test]
fn serve_with_a_config_refuses_the_demo_accounts_and_a_running_server_keeps_them_out() {
    let dir = crate::rig::tempdir("demo-refused");
    let accounts = dir.path().join("accounts.yaml");
    std::fs::copy(root().join("providers/robots.yaml"), &accounts).unwrap();
    let config = dir.path().join("tollgate.yaml");
    let policy = root().join("policies/default.yaml");
    std::fs::write(
        &config,
        format!(
            "token: {{issuer: tollgate, services: [registry.example.com]}}\n\
             providers:\n  - {{type: static, name: local, file: accounts.yaml}}\n\
             policy: {{paths: [{}]}}\n",
            policy.display()
        ),
    )
    .unwrap();
    let mut cmd = command(tollgate_bin());
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0");
    let o = run(cmd, None, &[], Duration::from_secs(30));
    assert!(!o.ok, "serve started with the demo accounts:\n{o}");
    let err = o.combined();
    for who in ["alice", "ci-payments", "old-robot"] {
        assert!(
            err.contains(&format!("({who:?}).password_hash: the hash of a published demo password")),
            "{who}:\n{err}"
        );
    }

    // With accounts of its own it runs; a demo hash written into the file later is refused, and the
    // accounts it had keep working.
    let own = crate::rig::unique("own-secret");
    let mut hash = command(tollgate_bin());
    hash.arg("hash-password");
    let h = run(hash, Some(own.as_bytes()), &[&own], Duration::from_secs(30));
    h.assert_ok();
    let good = format!("accounts:\n  - username: ci-payments\n    password_hash: \"{}\"\n    groups: [robots, ci-payments]\n    robot: true\n", h.stdout.trim());
    std::fs::write(&accounts, &good).unwrap();
    let mut cmd = command(tollgate_bin());
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("TOLLGATE_CONFIG")
        .env("TOLLGATE_SERVER__LISTEN", "127.0.0.1:0");
    cmd.env("TOLLGATE_LOG__FORMAT", "json").env("TOLLGATE_SERVER__DATA_DIR", dir.path().join("data"));
    let tg = Tollgate::launch_in(cmd, dir.path());
    assert_eq!(token(&tg.addr, "ci-payments", &own, "repository:payments/api:pull").0, 200);
    let demo = std::fs::read_to_string(root().join("providers/robots.yaml")).unwrap();
    std::fs::write(&accounts, demo).unwrap();
    wait_until("the reload is refused", Duration::from_secs(10), || {
        tg.logs().contains("the hash of a published demo password")
    });
    assert_eq!(token(&tg.addr, "alice", "alice-demo-password", "repository:payments/api:pull").0, 401);
    assert_eq!(token(&tg.addr, "ci-payments", "tg_demo_ci_payments_secret", "repository:payments/api:pull").0, 401);
    assert_eq!(
        token(&tg.addr, "ci-payments", &own, "repository:payments/api:pull").0,
        200,
        "the last good file is kept"
    );
}

/// The Sentinel deployment as its compose file runs it: the master, the replica and three sentinels from
/// their own command lines (ports mapped to loopback ports of the test's), the init job, two replicas from
/// `tollgate.sentinel.yaml` (the sentinels' names mapped by one override). The replicas find the master
/// through the sentinels; after a SIGKILL of the master, Sentinel promotes the replica and a refresh token
/// from one tollgate replica works on the other, both naming the new master on /readyz, without a restart.
#[test]
fn the_sentinel_deployment_follows_a_failover_of_its_redis() {
    let dir = crate::rig::tempdir("compose-sentinel");
    let secrets = make_secrets(dir.path());
    let d = Deployment::new("docker-compose.sentinel.yml", &secrets, dir.path());
    let password = text(&secrets.join("redis_password.txt"));
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spawn = |name: &str, script: String| {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        command("sh").arg("-c").arg(script).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect(name)
    };
    let ping = |port: u16| {
        let mut cli = command("redis-cli");
        cli.args(["-p", &port.to_string(), "ping"]).env("REDISCLI_AUTH", &password);
        run(cli, None, &[&password], Duration::from_secs(5)).stdout.contains("PONG")
    };
    let redis_at = |service: &str, port: u16, master: u16| {
        let data = d.volumes.join(format!("{service}-local"));
        std::fs::create_dir_all(&data).unwrap();
        let script = d.script(service);
        assert!(!script.contains("--requirepass") && script.contains("requirepass"), "{script}");
        script
            .replacen(
                "redis-server -",
                &format!("redis-server - --port {port} --bind 127.0.0.1 --dir {} --daemonize no", data.display()),
                1,
            )
            .replace("--replicaof redis 6379", &format!("--replicaof 127.0.0.1 {master}"))
    };
    let (master_port, replica_port) = (free(), free());
    let mut master = spawn("redis", redis_at("redis", master_port, master_port));
    wait_until("the master answers", Duration::from_secs(20), || ping(master_port));
    let mut replica = spawn("redis-replica", redis_at("redis-replica", replica_port, master_port));
    wait_until("the replica replicates", Duration::from_secs(20), || {
        let mut cli = command("redis-cli");
        cli.args(["-p", &replica_port.to_string(), "INFO", "replication"]).env("REDISCLI_AUTH", &password);
        run(cli, None, &[&password], Duration::from_secs(5)).stdout.contains("master_link_status:up")
    });
    let mut sentinels = Vec::new();
    let mut sentinel_ports = Vec::new();
    for name in ["sentinel-1", "sentinel-2", "sentinel-3"] {
        let port = free();
        let script = d
            .script(name)
            .replace("port 26379", &format!("port {port}\nbind 127.0.0.1"))
            .replace("monitor tollgate redis 6379", &format!("monitor tollgate 127.0.0.1 {master_port}"));
        sentinels.push(spawn(name, script));
        sentinel_ports.push(port);
    }
    let sentinel = |port: u16, args: &[&str]| {
        let mut cli = command("redis-cli");
        cli.args(["-p", &port.to_string()]).args(args);
        run(cli, None, &[], Duration::from_secs(5)).stdout
    };
    for &p in &sentinel_ports {
        wait_until("each sentinel knows the others and the replica", Duration::from_secs(60), || {
            sentinel(p, &["SENTINEL", "sentinels", "tollgate"]).matches("runid").count() >= 2
                && sentinel(p, &["SENTINEL", "replicas", "tollgate"]).contains(&replica_port.to_string())
        });
    }

    let mut init = command("sh");
    init.arg("-c").arg(d.script("tollgate-init")).env("PATH", path_with_tollgate()).env_remove("TOLLGATE_CONFIG");
    init.envs(d.tollgate_env("tollgate-init").1);
    let o = run(init, None, &[], Duration::from_secs(60));
    o.assert_ok();
    // Its check-config: one access-token secret for both replicas, so no warning of a per-replica one.
    assert!(o.stdout.contains(": ok") && !o.stderr.contains("access_tokens.secret_file"), "check-config: {o}");
    let nodes = format!("[{}]", sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(", "));
    let extra = [("TOLLGATE_STATE__SENTINEL__NODES", nodes)];
    let (scratch_a, scratch_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&scratch_a).unwrap();
    std::fs::create_dir_all(&scratch_b).unwrap();
    let a = d.start_tollgate("tollgate-a", &scratch_a, &extra);
    let b = d.start_tollgate("tollgate-b", &scratch_b, &extra);
    let pids = (a.child.id(), b.child.id());
    let robot = ("ci-payments", text(&secrets.join("robot-ci-payments.txt")));
    let refresh_from = |t: &Tollgate| {
        let r = http_request(
            &t.addr,
            "GET",
            "/token?service=registry.example.com&scope=repository:payments/api:pull&offline_token=true&client_id=docker",
            &[("Authorization", &basic(robot.0, &robot.1))],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str::<Value>(&r.body).unwrap()["refresh_token"].as_str().expect("a refresh token").to_string()
    };
    let use_on = |t: &Tollgate, refresh: &str| {
        http_request(
            &t.addr,
            "GET",
            "/token?service=registry.example.com&scope=repository:payments/api:pull",
            &[("Authorization", &basic(robot.0, refresh))],
            b"",
        )
        .unwrap()
        .status
    };
    let before = refresh_from(&a);
    assert_eq!(use_on(&b, &before), 200, "B reads the state A wrote, through the sentinels");
    let master_named = |t: &Tollgate, port: u16| {
        http_request(&t.addr, "GET", "/readyz", &[], b"")
            .is_ok_and(|r| r.body.contains(&format!("\"master\":\"127.0.0.1:{port}\"")))
    };
    assert!(master_named(&a, master_port) && master_named(&b, master_port));

    // SIGKILL of the master: Sentinel promotes the replica after down-after-milliseconds (5 s here).
    unsafe { libc::kill(master.id() as libc::pid_t, libc::SIGKILL) };
    let _ = master.wait();
    wait_until("Sentinel promotes the replica", Duration::from_secs(90), || {
        sentinel(sentinel_ports[0], &["SENTINEL", "get-master-addr-by-name", "tollgate"])
            .contains(&replica_port.to_string())
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (sa, sb) = (use_on(&a, &before), use_on(&b, &before));
        if (sa, sb) == (200, 200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refresh tokens do not work again: A {sa}, B {sb}\nA:\n{}",
            a.logs().lines().filter(|l| !l.contains("\"decision\"")).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = refresh_from(&b);
    assert_eq!(use_on(&a, &after), 200, "a token issued on the new master works on the other replica");
    assert!(master_named(&a, replica_port) && master_named(&b, replica_port), "both name the new master");
    assert_eq!((a.child.id(), b.child.id()), pids, "no restart");
    for c in sentinels.iter_mut().chain([&mut replica]) {
        let _ = c.kill();
        let _ = c.wait();
    }
}
