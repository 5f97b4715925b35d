//! gatehouse as an OAuth 2.0 authorization server, answered by the layer
//! itself: the authorization endpoint and its consent page
//! ([`authorize`]), the token endpoint for the authorization-code (with
//! PKCE), refresh-token and client-credentials grants ([`token`]),
//! revocation ([`revoke`], RFC 7009) and the metadata (RFC 8414).
//!
//! Client secrets are argon2 hashes in the same credential store as the
//! users' passwords (under [`client_key`](crate::tokens::client_key)), so a
//! client's secret goes through exactly the brute-force pipeline a password
//! does: per-address limit, address and (address, client) lockouts, the
//! verified-credentials cache, coalescing, the bounded queue, the dummy
//! hash for unknown clients. Codes and refresh tokens live in a
//! [`grants::GrantStore`].

mod authorize;
mod consent;
pub(crate) mod grants;
mod revoke;
mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{CACHE_CONTROL, HOST, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, StatusCode};

use super::bearer::{self, Presented};
use super::response::method_not_allowed;
use super::{Decision, Shared, header};
use crate::config::{OAuthClient, OAuthSettings};
use crate::metrics::Outcome;
use crate::secret::Password;

pub(super) use authorize::authorize;
pub(super) use revoke::revoke;
pub(super) use token::token;

/// Where the resource owner approves a client.
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";
/// Where clients trade a grant for a token.
pub const TOKEN_PATH: &str = "/oauth/token";
/// Where clients revoke a refresh token (RFC 7009).
pub const REVOKE_PATH: &str = "/oauth/revoke";
/// RFC 8414 metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// Every path OAuth answers.
pub const PATHS: [&str; 4] = [AUTHORIZE_PATH, TOKEN_PATH, REVOKE_PATH, METADATA_PATH];

/// The media type of the endpoints' form bodies.
const FORM: &str = "application/x-www-form-urlencoded";

/// The most authorization codes (waiting or spent) held at once.
const MAX_CODES: usize = 100_000;
/// The most codes one user may have waiting.
const MAX_CODES_PER_USER: usize = 10;
/// The most grant families (one per approval) held at once.
const MAX_FAMILIES: usize = 200_000;
/// The most grant families one user holds: the oldest is revoked beyond.
const MAX_FAMILIES_PER_USER: usize = 100;
/// What refresh tokens start with (secret scanners can spot them).
const REFRESH_PREFIX: &str = "ghr_";

/// OAuth as the layer holds it.
pub(super) struct OAuthState {
    /// The registered clients, swapped whole on reload.
    pub(super) clients: arc_swap::ArcSwap<HashMap<String, OAuthClient>>,
    /// Codes, refresh tokens, revoked families.
    pub(super) grants: Box<dyn grants::GrantStore>,
    code_ttl: Duration,
    refresh_ttl: Duration,
    forms: consent::FormTokens,
}

impl OAuthState {
    /// `access_ttl`: how long the signer's tokens live (a revoked family
    /// is remembered past the last of them). `store`: where grants live
    /// (the in-memory store when `None`).
    pub(super) fn new(
        settings: OAuthSettings,
        access_ttl: Duration,
        store: Option<Box<dyn grants::GrantStore>>,
    ) -> Result<Self, getrandom::Error> {
        let grants = match store {
            Some(store) => {
                store.keep_revoked_for(access_keep(access_ttl));
                store
            }
            None => Box::new(grants::MemoryGrants::new(limits(access_ttl))),
        };
        Ok(Self {
            clients: arc_swap::ArcSwap::from_pointee(index(settings.clients)),
            grants,
            code_ttl: settings.code_ttl,
            refresh_ttl: settings.refresh_ttl,
            forms: consent::FormTokens::new()?,
        })
    }

    /// Drops expired codes, refresh tokens and spent form tokens.
    pub(super) fn prune(&self) {
        self.grants.prune(unix_now());
        self.forms.prune(unix_now());
    }
}

