//! Gatehouse: an HTTP Basic-auth gate.
//!
//! The library holds the tower layer ([`auth::BasicAuthLayer`]) that can be
//! used on its own in any axum app, the argon2 credential store and verifier
//! ([`credentials`]), limits and lockouts ([`limit`]) and the config file
//! ([`config`]). With the `server` feature (the default) it also holds TLS
//! (`tls`) and the whole server as an `app::Application`; the `gatehouse`
//! binary parses the command line and runs one from a config file. Without
//! it (`default-features = false`) only the layer and what it needs are
//! compiled.

pub mod auth;
pub mod config;
pub mod credentials;
mod hex;
mod key_file;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod secret;
mod sync;
pub mod tokens;
pub mod warnings;

#[cfg(feature = "server")]
pub mod access_log;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
mod files;
#[cfg(feature = "server")]
mod frame;
#[cfg(feature = "server")]
mod io_watch;
#[cfg(feature = "server")]
pub(crate) mod proxy;
#[cfg(feature = "server")]
pub(crate) mod reload;
#[cfg(feature = "server")]
pub(crate) mod request_guard;
#[cfg(feature = "server")]
mod request_metrics;
#[cfg(feature = "server")]
pub(crate) mod routes;
#[cfg(feature = "server")]
pub mod scheduling;
#[cfg(feature = "server")]
pub(crate) mod server;
#[cfg(feature = "server")]
pub mod static_files;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
mod tunnel;

pub use auth::{AuthenticatedUser, BasicAuthLayer};
pub use config::Config;
