//! Zero-downtime reload, by SIGHUP and by editing files: users added,
//! removed and changed, a broken config rejected while the old one keeps
//! serving, and a certificate swap seen by new connections.

use std::time::Duration;

use crate::common::{Gatehouse, TestDir, cheap_hash, client, whoami};
use reqwest::StatusCode;

const RELOADED: &str = "configuration reloaded";

fn config_text(users: &[(&str, &str)], extra: &str) -> String {
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[rate_limit]\nper_ip = false\nper_user = false\n[lockout]\nmax_failures = 1000\n",
    );
    text.push_str(extra);
    text.push_str("[users]\n");
    for (user, password) in users {
        text.push_str(&format!("{user} = \"{}\"\n", cheap_hash(password)));
    }
    text
}

#[tokio::test]
async fn sighup_applies_added_removed_and_changed_users_at_once() {
    let dir = TestDir::new();
    let path = dir.write(
        "gatehouse.toml",
        &config_text(&[("alice", "secret"), ("bob", "bob-pw")], ""),
    );
    let server = Gatehouse::start(&path);
    let http = client(&dir.cert_pem);
    assert_eq!(
        whoami(&http, &server, "bob", "bob-pw").await,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&http, &server, "bob", "bob-pw").await,
        StatusCode::OK,
        "bob is now cached"
    );

    dir.write(
        "gatehouse.toml",
        &config_text(&[("alice", "new secret"), ("erin", "erin-pw")], ""),
    );
    server.signal("HUP");
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));

    assert_eq!(
        whoami(&http, &server, "bob", "bob-pw").await,
        StatusCode::UNAUTHORIZED,
        "a removed user is out, cached or not"
    );
    assert_eq!(
        whoami(&http, &server, "alice", "secret").await,
        StatusCode::UNAUTHORIZED,
        "the old password stopped working"
    );
    assert_eq!(
        whoami(&http, &server, "alice", "new secret").await,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&http, &server, "erin", "erin-pw").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_broken_config_is_rejected_and_the_old_one_keeps_serving() {
    let dir = TestDir::new();
    let path = dir.write("gatehouse.toml", &config_text(&[("alice", "secret")], ""));
    let server = Gatehouse::start(&path);
    let http = client(&dir.cert_pem);
    assert_eq!(
        whoami(&http, &server, "alice", "secret").await,
        StatusCode::OK
    );

    for (round, broken) in [
        "[users]\nalice = \"not a hash\"\n",
        "[server\nlisten = ",
        "[tls]\ncert = \"missing.pem\"\nkey = \"key.pem\"\n[users]\na = \"x\"\n",
    ]
    .into_iter()
    .enumerate()
    {
        dir.write("gatehouse.toml", broken);
        server.signal("HUP");
        server.wait_for_log("reload rejected", round + 1, Duration::from_secs(10));
        assert_eq!(
            whoami(&http, &server, "alice", "secret").await,
            StatusCode::OK,
            "old config still serves after {broken:?}"
        );
        // Fresh connections still work too (TLS unchanged).
        assert_eq!(
            whoami(&client(&dir.cert_pem), &server, "alice", "secret").await,
            StatusCode::OK
        );
        // Wait for the watcher's own reload of the same edit to settle.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let logs = server.logs();
    assert!(
        logs.contains("gatehouse.toml"),
        "the error names the file: {logs}"
    );
    assert!(!logs.contains("$argon2"), "no hash in the logs");

    dir.write(
        "gatehouse.toml",
        &config_text(&[("alice", "secret"), ("erin", "erin-pw")], ""),
    );
    server.signal("HUP");
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));
    assert_eq!(
        whoami(&http, &server, "erin", "erin-pw").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn editing_the_users_file_reloads_without_a_signal() {
    let dir = TestDir::new();
    dir.write("users", &format!("alice:{}\n", cheap_hash("secret")));
    let path = dir.write(
        "gatehouse.toml",
        &config_text(&[], "[auth]\nusers_file = \"users\"\n"),
    );
    let server = Gatehouse::start(&path);
    let http = client(&dir.cert_pem);
    assert_eq!(
        whoami(&http, &server, "dora", "dora-pw").await,
        StatusCode::UNAUTHORIZED
    );

    // Written the way editors and Kubernetes do: a new file renamed over the old.
    let staged = dir.write(
        "users.new",
        &format!(
            "alice:{}\ndora:{}\n",
            cheap_hash("secret"),
            cheap_hash("dora-pw")
        ),
    );
    std::fs::rename(&staged, dir.path("users")).unwrap();
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));
    assert_eq!(
        whoami(&http, &server, "dora", "dora-pw").await,
        StatusCode::OK
    );
    assert_eq!(
        whoami(&http, &server, "alice", "secret").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_new_certificate_is_used_for_new_connections() {
    let dir = TestDir::new();
    let path = dir.write("gatehouse.toml", &config_text(&[("alice", "secret")], ""));
    let server = Gatehouse::start(&path);
    let old_client = client(&dir.cert_pem);
    assert_eq!(
        whoami(&old_client, &server, "alice", "secret").await,
        StatusCode::OK
    );

    let replacement = TestDir::new();
    std::fs::copy(replacement.path("cert.pem"), dir.path("cert.pem")).unwrap();
    std::fs::copy(replacement.path("key.pem"), dir.path("key.pem")).unwrap();
    server.signal("HUP");
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));

    // The open connection keeps its session...
    assert_eq!(
        whoami(&old_client, &server, "alice", "secret").await,
        StatusCode::OK
    );
    // ...new handshakes get the new certificate: trusted by the new CA only.
    assert_eq!(
        whoami(&client(&replacement.cert_pem), &server, "alice", "secret").await,
        StatusCode::OK
    );
    let stale = client(&dir.cert_pem)
        .get(server.url("/healthz"))
        .send()
        .await;
    assert!(
        stale.is_err(),
        "a client trusting only the old certificate must fail a new handshake"
    );
}

