//! Failure events for fail2ban: the shipped filter, run by the real
//! `fail2ban-regex` over log output of the real server, in text and JSON.

use std::process::Command;

use reqwest::StatusCode;

use crate::common::{ALICE, Gatehouse, TestDir, client_from, require_tool};

const FILTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/fail2ban/filter.d/gatehouse.conf"
);

/// N failures from 127.0.0.2 (wrong passwords, an unknown user, a
/// malformed header, a bad token), then successes and public requests from
/// 127.0.0.3: fail2ban-regex must match exactly the failures, all for
/// 127.0.0.2.
async fn failures_match_exactly(format: &str) {
    require_tool("fail2ban-regex", "--version");
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(&format!(
        "[log]\nformat = \"{format}\"\n[tokens]\nenabled = true\nephemeral_key = true\n"
    )));
    let attacker = client_from(&dir.cert_pem, "127.0.0.2");
    let user = client_from(&dir.cert_pem, "127.0.0.3");
    let url = server.url("/api/whoami");
    let mut failures = 0;
    for (name, password) in [
        ("alice", "wrong-password-x"),
        ("alice", "wrong-password-y"),
        ("nobody", "guess"),
    ] {
        let response = attacker
            .get(&url)
            .basic_auth(name, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        failures += 1;
    }
    for header in ["Basic !!!", "Bearer not.a.token"] {
        let response = attacker
            .get(&url)
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        failures += 1;
    }
    for _ in 0..3 {
        let ok = user
            .get(&url)
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let public = user.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(public.status(), StatusCode::OK);
        // No credentials at all is not a failed authentication.
        let anonymous = user.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let logs = server.logs();
    assert!(!logs.contains("wrong-password"), "no password in the logs");
    let log = dir.write(&format!("gatehouse-{format}.log"), &logs);
    let out = Command::new("fail2ban-regex")
        .arg("-v")
        .arg(&log)
        .arg(FILTER)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let lines = report
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        lines.contains(&format!(", {failures} matched,")),
        "{format}: {lines}\n{report}"
    );
    // Every match names the attacker, none the user.
    // `-v` lists each match as `|      HOST  DATE`.
    let hosts: Vec<&str> = report
        .lines()
        .map(|l| l.trim_start_matches(['|', ' ']))
        .filter(|l| l.starts_with("127.0.0."))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(hosts.len(), failures, "{report}");
    assert!(hosts.iter().all(|h| *h == "127.0.0.2"), "{hosts:?}");
}

#[tokio::test]
async fn the_filter_matches_every_failure_in_text_logs() {
    failures_match_exactly("text").await;
}

#[tokio::test]
async fn the_filter_matches_every_failure_in_json_logs() {
    failures_match_exactly("json").await;
}
