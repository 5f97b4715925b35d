use std::path::Path;

use std::time::Duration;

use super::*;
use crate::credentials::hash_password;
use crate::limit::Rate;
use crate::secret::Password;

fn hash() -> String {
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    hash_password(&Password::new("pw".into()), params).unwrap()
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("/etc/gatehouse/gatehouse.toml"), text)
}

fn minimal(extra: &str) -> String {
    format!(
        "[tls]\nself_signed = true\n[users]\nalice = \"{}\"\n{extra}",
        hash()
    )
}

fn error(text: &str) -> String {
    load(text)
        .expect_err("config should be refused")
        .to_string()
}

#[test]
fn minimal_config_has_sensible_defaults() {
    let config = load(&minimal("")).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8443");
    assert_eq!(config.auth.realm.as_str(), "gatehouse");
    assert_eq!(
        config.auth.public.patterns().collect::<Vec<_>>(),
        vec!["/healthz"]
    );
    assert_eq!(config.auth.users.len(), 1);
    assert!(config.auth.max_concurrent_verifications >= 1);
    assert_eq!(config.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(
        config.tls,
        TlsSettings::SelfSigned {
            cert_out: "/etc/gatehouse/self-signed-cert.pem".into()
        }
    );
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let config = load(&format!(
        "[tls]\ncert = \"tls/c.pem\"\nkey = \"/abs/k.pem\"\n[users]\na = \"{}\"",
        hash()
    ))
    .unwrap();
    assert_eq!(
        config.tls,
        TlsSettings::Files {
            cert: "/etc/gatehouse/tls/c.pem".into(),
            key: "/abs/k.pem".into()
        }
    );
}

#[test]
fn trusted_proxies_and_durations_parse() {
    let config = load(&minimal(
        "[server]\nlisten = \"[::1]:0\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\"]\n[limits]\nheader_read_timeout = \"1m 30s\"\n",
    ))
    .unwrap();
    assert_eq!(config.server.trusted_proxies.len(), 2);
    assert_eq!(config.limits.header_read_timeout, Duration::from_secs(90));
}

#[test]
fn errors_name_the_file_the_key_and_the_problem() {
    let file = "/etc/gatehouse/gatehouse.toml";
    let cases: Vec<(String, &str)> = vec![
        (
            minimal("[server]\nlisten = \"localhost\"\n"),
            "[server] listen: `localhost` is not an address:port",
        ),
        (
            minimal("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"),
            "[server] trusted_proxies: `10.0.0.0/33`",
        ),
        (
            minimal("[server]\nlisen = \"127.0.0.1:1\"\n"),
            "[server] lisen: unknown field `lisen`",
        ),
        (minimal("[tlss]\n"), "unknown field `tlss`"),
        (
            minimal("[auth]\nrealm = \"a\\\"b\"\n"),
            "[auth] realm: must be non-empty",
        ),
        (
            minimal("[auth]\npublic = [\"healthz\"]\n"),
            "[auth] public: `healthz` must be a canonical path starting with /",
        ),
        (
            minimal("[auth]\npublic = [\"/a/*/b\"]\n"),
            "[auth] public: `/a/*/b`: `*` may only end a pattern",
        ),
        (
            minimal("[auth]\npublic = [\"/static/../admin/*\"]\n"),
            "[auth] public: `/static/../admin/*` must be a canonical path",
        ),
        (
            minimal("[limits]\nheader_read_timeout = \"soon\"\n"),
            "[limits] header_read_timeout: `soon` is not a duration",
        ),
        (
            minimal("[auth]\nmax_concurrent_verifications = 0\n"),
            "max_concurrent_verifications: must be at least 1",
        ),
        (
            format!(
                "[tls]\nself_signed = true\n[users]\n\"a:b\" = \"{}\"\n",
                hash()
            ),
            "[users] \"a:b\": username \"a:b\" contains a colon",
        ),
        (
            format!(
                "[tls]\nself_signed = true\n[users]\n\"\" = \"{}\"\n",
                hash()
            ),
            "username is empty",
        ),
        (
            "[tls]\nself_signed = true\n[users]\nalice = \"plaintext\"\n".into(),
            "[users] \"alice\": looks like a plaintext password, not a hash",
        ),
        (
            "[tls]\nself_signed = true\n[users]\nalice = 42\n".into(),
            "line 4, [users] alice: invalid type",
        ),
        (
            format!(
                "[tls]\nself_signed = true\n[users]\na = \"{0}\"\na = \"{0}\"\n",
                hash()
            ),
            "duplicate key",
        ),
        (
            "[tls]\nself_signed = true\n".into(),
            "[users]: no users configured",
        ),
        (
            format!("[users]\na = \"{}\"\n", hash()),
            "[tls]: set cert and key",
        ),
        (
            format!("[tls]\ncert = \"c.pem\"\n[users]\na = \"{}\"\n", hash()),
            "[tls] key: missing",
        ),
        (
            format!(
                "[tls]\nenabled = false\nself_signed = true\n[users]\na = \"{}\"\n",
                hash()
            ),
            "[tls] enabled: is false, but",
        ),
        (
            minimal("[auth]\nusers_file = \"missing-users\"\n"),
            "[auth] users_file: cannot read /etc/gatehouse/missing-users",
        ),
    ];
    for (text, want) in cases {
        let message = error(&text);
        assert!(message.starts_with(file), "{message}");
        assert!(message.contains(want), "expected {want:?} in {message:?}");
        assert!(!message.contains("$argon2"), "a hash leaked: {message}");
        assert!(!message.contains('\n'), "one line: {message:?}");
    }
}

#[test]
fn users_file_errors_name_the_line_and_user() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let config = dir.path().join("gatehouse.toml");
    let text = format!(
        "[tls]\nself_signed = true\n[auth]\nusers_file = \"users\"\n[users]\nalice = \"{}\"\n",
        hash()
    );
    let cases = [
        (
            format!("bob:{}\nbob:{}\n", hash(), hash()),
            "line 2, user \"bob\": duplicate user: already defined in line 1",
        ),
        (
            format!("alice:{}\n", hash()),
            "line 1, user \"alice\": duplicate user: already defined in [users]",
        ),
        (
            "# comment\n\nnocolon\n".to_owned(),
            "line 3: expected `username:$argon2id$...`",
        ),
        (
            "bob:$2y$05$abcdefghijklmnopqrstuv\n".to_owned(),
            "line 1, user \"bob\": a malformed bcrypt hash",
        ),
        (
            format!(":{}\n", hash()),
            "line 1, user \"\": username is empty",
        ),
    ];
    for (content, want) in cases {
        std::fs::write(&users, content).unwrap();
        let message = Config::from_toml(&config, &text).unwrap_err().to_string();
        assert!(
            message.starts_with(&users.display().to_string()),
            "{message}"
        );
        assert!(message.contains(want), "expected {want:?} in {message:?}");
    }
    std::fs::write(&users, format!("# ok\nbob:{}\n", hash())).unwrap();
    assert_eq!(
        Config::from_toml(&config, &text).unwrap().auth.users.len(),
        2
    );
}

