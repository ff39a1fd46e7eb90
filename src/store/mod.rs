//! Choosing the stores for state that replicas share, from the `state:` config section.
//!
//! `local` keeps the embedded file stores ([`crate::store::revocation::FileStore`],
//! [`crate::store::sessions::FileSessionStore`]) and per-replica failed-login limits. `redis` puts all three in one
//! Redis ([`redis`]), so a refresh token revoked on one replica is refused by every other, a device login
//! started on one can be polled on another, and failed logins are counted across all of them. Access tokens
//! follow the same choice (`access_tokens.rs`, `redis_access.rs`).

use std::sync::Arc;

use crate::config::state::StoreKind;
use crate::config::Settings;
use crate::store::access_tokens::{AccessTokenStore, FileAccessTokens};
use crate::store::revocation::{FileStore, RevocationStore};
use crate::store::sessions::{FileSessionStore, SessionStore};

pub mod access_tokens;
pub mod error;
pub mod inval_stream;
pub mod redis;
pub mod redis_access;
pub mod revocation;
pub mod sessions;

/// The stores selected by the config.
pub struct Stores {
    pub revocations: Arc<dyn RevocationStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// Personal and group access tokens.
    pub access_tokens: Arc<dyn AccessTokenStore>,
    /// Shared failed-login counters; None keeps them per replica.
    pub limits: Option<Arc<redis::SharedLimits>>,
    /// The Redis connection behind them, when `state.store: redis`.
    pub redis: Option<Arc<redis::Redis>>,
}

impl Stores {
    /// The embedded default: files under `server.data_dir`, per-replica limits.
    pub fn local(settings: &Settings) -> Stores {
        Stores {
            revocations: Arc::new(FileStore::new(settings.revocation_file())),
            sessions: Arc::new(FileSessionStore::new(settings.sessions_file())),
            access_tokens: Arc::new(Arc::new(FileAccessTokens::new(settings.access_tokens_file()))),
            limits: None,
            redis: None,
        }
    }
}

/// Build the configured stores. Nothing connects here (Redis is connected on first use, and reconnected
/// after a loss), so a replica starts, and `check-config` passes, while Redis is still coming up.
pub fn open(settings: &Settings) -> Result<Stores, String> {
    match settings.state.store {
        StoreKind::Local => Ok(Stores::local(settings)),
        StoreKind::Redis => {
            let conn = Arc::new(redis::Redis::open(&settings.state)?);
            // Checks eviction, role and replicas now and every state.health_interval (in `serve`).
            redis::Redis::watch(&conn);
            Ok(Stores {
                revocations: Arc::new(redis::RedisRevocations(conn.clone())),
                sessions: Arc::new(redis::RedisSessions(conn.clone())),
                access_tokens: Arc::new(redis_access::RedisAccessTokens::new(conn.clone())),
                limits: Some(Arc::new(redis::SharedLimits::new(conn.clone()))),
                redis: Some(conn),
            })
        }
    }
}
