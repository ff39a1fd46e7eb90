//! Logging: text for people, or one JSON object per line for machines.
//!
//! The JSON lines are written here rather than by tracing-subscriber's JSON formatter, because that one can
//! only write a field as a string or a number: the audit line's lists (`requested`, `granted`, `rules`)
//! came out as JSON text inside a JSON string, which no log pipeline can query. Here a field of the audit
//! target that holds a JSON array is written as that array. Every line has `timestamp` (RFC 3339, UTC,
//! microseconds), `level`, `target`, `message`, the event's fields, and `spans` (the names of the spans it
//! happened in, innermost last) when there are any.
//!
//! Lines are written off the request path by `telemetry::log_writer`: a thread of its own writes stderr,
//! fed through a queue of at most [`QUEUE_LINES`] lines. A request never waits for the log: when the queue
//! is full (stderr is read slower than lines come, for minutes), the newest lines are dropped and counted
//! (`tollgate_log_lines_dropped_total`). A graceful shutdown writes every queued line before the process
//! ends ([`LogGuard`]). The audit line is not formatted here but on that thread, from the record a request
//! hands over (`telemetry::audit_line`), into the same bytes this formatter and tracing's text format make.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, Settings};
use crate::telemetry::log_writer::{self, AuditRoute, Format, LogWriter, WriterGuard};

/// The target of the audit line (see `http::audit`).
pub const AUDIT_TARGET: &str = crate::telemetry::audit_line::TARGET;
/// Fields of the audit line that hold JSON arrays.
const AUDIT_LISTS: [&str; 3] = ["requested", "granted", "rules"];

pub use crate::telemetry::log_writer::QUEUE_LINES;

/// Keeps the log writer running; dropping it writes out every queued line. Hold it until the server has
/// shut down.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] Option<WriterGuard>);

/// Set up logging: JSON for machines or text for people, filtered by TOLLGATE_LOG or log.level, written to
/// stderr off the request path.
pub fn init_tracing(settings: &Settings) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    use std::io::IsTerminal as _;
    let ansi = std::io::stderr().is_terminal();
    let format = match settings.log.format {
        LogFormat::Json => Format::Json,
        LogFormat::Text => Format::Text,
    };
    let (writer, guard) = match LogWriter::start(Box::new(std::io::stderr()), format) {
        Ok(started) => started,
        Err(e) => {
            // No thread for the log: write it from where it happens, as tracing does by default.
            let builder =
                tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
            let _ = match settings.log.format {
                LogFormat::Json => builder.event_format(JsonLines).try_init(),
                LogFormat::Text => builder.try_init(),
            };
            tracing::warn!(error = %e, "cannot start the log writer thread; logging from the request path");
            return LogGuard(None);
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer.clone()).with_ansi(ansi);
    let ours = match settings.log.format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .is_ok();
    // The filter is fixed for the life of the process: asked once whether it lets the audit line through.
    // Text in colours (a terminal) is left to tracing, whose colours the writer does not imitate.
    let route = if !tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
        AuditRoute::Off
    } else if ours && !(ansi && format == Format::Text) {
        AuditRoute::Queue
    } else {
        AuditRoute::Tracing
    };
    if ours {
        log_writer::install(writer, route);
    }
    LogGuard(Some(guard))
}