/// The grant stores' bounds, for tokens living `access_ttl`.
pub(crate) fn limits(access_ttl: Duration) -> grants::MemoryLimits {
    grants::MemoryLimits {
        codes: MAX_CODES,
        codes_per_user: MAX_CODES_PER_USER,
        families: MAX_FAMILIES,
        per_user: MAX_FAMILIES_PER_USER,
        // The token lifetime, the verifier's leeway (at most 5 min) and
        // a margin for clocks.
        access_keep: access_keep(access_ttl),
        spent_code_for: 3600,
    }
}

/// How long after issue an access token may still be used: its lifetime,
/// the verifier's leeway (at most 5 min) and a margin for clocks.
pub(super) fn access_keep(ttl: Duration) -> u64 {
    ttl.as_secs().saturating_add(600)
}

pub(super) fn index(clients: Vec<OAuthClient>) -> HashMap<String, OAuthClient> {
    clients.into_iter().map(|c| (c.id.clone(), c)).collect()
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new secret of `N` random bytes, base64url (a code, a refresh token,
/// a family id).
fn random_secret<const N: usize>() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A grant family's secret id and its public handle (the `fam` claim, and
/// the store's key). The id travels only inside refresh tokens.
struct FamilyId {
    secret: [u8; 16],
    handle: String,
}

impl FamilyId {
    fn new() -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 16];
        getrandom::fill(&mut secret)?;
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: [u8; 16]) -> Self {
        let mut input = b"gatehouse grant family\0".to_vec();
        input.extend_from_slice(&secret);
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        Self {
            secret,
            handle: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]),
        }
    }

    /// A new refresh token of this family: `ghr_` and the base64url of
    /// the family's secret id and 256 random bits.
    fn refresh_token(&self) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 48];
        bytes[..16].copy_from_slice(&self.secret);
        getrandom::fill(&mut bytes[16..])?;
        Ok(format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The family a refresh token claims to be of (not yet checked).
    fn of_refresh_token(token: &str) -> Option<Self> {
        let encoded = token.strip_prefix(REFRESH_PREFIX)?;
        if encoded.len() != 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let secret: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        Some(Self::from_secret(secret))
    }
}

/// What the grant store keys a code or refresh token by: never the secret.
fn digest(secret: &str) -> [u8; 32] {
    let mut input = b"gatehouse oauth grant\0".to_vec();
    input.extend_from_slice(secret.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// An RFC 6749 §5.2 error: its code, a description, and its status.
#[derive(Debug)]
struct OAuthError {
    code: &'static str,
    description: &'static str,
    status: StatusCode,
    /// Set when the client tried Basic: the 401 must challenge it.
    challenge: bool,
    /// The failure event this refusal writes, if it is a failed
    /// authentication or a guessed code or token.
    failure: Option<(super::events::Reason, Option<String>)>,
}

impl OAuthError {
    fn failing(mut self, reason: super::events::Reason, who: Option<&str>) -> Self {
        self.failure = Some((reason, who.map(str::to_owned)));
        self
    }
}

fn error(code: &'static str, description: &'static str) -> OAuthError {
    OAuthError {
        code,
        description,
        status: StatusCode::BAD_REQUEST,
        challenge: false,
        failure: None,
    }
}

/// §5.2: a 401 with the Basic challenge when the client tried Basic; a 400
/// otherwise (a 401 must carry a challenge, and there is none for
/// credentials in the body).
fn invalid_client(tried_basic: bool) -> OAuthError {
    OAuthError {
        code: "invalid_client",
        description: "client authentication failed",
        status: if tried_basic {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        },
        challenge: tried_basic,
        failure: None,
    }
}

use super::response::json_no_store as json;

/// What the token and revocation endpoints check before reading anything:
/// the per-address rate, the address lockout, and `POST`.
fn at_the_door(
    shared: &Shared,
    method: &Method,
    client_ip: Option<IpAddr>,
) -> Option<(Outcome, Response)> {
    if let Some(decision) = shared
        .rate_limited(client_ip)
        .or_else(|| shared.address_locked(client_ip))
    {
        return Some(super::login::finish(decision));
    }
    if method != Method::POST {
        return Some((
            Outcome::BadRequest,
            method_not_allowed(
                "POST",
                "405 Method Not Allowed: POST form-encoded parameters here\n",
            ),
        ));
    }
    None
}

impl OAuthError {
    fn respond(self, shared: &Shared) -> (Outcome, Response) {
        let body = serde_json::json!({"error": self.code, "error_description": self.description});
        let mut response = json(self.status, body.to_string());
        if self.challenge
            && let Some(basic) = shared.challenges.first()
        {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, basic.clone());
        }
        let outcome = if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // The store is full or away: the client may retry shortly.
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            Outcome::Overloaded
        } else if self.code == "invalid_client" {
            Outcome::Unauthorized
        } else {
            Outcome::BadRequest
        };
        if let Some((reason, who)) = &self.failure {
            super::events::attach(&mut response, *reason, who.as_deref());
        }
        (outcome, response)
    }
}

