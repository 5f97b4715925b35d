//! Which paths skip authentication.

/// Path patterns that skip authentication: an exact path (`/healthz`) or a
/// prefix ending in `*` (`/static/public/*` matches everything below it).
///
/// Matching is on the raw request path, so `/healthz/../admin` is not
/// `/healthz`: a prefix pattern only ever widens to paths that really start
/// with it, and routers see the same raw path.
#[derive(Debug, Clone, Default)]
pub struct PublicPaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl PublicPaths {
    /// Builds the matcher from patterns.
    pub fn new<I, P>(patterns: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let mut paths = Self::default();
        for pattern in patterns {
            let pattern = pattern.into();
            match pattern.strip_suffix('*') {
                Some(prefix) => paths.prefixes.push(prefix.to_owned()),
                None => paths.exact.push(pattern),
            }
        }
        paths
    }

    /// Whether `path` skips authentication.
    pub fn matches(&self, path: &str) -> bool {
        // A dot segment could climb out of a public prefix once a file server
        // or upstream normalises it, so such paths are never public.
        if path.split('/').any(|seg| seg == ".." || seg == ".") {
            return false;
        }
        self.exact.iter().any(|p| p == path)
            || self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        let p = PublicPaths::new(["/healthz", "/static/public/*"]);
        assert!(p.matches("/healthz"));
        assert!(!p.matches("/healthz/x"));
        assert!(!p.matches("/healthzz"));
        assert!(p.matches("/static/public/a.css"));
        assert!(!p.matches("/static/private/a.css"));
        assert!(!p.matches("/static/public/../private/a.css"));
        assert!(!PublicPaths::default().matches("/healthz"));
    }
}
