//! Log output: human-readable text for terminals, one JSON object per line
//! for containers. The level comes from `RUST_LOG` when set, else from
//! `[log] level`, which a reload changes in place.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[cfg_attr(feature = "server", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-11-24T20:32:52Z INFO gatehouse::access: request client=… status=200`.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{…},"target":…}` per line.
    Json,
}

/// A log filter directive (`info`, `gatehouse=debug,warn`), checked when
/// the config is read, so that a typo is a config error rather than a
/// server that logs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    /// Parses a directive as tracing-subscriber's `EnvFilter` reads it,
    /// and more strictly: a bare word must be a level. `EnvFilter` takes
    /// `verbose` or `warning` for a target name, which silences everything
    /// else, so the server would start and log nothing at all.
    pub fn parse(text: &str) -> Result<Self, String> {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let bare = !directive.contains(['=', '[', '{']);
            if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
                return Err(format!(
                    "`{directive}` is not a level (trace, debug, info, warn, error, off); a target needs one too, like `{directive}=debug`"
                ));
            }
        }
        EnvFilter::try_new(text)
            .map(|_| Self(text.to_owned()))
            .map_err(|e| e.to_string())
    }

    /// The directive as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn filter(&self) -> EnvFilter {
        // Parsed once already; should it fail now, fall back to `info`.
        EnvFilter::try_new(&self.0).unwrap_or_else(|_| EnvFilter::new("info"))
    }
}

impl Default for LogFilter {
    fn default() -> Self {
        Self("info".to_owned())
    }
}

/// Changes the log level of the running process (on reload), unless
/// `RUST_LOG` set it.
#[derive(Clone)]
pub struct LogLevel {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    format: LogFormat,
}

impl LogLevel {
    /// A level that cannot be changed (logging set up elsewhere, as text).
    pub fn fixed() -> Self {
        Self {
            handle: None,
            format: LogFormat::Text,
        }
    }

    /// The format log lines are written in: what is shown outside the log
    /// stream (the generated user's banner) depends on it.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Applies a filter such as `debug` or `gatehouse=debug,warn`.
    /// Returns whether it was applied (`false` when `RUST_LOG` rules).
    pub fn set(&self, level: &LogFilter) -> Result<bool, String> {
        let Some(handle) = &self.handle else {
            return Ok(false);
        };
        handle.reload(level.filter()).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// Installs the global log subscriber (stderr). `level` is a filter
/// directive such as `info` or `gatehouse=debug,info`; `RUST_LOG` wins, and
/// then the level cannot be changed by a reload. Calling it twice keeps the
/// first subscriber.
pub fn init(format: LogFormat, level: &LogFilter) -> LogLevel {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_rules = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| level.filter());
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Json => registry
            // Flattened: `{"level":…,"message":…,"status":200}`, the fields
            // at the top level where log tools look for them.
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_ansi(
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            ))
            .try_init(),
    };
    LogLevel {
        handle: (installed.is_ok() && !env_rules).then_some(handle),
        format,
    }
}
