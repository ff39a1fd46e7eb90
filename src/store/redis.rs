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

use super::error::StoreError;
use super::revocation::{Revocation, RevocationStore};
use super::sessions::{self, SessionStore};
use crate::config::state::StateSettings;
use crate::support::random::random_id;
use crate::support::time::unix_now;
use crate::support::BoxFuture;
use crate::telemetry;
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
    /// The client could not be set up, or no sentinel named a master.
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
    /// A write that must survive a failover reached the master but too few replicas acknowledged it in
    /// time: it may be lost if the master fails now. The caller reports a failure (exit code, 503).
    #[error(
        "redis {what}: written to the master but acknowledged by only {acked} of the {wanted} replicas \
         state.min_replicas_acked asks for within {timeout:?}; a failover now could lose it. Check the \
         replicas (redis-cli INFO replication) and do it again"
    )]
    NotReplicated { what: String, acked: i64, wanted: u32, timeout: Duration },
    /// Redis may evict keys when it is full, revocations among them: nothing that depends on a revocation
    /// being remembered is answered until it is set to `noeviction`.
    #[error(
        "redis: maxmemory-policy is {policy} with maxmemory {maxmemory} bytes: Redis may evict revocations \
         when full, so a revoked refresh token could work again; refresh tokens are refused until Redis is \
         set to noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)"
    )]
    Evicting { policy: String, maxmemory: u64 },
}

impl RedisError {
    /// Whether this error is [`RedisError::Evicting`].
    pub fn is_evicting(&self) -> bool {
        matches!(self, RedisError::Evicting { .. })
    }
}

/// While Redis is unreachable every command fails at once instead of waiting on a reconnect: a refused
/// Redis used to cost every password login ~300 ms (the failed-login limiter asks it first). After a
/// connection-level failure the breaker opens for a backoff (100 ms, doubling up to 2 s); when it has
/// passed, one command goes through as a probe and the others keep failing fast until it answers. A new
/// master (after a failover) closes it at once.
#[derive(Debug)]
struct Breaker {
    until: Option<Instant>,
    backoff: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

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
            self.reset();
        }
    }

    fn reset(&mut self) {
        self.until = None;
        self.backoff = BACKOFF_MIN;
    }
}

/// Where the master is.
enum Target {
    /// The one server of the URL.
    Single,
    /// Asked of these sentinels (in order) under this master name; the URL gives the master's credentials,
    /// database and scheme, its host and port are replaced by the master's.
    Sentinel { nodes: Vec<Client>, master_name: String },
    /// A Redis Cluster: every key of tollgate's carries one hash tag (see [`Redis::key`]), so one node
    /// serves them all; it is asked of these seed nodes, and asked again after a failover or `MOVED`.
    Cluster { seeds: Vec<Client> },
}

/// The connection to the master in use.
#[derive(Clone)]
struct Current {
    manager: ConnectionManager,
    /// For dedicated connections to the same master ([`Redis::dedicated`]).
    client: Client,
}

/// What the last health check found (see [`Redis::check_health`]).
#[derive(Debug, Clone, Default)]
struct Health {
    checked: Option<Instant>,
    /// `Some((policy, maxmemory))` when read; None while unknown (never read, or CONFIG refused).
    memory: Option<(String, u64)>,
    /// Why the policy could not be read.
    memory_unknown: Option<String>,
    /// The master last connected to (host:port), and how many times it changed.
    master: Option<String>,
    failovers: u64,
    /// Replicas connected to the master, from INFO replication.
    replicas: Option<u32>,
    /// `evicted_keys` of INFO stats at the last check.
    evicted_seen: Option<u64>,
    /// The first check failed, and said so.
    start_error_logged: bool,
}

impl Health {
    fn evicting(&self) -> Option<RedisError> {
        match &self.memory {
            Some((policy, maxmemory)) if *maxmemory > 0 && policy != "noeviction" => {
                Some(RedisError::Evicting { policy: policy.clone(), maxmemory: *maxmemory })
            }
            _ => None,
        }
    }
}

/// What `/readyz` and check-config show of the shared store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// "single", "sentinel" or "cluster".
    pub mode: &'static str,
    /// host:port of the master in use, once connected.
    pub master: Option<String>,
    /// Masters changed since start (failovers seen by this process).
    pub failovers: u64,
    /// Replicas connected to the master at the last check.
    pub replicas: Option<u32>,
    /// `maxmemory-policy` at the last check, if it could be read.
    pub maxmemory_policy: Option<String>,
    /// Whether Redis may evict keys (revocations refused meanwhile).
    pub evicting: bool,
}

