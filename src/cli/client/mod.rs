//! The commands that run on a user's machine (or a cluster node), not on the server: `tollgate login`
//! (`login.rs`), the docker credential helper (`credhelper.rs`) and the kubelet image credential provider
//! (`kubelet.rs`). Docker's config files are read and written in `docker_config.rs`; the few facts they
//! all need (a JWT's claims read without verifying, owner-only JSON files) are here.

pub mod credhelper;
pub mod docker_config;
pub mod kubelet;
pub mod login;
pub mod tokens;

use std::path::Path;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The claims of a JWT, read without verifying it: only to learn what the token says of itself (the
/// user's name, when it ends) for a token just received from tollgate or handed over by the kubelet;
/// whoever accepts the token verifies it.
pub(crate) fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The JSON document in the file at `path`, or None when there is no such file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match crate::support::fs::read_if_exists(path).map_err(|e| e.to_string())? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: not JSON: {e}", path.display()))
        }
        None => Ok(None),
    }
}

/// Write `value` as JSON to `path`, creating its directory. The files the clients write hold credentials:
/// they are written owner-only, in a directory that is owner-only (0700) whatever the umask.
pub(crate) fn write_json_private(path: &Path, value: &impl Serialize) -> Result<(), String> {
    crate::support::fs::create_private_parent(path).map_err(|e| e.to_string())?;
    let text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    crate::support::fs::write_private(path, &text).map_err(|e| e.to_string())
}
