//! The one canonical form of a request path.
//!
//! A path is made canonical once per request, before anything looks at it;
//! the public-path match, the proxy and the file server all see the same
//! string afterwards, so an upstream can never be handed a path other than
//! the one that was checked. The rules:
//!
//! - percent-encoded unreserved characters (`%2e`, `%41`, …) are decoded, and
//!   every other escape is written with upper-case hex;
//! - bytes that may not stand in a path (space, `"`, `<`, non-ASCII, …) are
//!   percent-encoded;
//! - `.` and `..` segments (however spelled) are resolved; climbing above
//!   the root is refused;
//! - empty segments (`//`) are collapsed;
//! - refused outright, because some upstream would read them as a separator
//!   or a dot segment that was never checked: encoded `/` and `\` (`%2F`,
//!   `%5C`, as Apache refuses by default), a literal `\`, control
//!   characters (also encoded, `%00`), malformed escapes, and dot segments
//!   carrying `;` parameters (`..;/`, which Tomcat and Jetty resolve).

use std::borrow::Cow;
use std::fmt;

/// Why a path has no canonical form (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// It does not start with `/` (`*`, or an empty path).
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a separator hidden from the matcher.
    EncodedSeparator,
    /// A literal `\`.
    Backslash,
    /// A control character, literal or encoded.
    ControlCharacter,
    /// A dot segment with `;` parameters (`..;x`).
    DotSegmentParameters,
    /// `..` past the root.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the path does not start with /",
            Self::BadEscape => "a % is not followed by two hex digits",
            Self::EncodedSeparator => "encoded / or \\ (%2F, %5C) is not accepted",
            Self::Backslash => "\\ is not accepted in a path",
            Self::ControlCharacter => "control characters are not accepted in a path",
            Self::DotSegmentParameters => "a dot segment with ; parameters is not accepted",
            Self::AboveRoot => "the path climbs above the root",
        })
    }
}

impl std::error::Error for PathError {}

/// `path` in canonical form, borrowed when it already was.
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    // Whether the result ends with `/`: a trailing slash, or a last segment
    // that was `.` or `..` (`/a/b/..` is the directory `/a/`).
    let mut trailing = false;
    for raw in path[1..].split('/') {
        let segment = normalise_segment(raw)?;
        trailing = false;
        match segment.as_str() {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing = true;
            }
            _ => {
                // `%3B` too: an upstream that decodes before it strips
                // parameters would read `..%3Bx` as `..;x`.
                let before_params = segment
                    .split(';')
                    .next()
                    .and_then(|s| s.split("%3B").next())
                    .unwrap_or("");
                if before_params == "." || before_params == ".." {
                    return Err(PathError::DotSegmentParameters);
                }
                segments.push(segment);
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The common case, checked without allocating: only unreserved characters,
/// sub-delimiters other than `;`, `:`, `@` and single slashes, and no
/// segment that starts with a dot.
fn is_plain(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut previous = b'/';
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        let ok = match b {
            b'/' => previous != b'/',
            // A segment starting with `.` may be a dot segment.
            b'.' => previous != b'/',
            b if b.is_ascii_alphanumeric() => true,
            b'-' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b','
            | b'=' | b':' | b'@' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
        previous = bytes[i];
    }
    true
}

/// One segment with its escapes decoded where unreserved, upper-cased
/// elsewhere, and bytes outside `pchar` encoded.
fn normalise_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let decoded = high << 4 | low;
            match decoded {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                d if d < 0x20 || d == 0x7f => return Err(PathError::ControlCharacter),
                d if is_unreserved(d) => out.push(char::from(d)),
                d => push_escape(&mut out, d),
            }
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err(PathError::Backslash),
            b if b < 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
            b if is_unreserved(b) || is_sub_delim(b) || b == b':' || b == b'@' => {
                out.push(char::from(b));
            }
            b => push_escape(&mut out, b),
        }
        i += 1;
    }
    Ok(out)
}

/// A segment of a canonical path with every escape decoded (as a file
/// server reads it).
pub fn decode_segment(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> Result<String, PathError> {
        canonicalize(p).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed() {
        for p in ["/", "/healthz", "/a/b.c/d", "/a/b/", "/x:y@z", "/a.b"] {
            assert!(matches!(canonicalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_in_every_spelling_are_resolved() {
        let base = "/static/public/";
        for dots in ["..", ".%2e", "%2e.", "%2e%2e", "%2E%2E", "%2e%2E"] {
            let p = format!("{base}{dots}/private/secret.txt");
            assert_eq!(canon(&p).unwrap(), "/static/private/secret.txt", "{p}");
        }
        assert_eq!(canon("/a/./b").unwrap(), "/a/b");
        assert_eq!(canon("/a/%2e/b").unwrap(), "/a/b");
        assert_eq!(canon("/a/b/..").unwrap(), "/a/");
        assert_eq!(canon("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(canon("/a/..").unwrap(), "/");
    }

    #[test]
    fn hidden_separators_and_parameters_are_refused() {
        use PathError::*;
        for (p, e) in [
            ("/static/public/..%2fprivate/secret.txt", EncodedSeparator),
            ("/static/public/%2e%2e%2fprivate", EncodedSeparator),
            ("/static/public/..%5cprivate", EncodedSeparator),
            ("/static/public/..\\private", Backslash),
            (
                "/static/public/..;/private/secret.txt",
                DotSegmentParameters,
            ),
            ("/static/public/.;x/y", DotSegmentParameters),
            ("/static/public/%2e%2e;x/private", DotSegmentParameters),
            ("/static/public/..%3b/private", DotSegmentParameters),
            ("/static/public/.%3Bx/private", DotSegmentParameters),
            ("/../private/secret.txt", AboveRoot),
            ("/a/../../b", AboveRoot),
            ("/a%00b", ControlCharacter),
            ("/a%0ab", ControlCharacter),
            ("/a%zz", BadEscape),
            ("/a%2", BadEscape),
            ("*", NotAbsolute),
            ("", NotAbsolute),
        ] {
            assert_eq!(canon(p), Err(e), "{p}");
        }
    }

    #[test]
    fn escapes_are_normalised() {
        assert_eq!(canon("/%41%62c").unwrap(), "/Abc");
        assert_eq!(canon("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(canon("/a b").unwrap(), "/a%20b");
        assert_eq!(canon("/caf\u{e9}").unwrap(), "/caf%C3%A9");
        assert_eq!(canon("/a%252e%252e").unwrap(), "/a%252e%252e");
        assert_eq!(canon("//a///b//").unwrap(), "/a/b/");
        assert_eq!(canon("/a;v=1/b").unwrap(), "/a;v=1/b");
        assert_eq!(canon("/...").unwrap(), "/...");
    }

    proptest::proptest! {
        #[test]
        fn canonical_is_a_fixed_point(p in "/[a-zA-Z0-9./%;:@ _~-]{0,40}") {
            if let Ok(once) = canonicalize(&p) {
                let twice = canon(&once).expect("a canonical path stays canonical");
                proptest::prop_assert_eq!(once.as_ref(), twice.as_str());
                proptest::prop_assert!(!once.split('/').any(|s| s == "." || s == ".."));
                proptest::prop_assert!(!once.contains("//"));
            }
        }
    }
}
