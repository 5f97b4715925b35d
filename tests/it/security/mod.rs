//! Regression tests for the hostile reviews' findings (issue 9): each test
//! here failed on the server before the fix and passes after it. They start
//! the real binary and attack it with real clients: curl with
//! `--path-as-is`, raw TLS and TCP sockets, a hand-driven HTTP/2 client, and
//! real nginx and Python WSGI upstreams.

mod auth;
mod connections;
mod headers;
mod paths;
pub mod support;
