//! The authenticated user, as handlers see it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::StatusCode;
use http::request::Parts;

/// The user whose password was verified for this request.
///
/// The auth layer puts it in the request's extensions; handlers take it as
/// an axum extractor. A handler that takes it on a route outside the layer
/// answers 401 rather than running without a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser(Arc<str>);

impl AuthenticatedUser {
    /// Wraps a verified username. Crate-private: only the layer, after a
    /// verification, may say who the user is.
    pub(crate) fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The username.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The username as a shared string (cloning it copies no text).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUser {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthenticatedUser>()
            .cloned()
            .ok_or(StatusCode::UNAUTHORIZED)
    }
}
