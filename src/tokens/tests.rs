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
        let header = issued.access_token.split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["kid"], t.signing_key().verifying().kid());
        assert_eq!(header["alg"], alg.name());
    }
}

#[test]
fn another_key_and_tampering_are_refused() {
    let a = tokens(KeyAlgorithm::EdDsa);
    let b = tokens(KeyAlgorithm::EdDsa);
    let token = b.issue("alice", "x".into()).unwrap().access_token;
    assert_eq!(a.verify(&token), Err(TokenError::UnknownKey));
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

/// Re-signs `header` and `claims` (JSON) with `t`'s key, as a forger who
/// holds it would: the checks after the signature must still hold.
fn signed(t: &Tokens, header: &str, claims: &serde_json::Value) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = t.signing_key().sign(token.as_bytes()).unwrap();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

#[test]
fn the_form_and_the_claims_are_checked_in_order() {
    let t = tokens(KeyAlgorithm::EdDsa);
    let kid = t.signing_key().verifying().kid().to_owned();
    let header = format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#);
    let now = 1_000_000;
    let claims = serde_json::json!({"iss":"gatehouse","aud":"gatehouse","sub":"a","iat":now,"nbf":now,"exp":now + 60,"jti":"j","pwh":"p"});
    let good = signed(&t, &header, &claims);
    assert!(t.verify_at(&good, now).is_ok());
    // Leeway is 30 s: exp + 30 is the first refused second.
    assert!(t.verify_at(&good, now + 89).is_ok());
    assert_eq!(
        t.verify_at(&good, now + 90),
        Err(TokenError::Signed("expired".into()))
    );
    assert_eq!(
        t.verify_at(&good, now - 31),
        Err(TokenError::Signed("not yet valid".into()))
    );
    // Padding, a fourth part, an empty signature: not the canonical form.
    assert_eq!(
        t.verify_at(&format!("{good}="), now),
        Err(TokenError::Header)
    );
    assert_eq!(
        t.verify_at(&format!("{good}.x"), now),
        Err(TokenError::Header)
    );
    let unsigned = good.rsplit_once('.').unwrap().0;
    assert!(matches!(
        t.verify_at(&format!("{unsigned}."), now),
        Err(TokenError::Invalid(_))
    ));
    // `crit`, another alg for the key, no kid: refused before the signature.
    for header in [
        format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":["b64"]}}"#),
        format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"none","kid":"{kid}"}}"#),
        r#"{"alg":"EdDSA"}"#.to_owned(),
    ] {
        assert_eq!(
            t.verify_at(&signed(&t, &header, &claims), now),
            Err(TokenError::Header),
            "{header}"
        );
    }
    // Signed by our key, but another issuer, audience or shape.
    for (field, value) in [("iss", "x"), ("aud", "x")] {
        let mut c = claims.clone();
        c[field] = value.into();
        assert!(
            matches!(
                t.verify_at(&signed(&t, &header, &c), now),
                Err(TokenError::Signed(_))
            ),
            "{field}"
        );
    }
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("pwh");
    assert!(matches!(
        t.verify_at(&signed(&t, &header, &c), now),
        Err(TokenError::Signed(_))
    ));
}
