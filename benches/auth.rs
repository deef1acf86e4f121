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
const BENCH_RSA_PRIVATE_PEM: &str = include_str!("../tests/data/rsa-test-private.pem");
const BENCH_RSA_PUBLIC_PEM: &str = include_str!("../tests/data/rsa-test-public.pem");
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
