//! Forward authentication: real nginx (`auth_request`) and real Caddy
//! (`forward_auth`) in front of an upstream, configured with the snippets
//! shipped in `deploy/forward-auth/`, called with curl from distinct
//! loopback addresses; and the request shapes Traefik and Envoy send (not
//! packaged here), sent by hand.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{ALICE, Gatehouse, TestDir, require_tool, upstream};
use crate::security::support::{Process, free_port, nginx_with, wait_for_port};

/// gatehouse with decisions on a plain-HTTP listener of their own, the
/// proxy on 127.0.0.1 trusted, `/public/*` public, lockout after 3
/// failures; `extra` appended. Returns the server and the decision address.
fn gatehouse(dir: &TestDir, extra: &str) -> (Gatehouse, SocketAddr) {
    let port = free_port();
    let config = dir.config_with_server(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        &format!(
            "[auth]\npublic = [\"/healthz\", \"/public/*\"]\n\
             [lockout]\nmax_failures = 3\n\
             [forward_auth]\nlisten = \"127.0.0.1:{port}\"\n{extra}"
        ),
    );
    let server = Gatehouse::start_with_env(&config, &[("RUST_LOG", "debug")]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(addr, "the forward-auth listener");
    (server, addr)
}

/// The shipped snippet with its example addresses replaced.
fn snippet(name: &str, replacements: &[(&str, String)]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/forward-auth/");
    let mut text = std::fs::read_to_string(format!("{path}{name}")).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{name} has no {from}");
        text = text.replace(from, to);
    }
    text
}

fn start_nginx(dir: &TestDir, decisions: SocketAddr, app: SocketAddr) -> Process {
    let port = free_port();
    let server = snippet(
        "nginx.conf",
        &[
            ("127.0.0.1:9091", decisions.to_string()),
            ("127.0.0.1:3000", app.to_string()),
            ("127.0.0.1:8080", format!("127.0.0.1:{port}")),
        ],
    );
    nginx_with(dir, port, &server)
}

/// Caddy with the shipped snippet; `decisions` as Caddy spells an upstream
/// (`127.0.0.1:9091`, or `unix//path` for a socket).
fn start_caddy(dir: &TestDir, decisions: &str, app: SocketAddr) -> Process {
    require_tool("caddy", "version");
    let port = free_port();
    let site = snippet(
        "Caddyfile",
        &[
            ("127.0.0.1:9091", decisions.to_owned()),
            ("127.0.0.1:3000", app.to_string()),
            ("127.0.0.1:8081", format!("127.0.0.1:{port}")),
        ],
    );
    let work = dir.path("caddy");
    std::fs::create_dir_all(&work).unwrap();
    // No admin endpoint (tests run side by side), quiet logs.
    let caddyfile = work.join("Caddyfile");
    std::fs::write(&caddyfile, format!("{{\n\tadmin off\n}}\n{site}")).unwrap();
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", &work)
        .env("XDG_DATA_HOME", &work)
        .env("XDG_CONFIG_HOME", &work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start caddy");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(addr, "caddy");
    Process::new(child, addr)
}

/// curl from `source`: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The header the upstream echo saw.
    fn upstream_saw(&self, name: &str) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        body["headers"][name].as_str().map(str::to_owned)
    }
}

