//! The OpenID Connect provider: Keycloak, GitLab, Glewlwyd, or any certified provider.
//!
//! Three things happen here:
//! - `docker login -u alice` with her IdP password runs the resource-owner password grant at the IdP through
//!   tollgate's (confidential) client; the ID token is verified (signature with the discovered JWKS, refetched
//!   once when an unknown `kid` shows up; `iss`; `aud`; `exp`; the allowed algorithms) and the username and
//!   groups are read from it, or from userinfo.
//! - Device login: [`crate::identity::DeviceLogin`] starts the RFC 8628 flow at the IdP and polls it once per client poll;
//!   `src/http/device.rs` relays it to tollgate's own clients.
//! - Sessions: every login stores a session (group snapshot, and the IdP refresh token when the IdP issued
//!   one) in the shared session store; the tollgate refresh token carries its id (`sid`). When the refresh
//!   token comes back after the group snapshot is older than the identity cache TTL, the groups are re-read
//!   with the IdP refresh token, and an IdP refusal refuses the tollgate token. Without an IdP refresh token
//!   the snapshot is served until `max_group_age`, then a new login is needed.
//!
//! Token-endpoint calls are made here with reqwest rather than through `Client::exchange_*`, for two
//! reasons found against real providers: Glewlwyd answers refusals with an EMPTY body, which the crate
//! reports as a parse error indistinguishable from an IdP in trouble (we need 401 vs 503), and the crate's
//! device-token request polls in a loop, while the relay needs exactly one poll per client poll. The
//! crate still does discovery, the JWKS, the token-response and device-response types, and all of the
//! ID-token verification.

//! The files follow a login: `provider.rs` (the contract), `idp.rs` (talking to the IdP: discovery, JWKS,
//! token endpoint, userinfo), `claims.rs` (claims to an identity), `session.rs` (login sessions and their
//! re-check), `device.rs` (the device flow). The config entry is `crate::config::oidc`.

mod check;
mod claims;
mod device;
mod idp;
mod logout;
mod provider;
mod session;

pub use claims::map_groups;
pub use logout::{LEEWAY_SECS as LOGOUT_LEEWAY_SECS, MAX_TOKEN_LEN as MAX_LOGOUT_TOKEN_LEN};
pub use provider::OidcProvider;
