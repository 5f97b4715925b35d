//! One parse function per section of the file: raw serde values in, typed
//! settings out, or a [`KeyError`] naming the key. None of them knows the
//! file's path; [`Config::from_toml`](super::Config::from_toml) attaches it
//! once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::settings::{
    AuthSettings, Backend, Limits, LogSettings, MetricsSettings, RateLimitSettings, ServerSettings,
};
use super::users::Username;
use super::values::{duration, nonzero_duration, parse_cidr, rate, upstream_settings};
use super::{KeyError, raw};
use crate::auth::cache::CachePolicy;
use crate::auth::{PublicPaths, Realm};
use crate::limit::LockoutPolicy;
use crate::logging::LogFilter;

pub(super) fn server(raw: raw::Server) -> Result<ServerSettings, KeyError> {
    let listen = raw.listen.parse::<SocketAddr>().map_err(|e| {
        KeyError::new(
            "[server] listen",
            format!("`{}` is not an address:port ({e})", raw.listen),
        )
    })?;
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .map(|s| {
            parse_cidr(s).ok_or_else(|| {
                KeyError::new(
                    "[server] trusted_proxies",
                    format!("`{s}` is not an IP address or CIDR"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let cpu_scheduling = match raw.cpu_scheduling.as_str() {
        "default" => super::CpuScheduling::Default,
        "batch" if cfg!(target_os = "linux") => super::CpuScheduling::Batch,
        "batch" => {
            return Err(KeyError::new(
                "[server] cpu_scheduling",
                "batch (SCHED_BATCH) exists on Linux only",
            ));
        }
        other => {
            return Err(KeyError::new(
                "[server] cpu_scheduling",
                format!("`{other}` is not default or batch"),
            ));
        }
    };
    Ok(ServerSettings {
        listen,
        trusted_proxies,
        listen_overridden: false,
        cpu_scheduling,
    })
}

/// `[auth]`, given the users already read from `[users]` and the users file.
pub(super) fn auth(
    raw: raw::Auth,
    users: Vec<(String, crate::credentials::UserHash)>,
    users_file: Option<PathBuf>,
    allow_no_users: bool,
) -> Result<AuthSettings, KeyError> {
    let realm =
        Realm::parse(&raw.realm).map_err(|e| KeyError::new("[auth] realm", e.to_string()))?;
    let public =
        PublicPaths::new(raw.public).map_err(|e| KeyError::new("[auth] public", e.to_string()))?;
    let generated_user = raw
        .generated_user
        .as_deref()
        .map(Username::parse)
        .transpose()
        .map_err(|m| KeyError::new("[auth] generated_user", m))?
        .map(Username::into_string);
    if users.is_empty() && generated_user.is_none() && !allow_no_users {
        return Err(KeyError::new(
            "[users]",
            "no users configured: add `name = \"<hash from gatehouse hash-password>\"` under [users], set [auth] users_file, or set [auth] generated_user for development",
        ));
    }
    let max_concurrent_verifications = match raw.max_concurrent_verifications {
        Some(0) => {
            return Err(KeyError::new(
                "[auth] max_concurrent_verifications",
                "must be at least 1",
            ));
        }
        Some(n) => n,
        None => crate::credentials::available_cores(),
    };
    Ok(AuthSettings {
        realm,
        public,
        users,
        users_file,
        generated_user,
        max_concurrent_verifications,
        public_upgrades: raw.public_upgrades,
        verify_queue: raw.verify_queue,
        verify_timeout: nonzero_duration("[auth] verify_timeout", &raw.verify_timeout)?,
    })
}

pub(super) fn limits(raw: raw::Limits) -> Result<Limits, KeyError> {
    let at_least = |key: &str, n: usize, min: usize| {
        if n < min {
            return Err(KeyError::new(key, format!("must be at least {min}")));
        }
        Ok(n)
    };
    if !(1024..=16 << 20).contains(&raw.h2_max_send_buffer) {
        return Err(KeyError::new(
            "[limits] h2_max_send_buffer",
            "must be between 1024 and 16777216 (16 MiB)",
        ));
    }
    Ok(Limits {
        header_read_timeout: nonzero_duration(
            "[limits] header_read_timeout",
            &raw.header_read_timeout,
        )?,
        tls_handshake_timeout: nonzero_duration(
            "[limits] tls_handshake_timeout",
            &raw.tls_handshake_timeout,
        )?,
        shutdown_grace: duration("[limits] shutdown_grace", &raw.shutdown_grace)?,
        max_connections: at_least("[limits] max_connections", raw.max_connections, 1)?,
        max_header_bytes: at_least("[limits] max_header_bytes", raw.max_header_bytes, 8192)?,
        max_body_bytes: raw.max_body_bytes,
        h2_keep_alive: nonzero_duration("[limits] h2_keep_alive", &raw.h2_keep_alive)?,
        idle_timeout: nonzero_duration("[limits] idle_timeout", &raw.idle_timeout)?,
        send_timeout: nonzero_duration("[limits] send_timeout", &raw.send_timeout)?,
        max_connections_per_ip: at_least(
            "[limits] max_connections_per_ip",
            raw.max_connections_per_ip,
            1,
        )?,
        h2_max_concurrent_streams: match raw.h2_max_concurrent_streams {
            0 => {
                return Err(KeyError::new(
                    "[limits] h2_max_concurrent_streams",
                    "must be at least 1",
                ));
            }
            n => n,
        },
        h2_max_send_buffer: raw.h2_max_send_buffer,
    })
}

pub(super) fn rate_limit(raw: &raw::RateLimit) -> Result<RateLimitSettings, KeyError> {
    let defaults = RateLimitSettings::default();
    Ok(RateLimitSettings {
        per_ip: rate("[rate_limit] per_ip", &raw.per_ip, defaults.per_ip)?,
        per_user: rate("[rate_limit] per_user", &raw.per_user, defaults.per_user)?,
        max_tracked_keys: raw.max_tracked_keys.max(1),
        count_verified: raw.count_verified,
    })
}

pub(super) fn lockout(raw: raw::Lockout) -> Result<LockoutPolicy, KeyError> {
    Ok(LockoutPolicy {
        max_failures: raw.max_failures,
        window: nonzero_duration("[lockout] window", &raw.window)?,
        duration: nonzero_duration("[lockout] duration", &raw.duration)?,
        max_tracked: raw.max_tracked.max(1),
    })
}

pub(super) fn cache(raw: raw::Cache) -> Result<CachePolicy, KeyError> {
    Ok(CachePolicy {
        enabled: raw.enabled,
        ttl: nonzero_duration("[cache] ttl", &raw.ttl)?,
        max_entries: raw.max_entries.max(1),
    })
}

pub(super) fn log(raw: raw::Log) -> Result<LogSettings, KeyError> {
    let level = LogFilter::parse(&raw.level).map_err(|e| {
        KeyError::new(
            "[log] level",
            format!(
                "`{}` is not a level or filter like \"info\" or \"gatehouse=debug,warn\": {e}",
                raw.level
            ),
        )
    })?;
    Ok(LogSettings {
        level,
        format: raw.format,
    })
}

pub(super) fn metrics(raw: raw::Metrics) -> Result<MetricsSettings, KeyError> {
    Ok(MetricsSettings {
        listen: match &raw.listen {
            Some(text) => Some(text.parse().map_err(|e| {
                KeyError::new(
                    "[metrics] listen",
                    format!("`{text}` is not an address:port ({e})"),
                )
            })?),
            None => None,
        },
        path: raw.path.map(metrics_path).transpose()?,
    })
}

/// The routes gatehouse serves itself; `[metrics] path` may not take one.
const OWN_ROUTES: [&str; 3] = ["/healthz", "/api/whoami", "/api/stats"];

/// `[metrics] path`: a literal, canonical path that no built-in route uses
/// (the router would refuse it at start-up, after check-config said yes).
fn metrics_path(p: String) -> Result<String, KeyError> {
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
        Some(problem) => Err(KeyError::new("[metrics] path", format!("`{p}` {problem}"))),
        None => Ok(p),
    }
}

/// `[upstream]`, `[static]`, or neither (the built-in API).
pub(super) fn backend(
    upstream: Option<raw::Upstream>,
    files: Option<raw::StaticFiles>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Backend, KeyError> {
    match (upstream, files) {
        (Some(_), Some(_)) => Err(KeyError::new(
            "[upstream] and [static]",
            "both are set: choose one (or neither, for the built-in API)",
        )),
        (Some(upstream), None) => Ok(Backend::Upstream(Box::new(upstream_settings(
            upstream, resolve,
        )?))),
        (None, Some(files)) => {
            let root = resolve(&files.root);
            if !root.is_dir() {
                return Err(KeyError::new(
                    "[static] root",
                    format!("{} is not a directory", root.display()),
                ));
            }
            Ok(Backend::Static(super::StaticSettings {
                root,
                allow_dotfiles: files.allow_dotfiles,
                follow_symlinks_outside_root: files.follow_symlinks_outside_root,
            }))
        }
        (None, None) => Ok(Backend::Api),
    }
}

/// `[tokens]`: `None` unless enabled; a signing key (a file, or an
/// ephemeral one for development) is required.
pub(super) fn tokens(
    raw: raw::Tokens,
    resolve: &impl Fn(&Path) -> PathBuf,
) -> Result<Option<super::TokenSettings>, KeyError> {
    if !raw.enabled {
        return Ok(None);
    }
    let algorithm = crate::tokens::KeyAlgorithm::parse(&raw.algorithm).ok_or_else(|| {
        KeyError::new(
            "[tokens] algorithm",
            format!("`{}` is not EdDSA or ES256", raw.algorithm),
        )
    })?;
    let signing_key = match (raw.signing_key, raw.ephemeral_key) {
        (Some(path), false) => super::SigningKeySource::File(resolve(&path)),
        (None, true) => super::SigningKeySource::Ephemeral(algorithm),
        (Some(_), true) => {
            return Err(KeyError::new(
                "[tokens] ephemeral_key",
                "set signing_key or ephemeral_key, not both",
            ));
        }
        (None, false) => {
            return Err(KeyError::new(
                "[tokens] signing_key",
                "tokens are enabled but no signing key is set: make one with `gatehouse gen-signing-key --out tokens/signing-key.pem` and set signing_key, or set ephemeral_key = true for development",
            ));
        }
    };
    let login_path = raw.login_path;
    let canonical = crate::path::canonicalize(&login_path).map_err(|_| {
        KeyError::new(
            "[tokens] login_path",
            format!("`{login_path}` is not a path"),
        )
    })?;
    if canonical != login_path.as_str() || login_path.contains(['*', ';', '?']) {
        return Err(KeyError::new(
            "[tokens] login_path",
            format!(
                "`{login_path}` must be a canonical path starting with / (no dot segments, //, escapes, *, ; or ?)"
            ),
        ));
    }
    if login_path == crate::auth::JWKS_PATH {
        return Err(KeyError::new("[tokens] login_path", "is the JWKS path"));
    }
    let text = |s: &str| s.trim().to_owned();
    if text(&raw.issuer).is_empty() || text(&raw.audience).is_empty() {
        return Err(KeyError::new(
            "[tokens] issuer",
            "issuer and audience must not be empty",
        ));
    }
    Ok(Some(super::TokenSettings {
        signing_key,
        previous_keys: raw.previous_keys.iter().map(|p| resolve(p)).collect(),
        policy: crate::tokens::TokenPolicy {
            issuer: raw.issuer,
            audience: raw.audience,
            ttl: at_most(
                "[tokens] ttl",
                at_least_a_second("[tokens] ttl", nonzero_duration("[tokens] ttl", &raw.ttl)?)?,
                std::time::Duration::from_secs(24 * 3600),
                "1 day (apps that verify tokens themselves cannot see a revocation)",
            )?,
            leeway: at_most(
                "[tokens] leeway",
                humantime::parse_duration(&raw.leeway).map_err(|e| {
                    KeyError::new("[tokens] leeway", format!("`{}`: {e}", raw.leeway))
                })?,
                std::time::Duration::from_secs(300),
                "5 minutes (it lengthens every token's life)",
            )?,
        },
        login_path,
        cache_max_entries: raw.cache_max_entries.max(1),
    }))
}

/// `[api_keys]`: the keys file and the header.
pub(super) fn api_keys(
    raw: Option<raw::ApiKeys>,
    resolve: &impl Fn(&Path) -> PathBuf,
) -> Result<Option<super::ApiKeySettings>, KeyError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let header = http::HeaderName::try_from(raw.header.as_str()).map_err(|_| {
        KeyError::new(
            "[api_keys] header",
            format!("`{}` is not a header name", raw.header),
        )
    })?;
    // Headers that mean something else to HTTP, to proxies or to
    // gatehouse: a key there would be misread, dropped or forwarded.
    const RESERVED: [&str; 17] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-type",
        "forwarded",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-user",
        "www-authenticate",
    ];
    let name = header.as_str();
    if RESERVED.contains(&name)
        || name.contains('_')
        || name.starts_with("x-forwarded-")
        || name.starts_with("proxy-")
    {
        return Err(KeyError::new(
            "[api_keys] header",
            format!(
                "`{}` is reserved (Authorization, hop-by-hop, forwarding and cookie headers) or has `_`: use e.g. X-API-Key",
                raw.header
            ),
        ));
    }
    Ok(Some(super::ApiKeySettings {
        file: resolve(&raw.file),
        header,
    }))
}

fn at_most(
    key: &str,
    value: std::time::Duration,
    max: std::time::Duration,
    why: &str,
) -> Result<std::time::Duration, KeyError> {
    if value > max {
        return Err(KeyError::new(key, format!("may be at most {why}")));
    }
    Ok(value)
}

/// Token times are whole seconds (`exp`, `expires_in`).
fn at_least_a_second(
    key: &str,
    value: std::time::Duration,
) -> Result<std::time::Duration, KeyError> {
    if value < std::time::Duration::from_secs(1) {
        return Err(KeyError::new(key, "must be at least 1s"));
    }
    Ok(value)
}

/// RFC 6749 §3.3 scope-token: `%x21 / %x23-5B / %x5D-7E`, at least one.
pub(crate) fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// `[oauth]`: `None` unless enabled; needs `[tokens]` (the signer).
pub(super) fn oauth(
    raw: raw::OAuth,
    tokens_on: bool,
) -> Result<Option<super::OAuthSettings>, KeyError> {
    if !raw.enabled {
        return Ok(None);
    }
    if !tokens_on {
        return Err(KeyError::new(
            "[oauth] enabled",
            "OAuth issues tokens with the [tokens] signer: enable [tokens] too",
        ));
    }
    let mut clients = Vec::new();
    for (id, client) in raw.clients {
        let key = |field: &str| format!("[oauth.clients.{id}] {field}");
        if id.is_empty()
            || id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(KeyError::new(
                format!("[oauth.clients.{id:?}]"),
                "a client id is 1 to 128 letters, digits, `.`, `_` or `-`",
            ));
        }
        if let Some(secret) = &client.secret {
            crate::credentials::parse_phc(secret)
                .map_err(|e| KeyError::new(key("secret"), e.to_string()))?;
        }
        let mut grant_types = Vec::new();
        for name in &client.grant_types {
            let grant = super::GrantType::parse(name).ok_or_else(|| {
                KeyError::new(
                    key("grant_types"),
                    format!(
                        "`{name}` is not authorization_code, refresh_token or client_credentials"
                    ),
                )
            })?;
            if grant == super::GrantType::ClientCredentials && client.secret.is_none() {
                return Err(KeyError::new(
                    key("grant_types"),
                    "client_credentials needs a secret: a public client cannot authenticate",
                ));
            }
            if !grant_types.contains(&grant) {
                grant_types.push(grant);
            }
        }
        if grant_types.is_empty() {
            return Err(KeyError::new(
                key("grant_types"),
                "name at least one grant type",
            ));
        }
        if grant_types.contains(&super::GrantType::AuthorizationCode)
            && client.redirect_uris.is_empty()
        {
            return Err(KeyError::new(
                key("redirect_uris"),
                "authorization_code needs at least one redirect URI",
            ));
        }
        for uri in &client.redirect_uris {
            let oob = uri == "urn:ietf:wg:oauth:2.0:oob";
            let parsed = uri.parse::<http::Uri>().ok();
            // No user-info: `https://good@evil/` reads like `good`.
            let absolute = parsed.as_ref().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some_and(|a| !a.as_str().contains('@'))
            });
            if !oob && (!absolute || uri.contains('#')) {
                return Err(KeyError::new(
                    key("redirect_uris"),
                    format!(
                        "`{uri}` is not urn:ietf:wg:oauth:2.0:oob or an absolute http(s) URL without user-info or a fragment"
                    ),
                ));
            }
            // RFC 9700 §2.6: a code must not cross the network in clear;
            // plain http only to the user's own machine (RFC 8252 §7.3).
            let host = parsed.as_ref().and_then(|u| u.host()).unwrap_or("");
            let loopback = host == "127.0.0.1" || host == "[::1]";
            let plain = parsed
                .as_ref()
                .and_then(|u| u.scheme_str())
                .is_some_and(|s| s.eq_ignore_ascii_case("http"));
            if plain && !loopback {
                return Err(KeyError::new(
                    key("redirect_uris"),
                    format!(
                        "`{uri}`: plain http is only for loopback (http://127.0.0.1 or http://[::1]); use https, or codes cross the network in clear"
                    ),
                ));
            }
        }
        if client.scopes.is_empty() {
            return Err(KeyError::new(
                key("scopes"),
                "name at least one scope: a token without scopes would look unrestricted",
            ));
        }
        if let Some(bad) = client.scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(KeyError::new(
                key("scopes"),
                format!("`{bad}` is not a scope token"),
            ));
        }
        // RFC 8252 §8.6: anyone can claim a public client's id, so
        // approving without asking would hand codes to impostors.
        if client.auto_approve && client.secret.is_none() {
            return Err(KeyError::new(
                key("auto_approve"),
                "a public client (no secret) cannot be auto-approved: anyone can claim its id; keep the consent page",
            ));
        }
        clients.push(super::OAuthClient {
            name: client.name.unwrap_or_else(|| id.clone()),
            id,
            secret: client.secret,
            redirect_uris: client.redirect_uris,
            grant_types,
            scopes: client.scopes,
            auto_approve: client.auto_approve,
        });
    }
    Ok(Some(super::OAuthSettings {
        code_ttl: nonzero_duration("[oauth] code_ttl", &raw.code_ttl)?,
        refresh_ttl: nonzero_duration("[oauth] refresh_ttl", &raw.refresh_ttl)?,
        clients,
    }))
}

