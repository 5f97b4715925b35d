//! Connections cannot be held forever: silent ones in every protocol
//! state, HTTP/2 connections that only answer PINGs, slow readers, upgraded
//! tunnels, too many from one address, and the metrics listener's.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::support::{closed_within, metrics_addr, tls_connect};
use crate::common::{ALICE, Gatehouse, TestDir, cheap_hash, client_from, upstream};

const TIGHT: &str =
    "[limits]\nheader_read_timeout = \"1s\"\ntls_handshake_timeout = \"1s\"\nmax_connections = 5\n";

/// A plain TCP connection from a chosen loopback address.
async fn tcp_from(source: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// With every slot held by `silent` connections, a normal client (from
/// another address) is served within header_read_timeout (1 s) + 1 s, and
/// every silent connection has been closed by the server.
async fn served_while_silent_ones_close<S: tokio::io::AsyncRead + Unpin>(
    dir: &TestDir,
    server: &Gatehouse,
    silent: &mut [S],
) {
    let http = crate::common::client_with(&dir.cert_pem, |b| {
        b.local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(2))
    });
    let response = http
        .get(server.url("/api/whoami"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .expect("a normal client is served once the silent ones are closed");
    assert_eq!(response.status(), 200);
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(3)).await,
            "silent connection {i} is still open"
        );
    }
}

#[tokio::test]
async fn silent_tls_connections_are_closed_so_others_get_in() {
    let _heavy = crate::common::HEAVY.lock().await;
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(TIGHT));
    // Every slot taken by a connection that completed its TLS handshake and
    // then said nothing: under ALPN h2, http/1.1, and no ALPN at all.
    let mut silent = Vec::new();
    let h2: &[&[u8]] = &[b"h2"];
    let http1: &[&[u8]] = &[b"http/1.1"];
    for alpn in [h2, h2, http1, http1, &[]] {
        silent.push(tls_connect(&dir, &server, alpn).await);
    }
    served_while_silent_ones_close(&dir, &server, &mut silent).await;
}

#[tokio::test]
async fn silent_plain_connections_are_closed_so_others_get_in() {
    let _heavy = crate::common::HEAVY.lock().await;
    let dir = TestDir::new();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nenabled = false\n[users]\nalice = \"{}\"\n{TIGHT}",
        cheap_hash(ALICE.1)
    );
    let server = Gatehouse::start(&dir.write("plain.toml", &text));
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // One that starts the HTTP/2 preface and stops: still closed.
    silent[4].write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    served_while_silent_ones_close(&dir, &server, &mut silent).await;
}

/// An HTTP/2 client (the `h2` crate) over TLS with ALPN h2.
async fn h2_client(
    dir: &TestDir,
    server: &Gatehouse,
    window: u32,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = tls_connect(dir, server, &[b"h2"]).await;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(stream)
        .await
        .expect("h2 handshake");
    (send, tokio::spawn(connection))
}

fn h2_get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://localhost{path}"))
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn an_http2_connection_that_only_answers_pings_is_closed_when_idle() {
    let dir = TestDir::new();
    let server = Gatehouse::start(
        &dir.config("[limits]\nidle_timeout = \"1s\"\nh2_keep_alive = \"200ms\"\n"),
    );
    let (mut send, connection) = h2_client(&dir, &server, 65_535).await;
    let (response, _) = send.send_request(h2_get("/api/whoami"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    // The client now sends nothing but PING acks (the h2 crate answers the
    // server's keep-alive PINGs by itself). The server must still go.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(
        ended.is_ok(),
        "the idle HTTP/2 connection is still open after 5 s"
    );
}

#[tokio::test]
async fn http2_readers_that_never_open_their_window_are_cut_off() {
    let _heavy = crate::common::HEAVY.lock().await;
    let dir = TestDir::new();
    let root = dir.path("files");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![b'x'; 4 << 20]).unwrap();
    let server = Gatehouse::start(&dir.config(&format!(
        "[limits]\nsend_timeout = \"1s\"\n[static]\nroot = \"{}\"\n",
        root.display()
    )));
    let (send, connection) = h2_client(&dir, &server, 0).await;
    let mut send = send.ready().await.unwrap();
    let mut responses = Vec::new();
    for _ in 0..50 {
        let (response, _) = send.send_request(h2_get("/big.bin"), true).unwrap();
        responses.push(response);
    }
    // Headers are not flow-controlled: the first answer arrives, and with it
    // the server's SETTINGS.
    let first = responses.remove(0).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        send.current_max_send_streams() <= 100,
        "streams per connection are bounded: {}",
        send.current_max_send_streams()
    );
    // Headers arrive; the bodies cannot (window 0), so the server must close
    // the connection after send_timeout rather than hold 50 streams, even
    // while the client keeps opening new requests on it: a new request must
    // not restart the stalled ones' clock.
    let keep_busy = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Ok(mut ready) = send.clone().ready().await else {
                break;
            };
            let Ok((response, _)) = ready.send_request(h2_get("/healthz"), true) else {
                break;
            };
            drop(response);
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(6), connection).await;
    keep_busy.abort();
    assert!(
        ended.is_ok(),
        "the stalled HTTP/2 connection is still open after 6 s"
    );
    // Others are served meanwhile and after.
    let ok = client_from(&dir.cert_pem, "127.0.0.2")
        .get(server.url("/big.bin"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.bytes().await.unwrap().len(), 4 << 20);
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config("[limits]\nmax_connections_per_ip = 2\n"));
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tcp_from("127.0.0.1", server.addr).await.unwrap());
    }
    let mut third = tcp_from("127.0.0.1", server.addr).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "a third connection from one address is closed at once"
    );
    let ok = client_from(&dir.cert_pem, "127.0.0.2")
        .get(server.url("/api/whoami"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "another address is served");
}

