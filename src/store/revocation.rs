//! Revoked refresh tokens.
//!
//! Refresh tokens are self-contained, so revoking one means remembering it until it would have expired anyway.
//! Three kinds of revocation exist: one token (by its id), every token of one user issued up to a moment,
//! and every token issued up to a moment. The store sits behind [`RevocationStore`] so that several replicas
//! can share one (the embedded default is a file under the data directory, read by the server and written by
//! `tollgate token revoke`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::support::fs::{read_if_exists, update_locked, Access, FileError, FileStamp};
use crate::support::time::unix_now;
use crate::support::BoxFuture;
use crate::token::refresh::RefreshClaims;

fn file_error(e: FileError) -> StoreError {
    StoreError::Revocations(e.to_string())
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One token, remembered until its own expiry.
    Token { jti: String, exp: u64 },
    /// Every token of `username` issued at or before `before_ms` (Unix milliseconds).
    User { username: String, before_ms: u64 },
    /// Every token issued at or before `before_ms` (Unix milliseconds).
    All { before_ms: u64 },
}

pub trait RevocationStore: Send + Sync {
    fn revoke<'a>(&'a self, revocation: Revocation) -> BoxFuture<'a, Result<(), StoreError>>;
    fn is_revoked<'a>(&'a self, claims: &'a RefreshClaims) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The epoch of the shared state that refresh tokens are issued under (their `epo` claim): a store that
    /// can lose its data refuses tokens of another epoch. Default: none (the file store keeps its file).
    fn epoch(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}

/// The on-disk state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// Token id → its expiry (Unix seconds); dropped once expired.
    #[serde(default)]
    pub tokens: BTreeMap<String, u64>,
    /// Username → tokens issued at or before this time are revoked.
    #[serde(default)]
    pub users: BTreeMap<String, u64>,
    /// Tokens issued at or before this time are revoked.
    #[serde(default)]
    pub all_before: Option<u64>,
    /// Username → tokens issued at or before this time, in milliseconds, are revoked. (`users` and
    /// `all_before`, in seconds, are what earlier versions wrote; they are still honoured.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users_ms: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_before_ms: Option<u64>,
}

impl RevocationList {
    pub fn covers(&self, claims: &RefreshClaims) -> bool {
        let issued_ms = claims.issued_ms();
        self.tokens.contains_key(&claims.jti)
            || self.users.get(&claims.sub).is_some_and(|before| claims.iat <= *before)
            || self.all_before.is_some_and(|before| claims.iat <= before)
            || self.users_ms.get(&claims.sub).is_some_and(|before| issued_ms <= *before)
            || self.all_before_ms.is_some_and(|before| issued_ms <= before)
    }

    fn apply(&mut self, r: Revocation) {
        match r {
            Revocation::Token { jti, exp } => {
                self.tokens.insert(jti, exp);
            }
            Revocation::User { username, before_ms } => {
                let e = self.users_ms.entry(username).or_insert(before_ms);
                *e = (*e).max(before_ms);
            }
            Revocation::All { before_ms } => {
                self.all_before_ms = Some(self.all_before_ms.unwrap_or(0).max(before_ms));
            }
        }
        let now = unix_now();
        self.tokens.retain(|_, exp| *exp >= now);
    }
}

/// A JSON file under the data directory. The server re-reads it when its modification time or size changes,
/// so a revocation written by the CLI takes effect on the next request.
pub struct FileStore {
    path: PathBuf,
    cached: Mutex<(Option<FileStamp>, RevocationList)>,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into(), cached: Mutex::new((None, RevocationList::default())) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_file(&self) -> Result<RevocationList, StoreError> {
        self.parse(read_if_exists(&self.path).map_err(file_error)?)
    }

    fn parse(&self, bytes: Option<Vec<u8>>) -> Result<RevocationList, StoreError> {
        match bytes {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Revocations(format!("{}: not a valid revocation list: {e}", self.path.display()))
            }),
            None => Ok(RevocationList::default()),
        }
    }

    /// The current list, re-read if the file changed.
    pub fn current(&self) -> Result<RevocationList, StoreError> {
        let stamp = FileStamp::read(&self.path).map_err(file_error)?;
        let mut cached = self.cached.lock().map_err(|_| StoreError::Revocations("lock poisoned".into()))?;
        if cached.0 != stamp || stamp.is_none() {
            let list = self.read_file()?;
            *cached = (stamp, list);
        }
        Ok(cached.1.clone())
    }

    fn check(&self, claims: &RefreshClaims) -> Result<bool, StoreError> {
        let stamp = FileStamp::read(&self.path).map_err(file_error)?;
        let mut cached = self.cached.lock().map_err(|_| StoreError::Revocations("lock poisoned".into()))?;
        if cached.0 != stamp {
            let list = self.read_file()?;
            *cached = (stamp, list);
        }
        Ok(cached.1.covers(claims))
    }

    /// Read, change and atomically replace the file under an exclusive lock, so a CLI and a server (or two
    /// CLIs) writing at once cannot lose a revocation.
    pub fn revoke_sync(&self, r: Revocation) -> Result<(), StoreError> {
        update_locked(&self.path, Access::Shared, |current| {
            let mut list = self.parse(current)?;
            list.apply(r);
            let json = serde_json::to_vec_pretty(&list).map_err(|e| StoreError::Revocations(e.to_string()))?;
            Ok(((), Some(json)))
        })
        .map_err(file_error)??;
        // The rename may land within the same mtime tick as an earlier write: drop the cache explicitly.
        if let Ok(mut c) = self.cached.lock() {
            *c = (None, RevocationList::default());
        }
        Ok(())
    }
}

