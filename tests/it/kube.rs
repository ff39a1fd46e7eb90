//! The Kubernetes manifests in `deploy/kubernetes/` are proven without a cluster.
//!
//! - Every object validates against the Kubernetes OpenAPI schemas, strictly (an unknown field fails), with
//!   PyPI's `kubernetes-validate`, which `scripts/test.sh` installs into `target/test-tools/venv`.
//! - The config in the ConfigMap passes the real `tollgate check-config`, run on the files a pod would see:
//!   the Secrets are made by running the commands of docs/kubernetes.md as written, then laid out at the
//!   Deployment's mount points under a temporary root (container paths mapped through `TOLLGATE_*`
//!   variables). So the config's paths, the mounts, the Secret keys and the documented commands must agree.
//! - What a schema cannot see: replicas, probes on the port the config listens on, the security context,
//!   selectors that really select, every referenced Secret and ConfigMap defined or documented, and no
//!   secret value anywhere in the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

use crate::docs::{commands, programs};
use crate::harness::path_overrides;
use crate::ops::tollgate_bin;

/// The Kubernetes versions the manifests are checked against: an older one still supported by the big
/// providers, and the validator's newest.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every manifest file, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .expect("deploy/kubernetes/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "manifests: {files:?}");
    files
}

/// The YAML documents of a file (empty documents left out); None when it is not YAML at all.
fn documents(text: &str) -> Option<Vec<Value>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => out.push(v),
            Err(_) => return None,
        }
    }
    Some(out)
}

/// Every object of every manifest.
fn objects() -> Vec<Value> {
    manifest_files()
        .iter()
        .flat_map(|f| {
            documents(&std::fs::read_to_string(f).unwrap()).unwrap_or_else(|| panic!("{}: not YAML", f.display()))
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes/"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

fn seq<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_else(|| panic!("{what}: not a list: {v:?}"))
}

/// `matchLabels` all present, with the same values, in `labels`.
fn selects(match_labels: &Value, labels: &Value) -> bool {
    let m = match_labels.as_mapping().expect("matchLabels is a map");
    !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The port number of `port` (a number, or the name of one of the container's ports).
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = str_of(port, "port");
    seq(&container["ports"], "ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("the container has no port named {name}"))
}

/// The port of an `address:port` listen setting.
fn listen_port(listen: &str) -> u64 {
    listen.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("listen address {listen}"))
}

/// The tollgate config held by the ConfigMap.
fn tollgate_config(objects: &[Value]) -> Value {
    let cm = find(objects, "ConfigMap", "tollgate-config");
    serde_norway::from_str(str_of(&cm["data"]["tollgate.yaml"], "tollgate-config data tollgate.yaml")).unwrap()
}

/// `kubernetes-validate`: `$KUBERNETES_VALIDATE_BIN`, else where scripts/test.sh installs it, else PATH.
fn validator() -> PathBuf {
    let install = "python3 -m venv target/test-tools/venv && \
                   target/test-tools/venv/bin/pip install kubernetes-validate==1.37.0";
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "\n\n*** KUBERNETES_VALIDATE_BIN={} does not exist.\n*** Install it: {install}\n\n",
            p.display()
        );
        return p;
    }
    let default = root().join("target/test-tools/venv/bin/kubernetes-validate");
    if default.is_file() {
        return default;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("kubernetes-validate")).find(|p| p.is_file()));
    on_path.unwrap_or_else(|| {
        panic!(
            "\n\n*** `kubernetes-validate` is not installed: the Kubernetes manifest tests need it.\n\
             *** Install it with: apt-get install -y python3-venv && {install}\n\
             *** (or run `bash scripts/test.sh`, which installs every tool the tests use)\n\n"
        )
    })
}

