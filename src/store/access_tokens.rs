//! Where personal and group access tokens are kept: the [`AccessTokenStore`] interface and its embedded
//! file implementation (`DATA_DIR/access-tokens.json`). The Redis one, for replicas, is `redis_access.rs`.
//!
//! Only [`TokenRecord`]s are stored: the HMAC of each secret and its metadata, never a secret. The file is
//! written like the revocation list (exclusive lock, atomic rename, owner-only) and re-read when it
//! changes, so a token created, rotated or revoked by one process is seen by every other on the same
//! volume at its next request. A login looks its token up by HMAC in memory: no file read while the file is
//! unchanged.
//!
//! `last used` is written at most once a minute per token ([`LAST_USED_EVERY`]): a token used a thousand
//! times a second must not turn every use into a write.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::support::fs::{read_if_exists, update_locked, Access, FileStamp};
use crate::support::time::unix_now;
use crate::support::BoxFuture;
use crate::token::access::{LastUsed, TokenRecord};

/// Seconds between two `last used` writes of one token.
pub const LAST_USED_EVERY: u64 = 60;

/// Keeps access tokens. Every method fails closed: an unreadable store is an error, never "no token".
pub trait AccessTokenStore: Send + Sync {
    /// Add a new token (its id and HMAC are new).
    fn insert<'a>(&'a self, record: TokenRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The token whose secret has this HMAC.
    fn find<'a>(&'a self, hmac: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>>;
    /// Every token kept (expired and revoked ones too, until they are forgotten), with its last use.
    fn list(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>>;
    /// Mark a token revoked at `at`; false when there is no such token. A token revoked already keeps its
    /// first revocation time.
    fn revoke<'a>(&'a self, id: &'a str, at: u64) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Rotation: `old` now ends at `ends` (or its own expiry if earlier) and names `new` as its successor,
    /// and `new` is added, in one step. False (and nothing written) when `old` does not exist.
    fn rotate<'a>(&'a self, old: &'a str, ends: u64, new: TokenRecord) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Record a use; written only when the last recorded one is [`LAST_USED_EVERY`] old. True when written.
    fn touch<'a>(&'a self, id: &'a str, used: LastUsed) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// Revoke, as of `at` (Unix seconds), every access token of `owner` (its label: a person's name, or
/// `group:NAME` for a group's tokens) that was created by then and is still active; the ids revoked.
/// Offboarding from the CLI and the API and an account invalidation (`crate::invalidate`) all end tokens
/// this way; a person's name never matches a group's tokens.
pub async fn revoke_tokens_of(store: &dyn AccessTokenStore, owner: &str, at: u64) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    for r in store.list().await? {
        let active = r.state(at) == crate::token::access::TokenState::Active;
        if r.owner.label() == owner && active && r.created <= at {
            store.revoke(&r.id, at).await?;
            ids.push(r.id);
        }
    }
    Ok(ids)
}

/// A per-process filter in front of `touch`: a token used again within the minute is not even sent to
/// the store (whose own check is what holds across replicas).
#[derive(Default)]
pub struct TouchFilter {
    last: Mutex<HashMap<String, u64>>,
}

impl TouchFilter {
    /// Whether `id` may be written at `now`; if so, the filter counts it as written.
    pub fn admit(&self, id: &str, now: u64) -> bool {
        let Ok(mut last) = self.last.lock() else { return true };
        if last.len() > 100_000 {
            last.retain(|_, t| t.saturating_add(LAST_USED_EVERY) > now);
        }
        match last.get(id) {
            Some(t) if t.saturating_add(LAST_USED_EVERY) > now => false,
            _ => {
                last.insert(id.to_string(), now);
                true
            }
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    /// Token id → record.
    #[serde(default)]
    tokens: BTreeMap<String, TokenRecord>,
}

/// What the file holds, indexed by HMAC for logins.
#[derive(Default)]
struct Loaded {
    stamp: Option<FileStamp>,
    by_hmac: HashMap<String, Arc<TokenRecord>>,
    all: Vec<Arc<TokenRecord>>,
}

/// The embedded default: one JSON file under the data directory.
pub struct FileAccessTokens {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    filter: TouchFilter,
}

impl FileAccessTokens {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileAccessTokens { path: path.into(), loaded: Mutex::new(Loaded::default()), filter: TouchFilter::default() }
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::AccessTokens(format!("{}: {e}", self.path.display()))
    }

    fn parse(&self, bytes: Option<Vec<u8>>) -> Result<TokenFile, StoreError> {
        match bytes {
            Some(b) => serde_json::from_slice(&b).map_err(|e| self.err(format!("not a valid token file: {e}"))),
            None => Ok(TokenFile::default()),
        }
    }

    /// The records, re-read when the file changed since the last look.
    fn current(&self) -> Result<std::sync::MutexGuard<'_, Loaded>, StoreError> {
        let stamp = FileStamp::read(&self.path).map_err(|e| self.err(e))?;
        let mut loaded = self.loaded.lock().map_err(|_| self.err("lock poisoned"))?;
        if loaded.stamp != stamp || stamp.is_none() {
            let file = self.parse(read_if_exists(&self.path).map_err(|e| self.err(e))?)?;
            let all: Vec<Arc<TokenRecord>> = file.tokens.into_values().map(Arc::new).collect();
            loaded.by_hmac = all.iter().map(|r| (r.hmac.clone(), r.clone())).collect();
            loaded.all = all;
            loaded.stamp = stamp;
        }
        Ok(loaded)
    }