/// One Redis for the whole process, connected on first use.
pub struct Redis {
    /// The URL's client: the server itself (single), or the template for the master (sentinel).
    client: Client,
    target: Target,
    current: std::sync::Mutex<Option<Current>>,
    /// One sentinel round at a time; the others wait for its answer.
    resolving: tokio::sync::Mutex<()>,
    breaker: std::sync::Mutex<Breaker>,
    health: std::sync::Mutex<Health>,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    min_replicas_acked: u32,
    replica_ack_timeout: Duration,
    health_interval: Duration,
    /// A [`Redis::watch`] task runs.
    watched: std::sync::atomic::AtomicBool,
}

/// Read a one-line secret file; the error names the file and the key, never the content.
fn read_secret(path: &std::path::Path, key: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    let line = text.trim().to_string();
    if line.is_empty() {
        return Err(format!("{key}: {}: empty", path.display()));
    }
    Ok(line)
}

impl Redis {
    /// Read the URL file (and the sentinels' credentials) and parse them; no connection is made yet.
    pub fn open(state: &StateSettings) -> Result<Redis, String> {
        let path = state.redis_url_file.as_deref().ok_or("state.redis_url_file: required with store: redis")?;
        let url =
            std::fs::read_to_string(path).map_err(|e| format!("state.redis_url_file: {}: {e}", path.display()))?;
        // The parse error is not shown: it could quote the URL, password included.
        let bad_url = || {
            format!(
                "state.redis_url_file: {}: not a Redis URL; write redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for \
                 TLS) on one line",
                path.display()
            )
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(url.trim()).map_err(|_| bad_url())?;
        // An ACL user and password from files of their own replace those of the URL.
        let mut auth = info.redis_settings().clone();
        if let Some(p) = &state.password_file {
            auth = auth.set_password(read_secret(p, "state.password_file")?);
        }
        if let Some(u) = &state.username_file {
            auth = auth.set_username(read_secret(u, "state.username_file")?);
        }
        info = info.set_redis_settings(auth);
        let client = match &state.tls {
            None => Client::open(info).map_err(|_| bad_url())?,
            Some(tls) => {
                if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                    return Err(format!(
                        "state.tls: set, but the URL in {} is not rediss://: write rediss://HOST:PORT/DB",
                        path.display()
                    ));
                }
                let read = |p: &std::path::Path, key: &str| {
                    std::fs::read(p).map_err(|e| format!("state.tls.{key}: {}: {e}", p.display()))
                };
                let root_cert = read(&tls.ca_file, "ca_file")?;
                let client_tls = match &tls.client {
                    Some((cert, key)) => Some(redis::ClientTlsConfig {
                        client_cert: read(cert, "cert_file")?,
                        client_key: read(key, "key_file")?,
                    }),
                    None => None,
                };
                Client::build_with_tls(info, redis::TlsCertificates { client_tls, root_cert: Some(root_cert) })
                    .map_err(|e| {
                        format!(
                            "state.tls: {e}: ca_file ({}) must hold PEM certificates, cert_file and key_file a PEM \
                             certificate and its key",
                            tls.ca_file.display()
                        )
                    })?
            }
        };
        let target = match &state.sentinel {
            None if state.cluster.is_some() => {
                let mut seeds = Vec::new();
                for (host, port) in state.cluster.iter().flatten() {
                    let info = client.get_connection_info().clone().set_addr(master_addr(
                        client.get_connection_info().addr(),
                        host,
                        *port,
                    ));
                    seeds.push(Client::open(info).map_err(|e| format!("state.cluster.nodes: {host}:{port}: {e}"))?);
                }
                Target::Cluster { seeds }
            }
            None => Target::Single,
            Some(s) => {
                let mut redis = redis::RedisConnectionInfo::default();
                if let Some(p) = &s.password_file {
                    redis = redis.set_password(read_secret(p, "state.sentinel.password_file")?);
                }
                if let Some(u) = &s.username_file {
                    redis = redis.set_username(read_secret(u, "state.sentinel.username_file")?);
                }
                let mut nodes = Vec::new();
                for (host, port) in &s.nodes {
                    let info = client
                        .get_connection_info()
                        .clone()
                        .set_addr(sentinel_addr(client.get_connection_info().addr(), host, *port))
                        .set_redis_settings(redis.clone());
                    nodes.push(Client::open(info).map_err(|e| format!("state.sentinel.nodes: {host}:{port}: {e}"))?);
                }
                Target::Sentinel { nodes, master_name: s.master_name.clone() }
            }
        };
        Ok(Redis {
            client,
            target,
            current: std::sync::Mutex::new(None),
            resolving: tokio::sync::Mutex::new(()),
            breaker: std::sync::Mutex::new(Breaker { until: None, backoff: BACKOFF_MIN }),
            health: std::sync::Mutex::new(Health::default()),
            prefix: state.key_prefix.clone(),
            connect_timeout: state.connect_timeout,
            command_timeout: state.command_timeout,
            min_replicas_acked: state.min_replicas_acked,
            replica_ack_timeout: state.replica_ack_timeout,
            health_interval: state.health_interval,
            watched: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The full name of a key: `state.key_prefix` then `rest`.
    ///
    /// Hash tags (Redis Cluster slots): every command, pipeline or script that touches several keys must use
    /// keys in one slot. tollgate's multi-key reads are the revocation check (the token's, the user's and the
    /// global revocation, and the epoch) and the failed-login check (per address and per account). The state
    /// is small (revocations, sessions, counters), so in Cluster mode the whole of it shares ONE tag, the
    /// prefix: `{tollgate:}revoked:jti:...`. One node (and its replicas) then serves all of tollgate's keys,
    /// no pipeline, script or `WAIT` can cross slots, and a tag a caller puts in `rest` changes nothing (the
    /// first `{...}` of a key is the one Redis hashes). A single Redis and Sentinel keep the untagged names,
    /// so an upgrade finds its data where it left it.
    pub(crate) fn key(&self, rest: &str) -> String {
        match self.target {
            Target::Cluster { .. } => format!("{{{}}}{rest}", self.prefix),
            _ => format!("{}{rest}", self.prefix),
        }
    }

    /// "single", "sentinel" or "cluster".
    fn mode(&self) -> &'static str {
        match self.target {
            Target::Single => "single",
            Target::Sentinel { .. } => "sentinel",
            Target::Cluster { .. } => "cluster",
        }
    }

    /// Where the master to use is, when it has to be asked (Sentinel, Cluster); None for a single Redis.
    async fn locate(&self) -> Result<Option<(String, u16)>, redis::RedisError> {
        match &self.target {
            Target::Single => Ok(None),
            Target::Sentinel { nodes, master_name } => self.ask_sentinels(nodes, master_name).await.map(Some),
            Target::Cluster { seeds } => self.ask_cluster(seeds).await.map(Some),
        }
    }

    /// The master serving tollgate's hash slot: `CLUSTER KEYSLOT` and `CLUSTER SLOTS` of each seed in turn.
    async fn ask_cluster(&self, seeds: &[Client]) -> Result<(String, u16), redis::RedisError> {
        let mut why = Vec::new();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let key = self.key(EPOCH);
        for seed in seeds {
            let at = address(seed.get_connection_info().addr());
            let seed_host = match seed.get_connection_info().addr() {
                redis::ConnectionAddr::Tcp(h, _) | redis::ConnectionAddr::TcpTls { host: h, .. } => h.clone(),
                _ => String::new(),
            };
            let ask = async {
                let mut conn = seed.get_multiplexed_async_connection_with_config(&config).await?;
                let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).query_async(&mut conn).await?;
                let slots: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
                Ok::<_, redis::RedisError>((slot, slots))
            };
            match tokio::time::timeout(self.connect_timeout + self.command_timeout, ask).await {
                Ok(Ok((slot, slots))) => match master_of_slot(slot, slots) {
                    Some((host, port)) => return Ok((if host.is_empty() { seed_host } else { host }, port)),
                    None => why.push(format!("{at}: no node serves slot {slot} (is the cluster complete?)")),
                },
                Ok(Err(e)) => why.push(format!("{at}: {}", describe(&e))),
                Err(_) => why.push(format!("{at}: no answer in time")),
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no cluster node named the master of tollgate's slot",
            why.join("; "),
        )))
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        // One quick retry per loss: callers wait at most `command_timeout` anyway, and the next command after
        // a failure starts a new attempt.
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    /// The connection to the master, resolved (sentinel) and made on first use and after [`Redis::forget`].
    async fn current(&self) -> Result<Current, redis::RedisError> {
        if let Some(c) = self.current.lock().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        let _one = self.resolving.lock().await;
        if let Some(c) = self.current.lock().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        let (client, master) = match self.locate().await? {
            None => (self.client.clone(), address(self.client.get_connection_info().addr())),
            Some((host, port)) => {
                let info = self.client.get_connection_info().clone().set_addr(master_addr(
                    self.client.get_connection_info().addr(),
                    &host,
                    port,
                ));
                (Client::open(info)?, format!("{host}:{port}"))
            }
        };
        let manager = client.get_connection_manager_lazy(self.manager_config())?;
        let current = Current { manager, client };
        self.note_master(&master);
        if let Ok(mut c) = self.current.lock() {
            *c = Some(current.clone());
        }
        Ok(current)
    }

    /// Record the master in use: a new one is a failover (logged, counted, and the breaker closed so the
    /// first command goes to it at once).
    fn note_master(&self, master: &str) {
        let Ok(mut h) = self.health.lock() else { return };
        match h.master.clone().as_deref() {
            Some(old) if old != master => {
                h.failovers += 1;
                metrics::counter!(telemetry::REDIS_FAILOVERS).increment(1);
                tracing::warn!(master = %master, previous = %old, "Redis master changed (failover): using the new one");
                if let Ok(mut b) = self.breaker.lock() {
                    b.reset();
                }
            }
            Some(_) => return,
            None => tracing::info!(master = %master, mode = self.mode(), "Redis master in use"),
        }
        if let Some(old) = h.master.replace(master.to_string()) {
            metrics::gauge!(telemetry::REDIS_MASTER, "master" => old).set(0.0);
        }
        metrics::gauge!(telemetry::REDIS_MASTER, "master" => master.to_string()).set(1.0);
    }

    /// Drop the connection to the master, so the next command asks the sentinels again (a single Redis keeps
    /// its connection manager, which reconnects by itself).
    fn forget(&self) {
        if !matches!(self.target, Target::Single) {
            if let Ok(mut c) = self.current.lock() {
                *c = None;
            }
        }
    }

    /// `SENTINEL get-master-addr-by-name` of each sentinel in turn, until one answers.
    async fn ask_sentinels(&self, nodes: &[Client], name: &str) -> Result<(String, u16), redis::RedisError> {
        let mut why = Vec::new();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        for node in nodes {
            let at = address(node.get_connection_info().addr());
            let ask = async {
                let mut conn = node.get_multiplexed_async_connection_with_config(&config).await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(name)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(self.connect_timeout + self.command_timeout, ask).await {
                Ok(Ok(Some(addr))) => return Ok(addr),
                Ok(Ok(None)) => why.push(format!("{at}: knows no master named {name:?}")),
                Ok(Err(e)) => why.push(format!("{at}: {}", words(&e, "state.sentinel.password_file"))),
                Err(_) => why.push(format!("{at}: no answer in time")),
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no sentinel named the master",
            format!("master {name:?}: {}", why.join("; ")),
        )))
    }

    /// `state.command_timeout`: what one command may take.
    pub(crate) fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// A connection of its own to the master in use (resolved through the sentinels in Sentinel mode), for
    /// commands that block it: `WAIT` here, a stream reader elsewhere. It does not follow a failover: on an
    /// error, drop it and ask again.
    pub(crate) async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection, RedisError> {
        let fail = |e: redis::RedisError| RedisError::Command { what: "connect".into(), message: e.to_string() };
        let current = self.current().await.map_err(fail)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        match tokio::time::timeout(
            self.connect_timeout + self.command_timeout,
            current.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                if lost(&e) {
                    self.forget();
                }
                Err(fail(e))
            }
            Err(_) => {
                self.forget();
                Err(RedisError::Timeout { what: "connect".into(), timeout: self.connect_timeout })
            }
        }
    }

