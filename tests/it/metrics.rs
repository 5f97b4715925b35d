//! The Prometheus endpoint: counters move as requests are made, on the main
//! listener behind auth or on a separate listener.

use std::time::Duration;

use crate::common::{Gatehouse, TestDir, client, client_from};
use reqwest::StatusCode;

/// The value of one sample line (`name{labels} value`), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |v| v.trim().parse().unwrap_or(f64::NAN))
}

#[tokio::test]
async fn metrics_behind_auth_count_outcomes_verifications_and_lockouts() {
    let dir = TestDir::new();
    let server = Gatehouse::start(
        &dir.config("[metrics]\npath = \"/metrics\"\n[lockout]\nmax_failures = 2\n"),
    );
    let http = client(&dir.cert_pem);
    let anonymous = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "metrics are not public"
    );

    let scrape = || async {
        let response = client_from(&dir.cert_pem, "127.0.0.30")
            .get(server.url("/metrics"))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        response.text().await.unwrap()
    };
    let before = scrape().await;
    assert!(before.ends_with("# EOF\n"), "{before}");

    let attacker = client_from(&dir.cert_pem, "127.0.0.31");
    for _ in 0..3 {
        attacker
            .get(server.url("/api/whoami"))
            .basic_auth("bob", Some("wrong"))
            .send()
            .await
            .unwrap();
    }
    for _ in 0..2 {
        http.get(server.url("/api/whoami"))
            .basic_auth("bob", Some("pässwörd"))
            .send()
            .await
            .unwrap();
    }
    let after = scrape().await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        delta("gatehouse_requests_total{outcome=\"unauthorized\"}"),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta("gatehouse_requests_total{outcome=\"rate_limited\"}"),
        1.0,
        "{after}"
    );
    assert!(
        delta("gatehouse_requests_total{outcome=\"ok\"}") >= 2.0,
        "{after}"
    );
    assert_eq!(
        delta("gatehouse_argon2_failed_verifications_total"),
        2.0,
        "{after}"
    );
    assert_eq!(delta("gatehouse_lockouts_total"), 1.0, "{after}");
    assert_eq!(
        delta("gatehouse_cache_hits_total"),
        2.0,
        "bob once, and the scrape's own login: {after}"
    );
    assert!(
        sample(&after, "gatehouse_argon2_verification_seconds_count") >= 4.0,
        "{after}"
    );
    assert!(
        sample(&after, "gatehouse_open_connections") >= 1.0,
        "{after}"
    );
}

