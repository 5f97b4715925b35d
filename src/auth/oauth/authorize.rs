//! `GET` and `POST /oauth/authorize` (RFC 6749 §4.1.1–§4.1.2, RFC 7636,
//! RFC 8252): the resource owner signs in with Basic (the browser's
//! prompt, through the layer's whole pipeline), approves or denies on a
//! consent page, and the client gets a code at its redirect URI, or the
//! person sees it on a page (`urn:ietf:wg:oauth:2.0:oob`).
//!
//! The request is checked in this order: client and redirect URI first,
//! and while either is in doubt nothing is ever redirected (§4.1.2.1: an
//! error page instead, so the endpoint cannot be made an open redirector);
//! then every other parameter, whose errors do go back to the client.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Bytes, HttpBody};
use axum::response::Response;
use http::header::LOCATION;
use http::{HeaderValue, Method, Request, StatusCode};

use super::consent::{self, Consent};
use super::grants::CodeGrant;
use super::{OAuthState, Params, digest, random_secret, unix_now};
use crate::auth::bearer::{self, Presented};
use crate::auth::{AuthenticatedUser, Decision, Shared, header};
use crate::config::{GrantType, OAuthClient};
use crate::metrics::Outcome;

/// The out-of-band redirect URI: the code is shown, not sent.
pub(super) const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";
/// The longest `state` carried back.
const MAX_STATE: usize = 1024;

/// An authorization request whose every parameter checked out.
struct AuthRequest {
    client: OAuthClient,
    /// As the request gave it (a loopback URI keeps its port).
    redirect_uri: String,
    redirect_given: bool,
    scope: String,
    state: Option<String>,
    challenge: Option<String>,
}

impl AuthRequest {
    /// What a form token binds: the request, field by field.
    fn digest(&self) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let fields = [
            self.client.id.as_str(),
            self.redirect_uri.as_str(),
            if self.redirect_given { "1" } else { "0" },
            self.scope.as_str(),
            self.state.as_deref().unwrap_or("\0"),
            self.challenge.as_deref().unwrap_or("\0"),
        ];
        for field in fields {
            context.update(&(field.len() as u64).to_be_bytes());
            context.update(field.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    fn oob(&self) -> bool {
        self.redirect_uri == OOB
    }
}

/// Why a request cannot go on.
enum Invalid {
    /// Shown to the person: the client or redirect URI is in doubt.
    Page(StatusCode, &'static str),
    /// Sent back to the (verified) redirect URI, §4.1.2.1.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: &'static str,
    },
}

/// RFC 8252 §7.3: a loopback IP redirect URI matches whatever port the
/// native app listens on; everything else about it must match exactly.
fn without_loopback_port(uri: &str) -> Option<String> {
    for host in ["http://127.0.0.1", "http://[::1]"] {
        let Some(rest) = uri.strip_prefix(host) else {
            continue;
        };
        // The host must end here: `127.0.0.1.evil` or `127.0.0.1@evil`
        // are other hosts.
        let path = match rest.strip_prefix(':') {
            None => rest,
            Some(after_colon) => {
                let digits = after_colon.bytes().take_while(u8::is_ascii_digit).count();
                let port = after_colon[..digits].parse::<u16>().ok()?;
                if port == 0 || after_colon.starts_with('0') {
                    return None;
                }
                &after_colon[digits..]
            }
        };
        if !(path.is_empty() || path.starts_with('/') || path.starts_with('?')) {
            return None;
        }
        return Some(format!("{host}{path}"));
    }
    None
}

fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    match (
        without_loopback_port(registered),
        without_loopback_port(given),
    ) {
        (Some(registered), Some(given)) => registered == given,
        _ => false,
    }
}

/// Checks an authorization request's parameters.
fn validate(oauth: &OAuthState, params: &Params) -> Result<AuthRequest, Invalid> {
    let clients = oauth.clients.load();
    let client = params
        .get("client_id")
        .and_then(|id| clients.get(id))
        .ok_or(Invalid::Page(
            StatusCode::BAD_REQUEST,
            "The client_id is missing or not a registered client.",
        ))?;
    let (redirect_uri, redirect_given) = match params.get("redirect_uri") {
        Some(given) => {
            if given.contains('#')
                || !client
                    .redirect_uris
                    .iter()
                    .any(|r| redirect_matches(r, given))
            {
                return Err(Invalid::Page(
                    StatusCode::BAD_REQUEST,
                    "The redirect_uri is not one registered for this client.",
                ));
            }
            (given.to_owned(), true)
        }
        None => match client.redirect_uris.as_slice() {
            [only] => (only.clone(), false),
            _ => {
                return Err(Invalid::Page(
                    StatusCode::BAD_REQUEST,
                    "The redirect_uri is missing, and this client has more than one.",
                ));
            }
        },
    };
    let state = params.get("state").map(str::to_owned);
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        // Not echoed: the client sent something no client needs.
        return Err(Invalid::Redirect {
            redirect_uri,
            state: None,
            error: "invalid_request",
            description: "state is too long",
        });
    }
    let redirect = |error, description| Invalid::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description,
    };
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(redirect(
            "unauthorized_client",
            "this client may not use the authorization code grant",
        ));
    }
    match params.get("response_type") {
        None => return Err(redirect("invalid_request", "response_type is missing")),
        Some("code") => {}
        Some(_) => {
            return Err(redirect(
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
    }
    let allowed: Vec<&str> = client.scopes.iter().map(String::as_str).collect();
    let scope = super::token::scopes(params.get("scope"), &allowed)
        .map_err(|_| redirect("invalid_scope", "a scope is not one this client may have"))?;
    let challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (Some(challenge), Some("S256")) => {
            // The base64url of a SHA-256: 43 characters.
            if challenge.len() != 43
                || !challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(redirect(
                    "invalid_request",
                    "code_challenge is not an S256 challenge",
                ));
            }
            Some(challenge.to_owned())
        }
        (None, None) if client.secret.is_some() => None,
        (None, None) => {
            return Err(redirect(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            ));
        }
        (_, _) => {
            return Err(redirect(
                "invalid_request",
                "code_challenge_method must be S256 (plain is refused)",
            ));
        }
    };
    Ok(AuthRequest {
        client: client.clone(),
        redirect_uri,
        redirect_given,
        scope,
        state,
        challenge,
    })
}