    /// Run one command under the command timeout.
    pub(crate) async fn run<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.bounded(what, self.command_timeout, |mut conn| async move { cmd.query_async::<T>(&mut conn).await }).await
    }

    /// Run a pipeline (one round trip) under the command timeout.
    pub(crate) async fn run_pipe<T: FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.bounded(what, self.command_timeout, |mut conn| async move { pipe.query_async::<T>(&mut conn).await }).await
    }

    /// Run a write that must survive a failover: `cmd`, then `WAIT state.min_replicas_acked
    /// state.replica_ack_timeout` on a connection of its own (WAIT blocks its connection; the shared one
    /// must not stall every request). Succeeds only when enough replicas acknowledged it, else
    /// [`RedisError::NotReplicated`]. With `min_replicas_acked: 0` it is [`Redis::run`].
    pub(crate) async fn durable<T: FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let wanted = self.min_replicas_acked;
        if wanted == 0 {
            return self.run(what, cmd).await;
        }
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone()).cmd("WAIT").arg(wanted).arg(self.replica_ack_timeout.as_millis() as u64);
        let (value, acked): (T, i64) = self
            .bounded(what, self.command_timeout + self.replica_ack_timeout, |_| {
                let pipe = &pipe;
                async move {
                    let mut conn = self
                        .dedicated()
                        .await
                        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "no connection", e.to_string())))?;
                    pipe.query_async::<(T, i64)>(&mut conn).await
                }
            })
            .await?;
        if acked < i64::from(wanted) {
            return Err(RedisError::NotReplicated {
                what: what.to_string(),
                acked,
                wanted,
                timeout: self.replica_ack_timeout,
            });
        }
        Ok(value)
    }

    /// `attempt` on the master's connection, and once more if the connection was lost or the server has
    /// become a replica (`READONLY`, after a failover): the first command after a loss fails and starts the
    /// reconnect (asking the sentinels again), the second waits for it. Without the retry each replica would
    /// answer one extra 503 after Redis is back. Both attempts together stay within `timeout`.
    async fn bounded<T, F, Fut>(&self, what: &str, timeout: Duration, attempt: F) -> Result<T, RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.breaker.lock().map_err(|_| RedisError::Connect("breaker lock poisoned".into()))?.admit()?;
        let both = async {
            let first = match self.current().await {
                Ok(c) => attempt(c.manager).await,
                Err(e) => Err(e),
            };
            match first {
                Err(e) if lost(&e) || read_only(&e) => {
                    self.forget();
                    let c = self.current().await?;
                    attempt(c.manager).await
                }
                other => other,
            }
        };
        let (result, connection_failed) = match tokio::time::timeout(timeout, both).await {
            Ok(Ok(v)) => (Ok(v), false),
            Ok(Err(e)) => {
                let failed = lost(&e) || read_only(&e);
                if failed {
                    self.forget();
                }
                (Err(RedisError::Command { what: what.to_string(), message: describe(&e) }), failed)
            }
            Err(_) => {
                // A master that stopped answering (frozen, cut off): ask the sentinels again next time.
                self.forget();
                (Err(RedisError::Timeout { what: what.to_string(), timeout }), true)
            }
        };
        if let Ok(mut b) = self.breaker.lock() {
            b.record(connection_failed);
        }
        result
    }

    /// Writes that revocations depend on go through here: a Redis that may evict keys is refused (see
    /// [`RedisError::Evicting`]). The policy is read on first use and then by [`Redis::watch`] every
    /// `state.health_interval` (or here, when no watcher ran for twice that long).
    pub(crate) async fn revocations_safe(&self) -> Result<(), RedisError> {
        let stale = self
            .health
            .lock()
            .map(|h| h.checked.is_none_or(|t| t.elapsed() > self.health_interval * 2))
            .unwrap_or(true);
        if stale {
            self.check_health().await;
        }
        match self.health.lock().map(|h| h.evicting()) {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether the last health check could read `maxmemory-policy` (CONFIG is allowed).
    fn config_readable(&self) -> bool {
        self.health.lock().is_ok_and(|h| h.memory.is_some() && h.memory_unknown.is_none())
    }

    /// Take the answer of `CONFIG GET maxmemory*`: [`RedisError::Evicting`] when Redis may evict keys.
    fn note_memory(&self, answer: Option<redis::Value>) -> Result<(), RedisError> {
        let Some(pairs) = answer.and_then(|v| <Vec<String>>::from_redis_value(v).ok()) else { return Ok(()) };
        let get = |name: &str| pairs.chunks(2).find(|p| p.len() == 2 && p[0] == name).map(|p| p[1].clone());
        let (Some(policy), Some(max)) = (get("maxmemory-policy"), get("maxmemory")) else { return Ok(()) };
        let Ok(mut h) = self.health.lock() else { return Ok(()) };
        let was = h.evicting().is_some();
        h.memory = Some((policy, max.parse().unwrap_or(0)));
        match h.evicting() {
            Some(e) => {
                if !was {
                    metrics::gauge!(telemetry::REDIS_EVICTING).set(1.0);
                    tracing::error!("{e}");
                }
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Read `maxmemory-policy`, `maxmemory` and the replicas of the master, update the metrics, and log
    /// what changed. Failures leave the last known values (a Redis that is down fails its commands anyway).
    pub async fn check_health(&self) {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy").cmd("CONFIG").arg("GET").arg("maxmemory");
        let memory = self.run_pipe::<(Vec<String>, Vec<String>)>("CONFIG GET maxmemory-policy", &pipe).await;
        let mut pipe = redis::pipe();
        pipe.cmd("INFO").arg("replication").cmd("INFO").arg("stats");
        let info = self.run_pipe::<(String, String)>("INFO", &pipe).await;
        let rotate = {
            let Ok(mut h) = self.health.lock() else { return };
            let was_evicting = h.evicting().is_some();
            match memory {
                Ok((policy, max)) if policy.len() == 2 && max.len() == 2 => {
                    h.memory = Some((policy[1].clone(), max[1].parse().unwrap_or(0)));
                    h.memory_unknown = None;
                }
                Ok(_) => h.memory_unknown = Some("CONFIG GET gave no value".into()),
                // Managed services may refuse CONFIG: say so once, and rely on the operator's setting.
                Err(RedisError::Command { message, .. })
                    if ["NOPERM", "unknown command", "ERR"].iter().any(|w| message.contains(w)) =>
                {
                    if h.memory_unknown.is_none() {
                        tracing::warn!(
                            error = %message,
                            "cannot read Redis's maxmemory-policy: make sure it is noeviction, or revoked refresh \
                             tokens may work again after Redis evicts their revocations"
                        );
                    }
                    h.memory_unknown = Some(message);
                }
                // Redis is down: its commands fail anyway; keep what was known. Said once at start, so a
                // wrong password or CA is in the log before the first login needs Redis.
                Err(e) => {
                    if h.checked.is_none() && !h.start_error_logged {
                        h.start_error_logged = true;
                        tracing::error!(error = %e, "cannot use the shared state in Redis");
                    }
                    return;
                }
            }
            h.checked = Some(Instant::now());
            let evicting = h.evicting();
            let mut rotate = None;
            let mut demoted = false;
            if let Ok((replication, stats)) = info {
                let field = |text: &str, name: &str| {
                    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok()))
                };
                h.replicas = field(&replication, "connected_slaves:").map(|n| n as u32);
                // A master demoted while our connection stayed open (a manual failover) still answers reads;
                // writes would get READONLY. Do not wait for one: ask the sentinels again now.
                if !replication.lines().any(|l| l.trim() == "role:master") {
                    demoted = true;
                }
                let wanted = self.min_replicas_acked.max(1);
                let short = wanted.saturating_sub(h.replicas.unwrap_or(0));
                metrics::gauge!(telemetry::REDIS_REPLICAS_SHORT).set(f64::from(short));
                // Keys evicted while the policy allows it may have been revocations: which ones cannot be
                // known, so every refresh token issued before is refused (a new epoch), as after a data loss.
                // Any increase counts (under noeviction there is none: a policy that was evicting between two
                // checks did it); at the first check, past evictions count if the policy evicts now.
                if let Some(evicted) = field(&stats, "evicted_keys:") {
                    let seen = match h.evicted_seen {
                        Some(seen) => seen,
                        None if evicting.is_some() => 0,
                        None => evicted,
                    };
                    if evicted > seen {
                        rotate = Some(evicted - seen);
                    }
                    h.evicted_seen = Some(evicted);
                }
            }
            metrics::gauge!(telemetry::REDIS_EVICTING).set(if evicting.is_some() { 1.0 } else { 0.0 });
            match (&evicting, was_evicting) {
                (Some(e), false) => tracing::error!("{e}"),
                (None, true) => tracing::info!("Redis no longer evicts keys: refresh tokens are checked again"),
                _ => {}
            }
            if demoted {
                tracing::warn!(mode = self.mode(), "the Redis in use is no longer a master");
            }
            (rotate, demoted)
        };
        let (rotate, demoted) = rotate;
        if demoted {
            self.forget();
        }
        if let Some(n) = rotate {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(EPOCH)).arg(random_id(12));
            match self.run::<()>("SET epoch", &cmd).await {
                Ok(()) => tracing::error!(
                    evicted = n,
                    "Redis evicted keys while it may evict revocations: every refresh token issued before is \
                     refused from now on (new epoch); their users log in again"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "Redis evicted keys, and a new epoch could not be written");
                    // Not recorded as seen: the next check tries again.
                    if let Ok(mut h) = self.health.lock() {
                        h.evicted_seen = h.evicted_seen.map(|s| s.saturating_sub(n));
                    }
                }
            }
        }
    }

    /// Check Redis every `state.health_interval` for as long as `redis` lives (the first check at once, so a
    /// Redis that may evict revocations is reported at start). Needs a tokio runtime; does nothing without.
    /// Once per [`Redis`]: later calls do nothing.
    pub fn watch(redis: &Arc<Redis>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if redis.watched.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(redis);
        rt.spawn(async move {
            loop {
                let Some(redis) = weak.upgrade() else { return };
                redis.check_health().await;
                let every = redis.health_interval;
                drop(redis);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// The mode, master, failovers, replicas and eviction as last seen.
    pub fn status(&self) -> Status {
        let h = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        Status {
            mode: self.mode(),
            master: h.master.clone(),
            failovers: h.failovers,
            replicas: h.replicas,
            maxmemory_policy: h.memory.as_ref().map(|(p, _)| p.clone()),
            evicting: h.evicting().is_some(),
        }
    }

    async fn raise(&self, key: &str, value: u64) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RAISE).arg(1).arg(self.key(key)).arg(value);
        self.durable::<i64>("EVAL", &cmd).await.map(|_| ())
    }
}

/// The connection was refused, lost or timed out: the server is gone, not merely unhappy with a command.
fn lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// The server answered `READONLY` (it is a replica now: a demoted master after a failover), or, in a
/// Cluster, `MOVED`, `CLUSTERDOWN` or `TRYAGAIN` (the slot is served elsewhere, or about to be).
fn read_only(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as K;
    matches!(
        e.kind(),
        redis::ErrorKind::Server(K::ReadOnly | K::Moved | K::Ask | K::ClusterDown | K::TryAgain | K::MasterDown)
    )
}

/// host:port of the master serving `slot`, from a `CLUSTER SLOTS` reply (`[[start, end, [host, port, id],
/// replicas...], ...]`).
fn master_of_slot(slot: i64, slots: redis::Value) -> Option<(String, u16)> {
    let redis::Value::Array(ranges) = slots else { return None };
    for range in ranges {
        let redis::Value::Array(parts) = range else { continue };
        let mut parts = parts.into_iter();
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end)), Some(master)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !(start..=end).contains(&slot) {
            continue;
        }
        let redis::Value::Array(node) = master else { continue };
        let mut node = node.into_iter();
        let host = match node.next()? {
            redis::Value::BulkString(b) => String::from_utf8(b).ok()?,
            redis::Value::SimpleString(s) => s,
            _ => return None,
        };
        let redis::Value::Int(port) = node.next()? else { return None };
        return Some((host, u16::try_from(port).ok()?));
    }
    None
}

