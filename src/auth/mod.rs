//! The tower layer that enforces HTTP Basic authentication.
//!
//! [`BasicAuthLayer`] holds only shared configuration and state behind an
//! `Arc`; [`BasicAuth`] is the per-service wrapper. Each request goes
//! through the pipeline below, cheapest checks first, so that argon2 (the
//! only expensive step) runs as rarely as possible:
//!
//! 0. the path is made canonical ([`crate::path`]) and written back into
//!    the request, so every later step and the inner service see that one
//!    form → 400 when it has none;
//! 1. client address: the peer, or `X-Forwarded-For` from trusted proxies;
//! 2. per-address rate limit → 429 (public paths stop here and pass);
//! 3. address lockout → 429;
//! 4. header parsing ([`header`]) → 401 with the challenge;
//! 5. the verified-credentials cache ([`cache`]): a hit skips to step 7,
//!    and a credential already being verified waits for that answer;
//!    then the (address, user) lockout and the in-flight bound → 429;
//! 6. argon2 on the blocking pool under a bounded queue → 503 when full,
//!    401 and a recorded failure when wrong;
//! 7. per-user quota → 429;
//! 8. the request goes on with an [`AuthenticatedUser`] in its extensions.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use gatehouse::auth::{AuthenticatedUser, BasicAuthLayer};
//! use gatehouse::credentials::{CredentialStore, Verifier, hash_password, parse_phc};
//! use gatehouse::secret::Password;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let params = argon2::Params::new(64, 1, 1, None)?; // cheap, for the example only
//! let hash = parse_phc(&hash_password(&Password::new("secret".into()), params)?)?;
//! let store = CredentialStore::new([("alice".to_owned(), hash)])?;
//! let auth = BasicAuthLayer::builder("my app", Verifier::new(Arc::new(store)))
//!     .public_paths(["/healthz"])
//!     .build()?;
//!
//! async fn hello(user: AuthenticatedUser) -> String {
//!     format!("hello {}", user.name())
//! }
//! let app: Router = Router::new()
//!     .route("/", get(hello))
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(auth); // `layer`, not `route_layer`: unknown paths get 401 too
//! // Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
//! // that limits and lockouts can tell clients apart.
//! # Ok(())
//! # }
//! ```

pub mod access;
pub mod bearer;
mod body;
mod builder;
pub(crate) mod cache;
mod coalesce;
pub mod events;
mod forward;
pub mod header;
mod login;
mod memo;
pub mod oauth;
mod public;
pub(crate) mod response;
mod user;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::response::Response;
use http::{HeaderValue, Request};
use tower::{Layer, Service};

pub use builder::{
    BasicAuthBuilder, BuildError, InvalidRealm, Realm, WithoutPeerAddress, validate_realm,
};
pub use cache::{CachePolicy, NoRandomKey};
pub use forward::{DecidedRequest, ForwardAuth, ForwardAuthListener};
pub(crate) use memo::CredentialMemo;
pub use public::{InvalidPattern, PublicPaths, validate_pattern};
pub use user::{AuthMethod, AuthenticatedUser};
pub(crate) use user::{X_FORWARDED_GROUPS, X_FORWARDED_SCOPES, X_REAL_IP};

use crate::credentials::{Verifier, VerifyError};
use crate::limit::{
    Attempt, ClientAddress, ClientIpResolver, LockedOut, Lockouts, RateKind, RateLimits, Refusal,
    SharedAttempt, ip_key,
};
use crate::metrics::{AuthCounters, Outcome};
use crate::secret::Password;
use crate::tokens::{ApiKeys, TokenError, Tokens};
use bearer::{Presented, PresentedError};
use cache::{CredentialDigest, VerifiedCache};
use coalesce::{InFlight, Join, Leader};

/// A tower layer that requires HTTP Basic authentication (RFC 7617), with
/// rate limits and lockouts in front of password verification.
#[derive(Clone)]
pub struct BasicAuthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    /// `WWW-Authenticate` values on a 401: Basic, and Bearer when tokens
    /// or API keys are on.
    challenges: Vec<HeaderValue>,
    /// The challenges for a refused bearer credential (`error="invalid_token"`).
    bearer_challenges: Vec<HeaderValue>,
    /// Issued tokens: set when tokens are on.
    tokens: Option<TokenState>,
    /// API keys: set when they are on.
    api_keys: Option<ApiKeyState>,
    /// Failures of bearer credentials that may be guesses, per address.
    bearer_lockouts: Lockouts,
    /// OAuth clients: set when OAuth is on.
    oauth: Option<oauth::OAuthState>,
    /// Forward-auth decisions: set when they are on.
    forward: Option<ForwardAuth>,
    /// Writes failure events (sampled for limits and lockouts).
    events: events::EventLog,
    /// Whether requests with already-verified credentials count against
    /// the per-address limit (the behaviour before it counted only what
    /// costs or fails).
    count_verified: bool,
    /// Limits and lockouts shared with other replicas (`[cluster]`).
    shared_limits: Option<Arc<dyn crate::limit::SharedLimits>>,
    /// Who may do what once authenticated; swapped whole on reload.
    access: arc_swap::ArcSwap<access::AccessRules>,
    verifier: Verifier,
    public: PublicPaths,
    public_upgrades: bool,
    client_ip: ClientIpResolver,
    rate: RateLimits,
    lockouts: Lockouts,
    cache: Option<VerifiedCache>,
    inflight: InFlight,
    counters: Arc<AuthCounters>,
    without_peer_address: WithoutPeerAddress,
    /// Set once the missing peer address has been logged.
    warned_no_peer_address: std::sync::atomic::AtomicBool,
}

/// Tokens as the layer holds them: swapped whole on reload (key rotation).
struct TokenState {
    /// `None` once a reload turned tokens off: every token is refused.
    tokens: arc_swap::ArcSwapOption<Tokens>,
    cache: crate::tokens::TokenCache,
    /// Bumped whenever the keys change: a cache entry made under another
    /// generation is never used, so a verification that raced a rotation
    /// cannot keep a removed key's token alive.
    generation: std::sync::atomic::AtomicU64,
    login_path: String,
}

impl TokenState {
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn forget(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.clear();
    }
}

/// API keys as the layer holds them.
struct ApiKeyState {
    keys: arc_swap::ArcSwap<ApiKeys>,
    header: http::HeaderName,
}

