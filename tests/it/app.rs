//! The application in-process: built from a config, bound to a listener
//! the test made (port 0), served until the test says stop. No binary, no
//! scraping of logs for the address.

use crate::common::{ALICE, TestDir, client};
use gatehouse::app::Application;
use gatehouse::config::Config;
use gatehouse::logging::LogLevel;

#[tokio::test]
async fn builds_binds_serves_and_stops_in_process() {
    let dir = TestDir::new();
    let config = Config::load(&dir.config("[metrics]\nlisten = \"127.0.0.1:0\"\n")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build_on(config, LogLevel::fixed(), Some(listener))
        .await
        .unwrap();
    let addr = app.local_addr();
    let metrics = app.metrics_addr().expect("a metrics listener");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));

    let http = client(&dir.cert_pem);
    let url = |path: &str| format!("https://localhost:{}{path}", addr.port());
    let healthz = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let whoami = http
        .get(url("/api/whoami"))
        .basic_auth(ALICE.0, Some(ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.text().await.unwrap(), "{\"user\":\"alice\"}");
    let text = http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("gatehouse_requests_total{outcome=\"ok\"} 2"),
        "{text}"
    );

    stop.send(()).unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("run returns after shutdown")
        .unwrap();
    assert!(result.is_ok());
    // The listeners are closed: nothing answers any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(metrics).await.is_err());
}
