//! A real upstream app for proxy tests: an axum server on loopback that
//! echoes what it received, counts streamed uploads, streams downloads,
//! answers slowly on demand, and echoes WebSocket messages.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Starts the upstream on 127.0.0.1 and returns its address.
pub async fn start() -> SocketAddr {
    let app = Router::new()
        .route("/count", post(count))
        .route("/download", get(download))
        .route("/slow", get(slow))
        .route("/ws", get(websocket))
        .route(
            "/missing",
            get(|| async { (http::StatusCode::NOT_FOUND, "no such page\n") }),
        )
        .fallback(any(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("upstream serves") });
    addr
}

/// Everything the upstream saw: method, path, query, headers, body.
async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), json!(values.join(", ")));
    }
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// Reads a streamed upload chunk by chunk and answers how many bytes came.
async fn count(req: Request) -> String {
    let mut stream = req.into_body().into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        total += chunk.map(|c| c.len() as u64).unwrap_or(0);
    }
    total.to_string()
}

#[derive(serde::Deserialize)]
struct Size {
    bytes: u64,
}

/// Streams `bytes` bytes generated on the fly, 64 KiB at a time.
async fn download(Query(size): Query<Size>) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunks = size.bytes.div_ceil(CHUNK);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let len = CHUNK.min(size.bytes - i * CHUNK) as usize;
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; len]))
    }));
    Body::from_stream(stream).into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

/// A minimal WebSocket server: the RFC 6455 handshake by hand, then echo.
async fn websocket(mut req: Request) -> Response {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return (http::StatusCode::BAD_REQUEST, "not a websocket request").into_response();
    };
    let user = req.headers().get("x-forwarded-user").cloned();
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let user = user
            .map(|u| String::from_utf8_lossy(u.as_bytes()).into_owned())
            .unwrap_or_default();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() {
                let reply = format!("{user}: {}", message.to_text().unwrap_or(""));
                if ws.send(reply.into()).await.is_err() {
                    break;
                }
            } else if message.is_close() {
                break;
            }
        }
    });
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .body(Body::empty())
        .expect("101 response")
}
