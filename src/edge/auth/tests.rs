use super::*;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::{json, Value};

// TEST KEYS ONLY: generated for these tests with
// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`; never use them
// for anything else.
const TEST_RSA_PRIVATE_PEM: &str = include_str!("../../../tests/data/rsa-test-private.pem");
const TEST_RSA_PUBLIC_PEM: &str = include_str!("../../../tests/data/rsa-test-public.pem");
/// The same public key as PKCS#1 (`openssl rsa -pubin -RSAPublicKey_out`).
const TEST_RSA_PUBLIC_PKCS1_PEM: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAoVNfEKDdkplqzlM0hzNqBdq29kydOFwZx3Sf7AzXOzQirCfwBTO8
oSK9SvciDSwCyqZo3bmFgdWDhESdKvdW81owLvd5uI8F4xiqJ9VxJnOJ03Z8GL82
ZEjGwOk6qUZUGDBuoMqXcEtFOMZEk3EGfaZl/sTE7mAwr7FkNnG+4YpbO4Pb5r4r
mQH432XNgQhmT1r9KCHqwozd2g5ZP3gL2ZDcAW8u6RhrDFY9pgzAWpV96X5uqcCc
B7uTWfhNDVTiRnCsw1STlC63xRjUj821F+bC1ePdUZDVyMreGIAc7/kz1V65UWMe
+AmcwJaofRG239h/V08d409WOIZAdKrhfQIDAQAB
-----END RSA PUBLIC KEY-----
";
/// A 1024-bit RSA public key: too small.
const WEAK_RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFWkpWFqLDMmsKUlRtZZDYObH1
CnAyJXTnOQTaV/jUv18q63Kag/GTHHkGgmuD9QaWhj9KIeOnRE7MdPn1D6TQSLh0
kn5w9uQouGddwbATOPrHlmv2txGCu9GZ3f034JLqqm5dTHXcfyPn8InglhyyeYLh
iV0BEnCE7HYpqALt4QIDAQAB
-----END PUBLIC KEY-----
";
/// A P-256 public key: not RSA.
const EC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjr1e/NtXJ1aTdb5/vX/0ShYGip6k
o6nKbX+sX9f5SmrZeyfje5et/bhwtlA0L3fbyg6wAO6FkokKQkRFhmmv4w==
-----END PUBLIC KEY-----
";
const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

fn now() -> i64 {
    get_current_timestamp() as i64
}

fn hs_cfg() -> AuthConfig {
    AuthConfig {
        jwt_secret: Some(SECRET.to_owned()),
        leeway: Duration::from_secs(30),
        ..AuthConfig::default()
    }
}

fn rs_cfg() -> AuthConfig {
    AuthConfig {
        jwt_public_key: Some(TEST_RSA_PUBLIC_PEM.to_owned()),
        leeway: Duration::from_secs(30),
        ..AuthConfig::default()
    }
}

fn both_cfg() -> AuthConfig {
    AuthConfig {
        jwt_secret: Some(SECRET.to_owned()),
        ..rs_cfg()
    }
}

fn auth(cfg: AuthConfig) -> Authenticator {
    Authenticator::new(cfg).expect("valid config")
}

