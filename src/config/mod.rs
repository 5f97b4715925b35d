//! The TOML config file: its schema (serde) and its validation into typed,
//! ready-to-use values.
//!
//! Parse, don't validate: [`Config::load`] turns the file into socket
//! addresses, `Duration`s, CIDRs and parsed argon2 hashes once; nothing
//! downstream handles a "maybe invalid" string. Every error names the file,
//! the key (or user) and the problem, and never prints a hash or password.

mod raw;
mod users;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use ipnet::IpNet;

use crate::auth::cache::CachePolicy;
use crate::limit::{LockoutPolicy, Rate};

pub use users::validate_username;

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

/// `[metrics]`.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// A separate plain-HTTP listener serving `GET /metrics` without auth
    /// (keep it on loopback or a cluster-internal address).
    pub listen: Option<SocketAddr>,
    /// A path on the main listener, behind authentication.
    pub path: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A filter directive (`info`, `gatehouse=debug,warn`); `RUST_LOG` wins.
    pub level: String,
    /// Text or JSON lines; `--log-format` wins.
    pub format: crate::logging::LogFormat,
}

/// What stands behind the gate. Exactly one is active.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The built-in routes (`/api/whoami`, `/api/stats`): neither
    /// `[upstream]` nor `[static]` is set.
    Api,
    /// `[upstream]`: a reverse proxy to an app.
    Upstream(UpstreamSettings),
    /// `[static]`: files from a directory.
    Static {
        /// The directory served.
        root: PathBuf,
    },
}

/// `[upstream]`: the app gatehouse forwards authenticated requests to.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `http://host:port[/prefix]` or `https://…`.
    pub url: http::Uri,
    /// How long the upstream may take to start its answer (then 504).
    pub timeout: Duration,
    /// How long connecting may take (then 502).
    pub connect_timeout: Duration,
    /// The header that carries the authenticated username.
    pub user_header: http::HeaderName,
    /// Whether the client's `Authorization` header reaches the upstream.
    pub forward_authorization: bool,
    /// A PEM CA bundle for an https upstream (default: the webpki roots).
    pub ca: Option<PathBuf>,
}

/// `[rate_limit]`: request rates (governor), checked before any hashing.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Every request per client address; `None` when turned off.
    pub per_ip: Option<Rate>,
    /// Authenticated requests per user; `None` when turned off.
    pub per_user: Option<Rate>,
    /// The most keys each limiter tracks.
    pub max_tracked_keys: usize,
}

/// `[server]`: where to listen and whom to believe.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The address to bind (port 0 lets the OS pick one).
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// `[tls]`: how connections are secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSettings {
    /// A PEM certificate chain and private key.
    Files {
        /// The certificate chain (PEM).
        cert: PathBuf,
        /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// Development: a certificate for localhost made at start-up and written
    /// to `cert_out` so clients can trust it.
    SelfSigned {
        /// Where the generated certificate (PEM) is written.
        cert_out: PathBuf,
    },
    /// Plain HTTP, only behind a TLS-terminating proxy.
    Disabled,
}

/// `[auth]` plus the users from `[users]` and `users_file`.
#[derive(Clone)]
pub struct AuthSettings {
    /// The realm in the `WWW-Authenticate` challenge.
    pub realm: String,
    /// Path patterns that skip authentication: exact, or a prefix ending in `*`.
    pub public: Vec<String>,
    /// Every configured user with its parsed hash.
    pub users: Vec<(String, PasswordHash)>,
    /// The users file, if any (resolved against the config's directory).
    pub users_file: Option<PathBuf>,
    /// With no users configured: make this user with a random password at
    /// start-up (development only).
    pub generated_user: Option<String>,
    /// How many argon2 verifications may run at once.
    pub max_concurrent_verifications: usize,
    /// How many more may wait for a slot before requests get 503.
    pub verify_queue: usize,
    /// How long one may wait for a slot before its request gets 503.
    pub verify_timeout: Duration,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are secrets too: list the usernames only.
        let names: Vec<&str> = self.users.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AuthSettings")
            .field("realm", &self.realm)
            .field("public", &self.public)
            .field("users", &names)
            .field("generated_user", &self.generated_user)
            .field(
                "max_concurrent_verifications",
                &self.max_concurrent_verifications,
            )
            .finish()
    }
}

