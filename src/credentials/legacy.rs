//! The hashes `htpasswd` writes, accepted so that an nginx, Apache or
//! Traefik users file works unchanged: bcrypt (`$2y$`, `$2b$`, `$2a$`),
//! Apache MD5 (`$apr1$`) and unsalted SHA-1 (`{SHA}`). Each verifies in
//! constant time and goes through the same cache, lockouts and bound as
//! argon2; check-config and the metrics say who still uses one, so that an
//! operator can see when the migration to argon2id is done.
//!
//! bcrypt comes from the `bcrypt` crate; `{SHA}` is one SHA-1 (ring's
//! legacy digest); Apache MD5 is the md5-crypt construction with its
//! `$apr1$` magic over RustCrypto's `md-5`, written out here because no
//! well-kept crate offers it (its test vectors are Apache's own).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The scheme of a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// argon2id, argon2i or argon2d (what `gatehouse hash-password` makes).
    Argon2,
    /// bcrypt (`htpasswd -B`).
    Bcrypt,
    /// Apache MD5 (`htpasswd -m`, its default).
    Apr1,
    /// Unsalted SHA-1 (`htpasswd -s`).
    Sha1,
}

impl Scheme {
    /// How costly a verification is, to break ties towards the slower
    /// scheme when choosing the dummy.
    pub fn expense(self) -> u8 {
        match self {
            Self::Argon2 => 3,
            Self::Bcrypt => 2,
            Self::Apr1 => 1,
            Self::Sha1 => 0,
        }
    }

    /// The metric label and the name check-config uses.
    pub fn label(self) -> &'static str {
        match self {
            Self::Argon2 => "argon2",
            Self::Bcrypt => "bcrypt",
            Self::Apr1 => "apr1",
            Self::Sha1 => "sha1",
        }
    }
}

/// An htpasswd hash, parsed and checked at load time, so that verifying
/// can only fail on a wrong password.
#[derive(Clone)]
pub enum Legacy {
    /// The whole `$2y$NN$...` string (the crate parses it again).
    Bcrypt(String),
    /// `$apr1$salt$hash`.
    Apr1 {
        /// Up to 8 characters.
        salt: String,
        /// 22 characters of crypt's base64.
        hash: String,
    },
    /// The 20-byte digest.
    Sha1([u8; 20]),
}

/// Why an htpasswd line's hash is refused. Never repeats the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyError {
    /// A bcrypt string that does not parse.
    Bcrypt,
    /// An `$apr1$` string with a bad salt or output.
    Apr1,
    /// A `{SHA}` value that is not 20 bytes of base64.
    Sha1,
}

impl std::fmt::Display for LegacyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bcrypt => "a malformed bcrypt hash (or a cost outside 4 to 14)",
            Self::Apr1 => "a malformed Apache MD5 ($apr1$) hash",
            Self::Sha1 => "a malformed {SHA} hash (expected base64 of 20 bytes)",
        })
    }
}

/// The highest bcrypt cost accepted: 2^14 rounds take about half a second
/// here; beyond it one login could hold a verification slot for minutes.
pub const MAX_BCRYPT_COST: u32 = 14;

/// A bcrypt string checked in full, so that verifying it can only fail on a
/// wrong password: `$2y$NN$` with a cost from 4 to [`MAX_BCRYPT_COST`],
/// then a 22-character salt that decodes to 16 bytes and a 31-character
/// output that decodes to 23.
fn bcrypt_checked(text: &str) -> Option<Legacy> {
    use base64::Engine as _;
    let rest = text.get(4..)?;
    let (cost, encoded) = rest.split_once('$')?;
    cost.parse::<u32>()
        .ok()
        .filter(|c| (4..=MAX_BCRYPT_COST).contains(c))?;
    if encoded.len() != 53 {
        return None;
    }
    let salt = bcrypt::BASE_64.decode(&encoded[..22]).ok()?;
    let hash = bcrypt::BASE_64.decode(&encoded[22..]).ok()?;
    // Canonical encodings only: the unused trailing bits must be zero.
    if salt.len() != 16
        || hash.len() != 23
        || bcrypt::BASE_64.encode(&salt) != encoded[..22]
        || bcrypt::BASE_64.encode(&hash) != encoded[22..]
    {
        return None;
    }
    Some(Legacy::Bcrypt(text.to_owned()))
}

