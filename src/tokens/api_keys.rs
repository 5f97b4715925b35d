//! API keys: `gh_<id>_<secret>`, 16 hex digits of id and 256 random bits of
//! secret, stored as `id:user:name:sha256-of-secret` lines.
//!
//! A key carries 256 bits of randomness, so nobody can guess it, whatever
//! the speed: a SHA-256 digest is a sufficient store, unlike a password,
//! which needs argon2. A check is a map lookup by id and a constant-time
//! comparison of digests: microseconds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::config::{ConfigError, Username};

const PREFIX: &str = "gh_";
const ID_LEN: usize = 16;
/// 32 random bytes, base64url without padding.
const SECRET_LEN: usize = 43;

/// One stored key.
struct StoredKey {
    user: Arc<str>,
    digest: [u8; 32],
}

/// The keys from the keys file, by id.
#[derive(Default)]
pub struct ApiKeys {
    keys: HashMap<String, StoredKey>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Why a key name or file line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// The name holds something other than letters, digits, `.`, `_`, `-`.
    #[error("a key name is up to 64 letters, digits, `.`, `_` or `-`")]
    BadName,
    /// No randomness.
    #[error("cannot generate a key")]
    Random,
}

/// A key just made: the line for the keys file and the key, shown once.
pub struct NewApiKey {
    /// `id:user:name:digest`, for the keys file.
    pub line: String,
    /// `gh_<id>_<secret>`, for the client; never stored.
    pub key: zeroize::Zeroizing<String>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Splits `gh_<id>_<secret>` by position (the secret's alphabet has `_`).
fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    if rest.len() != ID_LEN + 1 + SECRET_LEN || !rest.is_ascii() {
        return None;
    }
    let (id, rest) = rest.split_at(ID_LEN);
    let secret = rest.strip_prefix('_')?;
    id.bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        .then_some((id, secret))
}

/// Whether `text` has the shape of an API key (so a Bearer value is
/// checked as a key, not as a JWT).
pub fn looks_like_key(text: &str) -> bool {
    text.starts_with(PREFIX)
}

impl NewApiKey {
    /// A new random key for `user`, named `name`.
    pub fn generate(user: &Username, name: &str) -> Result<Self, ApiKeyError> {
        if !valid_name(name) {
            return Err(ApiKeyError::BadName);
        }
        let mut id = [0u8; ID_LEN / 2];
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut id).map_err(|_| ApiKeyError::Random)?;
        getrandom::fill(secret.as_mut_slice()).map_err(|_| ApiKeyError::Random)?;
        let id = crate::hex::encode(&id);
        let secret = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_slice()));
        let digest = crate::hex::encode(&sha256(secret.as_bytes()));
        Ok(Self {
            line: format!("{id}:{}:{name}:{digest}", user.as_str()),
            key: zeroize::Zeroizing::new(format!("{PREFIX}{id}_{}", secret.as_str())),
        })
    }
}

impl ApiKeys {
    /// Reads a keys file: `id:user:name:sha256hex` lines, `#` comments and
    /// blank lines allowed. Errors name the file and the line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read {
            path: path.to_owned(),
            io,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut keys = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("line {}", index + 1);
            let bad = |m: &str| ConfigError::invalid(path, &at, m);
            let fields: Vec<&str> = line.split(':').collect();
            let [id, user, name, digest] = fields[..] else {
                return Err(bad(
                    "expected `id:user:name:sha256` (made by `gatehouse api-key create`)",
                ));
            };
            if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("the id is not 16 hex digits"));
            }
            let user = Username::parse(user).map_err(|m| bad(&m))?;
            if !valid_name(name) {
                return Err(bad(
                    "the name is not up to 64 letters, digits, `.`, `_` or `-`",
                ));
            }
            let digest = unhex(digest).ok_or_else(|| bad("the digest is not 64 hex digits"))?;
            let stored = StoredKey {
                user: Arc::from(user.into_string()),
                digest,
            };
            if keys.insert(id.to_ascii_lowercase(), stored).is_some() {
                return Err(bad("duplicate key id"));
            }
        }
        Ok(Self { keys })
    }

    /// The users the keys belong to (once each).
    pub fn users(&self) -> std::collections::BTreeSet<&str> {
        self.keys.values().map(|k| &*k.user).collect()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The user a presented key belongs to, if it is one of these keys. A
    /// malformed key, an unknown id and a wrong secret all answer `None`
    /// (the digest is computed and compared in each case).
    pub fn verify(&self, presented: &str) -> Option<Arc<str>> {
        let (id, secret) = split_key(presented).unwrap_or(("", presented));
        let digest = sha256(secret.as_bytes());
        let stored = self.keys.get(id);
        let expected = stored.map_or([0u8; 32], |k| k.digest);
        let same: bool = digest.ct_eq(&expected).into();
        match stored {
            Some(key) if same => Some(Arc::clone(&key.user)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_verifies_and_nothing_else_does() {
        let alice = Username::parse("alice").unwrap();
        let made = NewApiKey::generate(&alice, "ci").unwrap();
        assert!(made.key.starts_with("gh_") && made.key.len() == 3 + 16 + 1 + 43);
        let keys = ApiKeys::parse(Path::new("k"), &format!("# keys\n{}\n", made.line)).unwrap();
        assert_eq!(keys.verify(&made.key).as_deref(), Some("alice"));
        let mut wrong = made.key.to_string();
        wrong.pop();
        wrong.push(if made.key.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(keys.verify(&wrong), None);
        assert_eq!(keys.verify("gh_0000000000000000_x"), None);
        assert_eq!(keys.verify(""), None);
        assert!(
            !made.line.contains(&made.key[20..]),
            "the secret is not stored"
        );
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, want) in [
            ("abc\n", "line 1"),
            ("\n\nzz:alice:n:00\n", "line 3"),
            (
                &format!(
                    "0123456789abcdef:a:b:{}\n0123456789abcdef:a:c:{}\n",
                    "0".repeat(64),
                    "1".repeat(64)
                )[..],
                "duplicate",
            ),
        ] {
            let error = ApiKeys::parse(Path::new("keys"), text)
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains(want), "{error}");
        }
    }

    #[test]
    fn names_are_checked() {
        let alice = Username::parse("alice").unwrap();
        assert!(NewApiKey::generate(&alice, "a:b").is_err());
        assert!(NewApiKey::generate(&alice, "").is_ok());
    }
}
