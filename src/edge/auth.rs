//! Authentication at the edge: the guide's `@fastify/jwt` bearer tokens on `/agent`
//! and the `X-API-Key` check on `POST /agent-api`.
//!
//! Keys are parsed once, in [`Authenticator::new`]; a check is a pure function of the
//! header value and the clock, so it never blocks and never fails open.
//!
//! - **JWT.** The algorithm is pinned per key: HS256 for `JWT_SECRET`, RS256 for
//!   `JWT_PUBLIC_KEY`. With both configured the token header's `alg` picks between
//!   those two only, each checked against its own key, so `alg: none`, any other
//!   algorithm and the key confusion attack (an HS256 token whose HMAC secret is the
//!   RSA public key) are refused. `exp` is required and `nbf` is checked, both with the
//!   leeway; `iss` and `aud` are required and checked when configured (a token's `aud`
//!   is not looked at when no audience is configured, as `@fastify/jwt` does). A token
//!   over [`MAX_TOKEN_BYTES`] is refused before it is parsed.
//! - **`kid` and embedded keys.** There is exactly one key per algorithm and no key
//!   set, so the `kid` header is ignored: a token is accepted whatever its `kid` if its
//!   signature verifies with the configured key. `jwk`, `jku`, `x5u` and `x5c` headers
//!   are never used to find a key. A `crit` header is refused: no extension is
//!   understood.
//! - **Roles.** `/agent` allows the roles in `agent_roles` (the wiring's default, and
//!   the default here for an empty list, is `user` and `admin`). A token
//!   without a `role` claim (or with `role: null`) counts as `user`; a role that is not
//!   a string is not allowed. Unknown claims are ignored.
//! - **Where a token comes from.** `Authorization: Bearer …`; on `/stream` and `/ws`
//!   also the `access_token` query parameter (RFC 6750 §2.3, [`access_token_param`]),
//!   since a browser's EventSource and WebSocket cannot send headers. A URL is logged
//!   only through [`redacted_uri`], which hides that parameter's value.
//! - **API keys.** The presented key and every configured key are compared as SHA-256
//!   digests in constant time, all of them every time, so neither a key's content nor
//!   its length shows in the timing.
//!
//! It must never log, echo or put into an error a token, a secret or an API key (the
//! errors carry no text from the request; `AuthConfig`'s `Debug` redacts its secrets),
//! never compare a secret with `==`, and never accept `alg: none` or a key used for
//! another algorithm than its own.
//!
//! Crypto backend: jsonwebtoken's `aws_lc_rs`. A whole RS256 check (2048-bit key) takes
//! ~17 µs with it and ~130 µs with `rust_crypto`, which re-parses the key on every
//! verify; HS256 ~2.5 µs either way (`cargo bench --bench auth`).

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// A token longer than this (bytes, after `Bearer `) is refused without being parsed.
/// 8 KiB is far above any real token (a few hundred bytes) and bounds the work one
/// request can ask for.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The largest accepted leeway. A bigger one makes `exp` meaningless; it is refused at
/// start rather than silently cut.
pub const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// RSA public keys below this many bits are refused at start (the backend refuses to
/// verify with them anyway; saying so at start is clearer).
pub const MIN_RSA_BITS: usize = 2048;

/// The roles allowed on `/agent` when `agent_roles` is empty.
pub const DEFAULT_AGENT_ROLES: [&str; 2] = ["user", "admin"];

/// The role of a token that has no `role` claim.
const DEFAULT_ROLE: &str = "user";

/// What the authenticator is built from (the wiring fills it from the environment).
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// HS256 secret (`JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// RS256 public key, PEM text, `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1)
    /// (`JWT_PUBLIC_KEY`; the wiring reads a file path or inline PEM).
    pub jwt_public_key: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (`JWT_LEEWAY`, 30 s in the wiring; at most
    /// [`MAX_LEEWAY`]; whole seconds).
    pub leeway: Duration,
    /// Required `iss` (`JWT_ISSUER`).
    pub issuer: Option<String>,
    /// Required `aud` (`JWT_AUDIENCE`).
    pub audience: Option<String>,
    /// `AUTH_REQUIRED`: a token is then required on `/agent`.
    pub required: bool,
    /// Roles allowed on `/agent` (empty: [`DEFAULT_AGENT_ROLES`]).
    pub agent_roles: Vec<String>,
    /// Keys accepted on `POST /agent-api` (`API_KEY_SECRET`, a comma list); each is
    /// trimmed, and an empty one is refused.
    pub api_keys: Vec<String>,
}

