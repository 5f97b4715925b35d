//! Gatehouse: an HTTP Basic-auth gate.
//!
//! The library holds the tower layer ([`auth::BasicAuthLayer`]) that can be
//! used on its own in any axum app, the argon2 credential store and verifier
//! ([`credentials`]), the config file ([`config`]), TLS ([`tls`]) and the
//! whole server as an [`app::Application`]. The `gatehouse` binary parses
//! the command line and runs an `Application` from a config file.

pub mod access_log;
pub mod app;
pub mod auth;
pub mod config;
pub mod credentials;
mod io_watch;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod path;
pub(crate) mod proxy;
pub(crate) mod reload;
pub(crate) mod request_guard;
pub(crate) mod routes;
pub mod secret;
pub(crate) mod server;
pub mod static_files;
mod sync;
pub mod tls;
mod tunnel;
pub mod warnings;

pub use auth::{AuthenticatedUser, BasicAuthLayer};
pub use config::Config;
