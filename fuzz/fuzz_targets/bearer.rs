//! Any bytes as a bearer credential: the credential reader and the token
//! and API-key checks never panic, and nothing verifies that gatehouse did
//! not sign (the key is made here, so only tokens it signs could pass).
#![no_main]

use std::sync::OnceLock;

use gatehouse::tokens::{ApiKeys, KeyAlgorithm, SigningKey, TokenPolicy, Tokens};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let (key, _) = SigningKey::generate(KeyAlgorithm::EdDsa).expect("a key");
        Tokens::new(TokenPolicy::default(), key, Vec::new())
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, value.clone());
    let key_header = HeaderName::from_static("x-api-key");
    let _ = gatehouse::auth::bearer::presented(&headers, Some(&key_header));
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(tokens().verify(text).is_err(), "a token nobody signed verified");
        assert!(ApiKeys::default().verify(text).is_none());
    }
});
