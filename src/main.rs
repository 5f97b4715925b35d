//! The `gatehouse` binary: parse the command line, call the library, map
//! errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use gatehouse::cli::{Cli, Command, HashArgs, read_password};
use gatehouse::config::Config;
use gatehouse::{credentials, healthcheck, server, startup};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = Config::load(&cli.config)?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(startup::serve(config, server::shutdown_signal()))?;
            Ok(())
        }
        Command::CheckConfig => {
            let config = Config::load(&cli.config)?;
            startup::check(&config)?;
            let file = cli.config.display();
            match (&config.auth.generated_user, config.auth.users.len()) {
                (Some(name), 0) => {
                    println!("{file}: OK (no users: `{name}` gets a random password at start-up)")
                }
                (_, users) => println!("{file}: OK ({users} users)"),
            }
            Ok(())
        }
        Command::HashPassword(args) => hash_password(&args),
        Command::Healthcheck { timeout } => {
            let config = Config::load(&cli.config)?;
            let addr = healthcheck::local_addr(&config);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(healthcheck::check(
                addr,
                healthcheck::uses_tls(&config),
                timeout,
            ))?;
            println!("{addr}: healthy");
            Ok(())
        }
    }
}

fn hash_password(args: &HashArgs) -> anyhow::Result<()> {
    let params = argon2::Params::new(args.m_cost, args.t_cost, args.p_cost, None)
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
    let password = read_password()?;
    println!("{}", credentials::hash_password(&password, params)?);
    Ok(())
}
