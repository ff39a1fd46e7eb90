//! Password hash checks, bounded: how many run at once, how many wait, how much memory they hold, and how
//! long they take as seen from outside.
//!
//! An argon2 check holds its working memory (19 MiB with the default parameters) and a bcrypt-12 check a
//! core for 0.2 s. Unbounded, 400 simultaneous cold logins with random usernames (the dummy hash of an
//! unknown user is a real check too) peaked at 7.6 GB and kept it. So, process-wide:
//! - at most one check per core runs; up to [`QUEUE_PER_CORE`] per core wait; a check beyond that is
//!   refused at once ([`Saturated`], answered 503 with `Retry-After`) instead of queueing without end;
//! - the queue is shared fairly between senders (addresses, IPv6 /64s) and accounts, returning pairs first
//!   ([`verify`]): an attacker with many addresses cannot keep an honest login out;
//! - argon2 working memory is one buffer per running check, kept and reused: a burst allocates it once;
//! - every check of a provider lasts at least its timing floor (see [`Floor`]), so neither an unknown user
//!   nor an account with a cheaper hash answers faster than the most expensive account.
//!
//! A name no provider knows costs no check at all: the accounts provider waits the floor instead.
//!
//! Also the hashes themselves: which algorithm a stored hash uses ([`hash_kind`]), a new argon2id hash
//! ([`hash_password`]), and the dummy hash of unknown users ([`dummy_like`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;
use tokio::sync::oneshot;

/// Checks that may wait for a free core, per core.
pub const QUEUE_PER_CORE: usize = 32;

/// The gate is full: too many password checks are running and waiting already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{SATURATED}")]
pub struct Saturated;

/// [`Saturated`]'s text.
pub const SATURATED: &str = "too many password checks at once; try again shortly";

/// Who a password check is for, as the login knows it: the sender (an address, an IPv6 /64:
/// `support::net::sender`), the account tried, and whether this pair logged in successfully before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub sender: IpAddr,
    pub account: String,
    pub known: bool,
}

impl Ticket {
    /// A check no login is known for (a CLI command, a unit test): a sender of its own.
    fn nobody() -> Ticket {
        Ticket { sender: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), account: String::new(), known: false }
    }
}

tokio::task_local! {
    static TICKET: Ticket;
}

/// Run `f` (a login through the provider chain) with the checks it makes placed in the queue as `ticket`.
pub async fn on_behalf<F: Future>(ticket: Ticket, f: F) -> F::Output {
    TICKET.scope(ticket, f).await
}

/// How fast a sender's or account's recent use is forgotten: halved every this many seconds.
const USE_HALF_LIFE: f64 = 30.0;
/// Checks one sender may have waiting at once, per core, unless its pair logged in before: a quarter of
/// the queue.
pub const WAITING_PER_SENDER: usize = QUEUE_PER_CORE / 4;
/// Senders and accounts whose recent use is remembered, at most (beyond it the least used are forgotten).
const MAX_REMEMBERED: usize = 50_000;

/// Recent use, decaying: how many checks a sender (or an account) asked for lately.
struct Uses<K: std::hash::Hash + Eq> {
    by: HashMap<K, (f64, Instant)>,
}

impl<K: std::hash::Hash + Eq> Uses<K> {
    fn decayed((n, at): (f64, Instant), now: Instant) -> f64 {
        n * 0.5f64.powf(now.saturating_duration_since(at).as_secs_f64() / USE_HALF_LIFE)
    }

    /// Count one more use of `key`; returns its use before this one.
    fn bump(&mut self, key: K, now: Instant) -> f64 {
        if self.by.len() >= MAX_REMEMBERED {
            self.by.retain(|_, v| Self::decayed(*v, now) >= 0.5);
            if self.by.len() >= MAX_REMEMBERED {
                self.by.clear();
            }
        }
        let entry = self.by.entry(key).or_insert((0.0, now));
        let before = Self::decayed(*entry, now);
        *entry = (before + 1.0, now);
        before
    }
}

/// A waiting check's place: pairs that logged in before first, then the least recent use of its sender and
/// account together, then arrival.
type Rank = (bool, u64, u64);

