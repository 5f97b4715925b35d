//! The typed sections of a validated config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::UserHash;
use ipnet::IpNet;

use crate::limit::Rate;

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// A separate plain-HTTP listener serving `GET /metrics` without auth
    /// (keep it on loopback or a cluster-internal address).
    pub listen: Option<SocketAddr>,
    /// A path on the main listener, behind authentication.
    pub path: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A filter directive (`info`, `gatehouse=debug,warn`); `RUST_LOG` wins.
    pub level: crate::logging::LogFilter,
    /// Text or JSON lines; `--log-format` wins.
    pub format: crate::logging::LogFormat,
}

/// What stands behind the gate. Exactly one is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The built-in routes (`/api/whoami`, `/api/stats`): neither
    /// `[upstream]` nor `[static]` is set.
    Api,
    /// `[upstream]`: a reverse proxy to an app.
    Upstream(Box<UpstreamSettings>),
    /// `[static]`: files from a directory.
    Static(StaticSettings),
}

/// `[upstream]`: the app gatehouse forwards authenticated requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// How long an upgraded connection (WebSocket) may carry no data in
    /// either direction before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// Whether client headers with `_` in their name reach the upstream
    /// (off: CGI, WSGI and PHP read `X_Forwarded_User` as `X-Forwarded-User`).
    pub underscores_in_headers: bool,
    /// Whether the upstream gets the client's `Host` (on: apps that build
    /// absolute URLs from it) instead of its own `host:port` from `url`
    /// (off, the default: virtual hosts on the upstream see their name).
    /// `X-Forwarded-Host` carries the client's either way.
    pub preserve_host: bool,
    /// Headers dropped unless the peer is a trusted proxy: client
    /// addresses, schemes and hosts as proxies report them.
    pub untrusted_headers: Vec<HeaderPattern>,
    /// Headers dropped from every peer: identities, groups, tokens, client
    /// certificates, URL and method rewrites.
    pub identity_headers: Vec<HeaderPattern>,
}

/// The headers `[upstream] untrusted_headers` names by default: client
/// addresses, schemes, hosts and paths as proxies report them. Dropped
/// unless the peer is a trusted proxy (which may set them). A name ending
/// in `*` is a prefix: `x-forwarded-*` drops every `X-Forwarded-…` header
/// the client sent (gatehouse then sets its own `-For`, `-Proto`, `-Host`).
pub const DEFAULT_UNTRUSTED_HEADERS: &[&str] = &[
    "x-forwarded-*",
    "x-forwarded",
    "forwarded-for",
    "x-real-ip",
    "true-client-ip",
    "client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-proxy-user-ip",
    "x-appengine-user-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-envoy-*",
    "x-url-scheme",
    "x-scheme",
    "front-end-https",
    "x-host",
    "x-script-name",
];

/// The headers `[upstream] identity_headers` names by default: who the
/// user is, their groups, email, tokens and client certificates, as other
/// auth proxies and platforms (oauth2-proxy, Authelia, authentik, Pomerium,
/// Vouch, Cloudflare Access, Google IAP, AWS ALB, Azure, Kong, Kubernetes
/// impersonation) tell their apps, and requests to rewrite the URL, method
/// or host. gatehouse is the one that says who the user is, so these are
/// dropped from every peer, trusted proxies included.
pub const DEFAULT_IDENTITY_HEADERS: &[&str] = &[
    "remote-*",
    "x-remote-*",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-forwarded-client-cert",
    "x-auth-*",
    "x-authenticated-*",
    "x-user",
    "x-user-*",
    "x-username",
    "x-email",
    "x-groups",
    "x-preferred-username",
    "x-userinfo",
    "x-webauth-*",
    "x-vouch-*",
    "x-pomerium-*",
    "x-authentik-*",
    "cf-access-*",
    "x-goog-*",
    "x-amzn-oidc-*",
    "x-ms-client-principal*",
    "x-consumer-*",
    "x-credential-identifier",
    "x-jwt-assertion",
    "oidc-*",
    "tailscale-*",
    "impersonate-*",
    "x-ssl-*",
    "ssl-client-*",
    "x-client-cert*",
    "x-client-verify",
    "x-client-dn",
    "x-arr-clientcert",
    "x-original-*",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-http-host-override",
];

