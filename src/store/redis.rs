//! Shared state in Redis: refresh-token revocations, device/OIDC sessions and failed-login counters.
//!
//! One [`Redis`] handle per process holds a `ConnectionManager` (one multiplexed connection, reconnected in
//! the background after a loss). Every command runs under `state.command_timeout`, so a Redis that hangs
//! costs a request at most that long; a Redis that is down fails at once (connection refused) and the next
//! command tries to reconnect, which is how a replica recovers after Redis comes back without a restart.
//!
//! What a failure means is decided by the caller: revocations and sessions return their `StoreError`
//! (the token endpoint answers 503: a revocation that cannot be checked is treated as revoked), while
//! [`SharedLimits`] errors make the login limiter fall back to its per-replica counters.
//!
//! Key layout (all under `state.key_prefix`, default `tollgate:`):
//! - `revoked:jti:<jti>`: one revoked refresh token, expiring with the token itself;
//! - `revoked:user:<username>`, `revoked:all`: Unix second up to which tokens are revoked (only raised);
//! - `session:<key>`: a session-store entry (keys are already hashes of any secret), with its expiry;
//! - `rl:ip:<address>`, `rl:acct:<sha256(account)>`: failed logins in the current window;
//! - `rl:good:<sha256(account)>:<address>`: an address that logged in to the account in the last day.
//!
//! The Redis URL may hold a password: it is read from `state.redis_url_file` and never logged; errors name
//! the file, not its content.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, FromRedisValue};
use tokio::sync::OnceCell;

use super::error::StoreError;
use super::revocation::{Revocation, RevocationStore};
use super::sessions::{self, SessionStore};
use crate::config::state::StateSettings;
use crate::support::random::random_id;
use crate::support::time::unix_now;
use crate::support::BoxFuture;
use crate::token::refresh::RefreshClaims;

/// Raise a Unix-time key to ARGV[1] if it is lower (two replicas revoking at once keep the later moment).
const RAISE: &str = "local c = tonumber(redis.call('GET', KEYS[1]) or '0') \
    if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end return 0";
/// Count one failure in a window that starts at the first failure: returns {count, ms left in the window}.
const SPEND: &str = "local n = redis.call('INCR', KEYS[1]) \
    if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
    local t = redis.call('PTTL', KEYS[1]) \
    if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) t = tonumber(ARGV[1]) end return {n, t}";

/// Redis did not answer a command. The caller decides what that means: revocations and sessions turn it
/// into a [`StoreError`] (fail closed, 503); the failed-login limiter falls back to per-replica budgets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// The client could not be set up.
    #[error("redis: {0}")]
    Connect(String),
    /// The command failed (connection refused or lost, an error reply).
    #[error("redis {what}: {message}")]
    Command { what: String, message: String },
    /// No answer within `state.command_timeout`.
    #[error("redis {what}: no answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    /// Redis failed to answer recently; nothing was sent (see [`Breaker`]).
    #[error("redis: unreachable, trying again in {retry_in:?}")]
    Down { retry_in: Duration },
}

