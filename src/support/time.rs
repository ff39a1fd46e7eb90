//! Time as tollgate writes and reads it: Unix seconds, RFC 3339 text, and durations in config files.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// RFC 3339 UTC timestamp of Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// A duration that could not be read; its message quotes the input and shows the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration; write e.g. 500ms, 30s, 5m, 12h or 90d")]
pub struct DurationError {
    pub input: String,
}

/// Read a duration as people write one in a config file or on the command line (`500ms`, `5m`, `90d`,
/// `1h 30m`). The one parser of the crate, so every key accepts the same forms and says the same thing.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s.trim()).map_err(|_| DurationError { input: s.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_errors_quote_the_input() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let e = parse_duration("5 parsecs").unwrap_err();
        assert_eq!(e.to_string(), "\"5 parsecs\" is not a duration; write e.g. 500ms, 30s, 5m, 12h or 90d");
    }

    #[test]
    fn rfc3339_formats_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_953_600), "2026-11-29T12:00:00Z");
    }
}