/// A header name, or a prefix of names (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    /// Exactly this name.
    Exact(http::HeaderName),
    /// Every name starting with this (lower-case) text.
    Prefix(String),
}

impl HeaderPattern {
    /// Parses `x-real-ip` or `x-forwarded-*`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.strip_suffix('*') {
            Some(prefix) => {
                let prefix = prefix.to_ascii_lowercase();
                // The prefix must itself be made of header-name characters.
                let valid =
                    prefix.is_empty() || http::HeaderName::from_bytes(prefix.as_bytes()).is_ok();
                (valid && !prefix.is_empty()).then_some(Self::Prefix(prefix))
            }
            None => http::HeaderName::from_bytes(text.as_bytes())
                .ok()
                .map(Self::Exact),
        }
    }

    /// Whether `name` is covered.
    pub fn matches(&self, name: &http::HeaderName) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Prefix(prefix) => name.as_str().starts_with(prefix.as_str()),
        }
    }

    /// The first byte of every name covered (`None` when that could be
    /// any byte).
    pub fn first_byte(&self) -> Option<u8> {
        match self {
            Self::Exact(exact) => exact.as_str().bytes().next(),
            Self::Prefix(prefix) => prefix.bytes().next(),
        }
    }
}

/// `[rate_limit]`: request rates (governor), checked before any hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Requests per client address that cost or fail something (see
    /// `count_verified`); `None` when turned off.
    pub per_ip: Option<Rate>,
    /// A quota of authenticated requests per user (not a defence: the
    /// lockouts are); `None`, the default, when off.
    pub per_user: Option<Rate>,
    /// The most keys each limiter tracks.
    pub max_tracked_keys: usize,
    /// Count requests with already-verified credentials against `per_ip`
    /// too (the behaviour before it counted only what costs or fails).
    pub count_verified: bool,
}

impl Default for RateLimitSettings {
    /// 20 requests/s per address with a burst of 40, counting only requests
    /// that cost or fail something; no per-user quota; 100,000 keys. The
    /// builder and the config file both start from these.
    fn default() -> Self {
        Self {
            per_ip: Some(Rate::new(20, 40)),
            per_user: None,
            max_tracked_keys: 100_000,
            count_verified: false,
        }
    }
}

/// `[server]`: where to listen and whom to believe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// The address to bind (port 0 lets the OS pick one).
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Set when `listen` came from `--listen` (or `GATEHOUSE_LISTEN`), not
    /// the file: a reload keeps it.
    pub listen_overridden: bool,
    /// See [`CpuScheduling`].
    pub cpu_scheduling: CpuScheduling,
}

/// `[server] cpu_scheduling`: the Linux scheduling policy of the
/// `gatehouse` binary's threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CpuScheduling {
    /// Whatever the process was started with (`"default"`).
    #[default]
    Default,
    /// `SCHED_BATCH` (`"batch"`): a request arriving does not preempt the
    /// process running on the CPU. Beside a proxy on the same CPU (forward
    /// auth) the proxy finishes its turn and gatehouse then answers every
    /// waiting decision in one go, instead of two context switches per
    /// request; a CPU-bound neighbour delays gatehouse by up to its slice.
    Batch,
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
    pub realm: crate::auth::Realm,
    /// Path patterns that skip authentication: exact, or a prefix ending in `*`.
    pub public: crate::auth::PublicPaths,
    /// Every configured user with its parsed hash.
    pub users: Vec<(String, UserHash)>,
    /// The users file, if any (resolved against the config's directory).
    pub users_file: Option<PathBuf>,
    /// With no users configured: make this user with a random password at
    /// start-up (development only).
    pub generated_user: Option<String>,
    /// How many argon2 verifications may run at once.
    pub max_concurrent_verifications: usize,
    /// Whether upgrade requests (WebSockets) on public paths skip
    /// authentication (off: they must authenticate).
    pub public_upgrades: bool,
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// How long a connection with no request in flight may stay open, even
    /// if it keeps answering HTTP/2 PINGs. (A connection that sends nothing
    /// at all is closed after `header_read_timeout`.)
    pub idle_timeout: Duration,
    /// How long a response may wait for the client to take more of it
    /// (a full TCP window, or an HTTP/2 flow-control window left shut)
    /// before the connection is closed.
    pub send_timeout: Duration,
    /// Connections one client address (IPv6: one /64) may hold at once;
    /// trusted proxies are exempt.
    pub max_connections_per_ip: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Bytes buffered per HTTP/2 stream waiting for the client's window.
    pub h2_max_send_buffer: usize,
}

