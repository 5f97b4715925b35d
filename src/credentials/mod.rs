//! Users and their argon2 hashes, and verification that never blocks the
//! async runtime.
//!
//! The [`CredentialStore`] is immutable: it is built once from a validated
//! config and shared behind an `Arc`. The [`Verifier`] runs argon2 on tokio's
//! blocking pool under a semaphore, so at most a fixed number of hashes are
//! computed at once however many requests arrive.

use std::collections::HashMap;
use std::sync::Arc;

use crate::secret::Password;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

mod verifier;

pub mod legacy;

pub use legacy::{Legacy, Scheme};
pub use verifier::{
    DEFAULT_MAX_WAIT, DEFAULT_QUEUE, Verification, Verifier, VerifierBuilder, VerifyError,
    available_cores,
};

/// Why a string is not a usable argon2 hash. The messages never contain the
/// hash itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not a PHC string at all (`$alg$v=..$params$salt$hash`).
    #[error("not a valid argon2 PHC string ({0}); make one with `gatehouse hash-password`")]
    Malformed(String),
    /// A PHC string for another known algorithm (scrypt, pbkdf2, …).
    #[error("algorithm `{0}` is not argon2 (expected argon2id, argon2i or argon2d)")]
    NotArgon2(&'static str),
    /// A `$…$` string naming no algorithm gatehouse knows. The name is not
    /// repeated: it may be a password that happens to start with `$`.
    #[error(
        "not a hash gatehouse knows (expected an argon2id PHC string): put the output of `gatehouse hash-password` here"
    )]
    UnknownScheme,
    /// An argon2 PHC string whose parameters, salt or output are unusable.
    #[error("argon2 PHC string has invalid parameters ({0})")]
    InvalidParams(String),
    /// A hash in a scheme htpasswd or crypt(3) uses (bcrypt, apr1, …).
    #[error(
        "a {0} hash, which gatehouse does not verify (it takes argon2, and bcrypt $2y$/$2b$/$2a$, $apr1$ and {{SHA}} from htpasswd); have the user's password rehashed with `gatehouse hash-password`"
    )]
    OtherScheme(&'static str),
    /// An htpasswd hash (bcrypt, apr1, `{SHA}`) that does not parse.
    #[error("{0}")]
    MalformedLegacy(legacy::LegacyError),
    /// Not a hash at all: most likely the password itself. (The message
    /// never repeats it.)
    #[error(
        "looks like a plaintext password, not a hash: put the output of `gatehouse hash-password` here (and change that password if this file was shared)"
    )]
    Plaintext,
}

/// Names the scheme of a hash that is not a PHC argon2 string, from its
/// prefix; `None` for an unknown `$…$` prefix.
fn other_scheme(text: &str) -> Option<HashError> {
    const SCHEMES: [(&str, &str); 19] = [
        ("$2a$", "bcrypt"),
        ("$2b$", "bcrypt"),
        ("$2x$", "bcrypt $2x$ (the old buggy variant)"),
        ("$2y$", "bcrypt"),
        ("$apr1$", "Apache MD5 (apr1)"),
        ("$1$", "MD5-crypt"),
        ("$5$", "SHA-256-crypt"),
        ("$6$", "SHA-512-crypt"),
        ("$y$", "yescrypt"),
        ("{SHA}", "SHA-1 ({SHA})"),
        ("{SSHA}", "salted SHA-1 ({SSHA})"),
        ("{MD5}", "MD5 ({MD5})"),
        ("{SMD5}", "salted MD5 ({SMD5})"),
        ("{CRYPT}", "crypt ({CRYPT})"),
        ("{SHA256}", "SHA-256 ({SHA256})"),
        ("{SSHA256}", "salted SHA-256 ({SSHA256})"),
        ("{SHA512}", "SHA-512 ({SHA512})"),
        ("{SSHA512}", "salted SHA-512 ({SSHA512})"),
        ("pbkdf2_sha256$", "Django PBKDF2"),
    ];
    if let Some((_, name)) = SCHEMES.iter().find(|(prefix, _)| text.starts_with(prefix)) {
        return Some(HashError::OtherScheme(name));
    }
    // crypt(3) DES: 13 characters of crypt's alphabet (`htpasswd -d`).
    if text.len() == 13
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Some(HashError::OtherScheme(
            "crypt(3) DES (or a 13-character plaintext password)",
        ));
    }
    if !text.starts_with('$') {
        return Some(HashError::Plaintext);
    }
    None
}

