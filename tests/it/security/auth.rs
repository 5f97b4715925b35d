//! The auth decisions under attack: revocation by reload, enumeration
//! through coalescing, forged log lines, a full lockout table, metrics
//! paths that check-config and serve agree on, key permissions, and
//! refused-request floods in the access log.

use std::process::Command;
use std::time::Duration;

use super::support::metrics_text;
use crate::common::{ALICE, Gatehouse, TestDir, binary, cheap_hash, client_from, slow_hash};

#[tokio::test]
async fn removing_every_user_on_reload_revokes_access() {
    let dir = TestDir::new();
    let users = dir.write("users", &format!("alice:{}\n", cheap_hash(ALICE.1)));
    let base =
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";
    let config = dir.write(
        "gatehouse.toml",
        &format!("{base}[auth]\nusers_file = \"{}\"\n", users.display()),
    );
    let server = Gatehouse::start(&config);
    let http = client_from(&dir.cert_pem, "127.0.0.2");
    let whoami = || {
        http.get(server.url("/api/whoami"))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
    };
    assert_eq!(whoami().await.unwrap().status(), 200);
    std::fs::write(&users, "# everyone removed\n").unwrap();
    server.signal("HUP");
    server.wait_for_log("every user was removed", 1, Duration::from_secs(10));
    assert_eq!(
        whoami().await.unwrap().status(),
        401,
        "the removed user still gets in"
    );

    // With generated_user set, real users removed are still removed (and
    // no new password is minted).
    let dir = TestDir::new();
    let with_alice = format!(
        "{base}[auth]\ngenerated_user = \"admin\"\n[users]\nalice = \"{}\"\n",
        cheap_hash(ALICE.1)
    );
    let config = dir.write("gatehouse.toml", &with_alice);
    let server = Gatehouse::start(&config);
    let http = client_from(&dir.cert_pem, "127.0.0.2");
    let whoami = || {
        http.get(server.url("/api/whoami"))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
    };
    assert_eq!(whoami().await.unwrap().status(), 200);
    dir.write(
        "gatehouse.toml",
        &format!("{base}[auth]\ngenerated_user = \"admin\"\n"),
    );
    server.signal("HUP");
    server.wait_for_log("every user was removed", 1, Duration::from_secs(10));
    assert_eq!(whoami().await.unwrap().status(), 401);
    assert!(
        !server.logs().contains("password:"),
        "no password was minted on reload"
    );
}

