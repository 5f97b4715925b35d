//! Sidecar mode against a real upstream app on loopback: what reaches the
//! upstream, streamed bodies, upstream failures, and WebSockets.

use std::time::{Duration, Instant};

use crate::common::{Gatehouse, TestDir, client, client_with, peak_rss_mib, upstream};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

async fn gate_in_front_of_upstream(extra: &str) -> (TestDir, Gatehouse) {
    let upstream = upstream::start().await;
    let dir = TestDir::new();
    let config = dir.config(&format!("[upstream]\nurl = \"http://{upstream}\"\n{extra}"));
    let server = Gatehouse::start(&config);
    (dir, server)
}

#[tokio::test]
async fn forwards_method_path_query_and_body_with_the_right_headers() {
    let (dir, server) = gate_in_front_of_upstream("").await;
    let http = client(&dir.cert_pem);
    let response = http
        .post(server.url("/some/path?x=1&y=a%20b"))
        .basic_auth("alice", Some("secret"))
        .header("x-forwarded-user", "mallory")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-custom", "kept")
        .body("hello upstream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/some/path");
    assert_eq!(seen["query"], "x=1&y=a%20b");
    assert_eq!(seen["body"], "hello upstream");
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-forwarded-user"], "alice",
        "a forged user header is replaced"
    );
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "an untrusted client's X-Forwarded-For is replaced"
    );
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], server.addr.to_string());
    let host = headers["host"].as_str().unwrap();
    assert!(
        host.starts_with("127.0.0.1:") && host != server.addr.to_string(),
        "Host is the upstream's own by default: {host}"
    );
    assert_eq!(headers["x-custom"], "kept");
    assert!(
        headers.get("authorization").is_none(),
        "Authorization is not forwarded by default"
    );

    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let seen: Value = http
            .request(method.clone(), server.url("/m"))
            .basic_auth("bob", Some("pässwörd"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(seen["method"], method.as_str());
        assert_eq!(seen["headers"]["x-forwarded-user"], "bob");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (dir, server) = gate_in_front_of_upstream("").await;
    let http1 = crate::common::http1_client(&dir.cert_pem);
    let seen: Value = http1
        .get(server.url("/hop"))
        .basic_auth("alice", Some("secret"))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret-of-this-hop")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = seen["headers"].as_object().unwrap();
    for name in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            !headers.contains_key(name),
            "{name} reached the upstream: {headers:?}"
        );
    }
}

#[tokio::test]
async fn authorization_is_forwarded_only_when_configured() {
    let upstream = upstream::start().await;
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[upstream]\nurl = \"http://{upstream}/prefix\"\nforward_authorization = true\nuser_header = \"Remote-User\"\n"
    ));
    let server = Gatehouse::start(&config);
    let seen: Value = client(&dir.cert_pem)
        .get(server.url("/x?q=1"))
        .basic_auth("alice", Some("secret"))
        .header("remote-user", "root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["path"], "/prefix/x", "the URL's path is a prefix");
    assert_eq!(seen["headers"]["remote-user"], "alice");
    assert!(
        seen["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Basic ")
    );
}

