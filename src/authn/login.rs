//! What authentication takes and gives: the credentials a client presented, the login they prove, and
//! why none came out of them.

use std::sync::Arc;

use secrecy::SecretString;

use crate::identity::{AuthMethod, Identity, MAX_USERNAME_LEN};

/// What a client presented to prove who it is, as parsed from the request.
pub enum Credentials {
    /// No credentials at all: the anonymous identity, whose grants the policy decides.
    Anonymous,
    /// `Authorization: Basic` on `GET /token` or `/whoami`. The secret may be a password, a robot secret, a
    /// refresh token (CI systems, containerd's GET fallback), or a workload's JWT.
    Basic { username: String, secret: SecretString },
    /// `grant_type=password` (containerd, `tollgate login`): the same secrets as Basic.
    PasswordGrant { username: String, secret: SecretString },
    /// `grant_type=refresh_token`; the username, when given, must be the token's.
    RefreshToken { token: SecretString, username: Option<String> },
    /// The device-code grant: one poll of a device login started at `POST /device/code`.
    DeviceCode { code: SecretString },
    /// Token exchange: a workload's JWT (`subject_token`) for a registry token.
    TokenExchange { subject_token: SecretString },
}

impl Credentials {
    /// The username the credentials claim, before anything is verified (for the audit line of a refusal).
    pub fn claimed_user(&self) -> Option<&str> {
        match self {
            Credentials::Basic { username, .. } | Credentials::PasswordGrant { username, .. } => Some(username),
            Credentials::RefreshToken { username, .. } => username.as_deref(),
            _ => None,
        }
    }
}

/// Who the request is from and how they proved it.
#[derive(Debug, Clone)]
pub struct Login {
    pub identity: Arc<Identity>,
    pub method: AuthMethod,
    /// The login name a password login typed: a directory may accept another form of the name than the
    /// identity's (`alice@corp.example` for `alice`), and clients repeat what was typed as `account`.
    pub typed: Option<String>,
    /// The access token this login came from: its grants are cut to the token's scope.
    pub token: Option<Arc<TokenUse>>,
    /// When the interactive login behind this one happened (Unix seconds): now for a password or device
    /// login, the original login's for a refresh token (its `ats`), None when unknown.
    pub auth_time: Option<u64>,
}

/// An access token being used: which one (its id, never its secret) and what its scope allows.
#[derive(Debug, Clone)]
pub struct TokenUse {
    pub id: String,
    /// Scope entries in the rules' syntax (`repository:payments/**:pull,push`).
    pub scope: Vec<String>,
}

impl Login {
    pub(super) fn new(identity: Arc<Identity>, method: AuthMethod) -> Login {
        let auth_time =
            matches!(method, AuthMethod::Password | AuthMethod::Device).then(crate::support::time::unix_now);
        Login { identity, method, typed: None, token: None, auth_time }
    }

    /// `account`, when a client sends it, must name the authenticated user: its username, or the name a
    /// password login typed. A workload login's username is whatever the client had to send with its JWT
    /// (clients repeat it as `account`), so it names nobody and is not compared. Anonymous requests may
    /// not name an account at all.
    pub fn check_account(&self, account: Option<&str>) -> Result<(), LoginError> {
        let Some(a) = account.filter(|a| !a.is_empty()) else { return Ok(()) };
        let shown = || crate::support::clip(a, 100);
        match self.method {
            // An access token's username is whatever the client had to send (`docker login -u anything`).
            AuthMethod::Workload | AuthMethod::AccessToken => Ok(()),
            AuthMethod::Anonymous => {
                Err(LoginError::Refused(Refusal::new(format!("credentials are required for account {:?}", shown()))))
            }
            _ if a == self.identity.username || self.typed.as_deref() == Some(a) => Ok(()),
            _ => Err(LoginError::Malformed(format!("account {:?} does not match the authenticated user", shown()))),
        }
    }
}

