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
    mount_in(dir, config_text, "")
}

/// Like [`mount`], with the config in a subdirectory of /etc/gatehouse
/// (the Kubernetes manifest mounts the ConfigMap at /etc/gatehouse/config).
fn mount_in(dir: &TestDir, config_text: &str, config_dir: &str) -> PathBuf {
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
    std::fs::create_dir_all(etc.join(config_dir)).unwrap();
    let path = etc.join(config_dir).join("gatehouse.toml");
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
    let config = mount_in(&dir, &embedded, "config");
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

/// The manifest's documents as JSON, parsed by a real YAML parser (Python's
/// PyYAML; .ci/run installs it).
fn manifest_documents() -> Vec<serde_json::Value> {
    crate::common::require_tool("python3", "--version");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/sidecar.yaml");
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1]))]))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "parsing the manifest needs PyYAML: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn kubernetes_manifest_can_start_and_reload() {
    let documents = manifest_documents();
    let pod = documents
        .iter()
        .find(|d| d["kind"] == "Pod")
        .expect("a Pod");
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532, "numeric, as the image's USER");
    let gatehouse = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gatehouse")
        .expect("the gatehouse container");
    assert_eq!(
        gatehouse["imagePullPolicy"], "IfNotPresent",
        "a local image must not be pulled"
    );
    let probe = &gatehouse["livenessProbe"];
    assert!(
        probe["timeoutSeconds"].as_u64().unwrap_or(1) > 3,
        "the probe must outlast the healthcheck's own --timeout 3s"
    );
    for kind in ["requests", "limits"] {
        let resources = &gatehouse["resources"][kind];
        assert!(
            resources["cpu"].is_string() && resources["memory"].is_string(),
            "{kind}"
        );
    }
    let mounts = gatehouse["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.iter().all(|m| m.get("subPath").is_none()),
        "subPath mounts never see ConfigMap or Secret updates"
    );
    let config_env = gatehouse["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "GATEHOUSE_CONFIG")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let config_mount = mounts.iter().find(|m| m["name"] == "config").unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(config_env, format!("{config_mount}/gatehouse.toml"));
}

#[test]
fn the_image_runs_as_a_numeric_user() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let (uid, gid) = user.trim().split_once(':').unwrap_or((user.trim(), "0"));
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0) && gid.parse::<u32>().is_ok(),
        "USER {user}: Kubernetes' runAsNonRoot needs a numeric, non-zero uid"
    );
}

/// The Dockerfile's dependency stage (everything up to `cargo fetch`) gives
/// Cargo a manifest it can load: every bench, example and test target that
/// Cargo.toml declares is there. Checked without Docker by copying what the
/// stage copies into an empty directory and running its `RUN` line offline
/// (every crate is in the local registry cache once this crate built).
#[test]
fn dockerfile_dependency_stage_loads_the_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // Instructions with their continuation lines joined.
    let instructions = dockerfile.replace("\\\n", " ");
    let stage: Vec<&str> = instructions
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("FROM"))
        .skip(1)
        .collect();
    let work = TestDir::new();
    let context = work.path("context");
    std::fs::create_dir_all(&context).unwrap();
    let mut ran_fetch = false;
    for line in stage {
        if let Some(args) = line.strip_prefix("COPY ") {
            let parts: Vec<&str> = args.split_whitespace().collect();
            let (sources, dest) = parts.split_at(parts.len() - 1);
            for source in sources {
                let status = Command::new("cp")
                    .arg("-r")
                    .arg(root.join(source))
                    .arg(context.join(dest[0]))
                    .status()
                    .unwrap();
                assert!(status.success(), "COPY {source}");
            }
        } else if let Some(command) = line.strip_prefix("RUN ") {
            assert!(
                command.contains("cargo fetch --locked"),
                "first RUN is the fetch: {command}"
            );
            let command = command.replace("cargo fetch --locked", "cargo fetch --locked --offline");
            let output = Command::new("bash")
                .args(["-c", &command])
                .current_dir(&context)
                .env("CARGO_TARGET_DIR", work.path("target"))
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "the Dockerfile's dependency stage fails: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            ran_fetch = true;
            break;
        }
    }
    assert!(ran_fetch, "no RUN line with cargo fetch in the build stage");
}