/// One JSON object per event.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string().into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        let mut fields = Fields { map: serde_json::Map::new(), audit: meta.target() == AUDIT_TARGET };
        event.record(&mut fields);
        line.extend(fields.map);
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope.from_root().map(|s| s.name().into()).collect();
            if !spans.is_empty() {
                line.insert("spans".into(), spans.into());
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The fields of one event as JSON values.
struct Fields {
    map: serde_json::Map<String, serde_json::Value>,
    audit: bool,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        self.map.insert(field.name().to_string(), value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.audit && AUDIT_LISTS.contains(&field.name()) {
            if let Ok(list @ serde_json::Value::Array(_)) = serde_json::from_str(value) {
                return self.put(field, list);
            }
        }
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn audit_lists_are_json_arrays_and_other_fields_keep_their_types() {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt().event_format(JsonLines).with_writer(move || out.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            let requested = serde_json::to_string(&["repository:a:pull", "repository:\"b\":push"]).unwrap();
            tracing::info!(target: "tollgate::audit", requested = %requested, status = 200u16, ok = true, "decision");
            tracing::info!(requested = "[1,2]", "not the audit target: a string stays a string");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["requested"], serde_json::json!(["repository:a:pull", "repository:\"b\":push"]));
        assert_eq!((lines[0]["status"].as_u64(), lines[0]["ok"].as_bool()), (Some(200), Some(true)));
        assert_eq!((lines[0]["message"].as_str(), lines[0]["target"].as_str()), (Some("decision"), Some(AUDIT_TARGET)));
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", lines[0]);
        assert_eq!(lines[1]["requested"], "[1,2]");
    }

    use crate::telemetry::audit_line::{self, AuditRecord, List};
    use proptest::prelude::*;

    /// What tracing made of the audit event of `r`, in `format`: the reference.
    fn traced(r: &AuditRecord<'_>, format: Format) -> Vec<u8> {
        let buf = Buffer::default();
        let out = buf.clone();
        let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(move || out.clone());
        let emit = || audit_line::trace(r);
        match format {
            Format::Json => tracing::subscriber::with_default(builder.event_format(JsonLines).finish(), emit),
            Format::Text => tracing::subscriber::with_default(builder.finish(), emit),
        }
        let bytes = buf.0.lock().unwrap().clone();
        bytes
    }

    /// `line` with its timestamp (the first thing in a text line, the value of `timestamp` in a JSON one)
    /// replaced by `<time>`: tracing reads the clock when it formats, the record when it was made.
    fn without_time(line: &[u8]) -> String {
        let text = String::from_utf8(line.to_vec()).unwrap();
        let at = text.find("\"timestamp\":\"").map_or(0, |i| i + "\"timestamp\":\"".len());
        let len = "2026-12-06T22:15:50.123456Z".len();
        assert!(text.get(at..at + len).is_some_and(|t| t.ends_with('Z')), "no timestamp where expected: {text}");
        format!("{}<time>{}", &text[..at], &text[at + len..])
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9./:_-]{1,30}",
            proptest::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect()),
            "[\"\\\\\n\t\u{1b}\u{7f}\u{0}é✓\u{300}\u{200b} a]{0,10}",
        ]
    }

    /// The owned values of a random record: strings, lists, switches, addresses, numbers.
    #[derive(Debug, Clone)]
    struct Owned {
        texts: Vec<String>,
        lists: Vec<Vec<String>>,
        v4: bool,
        ip: ([u8; 4], [u16; 8]),
        status: u16,
        refresh: bool,
        at: std::time::SystemTime,
        statics: [usize; 4],
    }

    impl Owned {
        fn record(&self) -> AuditRecord<'_> {
            let t = |i: usize| self.texts[i].as_str();
            let pick = |i: usize, from: &[&'static str]| from[self.statics[i] % from.len()];
            AuditRecord {
                at: self.at,
                endpoint: pick(0, &["token", "whoami", "access_tokens"]),
                method: pick(1, &["GET", "POST", "DELETE"]),
                outcome: pick(2, &crate::telemetry::OUTCOMES),
                status: self.status,
                subject: t(0),
                provider: t(1),
                auth_method: pick(3, &["none", "password", "robot", "workload", "access_token"]),
                client_ip: if self.v4 { self.ip.0.into() } else { self.ip.1.into() },
                client_id: t(2),
                service: t(3),
                requested: List::Strings(&self.lists[0]),
                granted: List::Strings(&self.lists[1]),
                rules: List::Strings(&self.lists[2]),
                refresh_token_issued: self.refresh,
                jti: t(4),
                workload: [t(5), t(6), t(7)],
                access_token: t(8),
                reason: t(9),
                provider_reason: t(10),
            }
        }
    }

    prop_compose! {
        fn any_record()(
            texts in proptest::collection::vec(any_text(), 11),
            long_client_id in any::<bool>(),
            lists in proptest::collection::vec(proptest::collection::vec(any_text(), 0..4), 3),
            v4 in any::<bool>(),
            ip in any::<([u8; 4], [u16; 8])>(),
            status in any::<u16>(),
            refresh in any::<bool>(),
            secs in 0u64..253_402_300_800,
            micros in 0u32..1_000_000,
            statics in any::<[usize; 4]>(),
        ) -> Owned {
            let mut texts = texts;
            if long_client_id {
                texts[2] += &"x".repeat(120);
            }
            let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000);
            Owned { texts, lists, v4, ip, status, refresh, at, statics }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The log writer's audit line is, byte for byte, the line tracing wrote for the audit event, in
        /// both formats, whatever the strings hold (quotes, backslashes, control characters, non-ASCII).
        #[test]
        fn the_writers_audit_line_is_the_line_tracing_wrote(owned in any_record()) {
            let r = owned.record();
            // Through the queue's bytes, as the writer thread reads the record.
            let mut queued = Vec::new();
            audit_line::encode(&r, &mut queued);
            let back = audit_line::decode(&queued).unwrap();
            for format in [Format::Text, Format::Json] {
                let mut ours = Vec::new();
                audit_line::write(&back, format, &mut ours);
                prop_assert_eq!(without_time(&ours), without_time(&traced(&r, format)), "{:?}", format);
            }
            let mut again = Vec::new();
            audit_line::write(&back, Format::Json, &mut again);
            let mut direct = Vec::new();
            audit_line::write(&r, Format::Json, &mut direct);
            prop_assert_eq!(again, direct, "the timestamp survives the queue to the microsecond");
        }

        /// The writer's timestamp is humantime's (the one tracing and `JsonLines` write).
        #[test]
        fn the_writers_timestamp_is_rfc3339_with_microseconds(secs in 0u64..253_402_300_800, micros in 0u32..1_000_000) {
            let at = std::time::UNIX_EPOCH + std::time::Duration::new(secs, micros * 1000 + 999);
            let mut ours = Vec::new();
            audit_line::timestamp(at, &mut ours);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), humantime::format_rfc3339_micros(at).to_string());
        }
    }

    #[test]
    fn an_ordinary_audit_line_in_both_formats() {
        let requested = vec!["repository:payments/api:push,pull".into(), "repository:prod/web:push".into()];
        let granted = vec!["repository:payments/api:push,pull".into()];
        let rules = vec!["team-namespaces".into()];
        let r = AuditRecord {
            at: std::time::UNIX_EPOCH + std::time::Duration::new(1_796_595_350, 123_456_789),
            endpoint: "token",
            method: "GET",
            outcome: "partial",
            status: 200,
            subject: "alice",
            provider: "local",
            auth_method: "password",
            client_ip: "203.0.113.5".parse().unwrap(),
            client_id: "docker",
            service: "registry.example.com",
            requested: List::Strings(&requested),
            granted: List::Strings(&granted),
            rules: List::Strings(&rules),
            refresh_token_issued: false,
            jti: "T6bOHEcVSlKCndlG-dxKrA",
            workload: ["", "", ""],
            access_token: "",
            reason: "",
            provider_reason: "",
        };
        let mut text = Vec::new();
        audit_line::write(&r, Format::Text, &mut text);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2026-12-06T22:15:50.123456Z  INFO tollgate::audit: decision endpoint=\"token\" method=\"GET\" \
             outcome=\"partial\" status=200 subject=\"alice\" provider=local auth_method=\"password\" \
             client_ip=203.0.113.5 client_id=docker service=registry.example.com \
             requested=[\"repository:payments/api:push,pull\",\"repository:prod/web:push\"] \
             granted=[\"repository:payments/api:push,pull\"] rules=[\"team-namespaces\"] refresh_token_issued=false \
             jti=\"T6bOHEcVSlKCndlG-dxKrA\" workload_issuer=\"\" workload_subject=\"\" workload_jti=\"\" \
             access_token=\"\" reason= provider_reason=\n"
        );
        let mut json = Vec::new();
        audit_line::write(&r, Format::Json, &mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["timestamp"], "2026-12-06T22:15:50.123456Z");
        assert_eq!(v["requested"][1], "repository:prod/web:push");
        assert_eq!((v["status"].as_u64(), v["refresh_token_issued"].as_bool()), (Some(200), Some(false)));
    }
}
