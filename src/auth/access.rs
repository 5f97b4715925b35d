//! Access rules: who may do what, after authentication.
//!
//! Rules are matched on the canonical path, in order; the first rule whose
//! path and method match decides, and when none matches the default does.
//! A refusal is `403` without a challenge (a `401` would make browsers ask
//! for the password again forever); an unauthenticated request still gets
//! `401` from the pipeline before any rule is looked at.
//!
//! Restrictions are matched inclusively: a prefix rule `/admin/*` covers
//! `/admin` itself, and path parameters (`/admin;x=1/secret`, which Tomcat
//! and Jetty read as `/admin/secret`) are removed before matching, so a
//! rule is never dodged by a spelling the upstream reads as its path.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderValue, Method};

use super::AuthenticatedUser;

/// Who a rule lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `user:NAME` (an OAuth client acting for itself is named by its id).
    User(String),
    /// `group:NAME`.
    Group(String),
    /// `authenticated`: anyone who authenticated.
    Authenticated,
}

impl Principal {
    /// Parses `user:NAME`, `group:NAME` or `authenticated`.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "authenticated" {
            return Some(Self::Authenticated);
        }
        let (kind, name) = text.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "user" => Some(Self::User(name.to_owned())),
            "group" => Some(Self::Group(name.to_owned())),
            _ => None,
        }
    }
}

/// A rule's path: exact, or a prefix (`/admin/*`, which covers `/admin`
/// too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// This path only.
    Exact(String),
    /// This path (without its trailing `/`) and everything below it.
    Prefix(String),
}

impl PathPattern {
    /// Parses a pattern: canonical, with `*` only at the end after `/`.
    pub fn parse(pattern: &str) -> Option<Self> {
        super::public::validate_pattern(pattern).ok()?;
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => Some(Self::Prefix(prefix.to_owned())),
            Some(_) => None,
            None => Some(Self::Exact(pattern.to_owned())),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            // `/reports`, `/reports/` and `/reports/index.html` are one
            // resource to most upstreams and to the file server.
            Self::Exact(exact) => path == exact || same_resource(path) == same_resource(exact),
            Self::Prefix(prefix) => {
                path.starts_with(prefix.as_str()) || path == &prefix[..prefix.len() - 1]
            }
        }
    }

    /// Whether every path this pattern matches, `other` matches too.
    fn covered_by(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(path), other) => other.matches(path),
            (Self::Prefix(mine), Self::Prefix(theirs)) => mine.starts_with(theirs.as_str()),
            (Self::Prefix(_), Self::Exact(_)) => false,
        }
    }
}

/// One `[[access]]` rule.
#[derive(Debug, Clone)]
pub struct AccessRule {
    /// The paths it covers.
    pub path: PathPattern,
    /// The methods it covers; `None`: all.
    pub methods: Option<Vec<Method>>,
    /// Who it lets in.
    pub allow: Vec<Principal>,
    /// Scopes a token with scopes must carry (passwords, API keys and login
    /// tokens carry none and are not limited by them).
    pub scopes: Vec<String>,
    /// The challenge for unauthenticated requests under it, when it names
    /// a realm of its own.
    pub challenges: Option<Vec<HeaderValue>>,
}

impl AccessRule {
    fn applies(&self, method: &Method, path: &str) -> bool {
        // HEAD runs the GET handler in most frameworks (and the file
        // server): a rule for GET covers it.
        self.path.matches(path)
            && self.methods.as_ref().is_none_or(|methods| {
                methods.contains(method)
                    || (*method == Method::HEAD && methods.contains(&Method::GET))
            })
    }

    /// Whether this rule can never decide because `earlier` covers all it
    /// covers.
    pub fn shadowed_by(&self, earlier: &AccessRule) -> bool {
        shadowed(
            (&self.path, self.methods.as_deref()),
            (&earlier.path, earlier.methods.as_deref()),
        )
    }
}

/// Whether a rule on `(path, methods)` can never decide because an earlier
/// one covers every path and method it does (`None`: all methods).
pub fn shadowed(
    (path, methods): (&PathPattern, Option<&[Method]>),
    (earlier_path, earlier_methods): (&PathPattern, Option<&[Method]>),
) -> bool {
    let methods = match (earlier_methods, methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(theirs), Some(mine)) => mine.iter().all(|m| theirs.contains(m)),
    };
    methods && path.covered_by(earlier_path)
}