impl fmt::Debug for AuthConfig {
    // Hand-written so that a config printed at start or in a panic shows no secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "jwt_public_key",
                &self.jwt_public_key.as_ref().map(|_| "[PEM]"),
            )
            .field("leeway", &self.leeway)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("required", &self.required)
            .field("agent_roles", &self.agent_roles)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .finish()
    }
}

/// The claims `/agent` uses from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `sub`, when it is a string.
    pub sub: Option<String>,
    /// `role` as in the token (`None` when absent or null, which counts as `user`).
    pub role: Option<String>,
}

/// Why a request was refused. Carries no text from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: missing when required, malformed, bad signature, expired, not yet valid,
    /// wrong `iss`/`aud`, algorithm not allowed, oversized.
    #[error("Invalid token")]
    InvalidToken,
    /// 403: a valid token whose role is not allowed.
    #[error("Forbidden")]
    Forbidden,
    /// 401 on `/agent-api`: missing or wrong `X-API-Key`.
    #[error("Invalid API key")]
    InvalidApiKey,
}

/// One verification key with the validation rules pinned to its algorithm.
struct JwtKey {
    key: DecodingKey,
    validation: Validation,
}

/// Checks bearer tokens and API keys; built once at start and shared by all workers.
pub struct Authenticator {
    hs256: Option<JwtKey>,
    rs256: Option<JwtKey>,
    required: bool,
    agent_roles: Box<[Box<str>]>,
    /// SHA-256 of each configured API key.
    api_keys: Box<[[u8; 32]]>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("required", &self.required)
            .field("agent_roles", &self.agent_roles)
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

impl Authenticator {
    /// Parses the keys. Refuses (with a message naming the setting, never its value):
    /// an empty `JWT_SECRET`, a `JWT_SECRET` equal to the public key's PEM, a
    /// `JWT_PUBLIC_KEY` that is not an RSA public key of at least [`MIN_RSA_BITS`] bits,
    /// `AUTH_REQUIRED` with neither key, a leeway over [`MAX_LEEWAY`], and an empty API
    /// key.
    pub fn new(cfg: AuthConfig) -> Result<Authenticator, String> {
        if cfg.leeway > MAX_LEEWAY {
            return Err(format!(
                "JWT_LEEWAY must be at most {} s",
                MAX_LEEWAY.as_secs()
            ));
        }
        let leeway = cfg.leeway.as_secs();

        let hs256 = match cfg.jwt_secret.as_deref() {
            None => None,
            Some("") => return Err("JWT_SECRET is empty".to_owned()),
            Some(secret) => {
                // With the public key as the HMAC secret anyone could forge HS256 tokens.
                if let Some(pem) = cfg.jwt_public_key.as_deref() {
                    if secret.trim().as_bytes().ct_eq(pem.trim().as_bytes()).into() {
                        return Err("JWT_SECRET must not be the JWT_PUBLIC_KEY".to_owned());
                    }
                }
                Some(JwtKey {
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    validation: validation(Algorithm::HS256, leeway, &cfg),
                })
            }
        };

        let rs256 = match cfg.jwt_public_key.as_deref() {
            None => None,
            Some(pem) => Some(JwtKey {
                key: rsa_public_key(pem)?,
                validation: validation(Algorithm::RS256, leeway, &cfg),
            }),
        };

        if cfg.required && hs256.is_none() && rs256.is_none() {
            return Err(
                "AUTH_REQUIRED needs a key to verify tokens: set JWT_SECRET or JWT_PUBLIC_KEY"
                    .to_owned(),
            );
        }

        let agent_roles: Box<[Box<str>]> = if cfg.agent_roles.is_empty() {
            DEFAULT_AGENT_ROLES.iter().map(|r| (*r).into()).collect()
        } else {
            cfg.agent_roles.iter().map(|r| r.as_str().into()).collect()
        };

        let mut api_keys = Vec::with_capacity(cfg.api_keys.len());
        for key in &cfg.api_keys {
            if key.trim().is_empty() {
                return Err("API_KEY_SECRET contains an empty key".to_owned());
            }
            // A header value never carries surrounding whitespace, so a configured key
            // that does could never match.
            api_keys.push(sha256(key.trim().as_bytes()));
        }

        Ok(Authenticator {
            hs256,
            rs256,
            required: cfg.required,
            agent_roles,
            api_keys: api_keys.into_boxed_slice(),
        })
    }

