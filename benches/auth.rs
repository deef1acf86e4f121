//! Micro-benchmarks of the edge authenticator (`src/edge/auth.rs`), with allocation
//! counts: an HS256 and an RS256 (2048-bit) bearer-token check end to end (scheme,
//! size, header, signature, claims, role), and the constant-time API key check.
//!
//! Run: `cargo bench --bench auth`
//!
//! An RS256 check must stay in the tens of microseconds so that it never stalls a
//! worker: that is why jsonwebtoken's `aws_lc_rs` backend is used (the `rust_crypto`
//! backend re-parses the key on every verify and is an order of magnitude slower).

use std::time::{SystemTime, UNIX_EPOCH};

use agentd::edge::auth::{AuthConfig, Authenticator};
use divan::{black_box, AllocProfiler, Bencher};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    divan::main();
}

// A throwaway key pair for this benchmark only (the same one the unit tests use).
const BENCH_RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQChU18QoN2SmWrO
UzSHM2oF2rb2TJ04XBnHdJ/sDNc7NCKsJ/AFM7yhIr1K9yINLALKpmjduYWB1YOE
RJ0q91bzWjAu93m4jwXjGKon1XEmc4nTdnwYvzZkSMbA6TqpRlQYMG6gypdwS0U4
xkSTcQZ9pmX+xMTuYDCvsWQ2cb7hils7g9vmviuZAfjfZc2BCGZPWv0oIerCjN3a
Dlk/eAvZkNwBby7pGGsMVj2mDMBalX3pfm6pwJwHu5NZ+E0NVOJGcKzDVJOULrfF
GNSPzbUX5sLV491RkNXIyt4YgBzv+TPVXrlRYx74CZzAlqh9Ebbf2H9XTx3jT1Y4
hkB0quF9AgMBAAECggEADVXIJaZ6ckACu1/W13cpRCceWREfrNU2H03VW0x7bQ4j
8JGTjkaGyNYHih8P/kE9UNV9FRjc/4yv5JrMWA0eb5qsoXE860PNQ4aaKBVFV12V
Drj8TIpfu13lqfQNcIka8e3s8xcT+gkKxYTkDcD5vaCnzS2kLqUeWSODalmwItHs
gFEM+NiYv/7MKJCnLZ/M4V/MpME4GpX5rOuplDHTMVnfPZ3fmxbedmNjsg09FiQU
ye4zVKZD+uRMmWBU3/EB+P/SrprcMoXQ0LOFfiwUS5Fk58SF7NGI1IKjiUSXMc99
wTmjceoNqSAbbsiEC463e+kFzzogyD4mwhjounW7KQKBgQDcTDrnYWJ5jwJg3TeW
3qP/KdNHWdYrrR0COLpRhJfex1lcA8HIf/WV18rbQkFkpIM1rPexGfQOUsJvZXXT
wrlrHVjlS3iPDhgUcsCDA2BCKylpUCCBJzbk8ODlL3gLftd1XPn0nrrxx2gr53zz
s72MQFYjNFjtLzaY3w1WkBZTNQKBgQC7eH3bX6Hp/IEj29Ezg54RP/AfWb6NA09z
h3aHBaDMdXbOtXnVLnrtn+sKC/KfL/Mer4aA8FPdw4PWq7PbUugGZPz/9HL20CmM
V6hBZryzFItUe2fQrwaV0EWNmGTqwWBVBORgWKg4YZxw0VpQWejJO70c6E68kKhO
AGXXk00WKQKBgQCJtSExGAAdqpa7BC3Gon/zdiq7NF4byUgT5nAZmv/wY77pNPQC
qHJU66LD8qO8DNZ0TB49V9LmzTb7uXmxGM0dNygllUrUaeQFjEHo48hdNGvbiBn5
ghDfhe+fdE/fJ7f5hlg9YKfNkW/92eOS122KaYEu2n8oLNY9M1k8Hi/GbQKBgQCi
/AlnfMgW1mkr1MMXZzk4Q/8uMmbgz9z2UvIwRytaNlFZOxs1xNgo2RyNun9v+E8F
AZMNbGNtbLqlGtgeOQDx9kCjAlIk1CsbEWZ9naU2iAjuJO/H1TMDcnPVu4UZN4/Z
uowWW128ztgkmU5Mhy5ELYSnqiwx8g3w6pWgCzc8qQKBgCBoq+r/vDH/I5wdHyVy
nVdNWKHti+9hosMZkik70XM/br/GjFI5n3t81V4QR82Xew8TvyI3/hCz9gZo/oRV
MzhQp1eqQ6yHbKbYpTTm7qKFcs7FTYnqUqn748Ht03ABmYOq7AAPQQ9JT9qlL+pd
i9IKM2XNPJ1uRFaNxIJksrQW
-----END PRIVATE KEY-----
";
const BENCH_RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoVNfEKDdkplqzlM0hzNq
Bdq29kydOFwZx3Sf7AzXOzQirCfwBTO8oSK9SvciDSwCyqZo3bmFgdWDhESdKvdW
81owLvd5uI8F4xiqJ9VxJnOJ03Z8GL82ZEjGwOk6qUZUGDBuoMqXcEtFOMZEk3EG
faZl/sTE7mAwr7FkNnG+4YpbO4Pb5r4rmQH432XNgQhmT1r9KCHqwozd2g5ZP3gL
2ZDcAW8u6RhrDFY9pgzAWpV96X5uqcCcB7uTWfhNDVTiRnCsw1STlC63xRjUj821
F+bC1ePdUZDVyMreGIAc7/kz1V65UWMe+AmcwJaofRG239h/V08d409WOIZAdKrh
fQIDAQAB
-----END PUBLIC KEY-----
";
const SECRET: &str = "bench-secret-that-is-at-least-32-bytes-long";

