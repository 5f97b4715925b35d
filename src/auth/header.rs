//! RFC 7617 `Authorization: Basic` parsing: a pure function, no I/O.
//!
//! Every way a header can be wrong maps to one [`HeaderError`]; the layer
//! answers all of them the same way (401 with a challenge), but the variants
//! let tests and logs say *why* without ever echoing the credentials.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::secret::Password;

/// The largest `Authorization` header value accepted, in bytes.
///
/// 4 KiB holds a 3 KiB `user:password` pair, far beyond any real password;
/// anything longer is refused before it is decoded.
pub const MAX_HEADER_LEN: usize = 4096;

/// Standard base64 that accepts the token with or without `=` padding, as
/// some clients strip it; the alphabet itself stays strict.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A username and password decoded from a `Basic` header.
///
/// `Debug` shows the username only: the password never reaches a log line.
pub struct Credentials {
    /// The user-id: non-empty, without control characters or colons.
    pub username: String,
    /// The password: anything after the first colon, possibly empty.
    pub password: Password,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why an `Authorization` header was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No `Authorization` header at all.
    #[error("no Authorization header")]
    Missing,
    /// More than one `Authorization` header: ambiguous, so refused.
    #[error("more than one Authorization header")]
    Duplicate,
    /// The header is longer than [`MAX_HEADER_LEN`].
    #[error("Authorization header too long")]
    TooLong,
    /// The scheme is not `Basic` (or there is no token after it).
    #[error("Authorization scheme is not Basic")]
    NotBasic,
    /// The token is not valid base64.
    #[error("credentials are not valid base64")]
    InvalidBase64,
    /// The decoded credentials contain no colon.
    #[error("credentials contain no colon")]
    NoColon,
    /// The username is empty.
    #[error("empty username")]
    EmptyUsername,
    /// The username contains a control character (NUL, CR, LF, DEL, …).
    #[error("username contains a control character")]
    ControlCharacter,
}

/// Reads the Basic credentials from a request's headers.
///
/// Follows RFC 7617: the scheme is case-insensitive, the username ends at the
/// first colon and the password may hold further colons. Credentials are read
/// as UTF-8 (the challenge asks for `charset="UTF-8"`); bytes that are not
/// valid UTF-8 are read as ISO-8859-1, which is what Python `requests` and
/// some older browsers send, so a non-ASCII password works from either.
///
/// ```
/// use gatehouse::auth::header::parse_authorization;
/// let mut headers = http::HeaderMap::new();
/// headers.insert("authorization", "Basic YWxpY2U6czNjcjN0OjE=".parse().unwrap());
/// let creds = parse_authorization(&headers).unwrap();
/// assert_eq!(creds.username, "alice");
/// assert_eq!(creds.password.as_str(), "s3cr3t:1");
/// ```
pub fn parse_authorization(headers: &HeaderMap) -> Result<Credentials, HeaderError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(HeaderError::Missing)?;
    if values.next().is_some() {
        return Err(HeaderError::Duplicate);
    }
    parse_basic(value.as_bytes())
}

/// Parses one `Authorization` header value (`Basic <token68>`).
pub fn parse_basic(value: &[u8]) -> Result<Credentials, HeaderError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(HeaderError::TooLong);
    }
    let token = basic_token(value).ok_or(HeaderError::NotBasic)?;
    let decoded = BASE64
        .decode(token)
        .map_err(|_| HeaderError::InvalidBase64)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(HeaderError::NoColon)?;
    if colon == 0 {
        return Err(HeaderError::EmptyUsername);
    }
    let username = text_from_bytes(&decoded[..colon]);
    if username.chars().any(char::is_control) {
        return Err(HeaderError::ControlCharacter);
    }
    let password = match String::from_utf8(decoded) {
        // The usual case: the password keeps the decoded buffer, shifted
        // left past the colon, instead of being copied.
        Ok(mut text) => {
            text.drain(..=colon);
            text
        }
        // Mixed or Latin-1: each part is read on its own.
        Err(not_utf8) => text_from_bytes(&not_utf8.as_bytes()[colon + 1..]),
    };
    let password = Password::new(password);
    Ok(Credentials { username, password })
}

/// The token after a case-insensitive `Basic` scheme and at least one space.
fn basic_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"basic";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    // token68 is one word: a space inside means extra auth-params, not Basic.
    if token.is_empty() || token.contains(&b' ') {
        return None;
    }
    Some(token)
}

