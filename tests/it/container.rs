//! What the container image relies on, without Docker (there is no Docker
//! engine here): the binary started with no arguments and only
//! `GATEHOUSE_CONFIG`, on each shipped example config laid out as the image
//! mounts it (/etc/gatehouse/{gatehouse.toml,tls/,users/}).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Gatehouse, TestDir, binary, cheap_hash, client, upstream};
use reqwest::StatusCode;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(name);
    std::fs::read_to_string(path).expect("example config")
}

/// Lays out `config_text` with TLS and a users file the way the image
/// mounts them, and returns the config path.
fn mount(dir: &TestDir, config_text: &str) -> PathBuf {
    let etc = dir.path("etc/gatehouse");
    std::fs::create_dir_all(etc.join("tls")).unwrap();
    std::fs::create_dir_all(etc.join("users")).unwrap();
    std::fs::copy(dir.path("cert.pem"), etc.join("tls/tls.crt")).unwrap();
    std::fs::copy(dir.path("key.pem"), etc.join("tls/tls.key")).unwrap();
    std::fs::write(
        etc.join("users/users"),
        format!("alice:{}\n", cheap_hash("secret")),
    )
    .unwrap();
    let text = config_text.replace("0.0.0.0:8443", "127.0.0.1:0");
    let path = etc.join("gatehouse.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `gatehouse` with no arguments: the image's CMD is `serve`, and the config
/// comes from the environment only. Started from another directory, so no
/// relative path can resolve by luck.
fn start_like_the_image(config: &Path) -> Gatehouse {
    let mut command = Command::new(binary());
    command
        .env("GATEHOUSE_CONFIG", config)
        .current_dir(std::env::temp_dir());
    Gatehouse::spawn(command)
}

#[tokio::test]
async fn production_example_serves_with_only_the_mounted_config() {
    let dir = TestDir::new();
    let server = start_like_the_image(&mount(&dir, &example("production.toml")));
    let http = client(&dir.cert_pem);
    let me = http
        .get(server.url("/api/whoami"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn sidecar_example_forwards_to_the_app_on_loopback() {
    let app = upstream::start().await;
    let dir = TestDir::new();
    let text = example("sidecar.toml").replace("http://127.0.0.1:8080", &format!("http://{app}"));
    let server = start_like_the_image(&mount(&dir, &text));
    let seen: serde_json::Value = client(&dir.cert_pem)
        .get(server.url("/dashboard"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["path"], "/dashboard");
    assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
}

#[tokio::test]
async fn static_site_example_serves_the_directory() {
    let dir = TestDir::new();
    std::fs::create_dir_all(dir.path("srv/site")).unwrap();
    dir.write("srv/site/index.html", "docs home\n");
    let root = dir.path("srv/site");
    let text = example("static-site.toml").replace("/srv/site", root.to_str().unwrap());
    let server = start_like_the_image(&mount(&dir, &text));
    let page = client(&dir.cert_pem)
        .get(server.url("/"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.text().await.unwrap(), "docs home\n");
}

#[test]
fn kubernetes_configmap_config_is_valid() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sidecar.yaml"),
    )
    .unwrap();
    let embedded: String = manifest
        .split("gatehouse.toml: |\n")
        .nth(1)
        .and_then(|rest| rest.split("\n---").next())
        .expect("the ConfigMap holds gatehouse.toml")
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = TestDir::new();
    let config = mount(&dir, &embedded);
    let output = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
