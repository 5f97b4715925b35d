//! The OAuth 2.0 authorization-code flow: the issue's Python client with
//! the code copied from the out-of-band page, `requests-oauthlib` as a
//! public client with PKCE and refresh tokens, and by hand every refusal:
//! redirect URIs, PKCE, replays, expiry, refresh-token reuse, revocation
//! and the consent form's CSRF protection.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{ALICE, BOB, Gatehouse, TestDir, cheap_hash, client_with};
use crate::tokens::{gen_key, python};

/// `application/x-www-form-urlencoded` bodies (reqwest's `form` feature
/// is not on).
pub(crate) trait FormBody {
    fn form_body<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
            .finish();
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

const CLI_SECRET: &str = "cli secret:+%";

/// `[tokens]` and `[oauth]` with `cli-tool` (confidential, as in the
/// issue), `desktop` (public, PKCE, loopback redirect; a public client is
/// never auto-approved) and `other` (confidential, auto-approved, to steal
/// codes with).
pub(crate) fn config(dir: &TestDir, code_ttl: &str) -> std::path::PathBuf {
    gen_key(dir, "signing.pem", "EdDSA");
    dir.config(&format!(
        "[tokens]\nenabled = true\nsigning_key = \"signing.pem\"\n\
         [oauth]\nenabled = true\ncode_ttl = \"{code_ttl}\"\nrefresh_ttl = \"30d\"\n\
         [oauth.clients.cli-tool]\nname = \"CLI <Tool> & co\"\nsecret = \"{}\"\n\
         redirect_uris = [\"urn:ietf:wg:oauth:2.0:oob\", \"http://127.0.0.1/callback\"]\n\
         grant_types = [\"authorization_code\", \"refresh_token\", \"client_credentials\"]\n\
         scopes = [\"read\", \"read-write\"]\nauto_approve = false\n\
         [oauth.clients.desktop]\nredirect_uris = [\"http://127.0.0.1/callback\"]\n\
         grant_types = [\"authorization_code\", \"refresh_token\"]\nscopes = [\"read\"]\n\
         [oauth.clients.other]\nsecret = \"{}\"\nredirect_uris = [\"https://other.example/cb\"]\n\
         grant_types = [\"authorization_code\"]\nscopes = [\"read\"]\nauto_approve = true\n",
        cheap_hash(CLI_SECRET),
        cheap_hash("other-secret"),
    ))
}

/// A client that shows redirects instead of following them.
pub(crate) fn http(dir: &TestDir) -> reqwest::Client {
    client_with(&dir.cert_pem, |b| {
        b.redirect(reqwest::redirect::Policy::none())
    })
}

/// The issue's authorization-code client code, unmodified but for `base`
/// and `verify`; the person's part (the browser's Basic prompt, the
/// consent form, copying the code from the page) done with requests.
#[tokio::test]
async fn the_oob_authorization_code_flow_as_written() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "60s"));
    let script = r#"
import re, sys, requests
base, cacert, client_id, client_secret, user, password = sys.argv[1:7]
# What the person does in the browser: open the URL, log in, approve.
auth_url = f"{base}/oauth/authorize?client_id={client_id}&redirect_uri=urn:ietf:wg:oauth:2.0:oob&response_type=code&scope=read-write"
page = requests.get(auth_url, auth=(user, password), verify=cacert)
assert page.status_code == 200, page.status_code
assert page.headers["X-Frame-Options"] == "DENY"
assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
assert "CLI &lt;Tool&gt; &amp; co" in page.text and "<Tool>" not in page.text
fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
fields["decision"] = "approve"
shown = requests.post(f"{base}/oauth/authorize", data=fields, auth=(user, password), verify=cacert)
code = re.search(r'<code id="authorization-code">([^<]+)</code>', shown.text).group(1)
# The issue's code, as written.
token_response = requests.post(f"{base}/oauth/token",
    headers={"Content-Type": "application/x-www-form-urlencoded"},
    data={"grant_type": "authorization_code", "code": code,
          "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
          "client_id": client_id, "client_secret": client_secret}, verify=cacert)