/// RFC 6749 §2.3.1: Basic credentials are form-encoded before base64
/// (`+` is a space, `%XX` a byte). `None` for a malformed escape or bytes
/// that are not UTF-8.
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A refusal: an RFC 6749 §5.2 error, or the pipeline's own answer (429
/// from a limit or lockout, 503 when verification is saturated).
enum Refused {
    OAuth(OAuthError),
    Answer(Outcome, Box<Response>),
}

impl From<OAuthError> for Refused {
    fn from(error: OAuthError) -> Self {
        Self::OAuth(error)
    }
}

impl Refused {
    fn respond(self, shared: &Shared) -> (Outcome, Response) {
        match self {
            Self::OAuth(error) => error.respond(shared),
            Self::Answer(outcome, response) => (outcome, *response),
        }
    }
}

/// 503 with `Retry-After`: the grant store is full or unavailable right now.
fn unavailable() -> OAuthError {
    OAuthError {
        code: "temporarily_unavailable",
        description: "try again shortly",
        status: StatusCode::SERVICE_UNAVAILABLE,
        challenge: false,
        failure: None,
    }
}

fn server_error() -> OAuthError {
    OAuthError {
        code: "server_error",
        description: "the token could not be made",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        challenge: false,
        failure: None,
    }
}

/// A form posted to the token or revocation endpoint: each parameter once
/// (§3.2), empty values as if omitted (§3.1).
struct Params(HashMap<String, String>);

impl Params {
    fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut params = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, value) in form_urlencoded::parse(body) {
            if !seen.insert(name.clone().into_owned()) {
                return Err(error("invalid_request", "a parameter is repeated"));
            }
            if !value.is_empty() {
                params.insert(name.into_owned(), value.into_owned());
            }
        }
        Ok(Self(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }
}

/// The client's credentials as presented: Basic (`client_secret_basic`),
/// in the body (`client_secret_post`), or its id alone (a public client).
struct Presenting {
    id: String,
    secret: Option<Password>,
    basic: bool,
}

