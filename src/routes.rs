//! The built-in routes and the assembly of the app `Router`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;

use crate::auth::{AuthenticatedUser, BasicAuthLayer};
use crate::metrics::{AuthCounters, CountersSnapshot, MetricsSources};
use crate::proxy::{self, Proxy};

/// What authenticated requests reach.
pub enum Backend {
    /// The built-in routes: `/api/whoami`, `/api/stats`, 404 for the rest.
    Api,
    /// Everything is forwarded to an upstream app.
    Proxy(Arc<Proxy>),
    /// Files from a directory (with `index.html` for directories).
    Static(PathBuf),
}

/// Settings of the app beyond its backend.
#[derive(Default)]
pub struct AppOptions {
    /// The largest body the built-in routes accept.
    pub max_body_bytes: usize,
    /// Serve the Prometheus text at this path (behind authentication).
    pub metrics: Option<(String, MetricsSources)>,
}

/// A router serving only `GET /metrics`, for a separate metrics listener.
pub fn metrics_app(sources: MetricsSources) -> Router {
    Router::new().route("/metrics", get(move || metrics(sources.clone())))
}

/// The app the binary serves: gatehouse's own `/healthz` (public when the
/// layer says so) and the backend behind the auth layer. Unknown paths get
/// 404 only after authentication, so unauthenticated clients cannot probe
/// for paths.
pub fn app(auth: BasicAuthLayer, backend: Backend, options: AppOptions) -> Router {
    let max_body_bytes = options.max_body_bytes;
    let router: Router = match backend {
        Backend::Api => {
            let counters = Arc::clone(auth.counters());
            own_routes()
                .route("/api/whoami", get(whoami))
                .route("/api/stats", get(move || stats(Arc::clone(&counters))))
                .fallback(not_found)
                // The built-in routes read no bodies; refuse large ones early
                // (413) rather than let them be drained.
                .layer(RequestBodyLimitLayer::new(max_body_bytes))
        }
        Backend::Proxy(proxy) => own_routes().fallback(proxy::forward).with_state(proxy),
        // ServeDir refuses `..` segments (also percent-encoded) and never
        // follows a path outside `root`.
        Backend::Static(root) => own_routes()
            .fallback_service(ServeDir::new(root).append_index_html_on_directories(true)),
    };
    let router = match options.metrics {
        Some((path, sources)) => router.route(&path, get(move || metrics(sources.clone()))),
        None => router,
    };
    // `layer`, not `route_layer`: the fallback is protected too.
    router
        .layer(auth)
        .layer(middleware::from_fn(crate::request_guard::guard))
        .layer(middleware::from_fn(access_log))
}

/// gatehouse's own routes, whatever the backend.
fn own_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `{"user": "<name>"}`.
#[derive(serde::Serialize)]
struct WhoAmI<'a> {
    user: &'a str,
}

async fn whoami(user: AuthenticatedUser) -> Response {
    Json(WhoAmI { user: user.name() }).into_response()
}

/// The auth layer's counters, for operators (behind authentication).
async fn stats(counters: Arc<AuthCounters>) -> Json<CountersSnapshot> {
    Json(counters.snapshot())
}

/// The Prometheus text exposition.
async fn metrics(sources: MetricsSources) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(http::header::CONTENT_TYPE, content_type)],
        sources.render(),
    )
        .into_response()
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "404 Not Found\n")
}

/// One line per request: client, method, path, status, user or `-`, latency.
/// Only the path is logged (not the query), and never a header value.
async fn access_log(req: Request, next: Next) -> Response {
    // Skip all the gathering below when the line would not be written.
    if !tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO) {
        return next.run(req).await;
    }
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
