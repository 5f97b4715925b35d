//! jsonwebtoken's signatures computed by ring, the crypto library rustls
//! already uses here: EdDSA (Ed25519) and ES256, nothing else. With it,
//! jsonwebtoken needs neither of its own backends (RustCrypto's would add
//! about fifty crates, RSA among them; aws-lc-rs a second C crypto
//! library).

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, UnparsedPublicKey,
};

enum RingSigner {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair, SystemRandom),
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        match self {
            Self::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Self::Es256(pair, rng) => pair
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::EdDSA,
            Self::Es256(..) => Algorithm::ES256,
        }
    }
}

struct RingVerifier {
    algorithm: Algorithm,
    /// The raw public key: 32 bytes, or a 65-byte uncompressed point.
    public: Vec<u8>,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), signature::Error> {
        let key = match self.algorithm {
            Algorithm::EdDSA => UnparsedPublicKey::new(&ED25519, &self.public),
            _ => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public),
        };
        key.verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let der = key.as_bytes();
    match algorithm {
        Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|pair| Box::new(RingSigner::Ed25519(pair)) as Box<dyn JwtSigner>)
            .map_err(|_| ErrorKind::InvalidEddsaKey.into()),
        Algorithm::ES256 => {
            let rng = SystemRandom::new();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                .map(|pair| Box::new(RingSigner::Es256(pair, rng)) as Box<dyn JwtSigner>)
                .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    match algorithm {
        Algorithm::EdDSA | Algorithm::ES256 => Ok(Box::new(RingVerifier {
            algorithm: *algorithm,
            public: key.try_get_as_bytes()?.to_vec(),
        })),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes ring jsonwebtoken's process-wide provider, unless something else
/// in the process installed one first (a library user's own choice, which
/// then signs and verifies gatehouse's keys too).
pub(crate) fn install() {
    let _ = PROVIDER.install_default();
}