/// Reads a form request to the token or revocation endpoint: its Basic
/// client credentials, if any, and its parameters.
async fn read_form<B>(req: Request<B>) -> Result<(Presenting, Params), OAuthError>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if !super::body::has_media_type(req.headers(), FORM) {
        return Err(error(
            "invalid_request",
            "send application/x-www-form-urlencoded parameters",
        ));
    }
    // Basic credentials, if any, are read before the body is consumed.
    let basic = match bearer::presented(req.headers(), None) {
        Ok(Presented::Basic(value)) => {
            let credentials = header::parse_basic(value).map_err(|_| invalid_client(true))?;
            // Ids are `[A-Za-z0-9._-]`, which form-encoding leaves alone.
            let id = form_decode(&credentials.username).ok_or(invalid_client(true))?;
            Some((id, credentials.password))
        }
        Ok(_) | Err(bearer::PresentedError::Ambiguous | bearer::PresentedError::Malformed) => {
            return Err(invalid_client(false));
        }
        Err(bearer::PresentedError::Missing) => None,
    };
    let body = super::body::read(req.into_body()).await.map_err(|_| {
        error(
            "invalid_request",
            "the body is too large, too slow or unreadable",
        )
    })?;
    let mut params = Params::parse(&body)?;
    // Basic or the body, never both.
    let presenting = match (basic, params.take("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(error(
                "invalid_request",
                "authenticate the client one way only",
            ));
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(error(
                    "invalid_request",
                    "client_id differs from the Basic user-id",
                ));
            }
            Presenting {
                id,
                secret: Some(secret),
                basic: true,
            }
        }
        (None, secret) => Presenting {
            id: params
                .get("client_id")
                .ok_or(invalid_client(false))?
                .to_owned(),
            secret: secret.map(Password::new),
            basic: false,
        },
    };
    if presenting.id.is_empty()
        || presenting.id.len() > header::MAX_HEADER_LEN
        || presenting.id.chars().any(char::is_control)
    {
        return Err(invalid_client(presenting.basic));
    }
    Ok((presenting, params))
}

/// A client that proved who it is.
struct Authenticated {
    client: OAuthClient,
    /// Its secret's stored fingerprint (confidential clients).
    fingerprint: Option<[u8; 32]>,
    basic: bool,
}

/// Authenticates the client: a confidential client by its secret, through
/// the password pipeline; a public client by its id alone (it holds no
/// secret, and proves itself with PKCE instead).
async fn authenticate_client(
    shared: &Arc<Shared>,
    presenting: Presenting,
    client_ip: Option<IpAddr>,
) -> Result<Authenticated, Refused> {
    let Presenting { id, secret, basic } = presenting;
    let client = shared
        .oauth
        .as_ref()
        .and_then(|o| o.clients.load().get(&id).cloned());
    let Some(secret) = secret else {
        // Only a public client may come without a secret.
        return match client {
            Some(client) if client.secret.is_none() => Ok(Authenticated {
                client,
                fingerprint: None,
                basic,
            }),
            Some(_) => Err(invalid_client(basic)
                .failing(super::events::Reason::BadPassword, Some(&id))
                .into()),
            None => Err(invalid_client(basic)
                .failing(super::events::Reason::UnknownUser, Some(&id))
                .into()),
        };
    };
    let key = crate::tokens::client_key(&id);
    let before = shared.stored_fingerprint(&key);
    // Unknown clients, and public ones, are checked against the dummy hash
    // like unknown users: the answer and its cost are the same.
    //
    // RFC 6749 §2.3.1 has clients form-encode the secret inside Basic, but
    // common clients (requests' HTTPBasicAuth, so requests-oauthlib) send
    // it as is: the secret as sent is tried first, then its form-decoded
    // reading when that differs. Each try is a verification that counts.
    // A candidate already verified goes first and alone, so a client that
    // form-encodes pays one failed try per cache lifetime, not per request.
    let mut candidates = vec![secret];
    if basic
        && let Some(decoded) = form_decode(candidates[0].as_str())
        && decoded != candidates[0].as_str()
    {
        let decoded = Password::new(decoded);
        if shared.is_cached(&key, &decoded) {
            candidates = vec![decoded];
        } else if !shared.is_cached(&key, &candidates[0]) {
            candidates.push(decoded);
        }
    }
    let mut authenticated = false;
    for candidate in candidates {
        let screened = shared.screen_password(client_ip, key.clone(), candidate);
        match shared.conclude(screened).await {
            Decision::Authenticated(_) => {
                authenticated = true;
                break;
            }
            Decision::Refuse(Outcome::Unauthorized, _) | Decision::Public => {}
            Decision::Refuse(outcome, response) => {
                return Err(Refused::Answer(outcome, Box::new(response)));
            }
        }
    }
    let now = shared.stored_fingerprint(&key);
    match (authenticated, client, before, now) {
        // The secret verified is the one stored now: a reload in between
        // must not let the old secret through.
        (true, Some(client), Some(before), Some(now)) if before == now => Ok(Authenticated {
            client,
            fingerprint: Some(now),
            basic,
        }),
        (_, client, _, _) => {
            let reason = match client {
                Some(_) => super::events::Reason::BadPassword,
                None => super::events::Reason::UnknownUser,
            };
            Err(invalid_client(basic).failing(reason, Some(&id)).into())
        }
    }
}