/// Where the layer serves the public keys that verify its tokens.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The (address, user) lockout record that failed bearer credentials count
/// against: no username can contain a NUL.
const BEARER_RECORD: &str = "\0bearer";

impl BasicAuthLayer {
    /// A layer with the default limits (20 requests/s per address with a
    /// burst of 40; lockout after 5 failures in 10 min, for 15 min) and no
    /// public paths. See [`builder`](Self::builder) to change them.
    pub fn new(realm: &str, verifier: Verifier) -> Result<Self, BuildError> {
        Self::builder(realm, verifier).build()
    }

    /// Starts configuring a layer that challenges with `realm` and checks
    /// passwords with `verifier`.
    pub fn builder(realm: &str, verifier: Verifier) -> BasicAuthBuilder {
        BasicAuthBuilder::new(realm, verifier)
    }

    /// The layer's counters (allowed, 401, 429, 503, verifications, …).
    pub fn counters(&self) -> &Arc<AuthCounters> {
        &self.shared.counters
    }

    /// Drops rate-limit and lockout state that no longer matters. Call it
    /// periodically (the server does, every 30 s); the state is also capped
    /// on its own, so this only returns memory sooner.
    pub fn prune(&self) {
        let now = Instant::now();
        self.shared.rate.prune();
        self.shared.lockouts.prune(now);
        self.shared.bearer_lockouts.prune(now);
        if let Some(cache) = &self.shared.cache {
            cache.prune(now);
        }
        if let Some(oauth) = &self.shared.oauth {
            oauth.prune();
        }
        self.shared.events.prune();
    }

    /// Forgets every cached credential and token (after the users changed).
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.shared.cache {
            cache.clear();
        }
        if let Some(tokens) = &self.shared.tokens {
            tokens.forget();
        }
    }

    /// How the layer tells clients apart (for middleware that must agree).
    pub fn client_resolver(&self) -> &ClientIpResolver {
        &self.shared.client_ip
    }

    /// The verifier, e.g. to replace its users on reload.
    pub fn verifier(&self) -> &Verifier {
        &self.shared.verifier
    }

    /// The tokens in force, when tokens are on.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.shared
            .tokens
            .as_ref()
            .and_then(|t| t.tokens.load_full())
    }

    /// Replaces the token keys and policy (a reload: key rotation); tokens
    /// already verified are forgotten. No effect when tokens are off.
    pub fn replace_tokens(&self, tokens: Tokens) {
        if let Some(oauth) = &self.shared.oauth {
            // A longer token lifetime: revoked grants are remembered longer.
            oauth
                .grants
                .keep_revoked_for(oauth::access_keep(tokens.policy().ttl));
        }
        if let Some(state) = &self.shared.tokens {
            state.tokens.store(Some(Arc::new(tokens)));
            state.forget();
        }
    }

    /// Refuses every token from now on, and the login path (a reload that
    /// turned tokens off: revocation must not wait for a restart).
    pub fn revoke_all_tokens(&self) {
        if let Some(state) = &self.shared.tokens {
            state.tokens.store(None);
            state.forget();
        }
    }

    /// Replaces the API keys (a reload: a deleted line is a revoked key).
    /// No effect when API keys are off.
    pub fn replace_api_keys(&self, keys: ApiKeys) {
        if let Some(state) = &self.shared.api_keys {
            state.keys.store(Arc::new(keys));
        }
    }

    /// Replaces the access rules and groups (a reload).
    pub fn replace_access(&self, rules: access::AccessRules) {
        self.shared.access.store(Arc::new(rules));
    }

    /// Replaces the OAuth clients (a reload). No effect when OAuth is off.
    pub fn replace_oauth_clients(&self, clients: Vec<crate::config::OAuthClient>) {
        if let Some(state) = &self.shared.oauth {
            state.clients.store(Arc::new(oauth::index(clients)));
        }
    }

    /// The API-key header, when API keys are on.
    pub fn api_key_header(&self) -> Option<&http::HeaderName> {
        self.shared.api_keys.as_ref().map(|k| &k.header)
    }

    /// How many verified credentials are cached.
    pub fn cached_credentials(&self) -> usize {
        self.shared.cache.as_ref().map_or(0, VerifiedCache::len)
    }
}

impl<S> Layer<S> for BasicAuthLayer {
    type Service = BasicAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BasicAuth {
            inner,
            shared: Arc::clone(&self.shared),
            user_when_wanted: false,
        }
    }
}

impl BasicAuthLayer {
    /// The layer around `inner` for the server, whose frame says when its
    /// access log will name the user: the response then carries the
    /// [`AuthenticatedUser`] only when the request carries [`UserWanted`],
    /// one allocation less per request otherwise. (`Layer::layer` always
    /// puts it there, for whatever a library user runs around the layer.)
    #[cfg(feature = "server")]
    pub(crate) fn layer_for_server<S>(&self, inner: S) -> BasicAuth<S> {
        BasicAuth {
            inner,
            shared: Arc::clone(&self.shared),
            user_when_wanted: true,
        }
    }
}

/// Put in a request by whatever outside the layer will read the
/// [`AuthenticatedUser`] from the response (the server's frame, while its
/// access log is on): in the server, the layer puts the user in the
/// response only then. One decision, made where the log line is started.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) struct UserWanted;

/// Counts the user an answer names (an access rule's 403, a forward-auth
/// decision, a login, an authorization) as authenticated.
fn count_authenticated(counters: &AuthCounters, response: &Response) {
    if let Some(user) = response.extensions().get::<AuthenticatedUser>() {
        counters.record_authenticated(user.method());
    }
}

/// The service made by [`BasicAuthLayer`].
#[derive(Clone)]
pub struct BasicAuth<S> {
    inner: S,
    shared: Arc<Shared>,
    /// See [`BasicAuthLayer::layer_for_server`].
    user_when_wanted: bool,
}