/// The rules, the default, and the groups.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    rules: Vec<AccessRule>,
    deny_by_default: bool,
    /// Each user's groups.
    groups: HashMap<String, Arc<[Arc<str>]>>,
    /// The rules that can match a path, by the path's first segment (in
    /// rule order), so that a request looks at a handful of rules, not all
    /// of them; `everywhere` are the rules for `/*`.
    by_segment: HashMap<String, Vec<usize>>,
    everywhere: Vec<usize>,
}

/// The first segment of a path or rule path (`"admin"` for `/admin/x`).
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or("")
}

/// The part of `path` that names the resource: without a trailing
/// `index.html` or `/` (no allocation: it runs for every rule).
fn same_resource(path: &str) -> &str {
    let path = path
        .strip_suffix("index.html")
        .filter(|dir| dir.ends_with('/'))
        .unwrap_or(path);
    if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    }
}

/// `path` with `;` parameters removed from every segment.
fn without_parameters(path: &str) -> Option<String> {
    if !path.contains(';') && !path.contains("%3B") {
        return None;
    }
    let stripped: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let end = [segment.find(';'), segment.find("%3B")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(segment.len());
            &segment[..end]
        })
        .collect();
    Some(stripped.join("/"))
}

/// `path` with every percent-escape decoded that an upstream would decode
/// into an ordinary path character (`%3A` → `:`, `%40` → `@`); separators
/// and `;` stay encoded (the canonical form refuses `%2F` and `%5C`).
fn decoded(path: &str) -> Option<String> {
    if !path.contains('%') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_graphic() && !b"/\\;%?#".contains(b));
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|d| d != path)
}

/// Other spellings of `path` an upstream reads as the same resource:
/// without `;` parameters, and with punctuation escapes decoded. (Trailing
/// `/` and `index.html` are folded by the rules' matching itself.)
fn spellings(path: &str) -> Vec<String> {
    let mut all = Vec::new();
    if let Some(p) = without_parameters(path) {
        all.push(p);
    }
    if let Some(p) = decoded(path) {
        if let Some(both) = without_parameters(&p) {
            all.push(both);
        }
        all.push(p);
    }
    all
}

impl AccessRules {
    /// `rules` in order; `deny_by_default`: what happens where none
    /// matches; `groups`: group name → members.
    pub fn new(
        rules: Vec<AccessRule>,
        deny_by_default: bool,
        groups: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Self {
        let mut of_user: HashMap<String, Vec<Arc<str>>> = HashMap::new();
        for (group, members) in groups {
            let group: Arc<str> = Arc::from(group.as_str());
            for member in members {
                let mine = of_user.entry(member.clone()).or_default();
                if !mine.contains(&group) {
                    mine.push(Arc::clone(&group));
                }
            }
        }
        let mut by_segment: HashMap<String, Vec<usize>> = HashMap::new();
        let mut everywhere = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.path {
                PathPattern::Prefix(prefix) if prefix == "/" => everywhere.push(i),
                PathPattern::Prefix(path) | PathPattern::Exact(path) => by_segment
                    .entry(first_segment(path).to_owned())
                    .or_default()
                    .push(i),
            }
        }
        Self {
            rules,
            deny_by_default,
            groups: of_user
                .into_iter()
                .map(|(user, groups)| (user, Arc::from(groups)))
                .collect(),
            by_segment,
            everywhere,
        }
    }

