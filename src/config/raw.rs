//! The file's shape as serde sees it, before validation. Unknown keys are
//! errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, RateLimitSettings, settings};
use crate::auth::cache::CachePolicy;
use crate::limit::{LockoutPolicy, Rate};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rate_limit: RateLimit,
    #[serde(default)]
    pub lockout: Lockout,
    #[serde(default)]
    pub cache: Cache,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub metrics: Metrics,
    pub upstream: Option<Upstream>,
    #[serde(rename = "static")]
    pub static_files: Option<StaticFiles>,
    #[serde(default)]
    pub tokens: Tokens,
    pub api_keys: Option<ApiKeys>,
    #[serde(default)]
    pub oauth: OAuth,
    pub forward_auth: Option<ForwardAuth>,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub access: Vec<AccessRule>,
    pub access_default: Option<AccessDefault>,
    pub cluster: Option<Cluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cluster {
    pub redis: String,
    pub secret_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    #[serde(default = "default_cluster_timeout")]
    pub timeout: String,
    #[serde(default = "default_cluster_sync")]
    pub sync_interval: String,
}

fn default_cluster_prefix() -> String {
    "default".into()
}

fn default_cluster_timeout() -> String {
    "50ms".into()
}

fn default_cluster_sync() -> String {
    "1s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessRule {
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub allow: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub realm: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessDefault {
    pub allow: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ForwardAuth {
    pub path: String,
    pub listen: Option<String>,
    pub socket_mode: Option<String>,
    pub style: String,
    pub identity_headers: Vec<String>,
    pub client_header: String,
}

impl Default for ForwardAuth {
    fn default() -> Self {
        Self {
            path: "/authz".into(),
            listen: None,
            socket_mode: None,
            style: "auto".into(),
            client_header: "x-forwarded-for".into(),
            identity_headers: settings::FORWARD_IDENTITY_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct OAuth {
    pub enabled: bool,
    pub code_ttl: String,
    pub refresh_ttl: String,
    pub clients: BTreeMap<String, OAuthClient>,
}

impl Default for OAuth {
    fn default() -> Self {
        Self {
            enabled: false,
            code_ttl: "60s".into(),
            refresh_ttl: "30d".into(),
            clients: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OAuthClient {
    pub name: Option<String>,
    pub secret: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub auto_approve: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Tokens {
    pub enabled: bool,
    pub signing_key: Option<PathBuf>,
    pub ephemeral_key: bool,
    pub algorithm: String,
    pub previous_keys: Vec<PathBuf>,
    pub issuer: String,
    pub audience: String,
    pub ttl: String,
    pub leeway: String,
    pub login_path: String,
    pub cache_max_entries: usize,
}

impl Default for Tokens {
    fn default() -> Self {
        let policy = crate::tokens::TokenPolicy::default();
        Self {
            enabled: false,
            signing_key: None,
            ephemeral_key: false,
            algorithm: "EdDSA".into(),
            previous_keys: Vec::new(),
            issuer: policy.issuer,
            audience: policy.audience,
            ttl: text(policy.ttl),
            leeway: text(policy.leeway),
            login_path: "/api/auth/jwt".into(),
            cache_max_entries: 10_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKeys {
    pub file: PathBuf,
    #[serde(default = "ApiKeys::default_header")]
    pub header: String,
}

impl ApiKeys {
    fn default_header() -> String {
        "X-API-Key".into()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Upstream {
    pub url: String,
    #[serde(default = "Upstream::default_timeout")]
    pub timeout: String,
    #[serde(default = "Upstream::default_connect_timeout")]
    pub connect_timeout: String,
    #[serde(default = "Upstream::default_user_header")]
    pub user_header: String,
    #[serde(default)]
    pub forward_authorization: bool,
    pub ca: Option<PathBuf>,
    #[serde(default = "Upstream::default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout: String,
    #[serde(default)]
    pub underscores_in_headers: bool,
    #[serde(default)]
    pub preserve_host: bool,
    pub untrusted_headers: Option<Vec<String>>,
    pub identity_headers: Option<Vec<String>>,
}

impl Upstream {
    fn default_timeout() -> String {
        "30s".into()
    }
    fn default_connect_timeout() -> String {
        "5s".into()
    }
    fn default_tunnel_idle_timeout() -> String {
        "5m".into()
    }
    fn default_user_header() -> String {
        "X-Forwarded-User".into()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StaticFiles {
    pub root: PathBuf,
    #[serde(default)]
    pub allow_dotfiles: bool,
    #[serde(default)]
    pub follow_symlinks_outside_root: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RateLimit {
    pub per_ip: RateSetting,
    pub per_user: RateSetting,
    pub max_tracked_keys: usize,
    pub count_verified: bool,
}

impl Default for RateLimit {
    fn default() -> Self {
        let defaults = RateLimitSettings::default();
        Self {
            per_ip: RateSetting::from(defaults.per_ip),
            per_user: RateSetting::from(defaults.per_user),
            max_tracked_keys: defaults.max_tracked_keys,
            count_verified: defaults.count_verified,
        }
    }
}

impl From<Option<Rate>> for RateSetting {
    fn from(rate: Option<Rate>) -> Self {
        match rate {
            Some(rate) => Self::Rate(RawRate {
                per_second: rate.per_second.get(),
                burst: Some(rate.burst.get()),
            }),
            None => Self::Switch(false),
        }
    }
}

/// `{ per_second = 20, burst = 40 }`, or `false` to turn a limit off.
pub(super) enum RateSetting {
    Switch(bool),
    Rate(RawRate),
}

// By hand rather than `#[serde(untagged)]`, whose only error is "data did not
// match any variant": this keeps the table's own messages (unknown field…).
impl<'de> Deserialize<'de> for RateSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RateSetting;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table like { per_second = 20, burst = 40 }, or false")
            }

            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<RateSetting, E> {
                Ok(RateSetting::Switch(on))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RateSetting, A::Error> {
                RawRate::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RateSetting::Rate)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    pub per_second: u32,
    pub burst: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Lockout {
    pub max_failures: u32,
    pub window: String,
    pub duration: String,
    pub max_tracked: usize,
}

impl Default for Lockout {
    fn default() -> Self {
        let defaults = LockoutPolicy::default();
        Self {
            max_failures: defaults.max_failures,
            window: text(defaults.window),
            duration: text(defaults.duration),
            max_tracked: defaults.max_tracked,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Server {
    pub listen: String,
    pub trusted_proxies: Vec<String>,
    pub cpu_scheduling: String,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            trusted_proxies: Vec::new(),
            cpu_scheduling: "default".into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub self_signed: Option<bool>,
    pub self_signed_cert_out: Option<PathBuf>,
    pub enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Auth {
    pub realm: String,
    pub users_file: Option<PathBuf>,
    pub public: Vec<String>,
    pub generated_user: Option<String>,
    pub max_concurrent_verifications: Option<usize>,
    pub public_upgrades: bool,
    pub verify_queue: usize,
    pub verify_timeout: String,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            realm: "gatehouse".into(),
            users_file: None,
            public: vec!["/healthz".into()],
            generated_user: None,
            max_concurrent_verifications: None,
            public_upgrades: false,
            verify_queue: crate::credentials::DEFAULT_QUEUE,
            verify_timeout: text(crate::credentials::DEFAULT_MAX_WAIT),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Limits {
    pub header_read_timeout: String,
    pub tls_handshake_timeout: String,
    pub shutdown_grace: String,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub h2_keep_alive: String,
    pub idle_timeout: String,
    pub send_timeout: String,
    pub max_connections_per_ip: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_send_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let defaults = settings::Limits::default();
        Self {
            header_read_timeout: text(defaults.header_read_timeout),
            tls_handshake_timeout: text(defaults.tls_handshake_timeout),
            shutdown_grace: text(defaults.shutdown_grace),
            max_connections: defaults.max_connections,
            max_header_bytes: defaults.max_header_bytes,
            max_body_bytes: defaults.max_body_bytes,
            h2_keep_alive: text(defaults.h2_keep_alive),
            idle_timeout: text(defaults.idle_timeout),
            send_timeout: text(defaults.send_timeout),
            max_connections_per_ip: defaults.max_connections_per_ip,
            h2_max_concurrent_streams: defaults.h2_max_concurrent_streams,
            h2_max_send_buffer: defaults.h2_max_send_buffer,
        }
    }
}

/// Deserializes the file, turning a TOML error into one line that names the
/// line, the section and the key, without quoting the line itself (it may
/// hold a hash).
pub(super) fn parse(path: &Path, text: &str) -> Result<File, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let offset = err.span().map_or(0, |s| s.start).min(text.len());
        let line_no = text[..offset].matches('\n').count() + 1;
        let key = describe_position(text, line_no);
        ConfigError::invalid(path, key, redact_value(err.message().trim()))
    })
}

/// serde's "invalid type: string \"…\", expected …" (and "invalid value")
/// quote the value found, which may be a hash or a password pasted into the
/// wrong place: keep the kind, drop the value.
fn redact_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let kind = found.split([' ', '`', '"']).next().unwrap_or("value");
            return format!("{prefix}{kind}, expected {expected}");
        }
    }
    message.to_owned()
}

/// `line N, [section] key` for the given 1-based line.
fn describe_position(text: &str, line_no: usize) -> String {
    let mut section = String::new();
    let mut key = String::new();
    for (i, line) in text.lines().enumerate().take(line_no) {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .split(']')
                .next()
                .unwrap_or("")
                .trim_start_matches('[')
                .trim()
                .to_owned();
            key.clear();
        } else if i + 1 == line_no {
            let candidate = line.split('=').next().unwrap_or("").trim();
            // Only a plain key is named; anything else on a broken line
            // might be a secret.
            if is_bare_key(candidate) {
                key = candidate.to_owned();
            }
        }
    }
    match (section.is_empty(), key.is_empty()) {
        (true, true) => format!("line {line_no}"),
        (false, true) => format!("line {line_no}, [{section}]"),
        (true, false) => format!("line {line_no}, {key}"),
        (false, false) => format!("line {line_no}, [{section}] {key}"),
    }
}

fn is_bare_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Cache {
    pub enabled: bool,
    pub ttl: String,
    pub max_entries: usize,
}

impl Default for Cache {
    fn default() -> Self {
        let defaults = CachePolicy::default();
        Self {
            enabled: defaults.enabled,
            ttl: text(defaults.ttl),
            max_entries: defaults.max_entries,
        }
    }
}

/// A default duration as the config file would spell it ("10m").
fn text(duration: std::time::Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Log {
    pub level: String,
    pub format: crate::logging::LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: crate::logging::LogFormat::Text,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Metrics {
    pub listen: Option<String>,
    pub path: Option<String>,
}