/// Headers a forward-auth answer must not set: the proxy would pass them on
/// as if the client had sent them, or they frame the message.
const RESERVED_IDENTITY_HEADERS: [&str; 10] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "www-authenticate",
    "x-forwarded-for",
];

/// `[forward_auth]`: `None` unless the section is present.
pub(super) fn forward_auth(
    raw: Option<raw::ForwardAuth>,
    resolve: &impl Fn(&Path) -> PathBuf,
) -> Result<Option<super::ForwardAuthSettings>, KeyError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let path = raw.path;
    let canonical = crate::path::canonicalize(&path).is_ok_and(|c| c == path);
    if !canonical || path == "/" || path.ends_with('/') || path.contains(['*', '?', '#']) {
        return Err(KeyError::new(
            "[forward_auth] path",
            format!(
                "`{path}` must be a canonical literal path below / (like /authz): no `*`, dot segments, // or trailing /"
            ),
        ));
    }
    if OWN_ROUTES.contains(&path.as_str()) {
        return Err(KeyError::new(
            "[forward_auth] path",
            format!("`{path}` is one of gatehouse's own routes"),
        ));
    }
    let listen = match &raw.listen {
        Some(text) => Some(listen_address(
            text,
            raw.socket_mode.as_deref(),
            "[forward_auth]",
            resolve,
        )?),
        None => None,
    };
    if raw.socket_mode.is_some() && !matches!(listen, Some(super::ListenAddress::Unix { .. })) {
        return Err(KeyError::new(
            "[forward_auth] socket_mode",
            "applies only to a Unix socket (listen = \"unix:/path\")",
        ));
    }
    let style = match raw.style.as_str() {
        "auto" => super::ForwardAuthStyle::Auto,
        "nginx" => super::ForwardAuthStyle::Nginx,
        other => {
            return Err(KeyError::new(
                "[forward_auth] style",
                format!("`{other}` is not auto or nginx"),
            ));
        }
    };
    let mut identity_headers: Vec<http::HeaderName> = Vec::new();
    for name in &raw.identity_headers {
        let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            KeyError::new(
                "[forward_auth] identity_headers",
                format!("`{name}` is not a header name"),
            )
        })?;
        if RESERVED_IDENTITY_HEADERS.contains(&header.as_str()) {
            return Err(KeyError::new(
                "[forward_auth] identity_headers",
                format!(
                    "`{name}` is not for identities: the proxy would treat it as the client's own"
                ),
            ));
        }
        if !identity_headers.contains(&header) {
            identity_headers.push(header);
        }
    }
    let client_header = match raw.client_header.to_ascii_lowercase().as_str() {
        "x-forwarded-for" => super::ForwardAuthClientHeader::XForwardedFor,
        "x-real-ip" => super::ForwardAuthClientHeader::XRealIp,
        other => {
            return Err(KeyError::new(
                "[forward_auth] client_header",
                format!("`{other}` is not x-forwarded-for or x-real-ip"),
            ));
        }
    };
    Ok(Some(super::ForwardAuthSettings {
        path,
        listen,
        style,
        identity_headers,
        client_header,
    }))
}

