//! The audit line's record and its two spellings, written by the log writer's thread.
//!
//! A request describes its decision as an [`AuditRecord`] of borrowed strings, which the log writer copies
//! into its queue as bytes ([`encode`]; no allocation, and the request frees its own strings, on its own
//! thread, as before) and its thread reads back ([`decode`]); no formatting happens on the request's thread. [`write`] turns a record into the very bytes
//! tracing made of the audit event before (the `text` format of tracing-subscriber without colours, or
//! `cli::logs`' JSON lines), field for field, so nothing a log pipeline parses changes; [`trace`] is that
//! event, used where no log writer is installed and as the reference the tests compare [`write`] with.
//! A record never holds a secret: only ids (`jti`, an access token's id), names, addresses and reasons.

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The line formats [`write`] writes: one JSON object per line, or tracing's text line (without
/// colours; a terminal that gets colours gets its audit lines from tracing itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// The target of the audit line.
pub const TARGET: &str = "tollgate::audit";

/// One decision, as the audit line records it: every field as the line spells it (`""` for an absent
/// subject, jti, access token or workload claim).
#[derive(Debug, Clone, Copy)]
pub struct AuditRecord<'a> {
    /// When the decision was made.
    pub at: SystemTime,
    pub endpoint: &'a str,
    pub method: &'a str,
    pub outcome: &'a str,
    pub status: u16,
    /// The authenticated username, or the one a failed login claimed.
    pub subject: &'a str,
    pub provider: &'a str,
    pub auth_method: &'a str,
    pub client_ip: IpAddr,
    /// As the client sent it (`""` when absent); the line spells an empty one `none` and clips it to 100
    /// characters.
    pub client_id: &'a str,
    pub service: &'a str,
    pub requested: List<'a>,
    pub granted: List<'a>,
    pub rules: List<'a>,
    pub refresh_token_issued: bool,
    pub jti: &'a str,
    /// A workload token's `iss`, `sub` and `jti`.
    pub workload: [&'a str; 3],
    /// The id of the access token a login used.
    pub access_token: &'a str,
    /// What the client was told about a refusal.
    pub reason: &'a str,
    /// What the identity provider said about a refusal (for the operator).
    pub provider_reason: &'a str,
}

/// A list of strings: the request's own, or read back from the queue.
#[derive(Debug, Clone, Copy)]
pub enum List<'a> {
    Strings(&'a [String]),
    /// `count` strings, each a little-endian `u32` length and its bytes.
    Encoded {
        count: u32,
        bytes: &'a [u8],
    },
}

impl<'a> List<'a> {
    fn iter(self) -> impl Iterator<Item = &'a str> {
        let (strings, encoded) = match self {
            List::Strings(s) => (s, None),
            List::Encoded { count, bytes } => (&[][..], Some((count, Reader(bytes)))),
        };
        strings
            .iter()
            .map(String::as_str)
            .chain(encoded.into_iter().flat_map(|(count, mut r)| (0..count).map_while(move |_| r.str())))
    }

    fn len(self) -> u32 {
        match self {
            List::Strings(s) => s.len() as u32,
            List::Encoded { count, .. } => count,
        }
    }
}

impl AuditRecord<'_> {
    fn client_id(&self) -> std::borrow::Cow<'_, str> {
        match self.client_id {
            "" => "none".into(),
            id => crate::support::clip(id, 100),
        }
    }
}

/// Append `r` to `out` as bytes [`decode`] reads back.
pub fn encode(r: &AuditRecord<'_>, out: &mut Vec<u8>) {
    let since = r.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(&since.as_secs().to_le_bytes());
    out.extend_from_slice(&since.subsec_nanos().to_le_bytes());
    out.extend_from_slice(&r.status.to_le_bytes());
    out.push(u8::from(r.refresh_token_issued));
    match r.client_ip {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    for s in r.strings() {
        put_str(s, out);
    }
    for list in [r.requested, r.granted, r.rules] {
        out.extend_from_slice(&list.len().to_le_bytes());
        for s in list.iter() {
            put_str(s, out);
        }
    }
}

impl<'a> AuditRecord<'a> {
    /// The string fields, in the order [`encode`] writes them.
    fn strings(&self) -> [&'a str; 15] {
        let [w0, w1, w2] = self.workload;
        [
            self.endpoint,
            self.method,
            self.outcome,
            self.subject,
            self.provider,
            self.auth_method,
            self.client_id,
            self.service,
            self.jti,
            w0,
            w1,
            w2,
            self.access_token,
            self.reason,
            self.provider_reason,
        ]
    }
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    // A field longer than 4 GiB cannot come from a request; it would be cut, never misread.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

/// Reads what [`encode`] wrote.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        // Written from a `&str` (whole, as no field reaches 4 GiB): valid UTF-8.
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn list(&mut self) -> Option<List<'a>> {
        let count = self.u32()?;
        let start = self.0;
        for _ in 0..count {
            self.str()?;
        }
        Some(List::Encoded { count, bytes: &start[..start.len() - self.0.len()] })
    }
}

