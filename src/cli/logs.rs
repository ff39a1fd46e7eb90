//! Logging: text for people, or one JSON object per line for machines.
//!
//! The JSON lines are written here rather than by tracing-subscriber's JSON formatter, because that one can
//! only write a field as a string or a number: the audit line's lists (`requested`, `granted`, `rules`)
//! came out as JSON text inside a JSON string, which no log pipeline can query. Here a field of the audit
//! target that holds a JSON array is written as that array. Every line has `timestamp` (RFC 3339, UTC,
//! microseconds), `level`, `target`, `message`, the event's fields, and `spans` (the names of the spans it
//! happened in, innermost last) when there are any.
//!
//! Lines are written off the request path: formatting happens where the event is, the write to stderr on
//! a thread of its own, through a queue of at most [`QUEUE_LINES`] lines. A request never waits for the
//! log: when the queue is full (stderr is read slower than lines come, for minutes), the newest lines are
//! dropped and counted (`tollgate_log_lines_dropped_total`). A graceful shutdown writes every queued line
//! before the process ends ([`LogGuard`]).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogFormat, Settings};

/// The target of the audit line (see `http::audit`).
pub const AUDIT_TARGET: &str = "tollgate::audit";
/// Fields of the audit line that hold JSON arrays.
const AUDIT_LISTS: [&str; 3] = ["requested", "granted", "rules"];

/// Most log lines queued for stderr. At the audit line's size (under 1 KiB) that is at most 8 MiB, and at
/// 20,000 requests a second it is half a second of lines that a slow reader may lag behind.
pub const QUEUE_LINES: usize = 8192;

/// Keeps the log writer running; dropping it writes out every queued line. Hold it until the server has
/// shut down.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] tracing_appender::non_blocking::WorkerGuard);

/// Set up logging: JSON for machines or text for people, filtered by TOLLGATE_LOG or log.level, written to
/// stderr off the request path.
pub fn init_tracing(settings: &Settings) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    use std::io::IsTerminal as _;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUE_LINES)
        .lossy(true)
        .thread_name("tollgate-log")
        // The writer thread writes every line it finds queued, then flushes: one write for a burst of lines
        // instead of one per line, while a lone line still goes out at once.
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    crate::telemetry::count_dropped_log_lines(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.log.format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    LogGuard(guard)
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
}
