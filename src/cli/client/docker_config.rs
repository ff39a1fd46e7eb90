//! Docker's `config.json` (and containers' `auth.json`, which has the same `auths`): where it is, which
//! credential helper it names for a registry, handing a token to that helper, and writing a login into
//! `auths` so that docker, podman, skopeo and containerd-based tools all pick it up.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::{read_json, write_json_private};

/// The username docker's credential helpers use to say that the secret is an identity token (a refresh
/// token for the OAuth2 refresh flow) rather than a password.
pub const TOKEN_USER: &str = "<token>";

/// docker's `config.json`: in `dir`, else in $DOCKER_CONFIG, else in ~/.docker.
pub fn config_file(dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match (dir, std::env::var_os("DOCKER_CONFIG")) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(d)) => PathBuf::from(d),
        (None, None) => {
            PathBuf::from(std::env::var_os("HOME").ok_or("HOME is not set; pass --docker-config")?).join(".docker")
        }
    };
    Ok(dir.join("config.json"))
}

/// The config at `path` as far as it can be read: a missing or broken file reads as `{}` (docker then
/// uses no credential helper either).
pub fn read_leniently(path: &Path) -> serde_json::Value {
    read_json(path).ok().flatten().unwrap_or_else(|| serde_json::json!({}))
}

/// The credential helper docker's config names for `host` (`credHelpers`, else `credsStore`), if any.
pub fn helper_for(config: &serde_json::Value, host: &str) -> Option<String> {
    let named = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    config
        .get("credHelpers")
        .and_then(|h| h.get(host))
        .and_then(named)
        .or_else(|| config.get("credsStore").and_then(named))
}

/// Hand an identity token to `docker-credential-NAME store`, as docker itself would.
pub fn store_with_helper(name: &str, host: &str, token: &str) -> Result<(), String> {
    use std::io::Write as _;
    let program = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&program)
        .arg("store")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("{program} (named by docker's config.json): {e}; install it or remove it from the config")
        })?;
    let doc = serde_json::json!({"ServerURL": host, "Username": TOKEN_USER, "Secret": token});
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(doc.to_string().as_bytes())
        .map_err(|e| format!("{program}: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} store failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Put `auths[host] = {auth: base64("user:"), identitytoken}` into the JSON file at `path`, keeping everything
/// else in it. The file holds a credential: it is written owner-only.
pub fn write_auth_entry(path: &Path, host: &str, username: &str, identity_token: &str) -> Result<(), String> {
    let mut doc: serde_json::Value = read_json(path)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = doc.as_object_mut().ok_or_else(|| format!("{}: not a JSON object", path.display()))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| format!("{}: `auths` is not an object", path.display()))?;
    auths.insert(
        host.to_string(),
        serde_json::json!({
            "auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:")),
            "identitytoken": identity_token,
        }),
    );
    write_json_private(path, &doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_entry_is_added_next_to_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"other:1":{"auth":"eDp5"}},"credsStore":""}"#).unwrap();
        write_auth_entry(&path, "reg:5000", "alice", "tgr_x").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["auths"]["other:1"]["auth"], "eDp5");
        assert_eq!(v["auths"]["reg:5000"]["auth"], "YWxpY2U6");
        assert_eq!(v["auths"]["reg:5000"]["identitytoken"], "tgr_x");
        assert_eq!(v["credsStore"], "");
    }

    #[test]
    fn a_host_gets_its_own_helper_else_the_store() {
        let config = serde_json::json!({"credHelpers": {"a:1": "tollgate", "b:1": ""}, "credsStore": "desktop"});
        assert_eq!(helper_for(&config, "a:1").as_deref(), Some("tollgate"));
        assert_eq!(helper_for(&config, "b:1").as_deref(), Some("desktop"));
        assert_eq!(helper_for(&serde_json::json!({"credsStore": ""}), "a:1"), None);
    }
}
