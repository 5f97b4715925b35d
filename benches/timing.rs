//! `cargo bench --bench timing`: does a wrong password for a known user take
//! as long as any password for an unknown user? Samples are interleaved
//! (known, unknown, known, …) over one TLS connection against the release
//! server with OWASP-cost hashes, so machine noise hits both alike. Prints
//! both medians and exits non-zero if they differ by 10% or more.
//!
//! A timed assertion does not belong in `cargo test` on a shared machine;
//! `cargo test` instead checks the cause deterministically (an unknown user
//! is verified against a dummy hash with the users' own parameters, and
//! counts as one argon2 verification).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Gatehouse, TestDir, client};
use gatehouse::credentials::{default_params, hash_password};
use gatehouse::secret::Password;

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    // Every user has the same (OWASP) parameters, as gatehouse recommends:
    // the dummy hash for unknown users can then cost exactly what they do.
    let dir = TestDir::new();
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[rate_limit]\nper_ip = false\nper_user = false\n[lockout]\nmax_failures = 0\n[users]\n",
    );
    for user in ["owasp", "second", "third"] {
        let hash = hash_password(
            &Password::new(format!("the real one for {user}")),
            default_params(),
        )
        .expect("hash");
        text.push_str(&format!("{user} = \"{hash}\"\n"));
    }
    let server = Gatehouse::start(&dir.write("timing.toml", &text));
    let http = client(&dir.cert_pem);
    let url = server.url("/api/whoami");
    http.get(server.url("/healthz"))
        .send()
        .await
        .expect("warm-up");
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..60 {
        for (user, samples) in [("owasp", &mut known), ("nobody-here", &mut unknown)] {
            let start = Instant::now();
            let status = http
                .get(&url)
                .basic_auth(user, Some(format!("guess {i}")))
                .send()
                .await
                .expect("request")
                .status();
            samples.push(start.elapsed());
            assert_eq!(status, 401);
        }
    }
    let (k, u) = (median(known), median(unknown));
    let difference = (k - u).abs() / k.min(u);
    println!("known user, wrong password: median {k:.3} ms (n=60)");
    println!("unknown user:               median {u:.3} ms (n=60)");
    println!("difference: {:.1}% (limit 10%)", difference * 100.0);
    if difference >= 0.10 {
        eprintln!("FAIL: the medians differ by 10% or more");
        std::process::exit(1);
    }
}