/// A refusal: what the client is told, and what only the log and the audit line learn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the client is told. Never says which part of the credentials was wrong.
    pub message: String,
    /// Whose credentials they were, when that is known only now (a verified refresh token's subject).
    pub subject: Option<String>,
    /// Why the provider refused (`account locked out (AD data 775)`), for the log and the audit line.
    pub reason: String,
}

impl Refusal {
    pub(super) fn new(message: impl Into<String>) -> Refusal {
        Refusal { message: message.into(), subject: None, reason: String::new() }
    }

    pub(super) fn because(mut self, reason: impl Into<String>) -> Refusal {
        self.reason = reason.into();
        self
    }
}

/// What a 503 is about, in the client's words: which of the things a token needs is missing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outage {
    /// An identity provider (by name) cannot be reached.
    Provider(String),
    /// tollgate's shared state (revocations, sessions: Redis or the data directory) cannot be reached.
    State,
    /// The shared state is reachable but set up so it may forget revocations (Redis evicting keys): refresh
    /// tokens cannot be trusted until an operator fixes it.
    StateUnsafe,
    /// Too many password checks are running in this process: nothing is down, retry in a moment.
    Busy,
}

impl Outage {
    /// The outage of a provider that could not answer.
    pub fn of_provider(provider: Option<&str>) -> Outage {
        Outage::Provider(provider.unwrap_or("none").to_string())
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Outage::Provider(name) => format!("the identity provider {name:?} cannot be reached; try again shortly"),
            Outage::State => {
                "tollgate's shared state (revocations and sessions) cannot be reached; try again shortly".into()
            }
            Outage::StateUnsafe => "refresh tokens cannot be checked safely now: tollgate's shared state may forget \
                                    revocations (an operator must fix its Redis); log in with your password"
                .into(),
            Outage::Busy => "too many logins are being checked at once; try again in a few seconds".into(),
        }
    }

    /// How many seconds the client should wait (`Retry-After`).
    pub fn retry_after(&self) -> u64 {
        match self {
            Outage::Busy => 2,
            Outage::StateUnsafe => 30,
            _ => 5,
        }
    }
}

/// Why no identity came out of the credentials, by what the client is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// 400: the credentials are malformed (a username too long, a subject token that is no JWT, an
    /// `account` naming someone else). The message names the problem.
    Malformed(String),
    /// 401 with a Basic challenge: wrong or unknown credentials.
    Refused(Refusal),
    /// 401 `invalid_grant`: a refresh token or an exchanged token that is refused.
    InvalidGrant(Refusal),
    /// 400 with an RFC 8628 code: `authorization_pending` and `slow_down` tell the client to keep polling;
    /// `access_denied`, `expired_token` and `invalid_grant` end the device login.
    Device { code: &'static str, message: String },
    /// 429: too many failed logins from this address or for this account; nothing was checked.
    Limited { retry_after: u64 },
    /// 503: something the answer needs cannot be had now; `Outage` says what (the client is told), the
    /// detail is for the log.
    Unavailable(Outage, String),
}

impl LoginError {
    /// The refusal, for the audit line, when this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            LoginError::Refused(r) | LoginError::InvalidGrant(r) => Some(r),
            _ => None,
        }
    }
}

impl From<crate::identity::limiter::Limited> for LoginError {
    fn from(l: crate::identity::limiter::Limited) -> LoginError {
        LoginError::Limited { retry_after: l.retry_after }
    }
}

/// A username as a client may send it: bounded (nothing a client sends may grow a cache entry beyond it)
/// and free of control characters.
pub(super) fn check_username(u: &str) -> Result<(), LoginError> {
    if u.len() > MAX_USERNAME_LEN {
        return Err(LoginError::Malformed(format!("username is longer than {MAX_USERNAME_LEN} bytes")));
    }
    if u.chars().any(char::is_control) {
        return Err(LoginError::Malformed("username contains control characters".into()));
    }
    Ok(())
}
