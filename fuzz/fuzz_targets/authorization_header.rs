//! Any bytes as an `Authorization` header value: parsing never panics, and
//! whatever parses has a non-empty username without control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(credentials) = gatehouse::auth::header::parse_basic(data) {
        assert!(!credentials.username.is_empty());
        assert!(!credentials.username.chars().any(char::is_control));
        assert!(!credentials.username.contains(':'));
    }
});
