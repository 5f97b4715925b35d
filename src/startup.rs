//! From a validated [`Config`] to a running server: TLS, users, the auth
//! layer, the routes, and the messages a user needs at start-up.

use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;

use crate::auth::BasicAuthLayer;
use crate::config::{Backend, Config, ConfigError, TlsSettings};
use crate::credentials::{self, CredentialStore, Verifier};
use crate::limit::ClientIpResolver;
use crate::metrics::MetricsSources;
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::routes::AppOptions;
use crate::secret::Password;
use crate::server::Server;
use crate::{routes, tls};

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
    raise_file_limit(&config);
    let tls = tls::setup(&config.tls, &config.path)?;
    let mut users = config.auth.users.clone();
    if users.is_empty()
        && let Some(name) = &config.auth.generated_user
    {
        users.push(generate_user(name)?);
    }
    let store = CredentialStore::new(users).map_err(|e| StartError::Generate(e.to_string()))?;
    if store.has_mixed_params() {
        tracing::warn!(
            "users' hashes use different argon2 parameters: response times can tell unknown users from users with less common parameters; rehash all users with the same parameters"
        );
    }
    let weak = store.weak_users();
    if !weak.is_empty() {
        tracing::warn!(users = ?weak, "argon2 parameters below OWASP's minimum (m=19456, t=2); rehash with `gatehouse hash-password`");
    }
    let verifier = Verifier::new(Arc::new(store), config.auth.max_concurrent_verifications)
        .with_queue(config.auth.verify_queue, config.auth.verify_timeout);
    let layer = BasicAuthLayer::builder(&config.auth.realm, verifier)
        .public_paths(config.auth.public.iter().cloned())
        .public_upgrades(config.auth.public_upgrades)
        .trusted_proxies(config.server.trusted_proxies.clone())
        .per_ip(config.rate_limit.per_ip)
        .per_user(config.rate_limit.per_user)
        .max_tracked_keys(config.rate_limit.max_tracked_keys)
        .lockout(config.lockout)
        .cache(config.cache)
        .build()
        .map_err(|e| ConfigError::invalid(&config.path, "[auth]", e.to_string()))?;
    let pruning = tokio::spawn(prune_periodically(layer.clone()));
    let certificate = match (&config.tls, &tls) {
        (TlsSettings::Files { .. }, Some(setup)) => Some(Arc::clone(&setup.certificate)),
        _ => None,
    };
    let reloader = Reloader::new(config.clone(), layer.clone(), certificate, log);
    let mut upstream_errors = Arc::default();
    let backend = match &config.backend {
        Backend::Api => routes::Backend::Api,
        Backend::Static(settings) => routes::Backend::Static(settings.clone()),
        Backend::Upstream(upstream) => {
            let clients = ClientIpResolver::new(config.server.trusted_proxies.clone());
            let proxy = Proxy::new((**upstream).clone(), clients, tls.is_some(), &config.path)?;
            upstream_errors = proxy.errors();
            routes::Backend::Proxy(Arc::new(proxy))
        }
    };
    let sources = MetricsSources {
        auth: Arc::clone(layer.counters()),
        connections: Arc::default(),
        suppressed_log_lines: Arc::default(),
        upstream_errors,
        reloads: Arc::clone(reloader.counters()),
    };
    let options = AppOptions {
        max_body_bytes: config.limits.max_body_bytes,
        suppressed_log_lines: Arc::clone(&sources.suppressed_log_lines),
        metrics: config
            .metrics
            .path
            .clone()
            .map(|path| (path, sources.clone())),
    };
    let app = routes::app(layer, backend, options);

    let server_config = tls.as_ref().map(|t| Arc::clone(&t.server_config));
    let server = Server::bind(
        config.server.listen,
        server_config,
        app,
        config.limits.clone(),
    )
    .await
    .map_err(|io| StartError::Bind {
        path: config.path.clone(),
        addr: config.server.listen,
        io,
    })?
    .with_counters(Arc::clone(&sources.connections))
    .with_trusted_proxies(ClientIpResolver::new(config.server.trusted_proxies.clone()));
    let metrics_listener = match config.metrics.listen {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|io| StartError::Bind {
                        path: config.path.clone(),
                        addr,
                        io,
                    })?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!("metrics on http://{bound}/metrics");
            // The same connection hygiene as the main listener: header and
            // idle timeouts, a small connection cap, a per-address cap.
            let app = routes::metrics_app(sources.clone());
            let server = Server::from_listener(listener, None, app, config.limits.for_metrics());
            Some(tokio::spawn(server.run(std::future::pending())))
        }
        None => None,
    };
    let triggers = reloader.triggers();
    let reloading = tokio::spawn(reloader.run(triggers));
    let addr = server.local_addr().map_err(|io| StartError::Bind {
        path: config.path.clone(),
        addr: config.server.listen,
        io,
    })?;

    match &tls {
        None => tracing::warn!(
            "TLS is disabled ([tls] enabled = false): passwords cross the network in clear text unless a TLS-terminating proxy is in front"
        ),
        Some(setup) => {
            if let Some(self_signed) = &setup.self_signed {
                match &self_signed.cert_path {
                    Some(path) => {
                        tracing::info!(cert = %path.display(), fingerprint = %self_signed.fingerprint, "self-signed certificate for localhost written; trust it with `curl --cacert {}`", path.display())
                    }
                    None => {
                        tracing::warn!(fingerprint = %self_signed.fingerprint, error = self_signed.write_error.as_deref().unwrap_or(""), "self-signed certificate could not be written")
                    }
                }
            }
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    match &config.backend {
        Backend::Api => tracing::info!("serving the built-in API (/api/whoami, /api/stats)"),
        Backend::Upstream(upstream) => {
            tracing::info!(upstream = %upstream.url, "forwarding authenticated requests")
        }
        Backend::Static(settings) => {
            tracing::info!(root = %settings.root.display(), "serving static files")
        }
    }
    tracing::info!("listening on {scheme}://{addr}");
    server.run(shutdown).await;
    pruning.abort();
    reloading.abort();
    if let Some(task) = metrics_listener {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (often 1,024 soft
/// against 1,048,576 hard), and warns when `max_connections` still cannot
/// be reached: each connection takes a descriptor, an upstream connection
/// another.
fn raise_file_limit(config: &Config) {
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
async fn prune_periodically(layer: BasicAuthLayer) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        interval.tick().await;
        layer.prune();
    }
}

/// Makes `name` with a random password and prints the password once, on
/// stderr, outside the log stream.
fn generate_user(
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