impl RevocationStore for FileStore {
    fn revoke<'a>(&'a self, revocation: Revocation) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.revoke_sync(revocation) })
    }

    fn is_revoked<'a>(&'a self, claims: &'a RefreshClaims) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { self.check(claims) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: &str, iat: u64) -> RefreshClaims {
        RefreshClaims {
            typ: "tollgate-refresh".into(),
            iss: "t".into(),
            sub: sub.into(),
            aud: "r".into(),
            prv: "local".into(),
            iat,
            exp: iat + 1000,
            jti: jti.into(),
            sid: None,
            epo: None,
            iat_ms: None,
            aid: None,
            ats: None,
        }
    }

    #[test]
    fn each_kind_of_revocation_covers_exactly_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("revocations.json"));
        let now = unix_now();
        let a1 = claims("alice", "a1", now - 10);
        let a2 = claims("alice", "a2", now - 10);
        let b1 = claims("bob", "b1", now - 10);
        assert!(!store.check(&a1).unwrap());

        store.revoke_sync(Revocation::Token { jti: "a1".into(), exp: now + 100 }).unwrap();
        assert!(store.check(&a1).unwrap());
        assert!(!store.check(&a2).unwrap());

        store.revoke_sync(Revocation::User { username: "alice".into(), before_ms: (now - 5) * 1000 + 999 }).unwrap();
        assert!(store.check(&a2).unwrap());
        assert!(!store.check(&b1).unwrap());
        assert!(!store.check(&claims("alice", "a3", now)).unwrap(), "tokens issued after the revocation still work");

        store.revoke_sync(Revocation::All { before_ms: now * 1000 + 999 }).unwrap();
        assert!(store.check(&b1).unwrap());
        assert!(!store.check(&claims("bob", "b2", now + 1)).unwrap());
    }

    #[test]
    fn a_token_issued_in_the_same_second_after_a_revocation_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("revocations.json"));
        let revoked_at = 1_800_000_000_500; // half-way through a second
        store.revoke_sync(Revocation::User { username: "alice".into(), before_ms: revoked_at }).unwrap();
        let at = |ms: u64| RefreshClaims { iat_ms: Some(ms), ..claims("alice", &format!("t{ms}"), ms / 1000) };
        assert!(store.check(&at(revoked_at - 100)).unwrap(), "issued just before: revoked");
        assert!(!store.check(&at(revoked_at + 100)).unwrap(), "issued just after, same second: works");
        assert!(store.check(&claims("alice", "old", revoked_at / 1000)).unwrap(), "no iat_ms in that second: revoked");
        // What earlier versions wrote (seconds) still counts.
        let legacy = RevocationList { users: [("bob".to_string(), 1_800_000_000)].into(), ..Default::default() };
        assert!(legacy.covers(&claims("bob", "b", 1_800_000_000)));
        assert!(!legacy.covers(&claims("bob", "b", 1_800_000_001)));
    }

    #[test]
    fn a_second_store_on_the_same_file_sees_revocations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.json");
        let server = FileStore::new(&path);
        let cli = FileStore::new(&path);
        let c = claims("alice", "x", unix_now());
        assert!(!server.check(&c).unwrap());
        cli.revoke_sync(Revocation::Token { jti: "x".into(), exp: unix_now() + 100 }).unwrap();
        assert!(server.check(&c).unwrap());
    }

    #[test]
    fn expired_token_revocations_are_pruned() {
        let mut list = RevocationList::default();
        list.apply(Revocation::Token { jti: "old".into(), exp: 1 });
        list.apply(Revocation::Token { jti: "new".into(), exp: unix_now() + 100 });
        assert_eq!(list.tokens.keys().collect::<Vec<_>>(), vec!["new"]);
    }

    #[test]
    fn a_corrupt_file_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.json");
        std::fs::write(&path, b"{not json").unwrap();
        let store = FileStore::new(&path);
        assert!(store.check(&claims("alice", "x", 1)).is_err());
    }
}
