//! Bearer tokens and API keys against the real server over TLS, with the
//! clients that use them: Python `requests` (the flows from the issue, as
//! written), curl, PyJWT (forging bad tokens, and verifying good ones in an
//! upstream app against the JWKS).

mod refusals;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{Gatehouse, TestDir, binary, client, require_tool};

/// `gatehouse gen-signing-key --out <dir>/<name>`; returns the kid.
pub fn gen_key(dir: &TestDir, name: &str, algorithm: &str) -> String {
    let out = Command::new(binary())
        .args(["gen-signing-key", "--algorithm", algorithm, "--out"])
        .arg(dir.path(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit(' ').next().unwrap().to_owned()
}

/// `gatehouse api-key create`; returns the key printed.
pub fn create_api_key(dir: &TestDir, user: &str, name: &str) -> String {
    let out = Command::new(binary())
        .args([
            "api-key", "create", "--user", user, "--name", name, "--file",
        ])
        .arg(dir.path("api-keys"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(key.lines().count(), 1, "one line: {key}");
    key
}

/// A server with tokens (key `signing.pem`) and API keys (one for alice).
pub fn start(dir: &TestDir, extra: &str) -> (Gatehouse, String) {
    gen_key(dir, "signing.pem", "EdDSA");
    let key = create_api_key(dir, "alice", "ci");
    let config = dir.config(&format!(
        "[tokens]\nenabled = true\nsigning_key = \"signing.pem\"\n[api_keys]\nfile = \"api-keys\"\n{extra}"
    ));
    (
        Gatehouse::start_with_env(&config, &[("RUST_LOG", "debug")]),
        key,
    )
}

/// Runs a Python script with `args`; returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    require_tool("python3", "--version");
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Logs in with a JSON body; returns the token.
pub async fn login(server: &Gatehouse, dir: &TestDir, user: &str, password: &str) -> String {
    let response = client(&dir.cert_pem)
        .post(server.url("/api/auth/jwt"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// The issue's client code, unmodified apart from the URL and the CA file:
/// log in for a JWT, call with it, call with an API key as Bearer and in
/// X-API-Key; and curl with the bearer header.
#[tokio::test]
async fn the_python_requests_flows_work_as_written() {
    let dir = TestDir::new();
    let (server, api_key) = start(&dir, "[metrics]\npath = \"/metrics\"\n");
    let script = r#"
import sys, requests
from requests.auth import HTTPBasicAuth
base, cacert, username, password, api_key = sys.argv[1:6]
url = base + "/api/whoami"
out = []
# The issue's calls, each with the test CA as `verify`.
out.append(requests.get(url, auth=HTTPBasicAuth(username, password), verify=cacert).json()["user"])
r = requests.post(base + "/api/auth/jwt", json={"username": username, "password": password}, verify=cacert)
assert r.status_code == 200, r.text
assert r.headers["Cache-Control"] == "no-store"
body = r.json()
assert body["token_type"] == "Bearer" and body["expires_in"] == 900, body
token = r.json()["access_token"]
out.append(requests.get(base + "/api/whoami", headers={"Authorization": f"Bearer {token}"}, verify=cacert).json()["user"])
out.append(requests.get(base + "/api/whoami", headers={"Authorization": f"Bearer {api_key}"}, verify=cacert).json()["user"])
out.append(requests.get(base + "/api/whoami", headers={"X-API-Key": api_key}, verify=cacert).json()["user"])
r = requests.post(base + "/api/auth/jwt", auth=HTTPBasicAuth(username, password), verify=cacert)
out.append(str(r.status_code))
print(" ".join(out))
print(token)
"#;
    let base = server.url("");
    let base = base.trim_end_matches('/');
    let cacert = dir.path("cert.pem");
    let output = python(
        script,
        &[base, cacert.to_str().unwrap(), "alice", "secret", &api_key],
    );
    let mut lines = output.lines();
    assert_eq!(lines.next().unwrap(), "alice alice alice alice 200");
    let token = lines.next().unwrap().to_owned();
    let curl = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&cacert)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(server.url("/api/whoami"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "{\"user\":\"alice\"}"
    );
    // The access log says how each request authenticated; no secret in it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    for method in ["auth=\"basic\"", "auth=\"bearer\"", "auth=\"api_key\""] {
        assert!(logs.contains(method), "{method} missing: {logs}");
    }
    for secret in [token.as_str(), api_key.as_str(), &api_key[20..], "secret\""] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
    let metrics = client(&dir.cert_pem)
        .get(server.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (method, at_least) in [("basic", 1), ("bearer", 2), ("api_key", 2)] {
        let line = format!("gatehouse_authenticated_requests_total{{method=\"{method}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{line} missing: {metrics}"))
            .parse()
            .unwrap();
        assert!(count >= at_least, "{method}: {count}");
    }
}

/// An upstream app behind gatehouse verifies the token itself with PyJWT,
/// using the keys gatehouse publishes at /.well-known/jwks.json.
#[tokio::test]
async fn an_upstream_verifies_tokens_with_pyjwt_against_the_jwks() {
    let dir = TestDir::new();
    let upstream = r#"
import sys, json, jwt, requests, http.server, threading
jwks_url, cacert = sys.argv[1:3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        token = self.headers["Authorization"].split(" ", 1)[1]
        jwks = requests.get(jwks_url, verify=cacert, timeout=10).json()
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)
        claims = jwt.decode(token, key, algorithms=[key.algorithm_name], audience="gatehouse", issuer="gatehouse")
        body = json.dumps({"sub": claims["sub"], "user": self.headers["X-Forwarded-User"]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
    // The upstream needs gatehouse's address for the JWKS, and gatehouse
    // the upstream's: reserve gatehouse's port first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let jwks = format!("https://localhost:{port}/.well-known/jwks.json");
    let (mut child, line) = crate::common::spawn_and_read_line(
        Command::new("python3")
            .arg("-c")
            .arg(upstream)
            .arg(&jwks)
            .arg(dir.path("cert.pem")),
    );
    let upstream_port: u16 = line.trim().parse().unwrap();
    gen_key(&dir, "signing.pem", "ES256");
    let config = dir.config_with_server(
        "",
        &format!(
            "[tokens]\nenabled = true\nsigning_key = \"signing.pem\"\n[upstream]\nurl = \"http://127.0.0.1:{upstream_port}\"\nforward_authorization = true\n"
        ),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let server = Gatehouse::start(&config);
    let token = login(&server, &dir, "alice", "secret").await;
    let seen: serde_json::Value = client(&dir.cert_pem)
        .get(server.url("/app"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, serde_json::json!({"sub": "alice", "user": "alice"}));
}

/// SIGHUP once the file watcher has settled, and wait for that reload.
pub async fn reload(server: &Gatehouse) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = server.logs().matches("configuration reloaded").count();
    server.signal("HUP");
    server.wait_for_log(
        "configuration reloaded",
        before + 1,
        Duration::from_secs(10),
    );
}

/// Reload revokes: a changed password kills its tokens, a deleted key line
/// kills the key; a rotated key keeps old tokens while listed in
/// previous_keys, and not after.
#[tokio::test]
async fn reload_revokes_and_rotates() {
    let dir = TestDir::new();
    let (server, api_key) = start(&dir, "");
    let http = client(&dir.cert_pem);
    let status = |credential: String| {
        let http = http.clone();
        let url = server.url("/api/whoami");
        async move {
            http.get(url)
                .bearer_auth(credential)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let alice_token = login(&server, &dir, "alice", "secret").await;
    let bob_token = login(&server, &dir, "bob", "pässwörd").await;
    let carol_token = login(&server, &dir, "carol", "p:ss:w0rd").await;
    assert_eq!(status(carol_token.clone()).await, StatusCode::OK);
    assert_eq!(status(api_key.clone()).await, StatusCode::OK);
    // Three times in a row on the client's keep-alive connection: the
    // token cache, then the connection's memo (auth/memo.rs), answer; the
    // reload below must still revoke it there.
    for _ in 0..3 {
        assert_eq!(status(alice_token.clone()).await, StatusCode::OK);
    }
    // alice gets a new password; her API key line is deleted; the key is
    // rotated with the old one kept.
    let config = dir.path("gatehouse.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let old_alice = text
        .lines()
        .find(|l| l.starts_with("alice = "))
        .unwrap()
        .to_owned();
    let new_alice = format!("alice = \"{}\"", crate::common::cheap_hash("new secret"));
    std::fs::rename(dir.path("signing.pem"), dir.path("old.pem")).unwrap();
    gen_key(&dir, "signing.pem", "EdDSA");
    let old_carol = text
        .lines()
        .find(|l| l.starts_with("carol = "))
        .unwrap()
        .to_owned();
    let rotated = text
        .replace(&old_alice, &new_alice)
        .replace(&old_carol, "")
        .replace(
            "signing_key = \"signing.pem\"",
            "signing_key = \"signing.pem\"\nprevious_keys = [\"old.pem\"]",
        );
    std::fs::write(dir.path("api-keys"), "").unwrap();
    std::fs::write(&config, &rotated).unwrap();
    reload(&server).await;
    assert_eq!(
        status(alice_token).await,
        StatusCode::UNAUTHORIZED,
        "password changed"
    );
    assert_eq!(
        status(carol_token).await,
        StatusCode::UNAUTHORIZED,
        "user removed"
    );
    assert_eq!(
        status(api_key).await,
        StatusCode::UNAUTHORIZED,
        "key revoked"
    );
    assert_eq!(
        status(bob_token.clone()).await,
        StatusCode::OK,
        "old key still listed"
    );
    let fresh = login(&server, &dir, "bob", "pässwörd").await;
    assert_eq!(status(fresh.clone()).await, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(status(bob_token.clone()).await, StatusCode::OK);
    }
    // Drop the old key: bob's old token dies, the new one lives.
    std::fs::write(
        &config,
        rotated.replace("\nprevious_keys = [\"old.pem\"]", ""),
    )
    .unwrap();
    reload(&server).await;
    assert_eq!(
        status(bob_token).await,
        StatusCode::UNAUTHORIZED,
        "old key removed"
    );
    assert_eq!(status(fresh).await, StatusCode::OK);
    assert!(Path::new(&dir.path("old.pem")).exists());
}

/// Turning tokens and API keys off in the config revokes them at the next
/// reload, not at the next restart.
#[tokio::test]
async fn turning_tokens_off_by_reload_revokes_at_once() {
    let dir = TestDir::new();
    let (server, api_key) = start(&dir, "");
    let token = login(&server, &dir, "alice", "secret").await;
    let config = dir.path("gatehouse.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let off = text
        .replace(
            "[tokens]\nenabled = true\nsigning_key = \"signing.pem\"\n",
            "",
        )
        .replace("[api_keys]\nfile = \"api-keys\"\n", "");
    assert_ne!(off, text);
    std::fs::write(&config, off).unwrap();
    reload(&server).await;
    let http = client(&dir.cert_pem);
    for credential in [&token, &api_key] {
        let status = http
            .get(server.url("/api/whoami"))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let login = http
        .post(server.url("/api/auth/jwt"))
        .json(&serde_json::json!({"username": "alice", "password": "secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::NOT_FOUND);
    assert!(server.logs().contains("only takes effect after a restart"));
}

/// The credential is gatehouse's business: the API key's header stops at
/// the gate unless `forward_authorization` says otherwise.
#[tokio::test]
async fn api_keys_do_not_reach_the_upstream_unless_credentials_are_forwarded() {
    let up = crate::common::upstream::start().await;
    for forwarded in [false, true] {
        let dir = TestDir::new();
        let extra =
            format!("[upstream]\nurl = \"http://{up}\"\nforward_authorization = {forwarded}\n");
        let (server, key) = start(&dir, &extra);
        let seen: serde_json::Value = client(&dir.cert_pem)
            .get(server.url("/echo"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let headers = &seen["headers"];
        assert_eq!(headers["x-forwarded-user"], "alice", "{seen}");
        if forwarded {
            assert_eq!(headers["x-api-key"], key.as_str());
        } else {
            assert!(headers.get("x-api-key").is_none(), "{seen}");
        }
    }
}