struct Waiter {
    grant: oneshot::Sender<Slot>,
    sender: IpAddr,
}

struct Queue {
    free: usize,
    waiting: BTreeMap<Rank, Waiter>,
    per_sender: HashMap<IpAddr, usize>,
    senders: Uses<IpAddr>,
    accounts: Uses<String>,
    arrivals: u64,
}

impl Queue {
    fn remove(&mut self, rank: &Rank) -> Option<Waiter> {
        let w = self.waiting.remove(rank)?;
        if let Some(n) = self.per_sender.get_mut(&w.sender) {
            *n -= 1;
            if *n == 0 {
                self.per_sender.remove(&w.sender);
            }
        }
        Some(w)
    }
}

struct Gate {
    queue: Mutex<Queue>,
    capacity: usize,
    per_sender: usize,
    /// argon2 working memory of finished checks, for the next ones.
    memory: Mutex<Vec<Vec<Block>>>,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Gate {
            queue: Mutex::new(Queue {
                free: cores,
                waiting: BTreeMap::new(),
                per_sender: HashMap::new(),
                senders: Uses { by: HashMap::new() },
                accounts: Uses { by: HashMap::new() },
                arrivals: 0,
            }),
            capacity: cores * QUEUE_PER_CORE,
            per_sender: cores * WAITING_PER_SENDER,
            memory: Mutex::new(Vec::new()),
        }
    })
}

/// A core for one check; handed to the next waiter when dropped.
struct Slot(&'static Gate);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        while let Some((rank, _)) = q.waiting.first_key_value() {
            let rank = *rank;
            let Some(w) = q.remove(&rank) else { break };
            match w.grant.send(Slot(self.0)) {
                Ok(()) => return,
                // Its client went away meanwhile: the next one.
                Err(slot) => std::mem::forget(slot),
            }
        }
        q.free += 1;
    }
}

/// A check waiting for a core; leaves the queue when dropped (its client went away), and counts that.
struct Queued {
    gate: &'static Gate,
    rank: Rank,
    granted: Option<oneshot::Receiver<Slot>>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.gate.lock().remove(&self.rank).is_some() {
            metrics::counter!(crate::telemetry::PASSWORD_CHECKS_ABANDONED).increment(1);
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A core now, a place in the queue, or Saturated: the queue is full of checks that rank before this
    /// one, or this sender has its share waiting already.
    fn admit(&'static self, ticket: &Ticket) -> Result<Result<Slot, Queued>, Saturated> {
        let mut q = self.lock();
        let now = Instant::now();
        let used = q.senders.bump(ticket.sender, now) + q.accounts.bump(ticket.account.clone(), now);
        if q.free > 0 && q.waiting.is_empty() {
            q.free -= 1;
            return Ok(Ok(Slot(self)));
        }
        if !ticket.known && q.per_sender.get(&ticket.sender).copied().unwrap_or(0) >= self.per_sender {
            return Err(Saturated);
        }
        q.arrivals += 1;
        let rank = (!ticket.known, (used * 1000.0) as u64, q.arrivals);
        if q.waiting.len() >= self.capacity {
            // Full: this check takes the place of the one that ranks last, if it ranks before it.
            let last = q.waiting.last_key_value().map(|(r, _)| *r);
            match last {
                Some(last) if rank < last => {
                    // Dropping its sender tells the evicted check it is refused.
                    q.remove(&last);
                    metrics::counter!(crate::telemetry::PASSWORD_CHECKS_SHED).increment(1);
                }
                _ => return Err(Saturated),
            }
        }
        let (grant, granted) = oneshot::channel();
        q.waiting.insert(rank, Waiter { grant, sender: ticket.sender });
        *q.per_sender.entry(ticket.sender).or_default() += 1;
        Ok(Err(Queued { gate: self, rank, granted: Some(granted) }))
    }
}

/// Check `password` against `hash` (bcrypt or argon2) on the blocking pool, once a core is free. Returns
/// whether it matches and how long the hashing itself took (without the wait for a core).
///
/// The cores are shared fairly: a check waits in a queue ordered by who it is for (the [`Ticket`] of the
/// login around it, [`on_behalf`]): first pairs of account and sender that logged in before, then the
/// checks whose sender and account asked for the fewest checks lately. A sender may have
/// [`WAITING_PER_SENDER`] checks per core waiting; when the queue is full a check that ranks before the last one
/// takes its place (the last is refused). So a flood from many addresses that keep coming back ranks behind
/// a login from an address that asks once, and a returning user is served before all of them.
pub async fn verify(hash: String, password: String) -> Result<(bool, Duration), Saturated> {
    let (ok, took) = verify_each(vec![hash], password).await?;
    Ok((ok.first().copied().unwrap_or(false), took))
}

/// [`verify`] against each of `hashes`, all of them always (no answer comes sooner because an early one
/// matched), one after the other on the same core: whether each matches, and how long the hashing took.
/// An account in a rotation's grace is checked so against its new and its old secret.
pub async fn verify_each(hashes: Vec<String>, password: String) -> Result<(Vec<bool>, Duration), Saturated> {
    let gate = gate();
    let ticket = TICKET.try_with(Ticket::clone).unwrap_or_else(|_| Ticket::nobody());
    let slot = match gate.admit(&ticket) {
        Ok(Ok(slot)) => slot,
        Ok(Err(mut queued)) => {
            let granted = queued.granted.take().ok_or(Saturated)?;
            let slot = granted.await.map_err(|_| Saturated);
            drop(queued);
            slot?
        }
        Err(e) => {
            metrics::counter!(crate::telemetry::PASSWORD_CHECKS_SHED).increment(1);
            return Err(e);
        }
    };
    metrics::counter!(crate::telemetry::PASSWORD_CHECKS).increment(hashes.len() as u64);
    // The slot moves into the blocking task: a client hanging up does not free the core early.
    let task = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut memory = gate.memory.lock().map(|mut m| m.pop().unwrap_or_default()).unwrap_or_default();
        let ok = hashes.iter().map(|h| !password.is_empty() && check(h, password.as_bytes(), &mut memory)).collect();
        if let Ok(mut pool) = gate.memory.lock() {
            pool.push(memory);
        }
        drop(slot);
        (ok, started.elapsed())
    });
    task.await.map_err(|_| Saturated)
}

