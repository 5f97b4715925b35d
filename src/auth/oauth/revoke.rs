//! `POST /oauth/revoke` (RFC 7009): a client revokes one of its refresh
//! tokens, or an access token from one of its grants; either way the whole
//! family goes (§2.1 allows it, and a half-revoked grant would be a
//! surprise).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;
use http::Request;

use super::{Refused, authenticate_client, error, read_form, unix_now};
use crate::auth::Shared;
use crate::metrics::Outcome;

/// `POST /oauth/revoke`.
pub(in crate::auth) async fn revoke<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    client_ip: Option<IpAddr>,
) -> (Outcome, Response)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if let Some(answer) = super::at_the_door(shared, req.method(), client_ip) {
        return answer;
    }
    match revoke_token(shared, req, client_ip).await {
        // §2.2: 200 whether or not the token was valid: a client learns
        // nothing about tokens that are not its own.
        Ok(()) => {
            let mut response = Response::new(Body::empty());
            crate::auth::response::no_store(response.headers_mut());
            (Outcome::Allowed, response)
        }
        Err(refused) => refused.respond(shared),
    }
}

async fn revoke_token<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    client_ip: Option<IpAddr>,
) -> Result<(), Refused>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (presenting, params) = read_form(req).await?;
    let token = params
        .get("token")
        .ok_or_else(|| error("invalid_request", "token is missing"))?;
    let client = authenticate_client(shared, presenting, client_ip).await?;
    let Some(oauth) = shared.oauth.as_ref() else {
        return Ok(());
    };
    let now = unix_now();
    // `token_type_hint` only says where to look first (§2.1); both places
    // are cheap, so both are looked in.
    let family = match super::FamilyId::of_refresh_token(token) {
        Some(family) => oauth
            .grants
            .owns_family(&family.handle, &client.client.id)
            .await
            .map_err(|_| super::unavailable())?
            .then_some(family.handle),
        // By access token only with the client's secret: anyone who saw a
        // public client's access token (an upstream, a log) could
        // otherwise end the user's session.
        None if client.fingerprint.is_some() => {
            access_token_family(shared, token, &client.client.id)
        }
        None => None,
    };
    if let Some(family) = family {
        // RFC 7009 §2.2.1: 503 when the revocation could not be done.
        oauth
            .grants
            .revoke_family(&family, now)
            .await
            .map_err(|_| super::unavailable())?;
        tracing::debug!(
            client = client.client.id.as_str(),
            "grant revoked at the client's request"
        );
    }
    Ok(())
}

/// The family of an access token issued to `client_id` for a user, when
/// the token is one of ours and still verifies.
fn access_token_family(shared: &Shared, token: &str, client_id: &str) -> Option<String> {
    let tokens = crate::auth::login::current_tokens(shared)?;
    let claims = tokens.verify(token).ok()?;
    if claims.client_id.as_deref() != Some(client_id) {
        return None;
    }
    claims.fam
}
