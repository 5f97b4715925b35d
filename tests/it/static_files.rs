//! `[static] root`: a directory behind the gate, with index.html for
//! directories and no way out of the root. Traversal attempts are sent with
//! the real curl and `--path-as-is`, since HTTP client libraries normalise
//! `..` away before sending.

use std::process::Command;

use crate::common::{Gatehouse, TestDir, client, require_tool};
use reqwest::StatusCode;

fn site() -> (TestDir, Gatehouse) {
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.path("site/docs")).unwrap();
    dir.write("site/index.html", "<h1>home</h1>\n");
    dir.write("site/docs/index.html", "<h1>docs</h1>\n");
    dir.write("site/notes.txt", "plain notes\n");
    // Next to the root, and also readable by the server: must never be served.
    dir.write("outside-secret.txt", "TOP SECRET\n");
    let server = Gatehouse::in_process(&dir.config("[static]\nroot = \"site\"\n"));
    (dir, server)
}

/// curl with `--path-as-is`: (status, body).
fn raw_get(dir: &TestDir, server: &Gatehouse, path: &str) -> (u16, String) {
    require_tool("curl", "--version");
    let output = Command::new("curl")
        .args([
            "--silent",
            "--path-as-is",
            "--max-time",
            "20",
            "-u",
            "alice:secret",
            "--cacert",
        ])
        .arg(dir.path("cert.pem"))
        .args(["--write-out", "\n%{http_code}"])
        .arg(format!("https://{}{}", server.addr, path))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_owned())
}

#[tokio::test]
async fn serves_files_and_index_html_behind_the_gate() {
    let (dir, server) = site();
    let http = client(&dir.cert_pem);
    let get = |path: &str| {
        http.get(server.url(path))
            .basic_auth("alice", Some("secret"))
            .send()
    };
    assert_eq!(
        get("/").await.unwrap().text().await.unwrap(),
        "<h1>home</h1>\n"
    );
    assert_eq!(
        get("/docs/").await.unwrap().text().await.unwrap(),
        "<h1>docs</h1>\n"
    );
    assert_eq!(
        get("/notes.txt").await.unwrap().text().await.unwrap(),
        "plain notes\n"
    );
    assert_eq!(
        get("/missing.txt").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let anonymous = http.get(server.url("/notes.txt")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[test]
fn directory_traversal_is_impossible() {
    let (dir, server) = site();
    let attempts = [
        "/../outside-secret.txt",
        "/docs/../../outside-secret.txt",
        "/%2e%2e/outside-secret.txt",
        "/%2E%2E/outside-secret.txt",
        "/..%2foutside-secret.txt",
        "/%2e%2e%2foutside-secret.txt",
        "/docs/%2e%2e/%2e%2e/outside-secret.txt",
        "/..%5coutside-secret.txt",
        "/....//outside-secret.txt",
        "/%252e%252e/outside-secret.txt",
        "/docs/..;/../outside-secret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ];
    for path in attempts {
        let (status, body) = raw_get(&dir, &server, path);
        assert!(
            !body.contains("TOP SECRET") && !body.contains("root:"),
            "{path} leaked: {body}"
        );
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    // The server is fine afterwards.
    assert_eq!(
        raw_get(&dir, &server, "/notes.txt"),
        (200, "plain notes\n".into())
    );
}
