//! How long a users file of 10,000, 100,000 and 1,000,000 users takes to
//! load (config validation plus the credential store), and the resident
//! memory it costs per user. Each size runs in a child process of its own,
//! so that one size's memory does not hide in the next one's figure.
//!
//! `cargo bench --bench users_load`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::io::Write as _;
use std::process::Command;
use std::time::Instant;

use gatehouse::config::Config;
use gatehouse::credentials::{CredentialStore, hash_password};
use gatehouse::secret::Password;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// In the child: write, load and measure `n` users.
fn measure(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    // One real hash, repeated: loading parses every line, but hashing a
    // million passwords is not what is measured here.
    let params = argon2::Params::new(19_456, 2, 1, None).expect("params");
    let hash = hash_password(&Password::new("pw".into()), params).expect("hash");
    let users = dir.path().join("users");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&users).expect("users file"));
    for i in 0..n {
        writeln!(file, "user{i}:{hash}").expect("write");
    }
    file.flush().expect("flush");
    drop(file);
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        "[tls]\nself_signed = true\n[auth]\nusers_file = \"users\"\n",
    )
    .expect("config");
    let before = rss_kib();
    let start = Instant::now();
    let loaded = Config::load(&config).expect("valid config");
    let store = CredentialStore::new(loaded.auth.users).expect("store");
    let took = start.elapsed();
    let after = rss_kib();
    let per_user = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!(
        "{n:>9} users: ready in {:>8.3} s, RSS +{:>7.1} MiB ({per_user:.0} bytes per user)",
        took.as_secs_f64(),
        after.saturating_sub(before) as f64 / 1024.0,
    );
    assert_eq!(store.len(), n);
}

fn main() {
    let mut args = std::env::args().skip(1);
    if let (Some(flag), Some(n)) = (args.next(), args.next())
        && flag == "--child"
    {
        measure(n.parse().expect("a count"));
        return;
    }
    let me = std::env::current_exe().expect("own path");
    for n in [10_000, 100_000, 1_000_000] {
        let status = Command::new(&me)
            .args(["--child", &n.to_string()])
            .status()
            .expect("run child");
        assert!(status.success(), "loading {n} users failed");
    }
}
