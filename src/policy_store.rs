//! The compiled policy in force, and its hot reload: the rules files are watched (at most one look per
//! `policy.reload_interval`) and recompiled once they have changed and then stayed unchanged for
//! `policy.settle`, so a file caught half-way through being written is never in force. A new version is
//! applied only if it compiles AND its own `tests:` pass (exactly what `check-config` demands); otherwise it
//! is reported and counted, and the running one kept, so a typo in a rules file never opens or closes the
//! registry. A rules file replaced by a rename (as editors and config-management tools save) is whole the
//! moment it appears and is applied at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::policy::{Policy, PolicySource};
use crate::support::fs::FileStamp;

type Stamps = Vec<(PathBuf, Option<FileStamp>)>;

/// The compiled policy, reloaded when its files change. An invalid new version is reported and the running
/// one kept, so a typo in a rules file never opens or closes the registry.
pub struct PolicyStore {
    paths: Vec<PathBuf>,
    builtin: bool,
    interval: Duration,
    settle: Duration,
    current: RwLock<Arc<Policy>>,
    check: Mutex<Watch>,
}

/// What the watcher has seen of the rules files.
struct Watch {
    last_look: Instant,
    /// The files as they were when last compiled.
    applied: Stamps,
    /// Files seen changed, and since when they have looked like this.
    pending: Option<(Stamps, Instant)>,
}

impl PolicyStore {
    pub fn new(settings: &Settings) -> Result<PolicyStore, Vec<String>> {
        let builtin = settings.policy.builtin_example;
        let paths = settings.policy.paths.clone();
        let stamps = stamps(&paths);
        let policy = compile(&paths, builtin)?;
        Ok(PolicyStore {
            paths,
            builtin,
            interval: settings.policy.reload_interval,
            settle: settings.policy.settle,
            current: RwLock::new(Arc::new(policy)),
            check: Mutex::new(Watch { last_look: Instant::now(), applied: stamps, pending: None }),
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
        let Ok(mut watch) = self.check.try_lock() else { return };
        if watch.last_look.elapsed() < self.interval {
            return;
        }
        watch.last_look = Instant::now();
        let now = stamps(&self.paths);
        if now == watch.applied {
            watch.pending = None;
            return;
        }
        let whole = replaced_whole(&watch.applied, &now);
        match &watch.pending {
            _ if whole => {}
            Some((seen, since)) if *seen == now => {
                if since.elapsed() < self.settle {
                    return;
                }
            }
            // Changed (again), in place: apply it only once it has stopped changing.
            _ => {
                watch.pending = Some((now, Instant::now()));
                return;
            }
        }
        watch.pending = None;
        watch.applied = now;
        drop(watch);
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

/// Whether every file that changed between `before` and `now` was replaced by a rename or removed: then the
/// new version is whole and need not settle.
fn replaced_whole(before: &Stamps, now: &Stamps) -> bool {
    let old = |path: &PathBuf| before.iter().find(|(p, _)| p == path).map(|(_, s)| *s);
    now.iter().all(|(path, stamp)| match (old(path), stamp) {
        (Some(b), s) if b == *s => true,
        (Some(Some(b)), Some(s)) => s.replaced(&b),
        (Some(Some(_)), None) => true,
        _ => false,
    })
}

/// From how many rules a load hands the parse's freed memory back (about 0.5 KB per rule would stay resident).
const GIVE_BACK_FROM_RULES: usize = 1_000;

/// Compile the rules and run their own tests: a policy whose tests fail is as unusable as one that does
/// not compile (it grants what its author said it must not).
fn compile(paths: &[PathBuf], builtin: bool) -> Result<Policy, Vec<String>> {
    let (policy, errors) = if builtin {
        let source = PolicySource { path: "builtin:default.yaml".into(), text: crate::policy::EXAMPLE_POLICY.into() };
        match Policy::compile(&[source]) {
            Ok(p) => (Some(p), Vec::new()),
            Err(e) => (None, e),
        }
    } else {
        Policy::load_partial(paths)
    };
    // Reading a large rules file allocates several times what its compiled rules keep, and the freed pages
    // would stay resident among them: hand them back (rules memory, BENCHMARKS.md section 11). A small
    // file leaves too little to be worth walking the allocator's lists on a reload.
    if policy.as_ref().is_some_and(|p| p.rule_count() >= GIVE_BACK_FROM_RULES) {
        crate::support::memory::give_back();
    }
    let mut out: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    // The tests run even when some files have errors: those of the files that compile, with their rules.
    if let Some(p) = &policy {
        let report = p.run_tests();
        if report.failed() > 0 {
            out.push(if errors.is_empty() {
                format!("the policy's own tests fail:\n{report}")
            } else {
                format!("the tests of the files without errors fail (run with only their rules):\n{report}")
            });
        }
    }
    match policy {
        Some(p) if out.is_empty() => Ok(p),
        _ => Err(out),
    }
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
