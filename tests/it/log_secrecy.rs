//! Every auth path is driven with logging turned all the way up, in text and
//! in JSON; neither a password, nor the base64 credentials, nor a hash may
//! appear anywhere in what the server wrote.

use crate::common::{Gatehouse, TestDir, client};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const WRONG: &str = "hunter2-wrong-Pw";
const UNKNOWN_PW: &str = "m4ll0ry-Secret";
const COLONLESS: &str = "c0l0nlessSecret";

async fn drive_every_path(server: &Gatehouse, cert_pem: &str) {
    let http = client(cert_pem);
    let url = server.url("/api/whoami");
    let send = |user: &'static str, password: &'static str| {
        http.get(&url).basic_auth(user, Some(password)).send()
    };
    assert_eq!(send("alice", "secret").await.unwrap().status(), 200);
    assert_eq!(send("alice", WRONG).await.unwrap().status(), 401);
    assert_eq!(send("mallory", UNKNOWN_PW).await.unwrap().status(), 401);
    let raw = |value: String| http.get(&url).header("authorization", value).send();
    assert_eq!(
        raw(format!("Basic {}", STANDARD.encode(COLONLESS)))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        raw("Bearer tok3n-Secret-value".into())
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        raw("Basic !!not-base64!!".into()).await.unwrap().status(),
        401
    );
    // Lockout: max_failures is 3, two failures so far from this address.
    assert_eq!(send("carol", WRONG).await.unwrap().status(), 401);
    assert_eq!(send("carol", WRONG).await.unwrap().status(), 429);
    assert_eq!(
        send("alice", "secret").await.unwrap().status(),
        429,
        "the address is locked out"
    );
    // Logging happens after responses are sent.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
}

fn assert_no_secrets(logs: &str, hashes: &[String]) {
    let mut secrets: Vec<String> = [
        "secret",
        WRONG,
        UNKNOWN_PW,
        COLONLESS,
        "tok3n-Secret-value",
        "p:ss:w0rd",
        "pässwörd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for pair in [
        "alice:secret",
        &format!("alice:{WRONG}"),
        &format!("mallory:{UNKNOWN_PW}"),
        &format!("carol:{WRONG}"),
    ] {
        secrets.push(STANDARD.encode(pair));
    }
    secrets.push(STANDARD.encode(COLONLESS));
    secrets.extend(hashes.iter().cloned());
    secrets.push("$argon2id$".into());
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "the logs contain {secret:?}:\n{logs}"
        );
    }
}

fn hashes_in(config: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .filter_map(|l| l.split('"').nth(1))
        .filter(|v| v.starts_with("$argon2"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn text_logs_at_debug_never_hold_secrets() {
    let dir = TestDir::new();
    let config = dir.config("[lockout]\nmax_failures = 3\n");
    let server = Gatehouse::start_with_env(&config, &[("RUST_LOG", "debug")]);
    drive_every_path(&server, &dir.cert_pem).await;
    let logs = server.logs();
    assert!(
        logs.contains("status=401")
            && logs.contains("status=429")
            && logs.contains("user=\"alice\""),
        "{logs}"
    );
    assert!(logs.contains("client locked out"), "{logs}");
    assert_no_secrets(&logs, &hashes_in(&config));
}

#[tokio::test]
async fn json_logs_at_debug_never_hold_secrets() {
    let dir = TestDir::new();
    let config = dir.config("[lockout]\nmax_failures = 3\n[log]\nformat = \"json\"\n");
    let server = Gatehouse::start_with_env(&config, &[("RUST_LOG", "debug")]);
    drive_every_path(&server, &dir.cert_pem).await;
    let logs = server.logs();
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "gatehouse::access")
        .collect();
    assert_eq!(access.len(), 9, "one JSON line per request:\n{logs}");
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "every line is JSON:\n{logs}"
    );
    // Flattened: the fields at the top level, latency a number.
    assert_eq!(access[0]["user"], "alice");
    assert_eq!(access[0]["status"], 200);
    assert!(access[0].get("fields").is_none(), "{}", access[0]);
    assert!(
        access[0]["latency_ms"].as_f64().unwrap() >= 0.0,
        "{}",
        access[0]
    );
    assert_no_secrets(&logs, &hashes_in(&config));
}

/// Tokens, API keys, login bodies and the signing key never reach the log,
/// at debug, in text and in JSON.
#[tokio::test]
async fn token_and_api_key_paths_at_debug_never_hold_secrets() {
    for format in ["text", "json"] {
        let dir = TestDir::new();
        let (server, api_key) =
            crate::tokens::start(&dir, &format!("[log]\nformat = \"{format}\"\n"));
        let http = client(&dir.cert_pem);
        let url = server.url("/api/whoami");
        let token = crate::tokens::login(&server, &dir, "alice", "secret").await;
        let wrong_login = http
            .post(server.url("/api/auth/jwt"))
            .json(&serde_json::json!({"username": "alice", "password": WRONG}))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_login.status(), 401);
        let mut wrong_key = api_key.clone();
        wrong_key.replace_range(30..31, if &api_key[30..31] == "Z" { "Y" } else { "Z" });
        let tampered = format!("{}x", &token[..token.len() - 1]);
        for (credential, want) in [
            (&token, 200),
            (&api_key, 200),
            (&wrong_key, 401),
            (&tampered, 401),
        ] {
            let status = http
                .get(&url)
                .bearer_auth(credential)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, want);
            let status = http
                .get(&url)
                .header("x-api-key", credential.as_str())
                .send()
                .await
                .unwrap()
                .status();
            assert!(status == 200 || status == 401);
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let logs = server.logs();
        let key_file = std::fs::read_to_string(dir.path("signing.pem")).unwrap();
        let key_body: String = key_file
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let digest_line = std::fs::read_to_string(dir.path("api-keys")).unwrap();
        let digest = digest_line.trim().rsplit(':').next().unwrap().to_owned();
        let payload = token.split('.').nth(1).unwrap().to_owned();
        for secret in [
            token.as_str(),
            payload.as_str(),
            &token[token.len() - 20..],
            api_key.as_str(),
            &api_key[20..],
            &wrong_key[20..],
            &tampered[tampered.len() - 20..],
            key_body.as_str(),
            digest.as_str(),
            WRONG,
            "\"secret\"",
        ] {
            assert!(
                !logs.contains(secret),
                "{format} logs contain a secret ({}…)",
                &secret[..8.min(secret.len())]
            );
        }
        assert_no_secrets(&logs, &hashes_in(&dir.path("gatehouse.toml")));
    }
}