impl<S, B> Service<Request<B>> for BasicAuth<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let user_when_wanted = self.user_when_wanted;
        Box::pin(async move {
            // Resolved once; the proxy (X-Real-IP) and the access log read
            // it from the request's and the response's extensions.
            // An outer middleware (the server's) may have resolved it
            // already, so that what runs before the layer agrees.
            // `None`: the peer's address is unknown and address-keyed
            // limits are off (see `WithoutPeerAddress`).
            let outer = req.extensions().get::<ClientAddress>().copied();
            let (client, keyed) = match outer {
                Some(client) => (client, Some(ip_key(client.0))),
                None => match shared.resolve_client(&req) {
                    Some(ip) => (ClientAddress(ip), Some(ip_key(ip))),
                    None => (ClientAddress(Ipv4Addr::UNSPECIFIED.into()), None),
                },
            };
            // Put where later steps read it, unless the outer middleware
            // did (an insert allocates).
            if outer.is_none() {
                req.extensions_mut().insert(client);
            }
            // For the failure event, if there is one.
            let scheme = events::scheme(req.headers(), shared.api_keys.as_ref().map(|k| &k.header));
            let canonical = canonicalize_uri(&mut req);
            // Matched on the canonical path, like everything after it:
            // `/api//auth/jwt` is the login path too, not a way past it.
            let endpoint = canonical
                .is_ok()
                .then(|| shared.own_endpoint(req.uri().path()))
                .flatten();
            let forward = canonical
                .is_ok()
                .then_some(shared.forward.as_ref())
                .flatten()
                .filter(|f| f.matches(&req));
            let mut response = if let Err(error) = canonical {
                tracing::debug!(%error, "request path refused");
                shared.counters.record(Outcome::BadRequest);
                let mut response = response::bad_request();
                response.extensions_mut().insert(Outcome::BadRequest);
                response
            } else if let Some(forward) = forward {
                // A proxy asks whether the request it describes may pass.
                let rewritten = canonical.unwrap_or(true);
                let (outcome, mut response) =
                    forward::decide(&shared, forward, req, keyed, rewritten, user_when_wanted)
                        .await;
                shared.counters.record(outcome);
                if outcome != Outcome::Allowed {
                    response.extensions_mut().insert(outcome);
                }
                response
            } else if req.extensions().get::<ForwardAuthListener>().is_some() {
                // The decision listener is plain HTTP: it answers decisions
                // and nothing else (no login, no OAuth, no backend).
                shared.counters.record(Outcome::BadRequest);
                let mut response = response::plain(http::StatusCode::NOT_FOUND, "404 Not Found\n");
                response.extensions_mut().insert(Outcome::BadRequest);
                response
            } else if let Some(endpoint) = endpoint {
                // Answered by the layer itself, for library users too.
                let (outcome, mut response) = match endpoint {
                    OwnEndpoint::Login => login::login(&shared, req, keyed).await,
                    OwnEndpoint::Jwks => login::jwks(&shared, &req, keyed),
                    OwnEndpoint::OAuthToken => oauth::token(&shared, req, keyed).await,
                    OwnEndpoint::OAuthMetadata => oauth::metadata(&shared, &req, keyed),
                    OwnEndpoint::OAuthAuthorize => oauth::authorize(&shared, req, keyed).await,
                    OwnEndpoint::OAuthRevoke => oauth::revoke(&shared, req, keyed).await,
                };
                count_authenticated(&shared.counters, &response);
                shared.counters.record(outcome);
                if outcome != Outcome::Allowed {
                    response.extensions_mut().insert(outcome);
                }
                response
            } else {
                let decision = match shared.screen(&req, keyed) {
                    Screened::Decided(decision) => decision,
                    // The common case, without building `conclude`'s future.
                    Screened::Cached(user) => shared.cache_hit(user),
                    checking => shared.conclude(checking).await,
                };
                match decision {
                    Decision::Refuse(outcome, mut response) => {
                        shared.counters.record(outcome);
                        if outcome == Outcome::Unauthorized {
                            shared.rule_realm(&mut response, req.method(), req.uri().path());
                        }
                        // Tells request metrics outside the layer that this
                        // is a refusal, not the app's own answer.
                        response.extensions_mut().insert(outcome);
                        response
                    }
                    Decision::Public => {
                        shared.counters.record(Outcome::Allowed);
                        inner.call(req).await?
                    }
                    // Authorization, after authentication.
                    Decision::Authenticated(user) => {
                        match shared.authorize(user, req.method(), req.uri().path()) {
                            Err(response) => {
                                shared.counters.record(Outcome::Forbidden);
                                // Authenticated, then refused by a rule:
                                // counted, as the 403 names the user.
                                count_authenticated(&shared.counters, &response);
                                *response
                            }
                            Ok(user) => {
                                shared.counters.record(Outcome::Allowed);
                                shared.counters.record_authenticated(user.method());
                                // Lets an access log outside the layer name
                                // the user.
                                let wanted = !user_when_wanted
                                    || req.extensions().get::<UserWanted>().is_some();
                                let named = wanted.then(|| user.clone());
                                req.extensions_mut().insert(user);
                                let mut response = inner.call(req).await?;
                                if let Some(user) = named {
                                    response.extensions_mut().insert(user);
                                }
                                response
                            }
                        }
                    }
                }
            };
            if let Some(failure) = response.extensions_mut().remove::<events::Failure>() {
                shared.events.log(client.0, scheme, &failure);
            }
            if outer.is_none() {
                response.extensions_mut().insert(client);
            }
            Ok(response)
        })
    }
}

/// The paths the layer answers itself, when their feature is on.
#[derive(Clone, Copy)]
enum OwnEndpoint {
    Login,
    Jwks,
    OAuthToken,
    OAuthMetadata,
    OAuthAuthorize,
    OAuthRevoke,
}

/// What checking a bearer credential found.
enum BearerCheck {
    Valid(AuthenticatedUser),
    /// Refused, and possibly a guess (bad signature, unknown key or id,
    /// wrong secret): counts against the address.
    Guess,
    /// Refused, but issued by us once (expired, revoked, user or password
    /// changed): a client's normal life, not counted.
    Revoked,
    /// Over the per-address rate before a signature check was spent.
    Limited(Decision),
}

enum Decision {
    Public,
    Authenticated(AuthenticatedUser),
    Refuse(Outcome, Response),
}

/// The cheap checks' verdict: decided, or a password still to check.
enum Screened {
    Decided(Decision),
    /// The credential was verified recently: no argon2.
    Cached(AuthenticatedUser),
    /// The same credential is being verified right now: wait for it.
    Follow(String, tokio::sync::watch::Receiver<Option<bool>>),
    /// Run argon2.
    Verify(Pending),
}

