//! Which credential a request presents: `Authorization: Basic …`,
//! `Authorization: Bearer …` (a JWT or an API key), or the API-key header.
//! Pure and strict: one credential per request, one header of each kind.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};

/// The longest bearer value accepted (a gatehouse JWT is ~400 bytes).
pub const MAX_BEARER_LEN: usize = 4096;

/// The credential a request presents.
#[derive(PartialEq, Eq)]
pub enum Presented<'a> {
    /// An `Authorization` value that is not `Bearer`: for the Basic parser.
    Basic(&'a [u8]),
    /// `Authorization: Bearer <b64token>`.
    Bearer(&'a str),
    /// The API-key header's value.
    ApiKey(&'a str),
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Basic(_) => "Basic(..)",
            Self::Bearer(_) => "Bearer(..)",
            Self::ApiKey(_) => "ApiKey(..)",
        })
    }
}

/// Why no single credential could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PresentedError {
    /// Nothing presented.
    #[error("no credentials")]
    Missing,
    /// Two `Authorization` headers, two key headers, or one of each.
    #[error("more than one credential")]
    Ambiguous,
    /// A bearer value or key that is not a b64token (RFC 6750 §2.1), or too
    /// long.
    #[error("malformed bearer credential")]
    Malformed,
}

/// RFC 6750 b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(value: &[u8]) -> bool {
    let body_end = value.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body_end > 0
        && value.len() <= MAX_BEARER_LEN
        && value[..body_end]
            .iter()
            .fold(true, |all, &b| all & b64token_byte(b))
}

/// Whether `b` may appear in a b64token (RFC 6750 §2.1) before its `=`
/// padding. Written without short-circuits, and folded without an early
/// exit below, so that the check over a token's few hundred bytes
/// vectorises.
fn b64token_byte(b: u8) -> bool {
    b.is_ascii_lowercase()
        | b.is_ascii_uppercase()
        | b.is_ascii_digit()
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

/// The one credential `headers` present. `api_key_header` is the key
/// header's name when API keys are on.
pub fn presented<'a>(
    headers: &'a HeaderMap,
    api_key_header: Option<&HeaderName>,
) -> Result<Presented<'a>, PresentedError> {
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    let auth = authorization.next();
    if authorization.next().is_some() {
        return Err(PresentedError::Ambiguous);
    }
    let key = match api_key_header {
        Some(name) => {
            let mut keys = headers.get_all(name).iter();
            let key = keys.next();
            if keys.next().is_some() {
                return Err(PresentedError::Ambiguous);
            }
            key
        }
        None => None,
    };
    match (auth, key) {
        (Some(_), Some(_)) => Err(PresentedError::Ambiguous),
        (None, None) => Err(PresentedError::Missing),
        (None, Some(key)) => {
            let bytes = key.as_bytes();
            if is_b64token(bytes) {
                std::str::from_utf8(bytes)
                    .map(Presented::ApiKey)
                    .map_err(|_| PresentedError::Malformed)
            } else {
                Err(PresentedError::Malformed)
            }
        }
        (Some(auth), None) => {
            let bytes = auth.as_bytes();
            let Some(space) = bytes.iter().position(|&b| b == b' ') else {
                return Ok(Presented::Basic(bytes));
            };
            if !bytes[..space].eq_ignore_ascii_case(b"bearer") {
                return Ok(Presented::Basic(bytes));
            }
            let token = &bytes[space + 1..];
            if !is_b64token(token) {
                return Err(PresentedError::Malformed);
            }
            std::str::from_utf8(token)
                .map(Presented::Bearer)
                .map_err(|_| PresentedError::Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_b64token_bytes_are_rfc_6750s_set() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(b64token_byte(b), expected, "byte {b}");
        }
    }
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn one_credential_each_way() {
        let key = HeaderName::from_static("x-api-key");
        let h = headers(&[("authorization", b"Bearer abc.def-_~+/==")]);
        assert_eq!(
            presented(&h, Some(&key)),
            Ok(Presented::Bearer("abc.def-_~+/=="))
        );
        let h = headers(&[("authorization", b"bEaReR abc")]);
        assert_eq!(presented(&h, None), Ok(Presented::Bearer("abc")));
        let h = headers(&[("authorization", b"Basic YWxpY2U6eA==")]);
        assert_eq!(
            presented(&h, None),
            Ok(Presented::Basic(b"Basic YWxpY2U6eA=="))
        );
        let h = headers(&[("x-api-key", b"gh_abc")]);
        assert_eq!(presented(&h, Some(&key)), Ok(Presented::ApiKey("gh_abc")));
        assert_eq!(presented(&h, None), Err(PresentedError::Missing));
    }

    #[test]
    fn ambiguity_and_malformed_values_are_refused() {
        let key = HeaderName::from_static("x-api-key");
        for (pairs, want) in [
            (
                vec![
                    ("authorization", &b"Bearer a"[..]),
                    ("authorization", b"Bearer b"),
                ],
                PresentedError::Ambiguous,
            ),
            (
                vec![("x-api-key", &b"a"[..]), ("x-api-key", b"b")],
                PresentedError::Ambiguous,
            ),
            (
                vec![("authorization", &b"Bearer a"[..]), ("x-api-key", b"b")],
                PresentedError::Ambiguous,
            ),
            (
                vec![("authorization", &b"Bearer "[..])],
                PresentedError::Malformed,
            ),
            (
                vec![("authorization", &b"Bearer  a"[..])],
                PresentedError::Malformed,
            ),
            (
                vec![("authorization", &b"Bearer a b"[..])],
                PresentedError::Malformed,
            ),
            (
                vec![("authorization", &b"Bearer ==="[..])],
                PresentedError::Malformed,
            ),
            (
                vec![("authorization", &b"Bearer a=b"[..])],
                PresentedError::Malformed,
            ),
            (
                vec![("authorization", &b"Bearer \xffa"[..])],
                PresentedError::Malformed,
            ),
            (vec![("x-api-key", &b"a,b"[..])], PresentedError::Malformed),
        ] {
            assert_eq!(
                presented(&headers(&pairs), Some(&key)),
                Err(want),
                "{pairs:?}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_BEARER_LEN + 1));
        let h = headers(&[("authorization", long.as_bytes())]);
        assert_eq!(presented(&h, None), Err(PresentedError::Malformed));
    }
}
