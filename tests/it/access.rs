//! Access rules: groups, per-path and per-method rules, 403 for a refused
//! user, a rule's own realm, groups for the upstream and for forward auth,
//! reload, and what check-config says.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{ALICE, BOB, CAROL, Gatehouse, TestDir, binary, client, upstream};

const RULES: &str = "[groups]\nadmins = [\"alice\"]\ndeploy = [\"alice\", \"ghost\"]\n\
    [[access]]\npath = \"/admin/*\"\nallow = [\"group:admins\"]\n\
    [[access]]\npath = \"/api/deploy\"\nmethods = [\"POST\"]\nallow = [\"group:deploy\"]\nscopes = [\"read-write\"]\n\
    [[access]]\npath = \"/reports\"\nallow = [\"user:bob\", \"group:admins\"]\nrealm = \"Reports\"\n\
    [forward_auth]\npath = \"/authz\"\n";

fn config(dir: &TestDir, app: std::net::SocketAddr) -> std::path::PathBuf {
    dir.config_with_server(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        &format!("[upstream]\nurl = \"http://{app}\"\n{RULES}"),
    )
}

async fn call(
    http: &reqwest::Client,
    server: &Gatehouse,
    method: reqwest::Method,
    path: &str,
    user: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = http.request(method, server.url(path));
    if let Some((name, password)) = user {
        request = request.basic_auth(name, Some(password));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn rules_refuse_with_403_and_groups_reach_the_upstream() {
    let dir = TestDir::new();
    let app = upstream::start().await;
    let config = config(&dir, app);
    let server = Gatehouse::start(&config);
    let http = client(&dir.cert_pem);
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    // A refused user: 403, no challenge, nothing reaches the upstream.
    for path in [
        "/admin/x",
        "/admin",
        "/admin;jsessionid=1/x",
        "/admin/%2e/x",
    ] {
        let response = call(&http, &server, get.clone(), path, Some(BOB)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(response.headers().get("www-authenticate").is_none());
        assert_eq!(response.text().await.unwrap(), "403 Forbidden\n");
    }
    // Unauthenticated is still 401.
    let response = call(&http, &server, get.clone(), "/admin/x", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Alice is an admin; the upstream hears her groups (a client's own
    // X-Forwarded-Groups is dropped).
    let response = http
        .get(server.url("/admin/x"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("X-Forwarded-Groups", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-groups"], "admins,deploy");
    let response = http
        .get(server.url("/other"))
        .basic_auth(CAROL.0, Some(CAROL.1))
        .header("X-Forwarded-Groups", "admins")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "default: authenticated");
    let seen: Value = response.json().await.unwrap();
    assert!(seen["headers"].get("x-forwarded-groups").is_none());
    // Methods: only POST is covered by the deploy rule.
    assert_eq!(
        call(&http, &server, post.clone(), "/api/deploy", Some(BOB))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&http, &server, get.clone(), "/api/deploy", Some(BOB))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call(&http, &server, post, "/api/deploy", Some(ALICE))
            .await
            .status(),
        StatusCode::OK
    );
    // A rule's realm is the challenge under it.
    let response = call(&http, &server, get.clone(), "/reports", None).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"Reports\", charset=\"UTF-8\""
    );
    assert_eq!(
        call(&http, &server, get.clone(), "/reports", Some(BOB))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call(&http, &server, get.clone(), "/reports", Some(CAROL))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // Forward auth decides with the same rules: 403, and groups on a 200.
    let decide = |user: (&'static str, &'static str)| {
        http.get(server.url("/authz"))
            .header("X-Forwarded-Uri", "/admin/panel")
            .basic_auth(user.0, Some(user.1))
            .send()
    };
    assert_eq!(decide(BOB).await.unwrap().status(), StatusCode::FORBIDDEN);
    let allowed = decide(ALICE).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.headers()["x-forwarded-groups"], "admins,deploy");
    // Rules reload: Bob becomes an admin.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("admins = [\"alice\"]", "admins = [\"alice\", \"bob\"]"),
    )
    .unwrap();
    crate::tokens::reload(&server).await;
    assert_eq!(
        call(&http, &server, get, "/admin/x", Some(BOB))
            .await
            .status(),
        StatusCode::OK
    );
    // The refusals were counted and logged as 403s for the user.
    let metrics_free_logs = server.logs();
    assert!(
        metrics_free_logs.contains("status=403"),
        "the access log shows the 403s"
    );
}

#[test]
fn check_config_names_unknown_groups_strangers_and_dead_rules() {
    let dir = TestDir::new();
    let run = |extra: &str| {
        let config = dir.config(extra);
        Command::new(binary())
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = run(&format!(
        "{RULES}[[access]]\npath = \"/admin/users\"\nmethods = [\"GET\"]\nallow = [\"user:bob\"]\n"
    ));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("[groups]") && text.contains("group deploy: ghost is not a configured user"),
        "{text}"
    );
    assert!(
        text.contains("rule #4 can never match: rule #1 comes first"),
        "{text}"
    );
    let out = run("[[access]]\npath = \"/x\"\nallow = [\"group:nobody\"]\n");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("[[access]] #1 allow") && text.contains("group `nobody` is not defined"),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
}