/// `[limits]`: connection hygiene.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// How long in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// The largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// The largest request body the built-in routes accept (413 past it).
    pub max_body_bytes: usize,
    /// HTTP/2 keep-alive: a PING after this much silence, and the connection
    /// closed if the peer does not answer within the same time.
    pub h2_keep_alive: Duration,
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
            if !pattern.starts_with('/') {
                return Err(ConfigError::invalid(
                    path,
                    "[auth] public",
                    format!("`{pattern}` must start with /"),
                ));
            }
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
        if users.is_empty() && raw.auth.generated_user.is_none() {
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
        };

        let rate_limit = RateLimitSettings {
            per_ip: rate(path, "[rate_limit] per_ip", &raw.rate_limit.per_ip, 20)?,
            per_user: rate(path, "[rate_limit] per_user", &raw.rate_limit.per_user, 10)?,
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
                Some(p) if !p.starts_with('/') || p == "/healthz" => {
                    return Err(ConfigError::invalid(
                        path,
                        "[metrics] path",
                        format!("`{p}` must start with / and not be /healthz"),
                    ));
                }
                other => other,
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
                Backend::Upstream(upstream_settings(path, upstream, &resolve)?)
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
                Backend::Static { root }
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

fn tls_settings(
    path: &Path,
    raw: raw::Tls,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<TlsSettings, ConfigError> {
    if raw.enabled == Some(false) {
        if raw.cert.is_some() || raw.key.is_some() || raw.self_signed == Some(true) {
            return Err(ConfigError::invalid(
                path,
                "[tls] enabled",
                "is false, but cert, key or self_signed is also set: choose one",
            ));
        }
        return Ok(TlsSettings::Disabled);
    }
    match (raw.self_signed == Some(true), raw.cert, raw.key) {
        (true, None, None) => Ok(TlsSettings::SelfSigned {
            cert_out: resolve(
                raw.self_signed_cert_out
                    .as_deref()
                    .unwrap_or(Path::new("self-signed-cert.pem")),
            ),
        }),
        (true, _, _) => Err(ConfigError::invalid(
            path,
            "[tls] self_signed",
            "is true, but cert or key is also set: choose one",
        )),
        (false, Some(cert), Some(key)) => Ok(TlsSettings::Files {
            cert: resolve(&cert),
            key: resolve(&key),
        }),
        (false, Some(_), None) => Err(ConfigError::invalid(
            path,
            "[tls] key",
            "missing: cert is set, so key must be too",
        )),
        (false, None, Some(_)) => Err(ConfigError::invalid(
            path,
            "[tls] cert",
            "missing: key is set, so cert must be too",
        )),
        (false, None, None) => Err(ConfigError::invalid(
            path,
            "[tls]",
            "set cert and key, or self_signed = true for development, or enabled = false behind a TLS-terminating proxy",
        )),
    }
}

/// A human-readable duration such as `10s`, `15m` or `1h 30m`.
fn duration(path: &Path, key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        ConfigError::invalid(
            path,
            key,
            format!("`{text}` is not a duration like \"10s\" or \"15m\" ({e})"),
        )
    })
}

fn upstream_settings(
    path: &Path,
    raw: raw::Upstream,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<UpstreamSettings, ConfigError> {
    let bad_url = |m: String| ConfigError::invalid(path, "[upstream] url", m);
    let url: http::Uri = raw
        .url
        .parse()
        .map_err(|e| bad_url(format!("`{}` is not a URL ({e})", raw.url)))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err(bad_url(format!(
            "`{}` must look like http://host:port or https://host",
            raw.url
        )));
    }
    if url.query().is_some() {
        return Err(bad_url(format!("`{}` must not have a query", raw.url)));
    }
    let user_header = http::HeaderName::from_bytes(raw.user_header.as_bytes()).map_err(|_| {
        ConfigError::invalid(
            path,
            "[upstream] user_header",
            format!("`{}` is not a header name", raw.user_header),
        )
    })?;
    Ok(UpstreamSettings {
        url,
        timeout: nonzero_duration(path, "[upstream] timeout", &raw.timeout)?,
        connect_timeout: nonzero_duration(
            path,
            "[upstream] connect_timeout",
            &raw.connect_timeout,
        )?,
        user_header,
        forward_authorization: raw.forward_authorization,
        ca: raw.ca.as_deref().map(resolve),
    })
}

fn nonzero_duration(path: &Path, key: &str, text: &str) -> Result<Duration, ConfigError> {
    let value = duration(path, key, text)?;
    if value.is_zero() {
        return Err(ConfigError::invalid(path, key, "must be longer than zero"));
    }
    Ok(value)
}

/// A `{ per_second, burst }` table (burst defaults to twice the rate), `true`
/// for `default_per_second`, or `false` for off.
fn rate(
    path: &Path,
    key: &str,
    setting: &raw::RateSetting,
    default_per_second: u32,
) -> Result<Option<Rate>, ConfigError> {
    let raw = match setting {
        raw::RateSetting::Switch(false) => return Ok(None),
        raw::RateSetting::Switch(true) => raw::RawRate {
            per_second: default_per_second,
            burst: None,
        },
        raw::RateSetting::Rate(raw) => *raw,
    };
    let burst = raw.burst.unwrap_or(raw.per_second.saturating_mul(2));
    if raw.per_second == 0 || burst == 0 {
        return Err(ConfigError::invalid(
            path,
            key,
            "per_second and burst must be at least 1 (use `false` to turn the limit off)",
        ));
    }
    Ok(Some(Rate::new(raw.per_second, burst)))
}

/// An IP network (`10.0.0.0/8`) or a single address (taken as /32 or /128).
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests;