    /// The first rule that applies to this request, in rule order. Every
    /// rule that can match `path` shares its first segment (a prefix rule
    /// covers its root, an exact rule its `/` and `index.html` spellings,
    /// all within that segment), except `/*`.
    fn first_rule(&self, method: &Method, path: &str) -> Option<&AccessRule> {
        // `/index.html` is `/` to an exact rule for `/`: a second segment
        // to look in (rare, so the slow way).
        let resource = same_resource(path);
        if first_segment(resource) != first_segment(path) {
            let mut all: Vec<usize> = [first_segment(path), first_segment(resource)]
                .iter()
                .filter_map(|segment| self.by_segment.get(*segment))
                .flatten()
                .chain(&self.everywhere)
                .copied()
                .collect();
            all.sort_unstable();
            all.dedup();
            return all
                .into_iter()
                .filter_map(|i| self.rules.get(i))
                .find(|rule| rule.applies(method, path));
        }
        let mine = self
            .by_segment
            .get(first_segment(path))
            .map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (mine.iter().peekable(), self.everywhere.iter().peekable());
        // Merge the two ordered index lists, so the first match is still
        // the first rule in the file.
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => return None,
            };
            if let Some(rule) = next.and_then(|i| self.rules.get(*i))
                && rule.applies(method, path)
            {
                return Some(rule);
            }
        }
    }

    /// The rules `settings` describe. `bearer`: whether a rule's own realm
    /// challenges for Bearer too (tokens or API keys are on).
    pub fn from_settings(settings: &crate::config::AccessSettings, bearer: bool) -> Self {
        let rules = settings
            .rules
            .iter()
            .map(|rule| AccessRule {
                path: rule.path.clone(),
                methods: rule.methods.clone(),
                allow: rule.allow.clone(),
                scopes: rule.scopes.clone(),
                challenges: rule.realm.as_ref().map(|realm| {
                    // Checked by the config: no quote, backslash or control.
                    let mut challenges: Vec<HeaderValue> = Vec::new();
                    let basic = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
                    let bearer_challenge = format!("Bearer realm=\"{realm}\"");
                    let texts = if bearer {
                        vec![basic, bearer_challenge]
                    } else {
                        vec![basic]
                    };
                    for text in texts {
                        if let Ok(value) = HeaderValue::try_from(text) {
                            challenges.push(value);
                        }
                    }
                    challenges
                }),
            })
            .collect();
        Self::new(rules, settings.deny_by_default, &settings.groups)
    }

    /// Whether there is nothing to check (no rules, default allow).
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && !self.deny_by_default
    }

    /// The groups of `user`.
    pub fn groups_of(&self, user: &str) -> Option<Arc<[Arc<str>]>> {
        self.groups.get(user).cloned()
    }

    /// Whether `user` may make this request, and for `HEAD` as for `GET`.
    /// The path as sent is decided by its rule, or the default; every other
    /// spelling of it (see [`spellings`]) that a rule covers must be
    /// allowed by that rule too. Other spellings only ever restrict: a
    /// spelling no rule covers changes nothing.
    pub fn allows(&self, user: &AuthenticatedUser, method: &Method, path: &str) -> bool {
        if self.is_open() {
            return true;
        }
        let sent = self
            .allows_one(user, method, path)
            .unwrap_or(!self.deny_by_default);
        // Escapes and parameters are rare: only then are other spellings
        // built and checked.
        if !sent || (!path.contains('%') && !path.contains(';')) {
            return sent;
        }
        spellings(path)
            .iter()
            .all(|p| self.allows_one(user, method, p).unwrap_or(true))
    }

    /// What the first rule covering `path` says; `None` when none does.
    fn allows_one(&self, user: &AuthenticatedUser, method: &Method, path: &str) -> Option<bool> {
        let rule = self.first_rule(method, path)?;
        let groups = user.groups();
        let member = rule.allow.iter().any(|who| match who {
            Principal::Authenticated => true,
            Principal::User(name) => name == user.name(),
            Principal::Group(group) => groups.iter().any(|m| **m == **group),
        });
        let scoped = match user.scopes() {
            None => true,
            Some(granted) => rule
                .scopes
                .iter()
                .all(|needed| granted.split(' ').any(|s| s == needed)),
        };
        Some(member && scoped)
    }

    /// Whether any rule names methods (a forward-auth request must then say
    /// which method it is deciding for).
    pub fn uses_methods(&self) -> bool {
        self.rules.iter().any(|r| r.methods.is_some())
    }

    /// The challenges for an unauthenticated request, when the first rule
    /// that covers it names a realm of its own.
    pub fn challenges_for(&self, method: &Method, path: &str) -> Option<&[HeaderValue]> {
        let path = without_parameters(path).unwrap_or_else(|| path.to_owned());
        self.first_rule(method, &path)
            .and_then(|r| r.challenges.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;

    fn rule(path: &str, methods: Option<&[&str]>, allow: &[&str], scopes: &[&str]) -> AccessRule {
        AccessRule {
            path: PathPattern::parse(path).unwrap(),
            methods: methods.map(|m| m.iter().map(|m| m.parse().unwrap()).collect()),
            allow: allow.iter().map(|p| Principal::parse(p).unwrap()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            challenges: None,
        }
    }

    fn rules(deny: bool) -> AccessRules {
        let groups = [
            ("admins".to_owned(), vec!["alice".to_owned()]),
            (
                "deploy".to_owned(),
                vec!["ci-bot".to_owned(), "alice".to_owned()],
            ),
        ]
        .into_iter()
        .collect();
        AccessRules::new(
            vec![
                rule("/admin/*", None, &["group:admins"], &[]),
                rule(
                    "/api/deploy",
                    Some(&["POST"]),
                    &["group:deploy"],
                    &["read-write"],
                ),
                rule("/reports", None, &["user:bob", "group:admins"], &[]),
            ],
            deny,
            &groups,
        )
    }

    fn user(name: &str) -> AuthenticatedUser {
        let groups = rules(false).groups_of(name);
        AuthenticatedUser::new(name).with_groups(groups)
    }

    #[test]
    fn first_matching_rule_decides() {
        let r = rules(false);
        let get = Method::GET;
        let post = Method::POST;
        assert!(r.allows(&user("alice"), &get, "/admin/x"));
        assert!(!r.allows(&user("bob"), &get, "/admin/x"));
        assert!(
            !r.allows(&user("bob"), &get, "/admin"),
            "a prefix covers its root"
        );
        assert!(
            !r.allows(&user("bob"), &get, "/admin;x=1/secret"),
            "parameters"
        );
        assert!(!r.allows(&user("bob"), &get, "/admin%3Bx/secret"));
        assert!(
            r.allows(&user("bob"), &get, "/administrator"),
            "not under /admin/"
        );
        assert!(r.allows(&user("ci-bot"), &post, "/api/deploy"));
        assert!(!r.allows(&user("bob"), &post, "/api/deploy"));
        assert!(
            r.allows(&user("bob"), &get, "/api/deploy"),
            "GET is not covered"
        );
        assert!(r.allows(&user("bob"), &get, "/reports"));
        assert!(!r.allows(&user("carol"), &get, "/reports"));
        assert!(
            r.allows(&user("carol"), &get, "/elsewhere"),
            "default allow"
        );
        // Other spellings of a covered path.
        assert!(
            !r.allows(&user("carol"), &get, "/reports/"),
            "trailing slash"
        );
        assert!(!r.allows(&user("carol"), &get, "/reports/index.html"));
        assert!(
            !r.allows(&user("carol"), &Method::HEAD, "/reports"),
            "HEAD is GET"
        );
        assert!(!r.allows(&user("bob"), &Method::HEAD, "/admin/x"));
        assert!(
            !rules(true).allows(&user("carol"), &get, "/elsewhere"),
            "default deny"
        );
    }

    #[test]
    fn tokens_with_scopes_must_carry_the_rules_scopes() {
        let r = rules(false);
        let token = |scopes: &str| {
            AuthenticatedUser::with_method("ci-bot", AuthMethod::Bearer)
                .with_scopes(Some(Arc::from(scopes)))
                .with_groups(r.groups_of("ci-bot"))
        };
        assert!(r.allows(&token("read read-write"), &Method::POST, "/api/deploy"));
        assert!(!r.allows(&token("read"), &Method::POST, "/api/deploy"));
        // A password carries no scopes and is not limited by them.
        assert!(r.allows(&user("ci-bot"), &Method::POST, "/api/deploy"));
    }

    #[test]
    fn shadowed_rules_are_found() {
        let broad = rule("/admin/*", None, &["group:admins"], &[]);
        let inner = rule("/admin/users", Some(&["GET"]), &["user:bob"], &[]);
        let other = rule("/api/*", None, &["authenticated"], &[]);
        assert!(inner.shadowed_by(&broad));
        assert!(!broad.shadowed_by(&inner));
        assert!(!other.shadowed_by(&broad));
        let get_only = rule("/admin/*", Some(&["GET"]), &["user:bob"], &[]);
        let all = rule("/admin/x", None, &["user:bob"], &[]);
        assert!(
            !all.shadowed_by(&get_only),
            "more methods than the earlier rule"
        );
    }

    #[test]
    fn principals_and_patterns_parse() {
        assert_eq!(
            Principal::parse("authenticated"),
            Some(Principal::Authenticated)
        );
        assert_eq!(
            Principal::parse("user:bob"),
            Some(Principal::User("bob".into()))
        );
        assert_eq!(Principal::parse("group:"), None);
        assert_eq!(Principal::parse("role:x"), None);
        assert!(PathPattern::parse("/a/*").is_some());
        assert!(PathPattern::parse("/a*").is_none(), "a prefix ends at a /");
        assert!(PathPattern::parse("/a/../b").is_none());
    }
}

#[cfg(test)]
mod spelling_tests {
    use super::*;

    #[test]
    fn the_segment_index_keeps_rule_order() {
        let rule = |path: &str, who: &str| AccessRule {
            path: PathPattern::parse(path).unwrap(),
            methods: None,
            allow: vec![Principal::parse(who).unwrap()],
            scopes: vec![],
            challenges: None,
        };
        let rules = AccessRules::new(
            vec![
                rule("/a/x", "user:bob"),
                rule("/*", "user:carol"),
                rule("/a/*", "user:dave"),
                rule("/", "user:erin"),
            ],
            false,
            &Default::default(),
        );
        let user = |name: &str| AuthenticatedUser::new(name);
        assert!(
            rules.allows(&user("bob"), &Method::GET, "/a/x"),
            "rule 1 first"
        );
        assert!(!rules.allows(&user("dave"), &Method::GET, "/a/x"));
        assert!(
            rules.allows(&user("carol"), &Method::GET, "/a/y"),
            "/* before /a/*"
        );
        assert!(!rules.allows(&user("dave"), &Method::GET, "/a/y"));
        assert!(
            rules.allows(&user("carol"), &Method::GET, "/"),
            "/* covers /"
        );
        assert_eq!(first_segment("/"), "");
        assert_eq!(first_segment("/a/b"), "a");
        assert_eq!(first_segment("/a"), "a");
    }

    #[test]
    fn spellings_cover_what_upstreams_read_alike() {
        let all = spellings("/api/jobs%3Acancel");
        assert!(all.contains(&"/api/jobs:cancel".to_owned()));
        let all = spellings("/static;x/admin");
        assert!(all.contains(&"/static/admin".to_owned()));
        assert_eq!(decoded("/a%2Fb"), None, "separators stay encoded");
        assert_eq!(same_resource("/docs/"), "/docs");
        assert_eq!(same_resource("/docs/index.html"), "/docs");
        assert_eq!(same_resource("/"), "/");
        assert_eq!(same_resource("/index.html"), "/");
        assert_eq!(same_resource("/xindex.html"), "/xindex.html");
    }

    #[test]
    fn a_permissive_rule_is_not_widened_by_parameters() {
        let rules = AccessRules::new(
            vec![AccessRule {
                path: PathPattern::parse("/static/*").unwrap(),
                methods: None,
                allow: vec![Principal::Authenticated],
                scopes: vec![],
                challenges: None,
            }],
            true,
            &Default::default(),
        );
        let user = AuthenticatedUser::new("carol");
        assert!(rules.allows(&user, &Method::GET, "/static/a.css"));
        assert!(!rules.allows(&user, &Method::GET, "/static;x/admin"));
        let exact = AccessRules::new(
            vec![AccessRule {
                path: PathPattern::parse("/api/jobs:cancel").unwrap(),
                methods: None,
                allow: vec![Principal::User("root".into())],
                scopes: vec![],
                challenges: None,
            }],
            false,
            &Default::default(),
        );
        assert!(!exact.allows(&user, &Method::GET, "/api/jobs%3Acancel"));
        // Under deny-by-default, an exact allow still works as written.
        let only = AccessRules::new(
            vec![AccessRule {
                path: PathPattern::parse("/reports").unwrap(),
                methods: None,
                allow: vec![Principal::User("carol".into())],
                scopes: vec![],
                challenges: None,
            }],
            true,
            &Default::default(),
        );
        assert!(only.allows(&user, &Method::GET, "/reports"));
        assert!(only.allows(&user, &Method::GET, "/reports/"));
        assert!(!only.allows(&AuthenticatedUser::new("dave"), &Method::GET, "/reports/"));
    }
}