#[test]
fn rate_limits_and_lockouts_have_defaults_and_can_be_turned_off() {
    let config = load(&minimal("")).unwrap();
    assert_eq!(config.rate_limit.per_ip, Some(Rate::new(20, 40)));
    // A quota, not a defence: off unless asked for.
    assert_eq!(config.rate_limit.per_user, None);
    assert!(!config.rate_limit.count_verified);
    assert_eq!(config.lockout, LockoutPolicy::default());
    assert_eq!(config.auth.verify_queue, 64);
    assert_eq!(config.cache, crate::auth::cache::CachePolicy::default());
    let config = load(&minimal(
        "[rate_limit]\nper_ip = false\nper_user = { per_second = 3 }\n[lockout]\nmax_failures = 0\nwindow = \"1h\"\nduration = \"30s\"\n",
    ))
    .unwrap();
    assert_eq!(config.rate_limit.per_ip, None);
    assert_eq!(config.rate_limit.per_user, Some(Rate::new(3, 6)));
    assert_eq!(config.lockout.max_failures, 0);
    assert_eq!(config.lockout.window, Duration::from_secs(3600));
    assert_eq!(config.lockout.duration, Duration::from_secs(30));
}

#[test]
fn backend_is_the_api_unless_upstream_or_static_is_set() {
    assert!(matches!(load(&minimal("")).unwrap().backend, Backend::Api));
    let config = load(&minimal(
        "[upstream]\nurl = \"http://127.0.0.1:8080/app\"\n",
    ))
    .unwrap();
    let Backend::Upstream(upstream) = config.backend else {
        panic!("upstream expected")
    };
    assert_eq!(upstream.url.path(), "/app");
    assert_eq!(upstream.timeout, Duration::from_secs(30));
    assert_eq!(upstream.user_header, "x-forwarded-user");
    assert!(!upstream.forward_authorization);
    let config = load(&minimal("[static]\nroot = \"/\"\n")).unwrap();
    assert!(matches!(config.backend, Backend::Static(_)));
}