#[tokio::test]
async fn a_separate_metrics_listener_needs_no_auth_and_counts_reloads() {
    let dir = TestDir::new();
    let config = dir.config("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let server = Gatehouse::start(&config);
    let logs = server.logs();
    let url = logs
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in: {logs}"))
        .trim_end_matches('"')
        .to_owned();
    let plain = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::common::rustls_client_config(
            &dir.cert_pem,
            &[&rustls::version::TLS13],
        ))
        .build()
        .unwrap();
    let scrape = || async { plain.get(&url).send().await.unwrap().text().await.unwrap() };

    let good = std::fs::read_to_string(&config).unwrap();
    server.signal("HUP");
    server.wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    std::fs::write(&config, "[broken").unwrap();
    server.signal("HUP");
    server.wait_for_log("reload rejected", 1, Duration::from_secs(10));
    std::fs::write(&config, good).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let text = scrape().await;
    assert!(
        sample(&text, "gatehouse_config_reloads_total{result=\"ok\"}") >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "gatehouse_config_reloads_total{result=\"failed\"}") >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn upstream_errors_are_counted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(&format!(
        "[upstream]\nurl = \"http://{closed}\"\n[metrics]\npath = \"/metrics\"\n"
    )));
    let http = client(&dir.cert_pem);
    let failed = http
        .get(server.url("/app"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
    let text = http
        .get(server.url("/metrics"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(
            &text,
            "gatehouse_requests_total{outcome=\"upstream_error\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gatehouse_upstream_duration_seconds_count{result=\"error\"}"
        ),
        1.0,
        "{text}"
    );
}

/// What operators expect to find: durations by outcome and status class,
/// the upstream's latency, 404 and 405 counted as client errors (not ok),
/// process_* metrics and the build's version.
#[tokio::test]
async fn durations_status_classes_process_and_build_info() {
    let upstream = crate::common::upstream::start().await;
    let dir = TestDir::new();
    let server = Gatehouse::start(&dir.config(&format!(
        "[upstream]\nurl = \"http://{upstream}\"\n[metrics]\npath = \"/metrics\"\n"
    )));
    let http = client(&dir.cert_pem);
    let get = |path: &'static str| {
        http.get(server.url(path))
            .basic_auth("alice", Some("secret"))
            .send()
    };
    assert_eq!(get("/fine").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        get("/missing").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let trace = http
        .request(reqwest::Method::TRACE, server.url("/x"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), StatusCode::METHOD_NOT_ALLOWED);
    let anonymous = http.get(server.url("/fine")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    let count = |labels: &str| {
        sample(
            &text,
            &format!("gatehouse_request_duration_seconds_count{{{labels}}}"),
        )
    };
    assert_eq!(count("outcome=\"ok\",status_class=\"2xx\""), 1.0, "{text}");
    assert_eq!(
        count("outcome=\"client_error\",status_class=\"4xx\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("outcome=\"bad_request\",status_class=\"4xx\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("outcome=\"unauthorized\",status_class=\"4xx\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "gatehouse_requests_total{outcome=\"ok\"}"),
        1.0,
        "a 404 is not ok: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "gatehouse_upstream_duration_seconds_count{result=\"2xx\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gatehouse_upstream_duration_seconds_count{result=\"4xx\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "gatehouse_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0,
        "{text}"
    );
    let rss = sample(&text, "process_resident_memory_bytes");
    let peak = crate::common::peak_rss_mib(server.pid()) * 1024.0 * 1024.0;
    assert!(
        rss > 1e6 && rss <= peak * 1.01,
        "rss {rss} vs peak {peak}: {text}"
    );
    assert!(sample(&text, "process_open_fds") >= 3.0, "{text}");
    assert!(sample(&text, "process_max_fds") >= 1024.0, "{text}");
    // Present and sane; it may still read 0 (the kernel counts 10 ms ticks).
    assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    let cpu = sample(&text, "process_cpu_seconds_total");
    assert!((0.0..1000.0).contains(&cpu), "{text}");
    let started = sample(&text, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - started).abs() < 120.0,
        "started {started}, now {now}"
    );
}

/// `gatehouse_authenticated_requests_total` counts each request let in once,
/// whether the access log is on (the response then names the user for it)
/// or off (the layer counts without putting the user in the response), for
/// the layer's own answers (a forward-auth decision) and for a request an
/// access rule refuses after authenticating it (403) too; the access log
/// names the user when it is on.
#[tokio::test]
async fn authenticated_requests_are_counted_once_with_or_without_the_access_log() {
    for log in ["info", "info,gatehouse::access=off"] {
        let dir = TestDir::new();
        let config = dir.config(
            "[metrics]\npath = \"/metrics\"\n[forward_auth]\npath = \"/authz\"\n\
             [[access]]\npath = \"/api/stats\"\nallow = [\"user:bob\"]\n",
        );
        let server = Gatehouse::start_with_env(&config, &[("RUST_LOG", log)]);
        let http = client(&dir.cert_pem);
        for (path, status) in [
            ("/api/whoami", StatusCode::OK),
            ("/api/whoami", StatusCode::OK),
            ("/api/whoami", StatusCode::OK),
            ("/authz", StatusCode::OK),
            ("/api/stats", StatusCode::FORBIDDEN),
        ] {
            let response = http
                .get(server.url(path))
                .header("X-Forwarded-Uri", "/app")
                .basic_auth("alice", Some("secret"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{log} {path}");
        }
        // The scrape is let in, and counted, before the text is made.
        let basic = crate::common::metric(
            &server,
            &dir.cert_pem,
            "gatehouse_authenticated_requests_total{method=\"basic\"}",
        )
        .await;
        assert_eq!(basic, 6.0, "RUST_LOG={log}");
        if log == "info" {
            server.wait_for_log(
                "path=\"/api/whoami\" status=200 user=\"alice\"",
                1,
                Duration::from_secs(5),
            );
        }
    }
}
