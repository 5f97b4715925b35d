//! Token signing and verifying keys: PKCS#8 PEM files, their public halves
//! as JWKs, and their RFC 7638 thumbprints as key ids.
//!
//! ring parses, generates, signs and verifies (it is already the TLS
//! crypto).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair as _, UnparsedPublicKey,
};

/// The signature algorithms gatehouse signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// Ed25519 (`EdDSA`): the default.
    #[default]
    EdDsa,
    /// ECDSA P-256 with SHA-256 (`ES256`).
    Es256,
}

impl KeyAlgorithm {
    /// Parses `EdDSA` or `ES256` (case-insensitive, `ed25519` accepted).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "eddsa" | "ed25519" => Some(Self::EdDsa),
            "es256" => Some(Self::Es256),
            _ => None,
        }
    }

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }

    /// How long a signature is: both are fixed-size (ES256 as JWS wants
    /// it, `r || s`, 64 bytes).
    pub(crate) fn signature_len(self) -> usize {
        64
    }
}

/// Why a key file cannot be used. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not PEM.
    #[error("not a PEM file")]
    NotPem,
    /// PEM, but not a key of a kind gatehouse signs with.
    #[error(
        "not an Ed25519 or P-256 key in PKCS#8 (`PRIVATE KEY`) or SPKI (`PUBLIC KEY`) PEM; make one with `gatehouse gen-signing-key`"
    )]
    Unsupported,
    /// A public key was given where a private key is needed.
    #[error("a public key cannot sign: give the private key (PKCS#8 PEM)")]
    PublicOnly,
    /// The random number generator failed.
    #[error("cannot generate a key")]
    Random,
}

/// A public key that verifies tokens, with its JWK and key id.
#[derive(Clone)]
pub struct VerifyingKey {
    algorithm: KeyAlgorithm,
    kid: String,
    /// 32 bytes (Ed25519) or a 65-byte uncompressed P-256 point.
    public: Vec<u8>,
    jwk: serde_json::Value,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// From a raw public key: 32 bytes (Ed25519) or a 65-byte uncompressed
    /// P-256 point.
    fn from_raw(algorithm: KeyAlgorithm, public: &[u8]) -> Result<Self, KeyError> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        // RFC 7638: the required members, in lexicographic order, no spaces.
        let (thumbprint_input, mut jwk) = match algorithm {
            KeyAlgorithm::EdDsa => {
                if public.len() != 32 {
                    return Err(KeyError::Unsupported);
                }
                let x = b64(public);
                (
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                )
            }
            KeyAlgorithm::Es256 => {
                if public.len() != 65 || public[0] != 0x04 {
                    return Err(KeyError::Unsupported);
                }
                let (x, y) = (b64(&public[1..33]), b64(&public[33..65]));
                (
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                )
            }
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, thumbprint_input.as_bytes());
        let kid = b64(digest.as_ref());
        if let Some(object) = jwk.as_object_mut() {
            object.insert("kid".into(), kid.clone().into());
            object.insert("alg".into(), algorithm.name().into());
            object.insert("use".into(), "sig".into());
        }
        Ok(Self {
            algorithm,
            kid,
            public: public.to_vec(),
            jwk,
        })
    }

    /// From a PEM file's text: a public key (SPKI, `PUBLIC KEY`), or a
    /// private key (PKCS#8) whose public half is taken.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let pem = pem::parse(text).map_err(|_| KeyError::NotPem)?;
        match pem.tag() {
            "PUBLIC KEY" => {
                let der = pem.contents();
                // The fixed SPKI prefixes for the two key types.
                const ED25519: &[u8] = &[
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ];
                const P256: &[u8] = &[
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ];
                if let Some(raw) = der.strip_prefix(ED25519) {
                    Self::from_raw(KeyAlgorithm::EdDsa, raw)
                } else if let Some(raw) = der.strip_prefix(P256) {
                    Self::from_raw(KeyAlgorithm::Es256, raw)
                } else {
                    Err(KeyError::Unsupported)
                }
            }
            "PRIVATE KEY" => SigningKey::from_pem(text).map(|key| key.verifying),
            _ => Err(KeyError::Unsupported),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_raw_for_tests(algorithm: KeyAlgorithm, public: &[u8]) -> Self {
        Self::from_raw(algorithm, public).expect("a valid raw key")
    }

    /// The key id: the RFC 7638 SHA-256 thumbprint, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key verifies, and no other.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The public key as a JWK (`kty`, `crv`, `x`[, `y`], `kid`, `alg`, `use`).
    pub fn jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// Whether `signature` is this key's over `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let algorithm: &'static dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            KeyAlgorithm::EdDsa => &ED25519,
            KeyAlgorithm::Es256 => &ECDSA_P256_SHA256_FIXED,
        };
        UnparsedPublicKey::new(algorithm, &self.public)
            .verify(message, signature)
            .is_ok()
    }
}

/// ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958, the public key
/// included), which OpenSSL-based tools (Python's `cryptography`, `openssl
/// pkey`) refuse; v1 (RFC 8410) is what `openssl genpkey` writes and what
/// every tool reads. Both hold the same 32-byte seed.
fn ed25519_v1(v2: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE (any length), version 1, the Ed25519 OID, the seed.
    const V2_BODY: &[u8] = &[
        0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    const V1_PREFIX: &[u8] = &[
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    if v2.first() != Some(&0x30) {
        return None;
    }
    let seed = v2.get(2..)?.strip_prefix(V2_BODY)?.get(..32)?;
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    Some(v1)
}

/// A private key that signs tokens; deliberately not `Debug` beyond its id.
pub struct SigningKey {
    pair: KeyPair,
    verifying: VerifyingKey,
}

enum KeyPair {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair, SystemRandom),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.verifying.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// From a PKCS#8 PEM private key (Ed25519 or P-256).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let pem = pem::parse(text).map_err(|_| KeyError::NotPem)?;
        match pem.tag() {
            "PRIVATE KEY" => Self::from_pkcs8(pem.contents()),
            "PUBLIC KEY" => Err(KeyError::PublicOnly),
            _ => Err(KeyError::Unsupported),
        }
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let verifying =
                VerifyingKey::from_raw(KeyAlgorithm::EdDsa, pair.public_key().as_ref())?;
            return Ok(Self {
                pair: KeyPair::Ed25519(pair),
                verifying,
            });
        }
        let rng = SystemRandom::new();
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
            let verifying =
                VerifyingKey::from_raw(KeyAlgorithm::Es256, pair.public_key().as_ref())?;
            return Ok(Self {
                pair: KeyPair::Es256(pair, rng),
                verifying,
            });
        }
        Err(KeyError::Unsupported)
    }

    /// A new random key, and its PKCS#8 PEM (to write to a 0600 file).
    pub fn generate(
        algorithm: KeyAlgorithm,
    ) -> Result<(Self, zeroize::Zeroizing<String>), KeyError> {
        let rng = SystemRandom::new();
        let der = match algorithm {
            KeyAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
            KeyAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
        }
        .map_err(|_| KeyError::Random)?;
        let der = match algorithm {
            KeyAlgorithm::EdDsa => ed25519_v1(der.as_ref()).ok_or(KeyError::Unsupported)?,
            KeyAlgorithm::Es256 => der.as_ref().to_vec(),
        };
        let der = zeroize::Zeroizing::new(der);
        let key = Self::from_pkcs8(&der)?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()));
        Ok((key, zeroize::Zeroizing::new(pem)))
    }

    /// The public half.
    pub fn verifying(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            KeyPair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            KeyPair::Es256(pair, rng) => pair
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Random),
        }
    }
}
