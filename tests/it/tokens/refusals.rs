//! Every way a bearer credential can be wrong gets the same 401 with the
//! Bearer challenge (`error="invalid_token"`), and the server stays up.

use std::time::Duration;

use reqwest::StatusCode;

use super::{login, python, start};
use crate::common::{TestDir, client, client_from};

/// Forged and broken tokens, made with PyJWT and by hand from a real one.
const FORGE: &str = r#"
import sys, json, time, base64, hmac, hashlib, jwt
key_pem, other_pem, kid, good = sys.argv[1:5]
key = open(key_pem).read(); other = open(other_pem).read()
now = int(time.time())
claims = dict(iss="gatehouse", aud="gatehouse", sub="alice", iat=now, nbf=now, exp=now + 600, jti="x",
              pwh=jwt.decode(good, options={"verify_signature": False})["pwh"])
def enc(c, k=key, alg="EdDSA", headers=None):
    return jwt.encode(c, k, algorithm=alg, headers=headers if headers is not None else {"kid": kid})
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
out = {}
out["control: a good forged-here token"] = enc(claims)
out["expired"] = enc({**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})
out["not yet valid"] = enc({**claims, "nbf": now + 3600})
out["wrong audience"] = enc({**claims, "aud": "someone-else"})
out["wrong issuer"] = enc({**claims, "iss": "evil"})
out["another key, our kid"] = enc(claims, k=other)
out["another key, its own kid"] = enc(claims, k=other, headers={})
out["no kid"] = enc(claims, headers={})
h = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
p = b64(json.dumps(claims).encode())
out["alg none"] = f"{h}.{p}."
from cryptography.hazmat.primitives import serialization
pub_pem = serialization.load_pem_private_key(key.encode(), None).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
h = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
sig = hmac.new(pub_pem, f"{h}.{p}".encode(), hashlib.sha256).digest()
out["HS256 signed with the public key"] = f"{h}.{p}.{b64(sig)}"
hh, pp, ss = good.split(".")
payload = json.loads(base64.urlsafe_b64decode(pp + "=" * (-len(pp) % 4)))
payload["sub"] = "bob"
out["tampered payload"] = f"{hh}.{b64(json.dumps(payload).encode())}.{ss}"
out["truncated signature"] = good[:-4]
out["another user's binding"] = enc({**claims, "pwh": "AAAAAAAAAAAAAAAAAAAAAA"})
print(json.dumps(out))
"#;

fn assert_bearer_refusal(response: &reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenges: Vec<&str> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges.contains(&"Bearer realm=\"gatehouse\", error=\"invalid_token\""),
        "{what}: {challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic realm=")),
        "{what}: {challenges:?}"
    );
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_get_invalid_token() {
    let dir = TestDir::new();
    let (server, api_key) = start(&dir, "");
    super::gen_key(&dir, "other.pem", "EdDSA");
    let good = login(&server, &dir, "alice", "secret").await;
    let kid = {
        let header = good.split('.').next().unwrap();
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    let forged: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&python(
        FORGE,
        &[
            dir.path("signing.pem").to_str().unwrap(),
            dir.path("other.pem").to_str().unwrap(),
            &kid,
            &good,
        ],
    ))
    .unwrap();
    let http = client(&dir.cert_pem);
    let url = server.url("/api/whoami");
    for (what, token) in &forged {
        let response = http
            .get(&url)
            .bearer_auth(token.as_str().unwrap())
            .send()
            .await
            .unwrap();
        if what.starts_with("control") {
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "the forging script makes valid tokens"
            );
        } else {
            assert_bearer_refusal(&response, what);
        }
    }
    // A revoked-looking API key, and 50 malformed Bearer values.
    let mut bad_key = api_key.clone();
    bad_key.replace_range(25..26, if &api_key[25..26] == "A" { "B" } else { "A" });
    let response = http.get(&url).bearer_auth(&bad_key).send().await.unwrap();
    assert_bearer_refusal(&response, "a wrong API key");
    let response = http
        .get(&url)
        .header("x-api-key", &bad_key)
        .send()
        .await
        .unwrap();
    assert_bearer_refusal(&response, "a wrong API key in X-API-Key");
    let malformed: Vec<String> = (0..50)
        .map(|i| match i % 10 {
            0 => "Bearer".to_owned(),
            1 => format!("Bearer {}", "a".repeat(5000 + i)),
            2 => format!("Bearer a b{i}"),
            3 => format!("Bearer ={i}"),
            4 => format!("Bearer \"{i}\""),
            5 => format!("Bearer {i}.{i}.{i}"),
            6 => format!("Bearer gh_{i}"),
            7 => format!("Bearer eyJ{i}.eyJ.x"),
            8 => format!("bearer {}", "%".repeat(i)),
            _ => format!("Bearer {}", "a.".repeat(i + 1)),
        })
        .collect();
    for value in &malformed {
        let response = http
            .get(&url)
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{value:.40}");
    }
    // Still up, still serving the good token; nothing secret in the log.
    let ok = http.get(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs();
    for (_, token) in &forged {
        assert!(
            !logs.contains(token.as_str().unwrap()),
            "a token reached the log"
        );
    }
    assert!(!logs.contains(&good) && !logs.contains(&api_key[20..]));
}