struct Pending {
    client: IpAddr,
    /// Whether `client` is the real address (else the shared records,
    /// keyed by address, are not used).
    known_client: bool,
    username: String,
    password: Password,
    attempt: Attempt,
    /// The reservation in the shared records, when there are some.
    shared: Option<SharedAttempt>,
    /// Set when the cache is on.
    digest: Option<CredentialDigest>,
    /// Set when other requests with this credential may wait on this one.
    leader: Option<Leader>,
}

/// Rewrites the request's path into its canonical form (the query is kept
/// as sent), or says why it has none. `true` when the path was rewritten.
fn canonicalize_uri<B>(req: &mut Request<B>) -> Result<bool, crate::path::PathError> {
    let canonical = match crate::path::canonicalize(req.uri().path())? {
        std::borrow::Cow::Borrowed(_) => return Ok(false),
        std::borrow::Cow::Owned(path) => path,
    };
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{canonical}?{query}"),
        None => canonical,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| crate::path::PathError::BadEscape)?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| crate::path::PathError::BadEscape)?;
    Ok(true)
}

/// Whether the request asks to switch protocols. Any `Upgrade` header
/// counts, with or without `Connection: upgrade`: on the public-path check
/// the cautious reading is the right one.
pub(crate) fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::UPGRADE)
}

fn too_many(wait: Duration) -> Decision {
    Decision::Refuse(Outcome::RateLimited, response::too_many_requests(wait))
}

/// `decision`, carrying a failure event when it is a refusal.
fn failed(decision: Decision, reason: events::Reason, user: Option<&str>) -> Decision {
    match decision {
        Decision::Refuse(outcome, mut response) => {
            events::attach(&mut response, reason, user);
            Decision::Refuse(outcome, response)
        }
        other => other,
    }
}

/// 403: authenticated, but not allowed here. No challenge: a 401 would
/// make a browser ask for the password again, forever.
fn forbidden() -> Response {
    let mut response = response::plain(http::StatusCode::FORBIDDEN, "403 Forbidden\n");
    response.extensions_mut().insert(Outcome::Forbidden);
    response
}

impl Shared {
    /// Applies the access rules to an authenticated user: the user with
    /// their groups, or the 403 to answer.
    fn authorize(
        &self,
        user: AuthenticatedUser,
        method: &http::Method,
        path: &str,
    ) -> Result<AuthenticatedUser, Box<Response>> {
        let rules = self.access.load();
        let groups = rules.groups_of(user.name());
        let user = user.with_groups(groups);
        if rules.allows(&user, method, path) {
            Ok(user)
        } else {
            tracing::debug!(user = user.name(), path, "refused by an access rule");
            let mut response = forbidden();
            // Lets the access log name the user.
            response.extensions_mut().insert(user);
            Err(Box::new(response))
        }
    }

    /// Gives a 401 the challenge of the access rule covering the path, when
    /// that rule names a realm of its own.
    fn rule_realm(&self, response: &mut Response, method: &http::Method, path: &str) {
        let rules = self.access.load();
        if let Some(challenges) = rules.challenges_for(method, path) {
            let headers = response.headers_mut();
            headers.remove(http::header::WWW_AUTHENTICATE);
            for challenge in challenges {
                headers.append(http::header::WWW_AUTHENTICATE, challenge.clone());
            }
        }
    }

    fn refuse_unauthorized(&self) -> Decision {
        Decision::Refuse(
            Outcome::Unauthorized,
            response::unauthorized(&self.challenges),
        )
    }

    /// A bearer credential (a token, or an API key as `Bearer` or in the
    /// key header): checked without argon2, so the whole check is here.
    fn screen_bearer(
        &self,
        client: Option<IpAddr>,
        value: &str,
        key_header: bool,
        memo: Option<&CredentialMemo>,
    ) -> Decision {
        if let Some(decision) = self.bearer_locked(client) {
            return decision;
        }
        let checked = if key_header || crate::tokens::api_keys::looks_like_key(value) {
            self.check_api_key(value)
        } else {
            self.check_token(value, client, memo)
        };
        match checked {
            BearerCheck::Valid(user) => self.per_user_quota(user),
            BearerCheck::Limited(decision) => decision,
            BearerCheck::Guess => self.bearer_failure(client),
            BearerCheck::Revoked => Decision::Refuse(
                Outcome::Unauthorized,
                response::unauthorized(&self.bearer_challenges),
            ),
        }
    }

    /// The user of a valid API key whose user still exists.
    fn check_api_key(&self, key: &str) -> BearerCheck {
        let Some(state) = self.api_keys.as_ref() else {
            return BearerCheck::Guess;
        };
        // An unknown id or a wrong secret (a deleted line included) counts.
        let Some(user) = state.keys.load().verify(key) else {
            return BearerCheck::Guess;
        };
        if !self.verifier.current_store().contains(&user) {
            tracing::debug!(user = &*user, "API key refused: its user is gone");
            return BearerCheck::Revoked;
        }
        BearerCheck::Valid(AuthenticatedUser::with_method(user, AuthMethod::ApiKey))
    }

    /// The user of a valid token whose user and password are unchanged
    /// since it was issued. A token verified before skips the signature
    /// check (the cache never outlives `exp`); the binding is checked every
    /// time, so a reload revokes at once.
    ///
    /// A connection's memo gives the token's cache key when the token is
    /// the one it holds (skipping the HMAC over a few hundred bytes); every
    /// check below runs all the same.
    fn check_token(
        &self,
        token: &str,
        client: Option<IpAddr>,
        memo: Option<&CredentialMemo>,
    ) -> BearerCheck {
        let Some(state) = self.tokens.as_ref() else {
            return BearerCheck::Guess;
        };
        // The generation first, then the keys: see `TokenState::generation`.
        let generation = state.generation();
        let recalled =
            memo.and_then(|m| m.recall_token(token.as_bytes(), Instant::now(), generation));
        let digest = recalled.unwrap_or_else(|| state.cache.digest(token));
        let mut cache_expiry = None;
        let checked =
            self.check_token_digest(state, token, &digest, generation, client, &mut cache_expiry);
        let Some(memo) = memo else {
            return checked;
        };
        match (&checked, recalled, cache_expiry) {
            // A token the cache vouched for, not yet remembered: remembered
            // until its cache entry expires.
            (BearerCheck::Valid(user), None, Some(exp)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                // Not remembered when the expiry is too far to count to
                // (a library user's boundless token lifetime).
                let wait = Duration::from_secs(exp.saturating_sub(now));
                if let Some(until) = Instant::now().checked_add(wait) {
                    memo.remember_token(token.as_bytes(), user.name(), digest, until, generation);
                }
            }
            (BearerCheck::Valid(_), ..) | (_, None, _) => {}
            // A remembered token that no longer gets in is wiped.
            (_, Some(_), _) => memo.forget(token.as_bytes()),
        }
        checked
    }