access_token = token_response.json()["access_token"]
me = requests.get(f"{base}/api/whoami", headers={"Authorization": f"Bearer {access_token}"}, verify=cacert)
body = token_response.json()
print(me.status_code, me.json()["user"], me.json()["scopes"], body["token_type"], body["scope"],
      "refresh" if body.get("refresh_token") else "none", token_response.headers["Cache-Control"])
"#;
    let base = server.url("");
    let out = python(
        script,
        &[
            base.trim_end_matches('/'),
            dir.path("cert.pem").to_str().unwrap(),
            "cli-tool",
            CLI_SECRET,
            ALICE.0,
            ALICE.1,
        ],
    );
    assert_eq!(
        out,
        "200 alice read-write Bearer read-write refresh no-store"
    );
}

/// requests-oauthlib as a public client: PKCE S256 on a loopback redirect
/// (any port, RFC 8252), then refresh; a spent refresh token presented
/// again revokes the whole family, access tokens included.
#[tokio::test]
async fn requests_oauthlib_public_client_with_pkce_and_refresh() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "60s"));
    let script = r#"
import os, re, sys, requests
# The redirect URI is plain http on loopback, as native apps use (RFC 8252).
os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
from requests_oauthlib import OAuth2Session
base, cacert, client_id, user, password = sys.argv[1:6]
token_url = f"{base}/oauth/token"
s = OAuth2Session(client_id, redirect_uri="http://127.0.0.1:8765/callback", scope=["read"], pkce="S256")
authorization_url, state = s.authorization_url(f"{base}/oauth/authorize")
# The browser: Basic login, the consent page, Approve, the redirect.
page = requests.get(authorization_url, auth=(user, password), verify=cacert)
fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
fields["decision"] = "approve"
r = requests.post(f"{base}/oauth/authorize", data=fields, auth=(user, password), verify=cacert, allow_redirects=False)
assert r.status_code == 303, r.status_code
token = s.fetch_token(token_url, authorization_response=r.headers["Location"], include_client_id=True, verify=cacert)
first = s.get(f"{base}/api/whoami", verify=cacert)
spent = token["refresh_token"]
token2 = s.refresh_token(token_url, client_id=client_id, verify=cacert)
second = s.get(f"{base}/api/whoami", verify=cacert)
assert token2["refresh_token"] != spent and token2["access_token"] != token["access_token"]
# The spent refresh token again: refused, and the family is revoked.
reuse = requests.post(token_url, data={"grant_type": "refresh_token", "refresh_token": spent, "client_id": client_id}, verify=cacert)
after = s.get(f"{base}/api/whoami", verify=cacert)
newest = requests.post(token_url, data={"grant_type": "refresh_token", "refresh_token": token2["refresh_token"], "client_id": client_id}, verify=cacert)
print(first.status_code, first.json()["user"], first.json()["scopes"], second.status_code,
      reuse.status_code, reuse.json()["error"], after.status_code, newest.json()["error"])
"#;
    let base = server.url("");
    let out = python(
        script,
        &[
            base.trim_end_matches('/'),
            dir.path("cert.pem").to_str().unwrap(),
            "desktop",
            ALICE.0,
            ALICE.1,
        ],
    );
    assert_eq!(
        out,
        "200 alice read 200 400 invalid_grant 401 invalid_grant"
    );
}

/// An authorization request as a browser sends it; returns the response.
pub(crate) async fn authorize(
    http: &reqwest::Client,
    server: &Gatehouse,
    query: &[(&str, &str)],
    user: Option<(&str, &str)>,
) -> reqwest::Response {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    let mut request = http.get(server.url(&format!("/oauth/authorize?{query}")));
    if let Some((name, password)) = user {
        request = request.basic_auth(name, Some(password));
    }
    request.send().await.unwrap()
}

