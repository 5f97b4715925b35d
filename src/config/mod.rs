//! The TOML config file: its schema (serde) and its validation into typed,
//! ready-to-use values.
//!
//! Parse, don't validate: [`Config::load`] turns the file into socket
//! addresses, `Duration`s, CIDRs and parsed argon2 hashes once; nothing
//! downstream handles a "maybe invalid" string. Every error names the file,
//! the key (or user) and the problem, and never prints a hash or password.

mod raw;
mod sections;
mod settings;
pub(crate) mod users;
mod values;

use std::path::{Path, PathBuf};

use crate::auth::cache::CachePolicy;
use crate::limit::LockoutPolicy;

pub(crate) use sections::is_scope_token;
pub use settings::{
    AccessRuleSettings, AccessSettings, ApiKeySettings, AuthSettings, Backend, ClusterSettings,
    CpuScheduling, FORWARD_IDENTITY_HEADERS, ForwardAuthClientHeader, ForwardAuthSettings,
    ForwardAuthStyle, GrantType, Limits, ListenAddress, LogSettings, MetricsSettings, OAuthClient,
    OAuthSettings, RateLimitSettings, ServerSettings, SigningKeySource, StaticSettings,
    TlsSettings, TokenSettings, UpstreamSettings,
};
pub use users::{Username, validate_username};
use values::tls_settings;

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

/// A problem with one key, found before the file is known: the section
/// parsers return it, and [`Config::from_toml`] names the file.
#[derive(Debug)]
pub(crate) struct KeyError {
    key: String,
    message: String,
}

impl KeyError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    fn in_file(self, path: &Path) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_owned(),
            key: self.key,
            message: self.message,
        }
    }
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
    /// `[tokens]`: `None` unless enabled.
    pub tokens: Option<TokenSettings>,
    /// `[api_keys]`: `None` unless set.
    pub api_keys: Option<ApiKeySettings>,
    /// `[oauth]`: `None` unless enabled.
    pub oauth: Option<OAuthSettings>,
    /// `[forward_auth]`: `None` unless the section is present.
    pub forward_auth: Option<ForwardAuthSettings>,
    /// `[groups]`, `[[access]]`, `[access_default]`.
    pub access: AccessSettings,
    /// `[cluster]`: `None` unless the section is present.
    pub cluster: Option<ClusterSettings>,
}

impl Config {
    /// Listens on `addr` instead of `[server] listen` (the `--listen`
    /// flag); reloads keep it.
    pub fn override_listen(&mut self, addr: std::net::SocketAddr) {
        self.server.listen = addr;
        self.server.listen_overridden = true;
    }

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
    #[cfg(feature = "server")]
    pub(crate) fn load_for_reload(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read {
            path: path.to_owned(),
            io,
        })?;
        Self::from_toml_with(path, &text, true)
    }

    fn from_toml_with(path: &Path, text: &str, allow_no_users: bool) -> Result<Self, ConfigError> {
        let raw = raw::parse(path, text)?;
        let raw_tokens_on = raw.tokens.enabled;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| base.join(p);
        // Each section reports the key; the file is attached here, once.
        let in_file = |e: KeyError| e.in_file(path);
        // Users may come from another file, whose errors name that file.
        let mut users = users::from_table(path, raw.users)?;
        let users_file = raw.auth.users_file.as_deref().map(&resolve);
        if let Some(file) = &users_file {
            users::add_from_file(file, &mut users, path)?;
        }
        Self {
            path: path.to_owned(),
            server: sections::server(raw.server).map_err(in_file)?,
            tls: tls_settings(raw.tls, &resolve).map_err(in_file)?,
            auth: sections::auth(raw.auth, users, users_file, allow_no_users).map_err(in_file)?,
            limits: sections::limits(raw.limits).map_err(in_file)?,
            rate_limit: sections::rate_limit(&raw.rate_limit).map_err(in_file)?,
            lockout: sections::lockout(raw.lockout).map_err(in_file)?,
            backend: sections::backend(raw.upstream, raw.static_files, &resolve)
                .map_err(in_file)?,
            cache: sections::cache(raw.cache).map_err(in_file)?,
            log: sections::log(raw.log).map_err(in_file)?,
            metrics: sections::metrics(raw.metrics).map_err(in_file)?,
            tokens: sections::tokens(raw.tokens, &resolve).map_err(in_file)?,
            api_keys: sections::api_keys(raw.api_keys, &resolve).map_err(in_file)?,
            oauth: sections::oauth(raw.oauth, raw_tokens_on).map_err(in_file)?,
            forward_auth: sections::forward_auth(raw.forward_auth, &resolve).map_err(in_file)?,
            access: sections::access(raw.groups, raw.access, raw.access_default)
                .map_err(in_file)?,
            cluster: sections::cluster(raw.cluster, &resolve).map_err(in_file)?,
        }
        .checked()
    }

    /// The OAuth clients' secrets as credential-store entries, named by
    /// [`client_key`](crate::tokens::client_key): they go through the same
    /// brute-force pipeline as passwords.
    pub fn client_secrets(&self) -> Vec<(String, crate::credentials::UserHash)> {
        self.oauth
            .iter()
            .flat_map(|o| &o.clients)
            .filter_map(|c| {
                let hash = crate::credentials::parse_phc(c.secret.as_deref()?).ok()?;
                Some((crate::tokens::client_key(&c.id), hash.into()))
            })
            .collect()
    }

    /// Checks across sections.
    fn checked(self) -> Result<Self, ConfigError> {
        if let Some(forward) = &self.forward_auth {
            // The layer answers these paths itself: a decision path over
            // one of them would hide it.
            let mut taken: Vec<&str> = vec![crate::auth::JWKS_PATH];
            if let Some(tokens) = &self.tokens {
                taken.push(&tokens.login_path);
            }
            if self.oauth.is_some() {
                taken.extend(crate::auth::oauth::PATHS);
            }
            if let Some(path) = &self.metrics.path {
                taken.push(path);
            }
            let prefix = format!("{}/", forward.path);
            if let Some(path) = taken
                .iter()
                .find(|p| **p == forward.path || p.starts_with(&prefix))
            {
                return Err(ConfigError::invalid(
                    &self.path,
                    "[forward_auth] path",
                    format!(
                        "`{}` would cover {path}, which gatehouse answers itself",
                        forward.path
                    ),
                ));
            }
        }
        if let Some(oauth) = &self.oauth {
            for client in &oauth.clients {
                // A client's token names the client where a user's names the
                // user: the two must never be the same name.
                let taken = self.auth.users.iter().any(|(name, _)| *name == client.id)
                    || self.auth.generated_user.as_deref() == Some(client.id.as_str());
                if taken {
                    return Err(ConfigError::invalid(
                        &self.path,
                        format!("[oauth.clients.{}]", client.id),
                        "a user has this name: a client id must not be a username",
                    ));
                }
            }
            if let Some(tokens) = &self.tokens
                && [
                    crate::auth::oauth::TOKEN_PATH,
                    crate::auth::oauth::METADATA_PATH,
                ]
                .contains(&tokens.login_path.as_str())
            {
                return Err(ConfigError::invalid(
                    &self.path,
                    "[tokens] login_path",
                    "is an OAuth endpoint's path",
                ));
            }
        }
        if let (Some(keys), Backend::Upstream(upstream)) = (&self.api_keys, &self.backend)
            && keys.header == upstream.user_header
        {
            return Err(ConfigError::invalid(
                &self.path,
                "[api_keys] header",
                "is [upstream] user_header: the header that tells the upstream who the user is cannot carry keys",
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests;
