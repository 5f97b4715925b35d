//! Zero-downtime reload: on SIGHUP, or when the config file, the users file
//! or the TLS files change on disk, everything is re-read and re-validated
//! off the request path and swapped in atomically. A new config that fails
//! validation is logged and ignored: the old one keeps serving.
//!
//! What changes at run time: the users (a removed user or a changed
//! password stops working at once, and the verified-credentials cache is
//! emptied) and the TLS certificate (for new handshakes). Everything else
//! (listen address, backend, limits, …) is reported as needing a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use notify::Watcher as _;
use tokio::sync::mpsc;

use crate::auth::BasicAuthLayer;
use crate::config::{Config, ConfigError, TlsSettings};
use crate::credentials::{CredentialStore, HashError};
use crate::logging::{LogFilter, LogLevel};
use crate::metrics::ReloadCounters;
use crate::tls::{self, CertificateSlot};

/// Why a reload was rejected (the old config stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The users could not be loaded.
    #[error("users: {0}")]
    Users(#[from] HashError),
    /// The reload task failed.
    #[error("reload task failed: {0}")]
    Task(String),
}

/// What a reload swaps, and the config the server started with.
pub struct Reloader {
    started_with: Config,
    layer: BasicAuthLayer,
    certificate: Option<Arc<CertificateSlot>>,
    counters: Arc<ReloadCounters>,
    /// Whether the users in force are only this run's generated user (no
    /// reload has installed configured users since).
    running_generated: AtomicBool,
    /// Sets the log level in place.
    log: LogLevel,
    /// The `[log] level` in force (what a reload compares against).
    level_in_force: std::sync::Mutex<LogFilter>,
}

impl Reloader {
    /// A reloader for a server started from `config`, with its auth layer and,
    /// when serving TLS from files, its certificate slot.
    pub fn new(
        config: Config,
        layer: BasicAuthLayer,
        certificate: Option<Arc<CertificateSlot>>,
        log: LogLevel,
    ) -> Self {
        let level_in_force = std::sync::Mutex::new(config.log.level.clone());
        let running_generated =
            AtomicBool::new(config.auth.users.is_empty() && config.auth.generated_user.is_some());
        Self {
            running_generated,
            log,
            level_in_force,
            started_with: config,
            layer,
            certificate,
            counters: Arc::new(ReloadCounters::default()),
        }
    }

    /// The reload counters.
    pub fn counters(&self) -> &Arc<ReloadCounters> {
        &self.counters
    }

    /// The files whose changes trigger a reload: the config, the users file
    /// and the TLS certificate and key.
    pub fn watched_files(config: &Config) -> Vec<PathBuf> {
        let mut files = vec![config.path.clone()];
        files.extend(config.auth.users_file.clone());
        if let TlsSettings::Files { cert, key } = &config.tls {
            files.push(cert.clone());
            files.push(key.clone());
        }
        if let Some(tokens) = &config.tokens {
            if let crate::config::SigningKeySource::File(path) = &tokens.signing_key {
                files.push(path.clone());
            }
            files.extend(tokens.previous_keys.iter().cloned());
        }
        if let Some(keys) = &config.api_keys {
            files.push(keys.file.clone());
        }
        files
    }