/// `uri` with `pairs` added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{query}")
}

/// A redirect to the client: 303 after the consent form's POST (the
/// browser then GETs it), 302 otherwise.
fn redirect(uri: &str, pairs: &[(&str, &str)], after_post: bool) -> (Outcome, Response) {
    let target = with_query(uri, pairs);
    let Ok(location) = HeaderValue::try_from(target) else {
        return (
            Outcome::BadRequest,
            consent::error_page(StatusCode::BAD_REQUEST, "The redirect URI cannot be used."),
        );
    };
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = if after_post {
        StatusCode::SEE_OTHER
    } else {
        StatusCode::FOUND
    };
    response.headers_mut().insert(LOCATION, location);
    consent::security_headers(response.headers_mut());
    (Outcome::Allowed, response)
}

/// An error for the client: to its redirect URI, or shown when the code
/// would have been shown (out of band).
fn refuse(invalid: Invalid, after_post: bool) -> (Outcome, Response) {
    match invalid {
        Invalid::Page(status, message) => {
            (Outcome::BadRequest, consent::error_page(status, message))
        }
        Invalid::Redirect {
            redirect_uri,
            description,
            ..
        } if redirect_uri == OOB => (
            Outcome::BadRequest,
            consent::error_page(StatusCode::BAD_REQUEST, description),
        ),
        Invalid::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            let mut pairs = vec![("error", error), ("error_description", description)];
            if let Some(state) = &state {
                pairs.push(("state", state));
            }
            let (_, response) = redirect(&redirect_uri, &pairs, after_post);
            (Outcome::BadRequest, response)
        }
    }
}

