//! gatehouse as an OAuth 2.0 authorization server for client credentials,
//! called by `requests-oauthlib` as machine clients write it, and by hand
//! for every RFC 6749 §5.2 error.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Gatehouse, TestDir, cheap_hash, client, client_from, upstream};
use crate::tokens::{gen_key, python, reload};

const SECRET: &str = "s3cret with spaces & symbols:+%";

/// `[tokens]` and `[oauth]` with a confidential client `ci-bot` (client
/// credentials, scopes read and write) and `web`, which may not use them.
fn config(dir: &TestDir, extra: &str) -> std::path::PathBuf {
    gen_key(dir, "signing.pem", "EdDSA");
    dir.config(&format!(
        "[tokens]\nenabled = true\nsigning_key = \"signing.pem\"\n\
         [oauth]\nenabled = true\n\
         [oauth.clients.ci-bot]\nsecret = \"{}\"\ngrant_types = [\"client_credentials\"]\nscopes = [\"read\", \"write\"]\n\
         [oauth.clients.web]\nsecret = \"{}\"\nredirect_uris = [\"urn:ietf:wg:oauth:2.0:oob\"]\ngrant_types = [\"authorization_code\"]\nscopes = [\"read\"]\n{extra}",
        cheap_hash(SECRET),
        cheap_hash("web-secret"),
    ))
}

/// The issue's machine client, as written (with the test CA as `verify`).
#[tokio::test]
async fn requests_oauthlib_client_credentials_as_written() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, ""));
    let script = r#"
import sys
from requests.auth import HTTPBasicAuth
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session
base, cacert, client_id, client_secret = sys.argv[1:5]
s = OAuth2Session(client=BackendApplicationClient(client_id=client_id))
token = s.fetch_token(token_url=f"{base}/oauth/token", auth=HTTPBasicAuth(client_id, client_secret), verify=cacert)
r = s.get(f"{base}/api/whoami", verify=cacert)
print(r.status_code, r.json()["user"], token["token_type"], token["expires_in"], " ".join(token["scope"]))
"#;
    let base = server.url("");
    let out = python(
        script,
        &[
            base.trim_end_matches('/'),
            dir.path("cert.pem").to_str().unwrap(),
            "ci-bot",
            SECRET,
        ],
    );
    assert_eq!(out, "200 ci-bot Bearer 900 read write");
}

async fn token_request(
    http: &reqwest::Client,
    server: &Gatehouse,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    token_request_with(http, server, basic, form, true).await
}

/// `encode`: form-encode the Basic credentials as RFC 6749 §2.3.1 says
/// (requests' HTTPBasicAuth does not).
async fn token_request_with(
    http: &reqwest::Client,
    server: &Gatehouse,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
    encode: bool,
) -> (StatusCode, Option<String>, Value) {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut request = http
        .post(server.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        // RFC 6749 §2.3.1: form-encode, then Basic.
        let enc = |s: &str| match encode {
            true => form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>(),
            false => s.to_owned(),
        };
        request = request.basic_auth(enc(id), Some(enc(secret)));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == StatusCode::TOO_MANY_REQUESTS {
        return (status, challenge, Value::Null);
    }
    assert_eq!(response.headers()["cache-control"], "no-store");
    (status, challenge, response.json().await.unwrap())
}

/// Basic credentials, the form, then the status, the `error` and whether
/// a Basic challenge comes with it.
type Case<'a> = (
    Option<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    u16,
    &'a str,
    bool,
);