/// Both keys configured, as a deployment accepting either would be.
fn authenticator() -> Authenticator {
    Authenticator::new(AuthConfig {
        jwt_secret: Some(SECRET.to_owned()),
        jwt_public_key: Some(BENCH_RSA_PUBLIC_PEM.to_owned()),
        leeway: std::time::Duration::from_secs(30),
        issuer: Some("https://issuer.example".to_owned()),
        audience: Some("agentd".to_owned()),
        api_keys: vec![
            "first-api-key-0123456789".to_owned(),
            "second-api-key-0123456789".to_owned(),
        ],
        ..AuthConfig::default()
    })
    .expect("bench config")
}

/// `Bearer <token>` for a typical token: sub, role, iss, aud, iat, exp.
fn bearer(alg: Algorithm) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": "user-1234",
        "role": "user",
        "iss": "https://issuer.example",
        "aud": "agentd",
        "iat": now,
        "exp": now + 3600,
    });
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(BENCH_RSA_PRIVATE_PEM.as_bytes()).unwrap(),
        _ => EncodingKey::from_secret(SECRET.as_bytes()),
    };
    let token = encode(&Header::new(alg), &claims, &key).unwrap();
    format!("Bearer {token}").into_bytes()
}

#[divan::bench]
fn hs256_verify(bencher: Bencher) {
    let auth = authenticator();
    let header = bearer(Algorithm::HS256);
    assert!(auth.check_bearer(Some(&header)).unwrap().is_some());
    bencher.bench_local(|| auth.check_bearer(black_box(Some(&header[..]))));
}

#[divan::bench]
fn rs256_verify(bencher: Bencher) {
    let auth = authenticator();
    let header = bearer(Algorithm::RS256);
    assert!(auth.check_bearer(Some(&header)).unwrap().is_some());
    bencher.bench_local(|| auth.check_bearer(black_box(Some(&header[..]))));
}

/// What a client can make the server do for free: a well-formed RS256 token with a
/// wrong signature costs a full verify.
#[divan::bench]
fn rs256_bad_signature(bencher: Bencher) {
    let auth = authenticator();
    let mut header = bearer(Algorithm::RS256);
    let last = header.len() - 2;
    header[last] = if header[last] == b'A' { b'B' } else { b'A' };
    assert!(auth.check_bearer(Some(&header)).is_err());
    bencher.bench_local(|| auth.check_bearer(black_box(Some(&header[..]))));
}

#[divan::bench(args = ["hit", "miss"])]
fn api_key_check(bencher: Bencher, case: &str) {
    let auth = authenticator();
    let key: &[u8] = if case == "hit" {
        b"second-api-key-0123456789"
    } else {
        b"second-api-key-012345678X"
    };
    assert_eq!(auth.check_api_key(Some(key)).is_ok(), case == "hit");
    bencher.bench_local(|| auth.check_api_key(black_box(Some(key))));
}
