//! The static accounts provider: people and robots in one YAML file, with bcrypt or argon2 hashes only.
//!
//! The file is re-read when it changes (checked on every call: one `stat`), so `tollgate robot add` or an
//! edit that disables a robot takes effect at once. A file that no longer validates is reported and the last
//! good version stays in force. Unknown usernames are checked against a dummy hash of the kind and cost of
//! the most expensive real one, and every check lasts at least as long as that one (`hashing`), so
//! response time reveals neither which usernames exist nor which hash an account has.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::Argon2;
use secrecy::{ExposeSecret as _, SecretString};

use super::{hashing, measured, Identity, Outcome, Provider, Recheck, Unavailable};
use crate::config::accounts::{AccountEntry, AccountsFile};
use crate::config::providers::StaticSettings;
use crate::support::fs::FileStamp;
use crate::support::time::unix_now;
use crate::support::BoxFuture;

#[derive(Debug, Clone)]
enum HashKind {
    Bcrypt,
    Argon2,
}

#[derive(Debug, Clone)]
struct Account {
    entry: AccountEntry,
    kind: HashKind,
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

/// Parse and validate an accounts file; every problem is reported, each naming the account and field.
pub fn parse_accounts(origin: &str, text: &str) -> Result<AccountsFile, Vec<String>> {
    let file: AccountsFile = serde_norway::from_str(text).map_err(|e| vec![format!("{origin}: {e}")])?;
    let mut errors = Vec::new();
    let mut seen = HashMap::new();
    for (i, a) in file.accounts.iter().enumerate() {
        let at = format!("{origin}: accounts[{i}] ({:?})", a.username);
        if let Err(e) = validate_username(&a.username) {
            errors.push(format!("{at}.username: {e}"));
        }
        if let Some(first) = seen.insert(a.username.clone(), i) {
            errors.push(format!("{at}.username: duplicate of accounts[{first}]"));
        }
        if let Err(e) = hash_kind(&a.password_hash) {
            errors.push(format!("{at}.password_hash: {e}"));
        }
        for (field, t) in [("expires_at", &a.expires_at), ("previous_valid_until", &a.previous_valid_until)] {
            if let Some(t) = t {
                if humantime::parse_rfc3339_weak(t).is_err() {
                    errors.push(format!("{at}.{field}: {t:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z"));
                }
            }
        }
        match (&a.previous_password_hash, &a.previous_valid_until) {
            (Some(h), Some(_)) => {
                if let Err(e) = hash_kind(h) {
                    errors.push(format!("{at}.previous_password_hash: {e}"));
                }
            }
            (Some(_), None) => errors.push(format!(
                "{at}.previous_valid_until: required with previous_password_hash (until when the old secret is accepted)"
            )),
            (None, Some(_)) => {
                errors.push(format!("{at}.previous_password_hash: required with previous_valid_until"))
            }
            (None, None) => {}
        }
        for g in &a.groups {
            if g.is_empty() || g.chars().any(char::is_control) {
                errors.push(format!("{at}.groups: {g:?} is not a valid group name"));
            }
        }
    }
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors)
    }
}

/// The password hashes of the embedded demo config's accounts. Their passwords are published (README,
/// `tollgate serve` without `--config`), so an account carrying one is open to anyone: only the embedded
/// demo itself may use them.
pub fn demo_password_hashes() -> &'static [String] {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        // Read from the embedded text itself, so the list cannot drift from what the demo ships.
        crate::config::EMBEDDED_DEFAULT
            .lines()
            .filter_map(|l| l.trim().strip_prefix("password_hash:"))
            .map(|h| h.trim().trim_matches('"').to_string())
            .filter(|h| h.starts_with('$'))
            .collect()
    })
}

/// Problems for every account of `file` whose hash (current or previous) is a demo hash.
pub fn demo_hash_problems(origin: &str, file: &AccountsFile) -> Vec<String> {
    let demo = demo_password_hashes();
    let mut problems = Vec::new();
    for (i, a) in file.accounts.iter().enumerate() {
        for (field, hash) in
            [("password_hash", Some(&a.password_hash)), ("previous_password_hash", a.previous_password_hash.as_ref())]
        {
            if hash.is_some_and(|h| demo.contains(h)) {
                problems.push(format!(
                    "{origin}: accounts[{i}] ({:?}).{field}: the hash of a published demo password; only the \
                     embedded demo config may use it. Set a secret of your own (`tollgate hash-password`, or \
                     `tollgate robot rotate` for a robot)",
                    a.username
                ));
            }
        }
    }
    problems
}