/// While Redis is unreachable every command fails at once instead of waiting on a reconnect: a refused
/// Redis used to cost every password login ~300 ms (the failed-login limiter asks it first). After a
/// connection-level failure the breaker opens for a backoff (100 ms, doubling up to 5 s); when it has
/// passed, one command goes through as a probe and the others keep failing fast until it answers.
#[derive(Debug)]
struct Breaker {
    until: Option<Instant>,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Breaker {
    /// May a command be sent now?
    fn admit(&mut self) -> Result<(), RedisError> {
        let now = Instant::now();
        match self.until {
            Some(t) if now < t => Err(RedisError::Down { retry_in: t - now }),
            // The backoff is over: this command probes; the others wait for its answer.
            Some(_) => {
                self.until = Some(now + self.backoff);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn record(&mut self, connection_failed: bool) {
        if connection_failed {
            self.until = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        } else if self.until.is_some() {
            self.until = None;
            self.backoff = BACKOFF_MIN;
        }
    }
}

/// One Redis for the whole process, connected on first use.
pub struct Redis {
    client: Client,
    conn: OnceCell<ConnectionManager>,
    breaker: std::sync::Mutex<Breaker>,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl Redis {
    /// Read the URL file and parse the URL; no connection is made yet.
    pub fn open(state: &StateSettings) -> Result<Redis, String> {
        let path = state.redis_url_file.as_deref().ok_or("state.redis_url_file: required with store: redis")?;
        let url =
            std::fs::read_to_string(path).map_err(|e| format!("state.redis_url_file: {}: {e}", path.display()))?;
        // The parse error is not shown: it could quote the URL, password included.
        let client = Client::open(url.trim()).map_err(|_| {
            format!(
                "state.redis_url_file: {}: not a Redis URL; write redis://[:PASSWORD@]HOST:PORT/DB on one line",
                path.display()
            )
        })?;
        Ok(Redis {
            client,
            conn: OnceCell::new(),
            breaker: std::sync::Mutex::new(Breaker { until: None, backoff: BACKOFF_MIN }),
            prefix: state.key_prefix.clone(),
            connect_timeout: state.connect_timeout,
            command_timeout: state.command_timeout,
        })
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    async fn manager(&self) -> Result<ConnectionManager, RedisError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                // One quick retry per loss: callers wait at most `command_timeout` anyway, and the next
                // command after a failure starts a new attempt.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.command_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                self.client.get_connection_manager_lazy(config).map_err(|e| RedisError::Connect(e.to_string()))
            })
            .await?;
        Ok(conn.clone())
    }

    /// Run one command under the command timeout.
    pub(crate) async fn run<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let conn = self.manager().await?;
        self.bounded(what, || {
            let mut conn = conn.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        })
        .await
    }

    /// Run a pipeline (one round trip) under the command timeout.
    pub(crate) async fn run_pipe<T: FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let conn = self.manager().await?;
        self.bounded(what, || {
            let mut conn = conn.clone();
            async move { pipe.query_async::<T>(&mut conn).await }
        })
        .await
    }

    /// `attempt`, and once more if the connection was lost: the first command after a loss fails and starts
    /// the reconnect, the second waits for it. Without the retry each replica would answer one extra 503
    /// after Redis is back. Both attempts together stay within `command_timeout`.
    async fn bounded<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, RedisError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let lost = |e: &redis::RedisError| e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
        self.breaker.lock().map_err(|_| RedisError::Connect("breaker lock poisoned".into()))?.admit()?;
        let both = async {
            match attempt().await {
                Err(e) if lost(&e) => attempt().await,
                other => other,
            }
        };
        let (result, connection_failed) = match tokio::time::timeout(self.command_timeout, both).await {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => {
                let failed = lost(&e);
                (Err(RedisError::Command { what: what.to_string(), message: e.to_string() }), failed)
            }
            Err(_) => (Err(RedisError::Timeout { what: what.to_string(), timeout: self.command_timeout }), true),
        };
        if let Ok(mut b) = self.breaker.lock() {
            b.record(connection_failed);
        }
        result
    }

    async fn raise(&self, key: &str, value: u64) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RAISE).arg(1).arg(self.key(key)).arg(value);
        self.run::<i64>("EVAL", &cmd).await.map(|_| ())
    }
}

/// A step of [`Redis::diagnose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The TCP connection.
    Connect,
    /// The password of the URL (AUTH), and selecting the database.
    Auth,
    Ping,
    /// Reading the data-loss epoch key.
    Epoch,
}

/// What [`Redis::diagnose`] found.
#[derive(Debug, Clone)]
pub struct Facts {
    /// host:port (never the URL: it may hold the password).
    pub address: String,
    /// The server's `maxmemory-policy`, or why it could not be read (managed services may refuse CONFIG).
    pub maxmemory_policy: Result<String, String>,
    /// The epoch key's value; None while no refresh token was issued under this Redis yet.
    pub epoch: Option<String>,
    /// The epoch key's name.
    pub epoch_key: String,
}

