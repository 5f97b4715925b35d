//! The command line as a user runs it: hash a password, check a config,
//! start and stop the server.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::{Gatehouse, TestDir, binary, cheap_hash, client};
use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use reqwest::StatusCode;

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    // The command may exit before reading (e.g. on bad arguments): a broken
    // pipe here is not the test's concern, its output is.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("wait")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

#[test]
fn hash_password_prints_an_owasp_argon2id_hash_that_verifies() {
    let output = run(&["hash-password"], "correct horse\n");
    assert!(output.status.success(), "{}", stderr(&output));
    let phc = stdout(&output);
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let hash = PasswordHash::new(&phc).unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(b"correct horse", &hash)
            .is_ok()
    );
    assert!(
        argon2::Argon2::default()
            .verify_password(b"correct horse\n", &hash)
            .is_err()
    );

    // Windows line endings are not part of the password either.
    let crlf = stdout(&run(
        &["hash-password", "--m-cost", "1024", "--t-cost", "1"],
        "pw\r\n",
    ));
    assert!(crlf.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{crlf}");
    assert!(
        argon2::Argon2::default()
            .verify_password(b"pw", &PasswordHash::new(&crlf).unwrap())
            .is_ok()
    );
}

#[test]
fn hash_password_refuses_empty_input_and_bad_params() {
    let empty = run(&["hash-password"], "");
    assert!(!empty.status.success());
    assert_eq!(stderr(&empty), "gatehouse: the password is empty");
    let bad = run(&["hash-password", "--m-cost", "1"], "pw\n");
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid argon2 parameters"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn a_hash_from_hash_password_lets_that_user_in() {
    let dir = TestDir::new();
    let phc = stdout(&run(
        &["hash-password", "--m-cost", "1024", "--t-cost", "1"],
        "n3w user pw\n",
    ));
    let server = Gatehouse::start(&dir.config(&format!("erin = \"{phc}\"\n")));
    let response = client(&dir.cert_pem)
        .get(server.url("/api/whoami"))
        .basic_auth("erin", Some("n3w user pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn check_config_accepts_a_good_config() {
    let dir = TestDir::new();
    let config = dir.config("");
    let output = run(&["check-config", "--config", config.to_str().unwrap()], "");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).ends_with("OK (3 users: 3 argon2)"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn bad_configs_stop_check_config_and_serve_with_one_message() {
    let dir = TestDir::new();
    let other = TestDir::new();
    std::fs::copy(other.path("key.pem"), dir.path("other-key.pem")).unwrap();
    dir.write("not-pem.pem", "hello\n");
    let users = format!("[users]\nalice = \"{}\"\n", cheap_hash("pw"));
    let cases = [
        (
            "[tls]\ncert = \"cert.pem\"\nkey = \"other-key.pem\"\n",
            "[tls] key:",
            "does not fit the certificate",
        ),
        (
            "[tls]\ncert = \"missing.pem\"\nkey = \"key.pem\"\n",
            "[tls] cert:",
            "cannot read",
        ),
        (
            "[tls]\ncert = \"not-pem.pem\"\nkey = \"key.pem\"\n",
            "[tls] cert:",
            "holds no PEM certificate",
        ),
        (
            "[tls]\ncert = \"cert.pem\"\nkey = \"cert.pem\"\n",
            "[tls] key:",
            "holds no PEM private key",
        ),
        (
            "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[auth]\nrealm = \"\"\n",
            "[auth] realm:",
            "non-empty",
        ),
    ];
    for (tls, key, problem) in cases {
        let path = dir.write(
            "bad.toml",
            &format!("[server]\nlisten = \"127.0.0.1:0\"\n{tls}{users}"),
        );
        for command in ["check-config", "serve"] {
            let output = run(&[command, "--config", path.to_str().unwrap()], "");
            assert!(!output.status.success(), "{command} accepted {tls}");
            let message = stderr(&output);
            assert!(
                message.contains(key) && message.contains(problem),
                "{command}: {message}"
            );
            assert!(message.contains("bad.toml"), "names the file: {message}");
            assert_eq!(
                message
                    .lines()
                    .filter(|l| l.starts_with("gatehouse:"))
                    .count(),
                1,
                "{message}"
            );
        }
    }
}

#[test]
fn serve_reports_a_busy_port() {
    let dir = TestDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(dir.config(""))
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let path = dir.write("busy.toml", &text);
    let output = run(&["serve", "--config", path.to_str().unwrap()], "");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("[server] listen: cannot bind"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn generated_user_and_self_signed_certificate_for_a_first_run() {
    let dir = TestDir::new();
    let path = dir.write(
        "first-run.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nself_signed = true\n[auth]\ngenerated_user = \"admin\"\n",
    );
    // The default command is `serve`, and GATEHOUSE_CONFIG names the file.
    let server = Gatehouse::start_with_env(&path, &[("GATEHOUSE_CONFIG", path.to_str().unwrap())]);
    let logs = server.logs();
    let password = logs
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no generated password in: {logs}"))
        .to_owned();
    assert!(password.len() >= 20);
    let cert = std::fs::read_to_string(dir.path("self-signed-cert.pem"))
        .expect("certificate written next to the config");
    assert!(logs.contains("fingerprint="), "{logs}");
    let http = client(&cert);
    let ok = http
        .get(server.url("/api/whoami"))
        .basic_auth("admin", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let wrong = http
        .get(server.url("/api/whoami"))
        .basic_auth("admin", Some("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // Printed once, at start-up, and never in a log line.
    assert_eq!(server.logs().matches(password.as_str()).count(), 1);
}

#[test]
fn default_command_and_config_env_var() {
    let dir = TestDir::new();
    let config = dir.config("");
    let output = Command::new(binary())
        .arg("check-config")
        .env("GATEHOUSE_CONFIG", &config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

#[tokio::test]
async fn plain_http_only_when_asked_and_with_a_warning() {
    let dir = TestDir::new();
    let path = dir.write(
        "plain.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nenabled = false\n[users]\nalice = \"{}\"\n",
            cheap_hash("secret")
        ),
    );
    let server = Gatehouse::start(&path);
    assert_eq!(server.scheme, "http");
    assert!(
        server.logs().contains("TLS is disabled"),
        "{}",
        server.logs()
    );
    let response = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::common::rustls_client_config(
            &dir.cert_pem,
            &[&rustls::version::TLS13],
        ))
        .build()
        .unwrap()
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let dir = TestDir::new();
    // A deliberately slow hash keeps a request in flight while SIGTERM lands.
    let params = argon2::Params::new(64 * 1024, 10, 1, None).unwrap();
    let slow = gatehouse::credentials::hash_password(
        &gatehouse::secret::Password::new("slow pw".into()),
        params,
    )
    .unwrap();
    let server = Gatehouse::start(&dir.config(&format!("slowpoke = \"{slow}\"\n")));
    let http = client(&dir.cert_pem);
    let request = tokio::spawn(
        http.get(server.url("/api/whoami"))
            .basic_auth("slowpoke", Some("slow pw"))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("gatehouse exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let response = request
        .await
        .unwrap()
        .expect("the in-flight request is answered, not reset");
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn healthcheck_reports_a_running_server_and_a_stopped_one() {
    let dir = TestDir::new();
    let config = dir.config("");
    let server = Gatehouse::start(&config);
    // The healthcheck reads the listen address from the config, so give it
    // the port the OS picked.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &server.addr.to_string());
    let probe = dir.write("probe.toml", &text);
    let healthy = run(&["healthcheck", "--config", probe.to_str().unwrap()], "");
    assert!(healthy.status.success(), "{}", stderr(&healthy));
    assert_eq!(stdout(&healthy), format!("{}: healthy", server.addr));
    drop(server);
    let down = run(
        &[
            "healthcheck",
            "--config",
            probe.to_str().unwrap(),
            "--timeout",
            "2s",
        ],
        "",
    );
    assert!(!down.status.success());
    assert!(
        stderr(&down).starts_with(&format!("gatehouse: {}:", server_addr(&text))),
        "{}",
        stderr(&down)
    );
}

fn server_addr(config: &str) -> String {
    config
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .map(|l| l.trim_end_matches('"').to_owned())
        .unwrap()
}

#[tokio::test]
async fn a_second_instance_fails_to_bind_before_touching_the_certificate() {
    let dir = TestDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.write(
        "gatehouse.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[tls]\nself_signed = true\n[users]\nalice = \"{}\"\n",
            cheap_hash("secret")
        ),
    );
    let first = Gatehouse::start(&config);
    let cert_path = dir.path("self-signed-cert.pem");
    let cert = std::fs::read_to_string(&cert_path).unwrap();
    let second = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("cannot bind"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        std::fs::read_to_string(&cert_path).unwrap(),
        cert,
        "the second instance rewrote the running one's certificate"
    );
    // The first instance's clients still trust what is on disk.
    let status = client(&cert)
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    drop(first);
    // A restart reuses the saved certificate and key (0600), so clients
    // that trusted the file keep working.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = dir.path("self-signed-cert.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let restarted = Gatehouse::start(&config);
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), cert);
    assert!(
        restarted
            .logs()
            .contains("certificate for localhost reused")
    );
    let status = client(&cert)
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    drop(restarted);
    // A key that does not match is replaced, with the certificate.
    std::fs::write(dir.path("self-signed-cert.key"), "junk").unwrap();
    let regenerated = Gatehouse::start(&config);
    assert_ne!(std::fs::read_to_string(&cert_path).unwrap(), cert);
    drop(regenerated);
}

/// `--listen` (and `GATEHOUSE_LISTEN`) override `[server] listen` without
/// editing the file; a reload keeps the override.
#[tokio::test]
async fn listen_flag_and_env_override_the_config() {
    let dir = TestDir::new();
    let config = dir.config("");
    for use_env in [false, true] {
        let port = std::net::TcpListener::bind("127.0.0.3:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.3:{port}");
        let mut command = Command::new(binary());
        command.args(["serve", "--config"]).arg(&config);
        if use_env {
            command.env("GATEHOUSE_LISTEN", &addr);
        } else {
            command.args(["--listen", &addr]);
        }
        let server = Gatehouse::spawn(command);
        assert_eq!(server.addr.to_string(), addr);
        server.signal("HUP");
        server.wait_for_log("reloaded", 1, Duration::from_secs(10));
        assert!(
            !server.logs().contains("only takes effect after a restart"),
            "{}",
            server.logs()
        );
        let health = Command::new(binary())
            .args(["healthcheck", "--config"])
            .arg(&config)
            .env("GATEHOUSE_LISTEN", &addr)
            .output()
            .unwrap();
        assert!(health.status.success(), "{}", stderr(&health));
    }
    let bad = run(&["serve", "--listen", "localhost"], "");
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--listen"), "{}", stderr(&bad));
}

/// check-config prints the warnings serve logs at start-up (weak and mixed
/// argon2 parameters, a leftover generated_user) and names the scheme of a
/// hash that is not argon2.
#[test]
fn check_config_repeats_serve_warnings_and_names_hash_schemes() {
    let dir = TestDir::new();
    let base =
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";
    let config = dir.write(
        "warned.toml",
        &format!(
            "{base}[auth]\ngenerated_user = \"admin\"\n[users]\nalice = \"{}\"\nbob = \"{}\"\n",
            cheap_hash("a"),
            crate::common::slow_hash("b", 2048, 1)
        ),
    );
    let checked = run(&["check-config", "--config", config.to_str().unwrap()], "");
    assert!(checked.status.success(), "{}", stderr(&checked));
    let warnings = stderr(&checked);
    for needle in [
        "warning: [users]: users' hashes use different argon2 parameters",
        "warning: [users]: argon2 parameters below OWASP's minimum (m=19456, t=2) for alice, bob",
        "warning: [auth] generated_user: unused while real users are configured",
    ] {
        assert!(
            warnings.contains(needle),
            "{needle} missing from: {warnings}"
        );
    }
    let server = Gatehouse::start(&config);
    for needle in [
        "users' hashes use different argon2 parameters",
        "below OWASP's minimum (m=19456, t=2) for alice, bob",
        "unused while real users are configured",
    ] {
        assert!(server.logs().contains(needle), "serve: {needle}");
    }
    drop(server);
    for (hash, says) in [
        ("$2y$05$abcdefghijklmnopqrstuv", "a malformed bcrypt hash"),
        ("$apr1$abc$defghijk", "a malformed Apache MD5 ($apr1$) hash"),
        ("abJnggxhB/yWI", "crypt(3) DES"),
        ("$1$abc$defghijklmnopqrstuvwx", "a MD5-crypt hash"),
        ("hunter2", "looks like a plaintext password"),
    ] {
        let config = dir.write("bad.toml", &format!("{base}[users]\ncarol = \"{hash}\"\n"));
        let output = run(&["check-config", "--config", config.to_str().unwrap()], "");
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(
            message.contains("[users] \"carol\"") && message.contains(says),
            "{message}"
        );
        assert!(
            !message.contains("hunter2"),
            "the password is never repeated"
        );
    }
}

/// hash-password warns below OWASP's minimum, and a bad cost states the
/// valid ranges.
#[test]
fn hash_password_warns_on_weak_and_explains_bad_costs() {
    let weak = run(
        &["hash-password", "--m-cost", "1024", "--t-cost", "1"],
        "pw\n",
    );
    assert!(weak.status.success());
    assert!(
        stdout(&weak).starts_with("$argon2id$"),
        "the hash alone on stdout"
    );
    assert!(
        stderr(&weak).contains("below OWASP's minimum"),
        "{}",
        stderr(&weak)
    );
    let strong = run(&["hash-password"], "pw\n");
    assert!(!stderr(&strong).contains("OWASP"), "{}", stderr(&strong));
    for args in [["--m-cost", "1"], ["--p-cost", "0"]] {
        let bad = run(&["hash-password", args[0], args[1]], "pw\n");
        assert!(!bad.status.success());
        assert!(
            stderr(&bad)
                .contains("--m-cost is KiB, from 8 × --p-cost to 4294967295 (OWASP: 19456)")
                && stderr(&bad).contains("--p-cost from 1 to 16777215"),
            "{}",
            stderr(&bad)
        );
    }
}

/// With JSON logs the generated password never enters the log stream: it
/// is written to a 0600 file that one JSON line points to, and it works.
#[tokio::test]
async fn json_logs_point_to_the_generated_password_file() {
    let dir = TestDir::new();
    let path = dir.write(
        "first-run.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nself_signed = true\n[auth]\ngenerated_user = \"admin\"\n",
    );
    let mut command = Command::new(binary());
    command
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&path);
    let server = Gatehouse::spawn(command);
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let banner = lines
        .iter()
        .find(|l| l["user"] == "admin")
        .unwrap_or_else(|| panic!("no generated-user line in: {logs}"));
    let file = std::path::PathBuf::from(banner["password_file"].as_str().unwrap());
    assert_eq!(file, dir.path("generated-password"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(password.len() >= 20);
    assert!(
        !server.logs().contains(&password),
        "the password is not in the logs"
    );
    let cert = std::fs::read_to_string(dir.path("self-signed-cert.pem")).unwrap();
    let ok = client(&cert)
        .get(server.url("/api/whoami"))
        .basic_auth("admin", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // The password was for this run only: the file goes with it.
    // Off the runtime, which must keep running the client's connection so
    // that it can close when the server says goodbye.
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(20)))
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(!file.exists(), "{} left behind", file.display());
}

/// A decision socket any local user may connect to is warned about (its
/// peer is trusted as the proxy); the default mode, and a TCP decision
/// listener with trusted_proxies, are not; a socket without
/// trusted_proxies gets no "no proxy is trusted" warning.
#[test]
fn check_config_warns_of_a_world_writable_decision_socket() {
    let dir = TestDir::new();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[users]\nalice = \"{}\"\n[forward_auth]\nlisten = \"unix:authz.sock\"\n",
        cheap_hash("a")
    );
    let open = dir.write("open.toml", &format!("{base}socket_mode = \"666\"\n"));
    let checked = run(&["check-config", "--config", open.to_str().unwrap()], "");
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(
        stderr(&checked)
            .contains("warning: [forward_auth] socket_mode: 666 lets any local user connect"),
        "{}",
        stderr(&checked)
    );
    let closed = dir.write("closed.toml", &base);
    let checked = run(&["check-config", "--config", closed.to_str().unwrap()], "");
    assert!(checked.status.success(), "{}", stderr(&checked));
    let warnings = stderr(&checked);
    assert!(!warnings.contains("socket_mode"), "{warnings}");
    assert!(!warnings.contains("no proxy is trusted"), "{warnings}");
}