/// A stored password hash: argon2 (PHC), or one of the htpasswd schemes
/// gatehouse accepts for migration ([`Legacy`]).
#[derive(Clone)]
pub enum UserHash {
    /// argon2id, argon2i or argon2d (boxed: a PHC string parses large).
    Argon2(Box<PasswordHash>),
    /// bcrypt, Apache MD5 or `{SHA}`.
    Legacy(Legacy),
}

impl From<PasswordHash> for UserHash {
    fn from(hash: PasswordHash) -> Self {
        Self::Argon2(Box::new(hash))
    }
}

impl UserHash {
    /// Its scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Argon2(_) => Scheme::Argon2,
            Self::Legacy(legacy) => legacy.scheme(),
        }
    }
}

/// Parses a users-file or `[users]` hash: an argon2 PHC string, or a
/// bcrypt (`$2y$`, `$2b$`, `$2a$`), Apache MD5 (`$apr1$`) or `{SHA}` hash
/// as `htpasswd` writes them. Anything else (plaintext, crypt(3) DES, other
/// schemes) is refused with a message that names the scheme, never the
/// value.
pub fn parse_user_hash(text: &str) -> Result<UserHash, HashError> {
    match Legacy::parse(text) {
        Some(Ok(legacy)) => Ok(UserHash::Legacy(legacy)),
        Some(Err(error)) => Err(HashError::MalformedLegacy(error)),
        None => parse_phc(text).map(UserHash::from),
    }
}

/// Parses and checks an argon2 PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`),
/// so that verification later cannot fail for a reason other than a wrong
/// password.
pub fn parse_phc(text: &str) -> Result<PasswordHash, HashError> {
    if let Some(error) = other_scheme(text) {
        return Err(error);
    }
    let hash = PasswordHash::new(text).map_err(|e| HashError::Malformed(e.to_string()))?;
    let algorithm = hash.algorithm.as_str();
    if Algorithm::new(algorithm).is_err() {
        const KNOWN: [&str; 6] = [
            "scrypt",
            "pbkdf2",
            "pbkdf2-sha256",
            "pbkdf2-sha512",
            "balloon",
            "bcrypt",
        ];
        return Err(KNOWN
            .iter()
            .find(|known| **known == algorithm)
            .map_or(HashError::UnknownScheme, |&known| {
                HashError::NotArgon2(known)
            }));
    }
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| HashError::InvalidParams(e.to_string()))?;
    }
    Params::try_from(&hash).map_err(|e| HashError::InvalidParams(e.to_string()))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(HashError::InvalidParams(
            "salt or hash output missing".into(),
        ));
    }
    Ok(hash)
}

/// The OWASP-recommended argon2id parameters: 19 MiB, 2 passes, 1 lane.
pub fn default_params() -> Params {
    Params::DEFAULT
}

/// Hashes a password with argon2id, a random salt and `params`, returning the
/// PHC string to put in a config file.
pub fn hash_password(password: &Password, params: Params) -> Result<String, HashError> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    argon2
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::InvalidParams(e.to_string()))
}

/// Whether `params` are at least as strong as OWASP's minimum for argon2id
/// (19 MiB with 2 passes); weaker hashes are accepted but warned about.
pub fn is_weak(hash: &PasswordHash) -> bool {
    Params::try_from(hash).map_or(true, |p| params_are_weak(&p))
}

/// Whether `params` are below OWASP's minimum for argon2id (19 MiB with 2
/// passes).
pub fn params_are_weak(params: &Params) -> bool {
    params.m_cost() < Params::DEFAULT_M_COST || params.t_cost() < Params::DEFAULT_T_COST
}

/// A parsed hash and its PHC text; deliberately not `Debug`, so a hash never
/// reaches a log.
struct StoredHash {
    parsed: UserHash,
    /// SHA-256 of the PHC string: part of the verified-credentials cache
    /// key, so a changed hash can never match an old entry. 32 bytes rather
    /// than the ~100-byte string keeps the per-request HMAC to two blocks.
    fingerprint: [u8; 32],
    /// The `pwh` claim a token for this user carries
    /// (`tokens::password_binding` of the fingerprint), made once here
    /// rather than hashed again for every bearer request.
    binding: Box<str>,
}

