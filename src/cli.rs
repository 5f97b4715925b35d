//! The command line: `serve` (the default), `hash-password`, `check-config`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use gatehouse::config::DEFAULT_CONFIG_PATH;
use gatehouse::logging::LogFormat;
use gatehouse::secret::Password;

/// An HTTP Basic-auth gate with argon2id credentials.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The config file for `serve` and `check-config`.
    #[arg(long, short, global = true, env = "GATEHOUSE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Listen on this address instead of `[server] listen`, e.g.
    /// `0.0.0.0:8443` (`healthcheck` asks this address too).
    #[arg(long, global = true, env = "GATEHOUSE_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Log lines as text or JSON (default: `[log] format`, else text).
    #[arg(long, global = true, env = "GATEHOUSE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Read a password (from the terminal without echo, or one line of
    /// stdin) and print its argon2id PHC string for the config file.
    HashPassword(HashArgs),
    /// Validate the config file, its users and TLS files, and exit.
    CheckConfig,
    /// Write a new token signing key (PKCS#8 PEM, mode 0600) for
    /// `[tokens] signing_key`, and print its key id.
    GenSigningKey {
        /// Where to write it; an existing file is never replaced.
        #[arg(long)]
        out: PathBuf,
        /// EdDSA (Ed25519, the default) or ES256.
        #[arg(long, default_value = "EdDSA")]
        algorithm: String,
    },
    /// Manage API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Ask the running server (at the config's listen address, on this host)
    /// whether `/healthz` answers 200; exit 0 if so, 1 if not. For container
    /// health checks.
    Healthcheck {
        /// How long to wait for the answer, e.g. "3s".
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `api-key` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Make a key for a user: append its line (id, user, name, SHA-256 of
    /// the secret) to the keys file and print the key, once, on stdout.
    Create {
        /// The user the key acts as.
        #[arg(long)]
        user: String,
        /// A label for the key (letters, digits, `.`, `_`, `-`).
        #[arg(long, default_value = "")]
        name: String,
        /// The keys file (`[api_keys] file`); made, mode 0600, if missing.
        #[arg(long)]
        file: PathBuf,
    },
}

/// Argon2id parameters for `hash-password`; the defaults are OWASP's.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// Memory cost in KiB.
    #[arg(long, default_value_t = argon2::Params::DEFAULT_M_COST)]
    pub m_cost: u32,
    /// Number of passes.
    #[arg(long, default_value_t = argon2::Params::DEFAULT_T_COST)]
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    #[arg(long, default_value_t = argon2::Params::DEFAULT_P_COST)]
    pub p_cost: u32,
}

/// Why no password could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadPasswordError {
    /// Reading failed.
    #[error("cannot read the password: {0}")]
    Io(#[from] std::io::Error),
    /// The two passwords typed at the terminal differ.
    #[error("the passwords do not match")]
    Mismatch,
    /// Nothing was given.
    #[error("the password is empty")]
    Empty,
}

/// Reads the password to hash: prompted twice without echo on a terminal,
/// otherwise the first line of stdin (without its line ending).
pub fn read_password() -> Result<Password, ReadPasswordError> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = Password::new(rpassword::prompt_password("Password: ")?);
        let second = Password::new(rpassword::prompt_password("Again: ")?);
        if first.as_bytes() != second.as_bytes() {
            return Err(ReadPasswordError::Mismatch);
        }
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
        zeroize::Zeroize::zeroize(&mut line);
        Password::new(trimmed)
    };
    if password.as_str().is_empty() {
        return Err(ReadPasswordError::Empty);
    }
    Ok(password)
}
