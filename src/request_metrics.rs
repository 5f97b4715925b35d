//! The middleware that counts and times every request the app answers, by
//! outcome and status class (`gatehouse_requests_total`,
//! `gatehouse_request_duration_seconds`). It runs outside the access log,
//! which skips its own work when access logging is off.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::RequestMetrics;
use crate::metrics::exposition::outcome_label;

/// Records the request's outcome, status class and time to the answer's
/// head.
pub async fn record(
    State(metrics): State<Arc<RequestMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let response = next.run(req).await;
    metrics.record(outcome_label(&response), response.status(), start.elapsed());
    if let Some(user) = response
        .extensions()
        .get::<crate::auth::AuthenticatedUser>()
    {
        metrics.record_authenticated(user.method().label());
    }
    response
}
