//! Claims: the JSON attributes a provider vouches for (OIDC and workload token claims, LDAP attributes,
//! account labels), and how rules and providers read one by path.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// A JSON object to look claims up in: identities keep theirs in a `BTreeMap`, tokens decode to a `Map`.
pub trait Claims {
    fn claim(&self, key: &str) -> Option<&serde_json::Value>;
}

impl Claims for BTreeMap<String, serde_json::Value> {
    fn claim(&self, key: &str) -> Option<&serde_json::Value> {
        self.get(key)
    }
}

impl Claims for serde_json::Map<String, serde_json::Value> {
    fn claim(&self, key: &str) -> Option<&serde_json::Value> {
        self.get(key)
    }
}

/// The claim at `path`: the whole path as one key first (claim names are often URLs with dots), then
/// every way of reading it as a dotted path into nested objects, where each step may itself contain dots
/// (`kubernetes.io.namespace` finds `{"kubernetes.io": {"namespace": ..}}`).
pub fn claim_at<'c, C: Claims + ?Sized>(claims: &'c C, path: &str) -> Option<&'c serde_json::Value> {
    if let Some(v) = claims.claim(path) {
        return Some(v);
    }
    path.match_indices('.').find_map(|(i, _)| {
        let inner = claims.claim(&path[..i])?.as_object()?;
        claim_at(inner, &path[i + 1..])
    })
}

/// The strings at a claim path: a string is one value, a list gives its strings, anything else none.
pub fn claim_strings<C: Claims + ?Sized>(claims: &C, path: &str) -> Vec<String> {
    match claim_at(claims, path) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// A scalar claim as text, so `42`, `true` and `"payments"` compare as written in YAML.
pub fn claim_text(v: &serde_json::Value) -> Option<Cow<'_, str>> {
    match v {
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}