/// The record [`encode`] wrote into `bytes`; `None` if they are not such a record.
pub fn decode(bytes: &[u8]) -> Option<AuditRecord<'_>> {
    let mut r = Reader(bytes);
    let secs = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let nanos = r.u32()?;
    let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
    let refresh_token_issued = r.take(1)? == [1];
    let client_ip = match r.take(1)? {
        [4] => IpAddr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?),
        _ => IpAddr::from(<[u8; 16]>::try_from(r.take(16)?).ok()?),
    };
    let mut s = [""; 15];
    for field in &mut s {
        *field = r.str()?;
    }
    let [endpoint, method, outcome, subject, provider, auth_method, client_id, service, jti, w0, w1, w2, access_token, reason, provider_reason] =
        s;
    Some(AuditRecord {
        at: UNIX_EPOCH + std::time::Duration::new(secs, nanos),
        endpoint,
        method,
        outcome,
        status,
        subject,
        provider,
        auth_method,
        client_ip,
        client_id,
        service,
        requested: r.list()?,
        granted: r.list()?,
        rules: r.list()?,
        refresh_token_issued,
        jti,
        workload: [w0, w1, w2],
        access_token,
        reason,
        provider_reason,
    })
}

/// A list as JSON text, as the tracing event carries it.
fn json_list(items: List<'_>) -> String {
    let mut out = Vec::new();
    json_array(items, &mut out);
    String::from_utf8(out).unwrap_or_else(|_| "[]".into())
}

/// The audit event through tracing, formatted by whatever subscriber is in place.
pub fn trace(r: &AuditRecord<'_>) {
    tracing::info!(
        target: "tollgate::audit",
        endpoint = r.endpoint,
        method = r.method,
        outcome = r.outcome,
        status = r.status,
        subject = r.subject,
        provider = %r.provider,
        auth_method = r.auth_method,
        client_ip = %r.client_ip,
        client_id = %r.client_id(),
        service = %r.service,
        requested = %json_list(r.requested),
        granted = %json_list(r.granted),
        rules = %json_list(r.rules),
        refresh_token_issued = r.refresh_token_issued,
        jti = r.jti,
        workload_issuer = r.workload[0],
        workload_subject = r.workload[1],
        workload_jti = r.workload[2],
        access_token = r.access_token,
        reason = %r.reason,
        provider_reason = %r.provider_reason,
        "decision"
    );
}

/// Append the record's line in `format`, newline included, to `out`.
pub fn write(r: &AuditRecord<'_>, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Text => text(r, out),
        Format::Json => json(r, out),
    }
}

/// tracing-subscriber's full text format without colours: timestamp, level, target, message, then the
/// fields; a `&str` field is written as Rust's `{:?}` spells it, a `%` field as it is.
fn text(r: &AuditRecord<'_>, out: &mut Vec<u8>) {
    timestamp(r.at, out);
    out.extend_from_slice(b"  INFO tollgate::audit: decision");
    let debug = |out: &mut Vec<u8>, name: &str, value: &str| {
        field(out, name);
        debug_str(value, out);
    };
    let display = |out: &mut Vec<u8>, name: &str, value: &str| {
        field(out, name);
        out.extend_from_slice(value.as_bytes());
    };
    let list = |out: &mut Vec<u8>, name: &str, items: List<'_>| {
        field(out, name);
        json_array(items, out);
    };
    debug(out, "endpoint", r.endpoint);
    debug(out, "method", r.method);
    debug(out, "outcome", r.outcome);
    field(out, "status");
    number(u64::from(r.status), out);
    debug(out, "subject", r.subject);
    display(out, "provider", r.provider);
    debug(out, "auth_method", r.auth_method);
    field(out, "client_ip");
    let _ = write!(out, "{}", r.client_ip);
    display(out, "client_id", &r.client_id());
    display(out, "service", r.service);
    list(out, "requested", r.requested);
    list(out, "granted", r.granted);
    list(out, "rules", r.rules);
    display(out, "refresh_token_issued", if r.refresh_token_issued { "true" } else { "false" });
    debug(out, "jti", r.jti);
    debug(out, "workload_issuer", r.workload[0]);
    debug(out, "workload_subject", r.workload[1]);
    debug(out, "workload_jti", r.workload[2]);
    debug(out, "access_token", r.access_token);
    display(out, "reason", r.reason);
    display(out, "provider_reason", r.provider_reason);
    out.push(b'\n');
}

