//! The request frame: what every listener does around the auth layer, in
//! one tower layer (it was four `from_fn` middlewares, each moving the
//! request and boxing a future; profiles showed the moves). In order:
//! 1. the client is resolved once (`ClientAddress`: the peer, or behind a
//!    trusted proxy the address it reports), so the access log and its
//!    sampling, the guard's refusals, the auth layer and the proxy's
//!    `X-Real-IP` all speak of the same client;
//! 2. the clock starts for the request metrics;
//! 3. the access log takes what it needs (when it is on);
//! 4. the request guard (`request_guard.rs`) may answer at once;
//! 5. otherwise the inner service (the auth layer, then the routes);
//! 6. the access-log line, then the metrics, for whatever answered.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use tower::{Layer, Service};

use crate::access_log::RefusalSampler;
use crate::limit::{ClientAddress, ClientIpResolver};
use crate::metrics::RequestMetrics;

/// Builds [`Frame`] services.
#[derive(Clone)]
pub struct FrameLayer {
    shared: Arc<Shared>,
}

struct Shared {
    resolver: ClientIpResolver,
    sampler: RefusalSampler,
    metrics: Arc<RequestMetrics>,
}

impl FrameLayer {
    /// A frame resolving clients with `resolver`, sampling refused lines
    /// with `sampler`, recording into `metrics`.
    pub fn new(
        resolver: ClientIpResolver,
        sampler: RefusalSampler,
        metrics: Arc<RequestMetrics>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                resolver,
                sampler,
                metrics,
            }),
        }
    }
}

impl<S> Layer<S> for FrameLayer {
    type Service = Frame<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Frame {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`FrameLayer`].
#[derive(Clone)]
pub struct Frame<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Frame<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
            let client =
                shared
                    .resolver
                    .resolve_request(peer.ip(), req.extensions(), req.headers());
            req.extensions_mut().insert(ClientAddress(client));
        }
        let start = Instant::now();
        let entry = crate::access_log::begin(&req);
        if entry.is_some() {
            // The line will name the user: the auth layer puts it in the
            // response for it.
            req.extensions_mut().insert(crate::auth::UserWanted);
        }
        // The guard's answer, or the inner service's future.
        let answer = match crate::request_guard::check(&req) {
            Some(refusal) => Err(refusal),
            None => {
                // The clone that was polled ready is the one that must be
                // called.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Ok(inner.call(req))
            }
        };
        Box::pin(async move {
            let response = match answer {
                Err(refusal) => refusal,
                Ok(future) => future.await?,
            };
            if let Some(entry) = entry {
                crate::access_log::finish(entry, &shared.sampler, &response);
            }
            crate::request_metrics::record(&shared.metrics, start, &response);
            Ok(response)
        })
    }
}
