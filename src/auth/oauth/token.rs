//! `POST /oauth/token` (RFC 6749 §3.2): client credentials (§4.4), the
//! authorization code with PKCE (§4.1.3, RFC 7636 §4.6) and rotating
//! refresh tokens (§6, RFC 9700 §4.14.2).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Bytes, HttpBody};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Request, StatusCode};

use super::grants::{CodeGrant, FamilyGrant, Taken};
use super::{
    Authenticated, FamilyId, OAuthError, Params, Refused, authenticate_client, count_guess, digest,
    error, json, read_form, server_error, unavailable, unix_now,
};
use crate::auth::Shared;
use crate::config::GrantType;
use crate::metrics::Outcome;
use crate::tokens::Subject;

/// `POST /oauth/token`.
pub(in crate::auth) async fn token<B>(
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
    match grant(shared, req, client_ip).await {
        Ok(answer) => answer,
        Err(refused) => refused.respond(shared),
    }
}

async fn grant<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    client_ip: Option<IpAddr>,
) -> Result<(Outcome, Response), Refused>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (presenting, mut params) = read_form(req).await?;
    let grant = match params.get("grant_type") {
        None => return Err(error("invalid_request", "grant_type is missing").into()),
        Some(name) => GrantType::parse(name).ok_or_else(|| {
            error(
                "unsupported_grant_type",
                "grant_type is authorization_code, refresh_token or client_credentials",
            )
        })?,
    };
    let client = authenticate_client(shared, presenting, client_ip).await?;
    if !client.client.grant_types.contains(&grant) {
        return Err(error(
            "unauthorized_client",
            "this client may not use this grant type",
        )
        .into());
    }
    let issued = match grant {
        GrantType::ClientCredentials => client_credentials(shared, &client, &params)?,
        GrantType::AuthorizationCode => {
            authorization_code(shared, &client, &mut params, client_ip).await?
        }
        GrantType::RefreshToken => refresh(shared, &client, &params, client_ip).await?,
    };
    let body = serde_json::to_string(&issued).map_err(|_| server_error())?;
    Ok((Outcome::Allowed, json(StatusCode::OK, body)))
}