impl Default for Limits {
    /// The one place `[limits]` defaults are written.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            h2_keep_alive: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_connections_per_ip: 256,
            h2_max_concurrent_streams: 100,
            h2_max_send_buffer: 64 * 1024,
        }
    }
}

impl Limits {
    /// The limits for the separate metrics listener: the main listener's
    /// timeouts, with few connections (only scrapers should come).
    pub fn for_metrics(&self) -> Self {
        Self {
            max_connections: 64,
            max_connections_per_ip: 16,
            ..self.clone()
        }
    }
}

/// `[static]`: where the files are and what may be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSettings {
    /// The directory served.
    pub root: PathBuf,
    /// Serve files and directories whose name starts with `.`.
    pub allow_dotfiles: bool,
    /// Follow symlinks that lead outside `root`.
    pub follow_symlinks_outside_root: bool,
}

/// Where the token signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKeySource {
    /// A PKCS#8 PEM file (`gatehouse gen-signing-key` writes one).
    File(PathBuf),
    /// Development: a key generated at start-up, lost at exit.
    Ephemeral(crate::tokens::KeyAlgorithm),
}

/// `[tokens]`, when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The signing key.
    pub signing_key: SigningKeySource,
    /// Public (or private) key files whose tokens are still accepted.
    pub previous_keys: Vec<PathBuf>,
    /// Issuer, audience, lifetime, leeway.
    pub policy: crate::tokens::TokenPolicy,
    /// Where `POST` trades a password for a token.
    pub login_path: String,
    /// How many verified tokens are remembered.
    pub cache_max_entries: usize,
}

/// `[api_keys]`, when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySettings {
    /// The keys file (`gatehouse api-key create` appends to it).
    pub file: PathBuf,
    /// The header that may carry a key (besides `Authorization: Bearer`).
    pub header: http::HeaderName,
}

/// `[oauth]`, when enabled: gatehouse as an OAuth 2.0 authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// How long an authorization code may wait to be redeemed.
    pub code_ttl: std::time::Duration,
    /// How long a refresh token lives.
    pub refresh_ttl: std::time::Duration,
    /// The registered clients.
    pub clients: Vec<OAuthClient>,
}

/// A grant type a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantType {
    /// `authorization_code` (RFC 6749 §4.1, with PKCE).
    AuthorizationCode,
    /// `refresh_token` (§6).
    RefreshToken,
    /// `client_credentials` (§4.4): the client acts for itself.
    ClientCredentials,
}

impl GrantType {
    /// Parses the RFC 6749 name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            "client_credentials" => Some(Self::ClientCredentials),
            _ => None,
        }
    }

    /// The RFC 6749 name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }
}

/// One registered client (`[oauth.clients.<id>]`). Its `Debug` leaves the
/// secret's hash out: hashes are secrets too.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    /// The `client_id`.
    pub id: String,
    /// What the consent page calls it.
    pub name: String,
    /// The secret's argon2 PHC string; `None` for a public client (PKCE).
    pub secret: Option<String>,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// The grants it may use.
    pub grant_types: Vec<GrantType>,
    /// The scopes it may ask for.
    pub scopes: Vec<String>,
    /// Skip the consent page.
    pub auto_approve: bool,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("id", &self.id)
            .field("confidential", &self.secret.is_some())
            .field("grant_types", &self.grant_types)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The identity headers a forward-auth answer carries by default: the