impl Redis {
    /// Connect on a connection of its own, check the password, PING, read `maxmemory-policy` and the epoch
    /// key, each bounded by `connect_timeout` or `command_timeout`, writing nothing; for `check-config
    /// --probe`. The error says which step failed and why, in words.
    pub async fn diagnose(&self) -> Result<Facts, (Step, String)> {
        let address = match self.client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(h, p) | redis::ConnectionAddr::TcpTls { host: h, port: p, .. } => {
                format!("{h}:{p}")
            }
            other => other.to_string(),
        };
        if let redis::ConnectionAddr::Tcp(h, p) | redis::ConnectionAddr::TcpTls { host: h, port: p, .. } =
            self.client.get_connection_info().addr()
        {
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect((h.as_str(), *p))).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err((Step::Connect, format!("nothing listens at {address} (connection refused)")))
                }
                Ok(Err(e)) => return Err((Step::Connect, format!("{address}: {e}"))),
                Err(_) => {
                    return Err((
                        Step::Connect,
                        format!("{address}: no answer within connect_timeout ({:?})", self.connect_timeout),
                    ))
                }
            }
        }
        let words = |e: &redis::RedisError| {
            let text = e.to_string();
            if e.kind() == redis::ErrorKind::AuthenticationFailed || text.contains("WRONGPASS") {
                "Redis refused the password in state.redis_url_file (wrong password, or wrong user)".to_string()
            } else if text.contains("NOAUTH") {
                "Redis requires a password and the URL in state.redis_url_file has none \
                 (redis://:PASSWORD@HOST:PORT/DB)"
                    .to_string()
            } else {
                text
            }
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let mut conn = match tokio::time::timeout(
            self.connect_timeout + self.command_timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err((Step::Auth, words(&e))),
            Err(_) => return Err((Step::Auth, "no answer to the connection handshake in time".into())),
        };
        let bounded = |what: Step, cmd: redis::Cmd, conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            let timeout = self.command_timeout;
            async move {
                match tokio::time::timeout(timeout, cmd.query_async::<redis::Value>(&mut conn)).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err((what, words(&e))),
                    Err(_) => Err((what, format!("no answer within command_timeout ({timeout:?})"))),
                }
            }
        };
        bounded(Step::Ping, redis::cmd("PING"), &mut conn).await?;
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg("maxmemory-policy");
        let maxmemory_policy = match bounded(Step::Ping, get, &mut conn).await {
            Ok(v) => match <Vec<String>>::from_redis_value(v) {
                Ok(pair) if pair.len() == 2 => Ok(pair[1].clone()),
                _ => Err("CONFIG GET maxmemory-policy gave no value".into()),
            },
            Err((_, e)) => Err(format!("CONFIG GET maxmemory-policy refused: {e}")),
        };
        let epoch_key = self.key(EPOCH);
        let mut get = redis::cmd("GET");
        get.arg(&epoch_key);
        let epoch = bounded(Step::Epoch, get, &mut conn).await?;
        let epoch =
            <Option<String>>::from_redis_value(epoch).map_err(|e| (Step::Epoch, format!("{epoch_key}: {e}")))?;
        Ok(Facts { address, maxmemory_policy, epoch, epoch_key })
    }
}

/// [`RevocationStore`] in Redis.
pub struct RedisRevocations(pub Arc<Redis>);

impl RedisRevocations {
    async fn revoke_now(&self, r: Revocation) -> Result<(), RedisError> {
        let redis = &self.0;
        match r {
            Revocation::Token { jti, exp } => {
                if exp <= unix_now() {
                    return Ok(()); // already expired: nothing left to refuse
                }
                let mut cmd = redis::cmd("SET");
                cmd.arg(redis.key(&format!("revoked:jti:{jti}"))).arg(1).arg("EXAT").arg(exp);
                redis.run::<()>("SET", &cmd).await
            }
            Revocation::User { username, before_ms } => {
                redis.raise(&format!("revoked:user-ms:{username}"), before_ms).await
            }
            Revocation::All { before_ms } => redis.raise("revoked:all-ms", before_ms).await,
        }
    }