/// The scopes asked for, each one of `allowed`; all of `allowed` when the
/// request names none.
pub(super) fn scopes(asked: Option<&str>, allowed: &[&str]) -> Result<String, OAuthError> {
    let Some(asked) = asked else {
        return Ok(allowed.join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for scope in asked.split(' ') {
        if !crate::config::is_scope_token(scope) || !allowed.contains(&scope) {
            return Err(error(
                "invalid_scope",
                "a scope is not one this client may have",
            ));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

/// §4.4: a confidential client acting for itself.
fn client_credentials(
    shared: &Shared,
    client: &Authenticated,
    params: &Params,
) -> Result<crate::tokens::Issued, Refused> {
    let allowed: Vec<&str> = client.client.scopes.iter().map(String::as_str).collect();
    let scope = scopes(params.get("scope"), &allowed)?;
    let Some(fingerprint) = client.fingerprint else {
        return Err(super::invalid_client(client.basic).into());
    };
    let tokens = crate::auth::login::current_tokens(shared)
        .ok_or_else(|| error("invalid_request", "tokens are turned off"))?;
    let subject = Subject {
        name: client.client.id.clone(),
        client: true,
        scope: (!scope.is_empty()).then_some(scope),
        client_id: None,
        family: None,
    };
    let issued = tokens
        .issue_for(&subject, super::binding(&client.client, &fingerprint))
        .map_err(|_| server_error())?;
    tracing::debug!(
        client = client.client.id.as_str(),
        "client credentials token issued"
    );
    Ok(issued)
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// RFC 7636 §4.6: `BASE64URL(SHA256(verifier)) == challenge`.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let hash = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    let computed = URL_SAFE_NO_PAD.encode(hash.as_ref());
    subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into()
}

fn invalid_grant(description: &'static str) -> Refused {
    error("invalid_grant", description).into()
}

/// §4.1.3: a code, once, by the client it was issued to, with the same
/// redirect URI and the PKCE verifier.
async fn authorization_code(
    shared: &Shared,
    client: &Authenticated,
    params: &mut Params,
    client_ip: Option<IpAddr>,
) -> Result<crate::tokens::Issued, Refused> {
    let oauth = shared.oauth.as_ref().ok_or_else(server_error)?;
    let code = params
        .take("code")
        .ok_or_else(|| error("invalid_request", "code is missing"))?;
    super::guesses_locked(shared, client_ip)?;
    let family = FamilyId::new().map_err(|_| server_error())?;
    let now = unix_now();
    let taken = oauth
        .grants
        .take_code(
            &digest(&code),
            &client.client.id,
            client.fingerprint.is_some(),
            &family.handle,
            now,
        )
        .await
        .map_err(|_| unavailable())?;
    let grant = match taken {
        Taken::Fresh(grant) => grant,
        Taken::Spent { family } => {
            // A replay: whoever holds the code now, the tokens issued from
            // it are no longer safe (§4.1.2).
            revoke(oauth, &family, now).await?;
            tracing::warn!(
                client = client.client.id.as_str(),
                "authorization code used twice: the tokens issued from it are revoked"
            );
            return Err(invalid_grant("the code was used already"));
        }
        Taken::Revoked => return Err(invalid_grant("the code has expired")),
        Taken::OtherClient | Taken::Unknown => {
            if let Some(refused) = count_guess(shared, client_ip) {
                return Err(refused);
            }
            return Err(
                error("invalid_grant", "the code is unknown, expired or used")
                    .failing(crate::auth::events::Reason::InvalidToken, None)
                    .into(),
            );
        }
    };
    // The code is spent and its family pending: a check that fails now
    // drops the family (nothing was issued from it).
    let family_grant = FamilyGrant {
        client_id: client.client.id.clone(),
        user: grant.user.clone(),
        binding: grant.binding.clone(),
        scope: grant.scope.clone(),
        confidential: client.fingerprint.is_some(),
    };
    let issued = check_code(client, &grant, params)
        .and_then(|()| issue_for_user(shared, client, &family_grant, &grant.scope, &family));
    let mut issued = match issued {
        Ok(issued) => issued,
        Err(refused) => {
            // Unanswered, the pending family expires with its record.
            let _ = oauth.grants.abandon_family(&family.handle).await;
            return Err(refused);
        }
    };
    let mut refresh = None;
    if client.client.grant_types.contains(&GrantType::RefreshToken) {
        let Ok(token) = family.refresh_token() else {
            let _ = oauth.grants.abandon_family(&family.handle).await;
            return Err(server_error().into());
        };
        refresh = Some((digest(&token), refresh_expiry(oauth, now)));
        issued.refresh_token = Some(token);
    }
    // Revoked meanwhile means the code was replayed while this request
    // was checking it: no tokens for either. A store that does not answer
    // gives none either (the code is spent: the user approves again).
    let activated = oauth
        .grants
        .activate_family(&family.handle, &family_grant, refresh, now)
        .await
        .map_err(|_| unavailable())?;
    if !activated {
        return Err(invalid_grant("the code was used already"));
    }
    Ok(issued)
}

/// Revokes a family after a reuse; a store that does not answer gets a 503
/// (the client retries and the reuse is seen again), never a quiet pass.
async fn revoke(oauth: &super::OAuthState, family: &str, now: u64) -> Result<(), Refused> {
    oauth
        .grants
        .revoke_family(family, now)
        .await
        .map_err(|_| Refused::from(unavailable()))
}

/// §4.1.3 and RFC 7636 §4.6: the redirect URI and the verifier.
fn check_code(client: &Authenticated, grant: &CodeGrant, params: &Params) -> Result<(), Refused> {
    let redirect = params.get("redirect_uri");
    if (grant.redirect_given || redirect.is_some()) && redirect != Some(&grant.redirect_uri) {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    match (&grant.challenge, params.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => {
            if !is_verifier(verifier) || !pkce_matches(verifier, challenge) {
                return Err(invalid_grant("the code_verifier does not match"));
            }
        }
        (Some(_), None) => return Err(invalid_grant("code_verifier is missing")),
        (None, Some(_)) => {
            return Err(invalid_grant(
                "the authorization request sent no code_challenge",
            ));
        }
        // Only a confidential client, authenticated above, may get here:
        // the authorization endpoint requires PKCE of public clients.
        (None, None) if client.fingerprint.is_none() => {
            return Err(invalid_grant("code_verifier is missing"));
        }
        (None, None) => {}
    }
    Ok(())
}

fn refresh_expiry(oauth: &super::OAuthState, now: u64) -> u64 {
    now.saturating_add(oauth.refresh_ttl.as_secs())
}

/// §6: a refresh token, once, replaced by a new one; presenting one that
/// was replaced revokes its family. Every check runs before the swap, so a
/// refused request leaves the presented token working.
async fn refresh(
    shared: &Shared,
    client: &Authenticated,
    params: &Params,
    client_ip: Option<IpAddr>,
) -> Result<crate::tokens::Issued, Refused> {
    let oauth = shared.oauth.as_ref().ok_or_else(server_error)?;
    let token = params
        .get("refresh_token")
        .ok_or_else(|| error("invalid_request", "refresh_token is missing"))?;
    super::guesses_locked(shared, client_ip)?;
    // Only a malformed token counts as a guess: a well-formed one that is
    // unknown or revoked is a stale client (256 random bits are not
    // guessed), and must not lock its address.
    let Some(family) = FamilyId::of_refresh_token(token) else {
        if let Some(refused) = count_guess(shared, client_ip) {
            return Err(refused);
        }
        return Err(error("invalid_grant", "the refresh token is malformed")
            .failing(crate::auth::events::Reason::InvalidToken, None)
            .into());
    };
    let presented = digest(token);
    let now = unix_now();
    // Revoked (here, or at another replica as of the last sync) whatever
    // the store says now.
    if oauth.grants.is_revoked(&family.handle, now) {
        return Err(invalid_grant(
            "the refresh token is unknown, expired or revoked",
        ));
    }
    let peeked = oauth
        .grants
        .peek_refresh(&family.handle, &presented, &client.client.id, now)
        .await
        .map_err(|_| unavailable())?;
    let grant = match peeked {
        Taken::Fresh(grant) => grant,
        Taken::Spent { family } => {
            revoke(oauth, &family, now).await?;
            tracing::warn!(
                client = client.client.id.as_str(),
                "refresh token used twice: its whole family is revoked"
            );
            return Err(invalid_grant("the refresh token was used already"));
        }
        Taken::Revoked | Taken::OtherClient | Taken::Unknown => {
            return Err(invalid_grant(
                "the refresh token is unknown, expired or revoked",
            ));
        }
    };
    // A family a confidential client started cannot be refreshed by the
    // client's id alone (the client was made public since).
    if grant.confidential && client.fingerprint.is_none() {
        return Err(invalid_grant("this grant needs the client's secret"));
    }
    // §6: the scope may narrow, never widen; and the client must still be
    // allowed what it was granted.
    let granted: Vec<&str> = grant.scope.split(' ').filter(|s| !s.is_empty()).collect();
    if granted
        .iter()
        .any(|s| !client.client.scopes.iter().any(|c| c == s))
    {
        return Err(invalid_grant(
            "the client may no longer have the scopes granted",
        ));
    }
    let scope = scopes(params.get("scope"), &granted)?;
    let mut issued = issue_for_user(shared, client, &grant, &scope, &family)?;
    let next = family.refresh_token().map_err(|_| server_error())?;
    // A store that does not answer may have swapped or not: the client's
    // retry with the same token then either works or, if the swap happened,
    // is a reuse that revokes the family. Never two live tokens.
    let swapped = oauth
        .grants
        .commit_refresh(
            &family.handle,
            &presented,
            (digest(&next), refresh_expiry(oauth, now)),
            now,
        )
        .await
        .map_err(|_| unavailable())?;
    if !swapped {
        // Another request rotated this token between the peek and now:
        // the same token used twice.
        revoke(oauth, &family.handle, now).await?;
        tracing::warn!(
            client = client.client.id.as_str(),
            "refresh token used twice at once: its whole family is revoked"
        );
        return Err(invalid_grant("the refresh token was used already"));
    }
    issued.refresh_token = Some(next);
    Ok(issued)
}

/// An access token for the family's user, if the user's password is still
/// the one they approved with.
fn issue_for_user(
    shared: &Shared,
    client: &Authenticated,
    grant: &FamilyGrant,
    scope: &str,
    family: &FamilyId,
) -> Result<crate::tokens::Issued, Refused> {
    let current = shared
        .stored_fingerprint(&grant.user)
        .map(|fingerprint| crate::tokens::password_binding(&fingerprint));
    let same = current.is_some_and(|current| {
        subtle::ConstantTimeEq::ct_eq(current.as_bytes(), grant.binding.as_bytes()).into()
    });
    if !same {
        return Err(invalid_grant(
            "the user is gone or changed their password since",
        ));
    }
    let tokens = crate::auth::login::current_tokens(shared)
        .ok_or_else(|| error("invalid_request", "tokens are turned off"))?;
    let subject = Subject {
        name: grant.user.clone(),
        client: false,
        scope: Some(scope.to_owned()),
        client_id: Some(client.client.id.clone()),
        family: Some(family.handle.clone()),
    };
    let issued = tokens
        .issue_for(&subject, grant.binding.clone())
        .map_err(|_| server_error())?;
    tracing::debug!(
        client = client.client.id.as_str(),
        user = grant.user.as_str(),
        "token issued for an OAuth grant"
    );
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(is_verifier(verifier));
        assert!(pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!is_verifier("short"));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn scopes_narrow_and_never_widen() {
        assert_eq!(scopes(None, &["a", "b"]).unwrap(), "a b");
        assert_eq!(scopes(Some("b a b"), &["a", "b"]).unwrap(), "b a");
        assert!(scopes(Some("c"), &["a", "b"]).is_err());
        assert!(scopes(Some("a  b"), &["a", "b"]).is_err(), "an empty scope");
    }
}