#[test]
fn generated_user_stands_in_for_no_users() {
    let config = load("[tls]\nself_signed = true\n[auth]\ngenerated_user = \"admin\"\n").unwrap();
    assert!(config.auth.users.is_empty());
    assert_eq!(config.auth.generated_user.as_deref(), Some("admin"));
    assert!(
        error("[tls]\nself_signed = true\n[auth]\ngenerated_user = \"a:b\"\n")
            .contains("[auth] generated_user")
    );
}

#[test]
fn debug_output_lists_usernames_not_hashes() {
    let config = load(&minimal("")).unwrap();
    let debug = format!("{config:?}");
    assert!(
        debug.contains("alice") && !debug.contains("argon2"),
        "{debug}"
    );
}

#[test]
fn shipped_default_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
    let config = Config::load(&path).unwrap();
    assert!(config.server.listen.ip().is_loopback());
    assert!(matches!(config.tls, TlsSettings::SelfSigned { .. }));
}

proptest::proptest! {
    // The stable-toolchain twin of fuzz/fuzz_targets/config.rs.
    #[test]
    fn any_text_is_refused_or_accepted_without_panicking(text in "\\PC{0,400}") {
        if let Err(error) = load(&text) {
            let message = error.to_string();
            proptest::prop_assert!(message.starts_with("/etc/gatehouse/"), "{}", message);
            proptest::prop_assert!(!message.contains('\n'), "{}", message);
        }
    }

    #[test]
    fn odd_values_for_known_keys_never_panic(
        section in proptest::sample::select(vec!["server", "tls", "auth", "rate_limit", "lockout", "limits", "cache", "upstream", "static", "metrics", "log", "users"]),
        key in proptest::sample::select(vec!["listen", "cert", "self_signed", "realm", "public", "per_ip", "max_failures", "window", "ttl", "url", "root", "level", "path", "alice"]),
        value in proptest::sample::select(vec!["\"\"", "0", "-1", "true", "[]", "{}", "\"10s\"", "\"x\"", "{ per_second = 0 }", "\"http://[::1\"", "18446744073709551615", "1e400"]),
    ) {
        let text = format!("{}\n[{section}]\n{key} = {value}\n", minimal(""));
        let _ = load(&text);
    }
}

