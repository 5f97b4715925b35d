//! Counts and times every request the app answers, by outcome and status
//! class (`gatehouse_requests_total`, `gatehouse_request_duration_seconds`).
//! Called by the request frame (`frame.rs`) around everything else, the
//! access log included. Authenticated requests by method are counted by the
//! auth layer (`AuthCounters`).

use std::time::Instant;

use axum::response::Response;

use crate::metrics::RequestMetrics;
use crate::metrics::exposition::outcome_label;

/// Records `response`'s outcome, status class and the time since `start`
/// (to the answer's head).
pub fn record(metrics: &RequestMetrics, start: Instant, response: &Response) {
    // Authenticated requests are counted by the auth layer, which spares
    // the response the user when no access log wants it.
    metrics.record(outcome_label(response), response.status(), start.elapsed());
}