/// [`parse_accounts`], and unless `allow_demo`, no account with a published demo hash.
fn parse_checked(origin: &str, text: &str, allow_demo: bool) -> Result<AccountsFile, Vec<String>> {
    let file = parse_accounts(origin, text)?;
    let demo = if allow_demo { Vec::new() } else { demo_hash_problems(origin, &file) };
    if demo.is_empty() {
        Ok(file)
    } else {
        Err(demo)
    }
}

pub fn validate_username(u: &str) -> Result<(), &'static str> {
    if u.is_empty() {
        return Err("must not be empty");
    }
    if u.len() > 256 {
        return Err("longer than 256 characters");
    }
    if u.contains(':') {
        return Err("must not contain ':' (Basic credentials cannot carry it)");
    }
    if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}

fn hash_kind(h: &str) -> Result<HashKind, String> {
    if h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$") || h.starts_with("$2x$") {
        h.parse::<bcrypt::HashParts>().map_err(|e| format!("invalid bcrypt hash: {e}"))?;
        Ok(HashKind::Bcrypt)
    } else if h.starts_with("$argon2") {
        PasswordHash::new(h).map_err(|e| format!("invalid argon2 hash: {e}"))?;
        Ok(HashKind::Argon2)
    } else {
        Err("must be a bcrypt ($2b$…) or argon2 ($argon2id$…) hash, never a plain password; \
             make one with `tollgate hash-password`"
            .into())
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    crate::support::random::fill(&mut b);
    b
}

/// Hash a new password or robot secret with argon2id and its default parameters.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// A dummy hash with the algorithm and cost of the most expensive real one, so checking an unknown user
/// costs what checking the slowest account does (and the timing floor pads the cheaper ones to it).
fn dummy_like(accounts: &[Account]) -> String {
    let secret = crate::support::random::random_id(16);
    let dearest = accounts
        .iter()
        .max_by(|a, b| hashing::cost(&a.entry.password_hash).total_cmp(&hashing::cost(&b.entry.password_hash)));
    if let Some(first) = dearest {
        match first.kind {
            HashKind::Bcrypt => {
                let cost = first.entry.password_hash.parse::<bcrypt::HashParts>().map(|p| p.get_cost()).unwrap_or(12);
                if let Ok(h) = bcrypt::hash(&secret, cost) {
                    return h;
                }
            }
            HashKind::Argon2 => {
                if let Ok(parsed) = PasswordHash::new(&first.entry.password_hash) {
                    if let (Ok(params), Ok(alg)) =
                        (argon2::Params::try_from(&parsed), argon2::Algorithm::try_from(parsed.algorithm))
                    {
                        let salt = SaltString::encode_b64(&random_bytes::<16>());
                        if let Ok(salt) = salt {
                            let a = Argon2::new(alg, argon2::Version::V0x13, params);
                            if let Ok(h) = a.hash_password(secret.as_bytes(), &salt) {
                                return h.to_string();
                            }
                        }
                    }
                }
            }
        }
    }
    hash_password(&secret).unwrap_or_default()
}

