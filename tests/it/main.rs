//! The integration tests, one binary (one link instead of eighteen). Each
//! module starts the real server, in-process (`app`) or as the binary when
//! a process is what is tested (signals, the CLI, container layout), and
//! talks to it with real clients over real TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

mod access;
mod app;
mod auth;
mod cache;
mod cli;
mod cluster;
mod config_file;
mod connections;
mod container;
mod curl;
mod fail2ban;
mod flood;
mod forward_auth;
mod htpasswd;
mod library;
mod limits;
mod log_secrecy;
mod malformed;
mod metrics;
mod oauth;
pub(crate) mod oauth_code;
mod proxy;
mod python_requests;
mod reload;
mod security;
mod shutdown;
mod static_files;
mod tokens;
