//! Hostile and malformed Authorization headers: each gets a 401 with the
//! challenge (never a 5xx, never a crash), and the server keeps answering.

use crate::common::{Gatehouse, TestDir, client};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};

fn basic(raw: &[u8]) -> Vec<u8> {
    let mut value = b"Basic ".to_vec();
    value.extend(STANDARD.encode(raw).bytes());
    value
}

fn cases() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let one = |v: &[u8]| vec![v.to_vec()];
    vec![
        ("empty value", one(b"")),
        ("scheme only", one(b"Basic")),
        ("scheme and space only", one(b"Basic ")),
        ("bearer scheme", one(b"Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")),
        (
            "digest scheme",
            one(b"Digest username=\"alice\", realm=\"gatehouse\""),
        ),
        (
            "negotiate scheme with basic token",
            one(b"Negotiate YWxpY2U6c2VjcmV0"),
        ),
        ("no space after scheme", one(b"BasicYWxpY2U6c2VjcmV0")),
        ("tab after scheme", one(b"Basic\tYWxpY2U6c2VjcmV0")),
        ("invalid base64 characters", one(b"Basic !!!!")),
        ("url-safe alphabet", one(b"Basic -_-_")),
        ("percent-encoded token", one(b"Basic YWxp%20Y2U6c2VjcmV0")),
        ("truncated base64", one(b"Basic Y")),
        ("padding only", one(b"Basic ====")),
        ("excess padding", one(b"Basic YWxpY2U6c2VjcmV0====")),
        ("trailing comma", one(b"Basic YWxpY2U6c2VjcmV0,")),
        ("two tokens", one(b"Basic YWxpY2U6 c2VjcmV0")),
        (
            "token then auth-param",
            one(b"Basic YWxpY2U6c2VjcmV0 realm=x"),
        ),
        ("raw latin-1 bytes", one(b"Basic \xe4\xf6\xfc")),
        ("no colon", one(&basic(b"alice"))),
        ("empty username", one(&basic(b":secret"))),
        ("empty everything", one(&basic(b":"))),
        ("NUL in username", one(&basic(b"ali\0ce:secret"))),
        ("newline in username", one(&basic(b"ali\nce:secret"))),
        ("CR in username", one(&basic(b"alice\r:secret"))),
        ("DEL in username", one(&basic(b"alice\x7f:secret"))),
        (
            "ESC sequence in username",
            one(&basic(b"\x1b[31malice:secret")),
        ),
        ("binary garbage", one(&basic(b"\xff\xfe\x00:\x00\x01"))),
        (
            "right user, trailing newline in password",
            one(&basic(b"alice:secret\n")),
        ),
        ("right user, wrong password", one(&basic(b"alice:Secret"))),
        ("username with spaces", one(&basic(b" alice :secret"))),
        ("very long username", one(&basic(&[b'a'; 2500]))),
        (
            "oversized header",
            one(&[b"Basic ".as_slice(), &[b'A'; 10_000]].concat()),
        ),
        (
            "duplicate valid headers",
            vec![basic(b"alice:secret"), basic(b"alice:secret")],
        ),
        (
            "valid and invalid headers",
            vec![basic(b"alice:secret"), b"Basic !!!!".to_vec()],
        ),
    ]
}

#[tokio::test]
async fn every_malformed_header_gets_401_with_the_challenge() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let http = client(&dir.cert_pem);
    let url = server.url("/api/whoami");
    let cases = cases();
    assert!(cases.len() >= 25);
    for (name, values) in cases {
        let mut request = http.get(&url);
        for value in &values {
            request = request.header(
                AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("header value"),
            );
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"gatehouse\", charset=\"UTF-8\"",
            "{name}"
        );
        let body = response.text().await.unwrap();
        assert_eq!(
            body, "401 Unauthorized\n",
            "{name}: the body must not echo anything"
        );
    }
    // Still alive and still letting the right user in.
    let ok = http
        .get(&url)
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn lowercase_scheme_and_unpadded_token_are_accepted() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let http = client(&dir.cert_pem);
    // "bob:pässwörd" is 14 UTF-8 bytes, so its base64 ends in "==": strip it.
    let bob = STANDARD.encode("bob:pässwörd".as_bytes());
    for value in [
        "basic YWxpY2U6c2VjcmV0".to_owned(),
        format!("BASIC {}", bob.trim_end_matches('=')),
    ] {
        let response = http
            .get(server.url("/api/whoami"))
            .header(AUTHORIZATION, value.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{value}");
    }
}