/// Users and their parsed argon2 hashes, plus a dummy hash for unknown users.
///
/// The users are hashed with foldhash, which is fast but not built to
/// resist collisions an attacker crafts: build a store from names you
/// chose (a config, an admin's list), not from names anyone can register.
pub struct CredentialStore {
    /// Names are `Arc<str>` so an authenticated request can share the name
    /// instead of copying it.
    users: HashMap<Arc<str>, StoredHash, foldhash::fast::RandomState>,
    /// Verified against when the username is unknown, so that an unknown user
    /// costs the same work as a known one (of the most common scheme).
    dummy: UserHash,
    /// The dummy for unknown OAuth clients: argon2 always, since client
    /// secrets are argon2 only (a fast legacy dummy would tell unknown
    /// client ids from known ones).
    client_dummy: UserHash,
    client_dummy_fingerprint: [u8; 32],
    /// The dummy's fingerprint: unknown users are keyed with it wherever
    /// known users are keyed with theirs (request coalescing), so that the
    /// two take the same path.
    dummy_fingerprint: [u8; 32],
}

impl CredentialStore {
    /// Loads a store from an htpasswd-style users file: one
    /// `name:$argon2id$...` line per user (as `gatehouse hash-password`
    /// prints the hash), `#` comments and blank lines allowed. The error
    /// names the file, the line and the problem (duplicate users included).
    pub fn from_users_file(
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, crate::config::ConfigError> {
        let path = path.as_ref();
        let mut users = Vec::new();
        crate::config::users::add_from_file(path, &mut users, path)?;
        Self::new(users)
            .map_err(|e| crate::config::ConfigError::invalid(path, "users", e.to_string()))
    }

    /// Builds a store from already-validated `(username, hash)` pairs.
    ///
    /// The dummy hash uses the parameters most users have (ties go to the
    /// costlier set), so that a miss costs what a typical hit costs.
    pub fn new<H: Into<UserHash>>(
        users: impl IntoIterator<Item = (String, H)>,
    ) -> Result<Self, HashError> {
        let users: HashMap<Arc<str>, StoredHash, foldhash::fast::RandomState> = users
            .into_iter()
            .map(|(name, hash)| {
                let hash = hash.into();
                let fingerprint = fingerprint(&hash);
                let binding = crate::tokens::password_binding(&fingerprint).into();
                (
                    Arc::from(name),
                    StoredHash {
                        parsed: hash,
                        fingerprint,
                        binding,
                    },
                )
            })
            .collect();
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| HashError::InvalidParams(e.to_string()))?;
        let argon2 = users.values().filter_map(|h| match &h.parsed {
            UserHash::Argon2(hash) => Some(&**hash),
            UserHash::Legacy(_) => None,
        });
        let params = typical_params(argon2);
        let dummy_text = hash_password(&Password::new(crate::hex::encode(&random)), params)?;
        let client_dummy = UserHash::from(parse_phc(&dummy_text)?);
        // The dummy is in the most common scheme (ties go to the costlier
        // scheme), and for bcrypt at the most common cost (ties go to the
        // higher), so that a miss costs what most hits cost.
        let mut counts: HashMap<(Scheme, u32), usize> = HashMap::new();
        for stored in users.values() {
            let cost = match &stored.parsed {
                UserHash::Legacy(legacy) => legacy.cost(),
                UserHash::Argon2(_) => 0,
            };
            *counts.entry((stored.parsed.scheme(), cost)).or_default() += 1;
        }
        let mut per_scheme: HashMap<Scheme, usize> = HashMap::new();
        for ((scheme, _), n) in &counts {
            *per_scheme.entry(*scheme).or_default() += n;
        }
        let common = per_scheme
            .iter()
            .max_by_key(|(scheme, n)| (**n, scheme.expense()))
            .map(|(scheme, _)| *scheme)
            .unwrap_or(Scheme::Argon2);
        let common_cost = counts
            .iter()
            .filter(|((scheme, _), _)| *scheme == common)
            .max_by_key(|((_, cost), n)| (**n, *cost))
            .map(|((_, cost), _)| *cost)
            .unwrap_or(0);
        let legacy_dummy = users.values().find_map(|stored| match &stored.parsed {
            UserHash::Legacy(legacy)
                if legacy.scheme() == common && legacy.cost() == common_cost =>
            {
                legacy.dummy_like(&random)
            }
            _ => None,
        });
        let dummy = match legacy_dummy {
            Some(legacy) => UserHash::Legacy(legacy),
            None => client_dummy.clone(),
        };
        let dummy_fingerprint = fingerprint(&dummy);
        let client_dummy_fingerprint = fingerprint(&client_dummy);
        Ok(Self {
            users,
            dummy,
            dummy_fingerprint,
            client_dummy,
            client_dummy_fingerprint,
        })
    }