/// Answers a refused bearer-like guess (an unknown code or refresh token)
/// the way the layer answers a bad token: counted against the address in
/// the bearer lockouts, so codes cannot be guessed at line rate.
fn count_guess(shared: &Shared, client_ip: Option<IpAddr>) -> Option<Refused> {
    match shared.bearer_failure(client_ip) {
        Decision::Refuse(Outcome::RateLimited, response) => {
            Some(Refused::Answer(Outcome::RateLimited, Box::new(response)))
        }
        _ => None,
    }
}

/// 429 when bad codes or refresh tokens from this address locked it out.
fn guesses_locked(shared: &Shared, client_ip: Option<IpAddr>) -> Result<(), Refused> {
    match shared.bearer_locked(client_ip) {
        Some(Decision::Refuse(outcome, response)) => {
            Err(Refused::Answer(outcome, Box::new(response)))
        }
        _ => Ok(()),
    }
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub(super) fn metadata<B>(
    shared: &Shared,
    req: &Request<B>,
    client_ip: Option<IpAddr>,
) -> (Outcome, Response) {
    if let Some(decision) = shared.rate_limited(client_ip) {
        return super::login::finish(decision);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            Outcome::BadRequest,
            method_not_allowed("GET, HEAD", "405 Method Not Allowed\n"),
        );
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    // The tokens' `iss` when it is a URL (RFC 8414 §3.3 wants them equal:
    // set `[tokens] issuer` to the public URL); otherwise this request's.
    let issuer = match super::login::current_tokens(shared).map(|t| t.policy().issuer.clone()) {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            url.trim_end_matches('/').to_owned()
        }
        _ => format!("https://{host}"),
    };
    let body = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "revocation_endpoint": format!("{issuer}{REVOKE_PATH}"),
        "jwks_uri": format!("{issuer}{}", super::JWKS_PATH),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": scopes_supported(shared),
    });
    let mut response = json(StatusCode::OK, body.to_string());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    (Outcome::Allowed, response)
}

/// Every scope some client may ask for, sorted.
fn scopes_supported(shared: &Shared) -> Vec<String> {
    let mut scopes: Vec<String> = shared
        .oauth
        .as_ref()
        .map(|o| {
            o.clients
                .load()
                .values()
                .flat_map(|c| c.scopes.iter().cloned())
                .collect()
        })
        .unwrap_or_default();
    scopes.sort();
    scopes.dedup();
    scopes
}

/// The binding of a client's tokens (see [`crate::tokens::client_binding`]).
pub(super) fn binding(client: &OAuthClient, fingerprint: &[u8; 32]) -> String {
    let grants: Vec<&str> = client.grant_types.iter().map(|g| g.name()).collect();
    crate::tokens::client_binding(fingerprint, &client.scopes, &grants)
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a+b%2Bc%3A").as_deref(), Some("a b+c:"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
        assert_eq!(form_decode("%+F"), None, "a sign is not a hex digit");
        assert_eq!(form_decode("%ff"), None, "not UTF-8");
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
    }
}