fn claims(extra: Value) -> Value {
    let mut c = json!({ "sub": "user-1", "exp": now() + 300 });
    if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    c
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(TEST_RSA_PRIVATE_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn check(a: &Authenticator, token: &str) -> Result<Option<Claims>, AuthError> {
    a.check_bearer(Some(&bearer(token)))
}

/// base64url without padding, for hand-made tokens.
fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn ok_user(sub: &str, role: Option<&str>) -> Result<Option<Claims>, AuthError> {
    Ok(Some(Claims {
        sub: Some(sub.to_owned()),
        role: role.map(str::to_owned),
    }))
}

#[test]
fn b64_matches_known_vectors() {
    assert_eq!(b64(b"f"), "Zg");
    assert_eq!(b64(b"fo"), "Zm8");
    assert_eq!(b64(b"foo"), "Zm9v");
    assert_eq!(b64(&[0xfb, 0xff]), "-_8");
}

#[test]
fn valid_hs256_and_rs256() {
    let hs = auth(hs_cfg());
    let rs = auth(rs_cfg());
    let both = auth(both_cfg());
    let c = claims(json!({}));
    assert_eq!(check(&hs, &hs256(&c)), ok_user("user-1", None));
    assert_eq!(check(&rs, &rs256(&c)), ok_user("user-1", None));
    assert_eq!(check(&both, &hs256(&c)), ok_user("user-1", None));
    assert_eq!(check(&both, &rs256(&c)), ok_user("user-1", None));
    // Each key verifies only its own algorithm.
    assert_eq!(check(&hs, &rs256(&c)), Err(AuthError::InvalidToken));
    assert_eq!(check(&rs, &hs256(&c)), Err(AuthError::InvalidToken));
}

#[test]
fn other_algorithms_are_refused_even_with_a_valid_signature() {
    let c = claims(json!({}));
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let ps256 = encode(
        &Header::new(Algorithm::PS256),
        &c,
        &EncodingKey::from_rsa_pem(TEST_RSA_PRIVATE_PEM.as_bytes()).unwrap(),
    )
    .unwrap();
    for a in [auth(hs_cfg()), auth(rs_cfg()), auth(both_cfg())] {
        assert_eq!(check(&a, &hs512), Err(AuthError::InvalidToken));
        assert_eq!(check(&a, &ps256), Err(AuthError::InvalidToken));
    }
}

#[test]
fn expiry_and_leeway() {
    let a = auth(hs_cfg()); // leeway 30 s
    let t = now();
    let expired = hs256(&claims(json!({ "exp": t - 120 })));
    let within_leeway = hs256(&claims(json!({ "exp": t - 10 })));
    let no_exp = hs256(&claims(json!({ "exp": null })));
    let bad_exp = hs256(&claims(json!({ "exp": "tomorrow" })));
    assert_eq!(check(&a, &expired), Err(AuthError::InvalidToken));
    assert_eq!(check(&a, &within_leeway), ok_user("user-1", None));
    assert_eq!(check(&a, &no_exp), Err(AuthError::InvalidToken));
    assert_eq!(check(&a, &bad_exp), Err(AuthError::InvalidToken));
    // Without leeway the same token is refused.
    let strict = auth(AuthConfig {
        leeway: Duration::ZERO,
        ..hs_cfg()
    });
    assert_eq!(check(&strict, &within_leeway), Err(AuthError::InvalidToken));
}

#[test]
fn not_before() {
    let a = auth(hs_cfg()); // leeway 30 s
    let t = now();
    let future = hs256(&claims(json!({ "nbf": t + 120 })));
    let within_leeway = hs256(&claims(json!({ "nbf": t + 10 })));
    let past = hs256(&claims(json!({ "nbf": t - 10 })));
    assert_eq!(check(&a, &future), Err(AuthError::InvalidToken));
    assert_eq!(check(&a, &within_leeway), ok_user("user-1", None));
    assert_eq!(check(&a, &past), ok_user("user-1", None));
}

#[test]
fn alg_none_is_refused() {
    let payload = b64(claims(json!({})).to_string().as_bytes());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        let h = b64(header.as_bytes());
        for a in [auth(hs_cfg()), auth(rs_cfg()), auth(both_cfg())] {
            assert_eq!(
                check(&a, &format!("{h}.{payload}.")),
                Err(AuthError::InvalidToken)
            );
            assert_eq!(
                check(&a, &format!("{h}.{payload}")),
                Err(AuthError::InvalidToken)
            );
        }
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let c = claims(json!({ "role": "admin" }));
    for secret in [TEST_RSA_PUBLIC_PEM, TEST_RSA_PUBLIC_PEM.trim()] {
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            check(&auth(rs_cfg()), &forged),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            check(&auth(both_cfg()), &forged),
            Err(AuthError::InvalidToken)
        );
    }
    // And the configuration that would make the forgery work is refused.
    let confused = Authenticator::new(AuthConfig {
        jwt_secret: Some(TEST_RSA_PUBLIC_PEM.trim().to_owned()),
        ..rs_cfg()
    });
    assert!(confused
        .unwrap_err()
        .contains("must not be the JWT_PUBLIC_KEY"));
}

#[test]
fn issuer_and_audience() {
    let a = auth(AuthConfig {
        issuer: Some("https://issuer.example".to_owned()),
        audience: Some("agentd".to_owned()),
        ..hs_cfg()
    });
    let good = json!({ "iss": "https://issuer.example", "aud": "agentd" });
    assert_eq!(check(&a, &hs256(&claims(good))), ok_user("user-1", None));
    let aud_list = json!({ "iss": "https://issuer.example", "aud": ["other", "agentd"] });
    assert_eq!(
        check(&a, &hs256(&claims(aud_list))),
        ok_user("user-1", None)
    );
    for bad in [
        json!({ "iss": "https://evil.example", "aud": "agentd" }),
        json!({ "iss": "https://issuer.example", "aud": "other" }),
        json!({ "iss": "https://issuer.example", "aud": ["other"] }),
        json!({ "aud": "agentd" }),                 // iss missing
        json!({ "iss": "https://issuer.example" }), // aud missing
    ] {
        assert_eq!(
            check(&a, &hs256(&claims(bad))),
            Err(AuthError::InvalidToken)
        );
    }
    // Not configured: not checked (as @fastify/jwt).
    let open = auth(hs_cfg());
    let any = json!({ "iss": "whoever", "aud": "something-else" });
    assert_eq!(check(&open, &hs256(&claims(any))), ok_user("user-1", None));
}

#[test]
fn kid_is_ignored_with_a_single_key_per_algorithm() {
    let c = claims(json!({}));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("some-other-key".to_owned());
    let key = EncodingKey::from_rsa_pem(TEST_RSA_PRIVATE_PEM.as_bytes()).unwrap();
    let with_kid = encode(&header, &c, &key).unwrap();
    assert_eq!(check(&auth(rs_cfg()), &with_kid), ok_user("user-1", None));
    // What matters is the signature: a kid does not make another key's token valid.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("primary".to_owned());
    let other = encode(&header, &c, &EncodingKey::from_secret(b"another-secret")).unwrap();
    assert_eq!(check(&auth(hs_cfg()), &other), Err(AuthError::InvalidToken));
}

#[test]
fn crit_header_is_refused() {
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".to_owned()]);
    let t = encode(
        &header,
        &claims(json!({})),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(check(&auth(hs_cfg()), &t), Err(AuthError::InvalidToken));
}

#[test]
fn tampered_truncated_and_garbage_tokens() {
    let a = auth(both_cfg());
    let token = rs256(&claims(json!({})));
    let (head, sig) = token.rsplit_once('.').unwrap();
    // A changed payload with the old signature.
    let (h, _) = head.split_once('.').unwrap();
    let admin = b64(claims(json!({ "role": "admin", "sub": "root" }))
        .to_string()
        .as_bytes());
    let cases = [
        token[..token.len() - 1].to_owned(),
        token[..token.len() - 10].to_owned(),
        head.to_owned(),
        format!("{head}."),
        format!("{h}.{admin}.{sig}"),
        format!("{token}.extra"),
        sig.to_owned(),
        "a.b.c".to_owned(),
        "...".to_owned(),
        "not a token".to_owned(),
        "eyJ".to_owned(),
    ];
    for bad in &cases {
        assert_eq!(check(&a, bad), Err(AuthError::InvalidToken), "{bad}");
    }
    let hs = auth(hs_cfg());
    for raw in [
        &b"Bearer \xff\xfe.\x00.\x01"[..],
        b"Bearer \xe2\x82\xac.a.b",
    ] {
        assert_eq!(hs.check_bearer(Some(raw)), Err(AuthError::InvalidToken));
        assert_eq!(a.check_bearer(Some(raw)), Err(AuthError::InvalidToken));
    }
}

#[test]
fn oversized_token_is_refused() {
    let a = auth(hs_cfg());
    // Correctly signed, only too big.
    let big = hs256(&claims(json!({ "pad": "x".repeat(MAX_TOKEN_BYTES) })));
    assert!(big.len() > MAX_TOKEN_BYTES);
    assert_eq!(check(&a, &big), Err(AuthError::InvalidToken));
    // Just under the limit is accepted.
    let pad = MAX_TOKEN_BYTES - hs256(&claims(json!({ "pad": "" }))).len();
    let fits = hs256(&claims(json!({ "pad": "x".repeat(pad * 3 / 4 - 4) })));
    assert!(fits.len() <= MAX_TOKEN_BYTES && fits.len() > MAX_TOKEN_BYTES - 16);
    assert_eq!(check(&a, &fits), ok_user("user-1", None));
    let huge = vec![b'a'; 1 << 20];
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(&huge);
    assert_eq!(a.check_bearer(Some(&value)), Err(AuthError::InvalidToken));
}

#[test]
fn bearer_scheme_is_required() {
    let a = auth(hs_cfg());
    let token = hs256(&claims(json!({})));
    for ok in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer   {token}  "),
    ] {
        assert_eq!(
            a.check_bearer(Some(ok.as_bytes())),
            ok_user("user-1", None),
            "{ok}"
        );
    }
    for bad in [
        token.clone(),
        format!("Basic {token}"),
        format!("Bearer{token}"),
        format!("Token {token}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer    ".to_owned(),
        String::new(),
    ] {
        assert_eq!(
            a.check_bearer(Some(bad.as_bytes())),
            Err(AuthError::InvalidToken),
            "{bad}"
        );
    }
}

#[test]
fn roles() {
    let a = auth(AuthConfig {
        agent_roles: vec!["user".to_owned(), "admin".to_owned()],
        ..rs_cfg()
    });
    let role = |r: Value| rs256(&claims(json!({ "role": r })));
    assert_eq!(
        check(&a, &role(json!("user"))),
        ok_user("user-1", Some("user"))
    );
    assert_eq!(
        check(&a, &role(json!("admin"))),
        ok_user("user-1", Some("admin"))
    );
    assert_eq!(check(&a, &role(json!("guest"))), Err(AuthError::Forbidden));
    assert_eq!(check(&a, &role(json!("Admin"))), Err(AuthError::Forbidden));
    assert_eq!(
        check(&a, &role(json!(["admin"]))),
        Err(AuthError::Forbidden)
    );
    assert_eq!(check(&a, &role(json!(1))), Err(AuthError::Forbidden));
    // No role, or null: a user.
    assert_eq!(
        check(&a, &rs256(&claims(json!({})))),
        ok_user("user-1", None)
    );
    let signed_null = rs256(&json!({ "exp": now() + 60, "role": Value::Null }));
    assert_eq!(
        check(&a, &signed_null),
        Ok(Some(Claims {
            sub: None,
            role: None
        }))
    );
    // Empty list: the defaults.
    let default_roles = auth(rs_cfg());
    assert_eq!(
        check(&default_roles, &role(json!("admin"))),
        ok_user("user-1", Some("admin"))
    );
    assert_eq!(
        check(&default_roles, &role(json!("guest"))),
        Err(AuthError::Forbidden)
    );
    // Admins only: a token without a role is a user, and refused.
    let admins = auth(AuthConfig {
        agent_roles: vec!["admin".to_owned()],
        ..rs_cfg()
    });
    assert_eq!(
        check(&admins, &role(json!("admin"))),
        ok_user("user-1", Some("admin"))
    );
    assert_eq!(
        check(&admins, &rs256(&claims(json!({})))),
        Err(AuthError::Forbidden)
    );
    // A bad signature is 401 before the role is looked at.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({ "role": "guest" })),
        &EncodingKey::from_secret(b"nope"),
    )
    .unwrap();
    assert_eq!(check(&a, &forged), Err(AuthError::InvalidToken));
}

#[test]
fn unknown_and_odd_claims_are_tolerated() {
    let a = auth(hs_cfg());
    let c = claims(json!({ "scope": ["a", "b"], "nested": { "x": [1, 2, { "y": null }] } }));
    assert_eq!(check(&a, &hs256(&c)), ok_user("user-1", None));
    let numeric_sub = claims(json!({ "sub": 42 }));
    assert_eq!(
        check(&a, &hs256(&numeric_sub)),
        Ok(Some(Claims {
            sub: None,
            role: None
        }))
    );
}

#[test]
fn required_versus_optional() {
    let token = hs256(&claims(json!({})));
    let optional = auth(hs_cfg());
    assert_eq!(optional.check_bearer(None), Ok(None));
    // Present: verified even when optional.
    assert_eq!(check(&optional, "garbage"), Err(AuthError::InvalidToken));
    assert_eq!(check(&optional, &token), ok_user("user-1", None));

    let required = auth(AuthConfig {
        required: true,
        ..hs_cfg()
    });
    assert_eq!(required.check_bearer(None), Err(AuthError::InvalidToken));
    assert_eq!(check(&required, &token), ok_user("user-1", None));

    // No key: nothing is checked.
    let off = auth(AuthConfig::default());
    assert!(!off.is_jwt_configured());
    assert!(optional.is_jwt_configured() && required.is_jwt_configured());
    assert_eq!(off.check_bearer(None), Ok(None));
    assert_eq!(off.check_bearer(Some(b"Bearer garbage")), Ok(None));
}

#[test]
fn config_errors() {
    let err = |cfg: AuthConfig| Authenticator::new(cfg).unwrap_err();
    assert!(err(AuthConfig {
        required: true,
        ..AuthConfig::default()
    })
    .contains("AUTH_REQUIRED"));
    assert!(err(AuthConfig {
        jwt_secret: Some(String::new()),
        ..AuthConfig::default()
    })
    .contains("JWT_SECRET is empty"));
    for pem in [
        "not a pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        EC_PUBLIC_PEM,
    ] {
        let e = err(AuthConfig {
            jwt_public_key: Some(pem.to_owned()),
            ..AuthConfig::default()
        });
        assert!(e.starts_with("JWT_PUBLIC_KEY"), "{e}");
    }
    let e = err(AuthConfig {
        jwt_public_key: Some(TEST_RSA_PRIVATE_PEM.to_owned()),
        ..AuthConfig::default()
    });
    assert!(e.contains("private key") && !e.contains("MII"), "{e}");
    let e = err(AuthConfig {
        jwt_public_key: Some(WEAK_RSA_PUBLIC_PEM.to_owned()),
        ..AuthConfig::default()
    });
    assert!(e.contains("1024-bit"), "{e}");
    assert!(err(AuthConfig {
        leeway: MAX_LEEWAY + Duration::from_secs(1),
        ..hs_cfg()
    })
    .contains("JWT_LEEWAY"));
    assert!(err(AuthConfig {
        api_keys: vec!["k1".to_owned(), " ".to_owned()],
        ..AuthConfig::default()
    })
    .contains("empty key"));
}

#[test]
fn pkcs1_public_key_is_accepted() {
    let a = auth(AuthConfig {
        jwt_public_key: Some(TEST_RSA_PUBLIC_PKCS1_PEM.to_owned()),
        ..AuthConfig::default()
    });
    assert_eq!(
        check(&a, &rs256(&claims(json!({})))),
        ok_user("user-1", None)
    );
}

#[test]
fn modulus_bits_counts_leading_zeros() {
    // 2048 bits with the top bit set: 256 bytes → 342 base64 digits, first ≥ 'g'.
    let n = b64(&[0x80; 256]);
    assert_eq!(modulus_bits(&n), 2048);
    let n = b64(&{
        let mut v = [0xff; 256];
        v[0] = 0x01;
        v
    });
    assert_eq!(modulus_bits(&n), 2041);
    assert_eq!(modulus_bits(&b64(&[0xff; 128])), 1024);
    assert_eq!(modulus_bits(""), 0);
}

#[test]
fn secrets_do_not_show_in_debug_or_errors() {
    let cfg = AuthConfig {
        api_keys: vec!["api-key-value".to_owned()],
        ..both_cfg()
    };
    let shown = format!("{cfg:?}");
    assert!(!shown.contains(SECRET) && !shown.contains("api-key-value") && !shown.contains("MII"));
    let a = auth(cfg);
    let shown = format!("{a:?}");
    assert!(!shown.contains(SECRET) && !shown.contains("api-key-value"));
    assert_eq!(AuthError::InvalidToken.to_string(), "Invalid token");
    assert_eq!(AuthError::Forbidden.to_string(), "Forbidden");
    assert_eq!(AuthError::InvalidApiKey.to_string(), "Invalid API key");
}

#[test]
fn api_keys() {
    let a = auth(AuthConfig {
        api_keys: vec![
            "first-key".to_owned(),
            "second-key-longer".to_owned(),
            " padded ".to_owned(),
        ],
        ..AuthConfig::default()
    });
    assert_eq!(a.check_api_key(Some(b"first-key")), Ok(()));
    assert_eq!(a.check_api_key(Some(b"second-key-longer")), Ok(()));
    assert_eq!(a.check_api_key(Some(b"padded")), Ok(()));
    for bad in [
        &b"first-kez"[..],
        b"first-key ",
        b"first-ke",
        b"First-key",
        b"first-keyfirst-key",
        b"",
        b"x",
        b"second-key",
    ] {
        assert_eq!(a.check_api_key(Some(bad)), Err(AuthError::InvalidApiKey));
    }
    assert_eq!(a.check_api_key(None), Err(AuthError::InvalidApiKey));
    let none = auth(AuthConfig::default());
    assert_eq!(none.check_api_key(Some(b"")), Err(AuthError::InvalidApiKey));
    assert_eq!(
        none.check_api_key(Some(b"anything")),
        Err(AuthError::InvalidApiKey)
    );
    assert_eq!(none.check_api_key(None), Err(AuthError::InvalidApiKey));
}

#[test]
fn authenticator_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Authenticator>();
}

