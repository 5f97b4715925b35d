//! Bearer tokens: JWTs that gatehouse issues at its login path and
//! verifies in the auth layer, and API keys ([`api_keys`]).
//!
//! Tokens are compact JWS (RFC 7515): `base64url(header) "."
//! base64url(claims) "." base64url(signature)`, signed and verified by ring
//! with Ed25519 (or ES256), the crypto library rustls already uses. No JWT
//! crate: jsonwebtoken, the obvious one, routes signatures through a
//! process-wide crypto provider, which a library must not claim inside its
//! host's process, and its own backends would add RSA and ~45 crates. The
//! form is small; what matters is checked here in one place, in order:
//! three canonical base64url parts, a header with a known `kid` and that
//! key's `alg` (and no `crit`), the signature, then the claims. Every key pins its algorithm: a token whose header names
//! another algorithm, no `kid`, or an unknown `kid` is refused before any
//! signature check, so `alg: none` and HS256-signed-with-the-public-key
//! cannot work. A token also carries a short digest of its user's stored
//! password hash (`pwh`), so removing the user or changing the password
//! revokes it.

pub mod api_keys;
mod cache;
pub mod keys;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

pub use api_keys::{ApiKeyError, ApiKeys, NewApiKey};
pub(crate) use cache::{Cached, TokenCache};
pub use keys::{KeyAlgorithm, KeyError, SigningKey, VerifyingKey};

/// What tokens say and how long they last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `iss`, set and required.
    pub issuer: String,
    /// `aud`, set and required.
    pub audience: String,
    /// How long a token is valid (`exp - iat`).
    pub ttl: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuer: "gatehouse".into(),
            audience: "gatehouse".into(),
            ttl: Duration::from_secs(15 * 60),
            leeway: Duration::from_secs(30),
        }
    }
}

/// The claims of a gatehouse token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The username.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires (Unix seconds).
    pub exp: u64,
    /// A unique id.
    pub jti: String,
    /// A digest of the user's stored password hash when the token was
    /// issued: the token dies with the user or the password.
    pub pwh: String,
    /// OAuth scopes, space-separated (RFC 8693 §4.2), when granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `client` when `sub` is an OAuth client acting for itself (client
    /// credentials), not a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
    /// The OAuth client a user's token was issued to (RFC 9068 §2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The grant family (one approval, its refresh tokens and their access
    /// tokens): revoking the family revokes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

/// Who a token is for: a user, or an OAuth client acting for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The username or client id.
    pub name: String,
    /// Whether `name` is a client.
    pub client: bool,
    /// The scopes granted, space-separated.
    pub scope: Option<String>,
    /// The OAuth client a user's token is issued to.
    pub client_id: Option<String>,
    /// The grant family (see [`Claims::fam`]).
    pub family: Option<String>,
}

impl Subject {
    /// A user, with no OAuth grant behind the token.
    pub fn user(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            client: false,
            scope: None,
            client_id: None,
            family: None,
        }
    }
}

/// The credential-store name of an OAuth client's secret: no user can be
/// called this (a NUL never passes the user-id checks), so clients and
/// users share the brute-force pipeline without sharing names.
pub fn client_key(id: &str) -> String {
    format!("{CLIENT_PREFIX}{id}")
}

/// See [`client_key`].
pub const CLIENT_PREFIX: &str = "\0client:";

/// A token just issued, as the login endpoint returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The scopes granted (OAuth), when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// An OAuth refresh token, when the grant gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Why a token is refused. The client only ever hears `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWS whose header gatehouse accepts: not three base64url
    /// parts, no `kid`, another algorithm than the key's, `crit`.
    #[error("token header refused")]
    Header,
    /// A `kid` no key of ours has: signed by a key removed since, or by
    /// an ephemeral key before a restart, or by someone else.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature did not check out, or the token is malformed.
    #[error("token refused: {0}")]
    Invalid(String),
    /// Signed by one of our keys, but refused on a claim (expired, not yet
    /// valid, another issuer or audience, a claim missing).
    #[error("token refused: {0}")]
    Signed(String),
    /// Signing failed.
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

