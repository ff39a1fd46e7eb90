//! The static accounts provider: people and robots in one YAML file, with bcrypt or argon2 hashes only.
//!
//! The file is re-read when it changes (looked at every `RECHECK_FILE`: one `stat`): replaced by a rename
//! (as `tollgate robot add` and editors write it) at once, rewritten in place once it has stopped changing
//! for the settle time, so a version caught half-way through being written is never in force. A file that no longer validates is reported and the last
//! good version stays in force. Unknown usernames are checked against a dummy hash of the kind and cost of
//! the most expensive real one, and every check lasts at least as long as that one (`hashing`), so
//! response time reveals neither which usernames exist nor which hash an account has.
//!
//! Here is the provider; `file.rs` reads and checks an accounts file, `demo.rs` keeps the embedded demo's
//! published hashes out of every other config, and the hashes themselves are `identity::hashing`'s.

mod demo;
mod file;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use secrecy::{ExposeSecret as _, SecretString};

use super::hashing::{self, hash_kind};
use super::{Failure, Identity, Outcome, Provider};
use crate::config::accounts::{AccountEntry, AccountsFile};
use crate::config::providers::StaticSettings;
use crate::support::fs::{FileStamp, Settle};
use crate::support::time::unix_now;
use crate::support::BoxFuture;
pub use demo::{demo_hash_problems, demo_password_hashes};
use file::parse_checked;
pub use file::{parse_accounts, validate_username};

#[derive(Debug, Clone)]
struct Account {
    entry: AccountEntry,
    expires_at: Option<u64>,
    /// Until when (unix seconds) the previous secret's hash is accepted, after a rotation with grace.
    previous_until: Option<u64>,
}

impl Account {
    fn identity(&self, provider: &str) -> Identity {
        let mut claims = BTreeMap::new();
        claims.insert("robot".to_string(), serde_json::Value::Bool(self.entry.robot));
        Identity {
            username: self.entry.username.clone(),
            provider: provider.to_string(),
            groups: self.entry.groups.clone(),
            claims,
            account: Some(self.instance()),
            expires_at: None,
        }
    }

