//! `tollgate kubelet-credential-provider`: a kubelet image credential provider (the exec plugin protocol,
//! `credentialprovider.kubelet.k8s.io`), so that pods pull with their own service-account token and no
//! imagePullSecret.
//!
//! The kubelet runs the plugin once per image it has no cached credentials for, writes a
//! `CredentialProviderRequest` on its standard input, and reads a `CredentialProviderResponse` from its
//! standard output. With the service-account token feature (KEP-4412; the provider's `tokenAttributes` in
//! the kubelet's CredentialProviderConfig), the request carries the pod's service-account token, minted for
//! the audience the config names. The plugin answers with that token as the registry password: tollgate
//! verifies it as a workload identity (`type: workload`, keys from the cluster's JWKS) and the rules decide
//! what the pod's service account may pull.
//!
//! Nothing here talks to the network or verifies the token: the registry's token server does that. The
//! token's `exp` is read only to tell the kubelet how long it may reuse the answer.

use serde::{Deserialize, Serialize};

use crate::cli::stdin::{self, Part};

/// The API versions of the exec plugin protocol this plugin answers (the answer uses the request's).
const API_VERSIONS: [&str; 3] = [
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

/// How long before the token's `exp` the kubelet must stop reusing the answer.
const MARGIN_SECS: u64 = 60;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    api_version: Option<String>,
    kind: Option<String>,
    image: Option<String>,
    service_account_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    api_version: String,
    kind: &'static str,
    cache_key_type: &'static str,
    cache_duration: String,
    auth: std::collections::BTreeMap<String, AuthConfig>,
}

#[derive(Serialize)]
struct AuthConfig {
    username: String,
    password: String,
}

/// Read the kubelet's request from stdin and print the answer on stdout.
pub fn run(username: &str) -> Result<(), String> {
    let input = stdin::read("the CredentialProviderRequest on standard input", Part::All)?;
    let answer = respond(&input, username, crate::support::time::unix_now())?;
    println!("{answer}");
    Ok(())
}

/// The response to one request, as JSON.
pub fn respond(input: &str, username: &str, now: u64) -> Result<String, String> {
    let req: Request = serde_json::from_str(input).map_err(|e| format!("not a CredentialProviderRequest: {e}"))?;
    let api_version = req.api_version.unwrap_or_default();
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return Err(format!(
            "apiVersion {api_version:?} is not supported; set the provider's apiVersion to credentialprovider.kubelet.k8s.io/v1"
        ));
    }
    if req.kind.as_deref() != Some("CredentialProviderRequest") {
        return Err(format!("kind {:?} is not CredentialProviderRequest", req.kind.unwrap_or_default()));
    }
    let image = req.image.filter(|i| !i.is_empty()).ok_or("the request names no image")?;
    let token = req.service_account_token.filter(|t| !t.is_empty()).ok_or(
        "the request carries no serviceAccountToken: give this provider tokenAttributes \
         (serviceAccountTokenAudience: the audience of tollgate's workload provider) in the kubelet's \
         CredentialProviderConfig, on Kubernetes 1.33 or later",
    )?;
    let exp = token_exp(&token).ok_or("the serviceAccountToken is not a JWT with an exp claim")?;
    let remaining = exp.saturating_sub(now).saturating_sub(MARGIN_SECS);
    if remaining == 0 {
        return Err(format!("the serviceAccountToken expires in less than {MARGIN_SECS}s"));
    }
    let mut auth = std::collections::BTreeMap::new();
    auth.insert(registry_host(&image).to_string(), AuthConfig { username: username.to_string(), password: token });
    let response = Response {
        api_version,
        kind: "CredentialProviderResponse",
        cache_key_type: "Registry",
        cache_duration: format!("{remaining}s"),
        auth,
    };
    serde_json::to_string(&response).map_err(|e| format!("encoding the response: {e}"))
}

/// The registry host of an image reference: the first path component when it looks like a host (has a `.`
/// or a `:`, or is `localhost`), else Docker Hub.
pub fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The `exp` of a JWT, read without verifying it.
fn token_exp(token: &str) -> Option<u64> {
    super::unverified_claims(token)?.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_of_image_references() {
        for (image, host) in [
            ("registry.example.com/team/app:1.0", "registry.example.com"),
            ("registry.example.com:5000/app@sha256:abc", "registry.example.com:5000"),
            ("127.0.0.1:5000/a/b", "127.0.0.1:5000"),
            ("localhost/app", "localhost"),
            ("library/nginx", "docker.io"),
            ("nginx", "docker.io"),
        ] {
            assert_eq!(registry_host(image), host, "{image}");
        }
    }

    #[test]
    fn refusals_say_what_is_missing() {
        let req = |extra: &str| {
            format!(
                r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"r.example/a"{extra}}}"#
            )
        };
        assert!(respond(&req(""), "kubelet", 0).unwrap_err().contains("no serviceAccountToken"));
        assert!(respond(&req(r#","serviceAccountToken":"x.y.z""#), "kubelet", 0).unwrap_err().contains("not a JWT"));
        let bad_version = r#"{"apiVersion":"v9","kind":"CredentialProviderRequest","image":"a"}"#;
        assert!(respond(bad_version, "kubelet", 0).unwrap_err().contains("apiVersion \"v9\""));
        assert!(respond("{", "kubelet", 0).unwrap_err().contains("not a CredentialProviderRequest"));
    }
}
