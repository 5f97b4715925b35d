//! Connection hygiene over real TLS: slowloris clients are cut off while
//! normal clients keep being served, idle keep-alive connections close, the
//! connection cap holds, and oversized heads and bodies are refused.

use std::time::{Duration, Instant};

use crate::common::{Gatehouse, TestDir, client, closed_within, tls_connect};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_off_while_others_are_served() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(
        &dir.config("[limits]\nheader_read_timeout = \"1s\"\ntls_handshake_timeout = \"1s\"\n"),
    );
    let start = Instant::now();

    // 20 clients that finish TLS and then send their headers a byte at a time,
    // and 20 that never even finish the TLS handshake.
    let mut trickling = Vec::new();
    for _ in 0..20 {
        let mut stream = tls_connect(&dir, &server, &[b"http/1.1"]).await;
        trickling.push(tokio::spawn(async move {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
                .iter()
                .chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter())
            {
                if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                    return true; // cut off while trickling
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            closed_within(&mut stream, Duration::from_secs(5)).await
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        silent.push(tokio::spawn(async move {
            closed_within(&mut tcp, Duration::from_secs(5)).await
        }));
    }

    // Meanwhile a normal client is served throughout.
    let http = client(&dir.cert_pem);
    let mut served = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let response = http
            .get(server.url("/api/whoami"))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut cut = 0;
    for task in trickling.into_iter().chain(silent) {
        cut += usize::from(task.await.unwrap());
    }
    println!(
        "slowloris: 40 connections held, {cut} cut off; {served} normal requests served meanwhile"
    );
    assert_eq!(cut, 40, "every slow connection was closed by the server");
    assert!(served >= 10);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config("[limits]\nheader_read_timeout = \"1s\"\n"));
    let mut stream = tls_connect(&dir, &server, &[b"http/1.1"]).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then silence: the server closes the idle connection.
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_the_server_stays_responsive() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config("[limits]\nmax_connections = 3\n"));
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(tls_connect(&dir, &server, &[b"http/1.1"]).await);
    }
    // A fourth client waits: the server does not take its connection yet.
    let http = client(&dir.cert_pem);
    let url = server.url("/healthz");
    let waiting = tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "served past the cap of 3 connections"
    );
    // One holder leaves: the waiting client is served.
    drop(holders.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(
        &dir.config("[limits]\nmax_header_bytes = 8192\nmax_body_bytes = 1024\n"),
    );
    let http1 = crate::common::http1_client(&dir.cert_pem);
    let big = "x".repeat(20 * 1024);
    let head = http1
        .get(server.url("/healthz"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let http = client(&dir.cert_pem);
    let body = http
        .post(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .body(vec![b'b'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Unauthenticated, the body is not even looked at.
    let anonymous = http
        .post(server.url("/api/whoami"))
        .body(vec![b'b'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}
