//! Start-up helpers around [`Application`]: the `serve` and `check-config`
//! entry points, the generated user, the open-file limit, pruning.

use std::future::Future;

use base64::Engine as _;

use crate::app::Application;
use crate::auth::BasicAuthLayer;
use crate::config::{Config, ConfigError, TlsSettings};
use crate::credentials;
use crate::secret::Password;
use crate::tls;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config (or a file it names) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("{path}: [server] listen: cannot bind {addr}: {io}")]
    Bind {
        /// The config file.
        path: std::path::PathBuf,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why (kept out of `source()` so it is printed once).
        io: std::io::Error,
    },
    /// The random password for the generated user could not be made.
    #[error("cannot generate a password: {0}")]
    Generate(String),
}

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

/// Raises the soft limit on open files to the hard limit (often 1,024 soft
/// against 1,048,576 hard), and warns when `max_connections` still cannot
/// be reached: each connection takes a descriptor, an upstream connection
/// another.
pub(crate) fn raise_file_limit(config: &Config) {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            match rlimit::getrlimit(rlimit::Resource::NOFILE) {
                Ok((soft, _)) => soft,
                Err(_) => return,
            }
        }
    };
    let wanted = (config.limits.max_connections as u64).saturating_add(64);
    if soft < wanted {
        tracing::warn!(
            open_files = soft,
            max_connections = config.limits.max_connections,
            "the open-file limit is below [limits] max_connections: accepts will fail before the cap is reached; raise `ulimit -n` or lower max_connections"
        );
    }
}

/// Returns the memory of limiter and lockout state that no longer matters.
pub(crate) async fn prune_periodically(layer: BasicAuthLayer) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        interval.tick().await;
        layer.prune();
    }
}

/// Makes `name` with a random password and prints the password once, on
/// stderr, outside the log stream.
pub(crate) fn generate_user(
    name: &str,
) -> Result<(String, argon2::password_hash::phc::PasswordHash), StartError> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| StartError::Generate(e.to_string()))?;
    let password = Password::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let text = credentials::hash_password(&password, credentials::default_params())
        .map_err(|e| StartError::Generate(e.to_string()))?;
    let hash = credentials::parse_phc(&text).map_err(|e| StartError::Generate(e.to_string()))?;
    eprintln!(
        "\n  No users are configured, so gatehouse made one for this run only:\n\n    username: {name}\n    password: {}\n\n  It is not saved anywhere. Add real users with `gatehouse hash-password`.\n",
        password.as_str()
    );
    Ok((name.to_owned(), hash))
}
