//! Replicas sharing state through a real `redis-server` (`[cluster]`):
//! one lockout for all of them, what happens when Redis dies or stalls,
//! and the way back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    ALICE, Gatehouse, TestDir, client_from, metric, require_tool, whoami_response,
};
use reqwest::StatusCode;

/// A `redis-server` of the test's own, on a Unix socket in a directory of
/// its own (no port two tests could both pick), stopped by PID when
/// dropped. No persistence: a restart starts empty.
pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (a password).
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        require_tool("redis-server", "--version");
        let mut redis = Self {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        redis.launch();
        redis
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on {}", self.socket().display());
    }

    /// Whether Redis answers PING (a raw RESP exchange).
    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        // With a password, PING is refused with -NOAUTH: an answer all the
        // same.
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && (&reply == b"+PONG\r\n" || reply[0] == b'-')
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A paused server is killed too.
        if self.child.is_some() {
            self.signal("CONT");
        }
        self.kill();
    }
}

/// `[cluster]` on `redis` under `prefix`, with a shared secret written to
/// `dir` (every replica of a test shares the directory).
fn cluster_section(dir: &TestDir, redis: &Redis, prefix: &str, timeout: &str) -> String {
    let secret = dir.write("cluster-secret", "0123456789abcdef0123456789abcdef-test\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!(
        "[cluster]\nredis = \"{}\"\nsecret_file = \"cluster-secret\"\nprefix = \"{prefix}\"\ntimeout = \"{timeout}\"\nsync_interval = \"200ms\"\n",
        redis.url()
    )
}

/// A config for one replica: the three test users, metrics, lockouts after
/// `max_failures`, and `[cluster]` on `redis` under `prefix`.
fn replica_config(dir: &TestDir, redis: &Redis, prefix: &str, timeout: &str) -> std::path::PathBuf {
    dir.config(&format!(
        "[metrics]\npath = \"/metrics\"\n\
         [lockout]\nmax_failures = 5\nwindow = \"10m\"\nduration = \"10m\"\n\
         [rate_limit]\nper_ip = {{ per_second = 1000, burst = 1000 }}\nper_user = false\n{}",
        cluster_section(dir, redis, prefix, timeout)
    ))
}

