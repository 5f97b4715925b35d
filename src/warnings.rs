//! What is valid but unwise in a config. One list, so that `check-config`
//! prints exactly what `serve` logs at start-up.

use crate::config::{Config, ListenAddress, TlsSettings};
use crate::credentials::CredentialStore;

/// One warning: where in the config, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The section or key it is about, as `[section] key`.
    pub key: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The warnings for `config`, whose users are in `store`.
pub fn config_warnings(config: &Config, store: &CredentialStore) -> Vec<ConfigWarning> {
    let mut warnings = Vec::new();
    let mut warn = |key, message: String| warnings.push(ConfigWarning { key, message });
    if matches!(config.tls, TlsSettings::Disabled) {
        warn(
            "[tls] enabled",
            "TLS is disabled: passwords cross the network in clear text unless a TLS-terminating proxy is in front".into(),
        );
    }
    if config.cluster.is_some()
        && let Some(tokens) = &config.tokens
        && matches!(
            tokens.signing_key,
            crate::config::SigningKeySource::Ephemeral(_)
        )
    {
        warn(
            "[tokens] signing_key",
            "replicas share state ([cluster]) but sign tokens with a key each made at start-up: a token from one replica is refused by the others; give every replica the same signing_key file".into(),
        );
    }
    if store.has_mixed_params() {
        warn(
            "[users]",
            "users' hashes use different argon2 parameters: response times can tell unknown users from users with less common parameters; rehash all users with the same parameters".into(),
        );
    }
    // Legacy htpasswd hashes: counted per scheme, the weak ones named.
    let counts = store.scheme_counts();
    if counts.len() > 1 {
        let listed: Vec<String> = counts
            .iter()
            .map(|(scheme, n)| format!("{}: {n}", scheme.label()))
            .collect();
        let timings: Vec<String> = store
            .scheme_timings()
            .iter()
            .map(|(scheme, took)| {
                format!("{} {:.1} ms", scheme.label(), took.as_secs_f64() * 1000.0)
            })
            .collect();
        warn(
            "[users]",
            format!(
                "users' hashes use different schemes ({}); unknown users are checked against a {} hash, and one verification measured here takes {}: response times can tell an unknown user from a user of another scheme; rehash everyone with `gatehouse hash-password`",
                listed.join(", "),
                store.dummy_scheme().label(),
                timings.join(", ")
            ),
        );
    }
    for (scheme, what) in [
        (
            crate::credentials::Scheme::Sha1,
            "unsalted SHA-1 ({SHA}) hashes: anyone who reads the file can look these passwords up in a table; rehash them now",
        ),
        (
            crate::credentials::Scheme::Apr1,
            "Apache MD5 ($apr1$) hashes: fast to guess offline; rehash them",
        ),
    ] {
        let users = store.users_with_scheme(scheme);
        if !users.is_empty() {
            warn(
                "[users]",
                format!(
                    "{what} with `gatehouse hash-password` ({})",
                    users.join(", ")
                ),
            );
        }
    }
    let weak: Vec<String> = store
        .weak_users()
        .into_iter()
        .map(
            |name| match name.strip_prefix(crate::tokens::CLIENT_PREFIX) {
                Some(client) => format!("client {client}"),
                None => name.to_owned(),
            },
        )
        .collect();
    if !weak.is_empty() {
        warn(
            "[users]",
            format!(
                "argon2 parameters below OWASP's minimum (m=19456, t=2) for {}; rehash with `gatehouse hash-password`",
                weak.join(", ")
            ),
        );
    }
    if let Some(name) = &config.auth.generated_user
        && !config.auth.users.is_empty()
    {
        warn(
            "[auth] generated_user",
            format!(
                "unused while real users are configured (`{name}` is not created); remove it, or a config that loses its users would mint a password again"
            ),
        );
    }
    // Groups that name people who are not users, one line per group.
    for (group, members) in &config.access.groups {
        let strangers: Vec<&str> = members
            .iter()
            .filter(|m| !config.auth.users.iter().any(|(name, _)| name == m.as_str()))
            .filter(|m| {
                !config
                    .oauth
                    .iter()
                    .flat_map(|o| &o.clients)
                    .any(|c| &c.id == *m)
            })
            .map(String::as_str)
            .collect();
        if !strangers.is_empty() {
            warn(
                "[groups]",
                format!(
                    "group {group}: {} not a configured user",
                    if strangers.len() == 1 {
                        format!("{} is", strangers[0])
                    } else {
                        format!("{} are", strangers.join(", "))
                    }
                ),
            );
        }
    }
    // Rules that name users who do not exist, one line per rule.
    for (i, rule) in config.access.rules.iter().enumerate() {
        let strangers: Vec<&str> = rule
            .allow
            .iter()
            .filter_map(|who| match who {
                crate::auth::access::Principal::User(name) => Some(name.as_str()),
                _ => None,
            })
            .filter(|name| {
                !config.auth.users.iter().any(|(user, _)| user == name)
                    && !config
                        .oauth
                        .iter()
                        .flat_map(|o| &o.clients)
                        .any(|c| c.id == *name)
            })
            .collect();
        if !strangers.is_empty() {
            warn(
                "[[access]]",
                format!(
                    "rule #{} allows {}, not a configured user or client",
                    i + 1,
                    strangers.join(", ")
                ),
            );
        }
    }
    // Rules an earlier rule always decides first.
    let rules = &config.access.rules;
    for (i, rule) in rules.iter().enumerate() {
        fn covered(
            r: &crate::config::AccessRuleSettings,
        ) -> (&crate::auth::access::PathPattern, Option<&[http::Method]>) {
            (&r.path, r.methods.as_deref())
        }
        if let Some(j) = rules[..i]
            .iter()
            .position(|earlier| crate::auth::access::shadowed(covered(rule), covered(earlier)))
        {
            warn(
                "[[access]]",
                format!(
                    "rule #{} can never match: rule #{} comes first and covers every path and method it does",
                    i + 1,
                    j + 1
                ),
            );
        }
    }
    if let Some(forward) = &config.forward_auth {
        let unix = matches!(forward.listen, Some(ListenAddress::Unix { .. }));
        // A Unix socket's peer is trusted as the proxy without a list.
        if config.server.trusted_proxies.is_empty() && !unix {
            warn(
                "[server] trusted_proxies",
                format!(
                    "forward auth is on but no proxy is trusted: every decision request comes from the proxy, so limits and lockouts count the proxy's address for all its clients; list the proxy in trusted_proxies so X-Forwarded-For / X-Real-IP name the client ({} is the decision path)",
                    forward.path
                ),
            );
        }
        if let Some(ListenAddress::Unix { path, mode }) = &forward.listen
            && mode & 0o002 != 0
        {
            warn(
                "[forward_auth] socket_mode",
                format!(
                    "{mode:o} lets any local user connect to {}: whoever connects is trusted as the proxy, so it can name any client address in X-Forwarded-For (escaping per-address limits and lockouts) and hold every decision connection; give the proxy's user the socket's group instead",
                    path.display()
                ),
            );
        }
        if let Some(ListenAddress::Tcp(listen)) = forward.listen
            && !listen.ip().is_loopback()
        {
            warn(
                "[forward_auth] listen",
                format!(
                    "decisions on {listen} are plain HTTP beyond loopback: credentials cross the network in clear between the proxy and gatehouse; keep it on loopback or a private network"
                ),
            );
        }
    }
    warnings
}

/// Logs each warning at `warn` (start-up and reload).
pub fn log(warnings: &[ConfigWarning]) {
    for warning in warnings {
        tracing::warn!(key = warning.key, "{}", warning.message);
    }
}