    /// Change the file under its lock; `f` says whether to write. Forgotten records are dropped on write.
    fn change<T>(&self, f: impl FnOnce(&mut TokenFile) -> (T, bool)) -> Result<T, StoreError> {
        let out = update_locked(&self.path, Access::Private, |current| {
            let mut file = self.parse(current)?;
            let (out, dirty) = f(&mut file);
            if !dirty {
                return Ok((out, None));
            }
            let now = unix_now();
            file.tokens.retain(|_, r| r.forget_at() > now);
            let json = serde_json::to_vec_pretty(&file).map_err(|e| self.err(e))?;
            Ok((out, Some(json)))
        })
        .map_err(|e| self.err(e))??;
        // The rename may land within the same mtime tick as an earlier write: forget the cache.
        if let Ok(mut l) = self.loaded.lock() {
            l.stamp = None;
        }
        Ok(out)
    }

    pub fn insert_sync(&self, record: TokenRecord) -> Result<(), StoreError> {
        self.change(|f| {
            f.tokens.insert(record.id.clone(), record);
            ((), true)
        })
    }

    pub fn find_sync(&self, hmac: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.current()?.by_hmac.get(hmac).map(|r| TokenRecord::clone(r)))
    }

    pub fn list_sync(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.current()?.all.iter().map(|r| TokenRecord::clone(r)).collect())
    }

    pub fn revoke_sync(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        self.change(|f| match f.tokens.get_mut(id) {
            Some(r) => {
                if r.revoked.is_none() {
                    r.revoked = Some(at);
                }
                (true, true)
            }
            None => (false, false),
        })
    }

    pub fn rotate_sync(&self, old: &str, ends: u64, new: TokenRecord) -> Result<bool, StoreError> {
        self.change(|f| match f.tokens.get_mut(old) {
            Some(r) => {
                r.expires = r.expires.min(ends);
                r.rotated_to = Some(new.id.clone());
                f.tokens.insert(new.id.clone(), new);
                (true, true)
            }
            None => (false, false),
        })
    }

    pub fn touch_sync(&self, id: &str, used: LastUsed) -> Result<bool, StoreError> {
        if !self.filter.admit(id, used.at) {
            return Ok(false);
        }
        self.change(|f| match f.tokens.get_mut(id) {
            Some(r) if r.last_used.as_ref().is_none_or(|l| l.at.saturating_add(LAST_USED_EVERY) <= used.at) => {
                r.last_used = Some(used);
                (true, true)
            }
            _ => (false, false),
        })
    }
}

/// File locking blocks: keep writes off the async workers. Reads of an unchanged file are in memory.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::AccessTokens(format!("store task failed: {e}")))?
}