/// The longest path a Unix socket address holds on Linux (`sun_path` is 108
/// bytes with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The longest folder a socket may be in: it is made in a private folder
/// beside it first (`.gatehouse-<pid>-<random>/s`, at most 32 bytes more).
const MAX_SOCKET_FOLDER: usize = MAX_SOCKET_PATH - 32;

/// A `listen` value: `address:port`, or `unix:/path` with its `socket_mode`
/// (octal, `660` by default: the owner and its group).
fn listen_address(
    text: &str,
    socket_mode: Option<&str>,
    section: &str,
    resolve: &impl Fn(&Path) -> PathBuf,
) -> Result<super::ListenAddress, KeyError> {
    let Some(file) = text.strip_prefix("unix:") else {
        return text.parse().map(super::ListenAddress::Tcp).map_err(|e| {
            KeyError::new(
                format!("{section} listen"),
                format!("`{text}` is not an address:port or unix:/path ({e})"),
            )
        });
    };
    if file.is_empty() || file.ends_with('/') || file.contains('\0') {
        return Err(KeyError::new(
            format!("{section} listen"),
            format!("`{text}` names no socket file (unix:/run/gatehouse/authz.sock)"),
        ));
    }
    let path = resolve(Path::new(file));
    let folder = path.parent().map_or(0, |p| p.as_os_str().len());
    if path.as_os_str().len() > MAX_SOCKET_PATH || folder > MAX_SOCKET_FOLDER {
        return Err(KeyError::new(
            format!("{section} listen"),
            format!(
                "`{}` is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes, its folder {MAX_SOCKET_FOLDER})",
                path.display()
            ),
        ));
    }
    let mode = match socket_mode {
        None => 0o660,
        Some(text) => u32::from_str_radix(text, 8)
            .ok()
            .filter(|m| *m <= 0o777 && (1..=4).contains(&text.len()))
            .ok_or_else(|| {
                KeyError::new(
                    format!("{section} socket_mode"),
                    format!("`{text}` is not octal permission bits like \"660\""),
                )
            })?,
    };
    Ok(super::ListenAddress::Unix { path, mode })
}