fn curl(source: &str, url: &str, extra: &[&str]) -> Answer {
    require_tool("curl", "--version");
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-D", "-", "--interface", source])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// What every proxy must get right: the challenge relayed, the user
/// passed on, wrong passwords refused, public paths open, a locked-out
/// address refused with `locked_status` and `Retry-After` (never a 5xx),
/// another address unaffected.
fn the_proxy_checks(front: SocketAddr, user_header: &str, locked_status: u16) {
    let url = |path: &str| format!("http://{front}{path}");
    let alice = format!("{}:{}", ALICE.0, ALICE.1);
    let none = curl("127.0.0.2", &url("/app"), &[]);
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(
        none.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic realm=")),
        "{:?}",
        none.headers
    );
    let ok = curl(
        "127.0.0.2",
        &url("/app?x=1"),
        &["-u", &alice, "-H", &format!("{user_header}: mallory")],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.upstream_saw(&user_header.to_ascii_lowercase())
            .as_deref(),
        Some("alice")
    );
    let public = curl("127.0.0.2", &url("/public/page"), &[]);
    assert_eq!(public.status, 200, "{}", public.body);
    // Traversal out of the public prefix is decided on the canonical path.
    let climbed = curl("127.0.0.2", &url("/public/%2e%2e/app"), &["--path-as-is"]);
    assert_ne!(climbed.status, 200, "{}", climbed.body);
    // A client describing another request itself gets no 200: the snippet
    // clears such headers, and gatehouse refuses two descriptions.
    for header in [
        "X-Original-URL: /public/page",
        "X-Forwarded-Uri: /public/page",
        "X-Original-URI: /public/page",
    ] {
        let smuggled = curl("127.0.0.2", &url("/app"), &["-H", header]);
        assert_ne!(smuggled.status, 200, "{header}: {}", smuggled.body);
        assert!(smuggled.status < 500, "{header}: {}", smuggled.status);
    }
    // A path the upstream would read differently is never decided on a
    // cleaned-up form.
    for raw in [
        "/app/../public/page",
        "/app//../public/page",
        "/app/%2e%2e/public/page",
    ] {
        let answer = curl("127.0.0.2", &url(raw), &["--path-as-is"]);
        assert_ne!(answer.status, 200, "{raw}: {}", answer.body);
        assert!(answer.status < 500, "{raw}: {}", answer.status);
    }
    // Identity and scopes reach the app from gatehouse only.
    let spoofed = [
        "-H",
        "Remote-User: mallory",
        "-H",
        "X-User: mallory",
        "-H",
        "X-Forwarded-Scopes: admin",
    ];
    let public = curl("127.0.0.2", &url("/public/page"), &spoofed);
    assert_eq!(public.status, 200, "{}", public.body);
    let password = curl(
        "127.0.0.2",
        &url("/app"),
        &[&spoofed[..], &["-u", &alice]].concat(),
    );
    assert_eq!(password.status, 200, "{}", password.body);
    assert_eq!(
        password
            .upstream_saw(&user_header.to_ascii_lowercase())
            .as_deref(),
        Some("alice")
    );
    for answer in [&public, &password] {
        for header in [user_header, "Remote-User", "X-Forwarded-Scopes"] {
            let seen = answer.upstream_saw(&header.to_ascii_lowercase());
            assert!(
                seen.as_deref().is_none_or(|v| v.is_empty() || v == "alice"),
                "{header}: {seen:?}"
            );
        }
    }
    // Wrong passwords until the address is locked out.
    for _ in 0..3 {
        let wrong = curl("127.0.0.3", &url("/app"), &["-u", "alice:wrong"]);
        assert_eq!(wrong.status, 401);
    }
    let locked = curl("127.0.0.3", &url("/app"), &["-u", &alice]);
    assert_eq!(locked.status, locked_status, "{:?}", locked.headers);
    assert!(
        locked.header("retry-after").is_some(),
        "{:?}",
        locked.headers
    );
    // Another client is not affected (the proxy's X-Forwarded-For counts).
    let other = curl("127.0.0.4", &url("/app"), &["-u", &alice]);
    assert_eq!(other.status, 200, "{}", other.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_the_shipped_snippet() {
    let dir = TestDir::new();
    let app = upstream::start().await;
    let (server, decisions) = gatehouse(&dir, "");
    let nginx = start_nginx(&dir, decisions, app);
    let front = nginx.addr;
    // nginx turns anything but 401/403 into a 500: the lockout is a 401.
    tokio::task::spawn_blocking(move || the_proxy_checks(front, "X-User", 401))
        .await
        .unwrap();
    let logs = server.logs();
    assert!(logs.contains("forward-auth decisions on http://"));
    // The access log names the request each decision was about (its
    // canonical path, never the query), beside the decision's own path.
    let decided: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("gatehouse::access") && l.contains("path=\"/authz\""))
        .collect();
    assert!(
        decided
            .iter()
            .any(|l| l.contains("decided_method=\"GET\"") && l.contains("decided_path=\"/app\"")),
        "{logs}"
    );
    assert!(decided.iter().all(|l| !l.contains("x=1")), "{logs}");
    drop(nginx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_with_the_shipped_snippet() {
    let dir = TestDir::new();
    let app = upstream::start().await;
    let (_server, decisions) = gatehouse(&dir, "");
    let caddy = start_caddy(&dir, &decisions.to_string(), app);
    let front = caddy.addr;
    // Caddy passes any status through: the lockout is a 429.
    tokio::task::spawn_blocking(move || the_proxy_checks(front, "Remote-User", 429))
        .await
        .unwrap();
    drop(caddy);
}

/// A decision request as Traefik's ForwardAuth sends it: GET on the
/// decision path, the original in `X-Forwarded-*`.
async fn traefik(
    http: &reqwest::Client,
    decisions: SocketAddr,
    method: &str,
    uri: &str,
    auth: Option<&str>,
) -> reqwest::Response {
    let mut request = http
        .get(format!("http://{decisions}/authz"))
        .header("X-Forwarded-Method", method)
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "app.example")
        .header("X-Forwarded-Uri", uri)
        .header("X-Forwarded-For", "127.0.0.20");
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn traefik_and_envoy_request_shapes_and_every_credential_scheme() {
    let dir = TestDir::new();
    let (server, decisions) = gatehouse(&dir, "[tokens]\nenabled = true\nephemeral_key = true\n");
    let http = crate::common::client(&dir.cert_pem);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", ALICE.0, ALICE.1)
        )
    );
    // Traefik: public, protected with and without credentials.
    let public = traefik(&http, decisions, "POST", "/public/x?y=1", None).await;
    assert_eq!(public.status(), StatusCode::OK);
    // Every identity header, empty: a proxy copying it overwrites the
    // client's own.
    assert_eq!(public.headers()["remote-user"], "");
    assert_eq!(public.headers()["x-forwarded-scopes"], "");
    let allowed = traefik(&http, decisions, "DELETE", "/api/items/1", Some(&basic)).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    for name in ["x-auth-request-user", "remote-user", "x-forwarded-user"] {
        assert_eq!(allowed.headers()[name], "alice", "{name}");
    }
    assert_eq!(allowed.headers()["cache-control"], "no-store");
    let refused = traefik(&http, decisions, "GET", "/api/items", None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    // The canonical path decides: no climbing out of the public prefix.
    for sneaky in ["/public/../api", "/public/%2e%2e/api", "/public/..%2fapi"] {
        let response = traefik(&http, decisions, "GET", sneaky, None).await;
        assert_ne!(response.status(), StatusCode::OK, "{sneaky}");
    }
    // Two descriptions of the original: ambiguous, refused.
    let twice = http
        .get(format!("http://{decisions}/authz"))
        .header("X-Forwarded-Uri", "/public/x")
        .header("X-Forwarded-Uri", "/api")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    // A bearer token from the login works here too.
    let token = crate::tokens::login(&server, &dir, ALICE.0, ALICE.1).await;
    let bearer = traefik(
        &http,
        decisions,
        "GET",
        "/api",
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(bearer.status(), StatusCode::OK);
    assert_eq!(bearer.headers()["remote-user"], "alice");
    // Envoy: the original method, the decision prefix, the original path.
    let envoy = |method: reqwest::Method, path: &str, auth: Option<&str>| {
        let mut request = http.request(method, format!("http://{decisions}/authz{path}"));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth.to_owned());
        }
        request.send()
    };
    let response = envoy(reqwest::Method::PUT, "/api/items?x=1", Some(&basic))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["remote-user"], "alice");
    let response = envoy(reqwest::Method::GET, "/api/items", None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = envoy(reqwest::Method::GET, "/public/page", None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Envoy's form with a path the app would read differently.
    let raw = tokio::task::spawn_blocking(move || {
        curl(
            "127.0.0.1",
            &format!("http://{decisions}/authz/api/../public/x"),
            &["--path-as-is"],
        )
    })
    .await
    .unwrap();
    assert_eq!(raw.status, 400);
    // Methods that are never let through.
    let trace = traefik(&http, decisions, "TRACE", "/public/x", Some(&basic)).await;
    assert_eq!(trace.status(), StatusCode::METHOD_NOT_ALLOWED);
    // A WebSocket handshake on a public path needs credentials (the
    // proxy dropped Upgrade, but the key shows it).
    let websocket = http
        .get(format!("http://{decisions}/authz"))
        .header("X-Forwarded-Uri", "/public/ws")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(websocket.status(), StatusCode::UNAUTHORIZED);
    // The decision listener is plain HTTP: it answers decisions only.
    for path in ["/healthz", "/api/auth/jwt", "/api/whoami"] {
        let response = http
            .get(format!("http://{decisions}{path}"))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // A peer that is not a trusted proxy gets no decisions.
    let stranger = crate::common::client_from(&dir.cert_pem, "127.0.0.5")
        .get(format!("http://{decisions}/authz"))
        .header("X-Forwarded-Uri", "/public/x")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    // The main listener does not answer decisions when they have their
    // own: /authz there is an ordinary (protected, unknown) path.
    let main = crate::common::client(&dir.cert_pem)
        .get(server.url("/authz"))
        .header("X-Forwarded-Uri", "/public/x")
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), StatusCode::UNAUTHORIZED);
    // No credential reaches the logs, even at debug.
    let logs = server.logs();
    assert!(!logs.contains(&token) && !logs.contains(ALICE.1));
}

/// Without a listener of their own, decisions are answered on the main
/// (TLS) listener; nginx style is detected by `X-Original-URI`, and a
/// limit is then a 401 with `Retry-After`.
#[tokio::test]
async fn decisions_on_the_main_listener_and_nginx_style_limits() {
    let dir = TestDir::new();
    let config = dir.config_with_server(
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "[lockout]\nmax_failures = 1\n[forward_auth]\npath = \"/gate\"\n",
    );
    let server = Gatehouse::start(&config);
    let http = crate::common::client(&dir.cert_pem);
    let ask = |uri: &'static str, nginx: bool, auth: Option<(&'static str, &'static str)>| {
        let mut request = http
            .get(server.url("/gate"))
            .header("X-Forwarded-For", "127.0.0.30");
        request = if nginx {
            request.header("X-Original-URI", uri)
        } else {
            request.header("X-Forwarded-Uri", uri)
        };
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        request.send()
    };
    assert_eq!(
        ask("/x", false, Some(ALICE)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        ask("/x", false, Some(("alice", "wrong")))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let locked = ask("/x", false, Some(ALICE)).await.unwrap();
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let locked = ask("/x", true, Some(ALICE)).await.unwrap();
    assert_eq!(locked.status(), StatusCode::UNAUTHORIZED);
    assert!(locked.headers().contains_key("retry-after"));
    // The lockout was for 127.0.0.30, not for the proxy.
    let other = http
        .get(server.url("/gate/x"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

/// Connections to the decision listener count in `gatehouse_open_connections`
/// with the main listener's.
#[tokio::test]
async fn the_decision_listener_counts_its_connections() {
    let dir = TestDir::new();
    let (server, decisions) = gatehouse(&dir, "[metrics]\npath = \"/metrics\"\n");
    let open = || crate::common::metric(&server, &dir.cert_pem, "gatehouse_open_connections");
    let before = open().await;
    let held: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(decisions).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while open().await < before + 3.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the decision listener's connections are not counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(held);
}

/// gatehouse with decisions on a Unix socket in `dir` (no trusted proxy:
/// the socket's peer is trusted as the proxy), the same rules as
/// [`gatehouse`]. Returns the server and the socket's path.
fn gatehouse_on_a_socket(dir: &TestDir) -> (Gatehouse, std::path::PathBuf) {
    let socket = dir.path("authz.sock");
    let config = dir.config(&format!(
        "[auth]\npublic = [\"/healthz\", \"/public/*\"]\n\
         [lockout]\nmax_failures = 3\n\
         [forward_auth]\nlisten = \"unix:{}\"\n",
        socket.display()
    ));
    let server = Gatehouse::start_with_env(&config, &[("RUST_LOG", "debug")]);
    (server, socket)
}

/// The shipped nginx snippet with its decision address replaced by a Unix
/// socket: the same checks as over TCP, the client told apart by the
/// `X-Forwarded-For` nginx sends without any `trusted_proxies`; the socket
/// file is the owner's and its group's only, and gone after a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_over_a_unix_socket() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let dir = TestDir::new();
    let app = upstream::start().await;
    let (server, socket) = gatehouse_on_a_socket(&dir);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let port = free_port();
    let site = snippet(
        "nginx.conf",
        &[
            ("127.0.0.1:9091", format!("unix:{}", socket.display())),
            ("127.0.0.1:3000", app.to_string()),
            ("127.0.0.1:8080", format!("127.0.0.1:{port}")),
        ],
    );
    let nginx = nginx_with(&dir, port, &site);
    let front = nginx.addr;
    tokio::task::spawn_blocking(move || the_proxy_checks(front, "X-User", 401))
        .await
        .unwrap();
    let logs = server.logs();
    assert!(
        logs.contains(&format!(
            "forward-auth decisions on unix:{}",
            socket.display()
        )),
        "{logs}"
    );
    // No warning about an untrusted proxy: the socket is the trust.
    assert!(!logs.contains("no proxy is trusted"), "{logs}");
    drop(nginx);
    server.terminate(std::time::Duration::from_secs(10));
    assert!(!socket.exists(), "the socket file outlived the server");
}

/// The shipped Caddyfile with a Unix socket as the decision upstream
/// (Caddy's `unix//path`): Caddy names the client in `X-Forwarded-For`
/// itself, so the same checks hold with no `trusted_proxies`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_over_a_unix_socket() {
    let dir = TestDir::new();
    let app = upstream::start().await;
    let (_server, socket) = gatehouse_on_a_socket(&dir);
    let caddy = start_caddy(&dir, &format!("unix/{}", socket.display()), app);
    let front = caddy.addr;
    tokio::task::spawn_blocking(move || the_proxy_checks(front, "Remote-User", 429))
        .await
        .unwrap();
    drop(caddy);
}

/// A socket file left behind by a process that is gone is replaced; one a
/// running instance listens on is not (the second instance fails naming
/// the key), and neither is a file that is not a socket.
#[tokio::test]
async fn a_socket_left_behind_is_replaced_and_a_live_or_foreign_one_is_not() {
    let dir = TestDir::new();
    let socket = dir.path("authz.sock");
    // Left behind: bound, then the listener closed without removing it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let (first, _) = gatehouse_on_a_socket(&dir);
    // The new socket answers decisions (curl speaks to it directly); a
    // request that does not name its client is refused.
    let ask = |extra: &[&str]| {
        let answer = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&socket)
            .args(["-H", "X-Forwarded-Uri: /app"])
            .args(extra)
            .arg("http://localhost/authz")
            .output()
            .unwrap();
        String::from_utf8_lossy(&answer.stdout).into_owned()
    };
    assert_eq!(ask(&["-H", "X-Forwarded-For: 127.0.0.9"]), "401");
    // Missing, empty, or what nginx sends when it listens on a socket
    // itself ($remote_addr is "unix:"): all clients would share one key.
    for unnamed in [
        &[][..],
        &["-H", "X-Forwarded-For;"],
        &["-H", "X-Forwarded-For: unix:"],
    ] {
        assert_eq!(ask(unnamed), "403", "{unnamed:?}");
    }
    first.wait_for_log(
        "names no readable client",
        1,
        std::time::Duration::from_secs(5),
    );
    // No private staging folder is left beside the socket.
    let left: Vec<_> = std::fs::read_dir(dir.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".gatehouse-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A second instance on the same socket (another main port; its own
    // folder, so that the first does not reload the second's config) fails
    // to start; so does one on a file that is not a socket, or in a folder
    // anyone may write to (not sticky), where the socket could be swapped
    // by name. Each says why, naming the key.
    let elsewhere = TestDir::new();
    let refused = |socket: &std::path::Path| {
        let config = elsewhere.config(&format!(
            "[forward_auth]\nlisten = \"unix:{}\"\n",
            socket.display()
        ));
        let output = Command::new(crate::common::binary())
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            stderr.contains("[forward_auth] listen: cannot bind unix:"),
            "{stderr}"
        );
        stderr
    };
    let stderr = refused(&socket);
    assert!(stderr.contains("another process listens"), "{stderr}");
    assert!(socket.exists(), "the running instance lost its socket");
    drop(first);
    let file = dir.write("not-a-socket", "keep me");
    let stderr = refused(&file);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    use std::os::unix::fs::PermissionsExt as _;
    let open = dir.path("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = refused(&open.join("authz.sock"));
    assert!(
        stderr.contains("can be written by another user"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
}

/// `[server] cpu_scheduling = "batch"`: every thread of the server runs
/// under SCHED_BATCH (policy 3 in /proc); the default leaves the policy it
/// was started with (this test's own, whatever the CI runs it under).
#[tokio::test]
async fn cpu_scheduling_batch_reaches_every_runtime_thread() {
    let policies = |pid: u32| -> Vec<(String, u32)> {
        let mut seen = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap();
            let stat = std::fs::read_to_string(task.join("stat")).unwrap();
            // Fields after the command name's closing parenthesis; the
            // policy is field 41 of the whole line, the 39th after it.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let policy = after.split(' ').nth(38).unwrap().parse().unwrap();
            seen.push((name.trim().to_owned(), policy));
        }
        seen
    };
    let dir = TestDir::new();
    let batch = Gatehouse::start(&dir.config_with_server("cpu_scheduling = \"batch\"", ""));
    let threads = policies(batch.pid());
    assert!(
        threads.iter().any(|(name, _)| name.starts_with("tokio-rt")),
        "{threads:?}"
    );
    for (name, policy) in &threads {
        if name.starts_with("tokio-rt") || name == "gatehouse" {
            assert_eq!(*policy, 3, "{name} is not SCHED_BATCH: {threads:?}");
        }
    }
    let dir = TestDir::new();
    let default = Gatehouse::start(&dir.config(""));
    let ours = policies(std::process::id())[0].1;
    let threads = policies(default.pid());
    assert!(
        threads.iter().all(|(_, policy)| *policy == ours),
        "not {ours}: {threads:?}"
    );
}
