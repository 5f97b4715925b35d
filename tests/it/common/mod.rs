//! Shared set-up for the integration tests: start the real `gatehouse`
//! binary on a port the OS picks, with a temp config and real TLS
//! certificates, and talk to it with real clients.

#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod upstream;

use gatehouse::credentials::hash_password;
use gatehouse::secret::Password;

/// Held by tests that load the machine (floods) and by tests whose bounds
/// are tight (a client timeout of header_read_timeout + 1 s): they run one
/// at a time, so a flood in one module cannot slow another's deadline.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Users every test config has, with passwords chosen to exercise parsing.
pub const ALICE: (&str, &str) = ("alice", "secret");
/// A password with colons: only the first colon separates the username.
pub const CAROL: (&str, &str) = ("carol", "p:ss:w0rd");
/// A non-ASCII password (Latin-1 representable, so Python requests can send it).
pub const BOB: (&str, &str) = ("bob", "pässwörd");

/// A cheap argon2id hash: fixtures trade strength for test speed; the
/// parameters come from the PHC string, so the server does what production
/// does, just faster.
pub fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(1024, 1, 1, None).expect("valid params");
    hash_password(&Password::new(password.to_owned()), params).expect("hashing works")
}

/// A temp directory holding a certificate and key for localhost/127.0.0.1.
pub struct TestDir {
    pub dir: tempfile::TempDir,
    pub cert_pem: String,
}

impl TestDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let generated = rcgen::generate_simple_self_signed(names).expect("certificate");
        let cert_pem = generated.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).expect("write cert");
        std::fs::write(
            dir.path().join("key.pem"),
            generated.signing_key.serialize_pem(),
        )
        .expect("write key");
        Self { dir, cert_pem }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// A config with TLS from this directory's files, the three test users
    /// and `extra` appended (more sections, or more `[users]` lines when
    /// `extra` starts with plain `name = "hash"` lines). Unless `extra` has
    /// its own, rate limits and lockouts are set far out of the way, so that
    /// tests of other things are not throttled.
    pub fn config(&self, extra: &str) -> PathBuf {
        self.config_with_server("", extra)
    }

    /// Like [`config`](Self::config), with `server_lines` added to `[server]`.
    pub fn config_with_server(&self, server_lines: &str, extra: &str) -> PathBuf {
        let mut extra = extra.to_owned();
        if !extra.contains("[rate_limit]") {
            extra.push_str("\n[rate_limit]\nper_ip = { per_second = 10000, burst = 10000 }\nper_user = false\n");
        }
        if !extra.contains("[lockout]") {
            extra.push_str("\n[lockout]\nmax_failures = 1000\n");
        }
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server_lines}\n\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n[users]\n{} = \"{}\"\n{} = \"{}\"\n{} = \"{}\"\n{extra}\n",
            ALICE.0,
            cheap_hash(ALICE.1),
            BOB.0,
            cheap_hash(BOB.1),
            CAROL.0,
            cheap_hash(CAROL.1),
        );
        self.write("gatehouse.toml", &text)
    }
}

/// The path of the built binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