/// `[groups]`, `[[access]]` and `[access_default]`.
pub(super) fn access(
    groups: BTreeMap<String, Vec<String>>,
    rules: Vec<raw::AccessRule>,
    default: Option<raw::AccessDefault>,
) -> Result<super::AccessSettings, KeyError> {
    use crate::auth::access::{PathPattern, Principal};
    for name in groups.keys() {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(KeyError::new(
                format!("[groups] {name:?}"),
                "a group name is letters, digits, `.`, `_` or `-`",
            ));
        }
    }
    let mut checked = Vec::new();
    for (i, rule) in rules.into_iter().enumerate() {
        let key = |field: &str| format!("[[access]] #{} {field}", i + 1);
        // `;` (or `%3B`) parameters are removed before matching: a rule
        // with one could never match, and would protect nothing.
        let parse = |p: &str| {
            (!p.contains("%3B"))
                .then(|| PathPattern::parse(p))
                .flatten()
        };
        let path = parse(&rule.path).ok_or_else(|| {
            KeyError::new(
                key("path"),
                format!(
                    "`{}` must be a canonical path, or a prefix ending in `/*` (like /admin/*)",
                    rule.path
                ),
            )
        })?;
        let methods = match rule.methods {
            None => None,
            Some(names) => {
                let mut methods = Vec::new();
                for name in names {
                    let method = http::Method::from_bytes(name.as_bytes())
                        .ok()
                        .filter(|m| m.as_str() == name.to_ascii_uppercase())
                        .ok_or_else(|| {
                            KeyError::new(key("methods"), format!("`{name}` is not a method name"))
                        })?;
                    methods.push(method);
                }
                if methods.is_empty() {
                    return Err(KeyError::new(
                        key("methods"),
                        "name at least one method, or leave it out for all",
                    ));
                }
                Some(methods)
            }
        };
        if rule.allow.is_empty() {
            return Err(KeyError::new(
                key("allow"),
                "name who may: `authenticated`, `user:NAME` or `group:NAME`",
            ));
        }
        let mut allow = Vec::new();
        for who in &rule.allow {
            let principal = Principal::parse(who).ok_or_else(|| {
                KeyError::new(
                    key("allow"),
                    format!("`{who}` is not `authenticated`, `user:NAME` or `group:NAME`"),
                )
            })?;
            if let Principal::Group(group) = &principal
                && !groups.contains_key(group)
            {
                return Err(KeyError::new(
                    key("allow"),
                    format!("group `{group}` is not defined in [groups]"),
                ));
            }
            allow.push(principal);
        }
        if let Some(bad) = rule.scopes.iter().find(|s| !is_scope_token(s)) {
            return Err(KeyError::new(
                key("scopes"),
                format!("`{bad}` is not a scope token"),
            ));
        }
        if let Some(realm) = &rule.realm {
            crate::auth::validate_realm(realm)
                .map_err(|e| KeyError::new(key("realm"), e.to_string()))?;
        }
        checked.push(super::AccessRuleSettings {
            path,
            methods,
            allow,
            scopes: rule.scopes,
            realm: rule.realm,
        });
    }
    let deny_by_default = match default.as_ref().map(|d| d.allow.as_str()) {
        None | Some("authenticated") => false,
        Some("deny") => true,
        Some(other) => {
            return Err(KeyError::new(
                "[access_default] allow",
                format!("`{other}` is not authenticated or deny"),
            ));
        }
    };
    Ok(super::AccessSettings {
        groups,
        rules: checked,
        deny_by_default,
    })
}

