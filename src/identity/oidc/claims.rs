//! From the IdP's claims to an identity: the username claim, groups from a dotted claim path (with prefix
//! stripping and adding), and the claims kept for rules.

use crate::config::oidc::OidcSettings;
use crate::identity::{claim_strings, Failure, Identity};

/// The identity these claims describe.
pub(super) fn identity(
    cfg: &OidcSettings,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Identity, Failure> {
    let username_claim = cfg.username_claim.as_deref().unwrap_or("preferred_username");
    let username = match claims.get(username_claim) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(Failure::Refused(format!("the IdP's claims have no {username_claim:?} (username_claim)"))),
    };
    let path = cfg.groups_claim.as_deref().unwrap_or("groups");
    let groups =
        map_groups(&claim_strings(claims, path), cfg.strip_group_prefix.as_deref(), cfg.group_prefix.as_deref());
    // Claims for rules, without the token mechanics.
    let kept = claims
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "iss"
                    | "aud"
                    | "exp"
                    | "iat"
                    | "nbf"
                    | "nonce"
                    | "at_hash"
                    | "c_hash"
                    | "azp"
                    | "auth_time"
                    | "jti"
                    | "sid"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The IdP's subject names the account itself: a user deleted and created again gets another.
    let account = claims.get("sub").and_then(|s| s.as_str()).map(String::from);
    Ok(Identity { username, provider: cfg.name.clone(), groups, claims: kept, account, expires_at: None })
}

/// Strip a prefix (when present), add the provider prefix, drop empties and duplicates.
pub fn map_groups(raw: &[String], strip: Option<&str>, prefix: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in raw {
        let g = strip.and_then(|p| g.strip_prefix(p)).unwrap_or(g);
        if g.is_empty() {
            continue;
        }
        let g = format!("{}{g}", prefix.unwrap_or(""));
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn group_claim_paths_of_keycloak_gitlab_and_plain_idps() {
        let c = map(json!({
            "groups": ["/team/devs", "/ops"],
            "realm_access": {"roles": ["registry-admin", "offline_access"]},
            "resource_access": {"tollgate": {"roles": ["pusher"]}},
            "groups_direct": ["acme/payments", "acme"],
            "single": "one",
            "mixed": ["a", 1, null, "b"],
        }));
        let table: &[(&str, &[&str])] = &[
            ("groups", &["/team/devs", "/ops"]),
            ("realm_access.roles", &["registry-admin", "offline_access"]),
            ("resource_access.tollgate.roles", &["pusher"]),
            ("groups_direct", &["acme/payments", "acme"]),
            ("single", &["one"]),
            ("mixed", &["a", "b"]),
            ("missing", &[]),
            ("realm_access.missing", &[]),
            ("realm_access", &[]),
        ];
        for (path, want) in table {
            assert_eq!(claim_strings(&c, path), want.to_vec(), "{path}");
        }
    }

    #[test]
    fn keycloak_group_paths_are_stripped_and_prefixed() {
        let raw: Vec<String> = ["/team/devs", "/ops", "plain", "/", "/ops"].iter().map(|s| s.to_string()).collect();
        assert_eq!(map_groups(&raw, Some("/"), None), vec!["team/devs", "ops", "plain"]);
        assert_eq!(map_groups(&raw, Some("/team/"), Some("kc-")), vec!["kc-devs", "kc-/ops", "kc-plain", "kc-/"]);
    }
}
