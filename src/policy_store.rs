//! The compiled policy in force, and its hot reload: the rules files are watched (at most one look per
//! `policy.reload_interval`) and recompiled when they change. An invalid new version is reported and
//! counted, and the running one kept, so a typo in a rules file never opens or closes the registry.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::config::Settings;
use crate::policy::{Policy, PolicySource};
use crate::support::fs::FileStamp;

type Stamps = Vec<(PathBuf, Option<FileStamp>)>;

/// The compiled policy, reloaded when its files change. An invalid new version is reported and the running
/// one kept, so a typo in a rules file never opens or closes the registry.
pub struct PolicyStore {
    paths: Vec<PathBuf>,
    builtin: bool,
    interval: std::time::Duration,
    current: RwLock<Arc<Policy>>,
    check: Mutex<(Instant, Stamps)>,
}

impl PolicyStore {
    pub fn new(settings: &Settings) -> Result<PolicyStore, Vec<String>> {
        let builtin = settings.policy_builtin_example;
        let paths = settings.policy_paths.clone();
        let stamps = stamps(&paths);
        let policy = compile(&paths, builtin)?;
        Ok(PolicyStore {
            paths,
            builtin,
            interval: settings.policy_reload_interval,
            current: RwLock::new(Arc::new(policy)),
            check: Mutex::new((Instant::now(), stamps)),
        })
    }

    /// The policy in force, after a cheap check (at most once per interval) whether its files changed.
    pub fn get(&self) -> Arc<Policy> {
        if !self.builtin {
            self.maybe_reload();
        }
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn maybe_reload(&self) {
        let Ok(mut check) = self.check.try_lock() else { return };
        if check.0.elapsed() < self.interval {
            return;
        }
        check.0 = Instant::now();
        let now = stamps(&self.paths);
        if now == check.1 {
            return;
        }
        check.1 = now;
        drop(check);
        let _ = self.reload();
    }

    /// Recompile now (SIGHUP, or a changed file). Returns the errors when the new version is invalid.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        match compile(&self.paths, self.builtin) {
            Ok(p) => {
                metrics::counter!(crate::telemetry::POLICY_RELOADS, "result" => "ok").increment(1);
                tracing::info!(rules = p.rule_count(), "policy reloaded");
                if let Ok(mut cur) = self.current.write() {
                    *cur = Arc::new(p);
                }
                Ok(())
            }
            Err(errors) => {
                metrics::counter!(crate::telemetry::POLICY_RELOADS, "result" => "error").increment(1);
                tracing::error!(errors = ?errors, "policy invalid; keeping the previous version");
                Err(errors)
            }
        }
    }
}

fn compile(paths: &[PathBuf], builtin: bool) -> Result<Policy, Vec<String>> {
    let result = if builtin {
        Policy::compile(&[PolicySource {
            path: "builtin:default.yaml".into(),
            text: crate::policy::EXAMPLE_POLICY.into(),
        }])
    } else {
        Policy::load(paths)
    };
    result.map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
}

fn stamps(paths: &[PathBuf]) -> Stamps {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.retain(|e| matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")));
            entries.sort();
            out.push((p.clone(), None));
            out.extend(entries.into_iter().map(|e| {
                let s = FileStamp::of(&e);
                (e, s)
            }));
        } else {
            out.push((p.clone(), FileStamp::of(p)));
        }
    }
    out
}