/// names oauth2-proxy, Authelia and Traefik's examples use.
pub const FORWARD_IDENTITY_HEADERS: [&str; 3] =
    ["X-Auth-Request-User", "Remote-User", "X-Forwarded-User"];

/// How the proxy asking for decisions treats answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthStyle {
    /// nginx when the request has `X-Original-URI`, otherwise a proxy
    /// that passes any status through (Caddy, Traefik, Envoy).
    Auto,
    /// nginx `auth_request`, which turns anything but 2xx, 401 and 403
    /// into a 500: limits answer 401 (with `Retry-After`).
    Nginx,
}

/// Which header from a trusted proxy names the client of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthClientHeader {
    /// `X-Forwarded-For`, walked from the right like everywhere else.
    XForwardedFor,
    /// `X-Real-IP` alone (for a proxy that sets only that one: its
    /// `X-Forwarded-For` would be the client's own).
    XRealIp,
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// An address and port (`127.0.0.1:9091`).
    Tcp(SocketAddr),
    /// A Unix socket (`unix:/run/gatehouse/authz.sock`). Its peer is a
    /// process on this host that the file's permissions let in: it is
    /// trusted like a listed proxy (its `X-Forwarded-For` names the client).
    Unix {
        /// The socket file (absolute, or resolved against the config
        /// file's folder).
        path: PathBuf,
        /// The file's permission bits (`socket_mode`, 0o660 by default).
        mode: u32,
    },
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[forward_auth]`: decisions for nginx `auth_request`, Caddy
/// `forward_auth`, Traefik `ForwardAuth` and Envoy `ext_authz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthSettings {
    /// Any method on this path or below it asks for a decision.
    pub path: String,
    /// A separate plain-HTTP listener for decisions (then the main
    /// listener does not answer them): a TCP address, or a Unix socket.
    pub listen: Option<ListenAddress>,
    /// See [`ForwardAuthStyle`].
    pub style: ForwardAuthStyle,
    /// The headers an allowed answer names the user in.
    pub identity_headers: Vec<http::HeaderName>,
    /// See [`ForwardAuthClientHeader`].
    pub client_header: ForwardAuthClientHeader,
}

/// One `[[access]]` rule, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRuleSettings {
    /// The paths it covers.
    pub path: crate::auth::access::PathPattern,
    /// The methods it covers; `None`: all.
    pub methods: Option<Vec<http::Method>>,
    /// Who it lets in.
    pub allow: Vec<crate::auth::access::Principal>,
    /// Scopes a token with scopes must carry.
    pub scopes: Vec<String>,
    /// The realm of the challenge for paths under it.
    pub realm: Option<String>,
}

/// `[groups]`, `[[access]]` and `[access_default]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSettings {
    /// Group name → members.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// The rules, in order.
    pub rules: Vec<AccessRuleSettings>,
    /// `[access_default] allow = "deny"`.
    pub deny_by_default: bool,
}

/// `[cluster]`: state shared by replicas in Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The Redis URL (`redis://`, `rediss://` or `redis+unix://`), without
    /// a password.
    pub redis: String,
    /// The password, from `password_file` or `GATEHOUSE_REDIS_PASSWORD`.
    pub password: Option<crate::secret::Password>,
    /// The replicas' shared secret (`secret_file`): keys the usernames'
    /// digests, seals OAuth grants, signs consent forms.
    pub secret: crate::secret::Password,
    /// For `rediss://`: the PEM certificates that sign Redis's (`ca`),
    /// instead of the system's and the webpki roots.
    pub ca: Option<Vec<u8>>,
    /// Scopes the keys: `gatehouse:{prefix}:…`.
    pub prefix: String,
    /// How long one Redis call may take before the local state decides.
    pub timeout: std::time::Duration,
    /// How often Redis is probed and its locks and revocations are read.
    pub sync_interval: std::time::Duration,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis", &self.redis)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("secret", &"<redacted>")
            .field("ca", &self.ca.as_ref().map(|_| "<PEM>"))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("sync_interval", &self.sync_interval)
            .finish()
    }
}