#[tokio::test]
async fn token_endpoint_errors_follow_rfc_6749_section_5_2() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, ""));
    let http = client(&dir.cert_pem);
    let cc = [("grant_type", "client_credentials")];
    // Basic with and without §2.3.1's form-encoding both work.
    for encode in [true, false] {
        let (status, _, body) =
            token_request_with(&http, &server, Some(("ci-bot", SECRET)), &cc, encode).await;
        assert_eq!(status, StatusCode::OK, "encode={encode}: {body}");
    }
    // client_secret_post works too, and scope narrows.
    let (status, _, body) = token_request(
        &http,
        &server,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "ci-bot"),
            ("client_secret", SECRET),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (StatusCode::OK, Some("read"))
    );
    let cases: Vec<Case> = vec![
        (
            Some(("ci-bot", SECRET)),
            vec![],
            400,
            "invalid_request",
            false,
        ),
        (
            Some(("ci-bot", SECRET)),
            vec![("grant_type", "password")],
            400,
            "unsupported_grant_type",
            false,
        ),
        (
            Some(("ci-bot", "wrong")),
            cc.to_vec(),
            401,
            "invalid_client",
            true,
        ),
        (
            None,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "ci-bot"),
                ("client_secret", "wrong"),
            ],
            400,
            "invalid_client",
            false,
        ),
        (
            Some(("nobody", SECRET)),
            cc.to_vec(),
            401,
            "invalid_client",
            true,
        ),
        (None, cc.to_vec(), 400, "invalid_client", false),
        (
            Some(("web", "web-secret")),
            cc.to_vec(),
            400,
            "unauthorized_client",
            false,
        ),
        (
            Some(("ci-bot", SECRET)),
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "read admin"),
            ],
            400,
            "invalid_scope",
            false,
        ),
        (
            Some(("ci-bot", SECRET)),
            vec![
                ("grant_type", "client_credentials"),
                ("client_secret", SECRET),
            ],
            400,
            "invalid_request",
            false,
        ),
        // The other grants' §5.2 errors (the flows themselves are in
        // oauth_code.rs).
        (
            Some(("ci-bot", SECRET)),
            vec![("grant_type", "authorization_code"), ("code", "x")],
            400,
            "unauthorized_client",
            false,
        ),
        (
            Some(("web", "web-secret")),
            vec![("grant_type", "authorization_code")],
            400,
            "invalid_request",
            false,
        ),
        (
            Some(("web", "web-secret")),
            vec![("grant_type", "authorization_code"), ("code", "made-up")],
            400,
            "invalid_grant",
            false,
        ),
        (
            Some(("web", "web-secret")),
            vec![("grant_type", "refresh_token"), ("refresh_token", "x")],
            400,
            "unauthorized_client",
            false,
        ),
        (
            Some(("ci-bot", SECRET)),
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_request",
            false,
        ),
    ];
    for (basic, form, want_status, want_error, challenged) in cases {
        let (status, challenge, body) = token_request(&http, &server, basic, &form).await;
        assert_eq!(status.as_u16(), want_status, "{basic:?} {form:?}: {body}");
        assert_eq!(body["error"], want_error, "{basic:?} {form:?}");
        assert_eq!(
            challenge.is_some(),
            challenged,
            "{basic:?} {form:?}: {challenge:?}"
        );
    }
    // An empty parameter is as if omitted: all the client's scopes.
    let (status, _, body) = token_request(
        &http,
        &server,
        Some(("ci-bot", SECRET)),
        &[("grant_type", "client_credentials"), ("scope", "")],
    )
    .await;
    assert_eq!(
        (status, body["scope"].as_str()),
        (StatusCode::OK, Some("read write"))
    );
    let not_form = http
        .post(server.url("/oauth/token"))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_form.status(), StatusCode::BAD_REQUEST);
    // The metadata names the endpoints.
    let metadata: Value = http
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        metadata["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/token")
    );
    assert!(
        metadata["jwks_uri"]
            .as_str()
            .unwrap()
            .ends_with("/.well-known/jwks.json")
    );
    assert_eq!(
        metadata["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    // No secret in the log.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.logs().contains("s3cret"));
}

/// A flood of wrong client secrets costs what a flood of wrong passwords
/// costs: max_failures verifications, then 429.
#[tokio::test]
async fn a_flood_of_wrong_client_secrets_is_locked_out() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "[lockout]\nmax_failures = 3\n"));
    let attacker = client_from(&dir.cert_pem, "127.0.0.51");
    let mut statuses = Vec::new();
    for i in 0..15 {
        let (status, _, _) = token_request(
            &attacker,
            &server,
            Some(("ci-bot", &format!("guess-{i}"))),
            &[("grant_type", "client_credentials")],
        )
        .await;
        statuses.push(status.as_u16());
    }
    assert_eq!(&statuses[..3], &[401, 401, 401], "{statuses:?}");
    assert!(statuses[3..].iter().all(|&s| s == 429), "{statuses:?}");
    let stats = crate::common::stats(&server, &dir.cert_pem).await;
    assert_eq!(
        stats["failed_verifications"].as_u64().unwrap(),
        3,
        "{stats}"
    );
}

/// In sidecar mode the upstream learns the client and its scopes; a
/// client-sent X-Forwarded-Scopes never reaches it. A changed secret
/// (reload) revokes the client's tokens.
#[tokio::test]
async fn scopes_reach_the_upstream_and_a_new_secret_revokes() {
    let upstream = upstream::start().await;
    let dir = TestDir::new();
    let config = config(&dir, &format!("[upstream]\nurl = \"http://{upstream}\"\n"));
    let server = Gatehouse::start(&config);
    let http = client(&dir.cert_pem);
    let (_, _, body) = token_request(
        &http,
        &server,
        Some(("ci-bot", SECRET)),
        &[("grant_type", "client_credentials"), ("scope", "write")],
    )
    .await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let seen: Value = http
        .get(server.url("/app"))
        .bearer_auth(&token)
        .header("x-forwarded-scopes", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["headers"]["x-forwarded-user"], "ci-bot");
    assert_eq!(seen["headers"]["x-forwarded-scopes"], "write");
    // Narrower scopes: tokens issued before die at the reload.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("scopes = [\"read\", \"write\"]", "scopes = [\"read\"]", 1),
    )
    .unwrap();
    reload(&server).await;
    let status = app_status(&http, &server, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "scopes narrowed");
    let (_, _, body) = token_request(
        &http,
        &server,
        Some(("ci-bot", SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(body["scope"], "read");
    let token = body["access_token"].as_str().unwrap().to_owned();
    // A new secret: the old token dies at the reload.
    let text = std::fs::read_to_string(&config).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("secret = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &config,
        text.replacen(&old, &format!("secret = \"{}\"", cheap_hash("rotated")), 1),
    )
    .unwrap();
    reload(&server).await;
    let status = app_status(&http, &server, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A client id that is a username is refused: the upstream could not tell
/// the client's requests from the user's.
#[test]
fn a_client_may_not_be_named_like_a_user() {
    let dir = TestDir::new();
    gen_key(&dir, "signing.pem", "EdDSA");
    let config = dir.config(&format!(
        "[tokens]\nenabled = true\nsigning_key = \"signing.pem\"\n[oauth]\nenabled = true\n[oauth.clients.alice]\nsecret = \"{}\"\ngrant_types = [\"client_credentials\"]\nscopes = [\"read\"]\n",
        cheap_hash("x")
    ));
    let Err(error) = gatehouse::config::Config::load(&config) else {
        panic!("accepted a client named like a user");
    };
    assert!(
        error.to_string().contains("[oauth.clients.alice]"),
        "{error}"
    );
}

/// The status of `GET /app` with `token`.
async fn app_status(http: &reqwest::Client, server: &Gatehouse, token: &str) -> StatusCode {
    http.get(server.url("/app"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}
