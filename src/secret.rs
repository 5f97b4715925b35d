//! Types that hold secrets and refuse to print them.

use std::fmt;

use zeroize::Zeroize;

/// A plaintext password, wiped from memory when dropped.
///
/// `Debug` prints `Password(<redacted>)` and there is no `Display`, so a
/// password cannot reach a log line or an error body by accident.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The password's text, for hashing or verifying.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The password's UTF-8 bytes, as argon2 hashes them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Compared in constant time (config comparison on reload).
impl PartialEq for Password {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Password {}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Password::new("hunter2".into());
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        assert_eq!(p.as_str(), "hunter2");
    }
}
