use super::*;

fn tokens(alg: KeyAlgorithm) -> Tokens {
    let (key, _) = SigningKey::generate(alg).unwrap();
    Tokens::new(TokenPolicy::default(), key, Vec::new())
}

#[test]
fn issued_tokens_verify_with_both_algorithms() {
    for alg in [KeyAlgorithm::EdDsa, KeyAlgorithm::Es256] {
        let t = tokens(alg);
        let issued = t.issue("alice", "b".into()).unwrap();
        let claims = t.verify(&issued.access_token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.pwh.as_str()), ("alice", "b"));
        assert_eq!(claims.exp - claims.iat, 900);
        let header = jsonwebtoken::decode_header(&issued.access_token).unwrap();
        assert_eq!(
            header.kid.as_deref(),
            Some(t.signing_key().verifying().kid())
        );
    }
}

#[test]
fn another_key_and_tampering_are_refused() {
    let a = tokens(KeyAlgorithm::EdDsa);
    let b = tokens(KeyAlgorithm::EdDsa);
    let token = b.issue("alice", "x".into()).unwrap().access_token;
    assert_eq!(a.verify(&token), Err(TokenError::Header), "unknown kid");
    let token = a.issue("alice", "x".into()).unwrap().access_token;
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged = serde_json::json!({"iss":"gatehouse","aud":"gatehouse","sub":"root","iat":1,"nbf":1,"exp":u64::MAX / 2,"jti":"j","pwh":"x"});
    parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
    assert!(matches!(
        a.verify(&parts.join(".")),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn previous_keys_verify_after_a_rotation() {
    let (old, old_pem) = SigningKey::generate(KeyAlgorithm::EdDsa).unwrap();
    let before = Tokens::new(TokenPolicy::default(), old, Vec::new());
    let token = before.issue("alice", "x".into()).unwrap().access_token;
    let (new, _) = SigningKey::generate(KeyAlgorithm::Es256).unwrap();
    let previous = VerifyingKey::from_pem(&old_pem).unwrap();
    let after = Tokens::new(TokenPolicy::default(), new, vec![previous]);
    assert!(after.verify(&token).is_ok());
    let jwks: serde_json::Value = serde_json::from_str(&after.jwks()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn thumbprint_matches_rfc_7638_example_shape() {
    // RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
    let public = URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .unwrap();
    let key = VerifyingKey::from_raw_for_tests(KeyAlgorithm::EdDsa, &public);
    assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}
