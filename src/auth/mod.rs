//! The tower layer that enforces HTTP Basic authentication.
//!
//! [`BasicAuthLayer`] holds only shared, immutable configuration behind an
//! `Arc`; [`BasicAuth`] is the per-service wrapper. For each request it lets
//! public paths through, parses the header (a pure function, see
//! [`header`]), verifies the password on the blocking pool and, on success,
//! hands the request on with an [`AuthenticatedUser`] in its extensions.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use gatehouse::auth::{AuthenticatedUser, BasicAuthLayer};
//! use gatehouse::credentials::{CredentialStore, Verifier, hash_password, parse_phc};
//! use gatehouse::secret::Password;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let params = argon2::Params::new(64, 1, 1, None)?; // cheap, for the example only
//! let hash = parse_phc(&hash_password(&Password::new("secret".into()), params)?)?;
//! let store = CredentialStore::new([("alice".to_owned(), hash)])?;
//! let auth = BasicAuthLayer::new("my app", Verifier::new(Arc::new(store), 2))?
//!     .with_public_paths(["/healthz"]);
//!
//! async fn hello(user: AuthenticatedUser) -> String {
//!     format!("hello {}", user.name())
//! }
//! let app: Router = Router::new()
//!     .route("/", get(hello))
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(auth); // `layer`, not `route_layer`: unknown paths get 401 too
//! # Ok(())
//! # }
//! ```

pub mod header;
mod public;
mod user;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, StatusCode};
use tower::{Layer, Service};

pub use public::PublicPaths;
pub use user::AuthenticatedUser;

use crate::credentials::Verifier;

/// The realm could not be put in a `WWW-Authenticate` header.
#[derive(Debug, thiserror::Error)]
#[error("realm must be non-empty, without quotes, backslashes or control characters")]
pub struct InvalidRealm;

/// A tower layer that requires HTTP Basic authentication (RFC 7617).
#[derive(Clone)]
pub struct BasicAuthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    challenge: HeaderValue,
    verifier: Verifier,
    public: PublicPaths,
}

impl BasicAuthLayer {
    /// A layer that challenges with `realm` and checks passwords with
    /// `verifier`. Every path is protected until
    /// [`with_public_paths`](Self::with_public_paths) says otherwise.
    pub fn new(realm: &str, verifier: Verifier) -> Result<Self, InvalidRealm> {
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(InvalidRealm);
        }
        let challenge =
            HeaderValue::try_from(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .map_err(|_| InvalidRealm)?;
        Ok(Self {
            shared: Arc::new(Shared {
                challenge,
                verifier,
                public: PublicPaths::default(),
            }),
        })
    }

    /// Paths that skip authentication: exact (`/healthz`) or a prefix ending
    /// in `*` (`/static/public/*`).
    pub fn with_public_paths<I, P>(self, patterns: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let shared = Shared {
            challenge: self.shared.challenge.clone(),
            verifier: self.shared.verifier.clone(),
            public: PublicPaths::new(patterns),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The verifier, e.g. to read its verification counter.
    pub fn verifier(&self) -> &Verifier {
        &self.shared.verifier
    }
}

impl<S> Layer<S> for BasicAuthLayer {
    type Service = BasicAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BasicAuth {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`BasicAuthLayer`].
#[derive(Clone)]
pub struct BasicAuth<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> Service<Request<B>> for BasicAuth<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            if shared.public.matches(req.uri().path()) {
                return inner.call(req).await;
            }
            let credentials = match header::parse_authorization(req.headers()) {
                Ok(credentials) => credentials,
                Err(reason) => {
                    tracing::debug!(%reason, "authorization header refused");
                    return Ok(shared.unauthorized());
                }
            };
            let username = credentials.username;
            match shared
                .verifier
                .verify(username.clone(), credentials.password)
                .await
            {
                Ok(true) => {
                    let user = AuthenticatedUser::new(username);
                    req.extensions_mut().insert(user.clone());
                    let mut response = inner.call(req).await?;
                    // Lets an access log outside the layer name the user.
                    response.extensions_mut().insert(user);
                    Ok(response)
                }
                Ok(false) => {
                    tracing::debug!(user = %username, "wrong password or unknown user");
                    Ok(shared.unauthorized())
                }
                Err(error) => {
                    tracing::warn!(%error, "password verification unavailable");
                    Ok(unavailable())
                }
            }
        })
    }
}

impl Shared {
    /// 401 with the challenge; the body never echoes what the client sent.
    fn unauthorized(&self) -> Response {
        let mut response = (StatusCode::UNAUTHORIZED, "401 Unauthorized\n").into_response();
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, self.challenge.clone());
        response
    }
}

fn unavailable() -> Response {
    let mut response = Response::new(Body::from("503 Service Unavailable\n"));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