    async fn check(&self, claims: &RefreshClaims) -> Result<bool, RedisError> {
        let redis = &self.0;
        // One round trip for all three kinds, and the epoch.
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(redis.key(&format!("revoked:jti:{}", claims.jti)));
        pipe.cmd("GET").arg(redis.key(&format!("revoked:user:{}", claims.sub)));
        pipe.cmd("GET").arg(redis.key("revoked:all"));
        pipe.cmd("GET").arg(redis.key(&format!("revoked:user-ms:{}", claims.sub)));
        pipe.cmd("GET").arg(redis.key("revoked:all-ms"));
        pipe.cmd("GET").arg(redis.key(EPOCH));
        #[allow(clippy::type_complexity)]
        let (token, user, all, user_ms, all_ms, epoch): (
            bool,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<String>,
        ) = redis.run_pipe("revocation check", &pipe).await?;
        let epoch = match epoch {
            Some(e) => e,
            None => {
                // Redis lost its data: what it forgot may have been revoked. A new epoch refuses every token
                // issued before, on every replica, from now on.
                let fresh = self.epoch().await?;
                tracing::error!(
                    "the shared store has lost its data (no epoch): refresh tokens issued before are refused; \
                     their users log in again"
                );
                fresh
            }
        };
        if claims.epo.as_deref() != Some(epoch.as_str()) {
            return Ok(true);
        }
        // Seconds (what earlier versions wrote) and milliseconds.
        let issued_ms = claims.issued_ms();
        Ok(token
            || user.is_some_and(|b| claims.iat <= b)
            || all.is_some_and(|b| claims.iat <= b)
            || user_ms.is_some_and(|b| issued_ms <= b)
            || all_ms.is_some_and(|b| issued_ms <= b))
    }

    /// The epoch of the shared state, made on first use: a random id that a Redis restarted without its
    /// data no longer has. Concurrent makers agree (`SET NX GET` keeps the first).
    async fn epoch(&self) -> Result<String, RedisError> {
        let redis = &self.0;
        let fresh = random_id(12);
        let mut cmd = redis::cmd("SET");
        cmd.arg(redis.key(EPOCH)).arg(&fresh).arg("NX").arg("GET");
        let existing: Option<String> = redis.run("SET epoch", &cmd).await?;
        Ok(existing.unwrap_or(fresh))
    }
}

impl RevocationStore for RedisRevocations {
    fn revoke<'a>(&'a self, revocation: Revocation) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.revoke_now(revocation).await.map_err(|e| StoreError::Revocations(e.to_string())) })
    }

    fn is_revoked<'a>(&'a self, claims: &'a RefreshClaims) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { self.check(claims).await.map_err(|e| StoreError::Revocations(e.to_string())) })
    }

    fn epoch(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move { self.epoch().await.map(Some).map_err(|e| StoreError::Revocations(e.to_string())) })
    }
}

/// The key holding the epoch of the shared state.
const EPOCH: &str = "epoch";

/// [`SessionStore`] in Redis: one key per entry, expiring at the entry's own expiry (`SET … EXAT`).
pub struct RedisSessions(pub Arc<Redis>);

impl SessionStore for RedisSessions {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: serde_json::Value,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let redis = &self.0;
            let k = redis.key(&format!("session:{key}"));
            if expires_at <= unix_now() {
                return redis
                    .run::<()>("DEL", redis::cmd("DEL").arg(k))
                    .await
                    .map_err(|e| StoreError::Sessions(e.to_string()));
            }
            let json = serde_json::to_string(&value).map_err(|e| StoreError::Sessions(e.to_string()))?;
            let mut cmd = redis::cmd("SET");
            cmd.arg(k).arg(json).arg("EXAT").arg(expires_at);
            redis.run::<()>("SET", &cmd).await.map_err(|e| StoreError::Sessions(e.to_string()))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let redis = &self.0;
            let raw: Option<String> = redis
                .run("GET", redis::cmd("GET").arg(redis.key(&format!("session:{key}"))))
                .await
                .map_err(|e| StoreError::Sessions(e.to_string()))?;
            // The value is not quoted in the error: it may hold an IdP refresh token.
            raw.map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| StoreError::Sessions(format!("session {key}: not valid JSON in Redis: {e}")))
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let redis = &self.0;
            redis
                .run::<()>("DEL", redis::cmd("DEL").arg(redis.key(&format!("session:{key}"))))
                .await
                .map_err(|e| StoreError::Sessions(e.to_string()))
        })
    }
}

/// Failed-login counters shared by all replicas: a fixed window per key that starts at its first failure.
/// (The per-replica limiter refills continuously; a shared GCRA would need a script per check for little
/// gain, and a window that ends `rate_limit.window` after the first failure bounds the block the same way.)
pub struct SharedLimits(Arc<Redis>);

/// Which budget a counter belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    ClientAccount,
    Ip,
    Account,
}

impl SharedLimits {
    pub fn new(redis: Arc<Redis>) -> SharedLimits {
        SharedLimits(redis)
    }