    /// Re-reads and applies the config; on error nothing changes. The file
    /// reading and hashing run on the blocking pool.
    ///
    /// Removing users always works, down to none at all: a reload is how an
    /// operator revokes access in an emergency. With no users left every
    /// request gets 401 and a warning says so. Only a server that runs on a
    /// generated user, and still lists none, keeps that user.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let started = Instant::now();
        let path = self.started_with.path.clone();
        let certificate_wanted = self.certificate.is_some();
        let keep_generated = self.running_generated.load(Ordering::Relaxed);
        let tokens_off = self.layer.tokens().is_none();
        let server = &self.started_with.server;
        let listen_override = server.listen_overridden.then_some(server.listen);
        let loaded = tokio::task::spawn_blocking(move || {
            load(
                &path,
                certificate_wanted,
                keep_generated,
                listen_override,
                tokens_off,
            )
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))?;
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                self.counters.failed.inc();
                return Err(error);
            }
        };
        // Users alone: OAuth clients share the store, but "no users left"
        // must still be said when only clients remain.
        let users = loaded
            .store
            .as_ref()
            .map(|_| loaded.config.auth.users.len());
        if loaded.store.is_none() && loaded.config.oauth.is_some() {
            tracing::warn!(
                "running on a generated user: changes to [oauth] clients take effect after a restart"
            );
        }
        crate::warnings::log(&loaded.warnings);
        // Access rules and groups first: a reload that adds a user with a
        // rule restricting them must not let them in under the old rules.
        // A rule's realm challenges for Bearer as the layer started.
        let bearer = self.layer.tokens().is_some() || self.layer.api_key_header().is_some();
        self.layer
            .replace_access(crate::auth::access::AccessRules::from_settings(
                &loaded.config.access,
                bearer,
            ));
        if let Some(store) = loaded.store {
            self.layer.verifier().replace_store(Arc::new(store));
            // Keys already change with the hash; emptying also drops entries
            // of removed users at once.
            self.layer.clear_cache();
            self.running_generated.store(false, Ordering::Relaxed);
        }
        if let (Some(slot), Some(certified)) = (&self.certificate, loaded.certified) {
            slot.replace(Arc::new(certified));
        }
        if let Some(tokens) = loaded.tokens {
            self.layer.replace_tokens(tokens);
        }
        // Turning tokens or keys off revokes at once; the rest of the
        // change (the login path, the challenges) waits for a restart.
        if loaded.config.tokens.is_none() && self.layer.tokens().is_some() {
            self.layer.revoke_all_tokens();
            tracing::warn!(
                "[tokens] turned off: every token is refused, and the login path answers 404, from now on"
            );
        }
        if let Some(oauth) = &loaded.config.oauth {
            self.layer.replace_oauth_clients(oauth.clients.clone());
        } else {
            // Turning OAuth off revokes every client at once.
            self.layer.replace_oauth_clients(Vec::new());
        }
        match loaded.api_keys {
            Some(keys) => self.layer.replace_api_keys(keys),
            None => self
                .layer
                .replace_api_keys(crate::tokens::ApiKeys::default()),
        }
        self.apply_log_level(&loaded.config.log.level);
        for section in needs_restart(&self.started_with, &loaded.config) {
            tracing::warn!(
                section,
                "changed in the config file, but only takes effect after a restart"
            );
        }
        self.counters.ok.inc();
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match users {
            Some(0) => tracing::warn!(
                elapsed_ms,
                "configuration reloaded with no users: every user was removed and every request now gets 401"
            ),
            Some(users) => tracing::info!(users, elapsed_ms, "configuration reloaded"),
            None => tracing::info!(
                elapsed_ms,
                "configuration re-read: it lists no users, so this run's generated user stays valid"
            ),
        }
        Ok(())
    }

    /// Sets the log level if `[log] level` changed (unless `RUST_LOG` rules).
    fn apply_log_level(&self, level: &LogFilter) {
        let mut in_force = crate::sync::lock(&self.level_in_force);
        if *in_force == *level {
            return;
        }
        let text = level.as_str();
        match self.log.set(level) {
            Ok(true) => tracing::info!(level = text, "log level changed"),
            Ok(false) => {
                tracing::info!(
                    level = text,
                    "[log] level changed, but RUST_LOG decides the level"
                )
            }
            Err(error) => tracing::warn!(level = text, %error, "cannot apply the new log level"),
        }
        *in_force = level.clone();
    }

    /// Starts watching the files and listening for SIGHUP. Call it before
    /// announcing that the server is up: a SIGHUP that arrived earlier would
    /// end the process (its default action), and an edit would go unseen.
    pub fn triggers(&self) -> Triggers {
        let (events, changes) = mpsc::unbounded_channel::<()>();
        Triggers {
            _watcher: watch(&Self::watched_files(&self.started_with), events),
            changes,
            hangup: hangup_signal(),
        }
    }

    /// Reloads on SIGHUP and on changes to the watched files until the
    /// process ends. File events are debounced: a burst of writes (an editor
    /// saving, a Kubernetes Secret update) reloads once.
    pub async fn run(self, mut triggers: Triggers) {
        loop {
            let hangup = async {
                match triggers.hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(()) = triggers.changes.recv() => {
                    // Let the writer finish, then take everything that piled up.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    while triggers.changes.try_recv().is_ok() {}
                    tracing::info!("watched file changed: reloading");
                }
                Some(()) = hangup => tracing::info!("SIGHUP: reloading"),
                else => break,
            }
            if let Err(error) = self.reload().await {
                tracing::error!(%error, "reload rejected; the previous configuration stays in force");
            }
        }
    }
}