    /// [`check_token`](Self::check_token) with the token's cache key;
    /// `cache_expiry` is set when the cache answered.
    fn check_token_digest(
        &self,
        state: &TokenState,
        token: &str,
        digest: &[u8; 32],
        generation: u64,
        client: Option<IpAddr>,
        cache_expiry: &mut Option<u64>,
    ) -> BearerCheck {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cached = match state.cache.get(digest, now, generation) {
            Some((hit, exp)) => {
                *cache_expiry = Some(exp);
                hit
            }
            None => {
                // A signature check costs: it counts against the address
                // first, like a password that needs verifying.
                if let Some(decision) = self.counted(client) {
                    return BearerCheck::Limited(decision);
                }
                let Some(tokens) = state.tokens.load_full() else {
                    return BearerCheck::Revoked;
                };
                let claims = match tokens.verify(token) {
                    Ok(claims) => claims,
                    Err(error) => {
                        tracing::debug!(%error, "token refused");
                        // A bad signature or a malformed token is a guess;
                        // anything refused after the signature checked out
                        // (expired, not yet valid, another audience) is not.
                        // An unknown `kid` is a removed key's token or an
                        // ephemeral key's from before a restart: a stale
                        // client, which guessing cannot turn into a pass.
                        return match error {
                            TokenError::Signed(_) | TokenError::UnknownKey => BearerCheck::Revoked,
                            _ => BearerCheck::Guess,
                        };
                    }
                };
                // Never remembered past the lifetime this server gives
                // tokens, whatever `exp` a token claims.
                let until = claims
                    .exp
                    .min(now.saturating_add(tokens.policy().ttl.as_secs()));
                let store_name = match claims.sub_type.as_deref() {
                    Some("client") => crate::tokens::client_key(&claims.sub),
                    _ => claims.sub,
                };
                let cached = crate::tokens::Cached {
                    user: Arc::from(store_name),
                    scope: claims.scope.map(Arc::from),
                    binding: Arc::from(claims.pwh),
                    client: claims.client_id.map(Arc::from),
                    family: claims.fam.map(Arc::from),
                };
                state
                    .cache
                    .insert(digest, cached.clone(), until, now, generation);
                cached
            }
        };
        let store = self.verifier.current_store();
        let Some((name, fingerprint, user_binding)) = store.stored_hash_and_binding(&cached.user)
        else {
            tracing::debug!("token refused: its user or client is gone");
            return BearerCheck::Revoked;
        };
        let client_id = name.strip_prefix(crate::tokens::CLIENT_PREFIX);
        let current: std::borrow::Cow<'_, str> = match client_id {
            // A client's binding covers its scopes and grants too; a client
            // no longer registered has none.
            Some(id) => {
                let clients = self.oauth.as_ref().map(|o| o.clients.load());
                match clients.as_ref().and_then(|c| c.get(id)) {
                    Some(client) => oauth::binding(client, fingerprint).into(),
                    None => return BearerCheck::Revoked,
                }
            }
            // A user's, made when the store was loaded.
            None => user_binding.into(),
        };
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(current.as_bytes(), cached.binding.as_bytes()).into();
        if !same {
            tracing::debug!("token refused: the password or secret changed since it was issued");
            return BearerCheck::Revoked;
        }
        // A user's token from an OAuth grant lives as long as its client
        // stays registered and its family is not revoked (a replayed code
        // or refresh token, or RFC 7009 revocation).
        if cached.client.is_some() || cached.family.is_some() {
            let Some(oauth) = self.oauth.as_ref() else {
                return BearerCheck::Revoked;
            };
            // The client must still be registered, and still allowed every
            // scope the token carries (a reload may have narrowed them).
            if let Some(client) = &cached.client {
                let clients = oauth.clients.load();
                let allowed = clients.get(&**client).is_some_and(|c| {
                    cached
                        .scope
                        .as_deref()
                        .unwrap_or("")
                        .split(' ')
                        .filter(|s| !s.is_empty())
                        .all(|s| c.scopes.iter().any(|allowed| allowed == s))
                });
                if !allowed {
                    tracing::debug!("token refused: its client is gone or lost a scope");
                    return BearerCheck::Revoked;
                }
            }
            if let Some(family) = &cached.family
                && oauth.grants.is_revoked(family, now)
            {
                tracing::debug!("token refused: its grant was revoked");
                return BearerCheck::Revoked;
            }
        }
        // A client's token names the client, without the store's prefix.
        let (name, method) = match client_id {
            Some(client) => (Arc::from(client), AuthMethod::OAuthClient),
            None => (Arc::clone(name), AuthMethod::Bearer),
        };
        BearerCheck::Valid(AuthenticatedUser::with_method(name, method).with_scopes(cached.scope))
    }

    /// Whether bad bearer credentials from this address locked it out of
    /// bearer authentication (passwords are not affected).
    fn bearer_locked(&self, client: Option<IpAddr>) -> Option<Decision> {
        let client = client?;
        self.bearer_lockouts
            .address_locked(client, Instant::now())
            .map(|wait| failed(too_many(wait), events::Reason::LockedOut, None))
    }

    /// Which of the layer's own endpoints the canonical `path` is, if any.
    fn own_endpoint(&self, path: &str) -> Option<OwnEndpoint> {
        let tokens = self.tokens.as_ref()?;
        if path == tokens.login_path {
            return Some(OwnEndpoint::Login);
        }
        if path == JWKS_PATH {
            return Some(OwnEndpoint::Jwks);
        }
        self.oauth.as_ref()?;
        match path {
            oauth::TOKEN_PATH => Some(OwnEndpoint::OAuthToken),
            oauth::METADATA_PATH => Some(OwnEndpoint::OAuthMetadata),
            oauth::AUTHORIZE_PATH => Some(OwnEndpoint::OAuthAuthorize),
            oauth::REVOKE_PATH => Some(OwnEndpoint::OAuthRevoke),
            _ => None,
        }
    }

    /// The fingerprint of the hash stored for `name` now (a user, or a
    /// client's key), to bind a token to what was verified.
    fn stored_fingerprint(&self, name: &str) -> Option<[u8; 32]> {
        self.verifier
            .current_store()
            .stored_hash(name)
            .map(|(_, fingerprint)| *fingerprint)
    }

    /// Whether `password` for the store name `username` is in the
    /// verified-credentials cache (no argon2, nothing recorded).
    fn is_cached(&self, username: &str, password: &Password) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let store = self.verifier.current_store();
        let Some((_, fingerprint)) = store.stored_hash(username) else {
            return false;
        };
        let digest = cache.digest(username, password.as_bytes(), fingerprint);
        cache.contains(username, &digest, Instant::now())
    }

    /// A refused bearer credential that may be a guess: 401 with
    /// `error="invalid_token"`, and a failure against the address in the
    /// bearer lockouts (a table of their own: cheap probes can neither fill
    /// the password lockout table nor lock an address out of password
    /// logins). When that table is full the failure is not recorded: the
    /// secrets are unguessable, so nothing is lost but the 429.
    fn bearer_failure(&self, client: Option<IpAddr>) -> Decision {
        if let Some(client) = client {
            let now = Instant::now();
            match self.bearer_lockouts.begin(client, BEARER_RECORD, now) {
                Ok(attempt) => {
                    if self.bearer_lockouts.finish(attempt, false, now).is_some() {
                        self.counters.record_lockout();
                        let duration = self.bearer_lockouts.policy().duration;
                        tracing::warn!(%client, ?duration, "client locked out of bearer authentication after repeated bad tokens or API keys");
                    }
                }
                Err(Refusal::Locked(remaining)) => {
                    return failed(too_many(remaining), events::Reason::LockedOut, None);
                }
                Err(Refusal::Busy) => {
                    return failed(
                        too_many(Duration::from_secs(1)),
                        events::Reason::RateLimited,
                        None,
                    );
                }
                Err(Refusal::Full) => {
                    self.counters.record_lockout_table_full();
                }
            }
        }
        failed(
            Decision::Refuse(
                Outcome::Unauthorized,
                response::unauthorized(&self.bearer_challenges),
            ),
            events::Reason::InvalidToken,
            None,
        )
    }

    /// The client: the TCP peer, or behind a trusted proxy the address it
    /// reports; `None` when the request carries no peer address (the layer
    /// served by plain `axum::serve`) and the builder's
    /// [`WithoutPeerAddress`] policy says to key nothing by address.
    fn resolve_client<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => addr.ip(),
            None => {
                if !self
                    .warned_no_peer_address
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(
                        policy = ?self.without_peer_address,
                        "requests reach the auth layer without the client's address: serve the app with `into_make_service_with_connect_info::<SocketAddr>()` (see BasicAuthBuilder::without_peer_address)"
                    );
                }
                match self.without_peer_address {
                    WithoutPeerAddress::UserLimitsOnly => return None,
                    WithoutPeerAddress::OneClient => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                }
            }
        };
        Some(
            self.client_ip
                .resolve_request(peer, req.extensions(), req.headers()),
        )
    }

    /// Steps 1–5: everything that costs no hashing, in a synchronous
    /// function so the request is not held across an await. `client` is
    /// `None` when the client's address is unknown: the address-keyed
    /// limit and lockout are skipped, the rest applies.
    /// Step 2: the per-address rate limit.
    fn rate_limited(&self, client: Option<IpAddr>) -> Option<Decision> {
        if let (Some(limit), Some(client)) = (&self.rate.per_ip, client) {
            // The local limiter first: one replica never needs more than
            // the shared budget, and it decides alone when Redis is away.
            let shared = || match &self.shared_limits {
                Some(shared) => shared.check_rate(RateKind::Address, &client.to_string()),
                None => Ok(()),
            };
            if let Err(wait) = limit.check(&client).and_then(|()| shared()) {
                return Some(failed(too_many(wait), events::Reason::RateLimited, None));
            }
        }
        None
    }

    /// Step 3: the address lockout.
    fn address_locked(&self, client: Option<IpAddr>) -> Option<Decision> {
        let client = client?;
        self.lockouts
            .address_locked_now(client)
            .or_else(|| self.shared_limits.as_ref()?.address_locked(client))
            .map(|wait| failed(too_many(wait), events::Reason::LockedOut, None))
    }

    fn screen<B>(&self, req: &Request<B>, client: Option<IpAddr>) -> Screened {
        // The per-address limit counts what costs or fails something: no
        // credentials, a password to verify, a refusal. A request whose
        // credentials were verified before (cache, valid token or key) is
        // not counted unless `count_verified` (the old behaviour) is set:
        // brute force is held by the lockouts and the verification bound,
        // and a page's sixty assets must not be throttled.
        if self.count_verified
            && let Some(decision) = self.rate_limited(client)
        {
            return Screened::Decided(decision);
        }
        // An upgrade becomes a tunnel no later check sees: authenticate it
        // even on a public path unless the operator allowed otherwise.
        if self.public.matches(req.uri().path())
            && (self.public_upgrades || !is_upgrade(req.headers()))
        {
            return Screened::Decided(self.counted(client).unwrap_or(Decision::Public));
        }
        if let Some(decision) = self.address_locked(client) {
            return Screened::Decided(decision);
        }
        let key_header = self.api_keys.as_ref().map(|k| &k.header);
        let bearer_on = self.tokens.is_some() || self.api_keys.is_some();
        let refused = |decision: Decision| match decision {
            // A refusal counts against the address (a 429 when over).
            Decision::Refuse(Outcome::Unauthorized, _) => {
                Screened::Decided(self.counted(client).unwrap_or(decision))
            }
            decision => Screened::Decided(decision),
        };
        let memo = req.extensions().get::<CredentialMemo>();
        let (credentials, value) = match bearer::presented(req.headers(), key_header) {
            Ok(Presented::Basic(value)) => {
                if let Some(user) = memo.and_then(|memo| self.recalled(memo, value)) {
                    return Screened::Cached(user);
                }
                match header::parse_basic(value) {
                    Ok(credentials) => (credentials, value),
                    Err(reason) => {
                        tracing::debug!(%reason, "authorization header refused");
                        return refused(failed(
                            self.refuse_unauthorized(),
                            events::Reason::Malformed,
                            None,
                        ));
                    }
                }
            }
            Ok(Presented::Bearer(value)) if bearer_on => {
                return refused(self.screen_bearer(client, value, false, memo));
            }
            Ok(Presented::ApiKey(value)) => {
                return refused(self.screen_bearer(client, value, true, memo));
            }
            Err(PresentedError::Malformed) if bearer_on => {
                tracing::debug!("bearer credential refused: malformed");
                // Counted before it costs a lockout-table entry.
                if let Some(decision) = self.counted(client) {
                    return Screened::Decided(decision);
                }
                let decision = self
                    .bearer_locked(client)
                    .unwrap_or_else(|| self.bearer_failure(client));
                return refused(decision);
            }
            Ok(Presented::Bearer(_)) | Err(_) => {
                tracing::debug!("authorization refused: missing, duplicated or not Basic");
                return refused(self.refuse_unauthorized());
            }
        };
        self.screen_password_counted(
            client,
            credentials.username,
            credentials.password,
            !self.count_verified,
            memo.map(|memo| (memo, value)),
        )
    }

    /// A connection's memo answering for `value`: the user, when the cache
    /// still vouches for the credential it holds (see `memo.rs`), asked as
    /// the full path asks it.
    /// A memo that no longer holds is wiped.
    /// A layer nested inside another would find the outer one's memo here:
    /// each cache's generations start at a random number, so the other's
    /// memo does not hold (even with a shared verifier and store); it is
    /// wiped and the full path runs. That costs the memo, nothing more, but
    /// nesting layers is not supported.
    fn recalled(&self, memo: &CredentialMemo, value: &[u8]) -> Option<AuthenticatedUser> {
        let cache = self.cache.as_ref()?;
        let store = self.verifier.current_store();
        let username = memo.recall_basic(value, Instant::now(), cache.generation(), &store)?;
        Some(AuthenticatedUser::new(username))
    }

    /// The per-address limit for a request that costs or fails something,
    /// unless it was counted already (`count_verified`).
    fn counted(&self, client: Option<IpAddr>) -> Option<Decision> {
        if self.count_verified {
            return None;
        }
        self.rate_limited(client)
    }

    /// Steps 5–6 for a username and password (from a Basic header or the
    /// login endpoint's body): the cache, coalescing, the (address, user)
    /// lockout and the in-flight bound.
    fn screen_password(
        &self,
        client: Option<IpAddr>,
        username: String,
        password: Password,
    ) -> Screened {
        // The layer's own endpoints count every request at their door.
        self.screen_password_counted(client, username, password, false, None)
    }

    /// [`screen_password`](Self::screen_password), counting the request
    /// against the per-address limit (`count`) once it is known to need a
    /// verification: a cached credential costs nothing and is not counted.
    /// A cache hit is remembered in `memo` under the header `value` it was
    /// decoded from.
    fn screen_password_counted(
        &self,
        client: Option<IpAddr>,
        username: String,
        password: Password,
        count: bool,
        memo: Option<(&CredentialMemo, &[u8])>,
    ) -> Screened {
        let mut digest = None;
        let mut leader = None;
        if let Some(cache) = &self.cache {
            let store = self.verifier.current_store();
            // Unknown users are keyed with the dummy hash and coalesced
            // exactly like known ones: a burst of identical guesses must
            // look the same (statuses, failures recorded, lockouts) whether
            // or not the user exists. Only successes enter the cache, so an
            // unknown user is never found there.
            // One lookup serves the digest and, on a hit, the user's name.
            let known = store.stored_hash(&username);
            let stored = match known {
                Some((_, fingerprint)) => fingerprint,
                None => store.fingerprint_or_dummy(&username),
            };
            let credential = cache.digest(&username, password.as_bytes(), stored);
            // Looked up for unknown users too: the same work either way.
            let hit = cache.vouch(&username, &credential, Instant::now());
            if let (Some((expires, generation)), Some((name, _))) = (hit, known) {
                // The memo lasts no longer than the entry it stands for,
                // and is bound to the store this lookup used and the
                // generation the entry was found in: a reload or a clear
                // since then voids it at once.
                if let Some((memo, value)) = memo {
                    memo.remember_basic(value, &username, expires, generation, &store);
                }
                return Screened::Cached(AuthenticatedUser::new(Arc::clone(name)));
            }
            if count && let Some(decision) = self.rate_limited(client) {
                return Screened::Decided(decision);
            }
            match self.inflight.join(&username, credential) {
                Join::Follow(result) => return Screened::Follow(username, result),
                Join::Lead(lead) => leader = Some(lead),
                Join::Alone => {}
            }
            digest = Some(credential);
        }
        if count
            && self.cache.is_none()
            && let Some(decision) = self.rate_limited(client)
        {
            return Screened::Decided(decision);
        }
        // Dropping `leader` on any refusal below releases its followers.
        let began = match client {
            Some(client) => self.lockouts.begin(client, &username, Instant::now()),
            None => self
                .lockouts
                .begin_unknown_address(&username, Instant::now()),
        };
        let attempt = match began {
            Ok(attempt) => attempt,
            Err(Refusal::Locked(remaining)) => {
                return Screened::Decided(failed(
                    too_many(remaining),
                    events::Reason::LockedOut,
                    Some(&username),
                ));
            }
            Err(Refusal::Busy) => {
                return Screened::Decided(failed(
                    too_many(Duration::from_secs(1)),
                    events::Reason::RateLimited,
                    Some(&username),
                ));
            }
            Err(Refusal::Full) => {
                // Counted exactly, but warned about once per 10,000: this
                // happens during floods, when log lines are what fills disks.
                if self
                    .counters
                    .record_lockout_table_full()
                    .is_multiple_of(10_000)
                {
                    tracing::warn!(
                        "lockout table full of live locks: refusing new clients (fail closed); see gatehouse_lockout_table_full_total"
                    );
                }
                // No failure event: this happens in floods, when log lines
                // are what fills disks (the metric counts it).
                return Screened::Decided(too_many(Duration::from_secs(60)));
            }
        };
        Screened::Verify(Pending {
            client: client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            known_client: client.is_some(),
            username,
            password,
            attempt,
            shared: None,
            digest,
            leader,
        })
    }

    /// A credential the cache vouched for: counted, then the user's quota.
    fn cache_hit(&self, user: AuthenticatedUser) -> Decision {
        self.counters.record_cache_hit();
        self.per_user_quota(user)
    }

    /// Steps 6–8: verify (or reuse a verification), then apply the per-user
    /// quota.
    async fn conclude(self: &Arc<Self>, screened: Screened) -> Decision {
        let (username, verified) = match screened {
            Screened::Decided(decision) => return decision,
            Screened::Cached(user) => return self.cache_hit(user),
            Screened::Follow(username, result) => {
                self.counters.record_coalesced();
                (
                    username,
                    coalesce::follow(result)
                        .await
                        .ok_or(VerifyError::Unavailable),
                )
            }
            Screened::Verify(pending) => {
                let pending = match self.reserve_shared(pending).await {
                    Ok(pending) => pending,
                    Err(decision) => return decision,
                };
                let username = pending.username.clone();
                // Verified in a task of its own, so that a client hanging up
                // mid-way cannot stop its failure from being recorded or its
                // followers from hearing the answer.
                let verified = tokio::spawn(Arc::clone(self).verify(pending))
                    .await
                    .unwrap_or(Err(VerifyError::Unavailable));
                (username, verified)
            }
        };
        match verified {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(user = username.as_str(), "wrong password or unknown user");
                let reason = if self.verifier.current_store().contains(&username) {
                    events::Reason::BadPassword
                } else {
                    events::Reason::UnknownUser
                };
                return failed(self.refuse_unauthorized(), reason, Some(&username));
            }
            Err(error) => {
                tracing::warn!(%error, "password verification refused: overloaded");
                return Decision::Refuse(Outcome::Overloaded, response::unavailable());
            }
        }
        self.per_user_quota(AuthenticatedUser::new(username))
    }

    /// Step 5 across replicas: reserves the attempt in the shared records
    /// too (the local one is held already). A refusal releases the local
    /// reservation; Redis being away leaves the local records alone to
    /// decide.
    async fn reserve_shared(&self, mut pending: Pending) -> Result<Pending, Decision> {
        let Some(shared) = self.shared_limits.as_ref() else {
            return Ok(pending);
        };
        if !pending.known_client {
            return Ok(pending);
        }
        let refusal = match shared.begin(pending.client, &pending.username).await {
            Ok(attempt) => {
                pending.shared = attempt;
                return Ok(pending);
            }
            Err(refusal) => refusal,
        };
        // The local slot goes back; dropping the leader releases followers.
        let Pending {
            username, attempt, ..
        } = pending;
        self.lockouts.cancel(attempt);
        let username = Some(username.as_str());
        Err(match refusal {
            Refusal::Locked(remaining) => {
                failed(too_many(remaining), events::Reason::LockedOut, username)
            }
            _ => failed(
                too_many(Duration::from_secs(1)),
                events::Reason::RateLimited,
                username,
            ),
        })
    }

    /// Step 7: the per-user quota, then the request goes on.
    fn per_user_quota(&self, user: AuthenticatedUser) -> Decision {
        if let Some(limit) = &self.rate.per_user
            && let Err(wait) =
                limit
                    .check(user.shared_name())
                    .and_then(|()| match &self.shared_limits {
                        Some(shared) => shared.check_rate(RateKind::User, user.name()),
                        None => Ok(()),
                    })
        {
            return failed(
                too_many(wait),
                events::Reason::RateLimited,
                Some(user.name()),
            );
        }
        Decision::Authenticated(user)
    }

    /// Runs one verification and records its outcome against the lockouts.
    /// Usernames are logged as `&str` values, which the text format quotes
    /// and escapes (`user="a b\n"`), so a crafted name cannot forge fields
    /// or lines; JSON escapes them anyway.
    async fn verify(self: Arc<Self>, pending: Pending) -> Result<bool, VerifyError> {
        let Pending {
            client,
            known_client: _,
            username,
            password,
            attempt,
            shared,
            digest,
            leader,
        } = pending;
        let result = self.verifier.verify_timed(username.clone(), password).await;
        let now = Instant::now();
        match result {
            Ok(crate::credentials::Verification {
                ok,
                took,
                scheme,
                checked,
            }) => {
                self.counters.record_verification(!ok, took);
                if ok {
                    // Successes at debug, beside the failure events (a
                    // cached credential is not a new login).
                    tracing::debug!(target: "gatehouse::auth_success", %client, user = username.as_str(), "password verified");
                }
                if ok
                    && let Some(scheme) = scheme
                    && scheme != crate::credentials::Scheme::Argon2
                {
                    self.counters.record_legacy_login(scheme.label());
                }
                // Filed under the hash the password was checked against:
                // a reload since the digest was made (a new hash) leaves
                // the success uncached rather than filed under the old one.
                if let (true, Some(cache), Some(digest)) = (ok, &self.cache, digest)
                    && checked.is_some_and(|fingerprint| digest.was_made_for(&fingerprint))
                {
                    cache.insert(&username, digest, now);
                }
                if let Some(leader) = leader {
                    leader.publish(ok);
                }
                if let Some(locked) = self.lockouts.finish(attempt, ok, now) {
                    self.counters.record_lockout();
                    let duration = self.lockouts.policy().duration;
                    match locked {
                        // 0.0.0.0 stands for "no address" (the layer served
                        // without connect info): the lock is everyone's.
                        LockedOut::User if client.is_unspecified() => {
                            tracing::warn!(
                                user = username.as_str(),
                                ?duration,
                                "user locked out for every client after repeated failed logins (no client addresses: see WithoutPeerAddress)"
                            )
                        }
                        LockedOut::User => {
                            tracing::warn!(%client, user = username.as_str(), ?duration, "user locked out for this client after repeated failed logins")
                        }
                        LockedOut::Address | LockedOut::Both => {
                            tracing::warn!(%client, user = username.as_str(), ?duration, "client locked out after repeated failed logins")
                        }
                    }
                }
            }
            Err(_) => self.lockouts.cancel(attempt),
        }
        // Recorded in the shared records in the background: the answer does
        // not wait for Redis. Until it lands, the attempt still counts there
        // as in flight, so no guess slips through meanwhile.
        if let (Some(limits), Some(attempt)) = (&self.shared_limits, shared) {
            let limits = Arc::clone(limits);
            let outcome = result.as_ref().map(|v| v.ok).ok();
            tokio::spawn(async move {
                match outcome {
                    Some(ok) => limits.finish(attempt, ok).await,
                    None => limits.cancel(attempt).await,
                }
            });
        }
        result.map(|v| v.ok)
    }
}

#[cfg(test)]
mod tests;