fn run_validator(files: &[PathBuf], version: &str) -> (bool, String) {
    let o = Command::new(validator())
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn every_manifest_validates_strictly_against_the_kubernetes_schemas() {
    let files = manifest_files();
    let count = objects().len();
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = run_validator(&files, version);
        assert!(ok, "kubernetes-validate --strict -k {version}:\n{out}");
        // Every object was checked against a schema: none was passed over as of an unknown kind.
        assert_eq!(out.matches(" passed for resource ").count(), count, "-k {version}:\n{out}");
    }
    // The same Deployment with one misspelt field fails: the validation really is strict.
    let deployment = find(&objects(), "Deployment", "tollgate").clone();
    let mut bad = deployment;
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] =
        bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, serde_norway::to_string(&bad).unwrap()).unwrap();
    let (ok, out) = run_validator(&[path], KUBERNETES_VERSIONS[0]);
    assert!(!ok && out.contains("readinessProbes"), "an unknown field must fail:\n{out}");
}

/// A Secret or ConfigMap that docs/kubernetes.md tells the reader to create, from
/// `kubectl ... create secret generic|tls NAME ...` or `kubectl ... create configmap NAME ...`.
struct Documented {
    kind: &'static str,
    name: String,
    /// key in the object -> the local file it is made from
    files: BTreeMap<String, String>,
}

fn documented_objects(doc: &str) -> Vec<Documented> {
    let mut out = Vec::new();
    for cmd in commands(doc) {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        if words.first() != Some(&"kubectl") {
            continue;
        }
        let Some(at) = words.iter().position(|w| *w == "create") else { continue };
        let (kind, name) = match &words[at + 1..] {
            ["secret", "generic" | "tls", name, ..] => ("Secret", name),
            ["configmap", name, ..] => ("ConfigMap", name),
            _ => continue,
        };
        let mut files = BTreeMap::new();
        for w in &words {
            if let Some(arg) = w.strip_prefix("--from-file=") {
                let (key, file) = match arg.split_once('=') {
                    Some((k, f)) => (k.to_string(), f),
                    None => (Path::new(arg).file_name().unwrap().to_str().unwrap().to_string(), arg),
                };
                files.insert(key, file.to_string());
            }
            for (flag, key) in [("--cert=", "tls.crt"), ("--key=", "tls.key")] {
                if let Some(file) = w.strip_prefix(flag) {
                    files.insert(key.to_string(), file.to_string());
                }
            }
        }
        out.push(Documented { kind, name: name.to_string(), files });
    }
    out
}

fn kube_doc() -> String {
    std::fs::read_to_string(root().join("docs/kubernetes.md")).expect("docs/kubernetes.md")
}