/// Six identical wrong guesses at once for `user` from `source`; the sorted
/// statuses, the failed verifications recorded, and what a seventh guess
/// at another name from the same address gets.
async fn burst(
    server: &Gatehouse,
    dir: &TestDir,
    user: &str,
    source: &str,
) -> (Vec<u16>, u64, u16) {
    let before = crate::common::stats(server, &dir.cert_pem).await["failed_verifications"]
        .as_u64()
        .unwrap();
    let http = client_from(&dir.cert_pem, source);
    let guesses = (0..6).map(|_| {
        http.get(server.url("/api/whoami"))
            .basic_auth(user, Some("wrong guess"))
            .send()
    });
    let mut statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    statuses.sort_unstable();
    let after = crate::common::stats(server, &dir.cert_pem).await["failed_verifications"]
        .as_u64()
        .unwrap();
    let next = http
        .get(server.url("/api/whoami"))
        .basic_auth("carol", Some("also wrong"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (statuses, after - before, next)
}

#[tokio::test]
async fn known_and_unknown_users_look_the_same_under_a_burst() {
    let dir = TestDir::new();
    // Slow hashes (same parameters for everyone, as production has), so
    // that the six guesses overlap.
    let (m, t) = (32 * 1024, 3);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[users]\nalice = \"{}\"\ncarol = \"{}\"\n[lockout]\nmax_failures = 5\n[rate_limit]\nper_ip = false\nper_user = false\n",
        slow_hash(ALICE.1, m, t),
        slow_hash("carol's", m, t),
    );
    let server = Gatehouse::start(&dir.write("gatehouse.toml", &text));
    let known = burst(&server, &dir, "alice", "127.0.0.3").await;
    let unknown = burst(&server, &dir, "nobody-here", "127.0.0.4").await;
    assert_eq!(
        known, unknown,
        "known (left) and unknown (right) users differ"
    );
    assert_eq!(known.0, vec![401; 6]);
}

#[tokio::test]
async fn usernames_cannot_forge_log_fields_or_lines() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config("[lockout]\nmax_failures = 1\n"));
    let forged = "mallory client=10.9.9.9 user=alice \"configuration reloaded\"";
    let response = client_from(&dir.cert_pem, "127.0.0.6")
        .get(server.url("/api/whoami"))
        .basic_auth(forged, Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server.wait_for_log("locked out", 1, Duration::from_secs(5));
    let logs = server.logs();
    assert!(!logs.contains("user=mallory"), "{logs}");
    assert!(
        logs.contains(r#"user="mallory client=10.9.9.9 user=alice \"configuration reloaded\"""#),
        "{logs}"
    );
    assert!(!logs.contains("\"configuration reloaded\"\n"), "{logs}");
}

#[test]
fn check_config_and_serve_agree_on_metrics_paths() {
    let dir = TestDir::new();
    for path in [
        "/api/stats",
        "/api/whoami",
        "/healthz",
        "/{*rest}",
        "/m/{id}",
        "/:metrics",
        "/a/../b",
        "metrics",
        "/metrics",
    ] {
        let config = dir.config(&format!("[metrics]\npath = \"{path}\"\n"));
        let check = Command::new(binary())
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        if path == "/metrics" {
            assert!(
                check.status.success(),
                "{path}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            let server = Gatehouse::start(&config);
            drop(server);
            continue;
        }
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success(), "check-config accepted {path}");
        assert!(stderr.contains("[metrics] path"), "{path}: {stderr}");
        let serve = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_ne!(serve.status.code(), Some(101), "serve panicked on {path}");
        assert!(!serve.status.success());
        assert!(String::from_utf8_lossy(&serve.stderr).contains("[metrics] path"));
    }
}

#[tokio::test]
async fn a_full_lockout_table_fails_closed() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(
        "[lockout]\nmax_failures = 1\nmax_tracked = 2\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    for source in ["127.0.0.2", "127.0.0.3"] {
        let status = client_from(&dir.cert_pem, source)
            .get(server.url("/api/whoami"))
            .basic_auth("alice", Some("wrong"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    // Both records are live locks: a new address is refused, not let
    // through untracked.
    let response = client_from(&dir.cert_pem, "127.0.0.4")
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let metrics = metrics_text(&dir, &server).await;
    assert!(
        metrics.contains("gatehouse_lockout_table_full_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_tls_key_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TestDir::new();
    let config = dir.config("");
    let key = dir.path("key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Gatehouse::start(&config);
    server.wait_for_log(
        "readable by its group or by everyone",
        1,
        Duration::from_secs(2),
    );
    drop(server);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Gatehouse::start(&config);
    assert!(!server.logs().contains("readable by its group"));
}

#[tokio::test]
async fn a_flood_of_refused_requests_is_sampled_in_the_access_log() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config("[metrics]\nlisten = \"127.0.0.1:0\"\n"));
    let http = client_from(&dir.cert_pem, "127.0.0.5");
    for _ in 0..100 {
        let status = http
            .get(server.url("/api/whoami"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    let ok = client_from(&dir.cert_pem, "127.0.0.7")
        .get(server.url("/api/whoami"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    server.wait_for_log("client=127.0.0.7", 1, Duration::from_secs(2));
    let lines = server
        .logs()
        .lines()
        .filter(|l| l.contains("client=127.0.0.5") && l.contains("status=401"))
        .count();
    assert_eq!(
        lines,
        gatehouse::access_log::BURST as usize,
        "refused lines past the burst are left out"
    );
    let metrics = metrics_text(&dir, &server).await;
    assert!(
        metrics.contains("gatehouse_access_log_suppressed_total 80"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_requests_total{outcome=\"unauthorized\"} 100"),
        "{metrics}"
    );
}

#[tokio::test]
async fn refusals_behind_a_trusted_proxy_are_sampled_per_client() {
    let dir = TestDir::new();
    // The test's own address is the trusted proxy.
    let server =
        Gatehouse::start(&dir.config_with_server("trusted_proxies = [\"127.0.0.1/32\"]", ""));
    for _ in 0..30 {
        let answer = super::support::raw_tls(
            &dir,
            &server,
            "GET /healthz HTTP/1.1\r\nHost: a, evil\r\nX-Forwarded-For: 203.0.113.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let answer = super::support::raw_tls(
        &dir,
        &server,
        "TRACE /healthz HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    server.wait_for_log("client=203.0.113.2", 1, Duration::from_secs(2));
    let logs = server.logs();
    let first = logs
        .lines()
        .filter(|l| l.contains("client=203.0.113.1 via=127.0.0.1"))
        .count();
    assert_eq!(first, gatehouse::access_log::BURST as usize, "{logs}");
}
