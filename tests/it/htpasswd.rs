//! Migrating from htpasswd: a users file written by the real `htpasswd`
//! (apache2-utils: `-B` bcrypt, `-m` Apache MD5, `-s` SHA-1) works as
//! `users_file` unchanged, with curl and Python requests; check-config
//! counts the schemes and warns about the weak ones; the legacy-login
//! metric counts who still uses one; DES and plaintext lines are refused.

use std::process::Command;

use crate::common::{Gatehouse, TestDir, binary, client, require_tool, whoami_response};
use crate::tokens::python;
use reqwest::StatusCode;

/// Runs `htpasswd` with `args` (batch mode), creating or adding to `file`.
fn htpasswd(args: &[&str]) {
    // htpasswd has no flag that only prints a version: missing, say so.
    let out = Command::new("htpasswd")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test needs `htpasswd` (Debian: apache2-utils; .ci/run installs it): {e}")
        });
    assert!(
        out.status.success(),
        "htpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_htpasswd_file_works_unchanged() {
    let dir = TestDir::new();
    let file = dir.path("htpasswd");
    let file = file.to_str().unwrap();
    htpasswd(&["-cbB", file, "bcrypt-user", "pw one"]);
    htpasswd(&["-bm", file, "md5-user", "pw:two"]);
    htpasswd(&["-bs", file, "sha-user", "pw three"]);
    let config = dir.config("[auth]\nusers_file = \"htpasswd\"\n[metrics]\npath = \"/metrics\"\n");
    // check-config: the schemes counted, the weak ones named, the mix
    // explained with measured times.
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("OK (6 users: 1 apr1, 3 argon2, 1 bcrypt, 1 sha1)"),
        "{stdout}"
    );
    for needle in [
        "unsalted SHA-1 ({SHA}) hashes",
        "(sha-user)",
        "Apache MD5 ($apr1$) hashes",
        "(md5-user)",
        "users' hashes use different schemes (argon2: 3, bcrypt: 1, apr1: 1, sha1: 1)",
        "unknown users are checked against a argon2 hash",
        " ms",
    ] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    let server = Gatehouse::start(&config);
    let http = client(&dir.cert_pem);
    for (user, password) in [
        ("bcrypt-user", "pw one"),
        ("md5-user", "pw:two"),
        ("sha-user", "pw three"),
    ] {
        assert_eq!(
            whoami_response(&http, &server, user, password)
                .await
                .status(),
            StatusCode::OK,
            "{user}"
        );
        assert_eq!(
            whoami_response(&http, &server, user, "wrong")
                .await
                .status(),
            StatusCode::UNAUTHORIZED,
            "{user}"
        );
    }
    // curl and Python requests, as clients of an nginx setup would.
    require_tool("curl", "--version");
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(dir.path("cert.pem"))
        .args(["-u", "md5-user:pw:two", &server.url("/api/whoami")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200");
    let out = python(
        "import sys, requests\nr = requests.get(sys.argv[1], auth=(sys.argv[2], sys.argv[3]), verify=sys.argv[4])\nprint(r.status_code, r.json()['user'])",
        &[
            &server.url("/api/whoami"),
            "bcrypt-user",
            "pw one",
            dir.path("cert.pem").to_str().unwrap(),
        ],
    );
    assert_eq!(out, "200 bcrypt-user");
    // The metric counts verified legacy logins per scheme.
    let metrics = http
        .get(server.url("/metrics"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "gatehouse_legacy_hash_logins_total{scheme=\"bcrypt\"} 1",
        "gatehouse_legacy_hash_logins_total{scheme=\"apr1\"} 1",
        "gatehouse_legacy_hash_logins_total{scheme=\"sha1\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    assert!(!server.logs().contains("pw one"));
}

#[test]
fn des_and_plaintext_lines_are_refused_naming_the_line() {
    for (flag, what) in [("-bd", "crypt(3) DES"), ("-bp", "plaintext password")] {
        let dir = TestDir::new();
        let file = dir.path("htpasswd");
        std::fs::write(&file, "# users\n").unwrap();
        htpasswd(&[flag, file.to_str().unwrap(), "old-user", "secretpw"]);
        let config = dir.config("[auth]\nusers_file = \"htpasswd\"\n");
        let out = Command::new(binary())
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("line 2, user \"old-user\"") && stderr.contains(what),
            "{flag}: {stderr}"
        );
        assert!(
            !stderr.contains("secretpw"),
            "the password is never repeated"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
