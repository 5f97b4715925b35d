//! The real `curl -u` against the real server over TLS.

use std::process::Command;

use crate::common::{Gatehouse, TestDir, require_tool};

/// Runs curl and returns (HTTP status, body).
fn curl(dir: &TestDir, args: &[&str]) -> (u16, String) {
    require_tool("curl", "--version");
    let cacert = dir.path("cert.pem");
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
        .arg(&cacert)
        .args(["--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 output");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status code"), body.to_owned())
}

#[test]
fn curl_u_with_the_right_password_gets_in() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let url = server.url("/api/whoami");
    assert_eq!(
        curl(&dir, &["-u", "alice:secret", &url]),
        (200, "{\"user\":\"alice\"}".into())
    );
    // curl splits at the first colon too: the rest is the password.
    assert_eq!(curl(&dir, &["-u", "carol:p:ss:w0rd", &url]).0, 200);
}

#[test]
fn curl_sends_non_ascii_passwords_as_utf8() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let (status, body) = curl(&dir, &["-u", "bob:pässwörd", &server.url("/api/whoami")]);
    assert_eq!((status, body.as_str()), (200, "{\"user\":\"bob\"}"));
}

#[test]
fn curl_wrong_password_gets_the_challenge() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let url = server.url("/api/whoami");
    assert_eq!(curl(&dir, &["-u", "alice:nope", &url]).0, 401);
    assert_eq!(curl(&dir, &[&url]).0, 401);
    let (_, headers) = curl(&dir, &["--head", "-u", "alice:nope", &url]);
    assert!(
        headers
            .to_lowercase()
            .contains("www-authenticate: basic realm=\"gatehouse\", charset=\"utf-8\""),
        "{headers}"
    );
}

#[test]
fn curl_http2_and_http1_1() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let url = server.url("/api/whoami");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let output = Command::new("curl")
            .args([
                "--silent",
                "--max-time",
                "20",
                flag,
                "-u",
                "alice:secret",
                "--cacert",
            ])
            .arg(dir.path("cert.pem"))
            .args([
                "--write-out",
                "%{http_version} %{http_code}",
                "--output",
                "/dev/null",
                &url,
            ])
            .output()
            .expect("run curl");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("{version} 200"),
            "{flag}"
        );
    }
}

#[test]
fn curl_tls_versions() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let url = server.url("/healthz");
    assert_eq!(curl(&dir, &["--tlsv1.2", "--tls-max", "1.2", &url]).0, 200);
    assert_eq!(curl(&dir, &["--tlsv1.3", &url]).0, 200);
    // TLS 1.1 and older are refused by the server.
    let old = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "20",
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--cacert",
        ])
        .arg(dir.path("cert.pem"))
        .arg(&url)
        .status()
        .expect("run curl");
    assert!(!old.success(), "a TLS 1.1 handshake must fail");
}

/// Plain HTTP sent to the TLS port gets a 400 that says why (as nginx
/// does), not TLS bytes that curl reports as "HTTP/0.9"; the server keeps
/// serving HTTPS; the refusal is logged at debug.
#[test]
fn plain_http_on_the_tls_port_gets_400_saying_so() {
    let dir = TestDir::new();
    let server = Gatehouse::start_with_env(&dir.config(""), &[("RUST_LOG", "gatehouse=debug")]);
    let plain = format!("http://127.0.0.1:{}/healthz", server.addr.port());
    let (status, body) = curl(&dir, &[&plain]);
    assert_eq!(status, 400);
    assert_eq!(body, "This port speaks HTTPS: use an https:// URL.\n");
    let (status, _) = curl(&dir, &["-X", "POST", "--data", "x=1", &plain]);
    assert_eq!(status, 400);
    let (status, _) = curl(&dir, &[&server.url("/healthz")]);
    assert_eq!(status, 200);
    server.wait_for_log(
        "plain HTTP on the TLS port",
        2,
        std::time::Duration::from_secs(5),
    );
}
