//! The authenticated user, as handlers see it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderName, StatusCode};

/// The OAuth scopes of the request's token, as the upstream (sidecar) and
/// a proxy asking for a decision (forward auth) are told them.
pub(crate) const X_FORWARDED_SCOPES: HeaderName = HeaderName::from_static("x-forwarded-scopes");
/// The user's groups (`[groups]`), comma-separated, told the same way.
pub(crate) const X_FORWARDED_GROUPS: HeaderName = HeaderName::from_static("x-forwarded-groups");
/// The resolved client address, as nginx's `real_ip` module sets it: read
/// from a proxy's decision request, written to the upstream. A static: the
/// decision's single-value reader takes a `'static` name.
pub(crate) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The user whose password was verified for this request.
///
/// The auth layer puts it in the request's extensions; handlers take it as
/// an axum extractor. A handler that takes it on a route outside the layer
/// answers 401 rather than running without a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    name: Arc<str>,
    method: AuthMethod,
    scopes: Option<Arc<str>>,
    groups: Option<Arc<[Arc<str>]>>,
}

/// How a user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A password, with `Authorization: Basic`.
    Basic,
    /// A token gatehouse issued, with `Authorization: Bearer`.
    Bearer,
    /// An API key, as `Authorization: Bearer` or in the API-key header.
    ApiKey,
    /// A token an OAuth client got for itself (client credentials): the
    /// "user" is the client.
    OAuthClient,
}

impl AuthMethod {
    /// `basic`, `bearer` or `api_key`: for logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::Bearer => "bearer",
            Self::ApiKey => "api_key",
            Self::OAuthClient => "oauth_client",
        }
    }
}

impl AuthenticatedUser {
    /// Wraps a username verified by password. Crate-private: only the
    /// layer, after a verification, may say who the user is.
    pub(crate) fn new(name: impl Into<Arc<str>>) -> Self {
        Self::with_method(name, AuthMethod::Basic)
    }

    /// Wraps a username verified by `method`.
    pub(crate) fn with_method(name: impl Into<Arc<str>>, method: AuthMethod) -> Self {
        Self {
            name: name.into(),
            method,
            scopes: None,
            groups: None,
        }
    }

    /// The same user, with their groups (from `[groups]`).
    pub(crate) fn with_groups(mut self, groups: Option<Arc<[Arc<str>]>>) -> Self {
        self.groups = groups;
        self
    }

    /// The user's groups, from `[groups]`; empty when they have none.
    pub fn groups(&self) -> &[Arc<str>] {
        self.groups.as_deref().unwrap_or(&[])
    }

    /// The same user, with the OAuth scopes a token granted.
    pub(crate) fn with_scopes(mut self, scopes: Option<Arc<str>>) -> Self {
        self.scopes = scopes;
        self
    }

    /// The OAuth scopes the request's token carries (space-separated), if
    /// it came from an OAuth grant; `None` for passwords, API keys and
    /// login tokens, which are not limited to scopes.
    pub fn scopes(&self) -> Option<&str> {
        self.scopes.as_deref()
    }

    /// The username.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The username as a shared string (cloning it copies no text).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// How the user authenticated.
    pub fn method(&self) -> AuthMethod {
        self.method
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