type WebSocket = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// An authenticated WebSocket to the echo upstream's `/ws`, through gatehouse.
async fn open(
    dir: &TestDir,
    server: &Gatehouse,
) -> Result<WebSocket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("wss://localhost:{}/ws", server.addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
    let stream = tls_connect(dir, server, &[b"http/1.1"]).await;
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn tunnels_keep_their_slot_time_out_and_end_at_shutdown() {
    let up = upstream::start().await;
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(&format!(
        "[limits]\nmax_connections_per_ip = 2\n[upstream]\nurl = \"http://{up}\"\ntunnel_idle_timeout = \"1s\"\n"
    )));
    let mut first = open(&dir, &server).await.expect("first tunnel");
    let mut second = open(&dir, &server).await.expect("second tunnel");
    first.send("ping".into()).await.unwrap();
    assert_eq!(
        first.next().await.unwrap().unwrap().to_text().unwrap(),
        "alice: ping"
    );
    // Both tunnels still hold their address's slots: a third connection is
    // turned away.
    let mut third = tcp_from("127.0.0.1", server.addr).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "tunnels escaped the per-address cap"
    );
    // Idle tunnels are closed after tunnel_idle_timeout.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = second.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "an idle tunnel is still open after 5 s");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = first.next().await {}
    })
    .await;
    // Slots are back: a new tunnel opens, and shutdown ends it.
    let mut fresh = open(&dir, &server)
        .await
        .expect("a tunnel once slots are back");
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("exits within the grace");
    assert!(status.success());
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = fresh.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the tunnel outlived the server");
}

#[tokio::test]
async fn the_metrics_listener_has_the_same_connection_hygiene() {
    let dir = TestDir::new();
    let server =
        Gatehouse::start(&dir.config(
            "[limits]\nheader_read_timeout = \"1s\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        ));
    let addr = metrics_addr(&server);
    let mut partial = Vec::new();
    for _ in 0..20 {
        let mut stream = tcp_from("127.0.0.1", addr).await.unwrap();
        let _ = stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await;
        partial.push(stream);
    }
    let mut closed = 0;
    for stream in &mut partial {
        if closed_within(stream, Duration::from_secs(4)).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 20,
        "partial heads are cut off after header_read_timeout, and the cap turns the rest away"
    );
    let text = crate::common::client(&dir.cert_pem)
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("gatehouse_requests_total"), "{text}");
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use std::os::unix::process::CommandExt as _;
    let dir = TestDir::new();
    let mut command = std::process::Command::new(crate::common::binary());
    command.args(["serve", "--config"]).arg(dir.config(""));
    // Start it with a low soft limit, as many systems do (1,024).
    unsafe {
        command.pre_exec(|| {
            let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
            rlimit::setrlimit(rlimit::Resource::NOFILE, 256, hard)
        });
    }
    let server = Gatehouse::spawn(command);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(
        numbers[0], numbers[1],
        "soft limit raised to the hard one: {line}"
    );
    // The default max_connections (10,000) needs more than 256 descriptors;
    // where the hard limit is lower too, a warning says so.
    if numbers[0].parse::<u64>().is_ok_and(|soft| soft < 10_064) {
        server.wait_for_log("open-file limit is below", 1, Duration::from_secs(2));
    }
}

#[tokio::test]
async fn http2_streams_reset_before_they_stall_still_close_the_connection() {
    let _heavy = crate::common::HEAVY.lock().await;
    let dir = TestDir::new();
    let root = dir.path("files");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![b'x'; 1 << 20]).unwrap();
    let server = Gatehouse::start(&dir.config(&format!(
        "[limits]\nsend_timeout = \"1s\"\n[static]\nroot = \"{}\"\n",
        root.display()
    )));
    let (send, connection) = h2_client(&dir, &server, 0).await;
    // Streams that can never be taken (window 0), each reset after 400 ms
    // and replaced: no single one outlives send_timeout, but the
    // connection as a whole never delivers anything.
    let cycle = tokio::spawn(async move {
        loop {
            let mut streams = Vec::new();
            for _ in 0..20 {
                let Ok(mut ready) = send.clone().ready().await else {
                    return;
                };
                let Ok((response, stream)) = ready.send_request(h2_get("/big.bin"), true) else {
                    return;
                };
                streams.push((response, stream));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            for (_, mut stream) in streams {
                stream.send_reset(h2::Reason::CANCEL);
            }
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(8), connection).await;
    cycle.abort();
    assert!(
        ended.is_ok(),
        "a connection cycling stalled streams is still open after 8 s"
    );
}