#[test]
fn the_config_in_the_configmap_passes_check_config_with_the_secrets_made_as_documented() {
    crate::rig::require("openssl", "openssl");
    let objects = objects();
    let doc = kube_doc();
    let documented = documented_objects(&doc);
    let bin_dir = Path::new(tollgate_bin()).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());

    // 1. The documented commands that make the secret files, run as written in a folder laid out as the
    //    repository's top folder (the policy ConfigMap is made from policies/default.yaml).
    let work = tempfile::tempdir().unwrap();
    crate::docs::copy_dir(&root().join("policies"), &work.path().join("policies"));
    let local = ["openssl", "tollgate", "printf", "tr", "echo"];
    let mut ran = Vec::new();
    for cmd in commands(&doc) {
        let progs = programs(&cmd);
        if progs.is_empty() || !progs.iter().all(|p| local.contains(&p.as_str())) {
            continue;
        }
        let o = Command::new("sh")
            .args(["-c", &cmd])
            .current_dir(work.path())
            .env("PATH", &path)
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        ran.push(cmd);
    }
    assert!(ran.len() >= 5, "the secret-making commands of docs/kubernetes.md: {ran:?}");

    // 2. The files each pod sees, under a temporary root: every volume mount of the tollgate container,
    //    filled from the ConfigMaps in the manifests or the files the documented commands made.
    let deployment = find(&objects, "Deployment", "tollgate");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &seq(&pod["containers"], "containers")[0];
    let fs = tempfile::tempdir().unwrap();
    let in_pod = |p: &str| fs.path().join(p.trim_start_matches('/'));
    for mount in seq(&container["volumeMounts"], "volumeMounts") {
        let dir = in_pod(str_of(&mount["mountPath"], "mountPath"));
        std::fs::create_dir_all(&dir).unwrap();
        let volume = seq(&pod["volumes"], "volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume for mount {mount:?}"));
        let (kind, name) = if let Some(n) = volume["configMap"]["name"].as_str() {
            ("ConfigMap", n)
        } else if let Some(n) = volume["secret"]["secretName"].as_str() {
            ("Secret", n)
        } else {
            assert!(volume.get("emptyDir").is_some(), "volume {volume:?}");
            continue;
        };
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(o) = objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name) {
            for (k, v) in o["data"].as_mapping().unwrap() {
                files.insert(str_of(k, "key").to_string(), str_of(v, "value").as_bytes().to_vec());
            }
        } else {
            let d = documented
                .iter()
                .find(|d| d.kind == kind && d.name == name)
                .unwrap_or_else(|| panic!("{kind} {name}: neither in the manifests nor created in docs/kubernetes.md"));
            for (key, file) in &d.files {
                let bytes = std::fs::read(work.path().join(file))
                    .unwrap_or_else(|e| panic!("{kind} {name}: {file}, made by the documented commands: {e}"));
                files.insert(key.clone(), bytes);
            }
        }
        let items = volume["configMap"]["items"].as_sequence().or(volume["secret"]["items"].as_sequence());
        let wanted: Vec<(String, String)> = match items {
            Some(items) => items
                .iter()
                .map(|i| (str_of(&i["key"], "key").to_string(), str_of(&i["path"], "path").to_string()))
                .collect(),
            None => files.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, file) in wanted {
            let bytes = files.get(&key).unwrap_or_else(|| panic!("{kind} {name} has no key {key}"));
            std::fs::write(dir.join(file), bytes).unwrap();
        }
    }

    // 3. check-config on the mounted config, each container path of it mapped under the root.
    let command: Vec<&str> = seq(&container["command"], "command").iter().map(|c| str_of(c, "command")).collect();
    assert_eq!(command[..2], ["tollgate", "serve"], "{command:?}");
    let config_path = command[command.iter().position(|c| *c == "--config").expect("--config") + 1];
    let config: Value = serde_norway::from_str(&std::fs::read_to_string(in_pod(config_path)).unwrap()).unwrap();
    assert_eq!(config, tollgate_config(&objects), "the container reads the ConfigMap's config");
    // Every absolute path in the config, mapped under the root.
    let env = path_overrides(&serde_json::to_value(&config).unwrap(), &in_pod);
    assert!(env.len() >= 6, "data_dir, accounts, refresh secret, Redis URL, policy, key and cert: {env:?}");
    let check = |args: &[&str]| {
        let mut cmd = Command::new(tollgate_bin());
        cmd.args(args).arg("--config").arg(in_pod(config_path)).env_remove("TOLLGATE_CONFIG");
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let o = cmd.output().unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "tollgate {args:?} on the ConfigMap's config: {out}");
        out
    };
    let out = check(&["check-config"]);
    assert!(out.contains(": ok"), "{out}");
    // Every pod reads the one access-token secret of the Secret made as documented, not one of its own.
    let access = str_of(&config["access_tokens"]["secret_file"], "access_tokens.secret_file");
    assert!(access.starts_with("/etc/tollgate/") && in_pod(access).is_file(), "{access}");
    assert!(!out.contains("access_tokens.secret_file"), "a per-replica access-token secret: {out}");
    // The Redis URL tollgate reads names the Redis Service of the manifests.
    let url = std::fs::read_to_string(in_pod(str_of(&config["state"]["redis_url_file"], "redis_url_file"))).unwrap();
    let redis = find(&objects, "Service", "tollgate-redis");
    let redis_port = seq(&redis["spec"]["ports"], "ports")[0]["port"].as_u64().unwrap();
    assert!(url.starts_with("redis://:") && url.ends_with(&format!("@tollgate-redis:{redis_port}/0")), "{url}");

    // 4. The registry's bundle, as docs/kubernetes.md writes it in a pod and copies it out.
    let cmds = commands(&doc);
    let exec_args = |what: &str| -> Vec<String> {
        let cmd = cmds
            .iter()
            .find(|c| c.contains("exec deploy/tollgate -- ") && c.contains(what))
            .unwrap_or_else(|| panic!("docs/kubernetes.md: no `kubectl exec deploy/tollgate -- {what}`"));
        let after = cmd.split(" -- ").nth(1).unwrap();
        after.split('>').next().unwrap().split_whitespace().map(str::to_string).collect()
    };
    let mut args = exec_args("tollgate registry-config");
    let at = args.iter().position(|a| a == "--config").expect("registry-config --config");
    assert_eq!(args[at + 1], config_path, "registry-config reads the pods' config");
    args.drain(at..at + 2);
    let args: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let printed = check(&args);
    assert!(printed.contains("rootcertbundle"), "{printed}");
    let bundle_path = exec_args("cat ").pop().unwrap();
    let bundle = std::fs::read_to_string(in_pod(&bundle_path)).unwrap_or_else(|e| panic!("{bundle_path}: {e}"));
    let cert = std::fs::read_to_string(work.path().join("signing.crt")).unwrap();
    // Compared without line breaks: the bundle may end its lines with CRLF.
    let flat = |s: &str| s.split_whitespace().collect::<String>();
    assert!(flat(&bundle).contains(&flat(&cert)), "the bundle holds the signing certificate:\n{bundle}\n{cert}");
    assert!(
        documented.iter().any(|d| d.kind == "ConfigMap" && d.files.contains_key("rootcertbundle.pem")),
        "docs/kubernetes.md makes the registry's ConfigMap from rootcertbundle.pem"
    );
}

