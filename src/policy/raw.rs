//! The rules file as written: serde structs that mirror the YAML, before any validation.
//!
//! Every struct denies unknown fields, because a misspelt condition (`grup:`) that is silently ignored
//! widens a rule. Values are kept as loose strings here; `compile.rs` checks them one by one so that
//! each problem gets its own message naming the field.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// One rule under `rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// REQUIRED. Unique across every loaded file; reported in decisions, logs and explanations.
    pub name: Option<String>,
    /// Optional free text for the reader.
    pub description: Option<String>,
    /// `allow` (default) or `deny`.
    pub effect: Option<String>,
    /// Conditions on the request; omitted means the rule applies to every identity. Kept as a YAML
    /// value so its errors can be reported under `match`.
    #[serde(rename = "match")]
    pub match_: Option<serde_norway::Value>,
    /// `repository` (default) or `registry`.
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    /// REQUIRED. Repository name patterns, or `[catalog]` for `type: registry`.
    pub resources: Option<StrList>,
    /// REQUIRED. `pull`, `push`, `delete`, or `"*"` for all three.
    pub actions: Option<StrList>,
}

/// The `match:` section of a rule. Every present field must hold; a list means "any of".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub account: Option<StrList>,
    pub not_account: Option<StrList>,
    pub account_regex: Option<String>,
    pub group: Option<StrList>,
    pub not_group: Option<StrList>,
    pub group_regex: Option<String>,
    pub provider: Option<StrList>,
    pub auth_method: Option<StrList>,
    pub anonymous: Option<bool>,
    pub claims: Option<BTreeMap<String, serde_norway::Value>>,
    pub client_network: Option<StrList>,
    pub service: Option<StrList>,
}

/// One test case under `tests:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTest {
    /// REQUIRED. Shown when the test fails.
    pub name: Option<String>,
    /// Omitted means the anonymous identity.
    pub identity: Option<RawIdentity>,
    /// Default: `password`, or `anonymous` when the username is empty.
    pub auth_method: Option<String>,
    /// Default: 127.0.0.1.
    pub client_ip: Option<String>,
    /// Default: `registry.test`.
    pub service: Option<String>,
    /// REQUIRED. One scope, as a client sends it.
    pub scope: Option<String>,
    /// REQUIRED. The exact set of granted actions; `[]` for nothing.
    pub expect: Option<StrList>,
}

/// The identity a test case runs as.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    /// Empty or omitted: anonymous.
    #[serde(default)]
    pub username: String,
    /// Default: empty.
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// A string or a list of strings; a single string is a list of one, so `account: alice` reads naturally.
#[derive(Debug, Default)]
pub(crate) struct StrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrList, E> {
                Ok(StrList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_any(V)
    }
}