    fn counter_key(&self, budget: Budget, ip: IpAddr, account: &str) -> String {
        match budget {
            Budget::ClientAccount => self.0.key(&format!("{}:{ip}", sessions::hashed_key("rl:ca", account))),
            Budget::Ip => self.0.key(&format!("rl:ip:{ip}")),
            // Hashed: an account name is user input of any length and content.
            Budget::Account => self.0.key(&sessions::hashed_key("rl:acct", account)),
        }
    }

    /// Seconds until the (address, account) pair, the address and the account may try again, for each that
    /// had a failure beyond its limit counted in its window. One round trip: this runs before every login.
    pub async fn blocked_for(
        &self,
        ip: IpAddr,
        account: &str,
        (client_account_limit, ip_limit, account_limit): (u32, u32, u32),
    ) -> Result<(Option<u64>, Option<u64>, Option<u64>), RedisError> {
        let keys = [Budget::ClientAccount, Budget::Ip, Budget::Account].map(|b| self.counter_key(b, ip, account));
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
        }
        #[allow(clippy::type_complexity)]
        let (ca, ca_ttl, ip_count, ip_ttl, account_count, account_ttl): (
            Option<u64>,
            i64,
            Option<u64>,
            i64,
            Option<u64>,
            i64,
        ) = self.0.run_pipe("rate-limit check", &pipe).await?;
        let blocked = |count: Option<u64>, ttl_ms: i64, limit: u32| match count {
            Some(n) if n > u64::from(limit) && ttl_ms > 0 => Some(secs(ttl_ms)),
            _ => None,
        };
        Ok((
            blocked(ca, ca_ttl, client_account_limit),
            blocked(ip_count, ip_ttl, ip_limit),
            blocked(account_count, account_ttl, account_limit),
        ))
    }

    /// Whether this is the first failure of `account` from `ip` in the window (the address's budget counts
    /// each account once).
    pub async fn first_try(&self, ip: IpAddr, account: &str, window: Duration) -> Result<bool, RedisError> {
        let key = self.0.key(&format!("{}:{ip}", sessions::hashed_key("rl:tried", account)));
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(1).arg("NX").arg("PX").arg(window.as_millis() as u64);
        let set: Option<String> = self.0.run("rate-limit first try", &cmd).await?;
        Ok(set.is_some())
    }

    /// Count one failure; when it is beyond `limit`, return the seconds left in the window.
    pub async fn spend(
        &self,
        budget: Budget,
        ip: IpAddr,
        account: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<u64>, RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SPEND).arg(1).arg(self.counter_key(budget, ip, account)).arg(window.as_millis() as u64);
        let (count, ttl_ms): (u64, i64) = self.0.run("rate-limit count", &cmd).await?;
        Ok((count > u64::from(limit)).then(|| secs(ttl_ms)))
    }

    fn good_key(&self, account: &str, ip: IpAddr) -> String {
        self.0.key(&format!("{}:{ip}", sessions::hashed_key("rl:good", account)))
    }

    pub async fn is_known_good(&self, account: &str, ip: IpAddr) -> Result<bool, RedisError> {
        self.0.run("EXISTS", redis::cmd("EXISTS").arg(self.good_key(account, ip))).await
    }

    pub async fn remember_good(&self, account: &str, ip: IpAddr, ttl: Duration) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.good_key(account, ip)).arg(1).arg("EX").arg(ttl.as_secs().max(1));
        self.0.run("SET", &cmd).await
    }
}

fn secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(file: &std::path::Path) -> StateSettings {
        StateSettings {
            store: crate::config::state::StoreKind::Redis,
            redis_url_file: Some(file.to_path_buf()),
            ..StateSettings::default()
        }
    }

    #[test]
    fn a_bad_url_file_is_named_without_quoting_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let e = Redis::open(&state(&missing)).err().unwrap();
        assert!(e.starts_with("state.redis_url_file: ") && e.contains("absent"), "{e}");
        let bad = dir.path().join("url");
        std::fs::write(&bad, "http://:hunter2-secret@redis:6379").unwrap();
        let e = Redis::open(&state(&bad)).err().unwrap();
        assert!(e.contains("not a Redis URL") && !e.contains("hunter2-secret"), "{e}");
    }

    #[test]
    fn windows_round_up_to_whole_seconds() {
        assert_eq!((secs(1), secs(1000), secs(1001), secs(-2)), (1, 1, 2, 1));
    }
}