    /// How many users use each scheme.
    pub fn scheme_counts(&self) -> std::collections::BTreeMap<Scheme, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for stored in self.users.values() {
            *counts.entry(stored.parsed.scheme()).or_default() += 1;
        }
        counts
    }

    /// The users whose hashes are in `scheme`, sorted.
    pub fn users_with_scheme(&self, scheme: Scheme) -> Vec<&str> {
        let mut users: Vec<&str> = self
            .users
            .iter()
            .filter(|(_, h)| h.parsed.scheme() == scheme)
            .map(|(name, _)| &**name)
            .collect();
        users.sort_unstable();
        users
    }

    /// The scheme of `username`'s hash.
    pub fn scheme_of(&self, username: &str) -> Option<Scheme> {
        self.users.get(username).map(|h| h.parsed.scheme())
    }

    /// The scheme unknown users are checked against.
    pub fn dummy_scheme(&self) -> Scheme {
        self.dummy.scheme()
    }

    /// Times one verification in each scheme the store uses (one user's
    /// hash per scheme), for the mixed-schemes warning: what an unknown
    /// user costs against what each scheme's users cost.
    pub fn scheme_timings(&self) -> Vec<(Scheme, std::time::Duration)> {
        let mut seen = std::collections::BTreeMap::new();
        for stored in self.users.values() {
            seen.entry(stored.parsed.scheme()).or_insert(&stored.parsed);
        }
        seen.into_iter()
            .map(|(scheme, hash)| {
                let started = std::time::Instant::now();
                let _ = verify_hash(hash, b"timing probe", &mut Vec::new());
                (scheme, started.elapsed())
            })
            .collect()
    }

    /// How many users the store holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the store holds no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `username` is a configured user.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// A fingerprint (SHA-256) of the hash stored for `username`, for keying
    /// the credentials cache. Crate-private: hashes are secrets too.
    pub(crate) fn stored_hash(&self, username: &str) -> Option<(&Arc<str>, &[u8; 32])> {
        self.users
            .get_key_value(username)
            .map(|(name, h)| (name, &h.fingerprint))
    }

    /// [`stored_hash`](Self::stored_hash), with the `pwh` binding a user's
    /// token must carry (see `tokens::password_binding`), in one lookup.
    pub(crate) fn stored_hash_and_binding(
        &self,
        username: &str,
    ) -> Option<(&Arc<str>, &[u8; 32], &str)> {
        self.users
            .get_key_value(username)
            .map(|(name, h)| (name, &h.fingerprint, &*h.binding))
    }

    /// The fingerprint `username` is keyed with: its own hash's, or for an
    /// unknown user the dummy's, so known and unknown users go the same way.
    pub(crate) fn fingerprint_or_dummy(&self, username: &str) -> &[u8; 32] {
        let dummy = if username.starts_with(crate::tokens::CLIENT_PREFIX) {
            &self.client_dummy_fingerprint
        } else {
            &self.dummy_fingerprint
        };
        self.stored_hash(username).map_or(dummy, |(_, f)| f)
    }

    /// Whether users' hashes use different argon2 parameters. Then the dummy
    /// hash can match only some of them, and timing tells an unknown user
    /// from a known one with other parameters.
    pub fn has_mixed_params(&self) -> bool {
        let mut params = self
            .users
            .values()
            .filter_map(|h| match &h.parsed {
                UserHash::Argon2(hash) => Params::try_from(&**hash).ok(),
                UserHash::Legacy(_) => None,
            })
            .map(|p| (p.m_cost(), p.t_cost(), p.p_cost()));
        match params.next() {
            Some(first) => params.any(|p| p != first),
            None => false,
        }
    }

    /// Usernames whose hashes are weaker than OWASP's minimum.
    pub fn weak_users(&self) -> Vec<&str> {
        let mut weak: Vec<&str> = self
            .users
            .iter()
            .filter(|(_, h)| match &h.parsed {
                UserHash::Argon2(hash) => is_weak(hash),
                // Named per scheme by `users_with_scheme`.
                UserHash::Legacy(_) => false,
            })
            .map(|(name, _)| &**name)
            .collect();
        weak.sort_unstable();
        weak
    }

    /// Checks a password: CPU-heavy, so call it from a blocking thread (the
    /// [`Verifier`] does). Unknown users are checked against the dummy hash and
    /// always fail.
    pub fn verify_blocking(&self, username: &str, password: &Password) -> bool {
        self.verify_with_memory(username, password, &mut Vec::new())
    }

    /// Like [`verify_blocking`](Self::verify_blocking), computing argon2 in
    /// `memory` (grown as needed and kept by the caller for the next
    /// verification), so that verifying does not allocate and free ~19 MiB
    /// each time; a fresh buffer per verification lets the allocator's
    /// per-thread arenas each keep one, and resident memory balloons.
    pub fn verify_with_memory(
        &self,
        username: &str,
        password: &Password,
        memory: &mut Vec<Block>,
    ) -> bool {
        let (hash, known) = match self.users.get(username) {
            Some(stored) => (&stored.parsed, true),
            None if username.starts_with(crate::tokens::CLIENT_PREFIX) => {
                (&self.client_dummy, false)
            }
            None => (&self.dummy, false),
        };
        verify_hash(hash, password.as_bytes(), memory) && known
    }
}

