//! Short-lived server-side state that replicas must share: device-flow sessions and the sessions of OIDC
//! users (their group snapshot and, when the IdP issued one, the IdP refresh token).
//!
//! The store is a small key-value interface with an expiry per entry, so that a shared implementation
//! (Redis: `SET key value EXAT t`) is a drop-in later. The embedded default is one JSON file under the data
//! directory, written like the revocation list (exclusive lock, atomic rename) and readable only by its
//! owner, because values hold secrets (IdP refresh tokens and device codes). Keys never contain a secret:
//! callers hash secrets before using them as keys. Nothing here logs a value.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::support::fs::{update_locked, Access};
use crate::support::time::unix_now;
use crate::support::BoxFuture;

/// A key-value store with an expiry (Unix seconds) per entry. Expired entries are never returned.
pub trait SessionStore: Send + Sync {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: serde_json::Value,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>>;
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// SHA-256 of a secret, hex: the form in which a secret handle (a device code) becomes a key.
pub fn hashed_key(prefix: &str, secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:{hex}")
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entries {
    #[serde(default)]
    entries: BTreeMap<String, StoredEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEntry {
    expires_at: u64,
    value: serde_json::Value,
}

/// The embedded default: `DATA_DIR/sessions.json`. Every operation locks the file, so a second process
/// (another replica on the same volume, a CLI) sees the same state. The file stays small: expired entries
/// are dropped on every write.
pub struct FileSessionStore {
    path: PathBuf,
}

impl FileSessionStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSessionStore { path: path.into() }
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Sessions(format!("{}: {e}", self.path.display()))
    }

    fn parse(&self, bytes: Option<Vec<u8>>) -> Result<Entries, StoreError> {
        match bytes {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| self.err(format!("not a valid session file: {e}")))
            }
            None => Ok(Entries::default()),
        }
    }

    /// Run `f` on the entries under an exclusive lock; write them back (atomically, owner-only) when it says so.
    fn with_lock<T>(&self, f: impl FnOnce(&mut Entries) -> (T, bool)) -> Result<T, StoreError> {
        update_locked(&self.path, Access::Private, |current| {
            let mut entries = self.parse(current)?;
            let (out, dirty) = f(&mut entries);
            if !dirty {
                return Ok((out, None));
            }
            let now = unix_now();
            entries.entries.retain(|_, e| e.expires_at > now);
            let json = serde_json::to_vec(&entries).map_err(|e| self.err(e))?;
            Ok((out, Some(json)))
        })
        .map_err(|e| StoreError::Sessions(e.to_string()))?
    }

    pub fn put_sync(&self, key: &str, value: serde_json::Value, expires_at: u64) -> Result<(), StoreError> {
        self.with_lock(|e| {
            e.entries.insert(key.to_string(), StoredEntry { expires_at, value });
            ((), true)
        })
    }

    pub fn get_sync(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let now = unix_now();
        self.with_lock(|e| (e.entries.get(key).filter(|e| e.expires_at > now).map(|e| e.value.clone()), false))
    }

    pub fn remove_sync(&self, key: &str) -> Result<(), StoreError> {
        self.with_lock(|e| ((), e.entries.remove(key).is_some()))
    }
}

impl SessionStore for FileSessionStore {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: serde_json::Value,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (key, path) = (key.to_string(), self.path.clone());
            blocking(move || FileSessionStore::new(path).put_sync(&key, value, expires_at)).await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let (key, path) = (key.to_string(), self.path.clone());
            blocking(move || FileSessionStore::new(path).get_sync(&key)).await
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (key, path) = (key.to_string(), self.path.clone());
            blocking(move || FileSessionStore::new(path).remove_sync(&key)).await
        })
    }
}

/// File locking blocks; keep it off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Sessions(format!("session store task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_a_second_store_on_the_same_file_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let a = FileSessionStore::new(&path);
        let b = FileSessionStore::new(&path);
        let now = unix_now();
        a.put_sync("device:1", serde_json::json!({"x": 1}), now + 100).unwrap();
        a.put_sync("device:old", serde_json::json!({"x": 2}), now - 1).unwrap();
        assert_eq!(b.get_sync("device:1").unwrap(), Some(serde_json::json!({"x": 1})));
        assert_eq!(b.get_sync("device:old").unwrap(), None, "expired entries are never returned");
        b.remove_sync("device:1").unwrap();
        assert_eq!(a.get_sync("device:1").unwrap(), None);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the file holds IdP refresh tokens: owner only");
    }

    #[test]
    fn hashed_keys_do_not_contain_the_secret() {
        let k = hashed_key("device", "very-secret-code");
        assert!(k.starts_with("device:") && !k.contains("very-secret-code"));
        assert_eq!(k, hashed_key("device", "very-secret-code"));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        std::fs::write(&path, b"{oops").unwrap();
        assert!(FileSessionStore::new(&path).get_sync("x").is_err());
    }
}
