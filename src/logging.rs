//! Log output: human-readable text for terminals, one JSON object per line
//! for containers. The level comes from `RUST_LOG` when set, else from
//! `[log] level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-11-24T20:32:52Z INFO gatehouse::access: request client=… status=200`.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{…},"target":…}` per line.
    Json,
}

/// Installs the global log subscriber (stderr). `level` is a filter
/// directive such as `info` or `gatehouse=debug,info`; `RUST_LOG` wins.
/// Calling it twice keeps the first subscriber.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init(),
    };
}