/// What sets off a reload: file events and SIGHUP, set up ahead of time.
pub struct Triggers {
    _watcher: Option<notify::RecommendedWatcher>,
    changes: mpsc::UnboundedReceiver<()>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    #[cfg(not(unix))]
    hangup: Option<mpsc::UnboundedReceiver<()>>,
}

/// A config read for a reload, with what it swaps in.
struct Loaded {
    config: Config,
    /// The new users; `None` keeps the running (generated) user.
    store: Option<CredentialStore>,
    /// The new certificate, when serving TLS from files.
    certified: Option<rustls::sign::CertifiedKey>,
    tokens: Option<crate::tokens::Tokens>,
    api_keys: Option<crate::tokens::ApiKeys>,
    /// Worked out here, on the blocking pool: the mixed-scheme warning
    /// times real verifications.
    warnings: Vec<crate::warnings::ConfigWarning>,
}

fn load(
    path: &Path,
    certificate_wanted: bool,
    keep_generated: bool,
    listen_override: Option<std::net::SocketAddr>,
    tokens_off: bool,
) -> Result<Loaded, ReloadError> {
    let mut config = Config::load_for_reload(path)?;
    if let Some(addr) = listen_override {
        config.override_listen(addr);
    }
    // A server that runs on its generated user, with a config that still
    // lists nobody, keeps that user: a reload must not mint (and print) a
    // new password. In every other case the listed users replace the old
    // ones, even when there are none.
    let keep =
        config.auth.users.is_empty() && keep_generated && config.auth.generated_user.is_some();
    let store = match keep {
        true => None,
        false => {
            let mut entries = config.auth.users.clone();
            entries.extend(config.client_secrets());
            Some(CredentialStore::new(entries)?)
        }
    };
    let certified = match (&config.tls, certificate_wanted) {
        (TlsSettings::Files { cert, key }, true) => {
            Some(tls::load_certified_key(cert, key, &config.path)?)
        }
        _ => None,
    };
    // Key files are re-read (rotation); an ephemeral key is kept as it is,
    // unless tokens were turned off and are on again (then a new one).
    let tokens = match &config.tokens {
        Some(settings)
            if tokens_off
                || matches!(
                    settings.signing_key,
                    crate::config::SigningKeySource::File(_)
                ) =>
        {
            Some(crate::tokens::load(settings, &config.path)?)
        }
        _ => None,
    };
    let api_keys = match &config.api_keys {
        Some(settings) => Some(crate::tokens::ApiKeys::load(&settings.file)?),
        None => None,
    };
    let warnings = store
        .as_ref()
        .map(|store| crate::warnings::config_warnings(&config, store))
        .unwrap_or_default();
    Ok(Loaded {
        config,
        store,
        certified,
        tokens,
        api_keys,
        warnings,
    })
}

