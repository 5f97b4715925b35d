//! What reaches the upstream: no forged identity (underscores, identity
//! and address headers), no tunnel but WebSockets, and client addresses
//! that never fall back to the proxy's.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::support::{curl, raw_tls, wsgi_echo};
use crate::common::{ALICE, Gatehouse, TestDir, client, client_from, upstream};

/// Address headers a client may try to plant: a trusted proxy may set them.
const ADDRESS_CLAIMS: [&str; 8] = [
    "X-Real-IP",
    "Client-IP",
    "True-Client-IP",
    "X-Client-IP",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded",
    "X-Originating-IP",
];

/// Identity headers a client may try to plant: nobody may set them.
const IDENTITY_CLAIMS: [&str; 18] = [
    "X-Forwarded-Groups",
    "X-Forwarded-Scopes",
    // RFC 7239's list: gatehouse writes the X-Forwarded-* ones only.
    "Forwarded",
    "X-Forwarded-Email",
    "X-Remote-Group",
    "X-Forwarded-Client-Cert",
    "X-Auth-Request-Groups",
    "X-HTTP-Method-Override",
    "X-Original-URL",
    "X-Rewrite-URL",
    "Remote-User",
    "Remote-Groups",
    "X-Remote-User",
    "X-Auth-Request-User",
    "X-authentik-username",
    "Cf-Access-Authenticated-User-Email",
    "Impersonate-User",
    "X-Amzn-Oidc-Identity",
];

/// Both.
fn claims() -> impl Iterator<Item = &'static str> {
    ADDRESS_CLAIMS.into_iter().chain(IDENTITY_CLAIMS)
}

