//! The built-in routes and the assembly of the app `Router`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde_json::json;

use crate::auth::{AuthenticatedUser, BasicAuthLayer};
use crate::metrics::{AuthCounters, CountersSnapshot};

/// The app the binary serves: `/healthz` (public when the layer says so),
/// `/api/whoami` and `/api/stats` (protected), and 404 for anything else, but only after
/// authentication so that unauthenticated clients cannot probe for paths.
pub fn app(auth: BasicAuthLayer) -> Router {
    let counters = Arc::clone(auth.counters());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/whoami", get(whoami))
        .route("/api/stats", get(move || stats(Arc::clone(&counters))))
        .fallback(not_found)
        // `layer`, not `route_layer`: the fallback is protected too.
        .layer(auth)
        .layer(middleware::from_fn(access_log))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn whoami(user: AuthenticatedUser) -> Json<serde_json::Value> {
    Json(json!({ "user": user.name() }))
}

/// The auth layer's counters, for operators (behind authentication).
async fn stats(counters: Arc<AuthCounters>) -> Json<CountersSnapshot> {
    Json(counters.snapshot())
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "404 Not Found\n")
}

/// One line per request: client, method, path, status, user or `-`, latency.
/// Only the path is logged (not the query), and never a header value.
async fn access_log(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "-".to_owned());
    let response = next.run(req).await;
    let user = response
        .extensions()
        .get::<AuthenticatedUser>()
        .map_or("-", AuthenticatedUser::name);
    tracing::info!(
        target: "gatehouse::access",
        %client,
        %method,
        path,
        status = response.status().as_u16(),
        user,
        latency_ms = format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}