/// The query parameters of a redirect's `Location`.
pub(crate) fn location_query(response: &reqwest::Response) -> Vec<(String, String)> {
    let location = response.headers()["location"].to_str().unwrap();
    let query = location.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// PKCE S256 for `verifier`.
pub(crate) fn challenge(verifier: &str) -> String {
    use base64::Engine as _;
    let hash = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.as_ref())
}

pub(crate) const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123";

/// The consent form's fields in `page`.
pub(crate) fn form_fields(page: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for part in page.split("<input type=\"hidden\" name=\"").skip(1) {
        let (name, rest) = part.split_once("\" value=\"").unwrap();
        let (value, _) = rest.split_once('"').unwrap();
        fields.push((name.to_owned(), value.to_owned()));
    }
    fields
}

/// A code for `desktop` (public) with PKCE: the consent page, Approve.
pub(crate) async fn desktop_code(http: &reqwest::Client, server: &Gatehouse) -> String {
    let challenge = challenge(VERIFIER);
    let response = authorize(
        http,
        server,
        &[
            ("client_id", "desktop"),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("response_type", "code"),
            ("state", "s1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        Some(ALICE),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut fields = form_fields(&response.text().await.unwrap());
    fields.push(("decision".into(), "approve".into()));
    let response = http
        .post(server.url("/oauth/authorize"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .form_body(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:9/callback?code="),
        "{location}"
    );
    let pairs = location_query(&response);
    assert_eq!(param(&pairs, "state"), Some("s1"));
    param(&pairs, "code").unwrap().to_owned()
}

pub(crate) async fn token(
    http: &reqwest::Client,
    server: &Gatehouse,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let response = http
        .post(server.url("/oauth/token"))
        .form_body(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) fn redeem_form<'a>(code: &'a str, verifier: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", "http://127.0.0.1:9/callback"),
        ("client_id", "desktop"),
        ("code_verifier", verifier),
    ]
}

/// `desktop` (public) redeems `refresh`; the token endpoint's JSON.
pub(crate) async fn refresh_desktop(
    http: &reqwest::Client,
    server: &Gatehouse,
    refresh: &str,
) -> Value {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
        ("client_id", "desktop"),
    ];
    token(http, server, &form).await.1
}

pub(crate) async fn whoami(http: &reqwest::Client, server: &Gatehouse, token: &str) -> StatusCode {
    http.get(server.url("/api/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// A redirect URI or client in doubt shows a page and never redirects;
/// every other error goes back to the redirect URI with the state.
#[tokio::test]
async fn authorization_requests_are_checked_before_anything_redirects() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "60s"));
    let http = http(&dir);
    let challenge = challenge(VERIFIER);
    let base = |client: &'static str, redirect: &'static str| {
        vec![
            ("client_id", client),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("state", "xyz"),
        ]
    };
    // Pages, no redirect: unknown client, unregistered or altered URIs.
    for (client, redirect) in [
        ("nobody", "http://127.0.0.1/callback"),
        ("desktop", "http://127.0.0.1/callback/../evil"),
        ("desktop", "http://127.0.0.1.evil.example/callback"),
        ("desktop", "http://127.0.0.1@evil.example/callback"),
        ("desktop", "https://127.0.0.1/callback"),
        ("desktop", "http://localhost/callback"),
        ("desktop", "http://127.0.0.1/callback#frag"),
        ("other", "https://other.example/cb?extra=1"),
    ] {
        let response = authorize(&http, &server, &base(client, redirect), Some(ALICE)).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{client} {redirect}"
        );
        assert!(response.headers().get("location").is_none(), "{redirect}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let page = response.text().await.unwrap();
        assert!(page.contains("cannot go on"), "{page}");
    }
    // A repeated parameter is a page too.
    let response = authorize(
        &http,
        &server,
        &[("client_id", "desktop"), ("client_id", "other")],
        Some(ALICE),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get("location").is_none());
    // Errors for the client, redirected with the state.
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            [
                base("desktop", "http://127.0.0.1/callback"),
                vec![
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ],
            ]
            .concat()
            .into_iter()
            .map(|(k, v)| {
                if k == "response_type" {
                    (k, "token")
                } else {
                    (k, v)
                }
            })
            .collect(),
            "unsupported_response_type",
        ),
        (
            [
                base("desktop", "http://127.0.0.1/callback"),
                vec![
                    ("scope", "admin"),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                ],
            ]
            .concat(),
            "invalid_scope",
        ),
        // A public client without PKCE, with plain, or without a method.
        (
            base("desktop", "http://127.0.0.1/callback"),
            "invalid_request",
        ),
        (
            [
                base("desktop", "http://127.0.0.1/callback"),
                vec![
                    ("code_challenge", VERIFIER),
                    ("code_challenge_method", "plain"),
                ],
            ]
            .concat(),
            "invalid_request",
        ),
        (
            [
                base("desktop", "http://127.0.0.1/callback"),
                vec![("code_challenge", &challenge)],
            ]
            .concat(),
            "invalid_request",
        ),
    ];
    for (query, error) in cases {
        let response = authorize(&http, &server, &query, Some(ALICE)).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{query:?}");
        let pairs = location_query(&response);
        assert_eq!(param(&pairs, "error"), Some(error), "{query:?}");
        assert_eq!(param(&pairs, "state"), Some("xyz"));
        assert!(param(&pairs, "code").is_none());
    }
    // No credentials, or wrong ones: the browser's Basic prompt.
    let query = [
        base("desktop", "http://127.0.0.1/callback"),
        vec![
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    ]
    .concat();
    for user in [None, Some(("alice", "wrong"))] {
        let response = authorize(&http, &server, &query, user).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm=")
        );
    }
    // HEAD has no side effects to offer: an auto-approved GET issues a code.
    let head = http
        .head(server.url(
            "/oauth/authorize?client_id=other&redirect_uri=https://other.example/cb&response_type=code",
        ))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(head.headers().get("location").is_none());
    // The metadata names the endpoints and methods.
    let metadata: Value = http
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        metadata["authorization_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/authorize")
    );
    assert!(
        metadata["revocation_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/oauth/revoke")
    );
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        metadata["response_types_supported"],
        serde_json::json!(["code"])
    );
}