/// `GET`/`HEAD`/`POST /oauth/authorize`.
pub(in crate::auth) async fn authorize<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    client_ip: Option<IpAddr>,
) -> (Outcome, Response)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if let Some(decision) = shared.rate_limited(client_ip) {
        return crate::auth::login::finish(decision);
    }
    let Some(oauth) = shared.oauth.as_ref() else {
        return (
            Outcome::BadRequest,
            consent::error_page(StatusCode::NOT_FOUND, "OAuth is off."),
        );
    };
    // Not HEAD: for an auto-approved client a GET issues a code, and a
    // HEAD must not have that effect.
    let post = match *req.method() {
        Method::GET => false,
        Method::POST => true,
        _ => {
            return (
                Outcome::BadRequest,
                crate::auth::response::method_not_allowed("GET, POST", "405 Method Not Allowed\n"),
            );
        }
    };
    // The resource owner's Basic credentials, read before the body is.
    let credentials = match bearer::presented(req.headers(), None) {
        Ok(Presented::Basic(value)) => header::parse_basic(value).ok(),
        _ => None,
    };
    let params = if post {
        if !crate::auth::body::has_media_type(req.headers(), super::FORM) {
            return (
                Outcome::BadRequest,
                consent::error_page(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Submit the consent form as a form.",
                ),
            );
        }
        match crate::auth::body::read(req.into_body()).await {
            Ok(body) => Params::parse(&body),
            Err(_) => {
                return (
                    Outcome::BadRequest,
                    consent::error_page(StatusCode::BAD_REQUEST, "The form could not be read."),
                );
            }
        }
    } else {
        Params::parse(req.uri().query().unwrap_or("").as_bytes())
    };
    let Ok(params) = params else {
        return (
            Outcome::BadRequest,
            consent::error_page(StatusCode::BAD_REQUEST, "A parameter is repeated."),
        );
    };
    let request = match validate(oauth, &params) {
        Ok(request) => request,
        Err(invalid) => return refuse(invalid, post),
    };
    // The person: Basic, through the whole pipeline (limits, lockouts,
    // cache, queue). A 401 makes the browser prompt.
    let Some(credentials) = credentials else {
        return crate::auth::login::finish(shared.refuse_unauthorized());
    };
    if let Some(decision) = shared.address_locked(client_ip) {
        return crate::auth::login::finish(decision);
    }
    let before = shared.stored_fingerprint(&credentials.username);
    let screened = shared.screen_password(client_ip, credentials.username, credentials.password);
    let user = match shared.conclude(screened).await {
        Decision::Authenticated(user) => user,
        decision => return crate::auth::login::finish(decision),
    };
    // The password the code will be bound to is the one just verified.
    let now_fingerprint = shared.stored_fingerprint(user.name());
    let binding = match (before, now_fingerprint) {
        (Some(before), Some(now)) if before == now => crate::tokens::password_binding(&now),
        _ => return crate::auth::login::finish(shared.refuse_unauthorized()),
    };
    let now = unix_now();
    let (outcome, mut response) = if !post {
        if request.client.auto_approve {
            approve(oauth, &request, &user, binding, false).await
        } else {
            show_consent(oauth, &request, &user, now)
        }
    } else {
        let token = params.get("form_token").unwrap_or("");
        let form_key = oauth.grants.form_key();
        let redeemed = oauth.forms.redeem(
            form_key.as_ref(),
            token,
            user.name(),
            &request.client.id,
            &request.digest(),
            now,
        );
        // Spent across replicas too, when they share a store.
        let fresh = match redeemed {
            Some((nonce, expires)) => oauth.grants.spend_form(nonce, expires).await,
            None => Ok(false),
        };
        let Ok(fresh) = fresh else {
            return (
                Outcome::Overloaded,
                consent::error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again shortly."),
            );
        };
        if !fresh {
            tracing::debug!(
                user = user.name(),
                "consent form refused: its token is missing, expired, spent or another's"
            );
            return (
                Outcome::BadRequest,
                consent::error_page(
                    StatusCode::FORBIDDEN,
                    "This form has expired, was used already, or was not shown to you. Start again from the application.",
                ),
            );
        }
        match params.get("decision") {
            Some("approve") => approve(oauth, &request, &user, binding, true).await,
            _ => refuse(
                Invalid::Redirect {
                    redirect_uri: request.redirect_uri.clone(),
                    state: request.state.clone(),
                    error: "access_denied",
                    description: "the resource owner denied the request",
                },
                true,
            ),
        }
    };
    // Lets the access log name the user.
    response.extensions_mut().insert(user);
    (outcome, response)
}

