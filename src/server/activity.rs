//! What a connection is doing, as its watchdog needs to know: when the
//! client last sent a byte, how many requests are in flight, and whether a
//! response is waiting for the client to take more of it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};

use crate::io_watch::Clock;
use http_body::{Frame, SizeHint};

/// One connection's activity. Times are milliseconds since `start`.
pub(super) struct Activity {
    start: Instant,
    /// The client last sent bytes (any: headers, bodies, PINGs, acks).
    last_read: Arc<Clock>,
    /// A request last started or finished, or a response body was polled.
    last_progress: AtomicU64,
    /// Requests whose response has not been fully handed to the client.
    in_flight: AtomicUsize,
    /// Whether any request has started on this connection.
    started: AtomicBool,
    /// Waiting time of bodies dropped while still waiting (the client reset
    /// the stream instead of taking the data), in ms, draining at one ms
    /// per ms. A client that opens streams, lets them stall and resets them
    /// before `send_timeout` runs this up and is closed like a stalled one.
    abandoned_ms: AtomicU64,
    /// When `abandoned_ms` was last drained.
    drained_at: AtomicU64,
    /// One entry per response body handed to the connection: since when it
    /// has had data ready that the connection has not taken (the client is
    /// not reading, or its flow-control window is shut), 0 when it is not
    /// waiting. Each body keeps its own clock, so new requests or another
    /// stream moving cannot hide a stalled one.
    waiting: Mutex<Vec<Weak<AtomicU64>>>,
}

/// What the watchdog should do about a connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Leave it.
    Fine,
    /// No request in flight and silent, or idle too long: close politely.
    Idle,
    /// A response has waited on the client for too long: close now.
    Stalled,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_read: Clock::new(),
            last_progress: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            abandoned_ms: AtomicU64::new(0),
            drained_at: AtomicU64::new(0),
            waiting: Mutex::new(Vec::new()),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self, at: &AtomicU64) {
        at.store(self.now(), Ordering::Relaxed);
    }

    /// A request starts; the guard ends it when dropped.
    pub(super) fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.store(true, Ordering::Relaxed);
        self.touch(&self.last_progress);
        InFlight {
            activity: Arc::clone(self),
            waiting_since: None,
        }
    }

    /// The clock the connection's stream touches on every read.
    pub(super) fn read_clock(&self) -> Arc<Clock> {
        Arc::clone(&self.last_read)
    }

    /// Whether any request has started on this connection.
    pub(super) fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Since when the body that has waited longest has been waiting.
    fn oldest_waiting(&self) -> Option<u64> {
        let mut bodies = crate::sync::lock(&self.waiting);
        let mut oldest: Option<u64> = None;
        bodies.retain(|body| match body.upgrade() {
            Some(since) => {
                let since = since.load(Ordering::Relaxed);
                if since > 0 {
                    oldest = Some(oldest.map_or(since, |o| o.min(since)));
                }
                true
            }
            None => false,
        });
        oldest.map(|since| since - 1)
    }

    /// Judges the connection against the limits.
    pub(super) fn verdict(
        &self,
        silent_limit: Duration,
        idle_limit: Duration,
        send_limit: Duration,
    ) -> Verdict {
        let now = self.now();
        let since =
            |at: &AtomicU64| Duration::from_millis(now.saturating_sub(at.load(Ordering::Relaxed)));
        let drained = now.saturating_sub(self.drained_at.swap(now, Ordering::Relaxed));
        let _ = self
            .abandoned_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |debt| {
                Some(debt.saturating_sub(drained))
            });
        let send_limit_ms = u64::try_from(send_limit.as_millis()).unwrap_or(u64::MAX);
        let debt = self.abandoned_ms.load(Ordering::Relaxed);
        if debt > 0 && debt >= send_limit_ms {
            return Verdict::Stalled;
        }
        if let Some(waiting_since) = self.oldest_waiting()
            && Duration::from_millis(now.saturating_sub(waiting_since)) >= send_limit
        {
            return Verdict::Stalled;
        }
        // Before its first request a connection must speak within the
        // header timeout; after that, HTTP/1.1 waits for the next head under
        // hyper's header timer, and any connection with nothing in flight
        // (an HTTP/2 one answering PINGs included) goes after `idle_limit`.
        let never_started = !self.started.load(Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && (since(&self.last_progress) >= idle_limit
                || (never_started && self.last_read.since() >= silent_limit))
        {
            return Verdict::Idle;
        }
        Verdict::Fine
    }
}

/// A request in flight; moves into its response body.
pub(super) struct InFlight {
    activity: Arc<Activity>,
    /// The body's waiting clock (ms since the connection's start, plus 1;
    /// 0 when not waiting), registered once the response exists.
    waiting_since: Option<Arc<AtomicU64>>,
}

impl InFlight {
    fn set_waiting(&mut self, waiting: bool) {
        let activity = &self.activity;
        let since = self.waiting_since.get_or_insert_with(|| {
            let since = Arc::new(AtomicU64::new(0));
            crate::sync::lock(&activity.waiting).push(Arc::downgrade(&since));
            since
        });
        match waiting {
            // Keeps the first moment: a body polled again restarts it.
            true => {
                let _ = since.compare_exchange(
                    0,
                    activity.now() + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            false => since.store(0, Ordering::Relaxed),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(since) = &self.waiting_since {
            let since = since.load(Ordering::Relaxed);
            if since > 0 {
                let waited = self.activity.now().saturating_sub(since - 1);
                self.activity
                    .abandoned_ms
                    .fetch_add(waited, Ordering::Relaxed);
            }
        }
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.activity.touch(&self.activity.last_progress);
    }
}

/// A response body that reports to the connection's [`Activity`]: it is
/// "waiting" from the moment it is handed over, and after each chunk it
/// yields, until the connection asks for more. A body that is waiting for
/// its own source (an upstream) is not.
pub(super) struct TrackedBody {
    inner: Body,
    guard: Option<InFlight>,
}

impl TrackedBody {
    pub(super) fn new(inner: Body, mut guard: InFlight) -> Self {
        guard.set_waiting(true);
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Some(guard) = &mut this.guard {
            guard.activity.touch(&guard.activity.last_progress);
            // Asked for more: whatever was ready has been taken.
            guard.set_waiting(false);
        }
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            // The last chunk: the request is over once it is taken, and a
            // body dropped now has not been abandoned.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.guard = None,
            Poll::Ready(Some(Ok(_))) => {
                if let Some(guard) = &mut this.guard {
                    guard.set_waiting(true);
                }
            }
            Poll::Pending => {
                if let Some(guard) = &mut this.guard {
                    guard.set_waiting(false);
                }
            }
            // Finished (or failed): the request is over.
            Poll::Ready(_) => this.guard = None,
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let a = Activity::new();
        let zero = Duration::ZERO;
        let long = Duration::from_secs(3600);
        // Nothing in flight, never spoke: idle once the silent limit passes.
        assert_eq!(a.verdict(zero, long, long), Verdict::Idle);
        assert_eq!(a.verdict(long, long, long), Verdict::Fine);
        let guard = a.start_request();
        assert_eq!(a.verdict(zero, zero, long), Verdict::Fine);
        let body = TrackedBody::new(Body::empty(), guard);
        assert_eq!(a.verdict(zero, zero, zero), Verdict::Stalled);
        drop(body);
        // After a request, silence alone is hyper's business (HTTP/1.1) and
        // the idle limit decides.
        assert_eq!(a.verdict(zero, long, zero), Verdict::Fine);
        assert_eq!(a.verdict(long, zero, zero), Verdict::Idle);
    }
}
