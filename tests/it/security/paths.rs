//! One canonical path: public prefixes cannot be climbed out of, in proxy,
//! static and built-in modes, and the upstream's URL prefix confines.

use super::support::{SECRET, curl, nginx, raw_tls, site};
use crate::common::{ALICE, Gatehouse, TestDir};

/// Every spelling of "up one level" the reviews tried, after a public
/// prefix, aiming at the private file.
const CLIMBS: [&str; 10] = [
    "/static/public/..%3b/private/secret.txt",
    "/static/public/../private/secret.txt",
    "/static/public/%2e%2e/private/secret.txt",
    "/static/public/.%2e/private/secret.txt",
    "/static/public/%2E%2E/private/secret.txt",
    "/static/public/..%2fprivate/secret.txt",
    "/static/public/%2e%2e%2fprivate/secret.txt",
    "/static/public/..;/private/secret.txt",
    "/static/public/..\\private/secret.txt",
    "/static/public/x/%2e%2e/%2e%2e/private/secret.txt",
];

/// Without credentials, no spelling reaches the secret: each is either
/// refused as malformed (400) or, resolved, is the private path (401).
fn assert_no_climb_reaches_the_secret(dir: &TestDir, server: &Gatehouse) {
    for protocol in ["--http1.1", "--http2"] {
        for climb in CLIMBS {
            let (status, body) = curl(dir, &server.url(climb), &[protocol]);
            assert!(
                status == 400 || status == 401,
                "{protocol} {climb}: {status} {body}"
            );
            assert!(
                !body.contains(SECRET),
                "{protocol} {climb} leaked the secret"
            );
        }
    }
    // The public part still works, and the private file with credentials.
    let (status, body) = curl(dir, &server.url("/static/public/file.txt"), &[]);
    assert_eq!((status, body.as_str()), (200, "public file\n"));
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    let (status, body) = curl(
        dir,
        &server.url("/static/private/secret.txt"),
        &["-u", &user],
    );
    assert_eq!(status, 200);
    assert!(body.contains(SECRET));
}

#[test]
fn public_prefix_cannot_be_climbed_out_of_in_front_of_nginx() {
    let dir = TestDir::new();
    let upstream = nginx(&dir, &site(&dir));
    let config = dir.config(&format!(
        "[auth]\npublic = [\"/healthz\", \"/static/public/*\"]\n[upstream]\nurl = \"http://{}\"\n",
        upstream.addr
    ));
    let server = Gatehouse::in_process(&config);
    assert_no_climb_reaches_the_secret(&dir, &server);
    // Resolved dot segments reach nginx already resolved: with credentials
    // the climb is the private file, as the path said.
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    let (status, body) = curl(
        &dir,
        &server.url("/static/public/%2e%2e/private/secret.txt"),
        &["-u", &user],
    );
    assert_eq!(status, 200);
    assert!(body.contains(SECRET));
}

#[test]
fn public_prefix_cannot_be_climbed_out_of_in_static_mode() {
    let dir = TestDir::new();
    let root = site(&dir);
    let config = dir.config(&format!(
        "[auth]\npublic = [\"/healthz\", \"/static/public/*\"]\n[static]\nroot = \"{}\"\n",
        root.display()
    ));
    let server = Gatehouse::in_process(&config);
    assert_no_climb_reaches_the_secret(&dir, &server);
}

