//! The one error of the shared-state stores (files or Redis).

/// A store could not be read or written. Callers fail closed: a refresh token whose revocation state cannot
/// be read is refused, a session that cannot be read is not "absent"; both answer 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("revocation store: {0}")]
    Revocations(String),
    #[error("session store: {0}")]
    Sessions(String),
    #[error("access token store: {0}")]
    AccessTokens(String),
    /// The store works but may forget revocations (a Redis that evicts keys when full): what depends on
    /// them is refused until an operator fixes it.
    #[error("revocation store: {0}")]
    Unsafe(String),
}
