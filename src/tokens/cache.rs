//! Verified tokens, so that a bearer request does not pay a signature check
//! every time: keyed digest of the token → user, binding, expiry.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use ring::hmac;

use crate::sync::lock;

struct Entry {
    cached: Cached,
    exp: u64,
    generation: u64,
}

/// What a verified token said.
#[derive(Clone)]
pub(crate) struct Cached {
    /// The credential-store name (a user, or a client's key).
    pub(crate) user: Arc<str>,
    pub(crate) scope: Option<Arc<str>>,
    pub(crate) binding: Arc<str>,
    /// The OAuth client a user's token was issued to.
    pub(crate) client: Option<Arc<str>>,
    /// The OAuth grant family, checked against revocations every time.
    pub(crate) family: Option<Arc<str>>,
}

/// A bounded map of tokens already verified. Keys are HMACs under a random
/// per-process key, so the map holds no token. An entry is never used past
/// its token's `exp`; a full map drops expired entries, then everything.
pub(crate) struct TokenCache {
    key: hmac::Key,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    max_entries: usize,
}

impl TokenCache {
    pub(crate) fn new(max_entries: usize) -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        })
    }

    /// The key a token is filed under (a connection's memo keeps it, so
    /// that the same token on the same connection is not hashed again).
    pub(crate) fn digest(&self, token: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.key, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The user and binding of the token with this `digest`, verified
    /// before and not expired, and when its entry expires (`exp`).
    pub(crate) fn get(
        &self,
        digest: &[u8; 32],
        now: u64,
        generation: u64,
    ) -> Option<(Cached, u64)> {
        let entries = lock(&self.entries);
        let entry = entries.get(digest)?;
        (now < entry.exp && entry.generation == generation)
            .then(|| (entry.cached.clone(), entry.exp))
    }

    /// Remembers a verified token until `exp`, for key `generation`.
    pub(crate) fn insert(
        &self,
        digest: &[u8; 32],
        cached: Cached,
        exp: u64,
        now: u64,
        generation: u64,
    ) {
        let mut entries = lock(&self.entries);
        if entries.len() >= self.max_entries {
            entries.retain(|_, e| e.exp > now);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(
            *digest,
            Entry {
                cached,
                exp,
                generation,
            },
        );
    }

    /// Forgets everything (a reload).
    pub(crate) fn clear(&self) {
        lock(&self.entries).clear();
    }
}
