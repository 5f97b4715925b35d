//! The TOML config file: its schema (serde) and its validation into typed,
//! ready-to-use values.
//!
//! Parse, don't validate: [`Config::load`] turns the file into socket
//! addresses, `Duration`s, CIDRs and parsed argon2 hashes once; nothing
//! downstream handles a "maybe invalid" string. Every error names the file,
//! the key (or user) and the problem, and never prints a hash or password.

mod raw;
mod settings;
mod users;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::cache::CachePolicy;
use crate::limit::LockoutPolicy;

pub use settings::{
    AuthSettings, Backend, Limits, LogSettings, MetricsSettings, RateLimitSettings, ServerSettings,
    TlsSettings, UpstreamSettings,
};
pub use users::validate_username;
use values::{duration, nonzero_duration, parse_cidr, rate, tls_settings, upstream_settings};

/// Where `gatehouse serve` looks for its config when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/gatehouse.toml";

/// A config problem: which file, which key or user, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read: {io}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (kept out of `source()` so it is printed once).
        io: std::io::Error,
    },
    /// A value in a file is missing, malformed or inconsistent.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the file: `[section] key`, a user, or a line.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(path: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[tls]`.
    pub tls: TlsSettings,
    /// `[auth]` and `[users]`.
    pub auth: AuthSettings,
    /// `[limits]`.
    pub limits: Limits,
    /// `[rate_limit]`.
    pub rate_limit: RateLimitSettings,
    /// `[lockout]`.
    pub lockout: LockoutPolicy,
    /// What authenticated requests reach: `[upstream]`, `[static]`, or the
    /// built-in API.
    pub backend: Backend,
    /// `[cache]`: the verified-credentials cache.
    pub cache: CachePolicy,
    /// `[log]`: level and format.
    pub log: LogSettings,
    /// `[metrics]`: where the Prometheus text is served (off by default).
    pub metrics: MetricsSettings,
}