    /// True when a JWT key is configured; without one [`Self::check_bearer`] accepts
    /// every request without looking at it.
    pub fn is_jwt_configured(&self) -> bool {
        self.hs256.is_some() || self.rs256.is_some()
    }

    /// Checks the `Authorization` header value (absent: `None`). As the guide: a token
    /// is verified whenever the header is present, and required only when `required`.
    /// `Ok(None)`: no header and none required, or no JWT key configured.
    pub fn check_bearer(&self, authorization: Option<&[u8]>) -> Result<Option<Claims>, AuthError> {
        if !self.is_jwt_configured() {
            return Ok(None);
        }
        let Some(value) = authorization else {
            return if self.required {
                Err(AuthError::InvalidToken)
            } else {
                Ok(None)
            };
        };
        let token = bearer_token(value).ok_or(AuthError::InvalidToken)?;
        self.check_token(Some(token))
    }

    /// Checks a bare token (from `Authorization: Bearer`, or from the `access_token`
    /// query parameter on the routes a browser opens without headers). `None`: no token
    /// sent, refused only when `required`. `Ok(None)` as [`Self::check_bearer`].
    pub fn check_token(&self, token: Option<&[u8]>) -> Result<Option<Claims>, AuthError> {
        if !self.is_jwt_configured() {
            return Ok(None);
        }
        let Some(token) = token else {
            return if self.required {
                Err(AuthError::InvalidToken)
            } else {
                Ok(None)
            };
        };
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken);
        }
        let key = self.key_for(token)?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.key, &key.validation)
            .map_err(|_| AuthError::InvalidToken)?;
        if data.header.crit.is_some() {
            return Err(AuthError::InvalidToken);
        }
        let role = match data.claims.role {
            None => None,
            Some(StringOrOther::String(role)) => Some(role),
            Some(StringOrOther::Other(_)) => return Err(AuthError::Forbidden),
        };
        let effective = role.as_deref().unwrap_or(DEFAULT_ROLE);
        if !self.agent_roles.iter().any(|r| &**r == effective) {
            return Err(AuthError::Forbidden);
        }
        let sub = match data.claims.sub {
            Some(StringOrOther::String(sub)) => Some(sub),
            _ => None,
        };
        Ok(Some(Claims { sub, role }))
    }

    /// Checks the `X-API-Key` header value: `Ok` when it equals one of the configured
    /// keys. Constant time: digests are compared, against every key, with no early
    /// exit. Refused when absent, and always when no key is configured.
    pub fn check_api_key(&self, key: Option<&[u8]>) -> Result<(), AuthError> {
        let Some(key) = key else {
            return Err(AuthError::InvalidApiKey);
        };
        let presented = sha256(key);
        let mut found = subtle::Choice::from(0);
        for configured in self.api_keys.iter() {
            found |= configured.ct_eq(&presented);
        }
        if bool::from(found) {
            Ok(())
        } else {
            Err(AuthError::InvalidApiKey)
        }
    }

    /// The key for this token: the only one configured, or with both the one the
    /// header's `alg` names (HS256 or RS256; anything else is refused).
    fn key_for(&self, token: &[u8]) -> Result<&JwtKey, AuthError> {
        match (&self.hs256, &self.rs256) {
            (Some(key), None) | (None, Some(key)) => Ok(key),
            (Some(hs), Some(rs)) => {
                let header =
                    jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
                match header.alg {
                    Algorithm::HS256 => Ok(hs),
                    Algorithm::RS256 => Ok(rs),
                    _ => Err(AuthError::InvalidToken),
                }
            }
            (None, None) => Err(AuthError::InvalidToken),
        }
    }
}

/// The token after a `Bearer` scheme (any case) and at least one space.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    if value.len() <= SCHEME.len()
        || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        || value[SCHEME.len()] != b' '
    {
        return None;
    }
    let token = value[SCHEME.len() + 1..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The `access_token` query parameter (RFC 6750 §2.3), percent-decoded (`+` is a
/// space, as in a form), or `None` when the query has none. The first one counts. A
/// value over [`MAX_TOKEN_BYTES`] is cut to one byte more, so that it is refused without
/// decoding more than that.
pub fn access_token_param(query: Option<&str>) -> Option<Vec<u8>> {
    let raw = query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))?;
    let bytes: Vec<u8> = raw
        .bytes()
        .take(3 * (MAX_TOKEN_BYTES + 1))
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    let mut token: Vec<u8> = percent_encoding::percent_decode(&bytes).collect();
    token.truncate(MAX_TOKEN_BYTES + 1);
    Some(token)
}