#[test]
fn built_in_routes_see_the_canonical_path() {
    let dir = TestDir::new();
    let config = dir.config("[auth]\npublic = [\"/healthz\"]\n");
    let server = Gatehouse::in_process(&config);
    for path in [
        "/healthz/../api/stats",
        "/healthz/%2e%2e/api/stats",
        "/healthz/..%2fapi/stats",
        "/healthz/..;/api/stats",
    ] {
        let (status, _) = curl(&dir, &server.url(path), &[]);
        assert!(status == 400 || status == 401, "{path}: {status}");
    }
    // An escaped unreserved character names the same route.
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    let (status, body) = curl(&dir, &server.url("/api/%77hoami"), &["-u", &user]);
    assert_eq!((status, body.as_str()), (200, "{\"user\":\"alice\"}"));
    let (status, body) = curl(&dir, &server.url("/../api/whoami"), &["-u", &user]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed path"));
}

#[test]
fn the_upstream_url_prefix_confines_requests() {
    let dir = TestDir::new();
    let upstream = nginx(&dir, &site(&dir));
    let config = dir.config(&format!(
        "[upstream]\nurl = \"http://{}/static/public\"\n",
        upstream.addr
    ));
    let server = Gatehouse::in_process(&config);
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    let (status, body) = curl(&dir, &server.url("/file.txt"), &["-u", &user]);
    assert_eq!((status, body.as_str()), (200, "public file\n"));
    for climb in [
        "/../private/secret.txt",
        "/%2e%2e/private/secret.txt",
        "/..%2fprivate/secret.txt",
        "/x/../../private/secret.txt",
    ] {
        let (status, body) = curl(&dir, &server.url(climb), &["-u", &user]);
        assert_eq!(status, 400, "{climb}: {body}");
        assert!(!body.contains(SECRET));
    }
}

#[test]
fn static_files_refuse_dotfiles_and_symlinks_out_of_the_root() {
    let dir = TestDir::new();
    let root = site(&dir);
    std::fs::write(root.join(".env"), "PASSWORD=hunter2\n").unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/config"), "[core]\n").unwrap();
    let outside = dir.path("outside.txt");
    std::fs::write(&outside, format!("{SECRET} outside\n")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("static/public/link.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path("nginx-nowhere"), root.join("dangling")).unwrap();
    // A link with an innocent name that leads to a dotfile inside the root.
    std::os::unix::fs::symlink(root.join(".env"), root.join("static/public/notes.txt")).unwrap();
    std::os::unix::fs::symlink(
        root.join("static/public/file.txt"),
        root.join("static/public/inside.txt"),
    )
    .unwrap();
    let config = dir.config(&format!(
        "[auth]\npublic = [\"/static/public/*\"]\n[static]\nroot = \"{}\"\n",
        root.display()
    ));
    let server = Gatehouse::in_process(&config);
    let user = format!("{}:{}", ALICE.0, ALICE.1);
    for path in [
        "/.env",
        "/.git/config",
        "/static/public/link.txt",
        "/%2eenv",
        "/dangling",
        "/static/public/notes.txt",
    ] {
        let (status, body) = curl(&dir, &server.url(path), &["-u", &user]);
        assert_eq!(status, 404, "{path}: {body}");
    }
    std::fs::create_dir_all(root.join(".well-known/acme-challenge")).unwrap();
    std::fs::write(root.join(".well-known/acme-challenge/t"), "token\n").unwrap();
    let (status, body) = curl(
        &dir,
        &server.url("/.well-known/acme-challenge/t"),
        &["-u", &user],
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "token\n"),
        "/.well-known is not a dotfile"
    );
    let (status, body) = curl(
        &dir,
        &server.url("/static/public/inside.txt"),
        &["-u", &user],
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "public file\n"),
        "a symlink inside the root is fine"
    );

    let config = dir.config(&format!(
        "[static]\nroot = \"{}\"\nallow_dotfiles = true\nfollow_symlinks_outside_root = true\n",
        root.display()
    ));
    let server = Gatehouse::in_process(&config);
    let (status, _) = curl(&dir, &server.url("/.env"), &["-u", &user]);
    assert_eq!(status, 200, "allowed by the config");
    let (status, _) = curl(&dir, &server.url("/static/public/link.txt"), &["-u", &user]);
    assert_eq!(status, 200, "allowed by the config");
}

#[tokio::test]
async fn ambiguous_hosts_trace_connect_and_options_star() {
    let dir = TestDir::new();
    let config = dir.config("");
    let server = Gatehouse::in_process(&config);
    let answer = raw_tls(
        &dir,
        &server,
        "GET /healthz HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_tls(
        &dir,
        &server,
        "GET http://a.example/healthz HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    for method in ["TRACE", "CONNECT"] {
        let target = if method == "CONNECT" {
            "localhost:443"
        } else {
            "/healthz"
        };
        let answer = raw_tls(
            &dir,
            &server,
            &format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{method}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("allow: get"),
            "{answer}"
        );
    }
    for (head, status) in [
        ("GET /healthz HTTP/1.1\r\nHost: a, evil\r\n", "400"),
        ("GET /healthz HTTP/1.1\r\nHost: u@a\r\n", "400"),
        ("GET /healthz HTTP/1.1\r\nHost: a:99999\r\n", "400"),
        ("GET /healthz HTTP/1.1\r\nHost: [fe80::1%eth0]\r\n", "400"),
        ("GET http://u@a/healthz HTTP/1.1\r\nHost: u@a\r\n", "400"),
        ("trace /healthz HTTP/1.1\r\nHost: localhost\r\n", "405"),
        ("TRACK /healthz HTTP/1.1\r\nHost: localhost\r\n", "405"),
        (
            "POST /healthz HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n",
            "501",
        ),
    ] {
        let answer = raw_tls(
            &dir,
            &server,
            &format!("{head}Connection: close\r\n\r\n0\r\n\r\n"),
        )
        .await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{head}: {answer}"
        );
    }
    let answer = raw_tls(
        &dir,
        &server,
        "OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get"),
        "{answer}"
    );
}