    /// This account instance: the same name with another password hash (deleted and created again, or
    /// given a new secret) is another instance.
    fn instance(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(self.entry.username.as_bytes());
        ctx.update(&[0]);
        ctx.update(self.entry.password_hash.as_bytes());
        ctx.finish().as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Why the account may not log in now, if it may not.
    fn refusal(&self) -> Option<String> {
        if self.entry.disabled {
            return Some("account is disabled".into());
        }
        match self.expires_at {
            Some(t) if unix_now() >= t => Some("account has expired".into()),
            _ => None,
        }
    }
}

struct State {
    stamp: Option<FileStamp>,
    /// The cost of the most expensive hash (the dummy's): its checks set the timing floor.
    max_cost: f64,
    accounts: HashMap<String, Arc<Account>>,
    dummy: String,
    /// The last end of a rotation's grace among the accounts (unix seconds): until then a wrong password
    /// for such an account costs two checks, and so every login lasts two floors.
    rotating_until: Option<u64>,
}

/// See [`State::floors`].
const ROTATION_FLOORS: f64 = 2.25;

impl State {
    /// How many floors every login lasts now: one, or while any account is in a rotation's grace (a wrong
    /// password for it is checked against both secrets) two and a quarter: two checks each last about a
    /// floor, half of the time a little more, and the quarter covers that and the second wait for a core.
    /// So neither a robot in rotation nor a wrong password for it can be told from timing.
    fn floors(&self) -> f64 {
        match self.rotating_until {
            Some(until) if unix_now() < until => ROTATION_FLOORS,
            _ => 1.0,
        }
    }
}

/// Where the accounts come from.
pub use crate::config::providers::AccountsSource as Source;

/// The provider.
pub struct StaticProvider {
    name: String,
    source: Source,
    state: RwLock<Arc<State>>,
    generation: AtomicU64,
    /// When the file was last looked at, in nanoseconds since `created` (see `RECHECK_FILE`).
    checked_at: AtomicU64,
    created: Instant,
    /// The least time a password check lasts (see `hashing::Floor`).
    floor: hashing::Floor,
    /// Whether the published demo hashes may be used: only by the embedded demo config.
    allow_demo: bool,
    /// A file rewritten in place is read once it has stopped changing for `settle` (`support::fs::Settle`).
    settling: Mutex<Settle>,
    settle: Duration,
}

/// How long a file rewritten in place must stay unchanged before it is read, unless set
/// ([`StaticProvider::settling_for`]; the server uses `policy.settle`).
pub const SETTLE: Duration = Duration::from_secs(2);

/// How often, at most, requests look at the accounts file for a change. Every request used to, so a
/// disabled account stopped on the next request; one `statx` per token request was then the largest
/// cost of a warm login after the signature (BENCHMARKS.md, section 5). A tenth of a second keeps
/// "disable the robot, it stops now" true for anyone editing the file.
pub const RECHECK_FILE: Duration = Duration::from_millis(100);

fn build_state(file: AccountsFile, stamp: Option<FileStamp>) -> State {
    let accounts: Vec<Account> = file
        .accounts
        .into_iter()
        .filter_map(|entry| {
            hash_kind(&entry.password_hash).ok()?;
            let unix = |t: &Option<String>| {
                t.as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
            };
            let (expires_at, previous_until) = (unix(&entry.expires_at), unix(&entry.previous_valid_until));
            Some(Account { entry, expires_at, previous_until })
        })
        .collect();
    // The dummy hash of unknown users has the algorithm and cost of the most expensive real one, so that
    // checking an unknown user costs what checking the slowest account does.
    let dearest = accounts
        .iter()
        .map(|a| a.entry.password_hash.as_str())
        .max_by(|a, b| hashing::cost(a).total_cmp(&hashing::cost(b)));
    let dummy = hashing::dummy_like(dearest);
    let max_cost = hashing::cost(&dummy);
    let rotating_until =
        accounts.iter().filter(|a| a.entry.previous_password_hash.is_some()).filter_map(|a| a.previous_until).max();
    let accounts = accounts.into_iter().map(|a| (a.entry.username.clone(), Arc::new(a))).collect();
    State { stamp, max_cost, accounts, dummy, rotating_until }
}

impl StaticProvider {
    /// Load the accounts; errors name the file, account and field. Unless `allow_demo` (the embedded demo
    /// config), an account with a published demo hash is an error.
    pub fn new(cfg: &StaticSettings, allow_demo: bool) -> Result<StaticProvider, Vec<String>> {
        let (name, source) = (cfg.name.as_str(), cfg.source.clone());
        let (file, stamp) = match &source {
            Source::File(path) => {
                let stamp = FileStamp::of(path);
                let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
                (parse_checked(&path.display().to_string(), &text, allow_demo)?, stamp)
            }
            Source::Inline(entries) => {
                let text = serde_norway::to_string(&AccountsFile { accounts: entries.clone() })
                    .map_err(|e| vec![e.to_string()])?;
                (parse_checked(&format!("providers.{name}.accounts"), &text, allow_demo)?, None)
            }
        };
        Ok(StaticProvider {
            name: name.to_string(),
            source,
            state: RwLock::new(Arc::new(build_state(file, stamp))),
            generation: AtomicU64::new(1),
            checked_at: AtomicU64::new(0),
            created: Instant::now(),
            floor: hashing::Floor::default(),
            allow_demo,
            settling: Mutex::new(Settle::default()),
            settle: SETTLE,
        })
    }

    /// Read a file rewritten in place only once it has stayed unchanged for `settle`.
    pub fn settling_for(mut self, settle: Duration) -> StaticProvider {
        self.settle = settle;
        self
    }

    /// The current accounts, re-read first if the file changed.
    fn state(&self) -> Arc<State> {
        let current = match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let Source::File(path) = &self.source else { return current };
        let now = self.created.elapsed().as_nanos() as u64;
        let last = self.checked_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RECHECK_FILE.as_nanos() as u64
            || self.checked_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return current; // looked at very recently, or another request is looking right now
        }
        let stamp = FileStamp::of(path);
        if stamp == current.stamp {
            return current;
        }
        // Caught half-way through an in-place write, the file may parse and say less than it will (an
        // account without its `disabled: true`): it is read only once it stops changing, or at once when a
        // rename replaced it whole.
        let ready = match self.settling.lock() {
            Ok(mut s) => s.ready(&[current.stamp], &[stamp], self.settle),
            Err(p) => p.into_inner().ready(&[current.stamp], &[stamp], self.settle),
        };
        if !ready {
            return current;
        }
        let loaded = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: {e}", path.display())])
            .and_then(|text| parse_checked(&path.display().to_string(), &text, self.allow_demo));
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if guard.stamp != current.stamp {
            return guard.clone(); // another request reloaded meanwhile
        }
        match loaded {
            Ok(file) => {
                *guard = Arc::new(build_state(file, stamp));
                self.generation.fetch_add(1, Ordering::SeqCst);
                tracing::info!(provider = %self.name, file = %path.display(), accounts = guard.accounts.len(), "accounts reloaded");
            }
            Err(errors) => {
                // Keep serving the last good accounts; remember the stamp so the error is logged once.
                tracing::error!(provider = %self.name, errors = ?errors, "accounts file invalid; keeping the previous version");
                let old = guard.clone();
                *guard = Arc::new(State {
                    stamp,
                    max_cost: old.max_cost,
                    accounts: old.accounts.clone(),
                    dummy: old.dummy.clone(),
                    rotating_until: old.rotating_until,
                });
            }
        }
        guard.clone()
    }