#[test]
fn the_manifests_run_two_locked_down_replicas_whose_selectors_and_references_hold() {
    let objects = objects();
    let config = tollgate_config(&objects);
    let deployment = find(&objects, "Deployment", "tollgate");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert!(selects(&deployment["spec"]["selector"]["matchLabels"], labels), "the Deployment selects its pods");
    let pod = &template["spec"];
    let container = &seq(&pod["containers"], "containers")[0];
    assert_eq!(container["image"], "tollgate:latest");

    // Probes on the port the config listens on.
    let listen = listen_port(str_of(&config["server"]["listen"], "server.listen"));
    let metrics = listen_port(str_of(&config["server"]["metrics_listen"], "server.metrics_listen"));
    assert_eq!((listen, metrics), (5001, 9101));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(container_port(container, &get["port"]), listen, "{probe} on the listen port");
    }

    // Locked down: the image's user, nothing writable but the data folder, no privileges.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 65534:65534"), "the image runs as 65534");
    let pod_sc = &pod["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], Value::Bool(true));
    assert_eq!((pod_sc["runAsUser"].as_u64(), pod_sc["runAsGroup"].as_u64()), (Some(65534), Some(65534)));
    assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["enableServiceLinks"], Value::Bool(false), "no TOLLGATE_PORT-style variables");
    for workload in objects.iter().filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet") {
        let name = &workload["metadata"]["name"];
        let spec = &workload["spec"]["template"]["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], Value::Bool(true), "{name:?}");
        for c in seq(&spec["containers"], "containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name:?}");
            assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name:?}");
            assert_eq!(sc["capabilities"]["drop"], Value::Sequence(vec!["ALL".into()]), "{name:?}");
            assert!(c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping(), "{name:?}");
        }
    }
    let data_dir = str_of(&config["server"]["data_dir"], "server.data_dir");
    let data_mount = seq(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == data_dir)
        .unwrap_or_else(|| panic!("nothing mounted at server.data_dir {data_dir}"));
    let data_volume = seq(&pod["volumes"], "volumes").iter().find(|v| v["name"] == data_mount["name"]).unwrap();
    assert!(data_volume["emptyDir"].is_mapping(), "server.data_dir is an emptyDir: {data_volume:?}");
    assert!(
        pod["topologySpreadConstraints"].is_sequence() || pod["affinity"]["podAntiAffinity"].is_mapping(),
        "the replicas are spread over nodes"
    );
    for c in seq(&pod["topologySpreadConstraints"], "topologySpreadConstraints") {
        assert!(selects(&c["labelSelector"]["matchLabels"], labels), "{c:?}");
    }

    // Services select the pods and reach the right ports; the Ingress routes only /token's Service.
    let service_ports = |name: &str, pod_labels: &Value, c: &Value| -> Vec<u64> {
        let s = find(&objects, "Service", name);
        assert!(selects(&s["spec"]["selector"], pod_labels), "Service {name} selects its pods");
        seq(&s["spec"]["ports"], "ports")
            .iter()
            .map(|p| {
                let target = p.get("targetPort").unwrap_or(&p["port"]);
                assert_eq!(p["port"].as_u64(), Some(container_port(c, target)), "Service {name}: {p:?}");
                container_port(c, target)
            })
            .collect()
    };
    assert_eq!(service_ports("tollgate", labels, container), [listen]);
    assert_eq!(service_ports("tollgate-metrics", labels, container), [metrics]);
    let ingress = find(&objects, "Ingress", "tollgate");
    for rule in seq(&ingress["spec"]["rules"], "rules") {
        for p in seq(&rule["http"]["paths"], "paths") {
            let backend = &p["backend"]["service"];
            assert_eq!(backend["name"], "tollgate", "the Ingress routes only the Service tollgate");
            assert!(backend["port"]["name"] == "http" || backend["port"]["number"].as_u64() == Some(listen));
        }
    }

    // Redis: a password from the Secret, an append-only file on a claimed volume; its Service selects it.
    let redis = find(&objects, "StatefulSet", "tollgate-redis");
    let redis_labels = &redis["spec"]["template"]["metadata"]["labels"];
    let redis_c = &seq(&redis["spec"]["template"]["spec"]["containers"], "containers")[0];
    let redis_args: Vec<&str> = seq(&redis_c["args"], "args").iter().map(|a| str_of(a, "arg")).collect();
    assert_eq!(seq(&redis_c["command"], "command").len(), 2, "sh -c SCRIPT");
    let script = redis_args[0];
    // The password is config on redis-server's stdin, never an argument (`ps` shows arguments).
    assert!(!script.contains("--requirepass") && script.contains("requirepass $REDISCLI_AUTH"), "{script}");
    let env = seq(&redis_c["env"], "env").iter().find(|e| e["name"] == "REDISCLI_AUTH").expect("the password variable");
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "tollgate-redis");
    assert!(script.contains("--appendonly yes") && script.contains("--maxmemory-policy noeviction"), "{script}");
    // The script as the container runs it (with a port and directory of the test's), with the password from
    // the environment: Redis requires it, and no process has it in its argv.
    {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = tempfile::tempdir().unwrap();
        let pw = "kube-redis-password-123";
        let local =
            script.replace("--dir /data", &format!("--dir {} --port {port} --bind 127.0.0.1", data.path().display()));
        let mut child = crate::rig::command("sh").args(["-c", &local]).env("REDISCLI_AUTH", pw).spawn().unwrap();
        let ping = |auth: Option<&str>| {
            let mut cli = crate::rig::command("redis-cli");
            cli.args(["-p", &port.to_string(), "ping"]).env_remove("REDISCLI_AUTH");
            if let Some(a) = auth {
                cli.env("REDISCLI_AUTH", a);
            }
            crate::rig::run(cli, None, &[pw], std::time::Duration::from_secs(5)).stdout
        };
        crate::ops::wait_until("the manifest's redis answers", std::time::Duration::from_secs(20), || {
            ping(Some(pw)).contains("PONG")
        });
        assert!(ping(None).contains("NOAUTH"), "a password is required");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains(pw), "the password is in no argv");
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(seq(&redis["spec"]["volumeClaimTemplates"], "volumeClaimTemplates").len() == 1);
    let redis_port = service_ports("tollgate-redis", redis_labels, redis_c)[0];

    // The disruption budget and the network policies select what they mean to.
    let pdb = find(&objects, "PodDisruptionBudget", "tollgate");
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels), "the PDB covers tollgate's pods");
    let np = find(&objects, "NetworkPolicy", "tollgate");
    assert!(selects(&np["spec"]["podSelector"]["matchLabels"], labels));
    assert_eq!(np["spec"]["policyTypes"], Value::Sequence(vec!["Ingress".into(), "Egress".into()]));
    let mut open_ports = Vec::new();
    for rule in seq(&np["spec"]["ingress"], "ingress") {
        // Each port only from a chosen namespace (the ingress controller's, monitoring): with everyone
        // allowed to reach 5001, any pod could pick the X-Forwarded-For that trusted_proxies believes.
        let from = seq(&rule["from"], "ingress from");
        assert!(
            !from.is_empty() && from.iter().all(|f| f["namespaceSelector"]["matchLabels"].is_mapping()),
            "{rule:?}"
        );
        for p in seq(&rule["ports"], "ports") {
            open_ports.push(p["port"].as_u64().unwrap());
        }
    }
    open_ports.sort();
    assert_eq!(open_ports, [listen, metrics], "tollgate accepts only its two ports");
    let to_redis = seq(&np["spec"]["egress"], "egress")
        .iter()
        .find(|r| {
            r["to"]
                .as_sequence()
                .is_some_and(|to| to.iter().any(|t| selects(&t["podSelector"]["matchLabels"], redis_labels)))
        })
        .expect("tollgate may connect to Redis's pods");
    assert_eq!(to_redis["ports"][0]["port"].as_u64(), Some(redis_port));
    let redis_np = find(&objects, "NetworkPolicy", "tollgate-redis");
    assert!(selects(&redis_np["spec"]["podSelector"]["matchLabels"], redis_labels));
    let from = seq(&redis_np["spec"]["ingress"], "ingress");
    assert_eq!(from.len(), 1);
    let peers = seq(&from[0]["from"], "from");
    assert!(!peers.is_empty() && peers.iter().all(|p| selects(&p["podSelector"]["matchLabels"], labels)));
    assert_eq!(from[0]["ports"][0]["port"].as_u64(), Some(redis_port));

    // Every Secret and ConfigMap a workload or the Ingress refers to is in the manifests or made in the docs.
    let documented = documented_objects(&kube_doc());
    let mut refs: Vec<(&str, String)> = Vec::new();
    for workload in objects.iter().filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet") {
        let spec = &workload["spec"]["template"]["spec"];
        for v in spec["volumes"].as_sequence().into_iter().flatten() {
            if let Some(n) = v["secret"]["secretName"].as_str() {
                refs.push(("Secret", n.into()));
            }
            if let Some(n) = v["configMap"]["name"].as_str() {
                refs.push(("ConfigMap", n.into()));
            }
        }
        for c in seq(&spec["containers"], "containers") {
            for e in c["env"].as_sequence().into_iter().flatten() {
                if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    let key = str_of(&e["valueFrom"]["secretKeyRef"]["key"], "key");
                    let d = documented.iter().find(|d| d.name == n).unwrap_or_else(|| panic!("Secret {n}"));
                    assert!(d.files.contains_key(key), "Secret {n} is documented without the key {key}");
                    refs.push(("Secret", n.into()));
                }
            }
        }
    }
    for tls in seq(&ingress["spec"]["tls"], "tls") {
        refs.push(("Secret", str_of(&tls["secretName"], "secretName").into()));
    }
    assert!(refs.len() >= 7, "{refs:?}");
    for (kind, name) in refs {
        let defined = objects.iter().any(|o| o["kind"] == kind && o["metadata"]["name"] == name.as_str());
        let made = documented.iter().any(|d| d.kind == kind && d.name == name);
        assert!(defined || made, "{kind} {name} is neither in deploy/kubernetes/ nor created in docs/kubernetes.md");
    }
}

#[test]
fn no_secret_value_is_committed_in_any_kubernetes_secret() {
    let mut checked = 0;
    let mut stack = vec![root().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                    stack.push(p);
                }
                continue;
            }
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for doc in documents(&text).unwrap_or_default() {
                if doc["kind"] == "Secret" {
                    assert!(
                        doc.get("data").is_none() && doc.get("stringData").is_none(),
                        "{}: a Secret with its values; create it with kubectl instead (docs/kubernetes.md)",
                        p.display()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} YAML files found");
    // The manifests define no Secret at all: each is made by hand, as docs/kubernetes.md shows.
    assert!(!objects().iter().any(|o| o["kind"] == "Secret"), "deploy/kubernetes/ must not hold a Secret");
}