/// Bad bearer credentials count against the address like wrong passwords:
/// probing key ids or tokens ends in a lockout.
#[tokio::test]
async fn bearer_probes_are_locked_out() {
    let dir = TestDir::new();
    let (server, _) = start(&dir, "[lockout]\nmax_failures = 3\n");
    let prober = client_from(&dir.cert_pem, "127.0.0.41");
    let url = server.url("/api/whoami");
    let mut statuses = Vec::new();
    for i in 0..5 {
        let key = format!("gh_{i:016x}_{}", "A".repeat(43));
        statuses.push(
            prober
                .get(&url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![401, 401, 401, 429, 429]);
    // Bearer probes lock bearer credentials only: the prober's password
    // still works, and another address is not affected.
    let basic = prober
        .get(&url)
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    let token = login(&server, &dir, "alice", "secret").await;
    let other = client_from(&dir.cert_pem, "127.0.0.42");
    assert_eq!(
        other
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Tokens that were ours (expired, another audience) are a client's
    // normal life, not guesses: refused every time, never locked out.
    let kid = {
        let header = token.split('.').next().unwrap();
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    super::gen_key(&dir, "other.pem", "EdDSA");
    let forged: serde_json::Value = serde_json::from_str(&python(
        FORGE,
        &[
            dir.path("signing.pem").to_str().unwrap(),
            dir.path("other.pem").to_str().unwrap(),
            &kid,
            &token,
        ],
    ))
    .unwrap();
    let client = client_from(&dir.cert_pem, "127.0.0.45");
    for what in ["expired", "wrong audience", "not yet valid"] {
        for _ in 0..5 {
            let response = client
                .get(&url)
                .bearer_auth(forged[what].as_str().unwrap())
                .send()
                .await
                .unwrap();
            assert_bearer_refusal(&response, what);
        }
    }
}

/// The login endpoint answers what Basic answers, and a flood of wrong
/// passwords there costs at most max_failures verifications.
#[tokio::test]
async fn login_refusals_and_flood() {
    let dir = TestDir::new();
    let (server, _) = start(&dir, "[lockout]\nmax_failures = 3\n");
    let http = client_from(&dir.cert_pem, "127.0.0.43");
    let url = server.url("/api/auth/jwt");
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (http.get(&url), 405),
        (http.post(&url).body("{\"username\":\"alice\"}"), 415),
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body("{nope"),
            400,
        ),
        (
            http.post(&url)
                .header("content-type", "application/json")
                .body(vec![b' '; 9000]),
            413,
        ),
        (
            http.post(&url)
                .header("content-type", "text/plain")
                .body("x"),
            415,
        ),
    ];
    for (request, want) in cases {
        assert_eq!(request.send().await.unwrap().status().as_u16(), want);
    }
    // The login path is matched on the canonical path: these spellings are
    // the login, not a way past it to the backend.
    for spelling in ["/api//auth/jwt", "/api/auth/%6Awt", "/api/x/../auth/jwt"] {
        let response = client(&dir.cert_pem)
            .post(server.url(spelling))
            .json(&serde_json::json!({"username": "bob", "password": "pässwörd"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{spelling}");
        assert!(response.text().await.unwrap().contains("access_token"));
    }
    // A JSON user-id that a Basic header could not carry is refused alike.
    for name in ["", "a:b", "a\\u0000bearer", "\\u001b[31m"] {
        let body = format!("{{\"username\":\"{name}\",\"password\":\"x\"}}");
        let response = client(&dir.cert_pem)
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name:?}");
    }
    let attacker = client_from(&dir.cert_pem, "127.0.0.44");
    let mut answers = Vec::new();
    for _ in 0..20 {
        let response = attacker
            .post(&url)
            .json(&serde_json::json!({"username": "alice", "password": "guess"}))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenges = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .count();
            assert_eq!(challenges, 2, "Basic and Bearer");
        }
        answers.push(response.status().as_u16());
    }
    assert_eq!(
        answers.iter().filter(|&&s| s == 401).count(),
        3,
        "{answers:?}"
    );
    assert!(answers[3..].iter().all(|&s| s == 429), "{answers:?}");
    let stats = crate::common::stats(&server, &dir.cert_pem).await;
    // The flood's 20 wrong passwords cost max_failures (3) verifications.
    assert_eq!(
        stats["failed_verifications"].as_u64().unwrap(),
        3,
        "{stats}"
    );
}