struct State {
    stamp: Option<FileStamp>,
    /// The cost of the most expensive hash (the dummy's): its checks set the timing floor.
    max_cost: f64,
    accounts: HashMap<String, Arc<Account>>,
    dummy: String,
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
}

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
            let kind = hash_kind(&entry.password_hash).ok()?;
            let unix = |t: &Option<String>| {
                t.as_deref()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
            };
            let (expires_at, previous_until) = (unix(&entry.expires_at), unix(&entry.previous_valid_until));
            Some(Account { entry, kind, expires_at, previous_until })
        })
        .collect();
    let dummy = dummy_like(&accounts);
    let max_cost = hashing::cost(&dummy);
    let accounts = accounts.into_iter().map(|a| (a.entry.username.clone(), Arc::new(a))).collect();
    State { stamp, max_cost, accounts, dummy }
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
        crate::telemetry::register_provider(name, crate::telemetry::STATIC_SERIES);
        Ok(StaticProvider {
            name: name.to_string(),
            source,
            state: RwLock::new(Arc::new(build_state(file, stamp))),
            generation: AtomicU64::new(1),
            checked_at: AtomicU64::new(0),
            created: Instant::now(),
            floor: hashing::Floor::default(),
            allow_demo,
        })
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
                });
            }
        }
        guard.clone()
    }

    pub fn account_count(&self) -> usize {
        self.state().accounts.len()
    }

    /// The password check behind `authenticate` (timed and counted there).
    async fn check_password(&self, username: &str, password: &SecretString) -> Result<Outcome, Unavailable> {
        let state = self.state();
        let account = state.accounts.get(username).cloned();
        let hash = match &account {
            Some(a) => a.entry.password_hash.clone(),
            None => state.dummy.clone(),
        };
        let dearest = hashing::cost(&hash) >= state.max_cost;
        let pw = password.expose_secret().to_owned();
        let unavailable = |e: hashing::Saturated| Unavailable { provider: self.name.clone(), message: e.to_string() };
        let (ok, took) = hashing::verify(hash, pw.clone()).await.map_err(unavailable)?;
        if dearest {
            self.floor.observe(took);
        }
        self.floor.pad(took).await;
        // During a rotation's grace the secret being replaced still works, until the grace ends: the
        // identity carries that end, so no cache entry outlives it.
        let mut old_until = None;
        if let (false, Some(a)) = (ok, &account) {
            if let (Some(old), Some(until)) = (&a.entry.previous_password_hash, a.previous_until) {
                if unix_now() < until && hashing::verify(old.clone(), pw).await.map_err(unavailable)?.0 {
                    old_until = Some(until);
                }
            }
        }
        Ok(match account {
            None => Outcome::NotMine,
            Some(_) if !ok && old_until.is_none() => Outcome::Rejected("wrong password".into()),
            Some(a) => match a.refusal() {
                Some(why) => Outcome::Rejected(why),
                None => {
                    let mut identity = a.identity(&self.name);
                    identity.expires_at = old_until;
                    Outcome::Authenticated(Arc::new(identity))
                }
            },
        })
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
    ) -> BoxFuture<'a, Result<Outcome, Unavailable>> {
        Box::pin(async move {
            measured(&self.name, "authenticate", self.check_password(username, password), Outcome::label).await
        })
    }

    fn recheck<'a>(&'a self, username: &'a str) -> BoxFuture<'a, Result<Recheck, Unavailable>> {
        Box::pin(async move {
            let state = self.state();
            Ok(match state.accounts.get(username) {
                None => Recheck::Gone("account no longer exists".into()),
                Some(a) => match a.refusal() {
                    Some(why) => Recheck::Gone(why),
                    None => Recheck::Current(a.identity(&self.name)),
                },
            })
        })
    }

    /// An accounts file that cannot be read (deleted, unmounted, wrong permissions) makes the provider
    /// unready: it keeps serving the last good accounts, but the operator must know.
    fn probe(&self) -> BoxFuture<'_, Result<(), Unavailable>> {
        Box::pin(async move {
            match &self.source {
                Source::File(path) => std::fs::File::open(path).map(|_| ()).map_err(|e| Unavailable {
                    provider: self.name.clone(),
                    message: format!("accounts file {}: {e}", path.display()),
                }),
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
        AccountEntry { groups: vec!["devs".into()], ..entry_with_hash(username, &hash_password(password).unwrap()) }
    }

    fn entry_with_hash(username: &str, hash: &str) -> AccountEntry {
        AccountEntry {
            username: username.into(),
            password_hash: hash.into(),
            groups: vec![],
            robot: false,
            disabled: false,
            expires_at: None,
            description: None,
            previous_password_hash: None,
            previous_valid_until: None,
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
        assert!(matches!(p.authenticate("alice", &secret("nope")).await.unwrap(), Outcome::Rejected(_)));
        assert!(matches!(p.authenticate("alice", &secret("")).await.unwrap(), Outcome::Rejected(_)));
        assert!(matches!(p.authenticate("nobody", &secret("pw")).await.unwrap(), Outcome::NotMine));
        assert!(
            matches!(p.authenticate("off", &secret("pw")).await.unwrap(), Outcome::Rejected(r) if r.contains("disabled"))
        );
        assert!(
            matches!(p.authenticate("old", &secret("pw")).await.unwrap(), Outcome::Rejected(r) if r.contains("expired"))
        );
        assert!(matches!(p.recheck("off").await.unwrap(), Recheck::Gone(_)));
        assert!(matches!(p.recheck("alice").await.unwrap(), Recheck::Current(_)));
        assert!(matches!(p.recheck("nobody").await.unwrap(), Recheck::Gone(_)));
    }

    #[test]
    fn plain_passwords_and_bad_fields_are_all_reported() {
        let text = "accounts:\n- username: 'a:b'\n  password_hash: hunter2\n- username: c\n  password_hash: '$2b$04$invalid'\n  expires_at: tomorrow\n- username: c\n  password_hash: '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'\n";
        let errors = parse_accounts("accounts.yaml", text).unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("accounts[0] (\"a:b\").username: must not contain ':'"), "{all}");
        assert!(all.contains("accounts[0] (\"a:b\").password_hash: must be a bcrypt"), "{all}");
        assert!(all.contains("accounts[1] (\"c\").password_hash: invalid bcrypt hash"), "{all}");
        assert!(all.contains("accounts[1] (\"c\").expires_at"), "{all}");
        assert!(all.contains("accounts[2] (\"c\").username: duplicate of accounts[1]"), "{all}");
        let unknown = parse_accounts("f", "accounts:\n- username: a\n  password: x\n").unwrap_err();
        assert!(unknown[0].contains("unknown field `password`"), "{unknown:?}");
    }

    #[tokio::test]
    async fn file_changes_take_effect_and_a_broken_file_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.yaml");
        let first = AccountsFile { accounts: vec![entry("robot", "s3cret")] };
        std::fs::write(&path, serde_norway::to_string(&first).unwrap()).unwrap();
        let p =
            StaticProvider::new(&StaticSettings { name: "local".into(), source: Source::File(path.clone()) }, false)
                .unwrap();
        let g1 = p.generation();
        assert!(matches!(p.authenticate("robot", &secret("s3cret")).await.unwrap(), Outcome::Authenticated(_)));

        let mut file: AccountsFile = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        file.accounts[0].disabled = true;
        file.accounts[0].description = Some("disabled now, and the file is a different size".into());
        std::fs::write(&path, serde_norway::to_string(&file).unwrap()).unwrap();
        std::thread::sleep(RECHECK_FILE); // the file is looked at once per RECHECK_FILE at most
        assert!(p.generation() > g1, "a changed file bumps the generation");
        assert!(matches!(p.authenticate("robot", &secret("s3cret")).await.unwrap(), Outcome::Rejected(_)));

        std::fs::write(&path, "accounts: [ {username: x, password_hash: plain} ]").unwrap();
        assert!(
            matches!(p.authenticate("robot", &secret("s3cret")).await.unwrap(), Outcome::Rejected(_)),
            "old version kept"
        );
    }

    #[test]
    fn the_demo_hashes_are_read_from_the_embedded_config_and_found_in_an_accounts_file() {
        let demo = demo_password_hashes();
        assert_eq!(demo.len(), 4, "alice, bob, admin and the robot: {demo:?}");
        assert!(demo.iter().all(|h| h.starts_with("$argon2id$")), "{demo:?}");
        let entry = entry_with_hash;
        let mut rotated = entry("ci", "$2b$12$abcdefghijklmnopqrstuu0123456789012345678901234567890");
        rotated.previous_password_hash = Some(demo[3].clone());
        let file = AccountsFile {
            accounts: vec![entry("own", "$argon2id$v=19$m=19456,t=2,p=1$x$y"), entry("alice", &demo[0]), rotated],
        };
        let problems = demo_hash_problems("f.yaml", &file);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("f.yaml: accounts[1] (\"alice\").password_hash: the hash of a published demo password"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("f.yaml: accounts[2] (\"ci\").previous_password_hash:"), "{problems:?}");
    }
}