/// UTF-8 if the bytes are valid UTF-8, ISO-8859-1 otherwise (every byte is a
/// code point there, so this never fails).
fn text_from_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &[u8]) -> Vec<u8> {
        let mut v = b"Basic ".to_vec();
        v.extend(
            base64::engine::general_purpose::STANDARD
                .encode(raw)
                .bytes(),
        );
        v
    }

    fn ok(value: &[u8]) -> (String, String) {
        let c = parse_basic(value).expect("should parse");
        (c.username, c.password.as_str().to_owned())
    }

    #[test]
    fn plain_credentials() {
        assert_eq!(
            ok(&basic(b"alice:secret")),
            ("alice".into(), "secret".into())
        );
    }

    #[test]
    fn password_keeps_later_colons() {
        assert_eq!(ok(&basic(b"alice:a:b:c")), ("alice".into(), "a:b:c".into()));
    }

    #[test]
    fn empty_password_is_allowed() {
        assert_eq!(ok(&basic(b"alice:")), ("alice".into(), String::new()));
    }

    #[test]
    fn scheme_is_case_insensitive_and_spaces_are_tolerated() {
        for scheme in ["basic", "BASIC", "bAsIc"] {
            let v = format!("{scheme}   YWxpY2U6c2VjcmV0  ");
            assert_eq!(ok(v.as_bytes()).0, "alice");
        }
    }

    #[test]
    fn missing_padding_is_accepted() {
        // "alice:s" encodes to "YWxpY2U6cw==".
        assert_eq!(ok(b"Basic YWxpY2U6cw").1, "s");
    }

    #[test]
    fn utf8_credentials() {
        assert_eq!(
            ok(&basic("jörg:pässwörd€".as_bytes())),
            ("jörg".into(), "pässwörd€".into())
        );
    }

    #[test]
    fn utf8_username_with_latin1_password() {
        assert_eq!(
            ok(&basic(b"j\xc3\xb6rg:p\xe4ss")),
            ("jörg".into(), "päss".into())
        );
        assert_eq!(
            ok(&basic(b"j\xf6rg:p\xc3\xa4ss")),
            ("jörg".into(), "päss".into())
        );
    }

    #[test]
    fn latin1_credentials_are_converted() {
        // "pässwörd" in ISO-8859-1, as Python requests sends it.
        assert_eq!(ok(&basic(b"alice:p\xe4ssw\xf6rd")).1, "pässwörd");
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], HeaderError)] = &[
            (b"", HeaderError::NotBasic),
            (b"Basic", HeaderError::NotBasic),
            (b"Basic ", HeaderError::NotBasic),
            (b"Bearer abc", HeaderError::NotBasic),
            (b"BasicYWxpY2U6c2VjcmV0", HeaderError::NotBasic),
            (b"Basic YWxp Y2U6", HeaderError::NotBasic),
            (b"Basic !!!!", HeaderError::InvalidBase64),
            (b"Basic YWxpY2U", HeaderError::NoColon),
        ];
        for (value, want) in cases {
            assert_eq!(parse_basic(value).unwrap_err(), *want, "{value:?}");
        }
        assert_eq!(
            parse_basic(&basic(b":pw")).unwrap_err(),
            HeaderError::EmptyUsername
        );
        assert_eq!(
            parse_basic(&basic(b"a\0b:pw")).unwrap_err(),
            HeaderError::ControlCharacter
        );
        assert_eq!(
            parse_basic(&basic(b"a\nb:pw")).unwrap_err(),
            HeaderError::ControlCharacter
        );
        let long = basic(&vec![b'a'; MAX_HEADER_LEN]);
        assert_eq!(parse_basic(&long).unwrap_err(), HeaderError::TooLong);
    }

    #[test]
    fn header_map_missing_and_duplicate() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            parse_authorization(&headers).unwrap_err(),
            HeaderError::Missing
        );
        headers.append(AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
        assert!(parse_authorization(&headers).is_ok());
        headers.append(AUTHORIZATION, "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
        assert_eq!(
            parse_authorization(&headers).unwrap_err(),
            HeaderError::Duplicate
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = parse_basic(&basic(b"alice:hunter2")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_basic(&bytes);
        }

        #[test]
        fn never_panics_after_the_scheme(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut v = b"Basic ".to_vec();
            v.extend(bytes);
            let _ = parse_basic(&v);
        }

        #[test]
        fn round_trips_any_valid_pair(user in "[^:\\p{Cc}]{1,40}", pass in "\\PC{0,60}") {
            let raw = format!("{user}:{pass}");
            let c = parse_basic(&basic(raw.as_bytes())).unwrap();
            proptest::prop_assert_eq!(c.username, user);
            proptest::prop_assert_eq!(c.password.as_str(), pass.as_str());
        }
    }
}