/// The environment variable a Redis password may come from.
pub const REDIS_PASSWORD_ENV: &str = "GATEHOUSE_REDIS_PASSWORD";

/// `[cluster]`: `None` unless the section is present. The URL may not
/// carry a password (it would sit in the config and in any message that
/// quotes the URL): it comes from `password_file` or the environment.
pub(super) fn cluster(
    raw: Option<raw::Cluster>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Option<super::ClusterSettings>, KeyError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let key = "[cluster] redis";
    // The URL is never repeated in a message: it may hold a password.
    let url = url::Url::parse(&raw.redis)
        .map_err(|_| KeyError::new(key, "is not a URL like redis://127.0.0.1:6379/0"))?;
    if !["redis", "rediss", "redis+unix", "unix"].contains(&url.scheme()) {
        return Err(KeyError::new(
            key,
            format!(
                "`{}://` is not redis://, rediss:// or redis+unix://",
                url.scheme()
            ),
        ));
    }
    if url.password().is_some() {
        return Err(KeyError::new(
            key,
            format!(
                "the URL carries a password: put it in `password_file` or {REDIS_PASSWORD_ENV} instead"
            ),
        ));
    }
    if url.fragment().is_some() {
        return Err(KeyError::new(
            key,
            "a #fragment is not supported (for TLS with a private CA, trust it system-wide)",
        ));
    }
    // Only the database may be given as a parameter (redis+unix): a
    // password or user there would escape the check above.
    if let Some((name, _)) = url.query_pairs().find(|(name, _)| name != "db") {
        return Err(KeyError::new(
            key,
            format!("the URL parameter `{name}` is not supported (only db)"),
        ));
    }
    #[cfg(feature = "server")]
    if redis::Client::open(raw.redis.as_str()).is_err() {
        return Err(KeyError::new(key, "is not a Redis URL redis-rs accepts"));
    }
    let secret_key = "[cluster] secret_file";
    let secret = match &raw.secret_file {
        Some(file) => {
            let path = resolve(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                KeyError::new(secret_key, format!("cannot read {}: {e}", path.display()))
            })?;
            crate::key_file::warn_if_readable_by_others(&path, "[cluster] secret_file");
            let text = text.trim().to_owned();
            if text.len() < 32 {
                return Err(KeyError::new(
                    secret_key,
                    format!(
                        "{} holds {} characters: at least 32 random ones (`head -c 32 /dev/urandom | base64 > {}`)",
                        path.display(),
                        text.len(),
                        path.display()
                    ),
                ));
            }
            crate::secret::Password::new(text)
        }
        None => {
            return Err(KeyError::new(
                secret_key,
                "is required: the same file of 32 or more random characters on every replica (`head -c 32 /dev/urandom | base64 > cluster-secret`); it keys what gatehouse writes to Redis",
            ));
        }
    };
    let ca = match &raw.ca {
        Some(file) => {
            if url.scheme() != "rediss" {
                return Err(KeyError::new(
                    "[cluster] ca",
                    "is for rediss:// (TLS) URLs only",
                ));
            }
            let path = resolve(file);
            let pem = std::fs::read(&path).map_err(|e| {
                KeyError::new(
                    "[cluster] ca",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(KeyError::new(
                    "[cluster] ca",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            Some(pem)
        }
        None => None,
    };
    let password = match &raw.password_file {
        Some(file) => {
            let path = resolve(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                KeyError::new(
                    "[cluster] password_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let password = text.trim_end_matches(['\n', '\r']).to_owned();
            if password.is_empty() {
                return Err(KeyError::new(
                    "[cluster] password_file",
                    format!("{} is empty", path.display()),
                ));
            }
            Some(crate::secret::Password::new(password))
        }
        None => std::env::var(REDIS_PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(crate::secret::Password::new),
    };
    let prefix = raw.prefix;
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(KeyError::new(
            "[cluster] prefix",
            format!("`{prefix}` must be 1-64 letters, digits, `-`, `_` or `.`"),
        ));
    }
    let timeout = duration("[cluster] timeout", &raw.timeout)?;
    if timeout < std::time::Duration::from_millis(1) || timeout > std::time::Duration::from_secs(5)
    {
        return Err(KeyError::new(
            "[cluster] timeout",
            format!("`{}` must be between 1ms and 5s", raw.timeout),
        ));
    }
    let sync_interval = duration("[cluster] sync_interval", &raw.sync_interval)?;
    if sync_interval < std::time::Duration::from_millis(50)
        || sync_interval > std::time::Duration::from_secs(60)
    {
        return Err(KeyError::new(
            "[cluster] sync_interval",
            format!("`{}` must be between 50ms and 60s", raw.sync_interval),
        ));
    }
    Ok(Some(super::ClusterSettings {
        redis: raw.redis,
        password,
        secret,
        ca,
        prefix,
        timeout,
        sync_interval,
    }))
}
