//! `cargo bench --bench flood`: a 10 s password-guessing flood from one
//! address against the release server with its default limits, while a
//! legitimate client logs in from another address. The reference is the same
//! legitimate client alone, measured first in the same run.
//!
//! Reports: attacker requests/s absorbed, argon2 verifications performed,
//! the legitimate client's success rate and p50/p99 (alone and under flood),
//! the server's peak RSS, and the limiter state after 1,000,000 distinct keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Gatehouse, TestDir, client_from, peak_rss_mib, stats};
use gatehouse::credentials::{default_params, hash_password};
use gatehouse::limit::{KeyedLimit, LockoutPolicy, Lockouts, Rate};
use gatehouse::secret::Password;

const LIMITS: &str = "[rate_limit]\nper_ip = { per_second = 20, burst = 40 }\nper_user = { per_second = 10, burst = 20 }\n\
[lockout]\nmax_failures = 5\nwindow = \"10m\"\nduration = \"15m\"\n";

struct Legit {
    latencies: Vec<Duration>,
    ok: usize,
    total: usize,
}

impl Legit {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index].as_secs_f64() * 1e3
    }
}

/// The legitimate client: one login every 125 ms (8/s, inside its quota).
async fn legit_run(http: &reqwest::Client, url: &str, for_how_long: Duration) -> Legit {
    let start = Instant::now();
    let mut legit = Legit {
        latencies: Vec::new(),
        ok: 0,
        total: 0,
    };
    while start.elapsed() < for_how_long {
        let t = Instant::now();
        let status = http
            .get(url)
            .basic_auth("owner", Some("correct horse battery staple"))
            .send()
            .await
            .map(|r| r.status());
        legit.latencies.push(t.elapsed());
        legit.total += 1;
        legit.ok += usize::from(status.is_ok_and(|s| s.is_success()));
        tokio::time::sleep(Duration::from_millis(125).saturating_sub(t.elapsed())).await;
    }
    legit
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let owner_hash = hash_password(
        &Password::new("correct horse battery staple".into()),
        default_params(),
    )
    .expect("hash");
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(&format!("owner = \"{owner_hash}\"\n{LIMITS}")));
    let url = server.url("/api/whoami");
    let legit_http = client_from(&dir.cert_pem, "127.0.0.2");

    let alone = legit_run(&legit_http, &url, Duration::from_secs(3)).await;

    let flood_for = Duration::from_secs(10);
    let start = Instant::now();
    let attackers: Vec<_> = (0..16)
        .map(|worker| {
            let http = client_from(&dir.cert_pem, "127.0.0.1");
            let url = url.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while start.elapsed() < flood_for {
                    sent += 1;
                    let _ = http
                        .get(&url)
                        .basic_auth("owner", Some(format!("guess-{worker}-{sent}")))
                        .send()
                        .await;
                }
                sent
            })
        })
        .collect();
    let flooded = legit_run(&legit_http, &url, flood_for).await;
    let mut attacker_requests = 0;
    for task in attackers {
        attacker_requests += task.await.expect("attacker task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let counters = stats(&server, &dir.cert_pem).await;

    println!("flood: 16 connections from 127.0.0.1 for {elapsed:.1} s, default limits");
    println!(
        "  attacker requests absorbed      {:>10.0} req/s ({attacker_requests} total)",
        attacker_requests as f64 / elapsed
    );
    println!(
        "  argon2 verifications (all)      {:>10}",
        counters["verifications"]
    );
    println!(
        "  argon2 verifications failed     {:>10}  (bound: max_failures = 5)",
        counters["failed_verifications"]
    );
    println!(
        "  answered 429                    {:>10}",
        counters["rate_limited"]
    );
    for (label, run) in [
        ("legitimate, alone (reference)", &alone),
        ("legitimate, under flood", &flooded),
    ] {
        println!(
            "  {label:<31} {:>5.1}% ok of {:>3}  p50 {:>7.2} ms  p99 {:>7.2} ms",
            100.0 * run.ok as f64 / run.total as f64,
            run.total,
            run.percentile(0.5),
            run.percentile(0.99)
        );
    }
    println!(
        "  legitimate p50 under flood / alone: {:.2}",
        flooded.percentile(0.5) / alone.percentile(0.5)
    );
    println!(
        "  server peak RSS                 {:>10.1} MiB",
        peak_rss_mib(server.pid())
    );

    // State bounds, in-process: 1,000,000 distinct client addresses.
    let limit: KeyedLimit<IpAddr> = KeyedLimit::new(Rate::new(20, 40), 100_000);
    let lockouts = Lockouts::new(LockoutPolicy::default());
    let now = Instant::now();
    let (mut peak_limiter, mut peak_records) = (0, 0);
    let t = Instant::now();
    for i in 0..1_000_000u32 {
        let ip = IpAddr::from(i.to_be_bytes());
        let _ = limit.check(&ip);
        if let Ok(attempt) = lockouts.begin(ip, "root", now) {
            lockouts.finish(attempt, false, now);
        }
        if i % 1000 == 0 {
            peak_limiter = peak_limiter.max(limit.len());
            peak_records = peak_records.max(lockouts.tracked().0);
        }
    }
    println!(
        "1,000,000 distinct addresses in {:.2} s: limiter peak {peak_limiter} keys (cap 100000), lockout records peak {peak_records} (cap 100000)",
        t.elapsed().as_secs_f64()
    );
}
