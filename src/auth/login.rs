//! What the layer answers itself when tokens are on: the login endpoint,
//! which trades a password for a token through the same pipeline as Basic
//! (per-address limit, lockouts, cache, coalescing, the verification
//! queue, the dummy hash), and the JWKS document.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use serde::Deserialize;

use super::bearer::{self, Presented};
use super::body::BodyError;
use super::response::{method_not_allowed, plain};
use super::{Decision, Shared, header};
use crate::metrics::Outcome;
use crate::secret::Password;

/// `{"username": …, "password": …}`; other fields are ignored.
#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

fn not_found() -> (Outcome, Response) {
    refused(
        Outcome::BadRequest,
        StatusCode::NOT_FOUND,
        "404 Not Found\n",
    )
}

/// The tokens in force, unless tokens are off (or turned off by a reload).
pub(super) fn current_tokens(shared: &Shared) -> Option<Arc<crate::tokens::Tokens>> {
    shared.tokens.as_ref()?.tokens.load_full()
}

fn refused(outcome: Outcome, status: StatusCode, body: &'static str) -> (Outcome, Response) {
    (outcome, plain(status, body))
}

/// `POST <login_path>`: credentials from a Basic header or a JSON body;
/// 200 with the token, or exactly what Basic would have answered.
pub(super) async fn login<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    client: Option<IpAddr>,
) -> (Outcome, Response)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if let Some(decision) = shared
        .rate_limited(client)
        .or_else(|| shared.address_locked(client))
    {
        return finish(decision);
    }
    // Tokens turned off by a reload: the login is gone.
    let Some(tokens) = current_tokens(shared) else {
        return not_found();
    };
    if req.method() != Method::POST {
        return (
            Outcome::BadRequest,
            method_not_allowed("POST", "405 Method Not Allowed: POST credentials here\n"),
        );
    }
    let (username, password) = match bearer::presented(req.headers(), None) {
        Ok(Presented::Basic(value)) => match header::parse_basic(value) {
            Ok(credentials) => (credentials.username, credentials.password),
            Err(reason) => {
                tracing::debug!(%reason, "login: authorization header refused");
                return finish(shared.refuse_unauthorized());
            }
        },
        Ok(_) | Err(bearer::PresentedError::Ambiguous | bearer::PresentedError::Malformed) => {
            return finish(shared.refuse_unauthorized());
        }
        Err(bearer::PresentedError::Missing) => match read_body(req).await {
            Ok(credentials) => credentials,
            Err(answer) => return answer,
        },
    };
    // The same checks a Basic user-id gets (header::parse_basic): a JSON
    // body must not reach names a header cannot carry.
    if username.is_empty()
        || username.len() > header::MAX_HEADER_LEN
        || username.contains(':')
        || username.chars().any(char::is_control)
    {
        return finish(shared.refuse_unauthorized());
    }
    // The hash the password is about to be checked against: the token is
    // bound to it, and refused if a reload replaced it meanwhile (the old
    // password must not buy a token for the new hash).
    let before = shared.stored_fingerprint(&username);
    let screened = shared.screen_password(client, username, password);
    let decision = shared.conclude(screened).await;
    let Decision::Authenticated(user) = decision else {
        return finish(decision);
    };
    let now = shared.stored_fingerprint(user.name());
    let (Some(before), Some(now)) = (before, now) else {
        return finish(shared.refuse_unauthorized());
    };
    if before != now {
        return finish(shared.refuse_unauthorized());
    }
    let binding = crate::tokens::password_binding(&now);
    // The keys now, not those from before the wait: a reload may have
    // rotated them or turned tokens off meanwhile.
    drop(tokens);
    let Some(tokens) = current_tokens(shared) else {
        return not_found();
    };
    match tokens.issue(user.name(), binding) {
        Ok(issued) => {
            tracing::debug!(user = user.name(), "token issued");
            let body = serde_json::to_string(&issued).unwrap_or_default();
            let mut response = super::response::json_no_store(StatusCode::OK, body);
            response.extensions_mut().insert(user);
            (Outcome::Allowed, response)
        }
        Err(error) => {
            tracing::error!(%error, "cannot issue a token");
            refused(
                Outcome::Overloaded,
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error\n",
            )
        }
    }
}

pub(super) fn finish(decision: Decision) -> (Outcome, Response) {
    match decision {
        Decision::Refuse(outcome, response) => (outcome, response),
        // Not reached: a login answers with a token, never hands on.
        Decision::Public | Decision::Authenticated(_) => refused(
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
            "400 Bad Request\n",
        ),
    }
}

/// The JSON body's credentials, or the answer to a body that has none:
/// 415 (not JSON), 413 (too large), 408 (too slow), 400 (malformed).
async fn read_body<B>(req: Request<B>) -> Result<(String, Password), (Outcome, Response)>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if !super::body::has_media_type(req.headers(), "application/json") {
        return Err(refused(
            Outcome::BadRequest,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 Unsupported Media Type: send application/json, or a Basic header\n",
        ));
    }
    let bytes = match super::body::read(req.into_body()).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return Err(refused(
                Outcome::BadRequest,
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Payload Too Large\n",
            ));
        }
        Err(BodyError::Unreadable) => {
            return Err(refused(
                Outcome::BadRequest,
                StatusCode::BAD_REQUEST,
                "400 Bad Request: the body could not be read\n",
            ));
        }
        Err(BodyError::TooSlow) => {
            return Err(refused(
                Outcome::BadRequest,
                StatusCode::REQUEST_TIMEOUT,
                "408 Request Timeout\n",
            ));
        }
    };
    match serde_json::from_slice::<LoginBody>(&bytes) {
        Ok(LoginBody { username, password }) => Ok((username, Password::new(password))),
        Err(_) => Err(refused(
            Outcome::BadRequest,
            StatusCode::BAD_REQUEST,
            "400 Bad Request: expected {\"username\": \"...\", \"password\": \"...\"}\n",
        )),
    }
}

/// `GET /.well-known/jwks.json`: the public keys, without authentication
/// (still rate limited).
pub(super) fn jwks<B>(
    shared: &Shared,
    req: &Request<B>,
    client: Option<IpAddr>,
) -> (Outcome, Response) {
    if let Some(decision) = shared.rate_limited(client) {
        return finish(decision);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return (
            Outcome::BadRequest,
            method_not_allowed("GET, HEAD", "405 Method Not Allowed\n"),
        );
    }
    let Some(tokens) = current_tokens(shared) else {
        return not_found();
    };
    let mut response = Response::new(Body::from(tokens.jwks()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    (Outcome::Allowed, response)
}
