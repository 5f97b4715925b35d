//! Counts and times every request the app answers, by outcome and status
//! class (`gatehouse_requests_total`, `gatehouse_request_duration_seconds`),
//! and authenticated ones by method. Called by the request frame
//! (`frame.rs`) around everything else, the access log included.

use std::time::Instant;

use axum::response::Response;

use crate::metrics::RequestMetrics;
use crate::metrics::exposition::outcome_label;

/// Records `response`'s outcome, status class and the time since `start`
/// (to the answer's head).
pub fn record(metrics: &RequestMetrics, start: Instant, response: &Response) {
    metrics.record(outcome_label(response), response.status(), start.elapsed());
    if let Some(user) = response
        .extensions()
        .get::<crate::auth::AuthenticatedUser>()
    {
        metrics.record_authenticated(user.method().label());
    }
}
