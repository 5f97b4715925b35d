//! `cargo bench --bench latency`: what one argon2 verification costs on this
//! machine, and the latency of an authenticated request (first, cached, and
//! with a wrong password) next to the same server's public route (the
//! reference, measured in the same run).
//!
//! Sequential requests over one keep-alive TLS connection: this measures
//! per-request cost, not throughput. Bounded: a fixed number of requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use common::{Gatehouse, TestDir, client};
use gatehouse::credentials::{default_params, hash_password};
use gatehouse::secret::Password;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 0.5);
    println!(
        "{label:<38} n={:<5} p50={:>9.3} ms  p99={:>9.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
    p50
}

/// Sends `n` requests made by `request`, one at a time, and times each.
async fn timed(
    n: usize,
    request: impl Fn() -> reqwest::RequestBuilder,
    want: u16,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let status = request().send().await.expect("request").status();
        samples.push(start.elapsed());
        assert_eq!(status.as_u16(), want);
    }
    samples
}

#[tokio::main]
async fn main() {
    let password = Password::new("correct horse battery staple".into());
    let phc = hash_password(&password, default_params()).expect("hash");
    let hash = PasswordHash::new(&phc).expect("phc");
    let argon2 = argon2::Argon2::default();
    let verify: Vec<Duration> = (0..30)
        .map(|_| {
            let start = Instant::now();
            argon2
                .verify_password(password.as_bytes(), &hash)
                .expect("verifies");
            start.elapsed()
        })
        .collect();
    let argon2_p50 = summary("argon2id verify (m=19456,t=2,p=1)", verify);

    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(&format!("owasp = \"{phc}\"\n")));
    let http = client(&dir.cert_pem);
    let (health, whoami) = (server.url("/healthz"), server.url("/api/whoami"));
    // Warm up the connection (TLS handshake) before measuring, and time the
    // first login: the one argon2 verification a user's session costs.
    http.get(&health).send().await.expect("warm-up");
    let first = Instant::now();
    let status = http
        .get(&whoami)
        .basic_auth("owasp", Some(password.as_str()))
        .send()
        .await
        .expect("login")
        .status();
    assert_eq!(status, 200);
    println!(
        "{:<38} n=1     {:>13.3} ms",
        "first login (argon2, then cached)",
        first.elapsed().as_secs_f64() * 1e3
    );

    let public = timed(500, || http.get(&health), 200).await;
    let public_p50 = summary("public GET /healthz (TLS, h2)", public);
    let auth = timed(
        60,
        || {
            http.get(&whoami)
                .basic_auth("owasp", Some(password.as_str()))
        },
        200,
    )
    .await;
    let auth_p50 = summary("authenticated GET /api/whoami (cached)", auth);
    let wrong = timed(
        60,
        || http.get(&whoami).basic_auth("owasp", Some("wrong")),
        401,
    )
    .await;
    let wrong_p50 = summary("wrong password (401, argon2 every time)", wrong);

    println!(
        "\nauthenticated (cached) p50 / public p50 = {:.2}; wrong password p50 / argon2 p50 = {:.2}",
        auth_p50.as_secs_f64() / public_p50.as_secs_f64(),
        wrong_p50.as_secs_f64() / argon2_p50.as_secs_f64()
    );
}
