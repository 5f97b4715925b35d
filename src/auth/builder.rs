//! Configuring a [`BasicAuthLayer`].

use std::sync::Arc;

use http::HeaderValue;
use ipnet::IpNet;

use super::cache::{CachePolicy, NoRandomKey, VerifiedCache};
use super::coalesce::InFlight;
use super::public::InvalidPattern;
use super::{BasicAuthLayer, PublicPaths, Shared};
use crate::credentials::Verifier;
use crate::limit::{ClientIpResolver, LockoutPolicy, Lockouts, Rate, RateLimits};
use crate::metrics::AuthCounters;
use crate::tokens::{ApiKeys, Tokens};

/// The realm could not be put in a `WWW-Authenticate` header.
#[derive(Debug, thiserror::Error)]
#[error("must be non-empty, without quotes, backslashes or control characters")]
pub struct InvalidRealm;

/// Why a layer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The realm cannot be put in the challenge.
    #[error(transparent)]
    Realm(#[from] InvalidRealm),
    /// No random key for the credentials cache.
    #[error(transparent)]
    Random(#[from] NoRandomKey),
    /// A public path pattern cannot be matched as written.
    #[error(transparent)]
    PublicPath(#[from] InvalidPattern),
    /// OAuth issues tokens: it needs `tokens`.
    #[error("OAuth needs tokens: call `tokens` as well as `oauth`")]
    OAuthWithoutTokens,
}

/// A realm that can stand inside the challenge's quoted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm(String);

impl Realm {
    /// Checks and wraps a realm.
    pub fn parse(text: &str) -> Result<Self, InvalidRealm> {
        validate_realm(text)?;
        Ok(Self(text.to_owned()))
    }

    /// The realm as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that `realm` can stand inside the challenge's quoted string.
pub fn validate_realm(realm: &str) -> Result<(), InvalidRealm> {
    if realm.is_empty()
        || realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(InvalidRealm);
    }
    Ok(())
}

/// Builds a [`BasicAuthLayer`]; every setting has a safe default.
pub struct BasicAuthBuilder {
    realm: String,
    verifier: Verifier,
    /// Parsed as given; a bad pattern is reported by `build`.
    public: Result<PublicPaths, InvalidPattern>,
    public_upgrades: bool,
    trusted_proxies: Vec<IpNet>,
    per_ip: Option<Rate>,
    per_user: Option<Rate>,
    max_tracked_keys: usize,
    lockout: LockoutPolicy,
    cache: CachePolicy,
    without_peer_address: WithoutPeerAddress,
    tokens: Option<(Tokens, String, usize)>,
    api_keys: Option<(ApiKeys, http::HeaderName)>,
    oauth: Option<crate::config::OAuthSettings>,
    forward: Option<super::ForwardAuth>,
    access: super::access::AccessRules,
    count_verified: bool,
    shared_limits: Option<Arc<dyn crate::limit::SharedLimits>>,
    grant_store: Option<Box<dyn super::oauth::grants::GrantStore>>,
}

/// What the layer does with a request that carries no client address: the
/// app was served without `into_make_service_with_connect_info`, so every
/// request looks as if it came from one client. The layer logs an error on
/// the first such request whatever the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WithoutPeerAddress {
    /// Key nothing by address (the default): the per-address rate limit and
    /// address lockouts are off, since they would throttle and lock out
    /// every client at once. Failed logins are still counted per username
    /// (five wrong guesses lock that user, from everywhere, for the lockout
    /// duration), and the per-user quota, the verification bound and the
    /// cache still apply.
    #[default]
    UserLimitsOnly,
    /// Treat every request as one client: the per-address limit and
    /// lockouts apply to all clients together. Right only when one client
    /// really is all there is (a single upstream proxy that does not send
    /// `X-Forwarded-For`).
    OneClient,
}

impl BasicAuthBuilder {
    pub(super) fn new(realm: &str, verifier: Verifier) -> Self {
        let rates = crate::config::RateLimitSettings::default();
        Self {
            realm: realm.to_owned(),
            verifier,
            public: Ok(PublicPaths::default()),
            public_upgrades: false,
            trusted_proxies: Vec::new(),
            per_ip: rates.per_ip,
            per_user: rates.per_user,
            max_tracked_keys: rates.max_tracked_keys,
            lockout: LockoutPolicy::default(),
            cache: CachePolicy::default(),
            without_peer_address: WithoutPeerAddress::default(),
            tokens: None,
            api_keys: None,
            oauth: None,
            forward: None,
            access: super::access::AccessRules::default(),
            count_verified: false,
            shared_limits: None,
            grant_store: None,
        }
    }

    /// Where OAuth codes and refresh tokens live when not in this
    /// process's memory (`[cluster]`: Redis).
    #[cfg(feature = "server")]
    pub(crate) fn grant_store(mut self, store: Box<dyn super::oauth::grants::GrantStore>) -> Self {
        self.grant_store = Some(store);
        self
    }

    /// Limits and lockouts shared with other replicas (`[cluster]`): the
    /// layer's own records stay the local pre-check and the fallback.
    pub fn shared_limits(mut self, shared: Arc<dyn crate::limit::SharedLimits>) -> Self {
        self.shared_limits = Some(shared);
        self
    }

    /// Whether requests whose credentials were verified before (the cache,
    /// a valid token or API key) count against the per-address limit.
    /// Default `false`: the limit counts what costs or fails something (no
    /// credentials, a password to verify, a refusal), and brute force is
    /// held by the lockouts and the verification bound.
    pub fn count_verified(mut self, count: bool) -> Self {
        self.count_verified = count;
        self
    }

    /// Access rules and groups, applied after authentication (403 when a
    /// rule refuses). Default: every authenticated user may do anything.
    pub fn access(mut self, rules: super::access::AccessRules) -> Self {
        self.access = rules;
        self
    }

    /// Answers forward-auth decisions (nginx `auth_request`, Caddy
    /// `forward_auth`, Traefik `ForwardAuth`, Envoy `ext_authz`) on
    /// `forward.path` and below: `200` with identity headers, or the
    /// refusal the request it describes would get.
    pub fn forward_auth(mut self, forward: super::ForwardAuth) -> Self {
        self.forward = Some(forward);
        self
    }

    /// Turns the OAuth 2.0 authorization server on for `settings`' clients
    /// (their secrets must be in the verifier's store under
    /// [`client_key`](crate::tokens::client_key)); needs
    /// [`tokens`](Self::tokens).
    pub fn oauth(mut self, settings: crate::config::OAuthSettings) -> Self {
        self.oauth = Some(settings);
        self
    }

    /// Turns tokens on: `POST login_path` trades a password (JSON body or
    /// Basic header) for a token signed by `tokens`, `Authorization: Bearer
    /// <token>` is accepted, and the public keys are served at
    /// [`JWKS_PATH`](super::JWKS_PATH). Up to `cache_entries` verified
    /// tokens are remembered.
    pub fn tokens(mut self, tokens: Tokens, login_path: &str, cache_entries: usize) -> Self {
        self.tokens = Some((tokens, login_path.to_owned(), cache_entries));
        self
    }

    /// Turns API keys on: accepted as `Authorization: Bearer <key>` and in
    /// `header`.
    pub fn api_keys(mut self, keys: ApiKeys, header: http::HeaderName) -> Self {
        self.api_keys = Some((keys, header));
        self
    }

    /// What to do when requests carry no client address (see
    /// [`WithoutPeerAddress`]); serving with connect info makes this moot.
    pub fn without_peer_address(mut self, policy: WithoutPeerAddress) -> Self {
        self.without_peer_address = policy;
        self
    }

    /// The verified-credentials cache (on by default: 5 min, 10,000 users).
    pub fn cache(mut self, policy: CachePolicy) -> Self {
        self.cache = policy;
        self
    }

    /// Paths that skip authentication (still rate limited): exact
    /// (`/healthz`) or a prefix ending in `*` (`/static/public/*`).
    pub fn public_paths<I, P>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.public = PublicPaths::new(patterns);
        self
    }

    /// Paths that skip authentication, already parsed (a config does this
    /// when it is read, so the patterns are not parsed twice).
    pub fn public(mut self, paths: PublicPaths) -> Self {
        self.public = Ok(paths);
        self
    }

    /// Whether `Upgrade` requests (WebSockets) on public paths skip
    /// authentication too. Off by default: an upgraded connection is a
    /// tunnel that no later request check sees, so it must be authenticated
    /// unless the operator says otherwise.
    pub fn public_upgrades(mut self, allow: bool) -> Self {
        self.public_upgrades = allow;
        self
    }

    /// Peers whose `X-Forwarded-For` names the real client.
    pub fn trusted_proxies(mut self, networks: Vec<IpNet>) -> Self {
        self.trusted_proxies = networks;
        self
    }

    /// The per-address rate for every request; `None` turns it off.
    pub fn per_ip(mut self, rate: Option<Rate>) -> Self {
        self.per_ip = rate;
        self
    }

    /// The per-user rate for authenticated requests; `None` turns it off.
    pub fn per_user(mut self, rate: Option<Rate>) -> Self {
        self.per_user = rate;
        self
    }

    /// The most keys each limiter tracks before it prunes or resets.
    pub fn max_tracked_keys(mut self, keys: usize) -> Self {
        self.max_tracked_keys = keys;
        self
    }

    /// Failure lockouts; `max_failures = 0` turns them off.
    pub fn lockout(mut self, policy: LockoutPolicy) -> Self {
        self.lockout = policy;
        self
    }

    /// Builds the layer.
    pub fn build(self) -> Result<BasicAuthLayer, BuildError> {
        validate_realm(&self.realm)?;
        let challenge =
            HeaderValue::try_from(format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm))
                .map_err(|_| InvalidRealm)?;
        let bearer = |error: &str| {
            HeaderValue::try_from(format!("Bearer realm=\"{}\"{error}", self.realm))
                .map_err(|_| InvalidRealm)
        };
        let (challenges, bearer_challenges) = if self.tokens.is_some() || self.api_keys.is_some() {
            (
                vec![challenge.clone(), bearer("")?],
                vec![challenge, bearer(", error=\"invalid_token\"")?],
            )
        } else {
            (vec![challenge.clone()], vec![challenge])
        };
        if self.oauth.is_some() && self.tokens.is_none() {
            return Err(BuildError::OAuthWithoutTokens);
        }
        let oauth = match (self.oauth, &self.tokens) {
            (Some(settings), Some((tokens, _, _))) => Some(
                super::oauth::OAuthState::new(settings, tokens.policy().ttl, self.grant_store)
                    .map_err(|_| NoRandomKey)?,
            ),
            _ => None,
        };
        let tokens = match self.tokens {
            Some((tokens, login_path, entries)) => Some(super::TokenState {
                tokens: arc_swap::ArcSwapOption::from_pointee(tokens),
                generation: std::sync::atomic::AtomicU64::new(0),
                cache: crate::tokens::TokenCache::new(entries).map_err(|_| NoRandomKey)?,
                login_path,
            }),
            None => None,
        };
        let api_keys = self.api_keys.map(|(keys, header)| super::ApiKeyState {
            keys: arc_swap::ArcSwap::from_pointee(keys),
            header,
        });
        let cache = match self.cache.enabled {
            true => Some(VerifiedCache::new(self.cache)?),
            false => None,
        };
        Ok(BasicAuthLayer {
            shared: Arc::new(Shared {
                challenges,
                bearer_challenges,
                tokens,
                api_keys,
                verifier: self.verifier,
                public: self.public?,
                public_upgrades: self.public_upgrades,
                client_ip: ClientIpResolver::new(self.trusted_proxies),
                rate: RateLimits::new(self.per_ip, self.per_user, self.max_tracked_keys),
                lockouts: Lockouts::new(self.lockout),
                bearer_lockouts: Lockouts::new(self.lockout),
                oauth,
                forward: self.forward,
                access: arc_swap::ArcSwap::from_pointee(self.access),
                count_verified: self.count_verified,
                shared_limits: self.shared_limits,
                events: super::events::EventLog::default(),
                cache,
                inflight: InFlight::default(),
                counters: Arc::new(AuthCounters::default()),
                without_peer_address: self.without_peer_address,
                warned_no_peer_address: Default::default(),
            }),
        })
    }
}
