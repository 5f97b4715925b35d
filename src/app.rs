//! The application: everything a config describes, built and bound, then
//! run until told to stop. In the style of zero-to-production's
//! `Application::build` and mini-redis's `server::run(listener, shutdown)`:
//!
//! ```no_run
//! # async fn example(config: gatehouse::config::Config) -> Result<(), gatehouse::app::StartError> {
//! use gatehouse::app::Application;
//! use gatehouse::logging::LogLevel;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
//! let app = Application::build_on(config, LogLevel::fixed(), Some(listener)).await?;
//! println!("serving on {}", app.local_addr());
//! app.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::auth::BasicAuthLayer;
use crate::config::{Backend, Config, ConfigError, TlsSettings};
use base64::Engine as _;

use crate::credentials::{self, CredentialStore, Verifier};
use crate::limit::ClientIpResolver;
use crate::logging::{LogFormat, LogLevel};
use crate::metrics::{self, ConnectionCounters, RequestMetrics};
use crate::reload::{Reloader, Triggers};
use crate::routes::{self, AppOptions};
use crate::secret::Password;
use crate::server::{App, Listener, Server};
use crate::tls::{self, TlsSetup};
use prometheus_client::metrics::counter::Counter;

/// A built, bound server with its background work, ready to run.
pub struct Application {
    config: Config,
    server: Server,
    addr: SocketAddr,
    metrics: Option<Server>,
    metrics_addr: Option<SocketAddr>,
    /// The separate forward-auth listener, if there is one.
    forward_auth: Option<Server>,
    forward_auth_addr: Option<SocketAddr>,
    layer: BasicAuthLayer,
    reloader: Reloader,
    triggers: Triggers,
    tls: Option<TlsSetup>,
    /// The generated user's password file (JSON logs), removed at the end.
    password_file: Option<PathBuf>,
    /// The Redis connection shared with other replicas (`[cluster]`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// A generated user: its name and hash.
type GeneratedUser = (String, argon2::password_hash::phc::PasswordHash);

impl Application {
    /// Builds everything and binds `[server] listen`.
    pub async fn build(config: Config, log: LogLevel) -> Result<Self, StartError> {
        Self::build_on(config, log, None).await
    }