    pub fn account_count(&self) -> usize {
        self.state().accounts.len()
    }

    /// The password check behind `authenticate`.
    async fn check_password(&self, username: &str, password: &SecretString) -> Result<Outcome, Failure> {
        let state = self.state();
        let account = state.accounts.get(username).cloned();
        // A name nobody has costs no hash: the answer waits what a check of the dearest hash takes, so it
        // comes as late as any other. Only until that time has been measured is the dummy checked.
        let floors = state.floors();
        if account.is_none() && self.floor.pad(Duration::ZERO, floors).await {
            return Ok(Outcome::NotMine);
        }
        let hash = match &account {
            Some(a) => a.entry.password_hash.clone(),
            None => state.dummy.clone(),
        };
        let dearest = hashing::cost(&hash) >= state.max_cost;
        let pw = password.expose_secret().to_owned();
        // During a rotation's grace the secret being replaced still works, until the grace ends: the
        // identity carries that end, so no cache entry outlives it. Both secrets are checked, always and in
        // one go, so neither which one matched nor whether any did shows in the time taken.
        let grace = account.as_ref().and_then(|a| match (&a.entry.previous_password_hash, a.previous_until) {
            (Some(old), Some(until)) if unix_now() < until => Some((old.clone(), until)),
            _ => None,
        });
        let mut hashes = vec![hash];
        hashes.extend(grace.as_ref().map(|(old, _)| old.clone()));
        let started = Instant::now();
        let (matched, took) = hashing::verify_each(hashes, pw).await.map_err(Failure::Busy)?;
        let ok = matched.first().copied().unwrap_or(false);
        if dearest && matched.len() == 1 {
            self.floor.observe(took);
        }
        let old_until = grace.filter(|_| !ok && matched.get(1).copied().unwrap_or(false)).map(|(_, until)| until);
        // Every login lasts the same: as many floors as the costliest path has checks, counted from before the
        // wait for a core (a second check waits again).
        self.floor.pad(started.elapsed(), floors).await;
        match account {
            None => Ok(Outcome::NotMine),
            Some(_) if !ok && old_until.is_none() => Err(Failure::refused("wrong password")),
            Some(a) => match a.refusal() {
                Some(why) => Err(Failure::Refused(why)),
                None => {
                    let mut identity = a.identity(&self.name);
                    identity.expires_at = old_until;
                    Ok(Outcome::Authenticated(Arc::new(identity)))
                }
            },
        }
    }
}