#[test]
fn usernames_with_outer_whitespace_are_refused() {
    for name in ["\" alice\"", "\"alice \"", "\"alice\\t\""] {
        let text = format!(
            "[tls]\nself_signed = true\n[users]\n{name} = \"{}\"\n",
            hash()
        );
        let err = Config::from_toml(Path::new("g.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("whitespace") || err.contains("control"),
            "{name}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, format!("alice :{}\n", hash())).unwrap();
    let text = format!(
        "[tls]\nself_signed = true\n[auth]\nusers_file = \"{}\"\n",
        users.display()
    );
    let err = Config::from_toml(&dir.path().join("g.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 1") && err.contains("whitespace"),
        "{err}"
    );
}

#[test]
fn type_errors_never_echo_the_value() {
    for value in [
        "42",
        "\"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA\" ",
        "[\"hunter2\"]",
        "{ p = \"hunter2\" }",
        "true",
    ] {
        for section in ["users", "auth"] {
            let key = if section == "users" { "alice" } else { "realm" };
            let text = format!("[tls]\nself_signed = true\n[{section}]\n{key} = {value}\n");
            if let Err(err) = Config::from_toml(Path::new("g.toml"), &text) {
                let err = err.to_string();
                for secret in ["42", "hunter2", "argon2id", "aGFzaA"] {
                    assert!(!err.contains(secret), "{section}.{key} = {value}: {err}");
                }
            }
        }
    }
}

#[test]
fn the_file_defaults_are_the_domain_defaults() {
    let config = load(&minimal("")).unwrap();
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.rate_limit, RateLimitSettings::default());
    assert_eq!(config.lockout, LockoutPolicy::default());
    assert_eq!(config.cache, crate::auth::cache::CachePolicy::default());
    assert_eq!(config.auth.verify_queue, crate::credentials::DEFAULT_QUEUE);
    assert_eq!(
        config.auth.verify_timeout,
        crate::credentials::DEFAULT_MAX_WAIT
    );
    let all_on = load(&minimal("[rate_limit]\nper_ip = true\nper_user = true\n")).unwrap();
    assert_eq!(all_on.rate_limit, RateLimitSettings::default());
}

#[test]
fn log_levels_that_would_silence_everything_are_refused() {
    for bad in ["verbose", "warning", "INFO,verbose", "gatehouse"] {
        let err = error(&minimal(&format!("[log]\nlevel = \"{bad}\"\n")));
        assert!(
            err.contains("[log] level") && err.contains("is not a level"),
            "{bad}: {err}"
        );
    }
    for good in [
        "info",
        "WARN",
        "gatehouse=debug,warn",
        "off",
        "gatehouse::access=off,info",
    ] {
        let config = load(&minimal(&format!("[log]\nlevel = \"{good}\"\n"))).unwrap();
        assert_eq!(config.log.level.as_str(), good);
    }
}

#[test]
fn oauth_redirect_uris_and_public_clients_are_checked() {
    let client = |redirects: &str, extra: &str| {
        minimal(&format!(
            "[tokens]\nenabled = true\nephemeral_key = true\n[oauth]\nenabled = true\n\
             [oauth.clients.app]\nredirect_uris = [{redirects}]\n\
             grant_types = [\"authorization_code\"]\nscopes = [\"read\"]\n{extra}"
        ))
    };
    for good in [
        "\"urn:ietf:wg:oauth:2.0:oob\"",
        "\"http://127.0.0.1/callback\"",
        "\"http://[::1]:8080/cb\"",
        "\"https://app.example/cb?x=1\"",
    ] {
        load(&client(good, "")).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for (bad, why) in [
        (
            "\"http://app.example/cb\"",
            "plain http is only for loopback",
        ),
        ("\"http://localhost/cb\"", "plain http is only for loopback"),
        (
            "\"HTTP://app.example/cb\"",
            "plain http is only for loopback",
        ),
        ("\"https://good@evil.example/cb\"", "without user-info"),
        ("\"https://app.example/cb#x\"", "or a fragment"),
        ("\"/cb\"", "absolute http(s) URL"),
    ] {
        let message = error(&client(bad, ""));
        assert!(
            message.contains("[oauth.clients.app] redirect_uris") && message.contains(why),
            "{bad}: {message}"
        );
    }
    let message = error(&client("\"http://127.0.0.1/cb\"", "auto_approve = true"));
    assert!(
        message.contains("[oauth.clients.app] auto_approve") && message.contains("public client"),
        "{message}"
    );
}

#[test]
fn cluster_needs_a_secret_and_never_repeats_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let with = |url: &str, secret_line: &str| {
        let text = minimal(&format!("[cluster]\nredis = \"{url}\"\n{secret_line}"));
        Config::from_toml(&dir.path().join("gatehouse.toml"), &text)
            .map(|c| c.cluster)
            .map_err(|e| e.to_string())
    };
    let secret_line = "secret_file = \"secret\"\n";
    let ok = with("redis://127.0.0.1:6379/0", secret_line)
        .unwrap()
        .unwrap();
    assert_eq!(ok.prefix, "default");
    assert_eq!(ok.timeout, std::time::Duration::from_millis(50));
    assert!(!format!("{ok:?}").contains("0123456789abcdef"), "{ok:?}");

    let missing = with("redis://127.0.0.1:6379/0", "").unwrap_err();
    assert!(
        missing.contains("[cluster] secret_file") && missing.contains("required"),
        "{missing}"
    );
    std::fs::write(&secret, "short\n").unwrap();
    let short = with("redis://127.0.0.1:6379/0", secret_line).unwrap_err();
    assert!(short.contains("at least 32"), "{short}");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();

    // A password anywhere in the URL is refused, and never repeated.
    for url in [
        "redis://:hunter2-pw@127.0.0.1:6379/0",
        "redis://user:hunter2-pw@127.0.0.1/0",
        "redis://:hunter2#pw@127.0.0.1/0",
        "redis://:hunter2/pw@127.0.0.1/0",
        "redis+unix:///run/redis.sock?pass=hunter2-pw",
        "rediss://127.0.0.1/0#insecure",
        "http://127.0.0.1/",
    ] {
        let error = with(url, secret_line).unwrap_err();
        assert!(error.contains("[cluster] redis"), "{url}: {error}");
        assert!(!error.contains("hunter2"), "{url}: {error}");
    }
    assert!(with("redis+unix:///run/redis.sock?db=2", secret_line).is_ok());
}

#[test]
fn forward_auth_listens_on_a_unix_socket() {
    let forward = |extra: &str| {
        load(&minimal(&format!("[forward_auth]\n{extra}")))
            .unwrap()
            .forward_auth
            .unwrap()
            .listen
    };
    assert_eq!(
        forward("listen = \"unix:run/authz.sock\""),
        Some(ListenAddress::Unix {
            path: "/etc/gatehouse/run/authz.sock".into(),
            mode: 0o660
        })
    );
    assert_eq!(
        forward("listen = \"unix:/run/a.sock\"\nsocket_mode = \"0600\""),
        Some(ListenAddress::Unix {
            path: "/run/a.sock".into(),
            mode: 0o600
        })
    );
    assert_eq!(
        forward("listen = \"127.0.0.1:9091\""),
        Some(ListenAddress::Tcp("127.0.0.1:9091".parse().unwrap()))
    );
    let long = format!("unix:/{}", "x".repeat(120));
    for (extra, key, problem) in [
        (
            "listen = \"unix:\"",
            "[forward_auth] listen",
            "names no socket file",
        ),
        (
            "listen = \"unix:/run/\"",
            "[forward_auth] listen",
            "names no socket file",
        ),
        (
            &format!("listen = \"{long}\""),
            "[forward_auth] listen",
            "longer than",
        ),
        (
            "listen = \"localhost\"",
            "[forward_auth] listen",
            "address:port or unix:/path",
        ),
        (
            "listen = \"unix:/a.sock\"\nsocket_mode = \"999\"",
            "[forward_auth] socket_mode",
            "octal",
        ),
        (
            "listen = \"unix:/a.sock\"\nsocket_mode = \"1777\"",
            "[forward_auth] socket_mode",
            "octal",
        ),
        (
            "listen = \"127.0.0.1:1\"\nsocket_mode = \"660\"",
            "[forward_auth] socket_mode",
            "only to a Unix socket",
        ),
    ] {
        let message = error(&minimal(&format!("[forward_auth]\n{extra}")));
        assert!(
            message.contains(key) && message.contains(problem),
            "{extra}: {message}"
        );
    }
}

#[test]
fn cpu_scheduling_is_default_or_batch() {
    assert_eq!(
        load(&minimal("")).unwrap().server.cpu_scheduling,
        CpuScheduling::Default
    );
    let batch = load(&format!(
        "[server]\ncpu_scheduling = \"batch\"\n{}",
        minimal("")
    ))
    .unwrap();
    assert_eq!(batch.server.cpu_scheduling, CpuScheduling::Batch);
    let message = error(&format!(
        "[server]\ncpu_scheduling = \"fifo\"\n{}",
        minimal("")
    ));
    assert!(message.contains("[server] cpu_scheduling"), "{message}");
}
