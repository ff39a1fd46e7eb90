//! The parameters of the token protocol, read from the raw query or form body (docker repeats `scope=`,
//! which typed extractors reject), Basic credentials, and the checks every handler makes on them: the
//! service is one of ours, the scopes parse. The one place where what a client sent becomes
//! [`Credentials`]: a Basic header, or the grant type of a `POST /token` with its fields.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};

use super::audit::Audit;
use super::error::ApiError;
use crate::app::AppState;
use crate::authn::{Credentials, DEVICE_CODE_GRANT, TOKEN_EXCHANGE_GRANT};
use crate::scope::{split_scopes, Scope};
use crate::support::clip;

/// Longest Authorization header accepted. A Basic header with a refresh token is well under 2 KiB.
const MAX_AUTH_HEADER: usize = 8192;
/// Longest single parameter value (passwords, refresh tokens).
const MAX_PARAM_LEN: usize = 8192;

/// Basic credentials in the wild come with and without padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The request parameters of either method.
#[derive(Default)]
pub(crate) struct Params {
    pub service: Option<String>,
    pub scopes: Vec<String>,
    pub account: Option<String>,
    pub client_id: Option<String>,
    pub offline_token: Option<String>,
    pub grant_type: Option<String>,
    pub access_type: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
    pub device_code: Option<SecretString>,
    /// Token exchange (RFC 8693).
    pub subject_token: Option<SecretString>,
    pub subject_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub audience: Option<String>,
}

fn set_once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), ApiError> {
    match slot {
        Some(existing) if *existing != value => {
            Err(ApiError::BadRequest(format!("parameter {name} is given twice with different values")))
        }
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn set_secret_once(slot: &mut Option<SecretString>, name: &str, value: String) -> Result<(), ApiError> {
    match slot {
        Some(existing) if existing.expose_secret() != value => {
            Err(ApiError::BadRequest(format!("parameter {name} is given twice with different values")))
        }
        _ => {
            *slot = Some(SecretString::from(value));
            Ok(())
        }
    }
}

impl Params {
    pub(crate) fn parse(raw: &[u8], max_scopes: usize) -> Result<Params, ApiError> {
        let mut p = Params::default();
        let mut count = 0usize;
        for (k, v) in form_urlencoded::parse(raw) {
            count += 1;
            if count > max_scopes + 32 {
                return Err(ApiError::BadRequest(format!(
                    "too many parameters (at most {max_scopes} scopes are accepted)"
                )));
            }
            if v.len() > MAX_PARAM_LEN {
                return Err(ApiError::BadRequest(format!("parameter {k} is longer than {MAX_PARAM_LEN} bytes")));
            }
            let v = v.into_owned();
            match k.as_ref() {
                "service" => set_once(&mut p.service, "service", v)?,
                "scope" => p.scopes.push(v),
                "account" => set_once(&mut p.account, "account", v)?,
                "client_id" => set_once(&mut p.client_id, "client_id", v)?,
                "offline_token" => set_once(&mut p.offline_token, "offline_token", v)?,
                "grant_type" => set_once(&mut p.grant_type, "grant_type", v)?,
                "access_type" => set_once(&mut p.access_type, "access_type", v)?,
                "username" => set_once(&mut p.username, "username", v)?,
                "password" => set_secret_once(&mut p.password, "password", v)?,
                "refresh_token" => set_secret_once(&mut p.refresh_token, "refresh_token", v)?,
                "device_code" => set_secret_once(&mut p.device_code, "device_code", v)?,
                "subject_token" => set_secret_once(&mut p.subject_token, "subject_token", v)?,
                "subject_token_type" => set_once(&mut p.subject_token_type, "subject_token_type", v)?,
                "requested_token_type" => set_once(&mut p.requested_token_type, "requested_token_type", v)?,
                "audience" => set_once(&mut p.audience, "audience", v)?,
                // Unknown parameters are ignored, as OAuth2 requires.
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Read a form body of at most `max` bytes. A `Content-Length` above `max` is answered 413 before a byte of
/// the body is read (a client declaring 10 GiB and sending nothing gets its answer at once); a chunked body
/// (skopeo, podman) is cut off at `max`.
pub(crate) async fn read_body(headers: &HeaderMap, body: axum::body::Body, max: usize) -> Result<Bytes, ApiError> {
    if let Some(declared) = headers.get(header::CONTENT_LENGTH) {
        let declared = declared.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(n) if n > max as u64 => return Err(ApiError::PayloadTooLarge(max)),
            Some(_) => {}
            None => return Err(ApiError::BadRequest("Content-Length is not a number".into())),
        }
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(max)
        } else {
            ApiError::BadRequest("could not read the request body".into())
        }
    })
}

/// Credentials from a Basic header.
pub(crate) struct Basic {
    pub username: String,
    pub password: SecretString,
}

pub(crate) fn parse_basic(headers: &HeaderMap) -> Result<Option<Basic>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    if value.len() > MAX_AUTH_HEADER {
        return Err(ApiError::BadRequest(format!("Authorization header is longer than {MAX_AUTH_HEADER} bytes")));
    }
    let text =
        value.to_str().map_err(|_| ApiError::BadRequest("Authorization header contains non-ASCII bytes".into()))?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::BadRequest(format!(
            "Authorization scheme {:?} is not supported by the token endpoint; use Basic",
            clip(scheme, 20)
        )));
    }
    let decoded = BASE64_LENIENT
        .decode(rest.trim())
        .map_err(|_| ApiError::BadRequest("malformed Basic credentials: not valid base64".into()))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| ApiError::BadRequest("malformed Basic credentials: not UTF-8".into()))?;
    let (username, password) = decoded.split_once(':').ok_or_else(|| {
        ApiError::BadRequest("malformed Basic credentials: no ':' between username and password".into())
    })?;
    Ok(Some(Basic { username: username.to_string(), password: SecretString::from(password.to_string()) }))
}

