//! `tollgate check-config --probe`: after the offline checks, contact every provider and the shared store
//! with the real config, and say in words what each answered. One line per check; any failure fails the
//! command. Nothing is written anywhere (the Redis epoch key is read, never made).
//!
//! The providers are built here from the settings, as `serve` builds them, but without the identity cache
//! and the metrics wrapper around them: a check must reach the directory or IdP, never a cached answer.

use serde::Serialize;

use crate::config::state::StoreKind;
use crate::config::{ProviderSettings, Settings};
use crate::identity::ldap::LdapProvider;
use crate::identity::oidc::OidcProvider;
use crate::identity::workload::WorkloadProvider;
use crate::identity::{Check, Verdict};
use crate::store::redis::{Redis, Step};

/// One line of the probe: which part of the config, and the check.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// "ldap corp", "oidc keycloak", "workload github", "redis".
    pub subject: String,
    #[serde(flatten)]
    pub check: Check,
}

/// Run every check of `settings`, in the order of the config: the providers, then the store.
pub fn probe(settings: &Settings) -> Result<Vec<Line>, String> {
    super::block_on(probe_all(settings))
}

async fn probe_all(settings: &Settings) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut add = |subject: String, checks: Vec<Check>| {
        lines.extend(checks.into_iter().map(|check| Line { subject: subject.clone(), check }));
    };
    for p in &settings.providers {
        match p {
            ProviderSettings::Static(_) => {}
            ProviderSettings::Ldap(l) => {
                let subject = format!("ldap {}", l.name);
                match LdapProvider::new(l) {
                    Ok(provider) => add(subject, provider.check().await),
                    Err(e) => add(subject, vec![Check::fail("set-up", e.join("; "))]),
                }
            }
            ProviderSettings::Oidc(o) => {
                let subject = format!("oidc {}", o.name);
                let sessions = crate::store::Stores::local(settings).sessions;
                match OidcProvider::new(o.clone(), sessions, settings.cache.ttl) {
                    Ok(provider) => add(subject, provider.check().await),
                    Err(e) => add(subject, vec![Check::fail("set-up", e)]),
                }
            }
            ProviderSettings::Workload(w) => {
                let subject = format!("workload {}", w.name);
                match WorkloadProvider::new(w) {
                    Ok(provider) => add(subject, provider.check().await),
                    // A jwks_file that cannot be read stops the provider before any fetch.
                    Err(e) => add(subject, vec![Check::fail("keys", e)]),
                }
            }
        }
    }
    if settings.state.store == StoreKind::Redis {
        add("redis".into(), redis_checks(settings).await);
    }
    lines
}

/// The store's checks: connect, AUTH, PING, `maxmemory-policy` and the epoch key.
async fn redis_checks(settings: &Settings) -> Vec<Check> {
    let redis = match Redis::open(&settings.state) {
        Ok(r) => r,
        Err(e) => return vec![Check::fail("set-up", e)],
    };
    let facts = match redis.diagnose().await {
        Ok(f) => f,
        Err((step, why)) => {
            let locate = if settings.state.cluster.is_some() {
                "ask the cluster which node serves tollgate's slot"
            } else {
                "ask the sentinels for the master"
            };
            let steps = [
                (Step::Locate, locate),
                (Step::Connect, "connect"),
                (Step::Auth, "AUTH (the password of state.redis_url_file)"),
                (Step::Ping, "PING"),
                (Step::Epoch, "read the data-loss epoch key"),
            ];
            let mut out = Vec::new();
            for (s, what) in steps {
                if s == Step::Locate && settings.state.sentinel.is_none() && settings.state.cluster.is_none() {
                    continue;
                }
                if s == step {
                    out.push(Check::fail(what, why));
                    break;
                }
                out.push(Check::pass(what, "ok"));
            }
            return out;
        }
    };
    let mut out = Vec::new();
    if let Some(s) = &settings.state.sentinel {
        out.push(Check::pass(
            "ask the sentinels for the master",
            format!("master {:?} is at {}", s.master_name, facts.address),
        ));
    }
    if settings.state.cluster.is_some() {
        out.push(Check::pass(
            "ask the cluster which node serves tollgate's slot",
            format!("{} (every key under the tag {{{}}})", facts.address, settings.state.key_prefix),
        ));
    }
    out.extend([
        Check::pass("connect", format!("{} answers", facts.address)),
        Check::pass("AUTH (the password of state.redis_url_file)", "accepted"),
        Check::pass("PING", "PONG"),
    ]);
    out.push(match facts.maxmemory {
        Ok((p, _)) if p == "noeviction" => Check::pass("maxmemory-policy", "noeviction: no key is ever evicted"),
        Ok((p, 0)) => Check::warn(
            "maxmemory-policy",
            format!(
                "{p} with no maxmemory: nothing is evicted today, but once maxmemory is set Redis may evict \
                 revocations and tollgate refuses refresh tokens; set maxmemory-policy noeviction"
            ),
        ),
        Ok((p, max)) => Check::fail(
            "maxmemory-policy",
            format!(
                "{p} with maxmemory {max} bytes: Redis may evict tollgate's keys when full, revocations among them \
                 (a revoked refresh token would work again), so tollgate refuses refresh tokens (503) until it is \
                 set to noeviction: CONFIG SET maxmemory-policy noeviction, and in redis.conf"
            ),
        ),
        Err(e) => Check::warn("maxmemory-policy", format!("{e}; make sure it is noeviction")),
    });
    out.push(match facts.replication {
        Ok((role, _)) if role != "master" => Check::fail(
            "replication",
            format!("{} is a {role}, not a master: tollgate cannot write to it", facts.address),
        ),
        Ok((_, n)) if n < facts.min_replicas_acked => Check::fail(
            "replication",
            format!(
                "{n} replicas connected, fewer than state.min_replicas_acked ({}): every revocation would fail",
                facts.min_replicas_acked
            ),
        ),
        Ok((_, 0)) => Check::warn(
            "replication",
            "no replica: this Redis is a single point of failure, and a revocation lives on one server only",
        ),
        Ok((_, n)) if facts.min_replicas_acked == 0 => Check::warn(
            "replication",
            format!(
                "{n} replicas, but state.min_replicas_acked is 0: a failover right after a revocation can lose it; \
                 set it to 1"
            ),
        ),
        Ok((_, n)) => Check::pass(
            "replication",
            format!("{n} replicas connected; revocations wait for {}", facts.min_replicas_acked),
        ),
        Err(e) => Check::warn("replication", e),
    });
    out.push(Check::pass(
        format!("read the data-loss epoch key {}", facts.epoch_key),
        match facts.epoch {
            Some(_) => "readable, and set".to_string(),
            None => "readable, not set yet: the first refresh token issued makes it".to_string(),
        },
    ));
    out
}

/// The probe lines as the text report prints them, and whether any failed.
pub fn print_text(lines: &[Line]) {
    for l in lines {
        let mark = match l.check.verdict {
            Verdict::Pass => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        println!("{mark} {}: {}: {}", l.subject, l.check.what, l.check.detail);
    }
}

/// How many lines failed and warned.
pub fn counts(lines: &[Line]) -> (usize, usize) {
    let n = |v: Verdict| lines.iter().filter(|l| l.check.verdict == v).count();
    (n(Verdict::Fail), n(Verdict::Warn))
}