/// A code works once, for its client, redirect URI and verifier; a replay
/// revokes what the first redemption bought; an expired code is refused.
#[tokio::test]
async fn codes_are_single_use_and_bound_to_client_redirect_and_verifier() {
    let dir = TestDir::new();
    // Debug logging: the most the server ever says.
    let server = Gatehouse::start_with_env(&config(&dir, "2s"), &[("RUST_LOG", "debug")]);
    let http = http(&dir);
    // A wrong verifier spends the code.
    let code = desktop_code(&http, &server).await;
    let wrong = "another-verifier-of-at-least-forty-three-characters";
    let (status, body) = token(&http, &server, &redeem_form(&code, wrong)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    let (_, body) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    assert_eq!(body["error"], "invalid_grant", "spent by the failed try");
    // No verifier; another redirect URI.
    let code = desktop_code(&http, &server).await;
    let mut form = redeem_form(&code, VERIFIER);
    form.retain(|(k, _)| *k != "code_verifier");
    assert_eq!(
        token(&http, &server, &form).await.1["error"],
        "invalid_grant"
    );
    let code = desktop_code(&http, &server).await;
    let mut form = redeem_form(&code, VERIFIER);
    form[2] = ("redirect_uri", "http://127.0.0.1:10/callback");
    assert_eq!(
        token(&http, &server, &form).await.1["error"],
        "invalid_grant"
    );
    // Another client cannot redeem it, and does not spend it.
    let code = desktop_code(&http, &server).await;
    let (status, body) = token(
        &http,
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("client_id", "other"),
            ("client_secret", "other-secret"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // The rightful client: once.
    let (status, first) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(first["scope"], "read");
    assert_eq!(whoami(&http, &server, access).await, StatusCode::OK);
    // The replay: refused, and the tokens it bought are revoked.
    let (status, body) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(
        whoami(&http, &server, access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_desktop(&http, &server, refresh).await["error"],
        "invalid_grant"
    );
    assert!(server.logs().contains("authorization code used twice"));
    // Expired (code_ttl = 2s).
    let code = desktop_code(&http, &server).await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (_, body) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    assert_eq!(body["error"], "invalid_grant");
    // Nothing secret in the logs, even at debug.
    let logs = server.logs();
    assert!(
        logs.contains("authorization code issued"),
        "debug logging is on"
    );
    for secret in [code.as_str(), refresh, access, VERIFIER] {
        assert!(!logs.contains(secret));
    }
}

/// RFC 7009: revoking a refresh token revokes its family; a token that is
/// not the client's is answered 200 and left alone.
#[tokio::test]
async fn revocation_ends_the_grant() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "60s"));
    let http = http(&dir);
    let code = desktop_code(&http, &server).await;
    let (_, issued) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    let access = issued["access_token"].as_str().unwrap();
    let refresh = issued["refresh_token"].as_str().unwrap();
    let revoke = |form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = server.url("/oauth/revoke");
        async move {
            http.post(url)
                .form_body(&form)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Another client's attempt: 200, and nothing happens.
    let status = revoke(vec![
        ("token", refresh.to_owned()),
        ("client_id", "other".into()),
        ("client_secret", "other-secret".into()),
    ])
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami(&http, &server, access).await, StatusCode::OK);
    // Unknown tokens: 200 as well.
    let status = revoke(vec![
        ("token", "nonsense".into()),
        ("client_id", "desktop".into()),
    ])
    .await;
    assert_eq!(status, StatusCode::OK);
    // A wrong secret is invalid_client, not 200.
    let status = revoke(vec![
        ("token", refresh.to_owned()),
        ("client_id", "other".into()),
        ("client_secret", "wrong".into()),
    ])
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The owner revokes: the refresh token and the access token stop.
    let status = revoke(vec![
        ("token", refresh.to_owned()),
        ("token_type_hint", "refresh_token".into()),
        ("client_id", "desktop".into()),
    ])
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        whoami(&http, &server, access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_desktop(&http, &server, refresh).await["error"],
        "invalid_grant"
    );
}

/// The consent form: a POST without a form token, with another user's,
/// or with one already used is refused; Deny redirects `access_denied`.
#[tokio::test]
async fn the_consent_form_resists_csrf() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "60s"));
    let http = http(&dir);
    let query = [
        ("client_id", "cli-tool"),
        ("redirect_uri", "http://127.0.0.1/callback"),
        ("response_type", "code"),
        ("scope", "read"),
        ("state", "st"),
    ];
    let fields = form_fields;
    let consent = |user: (&'static str, &'static str)| {
        let http = http.clone();
        let server = &server;
        async move {
            let response = authorize(&http, server, &query, Some(user)).await;
            assert_eq!(response.status(), StatusCode::OK);
            let csp = response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(csp.contains("form-action 'self' http://127.0.0.1"), "{csp}");
            assert!(csp.contains("default-src 'none'"));
            fields(&response.text().await.unwrap())
        }
    };
    let post = |user: (&'static str, &'static str), fields: Vec<(String, String)>| {
        let http = http.clone();
        let url = server.url("/oauth/authorize");
        async move {
            http.post(url)
                .basic_auth(user.0, Some(user.1))
                .form_body(&fields)
                .send()
                .await
                .unwrap()
        }
    };
    let with = |mut fields: Vec<(String, String)>, decision: &str| {
        fields.push(("decision".into(), decision.into()));
        fields
    };
    // Without a form token.
    let mut alices = consent(ALICE).await;
    let token = alices
        .iter()
        .find(|(k, _)| k == "form_token")
        .unwrap()
        .1
        .clone();
    alices.retain(|(k, _)| k != "form_token");
    let response = post(ALICE, with(alices.clone(), "approve")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Bob's form token in Alice's session.
    let bobs = consent(BOB).await;
    let response = post(ALICE, with(bobs.clone(), "approve")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A form token for another request (the scope changed).
    let mut altered = alices.clone();
    altered.push(("form_token".into(), token.clone()));
    for (k, v) in &mut altered {
        if k == "scope" {
            *v = "read read-write".into();
        }
    }
    let response = post(ALICE, with(altered, "approve")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Bob's own form works once: 303 with a code and the state.
    let response = post(BOB, with(bobs.clone(), "approve")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let pairs = location_query(&response);
    assert!(param(&pairs, "code").is_some());
    assert_eq!(param(&pairs, "state"), Some("st"));
    let response = post(BOB, with(bobs, "approve")).await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a form token works once"
    );
    // Deny.
    let response = post(ALICE, with(consent(ALICE).await, "deny")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let pairs = location_query(&response);
    assert_eq!(param(&pairs, "error"), Some("access_denied"));
    assert!(param(&pairs, "code").is_none());
}

/// A confidential client's code redeemed with client_secret_basic (no
/// refresh token: the client may not refresh); its id alone cannot redeem
/// one; a code bound to a password that changed since is refused.
#[tokio::test]
async fn confidential_clients_redeem_with_basic_and_codes_die_with_the_password() {
    let dir = TestDir::new();
    let config = config(&dir, "60s");
    let server = Gatehouse::start(&config);
    let http = http(&dir);
    let get_code = || {
        let http = http.clone();
        let server = &server;
        async move {
            let response = authorize(
                &http,
                server,
                &[
                    ("client_id", "other"),
                    ("redirect_uri", "https://other.example/cb"),
                    ("response_type", "code"),
                ],
                Some(ALICE),
            )
            .await;
            assert_eq!(response.status(), StatusCode::FOUND);
            param(&location_query(&response), "code")
                .unwrap()
                .to_owned()
        }
    };
    let code = get_code().await;
    let response = http
        .post(server.url("/oauth/token"))
        .basic_auth("other", Some("other-secret"))
        .form_body(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://other.example/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "other may not refresh");
    // A public client's id alone cannot redeem a confidential client's code.
    let code = get_code().await;
    let (status, body) = token(
        &http,
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "other"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_client"))
    );
    // Alice's password changes (a reload) before the code is redeemed.
    let text = std::fs::read_to_string(&config).unwrap();
    let old = format!(
        "alice = \"{}\"",
        text.split("alice = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
    );
    std::fs::write(
        &config,
        text.replace(&old, &format!("alice = \"{}\"", cheap_hash("new password"))),
    )
    .unwrap();
    crate::tokens::reload(&server).await;
    let (status, body) = token(
        &http,
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://other.example/cb"),
            ("client_id", "other"),
            ("client_secret", "other-secret"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

/// Two redemptions of one code at once: whichever order the server sees
/// them in, no token bought with the code keeps working.
#[tokio::test]
async fn a_code_redeemed_twice_at_once_leaves_no_working_token() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "60s"));
    let http = http(&dir);
    for _ in 0..5 {
        let code = desktop_code(&http, &server).await;
        let form = redeem_form(&code, VERIFIER);
        let (a, b) = tokio::join!(token(&http, &server, &form), token(&http, &server, &form));
        let granted: Vec<&Value> = [&a, &b]
            .into_iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .map(|(_, body)| body)
            .collect();
        assert!(granted.len() <= 1, "one code, two grants: {a:?} {b:?}");
        for body in granted {
            let access = body["access_token"].as_str().unwrap();
            assert_eq!(
                whoami(&http, &server, access).await,
                StatusCode::UNAUTHORIZED
            );
        }
    }
}

/// A confidential client may revoke by access token; a public client
/// only by refresh token (anyone who saw its access token could otherwise
/// end the session).
#[tokio::test]
async fn revocation_by_access_token_needs_the_client_secret() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&config(&dir, "60s"));
    let http = http(&dir);
    let code = desktop_code(&http, &server).await;
    let (_, issued) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    let access = issued["access_token"].as_str().unwrap();
    let status = http
        .post(server.url("/oauth/revoke"))
        .form_body(&[("token", access), ("client_id", "desktop")])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami(&http, &server, access).await, StatusCode::OK);
    // `other` (confidential) revokes its own grant by access token.
    let response = authorize(
        &http,
        &server,
        &[
            ("client_id", "other"),
            ("redirect_uri", "https://other.example/cb"),
            ("response_type", "code"),
        ],
        Some(ALICE),
    )
    .await;
    let code = param(&location_query(&response), "code")
        .unwrap()
        .to_owned();
    let (_, issued) = token(
        &http,
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://other.example/cb"),
            ("client_id", "other"),
            ("client_secret", "other-secret"),
        ],
    )
    .await;
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(whoami(&http, &server, access).await, StatusCode::OK);
    let status = http
        .post(server.url("/oauth/revoke"))
        .basic_auth("other", Some("other-secret"))
        .form_body(&[("token", access), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        whoami(&http, &server, access).await,
        StatusCode::UNAUTHORIZED
    );
}

/// A `state` longer than any client needs is not carried back; a token
/// stops when a reload takes one of its scopes from its client.
#[tokio::test]
async fn an_overlong_state_is_not_echoed_and_a_narrowed_client_loses_its_tokens() {
    let dir = TestDir::new();
    let config = config(&dir, "60s");
    let server = Gatehouse::start(&config);
    let http = http(&dir);
    let long = "s".repeat(2000);
    let response = authorize(
        &http,
        &server,
        &[
            ("client_id", "other"),
            ("redirect_uri", "https://other.example/cb"),
            ("response_type", "code"),
            ("state", &long),
        ],
        Some(ALICE),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let pairs = location_query(&response);
    assert_eq!(param(&pairs, "error"), Some("invalid_request"));
    assert!(param(&pairs, "state").is_none());
    // cli-tool grants read-write; the reload leaves it only read.
    let response = authorize(
        &http,
        &server,
        &[
            ("client_id", "cli-tool"),
            ("redirect_uri", "urn:ietf:wg:oauth:2.0:oob"),
            ("response_type", "code"),
            ("scope", "read-write"),
        ],
        Some(ALICE),
    )
    .await;
    let mut fields = form_fields(&response.text().await.unwrap());
    fields.push(("decision".into(), "approve".into()));
    let page = http
        .post(server.url("/oauth/authorize"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .form_body(&fields)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let code = page
        .split("<code id=\"authorization-code\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .to_owned();
    let (status, issued) = token(
        &http,
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "urn:ietf:wg:oauth:2.0:oob"),
            ("client_id", "cli-tool"),
            ("client_secret", CLI_SECRET),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(whoami(&http, &server, access).await, StatusCode::OK);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("scopes = [\"read\", \"read-write\"]", "scopes = [\"read\"]"),
    )
    .unwrap();
    crate::tokens::reload(&server).await;
    assert_eq!(
        whoami(&http, &server, access).await,
        StatusCode::UNAUTHORIZED
    );
    let (_, body) = token(
        &http,
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", issued["refresh_token"].as_str().unwrap()),
            ("client_id", "cli-tool"),
            ("client_secret", CLI_SECRET),
        ],
    )
    .await;
    assert_eq!(body["error"], "invalid_grant");
}
