//! Turning single values of the file into typed ones, each error naming
//! its key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::settings::HeaderPattern;
use super::{KeyError, TlsSettings, UpstreamSettings, raw};
use crate::limit::Rate;

pub(super) fn tls_settings(
    raw: raw::Tls,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<TlsSettings, KeyError> {
    if raw.enabled == Some(false) {
        if raw.cert.is_some() || raw.key.is_some() || raw.self_signed == Some(true) {
            return Err(KeyError::new(
                "[tls] enabled",
                "is false, but cert, key or self_signed is also set: choose one",
            ));
        }
        return Ok(TlsSettings::Disabled);
    }
    match (raw.self_signed == Some(true), raw.cert, raw.key) {
        (true, None, None) => Ok(TlsSettings::SelfSigned {
            cert_out: resolve(
                raw.self_signed_cert_out
                    .as_deref()
                    .unwrap_or(Path::new("self-signed-cert.pem")),
            ),
        }),
        (true, _, _) => Err(KeyError::new(
            "[tls] self_signed",
            "is true, but cert or key is also set: choose one",
        )),
        (false, Some(cert), Some(key)) => Ok(TlsSettings::Files {
            cert: resolve(&cert),
            key: resolve(&key),
        }),
        (false, Some(_), None) => Err(KeyError::new(
            "[tls] key",
            "missing: cert is set, so key must be too",
        )),
        (false, None, Some(_)) => Err(KeyError::new(
            "[tls] cert",
            "missing: key is set, so cert must be too",
        )),
        (false, None, None) => Err(KeyError::new(
            "[tls]",
            "set cert and key, or self_signed = true for development, or enabled = false behind a TLS-terminating proxy",
        )),
    }
}

/// A human-readable duration such as `10s`, `15m` or `1h 30m`.
/// The longest duration any setting takes: a year is already absurd, and
/// it keeps `now + duration` from overflowing anywhere.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

pub(super) fn duration(key: &str, text: &str) -> Result<Duration, KeyError> {
    let value = humantime::parse_duration(text).map_err(|e| {
        KeyError::new(
            key,
            format!("`{text}` is not a duration like \"10s\" or \"15m\" ({e})"),
        )
    })?;
    if value > MAX_DURATION {
        return Err(KeyError::new(
            key,
            format!("`{text}` is longer than a year"),
        ));
    }
    Ok(value)
}

pub(super) fn upstream_settings(
    raw: raw::Upstream,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<UpstreamSettings, KeyError> {
    let bad_url = |m: String| KeyError::new("[upstream] url", m);
    let url: http::Uri = raw
        .url
        .parse()
        .map_err(|e| bad_url(format!("`{}` is not a URL ({e})", raw.url)))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err(bad_url(format!(
            "`{}` must look like http://host:port or https://host",
            raw.url
        )));
    }
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        // It would be logged with every upstream error; and a password for
        // the upstream belongs in the upstream's own config.
        return Err(bad_url(
            "must not carry a user or password (user@host)".to_owned(),
        ));
    }
    if url.query().is_some() {
        return Err(bad_url(format!("`{}` must not have a query", raw.url)));
    }
    let user_header = http::HeaderName::from_bytes(raw.user_header.as_bytes()).map_err(|_| {
        KeyError::new(
            "[upstream] user_header",
            format!("`{}` is not a header name", raw.user_header),
        )
    })?;
    if crate::path::canonicalize(url.path()).map_or(true, |c| c != url.path()) {
        return Err(bad_url(format!(
            "`{}`: the path must be canonical (no dot segments, //, %2F)",
            raw.url
        )));
    }
    let untrusted_headers = header_patterns(
        "[upstream] untrusted_headers",
        raw.untrusted_headers.as_deref(),
        super::settings::DEFAULT_UNTRUSTED_HEADERS,
    )?;
    let identity_headers = header_patterns(
        "[upstream] identity_headers",
        raw.identity_headers.as_deref(),
        super::settings::DEFAULT_IDENTITY_HEADERS,
    )?;
    Ok(UpstreamSettings {
        url,
        timeout: nonzero_duration("[upstream] timeout", &raw.timeout)?,
        connect_timeout: nonzero_duration("[upstream] connect_timeout", &raw.connect_timeout)?,
        user_header,
        forward_authorization: raw.forward_authorization,
        ca: raw.ca.as_deref().map(resolve),
        tunnel_idle_timeout: nonzero_duration(
            "[upstream] tunnel_idle_timeout",
            &raw.tunnel_idle_timeout,
        )?,
        underscores_in_headers: raw.underscores_in_headers,
        preserve_host: raw.preserve_host,
        untrusted_headers,
        identity_headers,
    })
}

/// A list of header names and `prefix*` patterns, or the defaults.
fn header_patterns(
    key: &str,
    names: Option<&[String]>,
    defaults: &[&str],
) -> Result<Vec<HeaderPattern>, KeyError> {
    let parse = |name: &str| {
        HeaderPattern::parse(name).ok_or_else(|| {
            KeyError::new(
                key,
                format!("`{name}` is not a header name (or a prefix ending in *)"),
            )
        })
    };
    match names {
        Some(names) => names.iter().map(|n| parse(n)).collect(),
        None => defaults.iter().map(|n| parse(n)).collect(),
    }
}

pub(super) fn nonzero_duration(key: &str, text: &str) -> Result<Duration, KeyError> {
    let value = duration(key, text)?;
    if value.is_zero() {
        return Err(KeyError::new(key, "must be longer than zero"));
    }
    Ok(value)
}

/// A `{ per_second, burst }` table (burst defaults to twice the rate), `true`
/// for the default rate, or `false` for off.
pub(super) fn rate(
    key: &str,
    setting: &raw::RateSetting,
    default: Option<Rate>,
) -> Result<Option<Rate>, KeyError> {
    let raw = match setting {
        raw::RateSetting::Switch(false) => return Ok(None),
        raw::RateSetting::Switch(true) => return Ok(default),
        raw::RateSetting::Rate(raw) => *raw,
    };
    let burst = raw.burst.unwrap_or(raw.per_second.saturating_mul(2));
    if raw.per_second == 0 || burst == 0 {
        return Err(KeyError::new(
            key,
            "per_second and burst must be at least 1 (use `false` to turn the limit off)",
        ));
    }
    Ok(Some(Rate::new(raw.per_second, burst)))
}

/// An IP network (`10.0.0.0/8`) or a single address (taken as /32 or /128).
pub(super) fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}