/// Waits (bounded) until `name` reads `want` at `server`.
async fn until_metric(server: &Gatehouse, cert: &str, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(server, cert, name).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {value}, not {want}:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn failed_verifications(servers: &[&Gatehouse], cert: &str) -> f64 {
    let mut total = 0.0;
    for server in servers {
        total += metric(server, cert, "gatehouse_argon2_failed_verifications_total").await;
    }
    total
}

/// Sends `rounds` waves of wrong passwords from `source`, one request to
/// each replica per wave, all of a wave at once; every answer is 401 or 429.
async fn flood(servers: &[&Gatehouse], cert: &str, source: &str, rounds: usize) -> usize {
    let attacker = client_from(cert, source);
    let mut refused = 0;
    for round in 0..rounds {
        let wave = servers.iter().enumerate().map(|(i, server)| {
            let attacker = attacker.clone();
            async move {
                whoami_response(&attacker, server, "alice", &format!("guess-{round}-{i}"))
                    .await
                    .status()
            }
        });
        for status in futures_util::future::join_all(wave).await {
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
            refused += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
        }
    }
    refused
}

#[tokio::test]
async fn three_replicas_share_one_lockout() {
    let _heavy = crate::common::HEAVY.lock().await;
    let redis = Redis::start();
    // One config (and certificate) for all three, as replicas have.
    let dir = TestDir::new();
    let config = replica_config(&dir, &redis, "lockout", "1s");
    let servers: Vec<Gatehouse> = (0..3).map(|_| Gatehouse::start(&config)).collect();
    let refs: Vec<&Gatehouse> = servers.iter().collect();
    let cert = dir.cert_pem.clone();

    let legitimate = client_from(&cert, "127.0.0.6");
    let refused = flood(&refs, &cert, "127.0.0.5", 10).await;
    assert!(
        refused >= 20,
        "the flood was not locked out: {refused} refused"
    );
    assert_eq!(
        failed_verifications(&refs, &cert).await,
        5.0,
        "a flood spread over three replicas costs max_failures verifications in all"
    );
    // Another client, at every replica, is let in throughout.
    for server in &servers {
        let ok = whoami_response(&legitimate, server, ALICE.0, ALICE.1).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    // The locked address is refused everywhere, even with the right password.
    for server in &servers {
        let locked =
            whoami_response(&client_from(&cert, "127.0.0.5"), server, ALICE.0, ALICE.1).await;
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    for server in &servers {
        assert_eq!(metric(server, &cert, "gatehouse_redis_up").await, 1.0);
    }
}

#[tokio::test]
async fn the_per_address_rate_is_one_budget_across_replicas() {
    let _heavy = crate::common::HEAVY.lock().await;
    let redis = Redis::start();
    let dir = TestDir::new();
    let config = dir.config(&format!(
        "[rate_limit]\nper_ip = {{ per_second = 1, burst = 6 }}\nper_user = false\n{}",
        cluster_section(&dir, &redis, "rate", "1s")
    ));
    let servers: Vec<Gatehouse> = (0..3).map(|_| Gatehouse::start(&config)).collect();
    // Requests without credentials cost a refusal: each is counted.
    let client = client_from(&dir.cert_pem, "127.0.0.11");
    let mut admitted = 0;
    for round in 0..10 {
        for server in &servers {
            let status = client
                .get(server.url("/api/whoami"))
                .send()
                .await
                .unwrap()
                .status();
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
            admitted += usize::from(status == StatusCode::UNAUTHORIZED);
        }
        if round == 9 {
            // By now Redis's verdict has reached every replica.
            for server in &servers {
                let status = client
                    .get(server.url("/api/whoami"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            }
        }
    }
    // One budget of 6 (plus what got through while the verdict was on its
    // way, and the 1/s refill), not 6 per replica.
    println!("admitted {admitted} of 30 over three replicas (per-replica budgets: 18)");
    assert!(admitted < 18, "admitted {admitted}");
}

#[tokio::test]
async fn redis_down_keeps_locks_and_the_gate_open_and_recovers() {
    let _heavy = crate::common::HEAVY.lock().await;
    let mut redis = Redis::start();
    let dir = TestDir::new();
    let config = replica_config(&dir, &redis, "outage", "200ms");
    let servers: Vec<Gatehouse> = (0..2).map(|_| Gatehouse::start(&config)).collect();
    let refs: Vec<&Gatehouse> = servers.iter().collect();
    let cert = dir.cert_pem.clone();

    // Locked through Redis, then Redis dies mid-flood.
    flood(&refs, &cert, "127.0.0.7", 4).await;
    let verified = failed_verifications(&refs, &cert).await;
    assert_eq!(verified, 5.0);
    redis.kill();
    flood(&refs, &cert, "127.0.0.7", 3).await;
    // The legitimate client never sees a 5xx (a fresh password each time
    // needs a verification, so a lockout reservation, so Redis).
    let legitimate = client_from(&cert, "127.0.0.8");
    for server in &servers {
        for _ in 0..3 {
            let ok = whoami_response(&legitimate, server, "bob", "pässwörd").await;
            assert_eq!(ok.status(), StatusCode::OK, "{}", server.logs());
        }
    }
    // What was locked stays locked: every replica still refuses the address
    // without verifying.
    for server in &servers {
        let locked =
            whoami_response(&client_from(&cert, "127.0.0.7"), server, ALICE.0, ALICE.1).await;
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(failed_verifications(&refs, &cert).await, verified);
    // The metrics say so within a probe interval (200 ms here), and the
    // health check stays 200: the gate still works.
    for server in &servers {
        until_metric(server, &cert, "gatehouse_redis_up", 0.0).await;
        let health = legitimate.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert!(metric(server, &cert, "gatehouse_redis_errors_total").await >= 1.0);
        server.wait_for_log("Redis unreachable", 1, Duration::from_secs(5));
    }

    // Redis returns (empty): shared lockouts resume with no restart.
    redis.restart();
    for server in &servers {
        until_metric(server, &cert, "gatehouse_redis_up", 1.0).await;
        server.wait_for_log("Redis answers again", 1, Duration::from_secs(5));
    }
    let before = failed_verifications(&refs, &cert).await;
    flood(&refs, &cert, "127.0.0.9", 6).await;
    assert_eq!(
        failed_verifications(&refs, &cert).await - before,
        5.0,
        "shared again: max_failures in all, not per replica"
    );
}

#[tokio::test]
async fn a_stalled_redis_holds_no_request_past_the_timeout() {
    let _heavy = crate::common::HEAVY.lock().await;
    let redis = Redis::start();
    let dir = TestDir::new();
    let server = Gatehouse::start(&replica_config(&dir, &redis, "stall", "50ms"));
    let client = client_from(&dir.cert_pem, "127.0.0.10");
    assert_eq!(
        whoami_response(&client, &server, "carol", "p:ss:w0rd")
            .await
            .status(),
        StatusCode::OK
    );
    // Paused: connections are accepted by the kernel, nothing answers.
    redis.signal("STOP");
    for password in ["wrong-1", "wrong-2"] {
        let refused = whoami_response(&client, &server, "carol", password).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    let answered = whoami_response(&client, &server, "bob", "pässwörd").await;
    assert_eq!(answered.status(), StatusCode::OK);
    // Not a speed test: Redis is resumed only now, so every answer above
    // came while it was paused, without waiting for it.
    until_metric(&server, &dir.cert_pem, "gatehouse_redis_up", 0.0).await;
    redis.signal("CONT");
}

/// `[tokens]`, `[oauth]` (the OAuth tests' clients) and `[cluster]`: what
/// replicas behind one load balancer would run.
fn oauth_replica_config(dir: &TestDir, redis: &Redis, prefix: &str) -> std::path::PathBuf {
    let path = crate::oauth_code::config(dir, "60s");
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push('\n');
    text.push_str(&cluster_section(dir, redis, prefix, "1s"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Waits (bounded) until `server` answers `token` with `want`.
async fn until_status(http: &reqwest::Client, server: &Gatehouse, token: &str, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = crate::oauth_code::whoami(http, server, token).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_code_issued_at_one_replica_is_redeemed_at_another_once() {
    use crate::oauth_code::{VERIFIER, desktop_code, http, redeem_form, refresh_desktop, token};
    let redis = Redis::start();
    let dir = TestDir::new();
    let config = oauth_replica_config(&dir, &redis, "oauth");
    let servers: Vec<Gatehouse> = (0..3).map(|_| Gatehouse::start(&config)).collect();
    let http = http(&dir);

    // Issued at replica 1, redeemed at replica 2, refused at replica 3.
    let code = desktop_code(&http, &servers[0]).await;
    let (status, issued) = token(&http, &servers[1], &redeem_form(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    for server in &servers {
        assert_eq!(
            crate::oauth_code::whoami(&http, server, &access).await,
            StatusCode::OK
        );
    }
    let (status, replay) = token(&http, &servers[2], &redeem_form(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(replay["error"], "invalid_grant");
    // The replay revoked what the code bought, at every replica.
    for server in &servers {
        until_status(&http, server, &access, StatusCode::UNAUTHORIZED).await;
    }
    let refused = refresh_desktop(&http, &servers[0], &refresh).await;
    assert_eq!(refused["error"], "invalid_grant", "{refused}");

    // A refresh token rotates once across replicas: reusing the old one at
    // another replica revokes the family everywhere.
    let code = desktop_code(&http, &servers[2]).await;
    let (_, issued) = token(&http, &servers[0], &redeem_form(&code, VERIFIER)).await;
    let first = issued["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh_desktop(&http, &servers[1], &first).await;
    let second = rotated["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    let access = rotated["access_token"].as_str().unwrap().to_owned();
    let reused = refresh_desktop(&http, &servers[2], &first).await;
    assert_eq!(reused["error"], "invalid_grant", "{reused}");
    let after = refresh_desktop(&http, &servers[0], &second).await;
    assert_eq!(after["error"], "invalid_grant", "{after}");
    for server in &servers {
        until_status(&http, server, &access, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn a_consent_form_shown_by_one_replica_is_accepted_once_by_any() {
    use crate::oauth_code::{FormBody, VERIFIER, authorize, challenge, form_fields, http};
    let redis = Redis::start();
    let dir = TestDir::new();
    let config = oauth_replica_config(&dir, &redis, "consent");
    let servers: Vec<Gatehouse> = (0..3).map(|_| Gatehouse::start(&config)).collect();
    let http = http(&dir);
    let challenge = challenge(VERIFIER);
    let query = [
        ("client_id", "desktop"),
        ("redirect_uri", "http://127.0.0.1:9/callback"),
        ("response_type", "code"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    // The replicas read the shared form key within a sync interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = authorize(&http, &servers[0], &query, Some(ALICE)).await;
        assert_eq!(page.status(), StatusCode::OK);
        let mut fields = form_fields(&page.text().await.unwrap());
        fields.push(("decision".into(), "approve".into()));
        let post = |server: &Gatehouse| {
            http.post(server.url("/oauth/authorize"))
                .basic_auth(ALICE.0, Some(ALICE.1))
                .form_body(&fields)
                .send()
        };
        let approved = post(&servers[1]).await.unwrap();
        if approved.status() == StatusCode::FORBIDDEN {
            assert!(Instant::now() < deadline, "the form key is not shared");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(approved.status(), StatusCode::SEE_OTHER);
        // Used once: the same form at a third replica is refused.
        assert_eq!(
            post(&servers[2]).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            post(&servers[1]).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        break;
    }
}

#[tokio::test]
async fn without_redis_a_code_is_refused_with_503_not_risked() {
    use crate::oauth_code::{VERIFIER, desktop_code, http, redeem_form, token};
    let mut redis = Redis::start();
    let dir = TestDir::new();
    let config = oauth_replica_config(&dir, &redis, "oauth-down");
    let server = Gatehouse::start(&config);
    let http = http(&dir);
    let code = desktop_code(&http, &server).await;
    redis.kill();
    let response = http
        .post(server.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(redeem_form(&code, VERIFIER))
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // Redis back (empty: the code died with it): the endpoint answers again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
        if status == StatusCode::BAD_REQUEST {
            assert_eq!(body["error"], "invalid_grant");
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "Redis not found again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = desktop_code(&http, &server).await;
    let (status, _) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK);
}

/// `deploy/replicas/compose.yaml` as written: its volumes lay out what
/// `config/examples/replicas.toml` names, and two replicas started like the
/// image on that config (Redis's host name pointed at the test's Redis)
/// share one lockout. There is no Docker engine here, so compose itself
/// does not run.
#[tokio::test]
async fn the_compose_example_runs_two_replicas_on_one_redis() {
    let _heavy = crate::common::HEAVY.lock().await;
    require_tool("python3", "--version");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(root.join("deploy/replicas/compose.yaml"))
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let compose: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let services = compose["services"].as_object().unwrap();
    assert!(services.contains_key("redis"));
    let replicas: Vec<&serde_json::Value> = services
        .iter()
        .filter(|(name, _)| name.starts_with("gatehouse"))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(replicas.len(), 2);
    for replica in &replicas {
        let config = replica["environment"]["GATEHOUSE_CONFIG"].as_str().unwrap();
        let volumes: Vec<&str> = replica["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let dir = config.rsplit_once('/').unwrap().0;
        for (source, target) in [
            ("config/examples/replicas.toml:", config.to_owned()),
            ("/tls:", format!("{dir}/tls:ro")),
            ("/users:", format!("{dir}/users:ro")),
            ("/cluster:", format!("{dir}/cluster:ro")),
        ] {
            assert!(
                volumes
                    .iter()
                    .any(|v| v.contains(source) && v.contains(&target)),
                "{source} → {target} in {volumes:?}"
            );
        }
    }

    let redis = Redis::start();
    let dir = TestDir::new();
    let etc = dir.path("etc/gatehouse/config");
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    std::fs::create_dir_all(etc.join("users")).unwrap();
    std::fs::create_dir_all(etc.join("cluster")).unwrap();
    std::fs::write(
        etc.join("cluster/secret"),
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==\n",
    )
    .unwrap();
    std::fs::copy(dir.path("cert.pem"), etc.join("tls/tls.crt")).unwrap();
    std::fs::copy(dir.path("key.pem"), etc.join("tls/tls.key")).unwrap();
    std::fs::write(
        etc.join("users/users"),
        format!("alice:{}\n", crate::common::cheap_hash("secret")),
    )
    .unwrap();
    let text = std::fs::read_to_string(root.join("config/examples/replicas.toml"))
        .unwrap()
        .replace("0.0.0.0:8443", "127.0.0.1:0")
        .replace("redis://redis:6379/0", &redis.url());
    std::fs::write(etc.join("gatehouse.toml"), text).unwrap();
    let servers: Vec<Gatehouse> = (0..2)
        .map(|_| {
            let mut command = Command::new(crate::common::binary());
            command
                .env("GATEHOUSE_CONFIG", etc.join("gatehouse.toml"))
                .current_dir(std::env::temp_dir());
            Gatehouse::spawn(command)
        })
        .collect();
    let refs: Vec<&Gatehouse> = servers.iter().collect();
    let http = client_from(&dir.cert_pem, "127.0.0.12");
    for server in &servers {
        let ok = whoami_response(&http, server, "alice", "secret").await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    // max_failures = 5 in the example: five wrong guesses over the two,
    // and the address is locked at both.
    flood(&refs, &dir.cert_pem, "127.0.0.13", 5).await;
    for server in &servers {
        let locked = whoami_response(
            &client_from(&dir.cert_pem, "127.0.0.13"),
            server,
            "alice",
            "secret",
        )
        .await;
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}

impl Redis {
    /// Runs `redis-cli` against this server; its output.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }
}

/// What Redis holds names no user, and whoever writes to it cannot bring a
/// rotated refresh token back: the current one is stored keyed by the
/// replicas' secret, not as a digest anyone holding a token can compute.
#[tokio::test]
async fn redis_holds_no_names_and_a_writer_cannot_revive_a_refresh_token() {
    use crate::oauth_code::{VERIFIER, desktop_code, http, redeem_form, refresh_desktop, token};
    let redis = Redis::start();
    let dir = TestDir::new();
    let config = oauth_replica_config(&dir, &redis, "writer");
    let server = Gatehouse::start(&config);
    let http = http(&dir);
    let code = desktop_code(&http, &server).await;
    let (_, issued) = token(&http, &server, &redeem_form(&code, VERIFIER)).await;
    let first = issued["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh_desktop(&http, &server, &first).await;
    let second = rotated["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();

    // Every key and every value: no username, no token.
    let keys = redis.cli(&["--scan", "--pattern", "gatehouse:*"]);
    let mut everything = keys.clone();
    for key in keys.lines() {
        let kind = redis.cli(&["TYPE", key]);
        let dump = match kind.trim() {
            "hash" => redis.cli(&["HGETALL", key]),
            "zset" => redis.cli(&["ZRANGE", key, "0", "-1"]),
            "string" => redis.cli(&["GET", key]),
            other => panic!("unexpected {other} at {key}"),
        };
        everything.push_str(&dump);
    }
    for secret in ["alice", first.as_str(), second.as_str(), code.as_str()] {
        assert!(
            !everything.contains(secret),
            "{secret} in Redis:\n{everything}"
        );
    }

    // A writer sets the family's current token back to the first one's
    // SHA-256 (what a store of plain digests would hold): refused.
    let family = keys
        .lines()
        .find(|k| k.contains(":oauth:fam:"))
        .expect("a family key")
        .to_owned();
    let sha = {
        let digest = ring::digest::digest(&ring::digest::SHA256, first.as_bytes());
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    redis.cli(&["HSET", &family, "cur", &sha]);
    let revived = refresh_desktop(&http, &server, &first).await;
    assert_eq!(revived["error"], "invalid_grant", "{revived}");
}

/// A Redis that wants a password: gatehouse reads it from `password_file`
/// and shares state; with a wrong one it decides alone, says so, and never
/// writes either password to its log.
#[tokio::test]
async fn a_redis_password_comes_from_a_file_and_stays_out_of_the_logs() {
    let _heavy = crate::common::HEAVY.lock().await;
    let redis = Redis::start_with(&["--requirepass", "hunter2-redis-pw"]);
    let dir = TestDir::new();
    dir.write("redis-password", "hunter2-redis-pw\n");
    let section = cluster_section(&dir, &redis, "password", "1s").replace(
        "[cluster]\n",
        "[cluster]\npassword_file = \"redis-password\"\n",
    );
    let config = dir.config(&format!(
        "[metrics]\npath = \"/metrics\"\n[lockout]\nmax_failures = 5\n{section}"
    ));
    let servers: Vec<Gatehouse> = (0..2).map(|_| Gatehouse::start(&config)).collect();
    let refs: Vec<&Gatehouse> = servers.iter().collect();
    flood(&refs, &dir.cert_pem, "127.0.0.14", 5).await;
    assert_eq!(failed_verifications(&refs, &dir.cert_pem).await, 5.0);
    assert!(
        redis
            .cli(&["-a", "hunter2-redis-pw", "--no-auth-warning", "KEYS", "*"])
            .contains(":lk:")
    );

    dir.write("redis-password", "not-the-password\n");
    let wrong = Gatehouse::start(&config);
    until_metric(&wrong, &dir.cert_pem, "gatehouse_redis_up", 0.0).await;
    let ok = whoami_response(
        &client_from(&dir.cert_pem, "127.0.0.15"),
        &wrong,
        ALICE.0,
        ALICE.1,
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK, "the gate works without Redis");
    for server in servers.iter().chain([&wrong]) {
        let logs = server.logs();
        assert!(
            !logs.contains("hunter2-redis-pw") && !logs.contains("not-the-password"),
            "{logs}"
        );
    }
}

/// `rediss://` to a real `redis-server` speaking TLS, its certificate
/// signed by a CA that only `[cluster] ca` names.
#[tokio::test]
async fn rediss_with_a_private_ca() {
    let dir = TestDir::new();
    // The test directory's self-signed certificate (for 127.0.0.1) is the
    // Redis server's, and its own CA.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let cert = dir.path("cert.pem");
    let key = dir.path("key.pem");
    let redis = Redis::start_with(&[
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        cert.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--bind",
        "127.0.0.1",
    ]);
    let section = cluster_section(&dir, &redis, "tls", "1s")
        .replace(&redis.url(), &format!("rediss://127.0.0.1:{port}/0"))
        .replace("[cluster]\n", "[cluster]\nca = \"cert.pem\"\n");
    let config = dir.config(&format!(
        "[metrics]\npath = \"/metrics\"\n[lockout]\nmax_failures = 5\n{section}"
    ));
    let server = Gatehouse::start(&config);
    flood(&[&server], &dir.cert_pem, "127.0.0.16", 7).await;
    // The lock records went over TLS into this Redis.
    let keys = redis.cli(&["KEYS", "*"]);
    assert!(keys.contains("gatehouse:{tls}:lk:ip:127.0.0.16"), "{keys}");
    assert_eq!(
        metric(&server, &dir.cert_pem, "gatehouse_redis_up").await,
        1.0
    );
    assert_eq!(
        metric(&server, &dir.cert_pem, "gatehouse_redis_errors_total").await,
        0.0
    );

    // Without the CA the certificate is not trusted: Redis is down to it.
    let untrusted = dir.config(&format!(
        "[metrics]\npath = \"/metrics\"\n{}",
        section.replace("ca = \"cert.pem\"\n", "")
    ));
    let stranger = Gatehouse::start(&untrusted);
    until_metric(&stranger, &dir.cert_pem, "gatehouse_redis_up", 0.0).await;
}
