//! One line per request, with refused requests sampled per client: past
//! [`BURST`] refusals from one address in a [`WINDOW`], further lines are
//! left out and summarised in one line when the window ends, so a flood of
//! refused requests cannot fill the disk. The metrics keep exact counts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::response::Response;
use prometheus_client::metrics::counter::Counter;

use crate::auth::AuthenticatedUser;
use crate::limit::{ClientAddress, ip_key};

/// Refused-request lines written per address per window.
pub const BURST: u32 = 20;
/// The sampling window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Addresses tracked at once; past it, new addresses share one bucket.
const MAX_TRACKED: usize = 10_000;
/// The bucket for addresses beyond [`MAX_TRACKED`].
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// Which refused-request lines to write.
#[derive(Default)]
pub struct RefusalSampler {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Lines left out since start-up (for metrics).
    suppressed: Counter,
    /// When the table was last swept of ended windows.
    swept: Mutex<Option<Instant>>,
}

struct Bucket {
    started: Instant,
    written: u32,
    left_out: u64,
}

impl RefusalSampler {
    /// A sampler counting what it leaves out into `suppressed`.
    pub fn new(suppressed: Counter) -> Self {
        Self {
            buckets: Mutex::default(),
            suppressed,
            swept: Mutex::default(),
        }
    }

    /// Whether to write a refused request's line for `client`; also returns
    /// how many lines the window that just ended left out, to summarise.
    fn admit(&self, client: IpAddr, now: Instant) -> (bool, u64) {
        let mut buckets = crate::sync::lock(&self.buckets);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            // Sweep at most once a window: a flood of new addresses must not
            // make every refused request scan the table.
            let mut swept = crate::sync::lock(&self.swept);
            if swept.is_none_or(|at| now.duration_since(at) >= WINDOW) {
                buckets.retain(|_, b| now.duration_since(b.started) < WINDOW);
                *swept = Some(now);
            }
        }
        let key = if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client) {
            OVERFLOW
        } else {
            client
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            started: now,
            written: 0,
            left_out: 0,
        });
        let mut ended = 0;
        if now.duration_since(bucket.started) >= WINDOW {
            ended = bucket.left_out;
            *bucket = Bucket {
                started: now,
                written: 0,
                left_out: 0,
            };
        }
        if bucket.written < BURST {
            bucket.written += 1;
            (true, ended)
        } else {
            bucket.left_out += 1;
            self.suppressed.inc();
            (false, ended)
        }
    }
}

/// What the access log needs from a request, taken before it is handled:
/// `None` when the line would not be written (access logging off).
pub(crate) struct Entry {
    start: Instant,
    method: http::Method,
    path: String,
    peer: Option<IpAddr>,
    resolved: Option<IpAddr>,
}

/// Starts a request's line: client (as resolved), the proxy it came `via`
/// (or `-`), method, path, status, user or `-`, for a forward-auth decision
/// the method and path it decided on (else `-`), latency. Only the path is
/// logged (not the query), never a header value; strings a client chose
/// are written quoted and escaped.
pub(crate) fn begin<B>(req: &http::Request<B>) -> Option<Entry> {
    // Skip all the gathering below when the line would not be written.
    if !tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO) {
        return None;
    }
    Some(Entry {
        start: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        peer: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip()),
        resolved: req.extensions().get::<ClientAddress>().map(|c| c.0),
    })
}

/// Writes the line for `response` (refused requests sampled per client).
pub(crate) fn finish(entry: Entry, sampler: &RefusalSampler, response: &Response) {
    let Entry {
        start,
        method,
        path,
        peer,
        resolved,
    } = entry;
    let status = response.status();
    // The resolved client (behind a trusted proxy, not the proxy), so one
    // noisy client behind it does not silence the others. The server
    // resolves it before this runs; a layer-only app leaves it to the auth
    // layer, which puts it in the response.
    let resolved = resolved.or_else(|| response.extensions().get::<ClientAddress>().map(|c| c.0));
    let client_ip = resolved.or(peer);
    if status.is_client_error() || status.is_server_error() {
        let key = client_ip.map_or(OVERFLOW, ip_key);
        let (write, ended) = sampler.admit(key, Instant::now());
        if ended > 0 {
            tracing::info!(
                target: "gatehouse::access",
                client = %key,
                left_out = ended,
                window = ?WINDOW,
                "refused requests from this client were not logged one by one"
            );
        }
        if !write {
            return;
        }
    }
    let client = client_ip.map_or_else(|| "-".to_owned(), |p| p.to_string());
    // The TCP peer too, when it is another (a trusted proxy).
    let via = match (peer, client_ip) {
        (Some(peer), Some(client)) if peer != client => peer.to_string(),
        _ => "-".to_owned(),
    };
    let authenticated = response.extensions().get::<AuthenticatedUser>();
    let user = authenticated.map_or("-", AuthenticatedUser::name);
    let auth = authenticated.map_or("-", |u| u.method().label());
    // A forward-auth decision names the request it was about.
    let decided = response.extensions().get::<crate::auth::DecidedRequest>();
    let decided_method = decided.map_or("-", |d| d.method.as_str());
    let decided_path = decided.map_or("-", |d| d.path.as_str());
    tracing::info!(
        target: "gatehouse::access",
        %client,
        %via,
        %method,
        path = path.as_str(),
        status = status.as_u16(),
        user,
        auth,
        decided_method,
        decided_path,
        // A number (to the microsecond), so JSON logs can be summed and
        // compared without parsing strings.
        latency_ms = (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_past_the_burst_and_summarises() {
        let counter = Counter::default();
        let sampler = RefusalSampler::new(counter.clone());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let written = (0..100).filter(|_| sampler.admit(a, t0).0).count();
        assert_eq!(written, BURST as usize);
        assert_eq!(counter.get(), 100 - u64::from(BURST));
        assert!(sampler.admit(b, t0).0, "another client is not affected");
        assert_eq!(
            sampler.admit(a, t0 + WINDOW),
            (true, 100 - u64::from(BURST))
        );
    }
}