#[test]
fn a_wsgi_upstream_never_sees_a_forged_user() {
    let dir = TestDir::new();
    let app = wsgi_echo();
    let config = dir.config(&format!(
        "[auth]\npublic = [\"/static/public/*\"]\n[upstream]\nurl = \"http://{}\"\n",
        app.addr
    ));
    let server = Gatehouse::in_process(&config);
    let url = server.url("/static/public/x");
    let mut args: Vec<String> = vec![
        "-H".into(),
        "X_Forwarded_User: admin".into(),
        "-H".into(),
        "X-Forwarded_User: admin".into(),
        "-H".into(),
        "X_Custom_Thing: 1".into(),
    ];
    for claim in claims() {
        args.push("-H".into());
        args.push(format!("{claim}: 6.6.6.6"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, body) = curl(&dir, &url, &args);
    assert_eq!(status, 200, "{body}");
    let env: Value = serde_json::from_str(&body).unwrap();
    assert!(env.get("HTTP_X_FORWARDED_USER").is_none(), "{env}");
    assert!(
        env.get("HTTP_X_CUSTOM_THING").is_none(),
        "underscored names are dropped: {env}"
    );
    for claim in claims() {
        let key = format!("HTTP_{}", claim.to_uppercase().replace('-', "_"));
        if key == "HTTP_X_REAL_IP" {
            assert_eq!(env[&key], "127.0.0.1", "X-Real-IP is the resolved client");
        } else {
            assert!(env.get(&key).is_none(), "{key} reached the upstream: {env}");
        }
    }
    // Authenticated, the upstream sees exactly the user, not "admin,alice".
    let mut args = args.clone();
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    args.extend(["-u", &user]);
    let (status, body) = curl(&dir, &server.url("/anything"), &args);
    assert_eq!(status, 200, "{body}");
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["HTTP_X_FORWARDED_USER"], "alice");
}

#[tokio::test]
async fn address_headers_pass_only_from_trusted_proxies_and_identities_never() {
    let up = upstream::start().await;
    let dir = TestDir::new();
    // 127.0.0.9 is a trusted proxy; 127.0.0.1 is not.
    let config = dir.config_with_server(
        "trusted_proxies = [\"127.0.0.9/32\"]",
        &format!("[upstream]\nurl = \"http://{up}\"\n"),
    );
    let server = Gatehouse::in_process(&config);
    for (source, trusted) in [("127.0.0.1", false), ("127.0.0.9", true)] {
        let mut request = client_from(&dir.cert_pem, source)
            .get(server.url("/echo"))
            .basic_auth(ALICE.0, Some(ALICE.1));
        for claim in claims() {
            request = request.header(claim, "6.6.6.6");
        }
        // Another address than the planted claims': what a trusted proxy
        // reports is told apart from what is passed through.
        request = request.header("X-Forwarded-For", "7.7.7.7");
        let seen: Value = request.send().await.unwrap().json().await.unwrap();
        let headers = &seen["headers"];
        let chain = if trusted {
            format!("7.7.7.7, {source}")
        } else {
            source.to_owned()
        };
        assert_eq!(headers["x-forwarded-for"], chain.as_str(), "from {source}");
        for claim in ADDRESS_CLAIMS {
            let name = claim.to_ascii_lowercase();
            match (name.as_str(), trusted) {
                // The client the trusted proxy names, or the peer.
                ("x-real-ip", true) => assert_eq!(headers[&name], "7.7.7.7", "resolved client"),
                ("x-real-ip", false) => assert_eq!(headers[&name], source, "resolved client"),
                (_, true) => assert_eq!(headers[&name], "6.6.6.6", "{name} from a trusted proxy"),
                (_, false) => assert!(headers.get(&name).is_none(), "{name} from {source}"),
            }
        }
        // A generic proxy in front passes whatever its client sent: only
        // gatehouse may say who the user is.
        for claim in IDENTITY_CLAIMS {
            let name = claim.to_ascii_lowercase();
            assert!(headers.get(&name).is_none(), "{name} from {source}");
        }
        assert_eq!(headers["x-forwarded-user"], "alice");
    }
}

/// A deliberately permissive upstream: it answers `101 Switching
/// Protocols` to any request with an `Upgrade` header and to `GET /switch`,
/// and otherwise 200 with the head it received as the body.
async fn permissive_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let answer = if head.contains("\r\nupgrade:") || head.starts_with("get /switch ") {
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                        head.len()
                    )
                };
                let _ = socket.write_all(answer.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    let up = permissive_upstream().await;
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[auth]\npublic = [\"/public/*\"]\n[upstream]\nurl = \"http://{up}\"\n"
    ));
    let server = Gatehouse::in_process(&config);
    // h2c on a public path, no credentials: needs authentication.
    let answer = raw_tls(
        &dir,
        &server,
        "GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // With credentials, h2c is sent on as a plain request: no 101, and the
    // upstream saw no upgrade headers.
    let answer = raw_tls(
        &dir,
        &server,
        "GET /public/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("upgrade: h2c"), "{answer}");
    assert!(!answer.contains("http2-settings"), "{answer}");
    // Plain requests on a public path still go through.
    let answer = raw_tls(
        &dir,
        &server,
        "GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_unasked_101_from_the_upstream_is_a_502() {
    let up = permissive_upstream().await;
    let dir = TestDir::new();
    let config = dir.config(&format!("[upstream]\nurl = \"http://{up}\"\n"));
    let server = Gatehouse::in_process(&config);
    // Nothing asked to switch, yet the upstream answers 101: passing that on
    // would turn the client's connection into something no check sees.
    let answer = raw_tls(
        &dir,
        &server,
        "GET /switch HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    // `Upgrade` without `Connection: upgrade` is not an upgrade request: it
    // is stripped as hop-by-hop and the upstream answers 200.
    let answer = raw_tls(
        &dir,
        &server,
        "GET /x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("upgrade: websocket"), "{answer}");
}

#[tokio::test]
async fn websockets_on_public_paths_need_credentials_unless_allowed() {
    let up = upstream::start().await;
    let dir = TestDir::new();
    for (allowed, expect_open) in [(false, false), (true, true)] {
        let config = dir.config(&format!(
            "[auth]\npublic = [\"/ws\"]\npublic_upgrades = {allowed}\n[upstream]\nurl = \"http://{up}\"\n"
        ));
        let server = Gatehouse::in_process(&config);
        let url = format!("wss://localhost:{}/ws", server.addr.port());
        let stream = super::support::tls_connect(&dir, &server, &[b"http/1.1"]).await;
        let result = tokio_tungstenite::client_async(url, stream).await;
        match (result, expect_open) {
            (Ok((mut ws, _)), true) => {
                ws.send("hi".into()).await.unwrap();
                let reply = ws.next().await.unwrap().unwrap();
                assert_eq!(
                    reply.to_text().unwrap(),
                    ": hi",
                    "no user on a public tunnel"
                );
            }
            (Err(tokio_tungstenite::tungstenite::Error::Http(response)), false) => {
                assert_eq!(response.status(), 401);
            }
            (other, _) => panic!("public_upgrades = {allowed}: {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn a_garbage_forwarded_hop_never_keys_on_the_proxy() {
    let dir = TestDir::new();
    let config = dir.config_with_server(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "[lockout]\nmax_failures = 2\n",
    );
    let server = Gatehouse::in_process(&config);
    let http = client(&dir.cert_pem);
    let guess = |xff: &'static str| {
        http.get(server.url("/api/whoami"))
            .basic_auth("alice", Some("wrong"))
            .header("x-forwarded-for", xff)
            .send()
    };
    for xff in ["garbage, 203.0.113.66", "203.0.113.67, garbage"] {
        for _ in 0..2 {
            assert_eq!(guess(xff).await.unwrap().status(), 401, "{xff}");
        }
        assert_eq!(guess(xff).await.unwrap().status(), 429, "{xff}: locked now");
    }
    // The proxy's other clients, and the proxy itself, are not locked out.
    let ok = http
        .get(server.url("/api/whoami"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = http
        .get(server.url("/api/whoami"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// A client's `Connection` header may name gatehouse's own headers as
/// hop-by-hop: that removes only the client's copies, never what gatehouse
/// writes after them.
#[tokio::test]
async fn connection_cannot_remove_what_gatehouse_writes() {
    let up = upstream::start().await;
    let dir = TestDir::new();
    let config = dir.config(&format!("[upstream]\nurl = \"http://{up}\"\n"));
    let server = Gatehouse::in_process(&config);
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    let url = server.url("/echo");
    // curl blocks: off the runtime that serves the upstream.
    let (status, body, _dir) = tokio::task::spawn_blocking(move || {
        let (status, body) = curl(
            &dir,
            &url,
            &[
                "--http1.1",
                "-u",
                &user,
                "-H",
                "Connection: x-forwarded-user, x-real-ip, x-forwarded-for, x-forwarded-proto, host",
                "-H",
                "X-Forwarded-User: mallory",
            ],
        );
        (status, body, dir)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["x-forwarded-user"], "alice", "{seen}");
    assert_eq!(headers["x-real-ip"], "127.0.0.1", "{seen}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(headers["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(headers["host"], up.to_string().as_str(), "{seen}");
    assert!(headers.get("connection").is_none(), "{seen}");
}
