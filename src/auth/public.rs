//! Which paths skip authentication.

/// Path patterns that skip authentication: an exact path (`/healthz`) or a
/// prefix ending in `*` (`/static/public/*` matches everything below it).
///
/// Matching is on the canonical path ([`crate::path`]), which the layer makes
/// before anything else looks at the request and which is also what the
/// routes, the file server and the upstream see. A path with `;` parameters
/// (or `%3B`) is never public: some upstreams (Tomcat, Jetty) strip them before
/// routing, so they could name a path other than the one matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicPaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

/// A public pattern that cannot be matched as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPattern {
    /// It is not a path in canonical form.
    #[error("`{0}` must be a canonical path starting with / (no dot segments, //, %2F, or ;)")]
    NotCanonical(String),
    /// A `*` stands somewhere other than at the end.
    #[error("`{0}`: `*` may only end a pattern (a prefix), not stand inside it")]
    InnerWildcard(String),
}

impl PublicPaths {
    /// Builds the matcher from patterns, refusing any that could never match
    /// a canonical path the way it reads.
    pub fn new<I, P>(patterns: I) -> Result<Self, InvalidPattern>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let mut paths = Self::default();
        for pattern in patterns {
            let pattern = pattern.into();
            validate_pattern(&pattern)?;
            match pattern.strip_suffix('*') {
                Some(prefix) => paths.prefixes.push(prefix.to_owned()),
                None => paths.exact.push(pattern),
            }
        }
        Ok(paths)
    }

    /// The patterns, as written (`/static/*`).
    pub fn patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.exact
            .iter()
            .cloned()
            .chain(self.prefixes.iter().map(|p| format!("{p}*")))
    }

    /// Whether the canonical `path` skips authentication.
    pub fn matches(&self, path: &str) -> bool {
        // Canonical escapes are upper-case, so `%3B` is the only spelling.
        if path.contains(';') || path.contains("%3B") {
            return false;
        }
        self.exact.iter().any(|p| p == path)
            || self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// Checks one public pattern (also used by config validation).
pub fn validate_pattern(pattern: &str) -> Result<(), InvalidPattern> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if body.contains('*') {
        return Err(InvalidPattern::InnerWildcard(pattern.to_owned()));
    }
    let canonical = crate::path::canonicalize(body)
        .map_err(|_| InvalidPattern::NotCanonical(pattern.to_owned()))?;
    if canonical != body || body.contains(';') {
        return Err(InvalidPattern::NotCanonical(pattern.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        let p = PublicPaths::new(["/healthz", "/static/public/*"]).unwrap();
        assert!(p.matches("/healthz"));
        assert!(!p.matches("/healthz/x"));
        assert!(!p.matches("/healthzz"));
        assert!(p.matches("/static/public/a.css"));
        assert!(!p.matches("/static/private/a.css"));
        assert!(!p.matches("/static/public/x;y"));
        assert!(!p.matches("/static/public/x%3By"));
        assert!(!PublicPaths::default().matches("/healthz"));
    }

    #[test]
    fn patterns_must_be_canonical() {
        for bad in [
            "healthz",
            "/a/../b*",
            "/a//b",
            "/a/*/b",
            "/a;x",
            "/%2e%2e/*",
        ] {
            assert!(PublicPaths::new([bad]).is_err(), "{bad}");
        }
        assert!(PublicPaths::new(["/", "/*", "/a b/*".replace(' ', "%20").as_str()]).is_ok());
    }
}