#[test]
fn access_token_from_the_query() {
    assert_eq!(access_token_param(None), None);
    assert_eq!(access_token_param(Some("prompt=x")), None);
    assert_eq!(
        access_token_param(Some("prompt=x&access_token=a.b%2Dc")).as_deref(),
        Some(&b"a.b-c"[..])
    );
    assert_eq!(
        access_token_param(Some("access_token=")).as_deref(),
        Some(&b""[..])
    );
    // Oversized: cut just past the limit, so it is refused without more work.
    let long = format!("access_token={}", "a".repeat(10 * MAX_TOKEN_BYTES));
    assert_eq!(
        access_token_param(Some(&long)).unwrap().len(),
        MAX_TOKEN_BYTES + 1
    );
    let a = Authenticator::new(AuthConfig {
        jwt_secret: Some("s".into()),
        ..AuthConfig::default()
    })
    .unwrap();
    assert_eq!(
        a.check_token(access_token_param(Some(&long)).as_deref()),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(a.check_token(Some(b"")), Err(AuthError::InvalidToken));
}

#[test]
fn tokens_in_urls_are_redacted_for_logs() {
    let uri: http::Uri = "/stream?prompt=hi&access_token=eyJ.secret.sig&x=1"
        .parse()
        .unwrap();
    let shown = redacted_uri(&uri).to_string();
    assert_eq!(shown, "/stream?prompt=hi&access_token=[REDACTED]&x=1");
    let uri: http::Uri = "/ws?access_token=a&access_token=b".parse().unwrap();
    assert!(!redacted_uri(&uri).to_string().contains("=a"));
    let uri: http::Uri = "/stream?prompt=hi".parse().unwrap();
    assert_eq!(redacted_uri(&uri), uri);
}