fn show_consent(
    oauth: &OAuthState,
    request: &AuthRequest,
    user: &AuthenticatedUser,
    now: u64,
) -> (Outcome, Response) {
    let Ok(token) = oauth.forms.issue(
        oauth.grants.form_key().as_ref(),
        user.name(),
        &request.client.id,
        &request.digest(),
        now,
    ) else {
        return (
            Outcome::Overloaded,
            consent::error_page(StatusCode::INTERNAL_SERVER_ERROR, "Try again."),
        );
    };
    let mut fields = vec![
        ("response_type", "code"),
        ("client_id", request.client.id.as_str()),
        ("scope", request.scope.as_str()),
    ];
    if request.redirect_given {
        fields.push(("redirect_uri", request.redirect_uri.as_str()));
    }
    if let Some(state) = &request.state {
        fields.push(("state", state));
    }
    if let Some(challenge) = &request.challenge {
        fields.push(("code_challenge", challenge));
        fields.push(("code_challenge_method", "S256"));
    }
    fields.push(("form_token", &token));
    let page = consent::consent_page(&Consent {
        user: user.name(),
        client_name: &request.client.name,
        scopes: &request.scope,
        redirect_uri: &request.redirect_uri,
        fields,
    });
    (Outcome::Allowed, page)
}

/// A code for the approved request: redirected, or shown (out of band).
async fn approve(
    oauth: &OAuthState,
    request: &AuthRequest,
    user: &AuthenticatedUser,
    binding: String,
    after_post: bool,
) -> (Outcome, Response) {
    let Ok(code) = random_secret::<32>() else {
        return (
            Outcome::Overloaded,
            consent::error_page(StatusCode::INTERNAL_SERVER_ERROR, "Try again."),
        );
    };
    let ttl = oauth.code_ttl.as_secs().max(1);
    let now = unix_now();
    let grant = CodeGrant {
        client_id: request.client.id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        redirect_given: request.redirect_given,
        challenge: request.challenge.clone(),
        user: user.name().to_owned(),
        binding,
        scope: request.scope.clone(),
        expires: now.saturating_add(ttl),
    };
    if let Err(error) = oauth.grants.put_code(digest(&code), grant, now).await {
        tracing::warn!(%error, "authorization code refused");
        // §4.1.2.1: `temporarily_unavailable`, to the client (or shown).
        let (_, response) = refuse(
            Invalid::Redirect {
                redirect_uri: request.redirect_uri.clone(),
                state: request.state.clone(),
                error: "temporarily_unavailable",
                description: "too many authorizations are waiting to be redeemed: try again shortly",
            },
            after_post,
        );
        return (Outcome::Overloaded, response);
    }
    tracing::debug!(
        user = user.name(),
        client = request.client.id.as_str(),
        "authorization code issued"
    );
    if request.oob() {
        return (
            Outcome::Allowed,
            consent::code_page(&request.client.name, &code, ttl),
        );
    }
    let mut pairs = vec![("code", code.as_str())];
    if let Some(state) = &request.state {
        pairs.push(("state", state));
    }
    redirect(&request.redirect_uri, &pairs, after_post)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_match_on_any_port_and_nothing_else() {
        let registered = "http://127.0.0.1/callback";
        assert!(redirect_matches(registered, "http://127.0.0.1/callback"));
        assert!(redirect_matches(
            registered,
            "http://127.0.0.1:53111/callback"
        ));
        assert!(redirect_matches("http://[::1]:8/cb", "http://[::1]:9/cb"));
        for other in [
            "http://127.0.0.1:53111/callback/",
            "http://127.0.0.1:53111/callbackx",
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:080/callback",
            "http://127.0.0.1:99999/callback",
            "http://127.0.0.1.evil/callback",
            "http://127.0.0.1@evil/callback",
            "https://127.0.0.1/callback",
            "http://localhost/callback",
        ] {
            assert!(!redirect_matches(registered, other), "{other}");
        }
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
    }

    #[test]
    fn query_parameters_are_appended() {
        assert_eq!(
            with_query("https://a.example/cb", &[("code", "x"), ("state", "a b&c")]),
            "https://a.example/cb?code=x&state=a+b%26c"
        );
        assert_eq!(
            with_query("https://a.example/cb?k=v", &[("code", "x")]),
            "https://a.example/cb?k=v&code=x"
        );
    }
}