/// Verifies `password` against a hash of any accepted scheme.
fn verify_hash(hash: &UserHash, password: &[u8], memory: &mut Vec<Block>) -> bool {
    match hash {
        UserHash::Argon2(hash) => verify_phc(hash.as_ref(), password, memory),
        UserHash::Legacy(legacy) => legacy.verify(password),
    }
}

/// SHA-256 of a hash's text.
fn fingerprint(hash: &UserHash) -> [u8; 32] {
    let text = match hash {
        UserHash::Argon2(hash) => hash.to_string(),
        UserHash::Legacy(legacy) => legacy.text(),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    fingerprint
}

/// Recomputes `hash` for `password` in `memory` and compares the outputs in
/// constant time. Every PHC string here passed [`parse_phc`], so the
/// fallible steps below cannot fail in practice; if they did, the answer is
/// "no match".
fn verify_phc(hash: &PasswordHash, password: &[u8], memory: &mut Vec<Block>) -> bool {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::new(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(hash) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut output = [0u8; 64];
    let Some(output) = output.get_mut(..expected.len()) else {
        return false;
    };
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt.as_ref(),
        output,
        &mut memory[..blocks],
    );
    computed.is_ok() && bool::from(output.ct_eq(expected.as_bytes()))
}

/// The parameters shared by most hashes; OWASP's defaults when there are none.
fn typical_params<'a>(hashes: impl Iterator<Item = &'a PasswordHash>) -> Params {
    let mut counts: HashMap<(u32, u32, u32), usize> = HashMap::new();
    for params in hashes.filter_map(|h| Params::try_from(h).ok()) {
        *counts
            .entry((params.m_cost(), params.t_cost(), params.p_cost()))
            .or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&((m, t, p), n)| (n, u64::from(m) * u64::from(t) * u64::from(p)))
        .and_then(|((m, t, p), _)| Params::new(m, t, p, None).ok())
        .unwrap_or_else(default_params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    fn store_with(users: &[(&str, &str)]) -> CredentialStore {
        CredentialStore::new(users.iter().map(|(u, p)| {
            let text = hash_password(&Password::new((*p).into()), cheap()).unwrap();
            ((*u).to_owned(), parse_phc(&text).unwrap())
        }))
        .unwrap()
    }

    #[test]
    fn hash_then_verify() {
        let store = store_with(&[("alice", "secret"), ("bob", "pässwörd")]);
        assert!(store.verify_blocking("alice", &Password::new("secret".into())));
        assert!(store.verify_blocking("bob", &Password::new("pässwörd".into())));
        assert!(!store.verify_blocking("alice", &Password::new("wrong".into())));
        assert!(!store.verify_blocking("carol", &Password::new("secret".into())));
    }

    #[test]
    fn one_work_area_serves_hashes_with_different_params() {
        let big = Params::new(2048, 1, 1, None).unwrap();
        let odd = Params::new(512, 2, 2, Some(48)).unwrap();
        let a = parse_phc(&hash_password(&Password::new("a".into()), big).unwrap()).unwrap();
        let b = parse_phc(&hash_password(&Password::new("b".into()), odd).unwrap()).unwrap();
        let store = CredentialStore::new([("a".to_owned(), a), ("b".to_owned(), b)]).unwrap();
        let mut memory = Vec::new();
        for _ in 0..2 {
            assert!(store.verify_with_memory("a", &Password::new("a".into()), &mut memory));
            assert!(store.verify_with_memory("b", &Password::new("b".into()), &mut memory));
            assert!(!store.verify_with_memory("b", &Password::new("a".into()), &mut memory));
        }
        assert_eq!(memory.len(), 2048);
    }

    #[test]
    fn hashes_are_argon2id_with_the_given_params() {
        let text = hash_password(&Password::new("x".into()), default_params()).unwrap();
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
    }

    #[test]
    fn dummy_hash_uses_the_users_params() {
        let params = |store: &CredentialStore| match &store.dummy {
            UserHash::Argon2(hash) => Params::try_from(&**hash).unwrap(),
            UserHash::Legacy(_) => panic!("an argon2 dummy"),
        };
        let store = store_with(&[("alice", "a")]);
        let p = params(&store);
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (64, 1, 1));
        let empty = CredentialStore::new(Vec::<(String, UserHash)>::new()).unwrap();
        let p = params(&empty);
        assert_eq!(p.m_cost(), Params::DEFAULT_M_COST);
    }

    #[test]
    fn the_dummy_takes_the_most_common_scheme_and_legacy_hashes_verify() {
        let sha = |name: &str| {
            (
                name.to_owned(),
                parse_user_hash("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").unwrap(),
            )
        };
        let apr1 = (
            "carol".to_owned(),
            parse_user_hash("$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00").unwrap(),
        );
        let store = CredentialStore::new([sha("alice"), sha("bob"), apr1]).unwrap();
        assert_eq!(store.dummy_scheme(), Scheme::Sha1);
        assert!(store.verify_blocking("alice", &Password::new("password".into())));
        assert!(store.verify_blocking("carol", &Password::new("password".into())));
        assert!(!store.verify_blocking("carol", &Password::new("Password".into())));
        assert!(!store.verify_blocking("nobody", &Password::new("password".into())));
        assert_eq!(store.users_with_scheme(Scheme::Sha1), vec!["alice", "bob"]);
        assert_eq!(store.scheme_counts().len(), 2);
    }

    #[test]
    fn parse_phc_errors() {
        assert_eq!(parse_phc("secret").err(), Some(HashError::Plaintext));
        assert!(
            !HashError::Plaintext.to_string().contains("secret"),
            "the message never repeats the password"
        );
        assert_eq!(
            parse_phc("$2y$10$abcdefghijklmnopqrstuuJ1s0N2H6Hj0cVGm1Ns3e9C1x3rWAjW").err(),
            Some(HashError::OtherScheme("bcrypt"))
        );
        for (hash, scheme) in [
            ("$apr1$salt$hash", "Apache MD5 (apr1)"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1 ({SHA})"),
            ("$6$salt$hash", "SHA-512-crypt"),
        ] {
            assert_eq!(parse_phc(hash).err(), Some(HashError::OtherScheme(scheme)));
        }
        // A password that starts with `$` parses as a PHC string naming an
        // unknown algorithm: the error must not repeat it.
        for secret in ["$hunter2", "$hunter2$x"] {
            let error = parse_phc(secret).err().unwrap();
            assert!(
                matches!(error, HashError::UnknownScheme | HashError::Malformed(_)),
                "{error:?}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        assert_eq!(
            parse_phc("{SSHA}abcdefgh").err(),
            Some(HashError::OtherScheme("salted SHA-1 ({SSHA})"))
        );
        assert!(matches!(
            parse_phc(
                "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E"
            ),
            Err(HashError::NotArgon2(_))
        ));
        assert!(matches!(
            parse_phc("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ"),
            Err(HashError::InvalidParams(_))
        ));
        assert!(matches!(
            parse_phc(
                "$argon2id$v=19$m=1,t=2,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A"
            ),
            Err(HashError::InvalidParams(_))
        ));
    }

    #[test]
    fn mixed_params_are_detected() {
        assert!(!store_with(&[("a", "1"), ("b", "2")]).has_mixed_params());
        let owasp =
            parse_phc(&hash_password(&Password::new("x".into()), default_params()).unwrap())
                .unwrap();
        let cheap =
            parse_phc(&hash_password(&Password::new("y".into()), cheap()).unwrap()).unwrap();
        let store =
            CredentialStore::new([("a".to_owned(), owasp), ("b".to_owned(), cheap)]).unwrap();
        assert!(store.has_mixed_params());
    }

    #[test]
    fn weak_users_are_reported() {
        let store = store_with(&[("alice", "a")]);
        assert_eq!(store.weak_users(), vec!["alice"]);
    }
}