#[tokio::test]
async fn unauthenticated_requests_never_reach_the_upstream_but_public_paths_do() {
    let (dir, server) =
        gate_in_front_of_upstream("[auth]\npublic = [\"/healthz\", \"/static/public/*\"]\n").await;
    let http = client(&dir.cert_pem);
    let refused = http
        .get(server.url("/static/private/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.text().await.unwrap(), "401 Unauthorized\n");
    let public: Value = http
        .get(server.url("/static/public/app.css"))
        .header("x-forwarded-user", "root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(public["path"], "/static/public/app.css");
    assert!(
        public["headers"].get("x-forwarded-user").is_none(),
        "no user on a public request, and no forged one"
    );
    // gatehouse's own health check is answered by gatehouse, not forwarded.
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok\n"
    );
}

#[tokio::test]
async fn refused_upstream_is_a_quick_502_and_a_silent_one_a_504() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(&format!("[upstream]\nurl = \"http://{closed}\"\n")));
    let http = client(&dir.cert_pem);
    let start = Instant::now();
    let response = http
        .get(server.url("/"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        server.logs().contains("upstream request failed")
            && server.logs().contains("Connection refused"),
        "the cause is logged: {}",
        server.logs()
    );

    let (dir, server) = gate_in_front_of_upstream("timeout = \"1s\"\n").await;
    let http = client(&dir.cert_pem);
    let start = Instant::now();
    let response = http
        .get(server.url("/slow"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(start.elapsed() < Duration::from_secs(5));
    // Still serving.
    let ok = http
        .get(server.url("/after"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_flat_memory() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let (dir, server) = gate_in_front_of_upstream("").await;
    let http = client_with(&dir.cert_pem, |b| b.timeout(Duration::from_secs(300)));
    let before = peak_rss_mib(server.pid());

    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = SIZE / chunk.len() as u64;
    let upload = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let counted = http
        .post(server.url("/count"))
        .basic_auth("alice", Some("secret"))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(counted.status(), StatusCode::OK);
    assert_eq!(counted.text().await.unwrap(), SIZE.to_string());

    let download = http
        .get(server.url(&format!("/download?bytes={SIZE}")))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let mut received = 0u64;
    let mut stream = download.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, SIZE);

    let after = peak_rss_mib(server.pid());
    println!("gatehouse peak RSS: {before:.1} MiB before, {after:.1} MiB after 2 x 200 MiB");
    assert!(
        after < before + 64.0,
        "memory grew with the body: {before:.1} -> {after:.1} MiB"
    );
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_after_authentication() {
    let (dir, server) = gate_in_front_of_upstream("").await;
    let mut tls = crate::common::rustls_client_config(&dir.cert_pem, &[&rustls::version::TLS13]);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        connector
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap()
    };
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://localhost:{}/ws", server.addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(request, connect().await)
        .await
        .expect("websocket handshake through gatehouse");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "second message"] {
        ws.send(text.into()).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.to_text().unwrap(), format!("alice: {text}"));
    }
    ws.close(None).await.unwrap();

    // Without credentials the upgrade is refused before the upstream sees it.
    let bare = format!("wss://localhost:{}/ws", server.addr.port())
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::client_async(bare, connect().await).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_the_configured_ca() {
    // The upstream is another gatehouse over TLS, with its own certificate.
    let upstream_dir = TestDir::new();
    let upstream = Gatehouse::start(&upstream_dir.config(""));
    let dir = TestDir::new();
    let ca = upstream_dir.path("cert.pem");
    let config = dir.config(&format!(
        "[upstream]\nurl = \"https://localhost:{}\"\nca = \"{}\"\nforward_authorization = true\n",
        upstream.addr.port(),
        ca.display()
    ));
    let server = Gatehouse::start(&config);
    let http = client(&dir.cert_pem);
    let response = http
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "{\"user\":\"alice\"}");

    // With the webpki roots instead, the upstream's self-made certificate is
    // refused: 502, never a silent plaintext or unverified connection.
    let untrusting = TestDir::new();
    let config = untrusting.config(&format!(
        "[upstream]\nurl = \"https://localhost:{}\"\n",
        upstream.addr.port()
    ));
    let server = Gatehouse::start(&config);
    let response = client(&untrusting.cert_pem)
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

/// `[upstream] preserve_host = true`: the upstream sees the client's Host,
/// over HTTP/1.1 and HTTP/2 (where it comes from `:authority`).
#[tokio::test]
async fn preserve_host_passes_the_clients_host() {
    let (dir, server) = gate_in_front_of_upstream("preserve_host = true\n").await;
    for http in [
        client(&dir.cert_pem),
        crate::common::http1_client(&dir.cert_pem),
    ] {
        let seen: Value = http
            .get(server.url("/h"))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(seen["headers"]["host"], server.addr.to_string());
        assert_eq!(seen["headers"]["x-forwarded-host"], server.addr.to_string());
    }
}

/// Pooled upstream connections are reused only once their exchange is over:
/// a download the client abandons half-way, a request the client gives up
/// waiting for, and concurrent requests never get each other's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_exchanges_never_leak_into_the_next_answer() {
    let (dir, server) = gate_in_front_of_upstream("timeout = \"1s\"").await;
    let http = client(&dir.cert_pem);
    let echo_path = |response: Value| response["path"].as_str().unwrap_or_default().to_owned();
    for round in 0..3 {
        // A 64 MiB download, dropped after its first chunk.
        let mut download = http
            .get(server.url("/download?bytes=67108864"))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap()
            .bytes_stream();
        assert!(!download.next().await.unwrap().unwrap().is_empty());
        drop(download);
        // A request the upstream takes 30 s to answer: the gate gives up
        // after its 1 s timeout (504).
        let late = http
            .get(server.url("/slow"))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
        // Then many requests at once, each must get its own answer.
        let answers = futures_util::future::join_all((0..16).map(|i| {
            let http = http.clone();
            let url = server.url(&format!("/echo/{round}/{i}"));
            async move {
                let response = http
                    .get(url)
                    .basic_auth("alice", Some("secret"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                (i, response.json::<Value>().await.unwrap())
            }
        }))
        .await;
        for (i, seen) in answers {
            assert_eq!(echo_path(seen), format!("/echo/{round}/{i}"));
        }
    }
}