fn check(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    if hash.starts_with("$2") {
        return std::str::from_utf8(password).is_ok_and(|p| bcrypt::verify(p, hash).unwrap_or(false));
    }
    verify_argon2(hash, password, memory)
}

/// argon2 verification into reused working memory, with a constant-time comparison.
fn verify_argon2(hash: &str, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else { return false };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else { return false };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(stated) = Params::try_from(&parsed) else { return false };
    let Ok(params) = Params::new(stated.m_cost(), stated.t_cost(), stated.p_cost(), Some(expected.len())) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    hashed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()))
}

/// What one check of `hash` costs, in arbitrary units comparable across bcrypt and argon2 (a bcrypt cost
/// of 10 takes about four times an argon2id check with the default parameters on the machines measured,
/// BENCHMARKS.md). Used to pick the dummy hash of unknown users: the most expensive kind in the file.
pub fn cost(hash: &str) -> f64 {
    if let Ok(parts) = hash.parse::<bcrypt::HashParts>() {
        return 4.0 * 2f64.powi(parts.get_cost() as i32 - 10);
    }
    match PasswordHash::new(hash).ok().and_then(|p| Params::try_from(&p).ok()) {
        Some(p) => f64::from(p.m_cost()) * f64::from(p.t_cost()) / (19_456.0 * 2.0),
        None => 0.0,
    }
}

/// The time every check of one accounts file lasts at least: a running average of the checks of its most
/// expensive hash (which the dummy hash of unknown users has too). A check that finished sooner sleeps the
/// rest (off the core), so an unknown user, a wrong password and a right one for any account all take the
/// same time from outside.
#[derive(Debug, Default)]
pub struct Floor {
    nanos: AtomicU64,
}

impl Floor {
    /// Record a check of the most expensive hash that took `took`.
    pub fn observe(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.nanos.load(Ordering::Relaxed);
        // An average over the last few checks: one slow outlier does not slow every login for long.
        let new = if old == 0 { took } else { old - old / 8 + took / 8 };
        self.nanos.store(new, Ordering::Relaxed);
    }

