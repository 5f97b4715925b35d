//! The verified-credentials cache seen from outside: verifications counted
//! through `/api/stats` while real clients make requests over TLS.

use std::time::Duration;

use crate::common::{Gatehouse, TestDir, client, stats, whoami};
use reqwest::StatusCode;

#[tokio::test]
async fn a_cached_credential_skips_argon2() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let http = client(&dir.cert_pem);
    for _ in 0..10 {
        assert_eq!(
            whoami(&http, &server, "bob", "pässwörd").await,
            StatusCode::OK
        );
    }
    let counters = stats(&server, &dir.cert_pem).await;
    // One for bob, one for the stats request's own (first) login as alice.
    assert_eq!(counters["verifications"], 2, "{counters}");
    assert_eq!(counters["cache_hits"], 9, "{counters}");
}

#[tokio::test]
async fn wrong_passwords_never_enter_and_are_never_served() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let http = client(&dir.cert_pem);
    assert_eq!(
        whoami(&http, &server, "carol", "wrong").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(&http, &server, "carol", "wrong").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(&http, &server, "carol", "p:ss:w0rd").await,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&http, &server, "carol", "p:ss:w0rd").await,
        StatusCode::OK
    );
    // A near miss of a cached credential is verified, and refused.
    assert_eq!(
        whoami(&http, &server, "carol", "p:ss:w0rd ").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(&http, &server, "carol", "p:ss:w0r").await,
        StatusCode::UNAUTHORIZED
    );
    let counters = stats(&server, &dir.cert_pem).await;
    assert_eq!(
        counters["failed_verifications"], 4,
        "each wrong password cost a verification: {counters}"
    );
    assert_eq!(counters["cache_hits"], 1, "{counters}");
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config("[cache]\nttl = \"1s\"\n"));
    let http = client(&dir.cert_pem);
    assert_eq!(
        whoami(&http, &server, "bob", "pässwörd").await,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&http, &server, "bob", "pässwörd").await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        whoami(&http, &server, "bob", "pässwörd").await,
        StatusCode::OK
    );
    let counters = stats(&server, &dir.cert_pem).await;
    assert_eq!(
        counters["verifications"], 3,
        "bob twice (expired once), alice once: {counters}"
    );
}

#[tokio::test]
async fn cache_can_be_turned_off() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config("[cache]\nenabled = false\n"));
    let http = client(&dir.cert_pem);
    for _ in 0..3 {
        assert_eq!(
            whoami(&http, &server, "bob", "pässwörd").await,
            StatusCode::OK
        );
    }
    let counters = stats(&server, &dir.cert_pem).await;
    assert_eq!(counters["verifications"], 4, "{counters}");
    assert_eq!(counters["cache_hits"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_of_32_identical_logins_costs_one_verification() {
    let dir = TestDir::new();
    // A slower hash keeps the first verification in flight while the burst lands.
    let params = argon2::Params::new(32 * 1024, 4, 1, None).unwrap();
    let hash = gatehouse::credentials::hash_password(
        &gatehouse::secret::Password::new("burst pw".into()),
        params,
    )
    .unwrap();
    let server = Gatehouse::in_process(&dir.config(&format!("dora = \"{hash}\"\n")));
    let http = client(&dir.cert_pem);
    // Warm the connection up so the burst is not waiting on handshakes.
    http.get(server.url("/healthz")).send().await.unwrap();
    let burst = (0..32).map(|_| whoami(&http, &server, "dora", "burst pw"));
    let statuses = futures_util::future::join_all(burst).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let counters = stats(&server, &dir.cert_pem).await;
    // The stats request itself costs one (alice's first login).
    assert_eq!(counters["verifications"], 2, "{counters}");
    assert_eq!(
        counters["coalesced"].as_u64().unwrap() + counters["cache_hits"].as_u64().unwrap(),
        31,
        "{counters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_different_passwords_is_not_coalesced() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let http = client(&dir.cert_pem);
    let burst = (0..8).map(|i| {
        let password = if i == 0 {
            "secret".to_owned()
        } else {
            format!("guess-{i}")
        };
        let http = http.clone();
        let url = server.url("/api/whoami");
        async move {
            http.get(url)
                .basic_auth("alice", Some(password))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::future::join_all(burst).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        7,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_unknown_user_costs_one_argon2_verification_like_a_known_one() {
    // The deterministic half of timing safety (the measured half is
    // `cargo bench --bench timing`): an unknown user is not answered early,
    // it is verified against a dummy hash.
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let http = client(&dir.cert_pem);
    let before = stats(&server, &dir.cert_pem).await;
    assert_eq!(
        whoami(&http, &server, "nobody", "secret").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        whoami(&http, &server, "bob", "wrong").await,
        StatusCode::UNAUTHORIZED
    );
    let after = stats(&server, &dir.cert_pem).await;
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(delta("failed_verifications"), 2, "{after}");
}