impl AccessTokenStore for Arc<FileAccessTokens> {
    fn insert<'a>(&'a self, record: TokenRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        let me = self.clone();
        Box::pin(blocking(move || me.insert_sync(record)))
    }

    fn find<'a>(&'a self, hmac: &'a str) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        Box::pin(async move { self.find_sync(hmac) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>> {
        Box::pin(async move { self.list_sync() })
    }

    fn revoke<'a>(&'a self, id: &'a str, at: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(blocking(move || me.revoke_sync(&id, at)))
    }

    fn rotate<'a>(&'a self, old: &'a str, ends: u64, new: TokenRecord) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (me, old) = (self.clone(), old.to_string());
        Box::pin(blocking(move || me.rotate_sync(&old, ends, new)))
    }

    fn touch<'a>(&'a self, id: &'a str, used: LastUsed) -> BoxFuture<'a, Result<bool, StoreError>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(blocking(move || me.touch_sync(&id, used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::access::{Owner, OwnerKind};

    pub(crate) fn record(id: &str, hmac: &str, expires: u64) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            hmac: hmac.into(),
            name: "laptop".into(),
            owner: Owner {
                kind: OwnerKind::User,
                name: "alice".into(),
                provider: "ldap".into(),
                account: None,
                session: None,
            },
            scope: vec!["repository:payments/**:pull".into()],
            created_by: "alice".into(),
            created: unix_now(),
            expires,
            last_used: None,
            revoked: None,
            rotated_to: None,
        }
    }

    #[test]
    fn a_second_process_sees_inserts_revocations_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access-tokens.json");
        let server = FileAccessTokens::new(&path);
        let cli = FileAccessTokens::new(&path);
        let now = unix_now();
        assert_eq!(server.find_sync("h1").unwrap(), None);
        cli.insert_sync(record("a", "h1", now + 1000)).unwrap();
        assert_eq!(server.find_sync("h1").unwrap().unwrap().id, "a");
        assert!(cli.revoke_sync("a", now).unwrap());
        assert_eq!(server.find_sync("h1").unwrap().unwrap().revoked, Some(now));
        assert!(!cli.revoke_sync("nope", now).unwrap());

        cli.insert_sync(record("b", "h2", now + 1000)).unwrap();
        assert!(cli.rotate_sync("b", now + 60, record("c", "h3", now + 1000)).unwrap());
        let b = server.find_sync("h2").unwrap().unwrap();
        assert_eq!((b.expires, b.rotated_to.as_deref()), (now + 60, Some("c")));
        assert!(server.find_sync("h3").unwrap().is_some());
        assert!(!cli.rotate_sync("nope", now, record("d", "h4", now + 1000)).unwrap());
        assert!(server.find_sync("h4").unwrap().is_none(), "a failed rotation writes nothing");

        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn last_used_is_written_at_most_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access-tokens.json");
        let a = FileAccessTokens::new(&path);
        let b = FileAccessTokens::new(&path);
        let now = unix_now();
        a.insert_sync(record("a", "h1", now + 1000)).unwrap();
        let used = |at: u64| LastUsed { at, address: "10.0.0.1".into() };
        assert!(a.touch_sync("a", used(now)).unwrap());
        assert!(!a.touch_sync("a", used(now + 1)).unwrap(), "the process filter");
        assert!(!b.touch_sync("a", used(now + 2)).unwrap(), "the stored time, seen by another process");
        assert!(b.touch_sync("a", used(now + 65)).unwrap());
        assert_eq!(a.find_sync("h1").unwrap().unwrap().last_used, Some(used(now + 65)));
    }

    #[test]
    fn forgotten_records_are_dropped_and_a_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access-tokens.json");
        let s = FileAccessTokens::new(&path);
        s.insert_sync(record("old", "h0", 1)).unwrap();
        s.insert_sync(record("new", "h1", unix_now() + 10)).unwrap();
        let ids: Vec<String> = s.list_sync().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["new"]);
        std::fs::write(&path, b"{oops").unwrap();
        assert!(FileAccessTokens::new(&path).find_sync("h1").is_err());
    }
}