/// The request's URI with the value of every `access_token` query parameter replaced
/// by `[REDACTED]`, for logs: a token in a URL must never reach a log line. A plain
/// clone (reference counts) when there is nothing to hide.
pub fn redacted_uri(uri: &http::Uri) -> http::Uri {
    let Some(query) = uri.query().filter(|q| q.contains("access_token=")) else {
        return uri.clone();
    };
    let mut pq = String::with_capacity(uri.path().len() + query.len() + 12);
    pq.push_str(uri.path());
    pq.push('?');
    for (i, kv) in query.split('&').enumerate() {
        if i > 0 {
            pq.push('&');
        }
        if kv.starts_with("access_token=") {
            pq.push_str("access_token=[REDACTED]");
        } else {
            pq.push_str(kv);
        }
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    // Rebuilding cannot fail for a URI that parsed; if it did, log only the path.
    http::Uri::from_parts(parts)
        .unwrap_or_else(|_| http::Uri::try_from(uri.path()).unwrap_or_default())
}

/// Validation rules for one algorithm: only that algorithm, `exp` required, `nbf`
/// checked, the leeway on both, `iss`/`aud` required and checked when configured.
fn validation(alg: Algorithm, leeway: u64, cfg: &AuthConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &cfg.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        // jsonwebtoken refuses any token with an `aud` when none is configured;
        // `@fastify/jwt` does not look at it then, and neither do we.
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// Parses an RSA public key PEM and checks, with the crypto backend, that it is a
/// usable key of at least [`MIN_RSA_BITS`] bits.
fn rsa_public_key(pem: &str) -> Result<DecodingKey, String> {
    // The PEM parser would take a private key and hand its DER on; say what is wrong.
    if pem.contains("PRIVATE KEY") {
        return Err(
            "JWT_PUBLIC_KEY holds a private key: give the RSA public key (PEM) instead".to_owned(),
        );
    }
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
        "JWT_PUBLIC_KEY is not an RSA public key in PEM form \
         (-----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC KEY-----)"
            .to_owned()
    })?;
    // The PEM step only unwraps ASN.1; building a JWK makes the backend parse the key.
    let jwk = jsonwebtoken::jwk::Jwk::from_decoding_key(&key, Some(Algorithm::RS256))
        .map_err(|_| "JWT_PUBLIC_KEY is not a valid RSA public key".to_owned())?;
    let bits = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) => modulus_bits(&rsa.n),
        _ => 0,
    };
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "JWT_PUBLIC_KEY is a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
        ));
    }
    Ok(key)
}

/// Bits in an RSA modulus given as unpadded base64url (as a JWK's `n`, big-endian
/// with no leading zero byte).
fn modulus_bits(n_b64: &str) -> usize {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    }
    let s = n_b64.as_bytes();
    let len = s.len() * 6 / 8;
    let (Some(&a), Some(&b)) = (s.first(), s.get(1)) else {
        return 0;
    };
    let (Some(a), Some(b)) = (digit(a), digit(b)) else {
        return 0;
    };
    // The first byte is the first digit's 6 bits and the top 2 of the second.
    let first = (a << 2) | (b >> 4);
    (len - 1) * 8 + (8 - first.leading_zeros() as usize)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The claims read from a token; everything else in it is ignored.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<StringOrOther>,
    #[serde(default)]
    role: Option<StringOrOther>,
}

/// A claim that should be a string; anything else is kept apart rather than failing
/// the whole token.
#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrOther {
    String(String),
    Other(serde::de::IgnoredAny),
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
    use serde_json::{json, Value};

    // TEST KEYS ONLY: generated for these tests with
    // `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`; never use them
    // for anything else.
    const TEST_RSA_PRIVATE_PEM: &str = include_str!("../../tests/data/rsa-test-private.pem");
    const TEST_RSA_PUBLIC_PEM: &str = include_str!("../../tests/data/rsa-test-public.pem");
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
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
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
        assert!(
            !shown.contains(SECRET) && !shown.contains("api-key-value") && !shown.contains("MII")
        );
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
}