/// crypt(3)'s base64 alphabet.
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl Legacy {
    /// Parses `text` when it is in one of the accepted htpasswd schemes;
    /// `None` when it is not one of them.
    pub fn parse(text: &str) -> Option<Result<Self, LegacyError>> {
        if ["$2y$", "$2b$", "$2a$"].iter().any(|p| text.starts_with(p)) {
            return Some(bcrypt_checked(text).ok_or(LegacyError::Bcrypt));
        }
        if let Some(rest) = text.strip_prefix("$apr1$") {
            // The 22nd character carries 2 bits: one of `./01`, or the
            // hash could never match.
            let parsed = rest.split_once('$').filter(|(salt, hash)| {
                !salt.is_empty()
                    && salt.len() <= 8
                    && salt.bytes().all(|b| CRYPT64.contains(&b))
                    && hash.len() == 22
                    && hash.bytes().all(|b| CRYPT64.contains(&b))
                    && hash
                        .bytes()
                        .last()
                        .is_some_and(|b| CRYPT64[..4].contains(&b))
            });
            return Some(
                parsed
                    .map(|(salt, hash)| Self::Apr1 {
                        salt: salt.to_owned(),
                        hash: hash.to_owned(),
                    })
                    .ok_or(LegacyError::Apr1),
            );
        }
        if let Some(encoded) = text.strip_prefix("{SHA}") {
            let digest = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| <[u8; 20]>::try_from(bytes).ok());
            return Some(digest.map(Self::Sha1).ok_or(LegacyError::Sha1));
        }
        None
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Bcrypt(_) => Scheme::Bcrypt,
            Self::Apr1 { .. } => Scheme::Apr1,
            Self::Sha1(_) => Scheme::Sha1,
        }
    }

    /// The bcrypt cost (0 for the other schemes).
    pub fn cost(&self) -> u32 {
        match self {
            Self::Bcrypt(text) => text.get(4..6).and_then(|c| c.parse().ok()).unwrap_or(0),
            _ => 0,
        }
    }

    /// The text it was parsed from (for the stored-hash fingerprint).
    pub fn text(&self) -> String {
        match self {
            Self::Bcrypt(text) => text.clone(),
            Self::Apr1 { salt, hash } => format!("$apr1${salt}${hash}"),
            Self::Sha1(digest) => format!("{{SHA}}{}", STANDARD.encode(digest)),
        }
    }

    /// Whether `password` matches, in constant time for the comparison.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Bcrypt(text) => bcrypt::verify(password, text).unwrap_or(false),
            Self::Apr1 { salt, hash } => {
                let computed = apr1(password, salt.as_bytes());
                computed.as_bytes().ct_eq(hash.as_bytes()).into()
            }
            Self::Sha1(digest) => {
                let computed =
                    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password);
                computed.as_ref().ct_eq(digest.as_slice()).into()
            }
        }
    }

    /// A hash of a random password in the same scheme and cost: the dummy
    /// unknown users are checked against when this scheme is the common
    /// one.
    pub fn dummy_like(&self, random: &[u8; 32]) -> Option<Self> {
        let password = STANDARD.encode(random);
        match self {
            Self::Bcrypt(text) => {
                let cost = text.parse::<bcrypt::HashParts>().ok()?.get_cost();
                let salt: [u8; 16] = random[..16].try_into().ok()?;
                let parts = bcrypt::hash_with_salt(password.as_bytes(), cost, salt).ok()?;
                Some(Self::Bcrypt(
                    parts.format_for_version(bcrypt::Version::TwoY),
                ))
            }
            Self::Apr1 { .. } => {
                let salt: String = random[16..24]
                    .iter()
                    .map(|b| CRYPT64[usize::from(b % 64)] as char)
                    .collect();
                let hash = apr1(password.as_bytes(), salt.as_bytes());
                Some(Self::Apr1 { salt, hash })
            }
            Self::Sha1(_) => {
                let digest = ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    password.as_bytes(),
                );
                Some(Self::Sha1(digest.as_ref().try_into().ok()?))
            }
        }
    }
}