pub(crate) fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1" | "yes"))
}

pub(crate) fn check_service(state: &AppState, service: Option<&str>) -> Result<String, ApiError> {
    let service = service.ok_or_else(|| ApiError::BadRequest("service parameter is required".into()))?;
    if state.settings.token.services.iter().any(|s| s == service) {
        Ok(service.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "unknown service {:?}; this server issues tokens for: {}",
            clip(service, 100),
            state.settings.token.services.join(", ")
        )))
    }
}

pub(crate) fn parse_scopes(state: &AppState, raw: &[String]) -> Result<Vec<Scope>, ApiError> {
    let list = split_scopes(raw.iter().map(String::as_str), state.settings.server.max_scopes)
        .map_err(|e| ApiError::BadRequest(format!("{e} (server.max_scopes)")))?;
    list.into_iter().map(|s| Scope::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))).collect()
}

/// Subject token types a workload JWT may be announced as (RFC 8693).
const JWT_TOKEN_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
];

/// The credentials of `GET /token` and `/whoami`: the Basic header, or none.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    Ok(match parse_basic(headers)? {
        Some(Basic { username, password }) => Credentials::Basic { username, secret: password },
        None => Credentials::Anonymous,
    })
}

impl Params {
    /// The credentials of a `POST /token`, by its grant type, each with the fields it requires.
    pub(crate) fn credentials(&self) -> Result<Credentials, ApiError> {
        let required = |field: Option<&SecretString>, name: &str, grant: &str| {
            field.cloned().ok_or_else(|| ApiError::BadRequest(format!("{name} is required for {grant}")))
        };
        match self.grant_type.as_deref() {
            Some("password") => Ok(Credentials::PasswordGrant {
                username: self
                    .username
                    .clone()
                    .ok_or_else(|| ApiError::BadRequest("username is required for grant_type=password".into()))?,
                secret: required(self.password.as_ref(), "password", "grant_type=password")?,
            }),
            Some("refresh_token") => Ok(Credentials::RefreshToken {
                token: required(self.refresh_token.as_ref(), "refresh_token", "grant_type=refresh_token")?,
                username: self.username.clone(),
            }),
            Some(DEVICE_CODE_GRANT) => Ok(Credentials::DeviceCode {
                code: required(self.device_code.as_ref(), "device_code", "the device_code grant")?,
            }),
            Some(TOKEN_EXCHANGE_GRANT) => self.exchange(),
            Some(other) => Err(ApiError::UnsupportedGrant(clip(other, 64).into_owned())),
            None => Err(ApiError::BadRequest("grant_type is required on POST /token".into())),
        }
    }

