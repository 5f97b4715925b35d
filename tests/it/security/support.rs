//! Real parts for the security tests: nginx serving a directory, a Python
//! WSGI app, curl with `--path-as-is`, and raw TLS and TCP sockets for what
//! curl cannot send.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Gatehouse, TestDir, require_tool};
pub use crate::common::{closed_within, tls_connect};

/// The secret file's content: no test may ever see it without credentials.
pub const SECRET: &str = "TOP SECRET";

/// A directory with `static/public/file.txt` and `static/private/secret.txt`.
pub fn site(dir: &TestDir) -> std::path::PathBuf {
    let root = dir.path("site");
    std::fs::create_dir_all(root.join("static/public")).unwrap();
    std::fs::create_dir_all(root.join("static/private")).unwrap();
    std::fs::write(root.join("static/public/file.txt"), "public file\n").unwrap();
    std::fs::write(
        root.join("static/private/secret.txt"),
        format!("{SECRET}\n"),
    )
    .unwrap();
    root
}

/// A port that was free a moment ago (for servers that cannot report one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on {addr}");
}

/// A child process killed when dropped.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Takes charge of `child`, which listens on `addr`.
    pub fn new(child: Child, addr: SocketAddr) -> Self {
        Self { child, addr }
    }
}

impl Drop for Process {
    /// SIGTERM first, so that nginx's master stops its workers (a SIGKILL
    /// would orphan them); SIGKILL if it has not gone within 2 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real nginx serving `root` on loopback, as an upstream.
pub fn nginx(dir: &TestDir, root: &Path) -> Process {
    let port = free_port();
    nginx_with(
        dir,
        port,
        &format!(
            "server {{ listen 127.0.0.1:{port}; root {}; }}",
            root.display()
        ),
    )
}

/// Real nginx on loopback with `http` (server blocks and the like) inside
/// its `http {}` block, listening on `port`; the config passes `nginx -t`
/// first, so a bad one fails with nginx's own message.
pub fn nginx_with(dir: &TestDir, port: u16, http: &str) -> Process {
    require_tool("nginx", "-v");
    let work = dir.path("nginx");
    std::fs::create_dir_all(&work).unwrap();
    let w = work.display();
    let conf = format!(
        "user root;\nworker_processes 1;\ndaemon off;\npid {w}/nginx.pid;\nerror_log {w}/error.log;\n\
         events {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {w}; proxy_temp_path {w}; fastcgi_temp_path {w}; uwsgi_temp_path {w}; scgi_temp_path {w};\n\
         {http}\n}}\n"
    );
    let conf_path = work.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let nginx = |extra: &[&str]| {
        let mut command = Command::new("nginx");
        command
            .args(extra)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&work);
        command
    };
    let test = nginx(&["-t"]).output().unwrap();
    assert!(
        test.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let child = nginx(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(addr, "nginx");
    Process { child, addr }
}

/// A Python WSGI app (wsgiref) answering with the CGI-style environment it
/// was given: `HTTP_*` variables and `PATH_INFO`.
pub fn wsgi_echo() -> Process {
    require_tool("python3", "--version");
    let script = r#"
import json, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
def app(environ, start):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    seen["PATH_INFO"] = environ.get("PATH_INFO")
    body = json.dumps(seen).encode()
    start("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", line.trim()).parse().unwrap();
    Process { child, addr }
}

/// Runs curl against `url` with `--path-as-is`, trusting the test
/// certificate; returns the status and body.
pub fn curl(dir: &TestDir, url: &str, extra: &[&str]) -> (u16, String) {
    require_tool("curl", "--version");
    let out = Command::new("curl")
        .args([
            "-s",
            "--path-as-is",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--cacert")
        .arg(dir.path("cert.pem"))
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Sends raw bytes over TLS (HTTP/1.1) and returns everything answered
/// until the server closes or 5 s pass.
pub async fn raw_tls(dir: &TestDir, server: &Gatehouse, request: &str) -> String {
    let mut stream = tls_connect(dir, server, &[b"http/1.1"]).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The address of the separate metrics listener, from the start-up log.
pub fn metrics_addr(server: &Gatehouse) -> SocketAddr {
    server.wait_for_log("metrics on http://", 1, Duration::from_secs(5));
    let logs = server.logs();
    let rest = logs.split("metrics on http://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

/// The Prometheus text from the separate metrics listener.
pub async fn metrics_text(dir: &TestDir, server: &Gatehouse) -> String {
    crate::common::client(&dir.cert_pem)
        .get(format!("http://{}/metrics", metrics_addr(server)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
