//! The layer as a library user serves it: in their own axum app, with plain
//! `axum::serve`, called by curl from distinct loopback addresses.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use gatehouse::auth::{AuthenticatedUser, BasicAuthLayer, WithoutPeerAddress};
use gatehouse::credentials::{CredentialStore, Verifier, parse_phc};

use crate::common::{cheap_hash, require_tool};

/// Log lines written while the server runs, for checking what it said.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Serves the layer with `axum::serve(listener, app)` (no connect info)
/// under `policy`, on a current-thread runtime so that `logs` sees what the
/// layer logs; returns the port.
async fn serve_without_connect_info(policy: Option<WithoutPeerAddress>) -> u16 {
    let store = CredentialStore::new([
        (
            "alice".to_owned(),
            parse_phc(&cheap_hash("alice-pw")).unwrap(),
        ),
        ("bob".to_owned(), parse_phc(&cheap_hash("bob-pw")).unwrap()),
    ])
    .unwrap();
    let mut builder = BasicAuthLayer::builder("lib", Verifier::new(Arc::new(store)));
    if let Some(policy) = policy {
        builder = builder.without_peer_address(policy);
    }
    let app = Router::new()
        .route(
            "/",
            get(|user: AuthenticatedUser| async move { format!("hi {}", user.name()) }),
        )
        .layer(builder.build().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// The tests below log through the same callsites, one of them capturing
/// with a thread-local subscriber; run side by side, tracing's process-wide
/// per-callsite interest cache can let one thread's subscriber (or lack of
/// one) decide for the other's and drop an event. One at a time.
static CAPTURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// curl from `source`; returns the status code.
async fn curl_status(port: u16, source: &str, user: &str) -> String {
    curl_status_claiming(port, source, user, &[]).await
}

/// As [`curl_status`], with `extra` headers (`-H` arguments).
async fn curl_status_claiming(port: u16, source: &str, user: &str, extra: &[&str]) -> String {
    let output = tokio::process::Command::new("curl")
        .args(extra)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            source,
            "-u",
            user,
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .await
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

/// The default: with no client address, nothing is keyed by address, so
/// one client's wrong guesses at bob do not lock alice out from another
/// address; failures still count per username; an error says what is wrong.
#[tokio::test]
async fn without_connect_info_the_default_keys_nothing_by_address() {
    require_tool("curl", "--version");
    let _one_at_a_time = CAPTURING.lock().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let port = serve_without_connect_info(None).await;
    for _ in 0..5 {
        assert_eq!(curl_status(port, "127.0.0.2", "bob:wrong").await, "401");
    }
    // Not 429: the address lockout (5 failures) did not lock everyone out.
    assert_eq!(
        curl_status(port, "127.0.0.3", "alice:alice-pw").await,
        "200"
    );
    // bob's record is per username here: his own lockout holds everywhere.
    assert_eq!(curl_status(port, "127.0.0.3", "bob:bob-pw").await, "429");
    let text = logs.text();
    assert_eq!(
        text.matches("without the client's address").count(),
        1,
        "one error, once: {text}"
    );
    assert!(text.contains("ERROR"), "{text}");
    assert!(
        text.contains("into_make_service_with_connect_info"),
        "{text}"
    );
}

/// Chosen explicitly: one shared client, so the address lockout applies to
/// everyone at once (what happened silently before).
#[tokio::test]
async fn without_connect_info_one_client_is_a_stated_choice() {
    require_tool("curl", "--version");
    // Its events, with no subscriber on this thread, would set the shared
    // callsite interest to "never" for the other test.
    let _one_at_a_time = CAPTURING.lock().await;
    let port = serve_without_connect_info(Some(WithoutPeerAddress::OneClient)).await;
    // Each guess claims another address: with no proxy trusted, the claim
    // is ignored (the stand-in peer is not a proxy), and all five count.
    for i in 0..5 {
        let claim = format!("X-Forwarded-For: 198.51.100.{i}");
        assert_eq!(
            curl_status_claiming(port, "127.0.0.2", "bob:wrong", &["-H", &claim]).await,
            "401"
        );
    }
    assert_eq!(
        curl_status(port, "127.0.0.3", "alice:alice-pw").await,
        "429"
    );
}

/// The example the README quotes, built by `cargo test` (examples are), run
/// and called with curl: it serves, lets alice in, keeps others out, and
/// leaves `/healthz` public.
#[test]
fn the_readme_example_runs_as_documented() {
    require_tool("curl", "--version");
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples/axum_app");
    if !example.exists() {
        // `cargo test` builds examples; `cargo test --test it` does not.
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "axum_app"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (mut child, line) = crate::common::spawn_and_read_line(
        std::process::Command::new(&example).env("LISTEN", "127.0.0.1:0"),
    );
    let url = line.strip_prefix("listening on ").unwrap().to_owned();
    let curl = |args: &[&str], path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", " %{http_code}"])
            .args(args)
            .arg(format!("{url}{path}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let results = [
        curl(&["-u", "alice:correct-horse"], "/"),
        curl(&["-u", "alice:wrong"], "/"),
        curl(&[], "/nowhere"),
        curl(&[], "/healthz"),
    ];
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(results[0], "hi alice\n 200");
    assert!(results[1].ends_with(" 401"), "{}", results[1]);
    assert!(results[2].ends_with(" 401"), "{}", results[2]);
    assert_eq!(results[3], "ok\n 200");
}

/// The README quotes the example whole, so what readers copy compiles.
#[test]
fn the_readme_quotes_the_example_verbatim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/axum_app.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md must quote examples/axum_app.rs whole, in a ```rust block"
    );
}

/// A users file loads for library users as it does for the server, and
/// its errors name the file and the line.
#[test]
fn users_file_loads_and_names_the_bad_line() {
    let dir = crate::common::TestDir::new();
    let good = dir.write(
        "users",
        &format!(
            "# team\nalice:{}\n\nbob:{}\n",
            cheap_hash("a"),
            cheap_hash("b")
        ),
    );
    let store = CredentialStore::from_users_file(&good).unwrap();
    assert_eq!(store.len(), 2);
    assert!(store.contains("bob"));
    let bad = dir.write("bad", &format!("alice:{}\nbob:nothash\n", cheap_hash("a")));
    let error = CredentialStore::from_users_file(&bad)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("bad") && error.contains("line 2"), "{error}");
}

/// `default-features = false` leaves the server's crates out of a library
/// user's build.
#[test]
fn the_layer_alone_does_not_pull_in_the_server() {
    let tree = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "--locked",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let crates = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let full = crates(&tree(&[]));
    let layer = crates(&tree(&["--no-default-features"]));
    for server_only in [
        "clap",
        "notify",
        "rcgen",
        "rpassword",
        "prometheus-client",
        "tokio-rustls",
    ] {
        assert!(
            full.contains(server_only),
            "{server_only} is in the server build"
        );
        assert!(
            !layer.contains(server_only),
            "{server_only} is in the layer-only build"
        );
    }
    assert!(
        layer.len() < full.len() * 3 / 4,
        "{} of {}",
        layer.len(),
        full.len()
    );
}