/// A running gatehouse process; killed when dropped.
pub struct Gatehouse {
    /// The process, when the real binary was started.
    child: Option<Child>,
    /// Stops an in-process server (see [`Gatehouse::in_process`]).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub addr: std::net::SocketAddr,
    pub scheme: &'static str,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gatehouse {
    /// Starts `gatehouse serve --config <config>` and waits until it listens.
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied());
        Self::spawn(command)
    }

    /// Starts gatehouse from a prepared command (arguments, environment,
    /// working directory) and waits until it listens.
    pub fn spawn(mut command: Command) -> Self {
        // RUST_LOG=info unless the test set or removed it itself.
        if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&logs);
        // Keep draining stderr for the whole run, or the server would block
        // on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    // Text or JSON: the URL ends at a space or a quote.
                    let url: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    let _ = tx.send(url);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gatehouse did not start; its output:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        let (scheme, addr) = url.split_once("://").expect("url has a scheme");
        let scheme = if scheme == "https" { "https" } else { "http" };
        Self {
            child: Some(child),
            stop: None,
            addr: addr.parse().expect("socket address"),
            scheme,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("log lock").join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.process().id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits until the logs contain `needle` `count` times in all; panics
    /// with the logs after `timeout`.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.logs().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {needle:?} (x{count}) in the logs within {timeout:?}:\n{}",
            self.logs()
        );
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.process_mut().try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Gatehouse {
    /// Runs the application in this test process (no binary, no log
    /// scraping): built from `config` with [`gatehouse::app::Application`]
    /// on a runtime of its own, stopped when dropped. For tests that need
    /// no process: no logs, no signals, no pid.
    pub fn in_process(config: &Path) -> Self {
        let config = gatehouse::config::Config::load(config).expect("valid config");
        let scheme = match config.tls {
            gatehouse::config::TlsSettings::Disabled => "http",
            _ => "https",
        };
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let log = gatehouse::logging::LogLevel::fixed();
                let app = gatehouse::app::Application::build(config, log)
                    .await
                    .expect("the application builds");
                let _ = addr_tx.send(app.local_addr());
                let _ = app
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the application starts");
        Self {
            child: None,
            stop: Some(stop),
            addr,
            scheme,
            logs: Arc::default(),
        }
    }

    fn process(&self) -> &Child {
        self.child
            .as_ref()
            .expect("an in-process server has no process")
    }

    fn process_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("an in-process server has no process")
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A reqwest client that trusts exactly the test certificate.
pub fn client(cert_pem: &str) -> reqwest::Client {
    client_with(cert_pem, |b| b)
}

/// Like [`client`], letting the caller adjust the builder.
pub fn client_with(
    cert_pem: &str,
    adjust: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> reqwest::Client {
    let tls = rustls_client_config(
        cert_pem,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    adjust(reqwest::Client::builder().tls_backend_preconfigured(tls))
        .build()
        .expect("build client")
}

/// A rustls client config over ring that trusts `cert_pem` only.
pub fn rustls_client_config(
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.expect("PEM certificate")).expect("add root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(gatehouse::tls::provider())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Runs an external tool, failing the test with a clear message if it is not
/// installed (a missing client must never make a test pass silently).
pub fn require_tool(name: &str, version_arg: &str) {
    match Command::new(name).arg(version_arg).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{name} {version_arg}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("this test needs `{name}` on PATH (install it; .ci/run does): {e}"),
    }
}

/// A client bound to a source address on loopback (127.0.0.2, 127.0.0.3, …),
/// so tests can act as distinct clients.
pub fn client_from(cert_pem: &str, source: &str) -> reqwest::Client {
    let ip: std::net::IpAddr = source.parse().expect("source address");
    client_with(cert_pem, |b| b.local_address(ip))
}

/// The auth layer's counters, read through the protected `/api/stats` route
/// as alice from 127.0.0.254 (a client no test throttles).
pub async fn stats(server: &Gatehouse, cert_pem: &str) -> serde_json::Value {
    client_from(cert_pem, "127.0.0.254")
        .get(server.url("/api/stats"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .expect("stats request")
        .json()
        .await
        .expect("stats json")
}

/// One sample of `server`'s `[metrics] path = "/metrics"`, read as alice
/// from 127.0.0.254 (a client no test throttles).
pub async fn metric(server: &Gatehouse, cert_pem: &str, name: &str) -> f64 {
    let text = client_from(cert_pem, "127.0.0.254")
        .get(server.url("/metrics"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .expect("metrics request")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Peak resident memory of a process, in MiB (Linux `VmHWM`).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `GET /api/whoami` as `user`; the response.
pub async fn whoami_response(
    http: &reqwest::Client,
    server: &Gatehouse,
    user: &str,
    password: &str,
) -> reqwest::Response {
    http.get(server.url("/api/whoami"))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("request")
}

/// `GET /api/whoami` as `user`; the status.
pub async fn whoami(
    http: &reqwest::Client,
    server: &Gatehouse,
    user: &str,
    password: &str,
) -> reqwest::StatusCode {
    whoami_response(http, server, user, password).await.status()
}

/// A client that speaks HTTP/1.1 only (ALPN `http/1.1`), trusting `cert_pem`.
pub fn http1_client(cert_pem: &str) -> reqwest::Client {
    let mut tls = rustls_client_config(cert_pem, &[&rustls::version::TLS13]);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http1_only()
        .build()
        .expect("build client")
}

/// An argon2id hash that takes a while to verify (m KiB, t passes), to keep
/// requests in flight.
pub fn slow_hash(password: &str, m_kib: u32, passes: u32) -> String {
    let params = argon2::Params::new(m_kib, passes, 1, None).expect("valid params");
    hash_password(&Password::new(password.to_owned()), params).expect("hashing works")
}

/// A TLS connection to `server` offering `alpn` (empty: no ALPN at all).
pub async fn tls_connect(
    dir: &TestDir,
    server: &Gatehouse,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = rustls_client_config(&dir.cert_pem, &[&rustls::version::TLS13]);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// Whether the peer closes `stream` within `within` (EOF or an error).
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(stream, &mut buf))
            .await
        {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Spawns `command` with stdout piped and returns it with the first line it
/// printed (a server saying where it listens), trimmed.
pub fn spawn_and_read_line(command: &mut Command) -> (Child, String) {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("a first line");
    (child, line.trim().to_owned())
}