    /// Sleep for what checks that took `took` together lack to `floors` times the floor. False when no
    /// check has been measured yet (there is no floor to wait for).
    pub async fn pad(&self, took: Duration, floors: f64) -> bool {
        let floor = Duration::from_nanos(self.nanos.load(Ordering::Relaxed));
        let target = floor.mul_f64(floors);
        if took < target {
            tokio::time::sleep(target - took).await;
        }
        !floor.is_zero()
    }
}

/// The two hash algorithms accounts may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Bcrypt,
    Argon2,
}

/// The algorithm of a stored hash, after checking that it parses; a plain password is refused.
pub fn hash_kind(h: &str) -> Result<HashKind, String> {
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

fn salt() -> Result<SaltString, argon2::password_hash::Error> {
    let mut b = [0u8; 16];
    crate::support::random::fill(&mut b);
    SaltString::encode_b64(&b)
}

/// Hash a new password or robot secret with argon2id and its default parameters.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = salt().map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// A hash of a random secret with the algorithm and cost of `like` (argon2id defaults when None or when
/// `like` cannot be read), so checking an unknown user costs what checking that hash does.
pub fn dummy_like(like: Option<&str>) -> String {
    let secret = crate::support::random::random_id(16);
    match like.map(|h| (h, hash_kind(h))) {
        Some((h, Ok(HashKind::Bcrypt))) => {
            let cost = h.parse::<bcrypt::HashParts>().map(|p| p.get_cost()).unwrap_or(12);
            if let Ok(h) = bcrypt::hash(&secret, cost) {
                return h;
            }
        }
        Some((h, Ok(HashKind::Argon2))) => {
            if let Ok(parsed) = PasswordHash::new(h) {
                if let (Ok(params), Ok(alg), Ok(salt)) =
                    (Params::try_from(&parsed), Algorithm::try_from(parsed.algorithm), salt())
                {
                    if let Ok(h) = Argon2::new(alg, Version::V0x13, params).hash_password(secret.as_bytes(), &salt) {
                        return h.to_string();
                    }
                }
            }
        }
        _ => {}
    }
    hash_password(&secret).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::SaltString;

    fn argon2_hash(pw: &str, params: Params) -> String {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(pw.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn reused_memory_verifies_argon2_of_any_size_and_bcrypt() {
        let small = argon2_hash("pw", Params::new(1024, 1, 1, None).unwrap());
        let default = argon2_hash("pw", Params::default());
        let bcrypt = bcrypt::hash("pw", 4).unwrap();
        for hash in [&small, &default, &small, &bcrypt] {
            assert!(verify(hash.clone(), "pw".into()).await.unwrap().0, "{hash}");
            assert!(!verify(hash.clone(), "wrong".into()).await.unwrap().0, "{hash}");
        }
        assert!(!verify(small.clone(), String::new()).await.unwrap().0, "an empty password never matches");
        assert!(!verify("$argon2id$v=19$m=1024,t=1,p=1$bad".into(), "pw".into()).await.unwrap().0);
    }

    #[test]
    fn costs_order_bcrypt_and_argon2_by_their_work() {
        let (b4, b5) = (bcrypt::hash("x", 4).unwrap(), bcrypt::hash("x", 5).unwrap());
        let a = argon2_hash("x", Params::default());
        assert!(cost(&b5) > cost(&b4), "{} {}", cost(&b5), cost(&b4));
        assert!(cost(&a) > cost(&b4) && cost(&a) < 4.0 * 2f64.powi(2), "argon2 default sits between bcrypt 4 and 12");
        assert_eq!(cost("plain"), 0.0);
    }

    #[tokio::test]
    async fn a_check_is_padded_to_the_floor() {
        let floor = Floor::default();
        floor.observe(Duration::from_millis(120));
        let started = Instant::now();
        floor.pad(Duration::from_millis(20), 1.0).await;
        let slept = started.elapsed();
        assert!(slept >= Duration::from_millis(95) && slept < Duration::from_millis(400), "{slept:?}");
    }
}
