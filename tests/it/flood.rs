//! A password-guessing flood from one address while a legitimate user logs
//! in from another: the legitimate user sees only 200s, and the attacker
//! costs the server at most `max_failures` argon2 verifications.
//! Bounded: the flood lasts three seconds.

use std::time::{Duration, Instant};

use crate::common::{Gatehouse, TestDir, client_from, stats};
use reqwest::StatusCode;

/// The shipped defaults, spelled out so the test does not depend on them
/// silently changing.
const DEFAULT_LIMITS: &str = "[rate_limit]\nper_ip = { per_second = 20, burst = 40 }\nper_user = { per_second = 10, burst = 20 }\n\
[lockout]\nmax_failures = 5\nwindow = \"10m\"\nduration = \"15m\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_user_is_unaffected_by_a_flood_from_another_address() {
    let _heavy = crate::common::HEAVY.lock().await;
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(DEFAULT_LIMITS));
    let flood_for = Duration::from_secs(3);
    let start = Instant::now();

    let attackers: Vec<_> = (0..8)
        .map(|worker| {
            let http = client_from(&dir.cert_pem, "127.0.0.1");
            let url = server.url("/api/whoami");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut guess = 0u64;
                while start.elapsed() < flood_for {
                    guess += 1;
                    let user = if guess.is_multiple_of(2) {
                        "alice"
                    } else {
                        "root"
                    };
                    let password = format!("guess-{worker}-{guess}");
                    if let Ok(r) = http.get(&url).basic_auth(user, Some(password)).send().await {
                        statuses.push(r.status());
                    }
                }
                statuses
            })
        })
        .collect();

    let legit = client_from(&dir.cert_pem, "127.0.0.2");
    let mut legit_statuses = Vec::new();
    while start.elapsed() < flood_for {
        let r = legit
            .get(server.url("/api/whoami"))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap();
        legit_statuses.push(r.status());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    let mut attacker_statuses = Vec::new();
    for task in attackers {
        attacker_statuses.extend(task.await.unwrap());
    }
    let unauthorized = attacker_statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = attacker_statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    println!(
        "attacker: {} requests ({unauthorized} 401, {limited} 429); legitimate: {} requests",
        attacker_statuses.len(),
        legit_statuses.len()
    );

    assert!(
        legit_statuses.len() >= 10,
        "the legitimate client kept working"
    );
    assert!(
        legit_statuses.iter().all(|s| *s == StatusCode::OK),
        "{legit_statuses:?}"
    );
    assert!(
        unauthorized <= 5,
        "at most max_failures guesses were verified: {unauthorized}"
    );
    assert!(limited > 100, "the flood was refused cheaply: {limited}");
    let counters = stats(&server, &dir.cert_pem).await;
    assert!(
        counters["failed_verifications"].as_u64().unwrap() <= 5,
        "{counters}"
    );
    assert_eq!(counters["overloaded"], 0);
}