fn field(out: &mut Vec<u8>, name: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
}

/// `{:?}` of a string: quoted, with Rust's escapes. Printable ASCII without quotes or backslashes (every
/// ordinary value) is copied as it is; anything else goes through `Debug` itself.
fn debug_str(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// `cli::logs`' JSON line: one object, its keys in order (a `serde_json::Map` without `preserve_order`
/// sorts them), strings escaped by serde_json, the three lists as arrays.
fn json(r: &AuditRecord<'_>, out: &mut Vec<u8>) {
    let string = |out: &mut Vec<u8>, key: &str, value: &str| {
        key_of(out, key);
        json_str(value, out);
    };
    let list = |out: &mut Vec<u8>, key: &str, items: List<'_>| {
        key_of(out, key);
        json_array(items, out);
    };
    out.push(b'{');
    // The first key without its comma.
    json_str("access_token", out);
    out.push(b':');
    json_str(r.access_token, out);
    string(out, "auth_method", r.auth_method);
    string(out, "client_id", &r.client_id());
    key_of(out, "client_ip");
    out.push(b'"');
    let _ = write!(out, "{}", r.client_ip); // an address has nothing to escape
    out.push(b'"');
    string(out, "endpoint", r.endpoint);
    list(out, "granted", r.granted);
    string(out, "jti", r.jti);
    string(out, "level", "INFO");
    string(out, "message", "decision");
    string(out, "method", r.method);
    string(out, "outcome", r.outcome);
    string(out, "provider", r.provider);
    string(out, "provider_reason", r.provider_reason);
    string(out, "reason", r.reason);
    key_of(out, "refresh_token_issued");
    out.extend_from_slice(if r.refresh_token_issued { b"true" } else { b"false" });
    list(out, "requested", r.requested);
    list(out, "rules", r.rules);
    string(out, "service", r.service);
    key_of(out, "status");
    number(u64::from(r.status), out);
    string(out, "subject", r.subject);
    string(out, "target", TARGET);
    key_of(out, "timestamp");
    out.push(b'"');
    timestamp(r.at, out);
    out.push(b'"');
    string(out, "workload_issuer", r.workload[0]);
    string(out, "workload_jti", r.workload[2]);
    string(out, "workload_subject", r.workload[1]);
    out.extend_from_slice(b"}\n");
}

/// `,"key":` (every key but the first).
fn key_of(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON string as serde_json writes it.
fn json_str(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A list of strings as a compact JSON array, as serde_json writes it.
fn json_array(items: List<'_>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(item, out);
    }
    out.push(b']');
}

fn number(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// RFC 3339 in UTC with microseconds (`2026-12-06T22:15:50.123456Z`), as tracing-subscriber and
/// humantime write it.
pub fn timestamp(at: SystemTime, out: &mut Vec<u8>) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil(secs / 86_400);
    let sod = secs % 86_400;
    // Years 1970 to 9999: four digits.
    digits(year.min(9999), 4, out);
    out.push(b'-');
    digits(month, 2, out);
    out.push(b'-');
    digits(day, 2, out);
    out.push(b'T');
    digits(sod / 3600, 2, out);
    out.push(b':');
    digits(sod / 60 % 60, 2, out);
    out.push(b':');
    digits(sod % 60, 2, out);
    out.push(b'.');
    digits(u64::from(since.subsec_micros()), 6, out);
    out.push(b'Z');
}

/// `n` in `width` decimal digits, zero-padded (`n` < 10^width).
fn digits(n: u64, width: u32, out: &mut Vec<u8>) {
    for k in (0..width).rev() {
        out.push(b'0' + (n / 10u64.pow(k) % 10) as u8);
    }
}

/// The civil date (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}