#[tokio::test]
async fn settings_that_need_a_restart_are_reported() {
    let dir = TestDir::new();
    let path = dir.write("gatehouse.toml", &config_text(&[("alice", "secret")], ""));
    let server = Gatehouse::start(&path);
    let moved = config_text(&[("alice", "secret")], "").replace("127.0.0.1:0", "127.0.0.1:1");
    dir.write("gatehouse.toml", &moved);
    server.signal("HUP");
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));
    assert!(
        server.logs().contains("section=\"[server]\""),
        "{}",
        server.logs()
    );
    assert!(server.logs().contains("only takes effect after a restart"));
    // Still serving where it was.
    assert_eq!(
        whoami(&client(&dir.cert_pem), &server, "alice", "secret").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_in_flight_request_survives_a_reload() {
    let dir = TestDir::new();
    let params = argon2::Params::new(64 * 1024, 8, 1, None).unwrap();
    let slow = gatehouse::credentials::hash_password(
        &gatehouse::secret::Password::new("slow".into()),
        params,
    )
    .unwrap();
    let text = format!(
        "{}slowpoke = \"{slow}\"\n",
        config_text(&[("alice", "secret")], "")
    );
    let path = dir.write("gatehouse.toml", &text);
    let server = Gatehouse::start(&path);
    let http = client(&dir.cert_pem);
    let url = server.url("/api/whoami");
    let in_flight = tokio::spawn(http.get(url).basic_auth("slowpoke", Some("slow")).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.signal("HUP");
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), StatusCode::OK);
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));
}

#[tokio::test]
async fn a_relative_config_path_is_watched_too() {
    let dir = TestDir::new();
    dir.write("gatehouse.toml", &config_text(&[("alice", "secret")], ""));
    let mut command = std::process::Command::new(crate::common::binary());
    command
        .current_dir(dir.dir.path())
        .args(["serve", "--config", "gatehouse.toml"]);
    let server = Gatehouse::spawn(command);
    dir.write(
        "gatehouse.toml",
        &config_text(&[("alice", "secret"), ("erin", "erin-pw")], ""),
    );
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));
    assert_eq!(
        whoami(&client(&dir.cert_pem), &server, "erin", "erin-pw").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_log_level_changes_on_reload() {
    let dir = TestDir::new();
    let quiet = "[log]\nlevel = \"warn,gatehouse::app=info\"\n";
    let config = dir.config(quiet);
    let mut command = std::process::Command::new(crate::common::binary());
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG");
    let server = Gatehouse::spawn(command);
    let http = client(&dir.cert_pem);
    let whoami = || {
        http.get(server.url("/api/whoami"))
            .basic_auth("alice", Some("secret"))
            .send()
    };
    assert_eq!(whoami().await.unwrap().status(), 200);
    assert!(
        !server.logs().contains("gatehouse::access"),
        "access lines are info: not logged at warn"
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(quiet, "[log]\nlevel = \"info\"\n");
    std::fs::write(&config, text).unwrap();
    server.signal("HUP");
    server.wait_for_log("log level changed", 1, Duration::from_secs(10));
    assert_eq!(whoami().await.unwrap().status(), 200);
    // The line names the user: the layer puts it in the response again
    // once the access log is on, though it left it out while it was off.
    server.wait_for_log("status=200 user=\"alice\"", 1, Duration::from_secs(5));
    assert!(
        !server.logs().contains("only takes effect after a restart"),
        "{}",
        server.logs()
    );
}

/// A keep-alive connection's credential memo (auth/memo.rs) never outlives
/// what the cache vouches for: a password changed by a reload, or an
/// address locked out by another client's guesses, is refused on the very
/// connection that had been let in three times with it.
#[tokio::test]
async fn a_connections_memo_never_outlives_the_password_or_the_lockout() {
    let dir = TestDir::new();
    let path = dir.write(
        "gatehouse.toml",
        &config_text(&[("alice", "secret")], "").replace("max_failures = 1000", "max_failures = 3"),
    );
    let server = Gatehouse::start(&path);
    let http = client(&dir.cert_pem);
    for _ in 0..3 {
        assert_eq!(
            whoami(&http, &server, "alice", "secret").await,
            StatusCode::OK
        );
    }
    dir.write(
        "gatehouse.toml",
        &config_text(&[("alice", "new secret")], "")
            .replace("max_failures = 1000", "max_failures = 3"),
    );
    server.signal("HUP");
    server.wait_for_log(RELOADED, 1, Duration::from_secs(10));
    assert_eq!(
        whoami(&http, &server, "alice", "secret").await,
        StatusCode::UNAUTHORIZED,
        "the old password, on the connection that remembered it"
    );
    for _ in 0..3 {
        assert_eq!(
            whoami(&http, &server, "alice", "new secret").await,
            StatusCode::OK
        );
    }
    // Another client from the same address guesses until the address is
    // locked; the remembered credential is then refused too.
    let guesser = client(&dir.cert_pem);
    for _ in 0..3 {
        assert_ne!(
            whoami(&guesser, &server, "mallory", "guess").await,
            StatusCode::OK
        );
    }
    assert_ne!(
        whoami(&http, &server, "alice", "new secret").await,
        StatusCode::OK,
        "a locked address is refused, remembered credential or not"
    );
}