/// host:port of an address (never the URL: it may hold the password).
fn address(addr: &redis::ConnectionAddr) -> String {
    match addr {
        redis::ConnectionAddr::Tcp(h, p) | redis::ConnectionAddr::TcpTls { host: h, port: p, .. } => {
            format!("{h}:{p}")
        }
        other => other.to_string(),
    }
}

/// The master's address, with the URL's scheme (TLS or not).
fn master_addr(url: &redis::ConnectionAddr, host: &str, port: u16) -> redis::ConnectionAddr {
    match url {
        redis::ConnectionAddr::TcpTls { insecure, tls_params, .. } => redis::ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
    }
}

/// A sentinel's address: the same scheme as the master's.
fn sentinel_addr(url: &redis::ConnectionAddr, host: &str, port: u16) -> redis::ConnectionAddr {
    master_addr(url, host, port)
}

/// An error of a connection attempt in words: a refused password names the file it came from.
fn words(e: &redis::RedisError, file: &str) -> String {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed || text.contains("WRONGPASS") {
        format!("Redis refused the password in {file} (wrong password, or wrong user)")
    } else if text.contains("NOAUTH") {
        format!("Redis requires a password and {file} gives none")
    } else if tls_refused(&text) {
        format!("TLS: Redis's certificate is not trusted: {text}; state.tls.ca_file must hold the CA that signed it")
    } else {
        text
    }
}