/// The sections that differ between `old` and `new` but cannot change while
/// running. Users, the TLS files' contents and `[log] level` are applied
/// live; everything else is compared whole.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, section: &'static str| {
        if differs {
            changed.push(section);
        }
    };
    check(old.server != new.server, "[server]");
    // New certificate files are applied live; switching the kind of TLS is not.
    check(
        std::mem::discriminant(&old.tls) != std::mem::discriminant(&new.tls)
            || (old.tls != new.tls && !matches!(new.tls, TlsSettings::Files { .. })),
        "[tls]",
    );
    let auth = |c: &Config| {
        (
            c.auth.realm.clone(),
            c.auth.public.clone(),
            c.auth.public_upgrades,
            c.auth.max_concurrent_verifications,
            c.auth.verify_queue,
            c.auth.verify_timeout,
            c.auth.users_file.clone(),
        )
    };
    check(auth(old) != auth(new), "[auth] (other than users)");
    check(old.limits != new.limits, "[limits]");
    check(old.cluster != new.cluster, "[cluster]");
    // Keys and the token policy change live (with a key file); turning
    // tokens or keys on or off, or moving the login path or the key header,
    // needs a restart.
    let token_shape = |c: &Config| {
        c.tokens.as_ref().map(|t| {
            // An ephemeral key is kept on reload, and its policy with it.
            let ephemeral = matches!(t.signing_key, crate::config::SigningKeySource::Ephemeral(_));
            (
                t.login_path.clone(),
                t.cache_max_entries,
                ephemeral.then(|| t.policy.clone()),
            )
        })
    };
    check(token_shape(old) != token_shape(new), "[tokens]");
    check(
        old.api_keys.as_ref().map(|k| &k.header) != new.api_keys.as_ref().map(|k| &k.header),
        "[api_keys]",
    );
    check(
        old.oauth.is_some() != new.oauth.is_some(),
        "[oauth] enabled",
    );
    check(old.rate_limit != new.rate_limit, "[rate_limit]");
    check(old.lockout != new.lockout, "[lockout]");
    check(old.cache != new.cache, "[cache]");
    check(old.backend != new.backend, "[upstream]/[static]");
    check(old.log.format != new.log.format, "[log] format");
    check(old.metrics != new.metrics, "[metrics]");
    changed
}

/// Watches the directories holding `files` (editors and Kubernetes replace
/// files rather than write them in place, so the file itself is not
/// watched) and sends a message for any event touching one of them.
fn watch(
    files: &[PathBuf],
    events: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    // Watched as canonical directories, so event paths come back canonical
    // and compare equal to these names however the config named the files.
    let mut names = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for file in files {
        let parent = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf());
        if let Some(name) = file.file_name() {
            names.insert(dir.join(name));
        }
        dirs.insert(dir);
    }
    let handler = move |result: notify::Result<notify::Event>| {
        let Ok(event) = result else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            names.contains(p)
                // Kubernetes swaps a `..data` symlink to update a mounted Secret.
                || p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".."))
        });
        if relevant {
            let _ = events.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch config files; reload with SIGHUP");
            return None;
        }
    };
    for dir in dirs {
        if let Err(error) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch directory; reload with SIGHUP");
        }
    }
    Some(watcher)
}

/// The SIGHUP stream, registered now (replacing the default action, which
/// would end the process); `None` where there are no signals.
#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<mpsc::UnboundedReceiver<()>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_is_compared() {
        let hash = crate::credentials::hash_password(
            &crate::secret::Password::new("pw".into()),
            argon2::Params::new(64, 1, 1, None).unwrap(),
        )
        .unwrap();
        let base = format!("[tls]\nself_signed = true\n[users]\na = \"{hash}\"\n");
        let load = |extra: &str| {
            Config::from_toml(Path::new("g.toml"), &format!("{base}{extra}")).unwrap()
        };
        let old = load("");
        assert!(needs_restart(&old, &load("")).is_empty());
        for (extra, section) in [
            ("[server]\nlisten = \"127.0.0.1:1\"\n", "[server]"),
            ("[limits]\nidle_timeout = \"5s\"\n", "[limits]"),
            ("[rate_limit]\nper_ip = false\n", "[rate_limit]"),
            ("[lockout]\nmax_failures = 9\n", "[lockout]"),
            ("[cache]\nenabled = false\n", "[cache]"),
            ("[log]\nformat = \"json\"\n", "[log] format"),
            ("[metrics]\npath = \"/m\"\n", "[metrics]"),
            (
                "[auth]\npublic_upgrades = true\n",
                "[auth] (other than users)",
            ),
        ] {
            assert_eq!(needs_restart(&old, &load(extra)), vec![section], "{extra}");
        }
        // Applied live, so not reported.
        assert!(needs_restart(&old, &load("[log]\nlevel = \"debug\"\n")).is_empty());
    }
}