    /// Token exchange (RFC 8693): a workload's JWT (`subject_token`) for a registry access token.
    fn exchange(&self) -> Result<Credentials, ApiError> {
        let subject_token = self
            .subject_token
            .clone()
            .ok_or_else(|| ApiError::BadRequest("subject_token is required for token exchange".into()))?;
        match self.subject_token_type.as_deref() {
            Some(t) if JWT_TOKEN_TYPES.contains(&t) => {}
            Some(t) => {
                return Err(ApiError::BadRequest(format!(
                    "subject_token_type {:?} is not supported: use urn:ietf:params:oauth:token-type:jwt",
                    clip(t, 100)
                )))
            }
            None => return Err(ApiError::BadRequest("subject_token_type is required for token exchange".into())),
        }
        match self.requested_token_type.as_deref() {
            None | Some("urn:ietf:params:oauth:token-type:access_token") => Ok(Credentials::TokenExchange { subject_token }),
            Some(t) => Err(ApiError::BadRequest(format!(
                "requested_token_type {:?} is not supported: tollgate issues urn:ietf:params:oauth:token-type:access_token",
                clip(t, 100)
            ))),
        }
    }
}

/// What every token request names besides its credentials: the registry, and the scopes, checked.
pub(crate) struct Target {
    pub service: String,
    pub scopes: Vec<Scope>,
}

impl Target {
    /// Check `service` (as asked) and `scopes`, recording both in the audit line on the way (the service
    /// as asked, so a refusal of an unknown one says which).
    pub(crate) fn parse(
        state: &AppState,
        service: Option<&str>,
        scopes: &[String],
        audit: &mut Audit,
    ) -> Result<Target, ApiError> {
        audit.service = clip(service.unwrap_or(""), 100).into_owned();
        let service = check_service(state, service)?;
        let scopes = parse_scopes(state, scopes)?;
        audit.requested = scopes.iter().map(Scope::text).collect();
        Ok(Target { service, scopes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn params_accept_repeated_scopes_and_refuse_conflicting_singletons() {
        let p =
            Params::parse(b"scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apush&service=r&service=r", 64).unwrap();
        assert_eq!(p.scopes.len(), 2);
        assert_eq!(p.service.as_deref(), Some("r"));
        let err = Params::parse(b"service=a&service=b", 64).err().unwrap();
        assert!(matches!(err, ApiError::BadRequest(m) if m.contains("service is given twice")));
        let many = "scope=x&".repeat(200);
        assert!(Params::parse(many.as_bytes(), 64).is_err());
    }

    #[test]
    fn basic_header_parsing_reports_each_malformation() {
        let mut h = HeaderMap::new();
        let cases: &[(&[u8], &str)] = &[
            (b"Bearer abc", "use Basic"),
            (b"Basic !!!", "not valid base64"),
            (b"Basic /w==", "not UTF-8"),
            (b"Basic YWxpY2U=", "no ':'"),
            (b"Basic \xff\xfe", "non-ASCII"),
        ];
        for (raw, want) in cases {
            h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(raw).unwrap());
            let err = parse_basic(&h).err().unwrap();
            assert!(
                matches!(&err, ApiError::BadRequest(m) if m.contains(want)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(raw)
            );
        }
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("basic YWxpY2U6cHc6Og"));
        let b = parse_basic(&h).unwrap().unwrap();
        assert_eq!(b.username, "alice");
        assert_eq!(b.password.expose_secret(), "pw::", "passwords may contain ':' and padding is optional");
    }
}
