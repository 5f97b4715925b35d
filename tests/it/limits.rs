//! Brute-force defence over real TLS: rate limits, lockouts, the bounded
//! verification queue and X-Forwarded-For, each as a client would see them.

use std::time::{Duration, Instant};

use crate::common::{Gatehouse, TestDir, client_from, slow_hash, stats, whoami_response};
use reqwest::{Response, StatusCode};

/// Identical concurrent requests would be answered by one verification;
/// overload tests need every request to reach argon2.
const NO_CACHE: &str = "[cache]\nenabled = false\n";

fn retry_after(response: &Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds")
}

#[tokio::test]
async fn failures_lock_the_address_out_until_the_lockout_ends() {
    let dir = TestDir::new();
    let server = Gatehouse::start(
        &dir.config("[lockout]\nmax_failures = 3\nwindow = \"1m\"\nduration = \"2s\"\n"),
    );
    let attacker = client_from(&dir.cert_pem, "127.0.0.1");
    for _ in 0..3 {
        assert_eq!(
            whoami_response(&attacker, &server, "alice", "guess")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let locked_at = Instant::now();
    for password in ["guess", "secret"] {
        // Locked: even the right password is not verified.
        let refused = whoami_response(&attacker, &server, "alice", password).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!((1..=2).contains(&retry_after(&refused)));
    }
    let other_user = whoami_response(&attacker, &server, "bob", "pässwörd").await;
    assert_eq!(
        other_user.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address is locked for every user"
    );

    // The owner, from another address, is not locked out.
    let owner = client_from(&dir.cert_pem, "127.0.0.2");
    assert_eq!(
        whoami_response(&owner, &server, "alice", "secret")
            .await
            .status(),
        StatusCode::OK
    );

    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(locked_at.elapsed()) + Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        whoami_response(&attacker, &server, "alice", "secret")
            .await
            .status(),
        StatusCode::OK,
        "verification resumes"
    );
    assert_eq!(
        whoami_response(&attacker, &server, "alice", "guess")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    let counters = stats(&server, &dir.cert_pem).await;
    assert_eq!(counters["lockouts"], 1);
    assert_eq!(counters["failed_verifications"], 4);
    assert_eq!(counters["rate_limited"], 3);
    let logs = server.logs();
    assert!(
        logs.contains("client locked out after repeated failed logins"),
        "{logs}"
    );
    assert!(
        !logs.contains("guess"),
        "a password reached the logs: {logs}"
    );
}

#[tokio::test]
async fn per_ip_rate_limit_applies_to_every_request_before_anything_else() {
    let dir = TestDir::new();
    let server = Gatehouse::start(
        &dir.config("[rate_limit]\nper_ip = { per_second = 1, burst = 3 }\nper_user = false\n"),
    );
    let http = client_from(&dir.cert_pem, "127.0.0.3");
    for _ in 0..3 {
        assert_eq!(
            http.get(server.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let limited = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&limited), 1);
    // Over the limit, even a malformed header is not parsed: 429, not 401.
    let malformed = http
        .get(server.url("/api/whoami"))
        .header("authorization", "Basic !!!")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another address has its own budget.
    let other = client_from(&dir.cert_pem, "127.0.0.4");
    assert_eq!(
        other
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn per_user_quota_limits_authenticated_requests() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(
        "[rate_limit]\nper_ip = { per_second = 1000, burst = 1000 }\nper_user = { per_second = 1, burst = 2 }\n",
    ));
    let http = client_from(&dir.cert_pem, "127.0.0.5");
    for _ in 0..2 {
        assert_eq!(
            whoami_response(&http, &server, "bob", "pässwörd")
                .await
                .status(),
            StatusCode::OK
        );
    }
    let over = whoami_response(&http, &server, "bob", "pässwörd").await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&over) >= 1);
    // Other users have their own quota.
    assert_eq!(
        whoami_response(&http, &server, "carol", "p:ss:w0rd")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_full_verification_queue_answers_503_with_retry_after() {
    let dir = TestDir::new();
    let slow = slow_hash("slow", 32 * 1024, 8);
    let server = Gatehouse::start(&dir.config(&format!(
        "slowpoke = \"{slow}\"\n[auth]\nmax_concurrent_verifications = 1\nverify_queue = 1\nverify_timeout = \"30s\"\n{NO_CACHE}"
    )));
    let http = client_from(&dir.cert_pem, "127.0.0.6");
    let requests = (0..6).map(|_| whoami_response(&http, &server, "slowpoke", "slow"));
    let responses = futures_util::future::join_all(requests).await;
    let ok = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    let overloaded: Vec<&Response> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok + overloaded.len(), 6);
    assert!(ok >= 2, "one running and one queued get through: {ok}");
    assert!(!overloaded.is_empty(), "the rest are refused at once");
    for response in overloaded {
        assert_eq!(retry_after(response), 1);
    }
    assert!(
        stats(&server, &dir.cert_pem).await["overloaded"]
            .as_u64()
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn a_verification_that_waits_too_long_answers_503() {
    let dir = TestDir::new();
    let slow = slow_hash("slow", 32 * 1024, 8);
    let server = Gatehouse::start(&dir.config(&format!(
        "slowpoke = \"{slow}\"\n[auth]\nmax_concurrent_verifications = 1\nverify_queue = 100\nverify_timeout = \"1ms\"\n{NO_CACHE}"
    )));
    let http = client_from(&dir.cert_pem, "127.0.0.7");
    let responses = futures_util::future::join_all(
        (0..4).map(|_| whoami_response(&http, &server, "slowpoke", "slow")),
    )
    .await;
    let statuses: Vec<StatusCode> = responses.iter().map(Response::status).collect();
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config_with_server(
        "trusted_proxies = [\"127.0.0.8/32\"]",
        "[lockout]\nmax_failures = 2\nduration = \"1m\"\n",
    ));
    let proxy = client_from(&dir.cert_pem, "127.0.0.8");
    let via = |client: &reqwest::Client, xff: &str, password: &str| {
        client
            .get(server.url("/api/whoami"))
            .basic_auth("alice", Some(password))
            .header("x-forwarded-for", xff.to_owned())
            .send()
    };
    // Behind the trusted proxy, the client is the right-most untrusted hop.
    for _ in 0..2 {
        let r = via(&proxy, "6.6.6.6, 203.0.113.5", "guess").await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        via(&proxy, "203.0.113.5", "secret").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A different client behind the same proxy is not locked out.
    assert_eq!(
        via(&proxy, "203.0.113.6", "secret").await.unwrap().status(),
        StatusCode::OK
    );

    // From an untrusted peer the header is ignored: forging a fresh address
    // per request does not escape the lockout.
    let direct = client_from(&dir.cert_pem, "127.0.0.9");
    for i in 0..2 {
        let r = via(&direct, &format!("198.51.100.{i}"), "guess")
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        via(&direct, "198.51.100.77", "secret")
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// With every limit at its default, a page's worth of concurrent requests
/// with valid credentials from one address all get in (60, then 200);
/// requests without credentials are still limited, and with
/// `count_verified = true` the old behaviour returns.
#[tokio::test]
async fn verified_requests_are_not_throttled_by_default() {
    let dir = TestDir::new();
    // The defaults, stated only to keep the test helper's own limits out.
    let server = Gatehouse::start(
        &dir.config("[rate_limit]\nmax_tracked_keys = 100000\n[lockout]\nmax_failures = 5\n"),
    );
    let http = client_from(&dir.cert_pem, "127.0.0.5");
    let url = server.url("/api/whoami");
    // The first request verifies the password (it counts); the rest are
    // cached.
    assert_eq!(burst(&http, &url, 1, true).await, vec![StatusCode::OK]);
    for size in [60, 200] {
        let statuses = burst(&http, &url, size, true).await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "burst of {size}: {statuses:?}"
        );
    }
    // Without credentials the address is still limited (burst 40).
    let anonymous = client_from(&dir.cert_pem, "127.0.0.6");
    let statuses = burst(&anonymous, &url, 60, false).await;
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "unauthenticated requests are counted: {statuses:?}"
    );
    drop(server);
    // The old behaviour, on request.
    let dir = TestDir::new();
    let server = Gatehouse::start(
        &dir.config("[rate_limit]\ncount_verified = true\n[lockout]\nmax_failures = 5\n"),
    );
    let http = client_from(&dir.cert_pem, "127.0.0.7");
    let statuses = burst(&http, &server.url("/api/whoami"), 60, true).await;
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "count_verified = true throttles: {statuses:?}"
    );
}

/// `size` concurrent GETs of `url`, as alice when `auth`; their statuses.
async fn burst(http: &reqwest::Client, url: &str, size: usize, auth: bool) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..size)
        .map(|_| {
            let mut request = http.get(url);
            if auth {
                request = request.basic_auth("alice", Some("secret"));
            }
            tokio::spawn(async move { request.send().await.map(|r| r.status()) })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap());
    }
    statuses
}
