//! Graceful shutdown under load: SIGTERM while clients keep sending; every
//! request that reached the server is answered (no reset), later ones are
//! refused at connect, and the process exits 0 within the grace period.

use std::time::{Duration, Instant};

use crate::common::{Gatehouse, TestDir, client};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_and_exits_zero() {
    let _heavy = crate::common::HEAVY.lock().await;
    let dir = TestDir::new();
    // No cache and a hash of some milliseconds: requests are in flight when
    // the signal lands.
    let params = argon2::Params::new(8 * 1024, 2, 1, None).unwrap();
    let hash = gatehouse::credentials::hash_password(
        &gatehouse::secret::Password::new("load pw".into()),
        params,
    )
    .unwrap();
    let server = Gatehouse::start(&dir.config(&format!(
        "loader = \"{hash}\"\n[cache]\nenabled = false\n[auth]\nverify_queue = 10000\n[limits]\nshutdown_grace = \"10s\"\n"
    )));
    let url = server.url("/api/whoami");
    let start = Instant::now();

    let workers: Vec<_> = (0..8)
        .map(|_| {
            let http = client(&dir.cert_pem);
            let url = url.clone();
            tokio::spawn(async move {
                let (mut ok, mut straddling, mut refused, mut broken) = (0, 0, 0, Vec::new());
                while start.elapsed() < Duration::from_secs(6) {
                    let sent = start.elapsed();
                    match http
                        .get(&url)
                        .basic_auth("loader", Some("load pw"))
                        .send()
                        .await
                    {
                        Ok(response) if response.status() == StatusCode::OK => {
                            ok += 1;
                            if sent < Duration::from_millis(700)
                                && start.elapsed() > Duration::from_millis(700)
                            {
                                straddling += 1;
                            }
                        }
                        Ok(response) => broken.push(format!("status {}", response.status())),
                        // The listener is closed: a clean refusal, not a reset.
                        Err(error) if error.is_connect() => {
                            refused += 1;
                            break;
                        }
                        Err(error) => broken.push(format!("{error:?}")),
                    }
                }
                (ok, straddling, refused, broken)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(15)))
        .await
        .unwrap()
        .expect("gatehouse exits within its grace period");
    assert!(status.success(), "exit status {status:?}");

    let (mut ok, mut straddling, mut refused, mut broken) = (0, 0, 0, Vec::new());
    for worker in workers {
        let (o, s, r, b) = worker.await.unwrap();
        ok += o;
        straddling += s;
        refused += r;
        broken.extend(b);
    }
    println!(
        "shutdown under load: {ok} answered (of which {straddling} in flight at SIGTERM), {refused} refused at connect, {} broken",
        broken.len()
    );
    assert!(broken.is_empty(), "clients saw broken requests: {broken:?}");
    assert!(ok > 8, "the load ran");
    assert_eq!(
        refused, 8,
        "every client ends up refused at connect once the server is gone"
    );
}
