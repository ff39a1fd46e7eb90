//! The `log:` section: the format and the level of the log.

use serde::Deserialize;

use super::problem::Problem;

/// `log:` as written in the config.
#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    /// json or text. Default: text.
    format: Option<String>,
    /// A tracing filter such as info or tollgate=debug. Default: info.
    level: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// The validated `log:` section.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter.
    pub level: String,
}

/// Validate `log:`; an unknown format is a problem and text is used.
pub fn validate(raw: RawLog, problems: &mut Vec<Problem>) -> LogSettings {
    let format = match raw.format.as_deref().unwrap_or("text") {
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            problems.push(Problem::new("log.format", format!("{other:?} is not json or text")));
            LogFormat::Text
        }
    };
    LogSettings { format, level: raw.level.unwrap_or_else(|| "info".into()) }
}
