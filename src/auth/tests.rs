//! The layer's pipeline in-process: each decision driven with
//! `ServiceExt::oneshot` against a stub inner service, no sockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use base64::Engine as _;
use http::{Request, StatusCode};
use tower::{Service, ServiceExt};

use super::{AuthenticatedUser, BasicAuthLayer};
use crate::credentials::{CredentialStore, Verifier, hash_password, parse_phc};
use crate::limit::{ClientAddress, LockoutPolicy, Rate};
use crate::secret::Password;

fn store() -> Arc<CredentialStore> {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let hash = hash_password(&Password::new("secret".into()), params).unwrap();
    Arc::new(CredentialStore::new([("alice".to_owned(), parse_phc(&hash).unwrap())]).unwrap())
}

fn layer(
    adjust: impl FnOnce(super::BasicAuthBuilder) -> super::BasicAuthBuilder,
) -> BasicAuthLayer {
    let builder =
        BasicAuthLayer::builder("test", Verifier::builder(store()).max_concurrent(1).build())
            .public_paths(["/healthz", "/pub/*"])
            .per_ip(None)
            .per_user(None);
    adjust(builder).build().unwrap()
}

/// The inner service: answers with the user it was handed, or `public`.
fn inner() -> impl Service<Request<Body>, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|req: Request<Body>| async move {
        let who = req
            .extensions()
            .get::<AuthenticatedUser>()
            .map_or("public".to_owned(), |u| u.name().to_owned());
        Ok::<_, Infallible>(Response::new(Body::from(who)))
    })
}

fn request(path: &str, credentials: Option<(&str, &str)>, from: &str) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        builder = builder.header("authorization", format!("Basic {token}"));
    }
    let mut req = builder.body(Body::empty()).unwrap();
    let peer: SocketAddr = format!("{from}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

async fn send(layer: &BasicAuthLayer, req: Request<Body>) -> (StatusCode, String, Response) {
    let response = tower::Layer::layer(layer, inner())
        .oneshot(req)
        .await
        .unwrap();
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (status, text, Response::from_parts(parts, Body::empty()))
}

#[tokio::test]
async fn public_paths_pass_without_credentials() {
    let layer = layer(|b| b);
    let (status, body, _) = send(&layer, request("/healthz", None, "192.0.2.1")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "public"));
    let (status, body, _) = send(&layer, request("/pub/%61.css", None, "192.0.2.1")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "public"));
    let (status, _, _) = send(&layer, request("/pub/..%2fx", None, "192.0.2.1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&layer, request("/pub/../secret", None, "192.0.2.1")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "resolved to a private path"
    );
    let mut upgrade = request("/pub/ws", None, "192.0.2.1");
    upgrade
        .headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    let (status, _, _) = send(&layer, upgrade).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "upgrades on public paths authenticate"
    );
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_the_challenge() {
    let layer = layer(|b| b);
    for credentials in [None, Some(("alice", "wrong")), Some(("nobody", "secret"))] {
        let (status, body, response) = send(&layer, request("/x", credentials, "192.0.2.2")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{credentials:?}");
        assert_eq!(body, "401 Unauthorized\n");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic realm=\"test\"")
        );
    }
    assert_eq!(layer.counters().snapshot().failed_verifications, 2);
}

#[tokio::test]
async fn the_right_password_reaches_the_inner_service_then_the_cache() {
    let layer = layer(|b| b);
    let (status, body, response) = send(
        &layer,
        request("/x", Some(("alice", "secret")), "192.0.2.3"),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "alice"));
    assert_eq!(
        response
            .extensions()
            .get::<AuthenticatedUser>()
            .unwrap()
            .name(),
        "alice"
    );
    let client = response.extensions().get::<ClientAddress>().unwrap();
    assert_eq!(client.0.to_string(), "192.0.2.3");
    let (status, _, _) = send(
        &layer,
        request("/x", Some(("alice", "secret")), "192.0.2.3"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let counters = layer.counters().snapshot();
    assert_eq!((counters.verifications, counters.cache_hits), (1, 1));
}

#[tokio::test]
async fn repeated_failures_lock_the_address_out() {
    let layer = layer(|b| {
        b.lockout(LockoutPolicy {
            max_failures: 2,
            ..LockoutPolicy::default()
        })
    });
    for _ in 0..2 {
        let (status, _, _) = send(&layer, request("/x", Some(("alice", "no")), "192.0.2.4")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, response) = send(
        &layer,
        request("/x", Some(("alice", "secret")), "192.0.2.4"),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    // Another address is not affected.
    let (status, _, _) = send(
        &layer,
        request("/x", Some(("alice", "secret")), "192.0.2.5"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_per_user_quota_applies_after_the_password() {
    let layer = layer(|b| b.per_user(Some(Rate::new(1, 1))));
    let (status, _, _) = send(
        &layer,
        request("/x", Some(("alice", "secret")), "192.0.2.6"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(
        &layer,
        request("/x", Some(("alice", "secret")), "192.0.2.7"),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_full_verification_queue_answers_503() {
    // One slot, no queue, and a slow hash holding the slot.
    let params = argon2::Params::new(64 * 1024, 8, 1, None).unwrap();
    let hash = hash_password(&Password::new("slow".into()), params).unwrap();
    let store =
        Arc::new(CredentialStore::new([("slow".to_owned(), parse_phc(&hash).unwrap())]).unwrap());
    let verifier = Verifier::builder(store)
        .max_concurrent(1)
        .queue(0, Duration::from_millis(1))
        .build();
    let layer = BasicAuthLayer::builder("test", verifier)
        .per_ip(None)
        .per_user(None)
        .build()
        .unwrap();
    // Two at once: whichever takes the slot is verified (401: wrong
    // password), the other finds no slot and no queue.
    let (a, b) = tokio::join!(
        send(&layer, request("/x", Some(("slow", "a")), "192.0.2.8")),
        send(&layer, request("/x", Some(("slow", "b")), "192.0.2.9")),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE]
    );
    let refused = if a.0 == StatusCode::SERVICE_UNAVAILABLE {
        a.2
    } else {
        b.2
    };
    assert_eq!(refused.headers()["retry-after"], "1");
}