/// A TLS handshake that failed on the certificate.
fn tls_refused(text: &str) -> bool {
    text.contains("certificate") || text.contains("UnknownIssuer") || text.contains("NotValidForName")
}

/// A command's error in words (the password and certificate cases name the setting to fix).
fn describe(e: &redis::RedisError) -> String {
    words(e, "state.redis_url_file (or state.password_file)")
}

/// A step of [`Redis::diagnose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Asking the sentinels (Sentinel) or a seed node (Cluster) where the master is.
    Locate,
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
    /// "single", "sentinel" or "cluster".
    pub mode: &'static str,
    /// host:port of the server (the master the sentinels named); never the URL: it may hold the password.
    pub address: String,
    /// The server's `maxmemory-policy` and `maxmemory` (bytes), or why they could not be read (managed
    /// services may refuse CONFIG).
    pub maxmemory: Result<(String, u64), String>,
    /// The server's role and connected replicas, from INFO replication.
    pub replication: Result<(String, u32), String>,
    /// The epoch key's value; None while no refresh token was issued under this Redis yet.
    pub epoch: Option<String>,
    /// The epoch key's name.
    pub epoch_key: String,
    /// `state.min_replicas_acked`.
    pub min_replicas_acked: u32,
}

impl Redis {
    /// Ask the sentinels (Sentinel mode), connect on a connection of its own, check the password, PING, read
    /// `maxmemory-policy`, the replicas and the epoch key, each bounded by `connect_timeout` or
    /// `command_timeout`, writing nothing; for `check-config --probe`. The error says which step failed and
    /// why, in words.
    pub async fn diagnose(&self) -> Result<Facts, (Step, String)> {
        let client = match self.locate().await.map_err(|e| (Step::Locate, e.to_string()))? {
            None => self.client.clone(),
            Some((host, port)) => {
                let info = self.client.get_connection_info().clone().set_addr(master_addr(
                    self.client.get_connection_info().addr(),
                    &host,
                    port,
                ));
                Client::open(info).map_err(|e| (Step::Connect, e.to_string()))?
            }
        };
        let address = address(client.get_connection_info().addr());
        if let redis::ConnectionAddr::Tcp(h, p) | redis::ConnectionAddr::TcpTls { host: h, port: p, .. } =
            client.get_connection_info().addr()
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
        let words = describe;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let mut conn = match tokio::time::timeout(
            self.connect_timeout + self.command_timeout,
            client.get_multiplexed_async_connection_with_config(&config),
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
        let mut config_get = |name: &str| {
            let mut get = redis::cmd("CONFIG");
            get.arg("GET").arg(name);
            let f = bounded(Step::Ping, get, &mut conn);
            let name = name.to_string();
            async move {
                match f.await {
                    Ok(v) => match <Vec<String>>::from_redis_value(v) {
                        Ok(pair) if pair.len() == 2 => Ok(pair[1].clone()),
                        _ => Err(format!("CONFIG GET {name} gave no value")),
                    },
                    Err((_, e)) => Err(format!("CONFIG GET {name} refused: {e}")),
                }
            }
        };
        let policy = config_get("maxmemory-policy").await;
        let max = config_get("maxmemory").await;
        let maxmemory = policy.and_then(|p| max.map(|m| (p, m.parse().unwrap_or(0))));
        let replication = match bounded(Step::Ping, redis::cmd("INFO").arg("replication").clone(), &mut conn).await {
            Ok(v) => match String::from_redis_value(v) {
                Ok(text) => {
                    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name).map(str::trim));
                    Ok((
                        field("role:").unwrap_or("unknown").to_string(),
                        field("connected_slaves:").and_then(|n| n.parse().ok()).unwrap_or(0),
                    ))
                }
                Err(e) => Err(e.to_string()),
            },
            Err((_, e)) => Err(format!("INFO replication refused: {e}")),
        };
        let epoch_key = self.key(EPOCH);
        let mut get = redis::cmd("GET");
        get.arg(&epoch_key);
        let epoch = bounded(Step::Epoch, get, &mut conn).await?;
        let epoch =
            <Option<String>>::from_redis_value(epoch).map_err(|e| (Step::Epoch, format!("{epoch_key}: {e}")))?;
        Ok(Facts {
            mode: self.mode(),
            address,
            maxmemory,
            replication,
            epoch,
            epoch_key,
            min_replicas_acked: self.min_replicas_acked,
        })
    }
}

