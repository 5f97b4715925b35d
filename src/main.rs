//! The `gatehouse` binary: parse the command line, call the library, map
//! errors to exit codes.

/// mimalloc instead of glibc's malloc: allocation and freeing were ~12% of
/// a request's CPU under load (perf), much of it glibc's consolidation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
mod cli;
mod healthcheck;

use cli::{ApiKeyCommand, Cli, Command, HashArgs, read_password};
use gatehouse::config::Config;
use gatehouse::{app, credentials, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gatehouse: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging is set up once the config (which may choose the format and level)
/// is read; errors before that go to stderr as one plain line.
fn load_config_and_log(cli: &Cli) -> anyhow::Result<(Config, logging::LogLevel)> {
    let mut config = Config::load(&cli.config)?;
    if let Some(addr) = cli.listen {
        config.override_listen(addr);
    }
    let level = logging::init(
        cli.log_format.unwrap_or(config.log.format),
        &config.log.level,
    );
    Ok((config, level))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None | Some(Command::Serve) => {
            let (config, level) = load_config_and_log(&cli)?;
            // Before the runtime: its threads inherit the policy.
            if let Err(error) = gatehouse::scheduling::apply(config.server.cpu_scheduling) {
                tracing::warn!(%error, key = "[server] cpu_scheduling", "cannot change the scheduling policy: the default stays");
            }
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(async {
                let shutdown = app::shutdown_signal();
                app::serve(config, level, shutdown).await
            })?;
            Ok(())
        }
        Some(Command::CheckConfig) => {
            let (config, _) = load_config_and_log(&cli)?;
            let warnings = app::check(&config)?;
            let file = cli.config.display();
            for warning in &warnings {
                eprintln!("{file}: warning: {}: {}", warning.key, warning.message);
            }
            match (&config.auth.generated_user, config.auth.users.len()) {
                (Some(name), 0) => {
                    println!("{file}: OK (no users: `{name}` gets a random password at start-up)")
                }
                (_, users) => {
                    // Per scheme, so that a migration from htpasswd shows
                    // how far it has come.
                    let mut counts = std::collections::BTreeMap::new();
                    for (_, hash) in &config.auth.users {
                        *counts.entry(hash.scheme().label()).or_insert(0usize) += 1;
                    }
                    let schemes: Vec<String> =
                        counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
                    println!("{file}: OK ({users} users: {})", schemes.join(", "))
                }
            }
            Ok(())
        }
        Some(Command::HashPassword(ref args)) => {
            logging::init(
                cli.log_format.unwrap_or_default(),
                &logging::LogFilter::default(),
            );
            hash_password(args)
        }
        Some(Command::GenSigningKey {
            ref out,
            ref algorithm,
        }) => gen_signing_key(out, algorithm),
        Some(Command::ApiKey(ApiKeyCommand::Create {
            ref user,
            ref name,
            ref file,
        })) => create_api_key(user, name, file),
        Some(Command::Healthcheck { timeout }) => {
            let (config, _) = load_config_and_log(&cli)?;
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
    let params = argon2::Params::new(args.m_cost, args.t_cost, args.p_cost, None).map_err(|e| {
        anyhow::anyhow!(
            "invalid argon2 parameters: {e}; --m-cost is KiB, from 8 × --p-cost to {} (OWASP: {}), --t-cost from 1 (OWASP: {}), --p-cost from 1 to {} (OWASP: {})",
            argon2::Params::MAX_M_COST,
            argon2::Params::DEFAULT_M_COST,
            argon2::Params::DEFAULT_T_COST,
            argon2::Params::MAX_P_COST,
            argon2::Params::DEFAULT_P_COST,
        )
    })?;
    if credentials::params_are_weak(&params) {
        tracing::warn!(
            m_cost = args.m_cost,
            t_cost = args.t_cost,
            "argon2 parameters below OWASP's minimum (m=19456 KiB, t=2): the hash will work, and gatehouse will warn about it at every start"
        );
    }
    let password = read_password()?;
    println!("{}", credentials::hash_password(&password, params)?);
    Ok(())
}

/// Writes a new signing key to `out` (created exclusively, mode 0600).
fn gen_signing_key(out: &std::path::Path, algorithm: &str) -> anyhow::Result<()> {
    use gatehouse::tokens::{KeyAlgorithm, SigningKey};
    let algorithm = KeyAlgorithm::parse(algorithm)
        .ok_or_else(|| anyhow::anyhow!("--algorithm: `{algorithm}` is not EdDSA or ES256"))?;
    let (key, pem) = SigningKey::generate(algorithm)?;
    write_new_private(out, pem.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{}: {} signing key, kid {}",
        out.display(),
        algorithm.name(),
        key.verifying().kid()
    );
    Ok(())
}

/// Creates `path` with `bytes`, mode 0600; never replaces a file.
fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, bytes)
}

/// Appends a new key's line to `file` and prints the key once.
fn create_api_key(user: &str, name: &str, file: &std::path::Path) -> anyhow::Result<()> {
    use gatehouse::config::Username;
    use gatehouse::tokens::{ApiKeys, NewApiKey};
    use std::io::Write as _;
    let user = Username::parse(user).map_err(|m| anyhow::anyhow!("--user: {m}"))?;
    // The file must parse before the line is added: a key appended to a
    // broken file would never load.
    if file.exists() {
        ApiKeys::load(file)?;
    }
    let made = NewApiKey::generate(&user, name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut handle = options
        .open(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    // A file whose last line has no newline would glue the new line on.
    let needs_newline = std::fs::read(file)
        .map(|b| b.last().is_some_and(|&c| c != b'\n'))
        .unwrap_or(false);
    let line = format!("{}{}\n", if needs_newline { "\n" } else { "" }, made.line);
    handle
        .write_all(line.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("{}", made.key.as_str());
    Ok(())
}
