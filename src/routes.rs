//! The built-in routes and the assembly of the app: the frame and the auth
//! layer around the `Router`.

use std::sync::Arc;

use crate::config::{Backend, ConfigError};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use tower::{Layer as _, ServiceExt as _};
use tower_http::limit::RequestBodyLimitLayer;

use crate::access_log::RefusalSampler;
use crate::auth::{AuthenticatedUser, BasicAuthLayer};
use crate::metrics::{AuthCounters, CountersSnapshot, Registry, RequestMetrics};
use crate::proxy::{self, Proxy};
use crate::server::App;
use prometheus_client::metrics::counter::Counter;

/// Settings of the app beyond its backend.
#[derive(Default)]
pub struct AppOptions {
    /// The largest body the built-in routes accept.
    pub max_body_bytes: usize,
    /// Serve the Prometheus text at this path (behind authentication).
    pub metrics: Option<(String, Arc<Registry>)>,
    /// Counts access-log lines of refused requests left out.
    pub suppressed_log_lines: Counter,
    /// Counts and times requests (and the upstream's answers).
    pub requests: Arc<RequestMetrics>,
    /// Whether clients reach gatehouse over TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// The config file, for errors about the upstream's CA file.
    pub config_path: std::path::PathBuf,
}

/// A router serving only `GET /metrics`, for a separate metrics listener.
pub fn metrics_app(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(move || metrics(Arc::clone(&registry))))
}

/// The app the binary serves: gatehouse's own `/healthz` (public when the
/// layer says so) and the backend behind the auth layer. Unknown paths get
/// 404 only after authentication, so unauthenticated clients cannot probe
/// for paths.
pub fn app(
    auth: BasicAuthLayer,
    backend: &Backend,
    options: AppOptions,
) -> Result<App, ConfigError> {
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
        Backend::Upstream(settings) => {
            let proxy = Proxy::new(
                (**settings).clone(),
                auth.client_resolver().clone(),
                options.tls,
                &options.config_path,
                Arc::clone(&options.requests),
            )?
            .with_api_key_header(auth.api_key_header().cloned());
            own_routes()
                .fallback(proxy::forward)
                .with_state(Arc::new(proxy))
        }
        Backend::Static(settings) => crate::static_files::router(own_routes(), settings.clone()),
    };
    let router = match options.metrics {
        Some((path, registry)) => router.route(&path, get(move || metrics(Arc::clone(&registry)))),
        None => router,
    };
    Ok(App::new(gate(
        router,
        auth,
        options.suppressed_log_lines,
        options.requests,
    )))
}

/// The app of the separate forward-auth listener: decisions only (the auth
/// layer answers them), 404 for anything else after authentication.
pub fn forward_auth_app(
    auth: BasicAuthLayer,
    suppressed_log_lines: Counter,
    requests: Arc<RequestMetrics>,
) -> App {
    let router = Router::new().fallback(not_found);
    let app = gate(router, auth, suppressed_log_lines, requests);
    App::new(app.map_request(|mut req: Request| {
        req.extensions_mut()
            .insert(crate::auth::ForwardAuthListener);
        req
    }))
}

/// The middleware every listener's requests go through around `router`:
/// the frame, then the auth layer.
fn gate(
    router: Router,
    auth: BasicAuthLayer,
    suppressed_log_lines: Counter,
    requests: Arc<RequestMetrics>,
) -> crate::frame::Frame<crate::auth::BasicAuth<Router>> {
    let resolver = auth.client_resolver().clone();
    // The layers wrap the router itself, so that they run before any route
    // is chosen: the auth layer makes the path canonical first, and
    // routing, the file server and the proxy all see that one form.
    // (Layers added with `Router::layer` would run after routing; an outer
    // router holding this one as its fallback did the same at the cost of
    // a second routing per request.) One layer around the auth layer:
    // client, clock, access log, guard (frame.rs).
    let frame = crate::frame::FrameLayer::new(
        resolver,
        RefusalSampler::new(suppressed_log_lines),
        requests,
    );
    frame.layer(auth.layer_for_server(router))
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
    /// The OAuth scopes of the request's token, when it has some.
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<&'a str>,
}

async fn whoami(user: AuthenticatedUser) -> Response {
    Json(WhoAmI {
        user: user.name(),
        scopes: user.scopes(),
    })
    .into_response()
}

/// The auth layer's counters, for operators (behind authentication).
async fn stats(counters: Arc<AuthCounters>) -> Json<CountersSnapshot> {
    Json(counters.snapshot())
}

/// The Prometheus text exposition.
async fn metrics(registry: Arc<Registry>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(http::header::CONTENT_TYPE, content_type)],
        crate::metrics::render(&registry),
    )
        .into_response()
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "404 Not Found\n")
}
