//! The core flow over real TLS with a real HTTP client: a user with the right
//! password gets in, everyone else gets a 401 challenge.

use crate::common::{ALICE, BOB, CAROL, Gatehouse, TestDir, cheap_hash, client};
use reqwest::StatusCode;

const CHALLENGE: &str = "Basic realm=\"gatehouse\", charset=\"UTF-8\"";

fn assert_challenge(response: &reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], CHALLENGE);
}

#[tokio::test]
async fn correct_password_reaches_whoami() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(""));
    let http = client(&dir.cert_pem);
    for (user, password) in [ALICE, BOB, CAROL] {
        let response = http
            .get(server.url("/api/whoami"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{user}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({ "user": user }));
    }
}

#[tokio::test]
async fn wrong_password_unknown_user_and_no_header_get_the_challenge() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(""));
    let http = client(&dir.cert_pem);
    let url = server.url("/api/whoami");

    let wrong = http
        .get(&url)
        .basic_auth("alice", Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_challenge(&wrong);
    let body = wrong.text().await.unwrap();
    assert!(
        !body.contains("not-the-password") && !body.contains("alice"),
        "body echoes credentials: {body}"
    );

    let unknown = http
        .get(&url)
        .basic_auth("mallory", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_challenge(&unknown);

    let none = http.get(&url).send().await.unwrap();
    assert_challenge(&none);

    // A username differing only in case is another user.
    let case = http
        .get(&url)
        .basic_auth("Alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_challenge(&case);
}

#[tokio::test]
async fn healthz_is_public_and_unknown_paths_do_not_leak() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(""));
    let http = client(&dir.cert_pem);

    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok\n");

    // Unauthenticated, an unknown path looks exactly like a protected one.
    let probe = http
        .get(server.url("/admin/secret-thing"))
        .send()
        .await
        .unwrap();
    assert_challenge(&probe);
    let traversal = http
        .get(server.url("/healthz/../api/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(traversal.status(), StatusCode::UNAUTHORIZED);

    let authed = http
        .get(server.url("/admin/secret-thing"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(authed.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn users_file_adds_users() {
    let dir = TestDir::new();
    dir.write(
        "users",
        &format!("# team\n\ndave:{}\n", cheap_hash("dave's pw")),
    );
    let server = Gatehouse::start(&dir.config("[auth]\nusers_file = \"users\"\n"));
    let http = client(&dir.cert_pem);
    let ok = http
        .get(server.url("/api/whoami"))
        .basic_auth("dave", Some("dave's pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let alice = http
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(alice.status(), StatusCode::OK);
}

#[tokio::test]
async fn http2_and_http1_both_work() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(""));

    let h2 = client(&dir.cert_pem)
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        h2.version(),
        reqwest::Version::HTTP_2,
        "ALPN should pick h2"
    );
    assert_eq!(h2.status(), StatusCode::OK);

    let http1 = crate::common::http1_client(&dir.cert_pem);
    let h1 = http1
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), StatusCode::OK);
}

#[tokio::test]
async fn access_log_names_the_user_but_never_the_secret() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(""));
    let http = client(&dir.cert_pem);
    http.get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    http.get(server.url("/api/whoami"))
        .basic_auth("alice", Some("wrong-horse"))
        .send()
        .await
        .unwrap();
    // Logging happens after the response is sent: give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = server.logs();
    assert!(
        logs.contains("path=\"/api/whoami\" status=200 user=\"alice\""),
        "{logs}"
    );
    assert!(logs.contains("status=401 user=\"-\""), "{logs}");
    for secret in ["secret", "wrong-horse", "YWxpY2U6c2VjcmV0", "$argon2id"] {
        assert!(!logs.contains(secret), "logs contain {secret}: {logs}");
    }
}

#[tokio::test]
async fn many_concurrent_logins_all_succeed() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config("[auth]\nmax_concurrent_verifications = 1\n"));
    let http = client(&dir.cert_pem);
    let url = server.url("/api/whoami");
    let requests = (0..32).map(|_| http.get(&url).basic_auth("alice", Some("secret")).send());
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
}
