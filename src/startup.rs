//! The binary's entry points around [`Application`]: `serve` and
//! `check-config`.

use std::future::Future;

use crate::app::Application;
pub use crate::app::StartError;
use crate::config::{Config, TlsSettings};
use crate::tls;

/// Checks what `serve` would check before binding, beyond the config
/// itself: that the TLS certificate and key load and fit together. (A
/// self-signed certificate is made only by `serve`; checking writes nothing.)
pub fn check(config: &Config) -> Result<(), StartError> {
    if matches!(config.tls, TlsSettings::Files { .. }) {
        tls::setup(&config.tls, &config.path)?;
    }
    Ok(())
}

/// Runs the server for `config` until `shutdown` resolves. `log` lets a
/// reload change the log level in place.
pub async fn serve(
    config: Config,
    log: crate::logging::LogLevel,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    Application::build(config, log).await?.run(shutdown).await
}