impl Provider for StaticProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticate<'a>(
        &'a self,
        username: &'a str,
        password: &'a SecretString,
    ) -> BoxFuture<'a, Result<Outcome, Failure>> {
        Box::pin(self.check_password(username, password))
    }

    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Identity, Failure>> {
        Box::pin(async move {
            let state = self.state();
            match state.accounts.get(username) {
                None => Err(Failure::refused("account no longer exists")),
                Some(a) => match a.refusal() {
                    Some(why) => Err(Failure::Refused(why)),
                    None => Ok(a.identity(&self.name)),
                },
            }
        })
    }

    /// An accounts file that cannot be read (deleted, unmounted, wrong permissions) makes the provider
    /// unready: it keeps serving the last good accounts, but the operator must know.
    fn probe(&self) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(async move {
            match &self.source {
                Source::File(path) => std::fs::File::open(path)
                    .map(|_| ())
                    .map_err(|e| Failure::Unavailable(format!("accounts file {}: {e}", path.display()))),
                Source::Inline(_) => Ok(()),
            }
        })
    }

    fn generation(&self) -> u64 {
        // Checking the file here makes a disabled account stop at once even when the cache would vouch for it.
        let _ = self.state();
        self.generation.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(username: &str, password: &str) -> AccountEntry {
        AccountEntry {
            groups: vec!["devs".into()],
            ..AccountEntry::with_hash(username, &hashing::hash_password(password).unwrap())
        }
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[tokio::test]
    async fn outcomes_for_good_wrong_unknown_disabled_and_expired_accounts() {
        let mut disabled = entry("off", "pw");
        disabled.disabled = true;
        let mut expired = entry("old", "pw");
        expired.expires_at = Some("2001-01-01T00:00:00Z".into());
        let bcrypt_user = AccountEntry { password_hash: bcrypt::hash("bpw", 4).unwrap(), ..entry("b", "") };
        let source = Source::Inline(vec![entry("alice", "pw"), disabled, expired, bcrypt_user]);
        let p = StaticProvider::new(&StaticSettings { name: "local".into(), source }, false).unwrap();
        match p.authenticate("alice", &secret("pw")).await.unwrap() {
            Outcome::Authenticated(id) => {
                assert_eq!(id.username, "alice");
                assert_eq!(id.groups, vec!["devs"]);
                assert_eq!(id.provider, "local");
            }
            o => panic!("{o:?}"),
        }
        assert!(matches!(p.authenticate("b", &secret("bpw")).await.unwrap(), Outcome::Authenticated(_)));
        assert!(matches!(p.authenticate("alice", &secret("nope")).await, Err(Failure::Refused(_))));
        assert!(matches!(p.authenticate("alice", &secret("")).await, Err(Failure::Refused(_))));
        assert!(matches!(p.authenticate("nobody", &secret("pw")).await.unwrap(), Outcome::NotMine));
        assert!(
            matches!(p.authenticate("off", &secret("pw")).await, Err(Failure::Refused(r)) if r.contains("disabled"))
        );
        assert!(
            matches!(p.authenticate("old", &secret("pw")).await, Err(Failure::Refused(r)) if r.contains("expired"))
        );
        assert!(matches!(p.recheck("off").await, Err(Failure::Refused(_))));
        assert!(matches!(p.recheck("alice").await, Ok(id) if id.username == "alice"));
        assert!(matches!(p.recheck("nobody").await, Err(Failure::Refused(_))));
    }

    #[tokio::test]
    async fn file_changes_take_effect_and_a_broken_file_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.yaml");
        let first = AccountsFile { accounts: vec![entry("robot", "s3cret")] };
        std::fs::write(&path, serde_norway::to_string(&first).unwrap()).unwrap();
        let settle = Duration::from_millis(600);
        let p =
            StaticProvider::new(&StaticSettings { name: "local".into(), source: Source::File(path.clone()) }, false)
                .unwrap()
                .settling_for(settle);
        let g1 = p.generation();
        assert!(matches!(p.authenticate("robot", &secret("s3cret")).await.unwrap(), Outcome::Authenticated(_)));

        // Replaced by a rename, as editors and `tollgate robot` write it: in force at once.
        let replace = |text: &str| {
            std::fs::write(path.with_extension("new"), text).unwrap();
            std::fs::rename(path.with_extension("new"), &path).unwrap();
        };
        let mut file: AccountsFile = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        file.accounts[0].disabled = true;
        file.accounts[0].description = Some("disabled now, and the file is a different size".into());
        replace(&serde_norway::to_string(&file).unwrap());
        std::thread::sleep(RECHECK_FILE); // the file is looked at once per RECHECK_FILE at most
        let g2 = p.generation();
        assert!(g2 > g1, "a changed file bumps the generation");
        assert!(matches!(p.authenticate("robot", &secret("s3cret")).await, Err(Failure::Refused(_))));

        // Rewritten in place: read only once it has stayed unchanged for the settle time.
        file.accounts[0].disabled = false;
        file.accounts[0].description = None;
        std::fs::write(&path, serde_norway::to_string(&file).unwrap()).unwrap();
        let written = Instant::now();
        std::thread::sleep(RECHECK_FILE);
        assert_eq!(p.generation(), g2, "not read while it may still be being written");
        while p.generation() == g2 {
            assert!(written.elapsed() < settle * 5, "never read");
            std::thread::sleep(RECHECK_FILE);
        }
        assert!(written.elapsed() >= settle, "read before it settled");
        assert!(matches!(p.authenticate("robot", &secret("s3cret")).await.unwrap(), Outcome::Authenticated(_)));

        replace("accounts: [ {username: x, password_hash: plain} ]");
        std::thread::sleep(RECHECK_FILE);
        assert!(
            matches!(p.authenticate("robot", &secret("s3cret")).await.unwrap(), Outcome::Authenticated(_)),
            "a broken file is not applied: the last good version is kept"
        );
    }
}