impl Config {
    /// Reads and validates a config file. Relative paths inside it are taken
    /// relative to the file's own directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read {
            path: path.to_owned(),
            io,
        })?;
        Self::from_toml(path, &text)
    }

    /// Validates config text as if read from `path` (used for relative paths
    /// and messages).
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with(path, text, false)
    }

    /// Reads a config for a reload: unlike [`load`](Self::load), a config
    /// with no users at all is accepted, because removing every user must
    /// always work as an emergency revocation.
    pub(crate) fn load_for_reload(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read {
            path: path.to_owned(),
            io,
        })?;
        Self::from_toml_with(path, &text, true)
    }

    fn from_toml_with(path: &Path, text: &str, allow_no_users: bool) -> Result<Self, ConfigError> {
        let raw = raw::parse(path, text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| base.join(p);

        let listen = raw.server.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid(
                path,
                "[server] listen",
                format!("`{}` is not an address:port ({e})", raw.server.listen),
            )
        })?;
        let trusted_proxies = raw
            .server
            .trusted_proxies
            .iter()
            .map(|s| {
                parse_cidr(s).ok_or_else(|| {
                    ConfigError::invalid(
                        path,
                        "[server] trusted_proxies",
                        format!("`{s}` is not an IP address or CIDR"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;

        let tls = tls_settings(path, raw.tls, &resolve)?;

        let realm = raw.auth.realm;
        crate::auth::validate_realm(&realm)
            .map_err(|e| ConfigError::invalid(path, "[auth] realm", e.to_string()))?;
        for pattern in &raw.auth.public {
            crate::auth::validate_pattern(pattern)
                .map_err(|e| ConfigError::invalid(path, "[auth] public", e.to_string()))?;
        }
        let mut users = users::from_table(path, raw.users)?;
        let users_file = raw.auth.users_file.as_deref().map(&resolve);
        if let Some(file) = &users_file {
            users::add_from_file(file, &mut users, path)?;
        }
        if let Some(name) = &raw.auth.generated_user {
            validate_username(name)
                .map_err(|m| ConfigError::invalid(path, "[auth] generated_user", m))?;
        }
        if users.is_empty() && raw.auth.generated_user.is_none() && !allow_no_users {
            return Err(ConfigError::invalid(
                path,
                "[users]",
                "no users configured: add `name = \"<hash from gatehouse hash-password>\"` under [users], set [auth] users_file, or set [auth] generated_user for development",
            ));
        }
        let max_concurrent_verifications = match raw.auth.max_concurrent_verifications {
            Some(0) => {
                return Err(ConfigError::invalid(
                    path,
                    "[auth] max_concurrent_verifications",
                    "must be at least 1",
                ));
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };

        let limits = Limits {
            header_read_timeout: nonzero_duration(
                path,
                "[limits] header_read_timeout",
                &raw.limits.header_read_timeout,
            )?,
            tls_handshake_timeout: nonzero_duration(
                path,
                "[limits] tls_handshake_timeout",
                &raw.limits.tls_handshake_timeout,
            )?,
            shutdown_grace: duration(path, "[limits] shutdown_grace", &raw.limits.shutdown_grace)?,
            max_connections: match raw.limits.max_connections {
                0 => {
                    return Err(ConfigError::invalid(
                        path,
                        "[limits] max_connections",
                        "must be at least 1",
                    ));
                }
                n => n,
            },
            max_header_bytes: match raw.limits.max_header_bytes {
                n if n < 8192 => {
                    return Err(ConfigError::invalid(
                        path,
                        "[limits] max_header_bytes",
                        "must be at least 8192",
                    ));
                }
                n => n,
            },
            max_body_bytes: raw.limits.max_body_bytes,
            h2_keep_alive: nonzero_duration(
                path,
                "[limits] h2_keep_alive",
                &raw.limits.h2_keep_alive,
            )?,
            idle_timeout: nonzero_duration(
                path,
                "[limits] idle_timeout",
                &raw.limits.idle_timeout,
            )?,
            send_timeout: nonzero_duration(
                path,
                "[limits] send_timeout",
                &raw.limits.send_timeout,
            )?,
            max_connections_per_ip: at_least_one(
                path,
                "[limits] max_connections_per_ip",
                raw.limits.max_connections_per_ip,
            )?,
            h2_max_concurrent_streams: u32::try_from(at_least_one(
                path,
                "[limits] h2_max_concurrent_streams",
                raw.limits.h2_max_concurrent_streams as usize,
            )?)
            .unwrap_or(u32::MAX),
            h2_max_send_buffer: match raw.limits.h2_max_send_buffer {
                n if !(1024..=16 << 20).contains(&n) => {
                    return Err(ConfigError::invalid(
                        path,
                        "[limits] h2_max_send_buffer",
                        "must be between 1024 and 16777216 (16 MiB)",
                    ));
                }
                n => n,
            },
        };

        let defaults = RateLimitSettings::default();
        let rate_limit = RateLimitSettings {
            per_ip: rate(
                path,
                "[rate_limit] per_ip",
                &raw.rate_limit.per_ip,
                defaults.per_ip,
            )?,
            per_user: rate(
                path,
                "[rate_limit] per_user",
                &raw.rate_limit.per_user,
                defaults.per_user,
            )?,
            max_tracked_keys: raw.rate_limit.max_tracked_keys.max(1),
        };
        let lockout = LockoutPolicy {
            max_failures: raw.lockout.max_failures,
            window: nonzero_duration(path, "[lockout] window", &raw.lockout.window)?,
            duration: nonzero_duration(path, "[lockout] duration", &raw.lockout.duration)?,
            max_tracked: raw.lockout.max_tracked.max(1),
        };
        let verify_timeout =
            nonzero_duration(path, "[auth] verify_timeout", &raw.auth.verify_timeout)?;
        let cache = CachePolicy {
            enabled: raw.cache.enabled,
            ttl: nonzero_duration(path, "[cache] ttl", &raw.cache.ttl)?,
            max_entries: raw.cache.max_entries.max(1),
        };
        if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
            return Err(ConfigError::invalid(
                path,
                "[log] level",
                format!(
                    "`{}` is not a level or filter like \"info\" or \"gatehouse=debug,warn\"",
                    raw.log.level
                ),
            ));
        }
        let log = LogSettings {
            level: raw.log.level,
            format: raw.log.format,
        };
        let metrics = MetricsSettings {
            listen: match &raw.metrics.listen {
                Some(text) => Some(text.parse().map_err(|e| {
                    ConfigError::invalid(
                        path,
                        "[metrics] listen",
                        format!("`{text}` is not an address:port ({e})"),
                    )
                })?),
                None => None,
            },
            path: match raw.metrics.path {
                Some(p) => Some(metrics_path(path, p)?),
                None => None,
            },
        };
        let backend = match (raw.upstream, raw.static_files) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    path,
                    "[upstream] and [static]",
                    "both are set: choose one (or neither, for the built-in API)",
                ));
            }
            (Some(upstream), None) => {
                Backend::Upstream(Box::new(upstream_settings(path, upstream, &resolve)?))
            }
            (None, Some(files)) => {
                let root = resolve(&files.root);
                if !root.is_dir() {
                    return Err(ConfigError::invalid(
                        path,
                        "[static] root",
                        format!("{} is not a directory", root.display()),
                    ));
                }
                Backend::Static(crate::static_files::StaticSettings {
                    root,
                    allow_dotfiles: files.allow_dotfiles,
                    follow_symlinks_outside_root: files.follow_symlinks_outside_root,
                })
            }
            (None, None) => Backend::Api,
        };

        Ok(Self {
            path: path.to_owned(),
            server: ServerSettings {
                listen,
                trusted_proxies,
            },
            tls,
            auth: AuthSettings {
                realm,
                public: raw.auth.public,
                users,
                users_file,
                generated_user: raw.auth.generated_user,
                max_concurrent_verifications,
                public_upgrades: raw.auth.public_upgrades,
                verify_queue: raw.auth.verify_queue,
                verify_timeout,
            },
            limits,
            rate_limit,
            lockout,
            backend,
            cache,
            log,
            metrics,
        })
    }
}

fn at_least_one(path: &Path, key: &str, n: usize) -> Result<usize, ConfigError> {
    match n {
        0 => Err(ConfigError::invalid(path, key, "must be at least 1")),
        n => Ok(n),
    }
}

/// The routes gatehouse serves itself; `[metrics] path` may not take one.
const OWN_ROUTES: [&str; 3] = ["/healthz", "/api/whoami", "/api/stats"];

/// `[metrics] path`: a literal, canonical path that no built-in route uses
/// (the router would refuse it at start-up, after check-config said yes).
fn metrics_path(path: &Path, p: String) -> Result<String, ConfigError> {
    let problem = if p.contains(['{', '}', '*']) || p.split('/').any(|s| s.starts_with(':')) {
        Some(
            "must be a literal path: `{`, `}`, `*` and segments starting with `:` are route syntax",
        )
    } else if crate::path::canonicalize(&p).map_or(true, |c| c != p) {
        Some("must be a canonical path starting with / (no dot segments, //, %2F)")
    } else if OWN_ROUTES.contains(&p.as_str()) {
        Some("is one of gatehouse's own routes (/healthz, /api/whoami, /api/stats)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConfigError::invalid(
            path,
            "[metrics] path",
            format!("`{p}` {problem}"),
        )),
        None => Ok(p),
    }
}

#[cfg(test)]
mod tests;
