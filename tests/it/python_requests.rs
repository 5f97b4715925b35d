//! The real Python `requests` against the real server over TLS.
//!
//! `requests` encodes Basic credentials as Latin-1, so a non-ASCII password
//! arrives in another encoding than curl's; both must work.

use std::process::Command;

use crate::common::{Gatehouse, TestDir};

/// Runs a `requests.get(url, auth=(user, password), verify=cacert)` and
/// returns "status body".
fn python_get(dir: &TestDir, url: &str, user: &str, password: &str) -> String {
    let script = r#"
import sys
try:
    import requests
except ImportError:
    sys.exit("python3 has no `requests` module: pip install requests (.ci/run does)")
url, user, password, cacert = sys.argv[1:5]
auth = (user, password) if user else None
r = requests.get(url, auth=auth, verify=cacert, timeout=20)
print(r.status_code, r.text.strip())
"#;
    let output = Command::new("python3")
        .args(["-c", script, url, user, password])
        .arg(dir.path("cert.pem"))
        .output()
        .unwrap_or_else(|e| panic!("this test needs python3 on PATH: {e}"));
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn requests_with_the_right_password_gets_in() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let url = server.url("/api/whoami");
    assert_eq!(
        python_get(&dir, &url, "alice", "secret"),
        "200 {\"user\":\"alice\"}"
    );
    assert_eq!(
        python_get(&dir, &url, "carol", "p:ss:w0rd"),
        "200 {\"user\":\"carol\"}"
    );
}

#[test]
fn requests_sends_non_ascii_passwords_as_latin1() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    assert_eq!(
        python_get(&dir, &server.url("/api/whoami"), "bob", "pässwörd"),
        "200 {\"user\":\"bob\"}"
    );
}

#[test]
fn requests_wrong_or_missing_credentials_get_401() {
    let dir = TestDir::new();
    let server = Gatehouse::in_process(&dir.config(""));
    let url = server.url("/api/whoami");
    assert!(python_get(&dir, &url, "alice", "wrong").starts_with("401 "));
    assert!(python_get(&dir, &url, "bob", "passwörd").starts_with("401 "));
    assert!(python_get(&dir, &url, "", "").starts_with("401 "));
    assert_eq!(python_get(&dir, &server.url("/healthz"), "", ""), "200 ok");
}