/// Apache's MD5 crypt (`$apr1$`): md5-crypt with the `$apr1$` magic,
/// returning the 22-character output.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut context = Md5::new()
        .chain_update(password)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let take = left.min(16);
        context.update(&alternate[..take]);
        left -= take;
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut step = Md5::new();
        if round & 1 == 1 {
            step.update(password);
        } else {
            step.update(digest);
        }
        if round % 3 != 0 {
            step.update(salt);
        }
        if round % 7 != 0 {
            step.update(password);
        }
        if round & 1 == 1 {
            step.update(digest);
        } else {
            step.update(password);
        }
        digest = step.finalize();
    }
    let mut out = String::with_capacity(22);
    let mut put = |value: u32, count: usize| {
        let mut value = value;
        for _ in 0..count {
            out.push(CRYPT64[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(
            u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]),
            4,
        );
    }
    put(u32::from(digest[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_apaches_vectors() {
        // From htpasswd (and the htpasswd-verify crate's documentation).
        assert_eq!(apr1(b"password", b"lZL6V/ci"), "eIMz/iKDkbtys/uU7LEK00");
        assert_eq!(apr1(b"password", b"RandSalt"), "PgCXHRrkpSt4cbyC2C6bm/");
        let parsed = Legacy::parse("$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00")
            .unwrap()
            .unwrap();
        assert!(parsed.verify(b"password"));
        assert!(!parsed.verify(b"passwore"));
        assert_eq!(parsed.scheme(), Scheme::Apr1);
    }

    #[test]
    fn sha1_and_bcrypt_verify() {
        // `htpasswd -nbs u password`
        let sha = Legacy::parse("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
            .unwrap()
            .unwrap();
        assert!(sha.verify(b"password"));
        assert!(!sha.verify(b"Password"));
        let bcrypt_hash = bcrypt::hash_with_salt(b"password", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let parsed = Legacy::parse(&bcrypt_hash).unwrap().unwrap();
        assert!(parsed.verify(b"password"));
        assert!(!parsed.verify(b"nope"));
        assert_eq!(parsed.text(), bcrypt_hash);
    }

    #[test]
    fn malformed_hashes_are_refused_and_others_are_not_ours() {
        assert!(matches!(
            Legacy::parse("$2y$10$short"),
            Some(Err(LegacyError::Bcrypt))
        ));
        let good = bcrypt::hash_with_salt(b"x", 5, [1u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        assert!(matches!(Legacy::parse(&good), Some(Ok(_))));
        for cost in ["03", "15", "31", "99"] {
            let other = format!("$2y${cost}{}", &good[6..]);
            assert!(
                matches!(Legacy::parse(&other), Some(Err(LegacyError::Bcrypt))),
                "cost {cost}"
            );
        }
        let bad_base64 = format!("{}!{}", &good[..10], &good[11..]);
        assert!(matches!(
            Legacy::parse(&bad_base64),
            Some(Err(LegacyError::Bcrypt))
        ));
        assert!(
            matches!(
                Legacy::parse("$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK0z"),
                Some(Err(LegacyError::Apr1))
            ),
            "a last character that can never occur"
        );
        assert!(matches!(
            Legacy::parse("$apr1$toolongsalt$eIMz/iKDkbtys/uU7LEK00"),
            Some(Err(LegacyError::Apr1))
        ));
        assert!(matches!(
            Legacy::parse("{SHA}bm90IDIwIGJ5dGVz"),
            Some(Err(LegacyError::Sha1))
        ));
        assert!(Legacy::parse("$argon2id$v=19$...").is_none());
        assert!(Legacy::parse("plaintext").is_none());
    }

    #[test]
    fn dummies_are_in_the_same_scheme_and_cost() {
        let random = [9u8; 32];
        for text in [
            "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00",
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        ] {
            let parsed = Legacy::parse(text).unwrap().unwrap();
            let dummy = parsed.dummy_like(&random).unwrap();
            assert_eq!(dummy.scheme(), parsed.scheme());
            assert!(!dummy.verify(b"password"));
        }
    }
}
