//! Bearer tokens: JWTs that gatehouse issues at its login path and
//! verifies in the auth layer, and API keys ([`api_keys`]).
//!
//! Tokens are encoded, decoded and validated by the `jsonwebtoken` crate;
//! the Ed25519 (or ES256) signatures are ring's, through a crypto provider
//! of our own (`ring_provider`), and ring parses and generates the keys
//! ([`keys`]). Every key pins its algorithm: a token whose header names
//! another algorithm, no `kid`, or an unknown `kid` is refused before any
//! signature check, so `alg: none` and HS256-signed-with-the-public-key
//! cannot work. A token also carries a short digest of its user's stored
//! password hash (`pwh`), so removing the user or changing the password
//! revokes it.

pub mod api_keys;
mod cache;
pub mod keys;
mod ring_provider;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

pub use api_keys::{ApiKeyError, ApiKeys, NewApiKey};
pub(crate) use cache::TokenCache;
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
}

/// A token just issued, as the login endpoint returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Why a token is refused. The client only ever hears `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT whose header gatehouse accepts (no `kid`, unknown `kid`,
    /// another algorithm than the key's).
    #[error("token header refused")]
    Header,
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

impl Tokens {
    /// Signs with `signing`; also accepts tokens from `previous` keys.
    pub fn new(policy: TokenPolicy, signing: SigningKey, previous: Vec<VerifyingKey>) -> Self {
        ring_provider::install();
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
            exp: now + ttl,
            jti: URL_SAFE_NO_PAD.encode(jti),
            pwh: binding,
        };
        let key = self.signing.verifying();
        let mut header = Header::new(key.algorithm().jwt());
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, self.signing.encoding())
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(Issued {
            access_token: token,
            token_type: "Bearer",
            expires_in: ttl,
        })
    }

    /// Checks a token: its header (a known `kid`, that key's algorithm),
    /// its signature, then `iss`, `aud`, `exp` and `nbf` (with the leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Header)?;
        let kid = header.kid.as_deref().ok_or(TokenError::Header)?;
        let key = self
            .verifying
            .iter()
            .find(|k| k.kid() == kid)
            .ok_or(TokenError::Header)?;
        if header.alg != key.algorithm().jwt() {
            return Err(TokenError::Header);
        }
        let mut validation = Validation::new(key.algorithm().jwt());
        validation.set_issuer(&[&self.policy.issuer]);
        validation.set_audience(&[&self.policy.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.policy.leeway.as_secs();
        jsonwebtoken::decode::<Claims>(token, key.decoding(), &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    // Checked after the signature, which therefore held.
                    ErrorKind::ExpiredSignature
                    | ErrorKind::ImmatureSignature
                    | ErrorKind::InvalidAudience
                    | ErrorKind::InvalidIssuer
                    | ErrorKind::MissingRequiredClaim(_) => TokenError::Signed(e.kind_name()),
                    _ => TokenError::Invalid(e.kind_name()),
                }
            })
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
        warn_if_readable_by_others(path);
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

/// Warns when a key file can be read by its group or by everyone.
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(key = %path.display(), "a token key file is readable by its group or by everyone: `chmod 600` it");
        }
    }
}

/// The name of a `jsonwebtoken` error's kind, for debug logs (no token
/// text).
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::ExpiredSignature => "expired".into(),
            ErrorKind::ImmatureSignature => "not yet valid".into(),
            ErrorKind::InvalidSignature => "bad signature".into(),
            ErrorKind::InvalidAudience => "wrong audience".into(),
            ErrorKind::InvalidIssuer => "wrong issuer".into(),
            ErrorKind::MissingRequiredClaim(claim) => format!("missing {claim}"),
            _ => "malformed".into(),
        }
    }
}

#[cfg(test)]
mod tests;
