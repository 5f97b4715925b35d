//! The OAuth 2.0 token endpoint (RFC 6749 §3.2, §4.4) and the
//! authorization-server metadata (RFC 8414), answered by the layer itself.
//!
//! Client secrets are argon2 hashes in the same credential store as the
//! users' passwords (under [`client_key`](crate::tokens::client_key)), so a
//! client's secret goes through exactly the brute-force pipeline a password
//! does: per-address limit, address and (address, client) lockouts, the
//! verified-credentials cache, coalescing, the bounded queue, the dummy
//! hash for unknown clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, PRAGMA, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, StatusCode};

use super::bearer::{self, Presented};
use super::response::method_not_allowed;
use super::{Decision, Shared, header};
use crate::config::{GrantType, OAuthClient};
use crate::metrics::Outcome;
use crate::secret::Password;
use crate::tokens::Subject;

/// Where clients trade a grant for a token.
pub const TOKEN_PATH: &str = "/oauth/token";
/// RFC 8414 metadata.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// The registered clients, swapped whole on reload.
pub(super) struct OAuthState {
    pub(super) clients: arc_swap::ArcSwap<HashMap<String, OAuthClient>>,
}

impl OAuthState {
    pub(super) fn new(clients: Vec<OAuthClient>) -> Self {
        Self {
            clients: arc_swap::ArcSwap::from_pointee(index(clients)),
        }
    }
}

pub(super) fn index(clients: Vec<OAuthClient>) -> HashMap<String, OAuthClient> {
    clients.into_iter().map(|c| (c.id.clone(), c)).collect()
}

/// An RFC 6749 §5.2 error: its code, a description, and its status.
struct OAuthError {
    code: &'static str,
    description: &'static str,
    status: StatusCode,
    /// Set when the client tried Basic: the 401 must challenge it.
    challenge: bool,
}

fn error(code: &'static str, description: &'static str) -> OAuthError {
    OAuthError {
        code,
        description,
        status: StatusCode::BAD_REQUEST,
        challenge: false,
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
    }
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
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
        let outcome = if self.code == "invalid_client" {
            Outcome::Unauthorized
        } else {
            Outcome::BadRequest
        };
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

/// `POST /oauth/token`.
pub(super) async fn token<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    client_ip: Option<IpAddr>,
) -> (Outcome, Response)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if let Some(decision) = shared
        .rate_limited(client_ip)
        .or_else(|| shared.address_locked(client_ip))
    {
        return super::login::finish(decision);
    }
    if req.method() != Method::POST {
        return (
            Outcome::BadRequest,
            method_not_allowed(
                "POST",
                "405 Method Not Allowed: POST form-encoded parameters here\n",
            ),
        );
    }
    match grant(shared, req, client_ip).await {
        Ok(answer) => answer,
        Err(error) => error.respond(shared),
    }
}

async fn grant<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    client_ip: Option<IpAddr>,
) -> Result<(Outcome, Response), OAuthError>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let form_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
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
    let mut params: HashMap<String, String> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in form_urlencoded::parse(&body) {
        // §3.2: parameters must not be included more than once.
        if !seen.insert(name.clone().into_owned()) {
            return Err(error("invalid_request", "a parameter is repeated"));
        }
        // §3.1: a parameter without a value is as if omitted.
        if !value.is_empty() {
            params.insert(name.into_owned(), value.into_owned());
        }
    }
    let grant = match params.get("grant_type").map(String::as_str) {
        None => return Err(error("invalid_request", "grant_type is missing")),
        Some("client_credentials") => GrantType::ClientCredentials,
        Some(_) => {
            return Err(error(
                "unsupported_grant_type",
                "this server issues tokens for client_credentials",
            ));
        }
    };
    // The client: Basic (client_secret_basic) or the body
    // (client_secret_post), never both.
    let used_basic = basic.is_some();
    let (id, secret) = match (basic, params.remove("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(error(
                "invalid_request",
                "authenticate the client one way only",
            ));
        }
        (Some((id, secret)), None) => {
            if params
                .get("client_id")
                .is_some_and(|body_id| *body_id != id)
            {
                return Err(error(
                    "invalid_request",
                    "client_id differs from the Basic user-id",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => {
            let id = params
                .get("client_id")
                .cloned()
                .ok_or(invalid_client(false))?;
            (id, Password::new(secret))
        }
        (None, None) => return Err(invalid_client(false)),
    };
    if id.is_empty() || id.len() > header::MAX_HEADER_LEN || id.chars().any(char::is_control) {
        return Err(invalid_client(used_basic));
    }
    let client = shared
        .oauth
        .as_ref()
        .and_then(|o| o.clients.load().get(&id).cloned());
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
    if used_basic
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
            Decision::Refuse(outcome, response) => return Ok((outcome, response)),
        }
    }
    if !authenticated {
        return Err(invalid_client(used_basic));
    }
    let Some(client) = client else {
        return Err(invalid_client(used_basic));
    };
    let now = shared.stored_fingerprint(&key);
    let (Some(before), Some(now)) = (before, now) else {
        return Err(invalid_client(used_basic));
    };
    if before != now {
        return Err(invalid_client(used_basic));
    }
    if !client.grant_types.contains(&grant) {
        return Err(error(
            "unauthorized_client",
            "this client may not use this grant type",
        ));
    }
    let scope = match params.get("scope") {
        None => client.scopes.join(" "),
        Some(asked) => {
            let asked: Vec<&str> = asked.split(' ').collect();
            if asked
                .iter()
                .any(|s| !crate::config::is_scope_token(s) || !client.scopes.iter().any(|c| c == s))
            {
                return Err(error(
                    "invalid_scope",
                    "a scope is not one this client may have",
                ));
            }
            asked.join(" ")
        }
    };
    let Some(tokens) = super::login::current_tokens(shared) else {
        return Err(error("invalid_request", "tokens are turned off"));
    };
    let subject = Subject {
        name: client.id.clone(),
        client: true,
        scope: (!scope.is_empty()).then_some(scope),
    };
    let issued = tokens
        .issue_for(&subject, binding(&client, &now))
        .map_err(|_| OAuthError {
            code: "server_error",
            description: "the token could not be signed",
            status: StatusCode::INTERNAL_SERVER_ERROR,
            challenge: false,
        })?;
    tracing::debug!(
        client = client.id.as_str(),
        "client credentials token issued"
    );
    let body = serde_json::to_string(&issued).unwrap_or_default();
    Ok((Outcome::Allowed, json(StatusCode::OK, body)))
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
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "jwks_uri": format!("{issuer}{}", super::JWKS_PATH),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": [],
    });
    let mut response = json(StatusCode::OK, body.to_string());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    (Outcome::Allowed, response)
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