    /// Builds everything, serving on `listener` when given one (tests bind
    /// port 0 themselves), otherwise binding `[server] listen`.
    pub async fn build_on(
        config: Config,
        log: LogLevel,
        listener: Option<TcpListener>,
    ) -> Result<Self, StartError> {
        raise_file_limit(&config);
        // Bind first: a second instance on the same config must fail here,
        // before it writes anything (a new self-signed certificate would
        // break the running instance's clients).
        let bind_error = |key: &'static str, addr: &dyn std::fmt::Display, io| StartError::Bind {
            path: config.path.clone(),
            key,
            addr: addr.to_string(),
            io,
        };
        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind(config.server.listen)
                .await
                .map_err(|io| bind_error("[server] listen", &config.server.listen, io))?,
        };
        let addr = listener
            .local_addr()
            .map_err(|io| bind_error("[server] listen", &config.server.listen, io))?;
        let tls = tls::setup(&config.tls, &config.path)?;
        let cluster = match &config.cluster {
            Some(settings) => Some(
                crate::cluster::Cluster::new(
                    settings,
                    &config.rate_limit,
                    config.lockout,
                    config.auth.verify_timeout,
                )
                .map_err(|e| ConfigError::invalid(&config.path, "[cluster]", e.to_string()))?,
            ),
            None => None,
        };
        let (layer, password_file) = auth_layer(&config, log.format(), cluster.as_ref())?;
        let certificate = match (&config.tls, &tls) {
            (TlsSettings::Files { .. }, Some(setup)) => Some(Arc::clone(&setup.certificate)),
            _ => None,
        };
        let reloader = Reloader::new(config.clone(), layer.clone(), certificate, log);
        // The one registry: each part registers its own metrics, once.
        let connections = Arc::new(ConnectionCounters::default());
        let suppressed_lines = Counter::default();
        let requests = Arc::new(RequestMetrics::default());
        let mut registry = metrics::registry();
        {
            let ours = registry.sub_registry_with_prefix("gatehouse");
            metrics::exposition::register_build_info(ours);
            requests.register(ours);
            metrics::exposition::register_auth(ours, Arc::clone(layer.counters()));
            reloader.counters().register(ours);
            connections.register(ours);
            metrics::register_suppressed_lines(ours, &suppressed_lines);
            if let Some(cluster) = &cluster {
                cluster.register(ours);
            }
        }
        let registry = Arc::new(registry);
        let (forward_auth, forward_auth_addr) =
            match config.forward_auth.as_ref().and_then(|f| f.listen.as_ref()) {
                Some(wanted) => {
                    let listener = Listener::bind(wanted)
                        .await
                        .map_err(|io| bind_error("[forward_auth] listen", wanted, io))?;
                    let bound = listener.local_addr();
                    // Plain HTTP, with the main listener's connection hygiene.
                    let app = routes::forward_auth_app(
                        layer.clone(),
                        suppressed_lines.clone(),
                        Arc::clone(&requests),
                    );
                    // Counted with the main listener's connections.
                    let server = Server::from_listener(listener, None, app, config.limits.clone())
                        .with_counters(Arc::clone(&connections))
                        .with_trusted_proxies(ClientIpResolver::new(
                            config.server.trusted_proxies.clone(),
                        ));
                    (Some(server), bound)
                }
                None => (None, None),
            };
        let options = AppOptions {
            max_body_bytes: config.limits.max_body_bytes,
            suppressed_log_lines: suppressed_lines,
            metrics: config
                .metrics
                .path
                .clone()
                .map(|p| (p, Arc::clone(&registry))),
            requests,
            tls: tls.is_some(),
            config_path: config.path.clone(),
        };
        let router = routes::app(layer.clone(), &config.backend, options)?;
        let server_config = tls.as_ref().map(|t| Arc::clone(&t.server_config));
        let server = Server::from_listener(listener, server_config, router, config.limits.clone())
            .with_counters(connections)
            .with_trusted_proxies(ClientIpResolver::new(config.server.trusted_proxies.clone()));
        let (metrics, metrics_addr) = match config.metrics.listen {
            Some(wanted) => {
                let listener = TcpListener::bind(wanted)
                    .await
                    .map_err(|io| bind_error("[metrics] listen", &wanted, io))?;
                let bound = listener.local_addr().unwrap_or(wanted);
                // The same connection hygiene as the main listener: header and
                // idle timeouts, a small connection cap, a per-address cap.
                let app = routes::metrics_app(Arc::clone(&registry));
                let server = Server::from_listener(
                    listener,
                    None,
                    App::new(app),
                    config.limits.for_metrics(),
                );
                (Some(server), Some(bound))
            }
            None => (None, None),
        };
        // Signals and file watches are set up now, before anyone is told the
        // server is up: an early SIGHUP would otherwise end the process.
        let triggers = reloader.triggers();
        Ok(Self {
            config,
            server,
            addr,
            metrics,
            metrics_addr,
            forward_auth,
            forward_auth_addr,
            layer,
            reloader,
            triggers,
            tls,
            password_file,
            cluster,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the separate metrics listener, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address of the separate forward-auth listener, if there is one
    /// on TCP (not on a Unix socket).
    pub fn forward_auth_addr(&self) -> Option<SocketAddr> {
        self.forward_auth_addr
    }

    /// Serves until `shutdown` resolves, then drains connections and stops
    /// every background task (pruning, reloading, the metrics listener).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        self.announce();
        let mut tasks = JoinSet::new();
        tasks.spawn(prune_periodically(self.layer));
        if let Some(cluster) = self.cluster {
            tasks.spawn(cluster.run());
        }
        tasks.spawn(self.reloader.run(self.triggers));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        if let Some(metrics) = self.metrics {
            let mut stopped = stopped.clone();
            tasks.spawn(metrics.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
        }
        if let Some(forward_auth) = self.forward_auth {
            let mut stopped = stopped.clone();
            tasks.spawn(forward_auth.run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
        }
        self.server.run(shutdown).await;
        let _ = stop.send(true);
        tasks.shutdown().await;
        if let Some(file) = &self.password_file {
            // The password was for this run only.
            let _ = std::fs::remove_file(file);
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// What a user needs to know at start-up: TLS, the backend, the address.
    fn announce(&self) {
        // (TLS being off is one of the config warnings, logged already.)
        if let Some(self_signed) = self.tls.as_ref().and_then(|t| t.self_signed.as_ref()) {
            match &self_signed.cert_path {
                Some(path) => {
                    let how = if self_signed.reused {
                        "reused"
                    } else {
                        "written"
                    };
                    tracing::info!(cert = %path.display(), fingerprint = %self_signed.fingerprint, "self-signed certificate for localhost {how}; trust it with `curl --cacert {}`", path.display())
                }
                None => {
                    tracing::warn!(fingerprint = %self_signed.fingerprint, error = self_signed.write_error.as_deref().unwrap_or(""), "self-signed certificate could not be written")
                }
            }
        }
        match &self.config.backend {
            Backend::Api => tracing::info!("serving the built-in API (/api/whoami, /api/stats)"),
            Backend::Upstream(upstream) => {
                tracing::info!(upstream = %upstream.url, "forwarding authenticated requests")
            }
            Backend::Static(settings) => {
                tracing::info!(root = %settings.root.display(), "serving static files")
            }
        }
        if let Some(addr) = self.metrics_addr {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        if let (Some(forward), Some(addr)) = (&self.config.forward_auth, self.forward_auth_addr) {
            tracing::info!("forward-auth decisions on http://{addr}{}", forward.path);
        } else if let Some(forward) = &self.config.forward_auth
            && let Some(socket @ crate::config::ListenAddress::Unix { .. }) = &forward.listen
        {
            tracing::info!("forward-auth decisions on {socket} at {}", forward.path);
        } else if let Some(forward) = &self.config.forward_auth {
            tracing::info!(
                path = forward.path.as_str(),
                "forward-auth decisions on the main listener"
            );
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{}", self.addr);
    }
}

/// The users (with the generated one when none are listed), their store,
/// the warnings about them, and the auth layer over them.
fn auth_layer(
    config: &Config,
    format: LogFormat,
    cluster: Option<&Arc<crate::cluster::Cluster>>,
) -> Result<(BasicAuthLayer, Option<PathBuf>), StartError> {
    let mut users = config.auth.users.clone();
    let mut password_file = None;
    if users.is_empty()
        && let Some(name) = &config.auth.generated_user
    {
        let (user, file) = generate_user(name, config, format)?;
        users.push((user.0, user.1.into()));
        password_file = file;
    }
    users.extend(config.client_secrets());
    let store = CredentialStore::new(users).map_err(|e| StartError::Generate(e.to_string()))?;
    crate::warnings::log(&crate::warnings::config_warnings(config, &store));
    let verifier = Verifier::builder(Arc::new(store))
        .max_concurrent(config.auth.max_concurrent_verifications)
        .queue(config.auth.verify_queue, config.auth.verify_timeout)
        .build();
    let users_now = verifier.store();
    let mut builder = BasicAuthLayer::builder(config.auth.realm.as_str(), verifier);
    if let Some(settings) = &config.tokens {
        let tokens = crate::tokens::load(settings, &config.path)?;
        if tokens.is_ephemeral() {
            tracing::warn!(
                kid = tokens.signing_key().verifying().kid(),
                "tokens are signed with a key made at start-up ([tokens] ephemeral_key): they stop working at restart; for production set signing_key (`gatehouse gen-signing-key`)"
            );
        }
        builder = builder.tokens(tokens, &settings.login_path, settings.cache_max_entries);
    }
    if let Some(settings) = &config.api_keys {
        let keys = crate::tokens::ApiKeys::load(&settings.file)?;
        let orphans: Vec<&str> = keys
            .users()
            .into_iter()
            .filter(|user| !users_now.contains(user))
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(users = ?orphans, file = %settings.file.display(), "API keys for users that are not configured: those keys are refused until the users exist");
        }
        builder = builder.api_keys(keys, settings.header.clone());
    }
    if let Some(oauth) = &config.oauth {
        builder = builder.oauth(oauth.clone());
        if let (Some(cluster), Some(tokens)) = (cluster, &config.tokens) {
            // Codes and refresh tokens in Redis: redeemed at any replica.
            builder = builder.grant_store(Box::new(crate::cluster::RedisGrants::new(
                Arc::clone(cluster),
                crate::auth::oauth::limits(tokens.policy.ttl),
                oauth.refresh_ttl,
            )));
        }
    }
    let bearer = config.tokens.is_some() || config.api_keys.is_some();
    builder = builder.access(crate::auth::access::AccessRules::from_settings(
        &config.access,
        bearer,
    ));
    if let Some(forward) = &config.forward_auth {
        builder = builder.forward_auth(crate::auth::ForwardAuth {
            path: forward.path.clone(),
            style: forward.style,
            identity_headers: forward.identity_headers.clone(),
            client_header: forward.client_header,
            separate_listener: forward.listen.is_some(),
        });
    }
    if let Some(cluster) = cluster {
        builder = builder.shared_limits(Arc::clone(cluster) as Arc<dyn crate::limit::SharedLimits>);
    }
    let layer = builder
        .public(config.auth.public.clone())
        .public_upgrades(config.auth.public_upgrades)
        .trusted_proxies(config.server.trusted_proxies.clone())
        .per_ip(config.rate_limit.per_ip)
        .per_user(config.rate_limit.per_user)
        .count_verified(config.rate_limit.count_verified)
        .max_tracked_keys(config.rate_limit.max_tracked_keys)
        .lockout(config.lockout)
        .cache(config.cache)
        .build()
        .map_err(|e| ConfigError::invalid(&config.path, "[auth]", e.to_string()))?;
    Ok((layer, password_file))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config (or a file it names) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listen address could not be bound.
    #[error("{path}: {key}: cannot bind {addr}: {io}")]
    Bind {
        /// The config file.
        path: std::path::PathBuf,
        /// The key that names it (`[server] listen`, …).
        key: &'static str,
        /// The address (`unix:/path` for a Unix socket).
        addr: String,
        /// Why (kept out of `source()` so it is printed once).
        io: std::io::Error,
    },
    /// The random password for the generated user could not be made.
    #[error("cannot generate a password: {0}")]
    Generate(String),
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

/// Makes `name` with a random password and shows the password once: with
/// text logs, as a banner on stderr between log lines, never in one; with JSON logs
/// (collected, shipped and kept by machines), never in the stream: it goes
/// to a file only its owner can read, and a JSON line says where.
fn generate_user(
    name: &str,
    config: &Config,
    format: LogFormat,
) -> Result<(GeneratedUser, Option<PathBuf>), StartError> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| StartError::Generate(e.to_string()))?;
    let password = Password::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let text = credentials::hash_password(&password, credentials::default_params())
        .map_err(|e| StartError::Generate(e.to_string()))?;
    let hash = credentials::parse_phc(&text).map_err(|e| StartError::Generate(e.to_string()))?;
    match format {
        LogFormat::Text => eprintln!(
            "\n  No users are configured, so gatehouse made one for this run only:\n\n    username: {name}\n    password: {}\n\n  It is not saved anywhere. Add real users with `gatehouse hash-password`.\n",
            password.as_str()
        ),
        LogFormat::Json => {
            let (file, written) = write_generated_password(config, &password);
            match written {
                Ok(()) => tracing::warn!(
                    user = name,
                    password_file = %file.display(),
                    "no users are configured: made a user with a random password for this run only; the password is in password_file (mode 0600; removed at shutdown); add real users with `gatehouse hash-password`"
                ),
                Err(error) => tracing::error!(
                    user = name,
                    password_file = %file.display(),
                    %error,
                    "no users are configured: made a user with a random password for this run only, but could not write the password file, so nobody can log in; add real users with `gatehouse hash-password`"
                ),
            };
            return Ok(((name.to_owned(), hash), Some(file)));
        }
    }
    Ok(((name.to_owned(), hash), None))
}

/// Writes the generated password to `generated-password` beside the config
/// (replaced whole, never through a planted file), or where that cannot be
/// written (a read-only ConfigMap) to a new file with an unguessable name in
/// the temp directory; mode 0600 either way. `run` removes it at shutdown.
fn write_generated_password(
    config: &Config,
    password: &Password,
) -> (PathBuf, std::io::Result<()>) {
    let beside = config
        .path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("generated-password");
    let line = zeroize::Zeroizing::new(format!("{}\n", password.as_str()));
    if crate::files::write_atomically(&beside, line.as_bytes(), true).is_ok() {
        return (beside, Ok(()));
    }
    let temp = std::env::temp_dir().join(format!(
        "gatehouse-generated-password-{}",
        crate::files::random_suffix().unwrap_or_else(|_| std::process::id().to_string())
    ));
    let result = crate::files::write_atomically(&temp, line.as_bytes(), true).map_err(|(_, e)| e);
    (temp, result)
}

/// Checks what `serve` would check before binding, beyond the config
/// itself: that the TLS certificate and key load and fit together (a
/// self-signed certificate is made only by `serve`; checking writes
/// nothing). Returns the warnings `serve` would log.
pub fn check(config: &Config) -> Result<Vec<crate::warnings::ConfigWarning>, StartError> {
    if matches!(config.tls, TlsSettings::Files { .. }) {
        tls::setup(&config.tls, &config.path)?;
    }
    if let Some(settings) = &config.tokens
        && matches!(
            settings.signing_key,
            crate::config::SigningKeySource::File(_)
        )
    {
        crate::tokens::load(settings, &config.path)?;
    }
    if let Some(settings) = &config.api_keys {
        crate::tokens::ApiKeys::load(&settings.file)?;
    }
    let mut entries = config.auth.users.clone();
    entries.extend(config.client_secrets());
    let store = CredentialStore::new(entries).map_err(|e| StartError::Generate(e.to_string()))?;
    Ok(crate::warnings::config_warnings(config, &store))
}

/// Runs the server for `config` until `shutdown` resolves. `log` lets a
/// reload change the log level in place.
pub async fn serve(
    config: Config,
    log: LogLevel,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    Application::build(config, log).await?.run(shutdown).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when
/// this is called, not when the future is first polled, so a signal that
/// arrives while the server is still starting is not lost (nor does it kill
/// the process with the default action). Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                () = wait_for(term.as_mut()) => {}
                () = wait_for(int.as_mut()) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(unix)]
async fn wait_for(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