/// Signs and verifies tokens: one signing key, and every key (the signing
/// key's public half first, then previous keys) that verifies.
pub struct Tokens {
    policy: TokenPolicy,
    signing: SigningKey,
    verifying: Vec<VerifyingKey>,
    ephemeral: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("policy", &self.policy)
            .field("signing", &self.signing)
            .field("verifying", &self.verifying)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `pwh` claim for a stored-hash fingerprint: 16 bytes of a
/// domain-separated SHA-256, base64url. It reveals nothing usable about the
/// hash, and it changes whenever the hash does.
pub fn password_binding(stored_fingerprint: &[u8; 32]) -> String {
    let mut input = b"gatehouse token binding\0".to_vec();
    input.extend_from_slice(stored_fingerprint);
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

/// The `pwh` claim of a client's token: bound to its secret's hash and to
/// what it may do, so a reload that changes the secret, or narrows the
/// client's scopes or grants, revokes tokens issued before.
pub fn client_binding(stored_fingerprint: &[u8; 32], scopes: &[String], grants: &[&str]) -> String {
    let mut input = stored_fingerprint.to_vec();
    input.push(0);
    input.extend_from_slice(scopes.join(" ").as_bytes());
    input.push(0);
    input.extend_from_slice(grants.join(" ").as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    password_binding(&fingerprint)
}

impl Tokens {
    /// Signs with `signing`; also accepts tokens from `previous` keys.
    pub fn new(policy: TokenPolicy, signing: SigningKey, previous: Vec<VerifyingKey>) -> Self {
        let mut verifying = vec![signing.verifying().clone()];
        for key in previous {
            if verifying.iter().all(|k| k.kid() != key.kid()) {
                verifying.push(key);
            }
        }
        Self {
            policy,
            signing,
            verifying,
            ephemeral: false,
        }
    }

    /// Marks the signing key as generated at start-up (a reload keeps it).
    pub fn with_ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    /// Whether the signing key was generated at start-up.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The policy.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// A new token for `user`, bound to their stored hash.
    pub fn issue(&self, user: &str, binding: String) -> Result<Issued, TokenError> {
        self.issue_for(&Subject::user(user), binding)
    }

    /// A new token for `subject`, bound to its stored secret's digest.
    pub fn issue_for(&self, subject: &Subject, binding: String) -> Result<Issued, TokenError> {
        let user = subject.name.as_str();
        let now = unix_now();
        let ttl = self.policy.ttl.as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| TokenError::Sign(e.to_string()))?;
        let claims = Claims {
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            sub: user.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: URL_SAFE_NO_PAD.encode(jti),
            pwh: binding,
            scope: subject.scope.clone(),
            sub_type: subject.client.then(|| "client".to_owned()),
            client_id: subject.client_id.clone(),
            fam: subject.family.clone(),
        };
        let key = self.signing.verifying();
        let header = serde_json::json!({
            "alg": key.algorithm().name(),
            "typ": "JWT",
            "kid": key.kid(),
        });
        let claims = serde_json::to_vec(&claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = self
            .signing
            .sign(token.as_bytes())
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(Issued {
            access_token: token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: subject.scope.clone(),
            refresh_token: None,
        })
    }

    /// Checks a token, in this order: three canonical base64url parts; a
    /// header naming a key of ours (`kid`) and that key's algorithm, with
    /// no `crit`; the signature; then, the signature being ours, the
    /// claims: `iss`, `aud`, `exp` and `nbf` (with the leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Header);
        };
        // What the signature covers: `header "." payload`.
        let signed = &token.as_bytes()[..header_part.len() + 1 + payload.len()];
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Header);
        let header: Header =
            serde_json::from_slice(&decode(header_part)?).map_err(|_| TokenError::Header)?;
        if header.crit.is_some() {
            return Err(TokenError::Header);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::Header)?;
        let key = self
            .verifying
            .iter()
            .find(|k| k.kid() == kid)
            .ok_or(TokenError::UnknownKey)?;
        if header.alg != key.algorithm().name() {
            return Err(TokenError::Header);
        }
        let signature = decode(signature)?;
        if signature.len() != key.algorithm().signature_len() || !key.verifies(signed, &signature) {
            return Err(TokenError::Invalid("bad signature".into()));
        }
        // The signature is ours: whatever is wrong from here on is a token
        // we issued (or a key we hold signed), not a guess.
        let claims: Claims = serde_json::from_slice(
            &decode(payload).map_err(|_| TokenError::Signed("claims not base64url".into()))?,
        )
        .map_err(|_| TokenError::Signed("claims malformed".into()))?;
        let leeway = self.policy.leeway.as_secs();
        if claims.iss != self.policy.issuer {
            return Err(TokenError::Signed("wrong issuer".into()));
        }
        if claims.aud != self.policy.audience {
            return Err(TokenError::Signed("wrong audience".into()));
        }
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Signed("expired".into()));
        }
        if now.saturating_add(leeway) < claims.nbf {
            return Err(TokenError::Signed("not yet valid".into()));
        }
        Ok(claims)
    }

    /// The JWK set of every verifying key, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> String {
        let keys: Vec<&serde_json::Value> = self.verifying.iter().map(VerifyingKey::jwk).collect();
        serde_json::json!({ "keys": keys }).to_string()
    }
}

/// Builds the tokens `settings` describe: reads the signing key (or makes
/// an ephemeral one) and the previous keys. Errors name the config file,
/// the key and the problem, never key material.
pub fn load(
    settings: &crate::config::TokenSettings,
    config: &std::path::Path,
) -> Result<Tokens, crate::config::ConfigError> {
    use crate::config::{ConfigError, SigningKeySource};
    let read = |path: &std::path::Path, key: &str| {
        crate::key_file::warn_if_readable_by_others(path, "a token key file");
        std::fs::read_to_string(path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| {
                ConfigError::invalid(config, key, format!("cannot read {}: {e}", path.display()))
            })
    };
    let (signing, ephemeral) = match &settings.signing_key {
        SigningKeySource::File(path) => {
            let text = read(path, "[tokens] signing_key")?;
            let key = SigningKey::from_pem(&text).map_err(|e| {
                ConfigError::invalid(
                    config,
                    "[tokens] signing_key",
                    format!("{}: {e}", path.display()),
                )
            })?;
            (key, false)
        }
        SigningKeySource::Ephemeral(algorithm) => {
            let (key, _) = SigningKey::generate(*algorithm).map_err(|e| {
                ConfigError::invalid(config, "[tokens] ephemeral_key", e.to_string())
            })?;
            (key, true)
        }
    };
    let mut previous = Vec::new();
    for path in &settings.previous_keys {
        let text = read(path, "[tokens] previous_keys")?;
        previous.push(VerifyingKey::from_pem(&text).map_err(|e| {
            ConfigError::invalid(
                config,
                "[tokens] previous_keys",
                format!("{}: {e}", path.display()),
            )
        })?);
    }
    Ok(Tokens::new(settings.policy.clone(), signing, previous).with_ephemeral(ephemeral))
}

/// A JOSE header as gatehouse reads it; other members are ignored, except
/// `crit`, which names extensions the reader must understand (none here).
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests;