/// [`RevocationStore`] in Redis.
pub struct RedisRevocations(pub Arc<Redis>);

impl RedisRevocations {
    async fn revoke_now(&self, r: Revocation) -> Result<(), RedisError> {
        let redis = &self.0;
        // Written even to a Redis that may evict it (better than nothing), but reported as a failure.
        let safe = redis.revocations_safe().await;
        match r {
            Revocation::Token { jti, exp } => {
                if exp <= unix_now() {
                    return Ok(()); // already expired: nothing left to refuse
                }
                let mut cmd = redis::cmd("SET");
                cmd.arg(redis.key(&format!("revoked:jti:{jti}"))).arg(1).arg("EXAT").arg(exp);
                redis.durable::<()>("SET", &cmd).await
            }
            Revocation::User { username, before_ms } => {
                redis.raise(&format!("revoked:user-ms:{username}"), before_ms).await
            }
            Revocation::All { before_ms } => redis.raise("revoked:all-ms", before_ms).await,
        }?;
        safe
    }

    async fn check(&self, claims: &RefreshClaims) -> Result<bool, RedisError> {
        let redis = &self.0;
        redis.revocations_safe().await?;
        // One round trip for all three kinds, and the epoch.
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(redis.key(&format!("revoked:jti:{}", claims.jti)));
        pipe.cmd("GET").arg(redis.key(&format!("revoked:user:{}", claims.sub)));
        pipe.cmd("GET").arg(redis.key("revoked:all"));
        pipe.cmd("GET").arg(redis.key(&format!("revoked:user-ms:{}", claims.sub)));
        pipe.cmd("GET").arg(redis.key("revoked:all-ms"));
        pipe.cmd("GET").arg(redis.key(EPOCH));
        // And the memory policy, in the same round trip: a revocation evicted a moment ago must not let its
        // token through before the next health check (skipped where CONFIG is refused).
        let with_policy = redis.config_readable();
        if with_policy {
            pipe.cmd("CONFIG").arg("GET").arg("maxmemory*");
        }
        let mut values: Vec<redis::Value> = redis.run_pipe("revocation check", &pipe).await?;
        if with_policy {
            redis.note_memory(values.pop())?;
        }
        #[allow(clippy::type_complexity)]
        let (token, user, all, user_ms, all_ms, epoch): (
            bool,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<String>,
        ) = FromRedisValue::from_redis_value(redis::Value::Array(values))
            .map_err(|e| RedisError::Command { what: "revocation check".into(), message: e.to_string() })?;
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

/// A revocation store error: an evicting Redis is [`StoreError::Unsafe`], anything else unreachable.
fn revocation_error(e: RedisError) -> StoreError {
    if e.is_evicting() {
        StoreError::Unsafe(e.to_string())
    } else {
        StoreError::Revocations(e.to_string())
    }
}

impl RevocationStore for RedisRevocations {
    fn revoke<'a>(&'a self, revocation: Revocation) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.revoke_now(revocation).await.map_err(revocation_error) })
    }

    fn is_revoked<'a>(&'a self, claims: &'a RefreshClaims) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { self.check(claims).await.map_err(revocation_error) })
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
