//! The floor under the sidecar's speed: a bare hyper HTTP/1 proxy, with no
//! authentication, no layers, no header hygiene and no metrics, built from
//! the same hyper server and client the sidecar uses. `bench/sidecar.sh`
//! runs it beside nginx `proxy_pass` so that the gap between gatehouse and
//! nginx can be split into what gatehouse adds and what hyper itself costs.
//!
//! ```text
//! cargo bench --bench bare_proxy -- 127.0.0.1:18510 127.0.0.1:18500 legacy|dedicated|copoll
//! ```
//!
//! `legacy` forwards through hyper-util's pooled client; `dedicated` gives
//! each client connection its own upstream connection on
//! `hyper::client::conn::http1`, with no pool, its connection task spawned;
//! `copoll` does the same but drives the upstream connection in the client
//! connection's own task (one task, no cross-task wake-ups: the shape of
//! nginx's event loop), which measured no faster than `dedicated`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench may panic

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Body = http_body_util::combinators::BoxBody<hyper::body::Bytes, hyper::Error>;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [listen, upstream, mode] = args.as_slice() else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM legacy|dedicated|copoll");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is host:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is host:port");
    let mode = match mode.as_str() {
        "legacy" => Mode::Legacy,
        "dedicated" => Mode::Dedicated,
        "copoll" => Mode::Copoll,
        _ => {
            eprintln!("mode is legacy, dedicated or copoll");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(serve(listen, upstream, mode));
}

/// How the upstream is reached (see the module's doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Legacy,
    Dedicated,
    Copoll,
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, mode: Mode) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(http);
    let base = Arc::new(format!("http://{upstream}"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            if mode == Mode::Copoll {
                let up = TcpStream::connect(upstream).await.expect("upstream");
                let _ = up.set_nodelay(true);
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up))
                    .await
                    .expect("handshake");
                let sender = Arc::new(std::sync::Mutex::new(Some(send)));
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let mut send = sender.lock().unwrap().take().expect("one at a time");
                        let response = send.send_request(req).await;
                        *sender.lock().unwrap() = Some(send);
                        Ok::<_, Infallible>(reply(response))
                    }
                });
                let server =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                let mut conn = std::pin::pin!(conn);
                let mut server = std::pin::pin!(server);
                let mut conn_done = false;
                std::future::poll_fn(|cx| {
                    if !conn_done && conn.as_mut().poll(cx).is_ready() {
                        conn_done = true;
                    }
                    server.as_mut().poll(cx).map(|_| ())
                })
                .await;
            } else if mode == Mode::Dedicated {
                let sender: Arc<Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>>> =
                    Arc::new(Mutex::new(None));
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let sender = sender.clone();
                    async move {
                        let mut slot = sender.lock().await;
                        if slot.as_ref().is_none_or(|s| s.is_closed()) {
                            let stream = TcpStream::connect(upstream).await.expect("upstream");
                            let _ = stream.set_nodelay(true);
                            let (send, conn) =
                                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                                    .await
                                    .expect("handshake");
                            tokio::spawn(conn);
                            *slot = Some(send);
                        }
                        let send = slot.as_mut().expect("just set");
                        let _ = send.ready().await;
                        let response = send.send_request(req).await;
                        drop(slot);
                        Ok::<_, Infallible>(reply(response))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            } else {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    let base = base.clone();
                    async move {
                        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        *req.uri_mut() = format!("{base}{path}").parse().expect("uri");
                        let response = client.request(req).await;
                        Ok::<_, Infallible>(reply(response.map_err(|_| ())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
    }
}

fn reply<E>(response: Result<Response<Incoming>, E>) -> Response<Body> {
    match response {
        Ok(response) => response.map(|b| b.boxed()),
        Err(_) => {
            let mut r = Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
            *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            r
        }
    }
}
