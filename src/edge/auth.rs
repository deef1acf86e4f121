//! Authentication at the edge: the guide's `@fastify/jwt` bearer tokens on the agent
//! routes (`/agent`, `/assist`, `/stream`, `/ws`) and the `X-API-Key` check on
//! `POST /agent-api`.
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
//! - **Roles.** The agent routes allow the roles in `agent_roles` (the wiring's
//!   default, and the default here for an empty list, is `user` and `admin`). A token
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

/// The roles allowed on the agent routes when `agent_roles` is empty.
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

    /// True when at least one API key is configured (`API_KEY_SECRET`).
    pub fn has_api_keys(&self) -> bool {
        !self.api_keys.is_empty()
    }

    /// Checks the `Authorization` header value (absent: `None`). As the guide: a token
    /// is verified whenever the header is present, and required only when `required`.
    /// `Ok(None)`: no header and none required, or no JWT key configured.
    pub fn check_bearer(&self, authorization: Option<&[u8]>) -> Result<Option<Claims>, AuthError> {
        if !self.is_jwt_configured() {
            return Ok(None);
        }
        match authorization {
            None => self.check_token(None),
            Some(value) => {
                self.check_token(Some(bearer_token(value).ok_or(AuthError::InvalidToken)?))
            }
        }
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

    /// Who presented `key`, for matching later requests by the same client (the start
    /// of its digest: never the key itself).
    pub fn api_key_principal(key: &[u8]) -> String {
        let d = sha256(key);
        let mut s = String::with_capacity(4 + 24);
        s.push_str("key:");
        for b in &d[..12] {
            s.push_str(&format!("{b:02x}"));
        }
        s
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
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
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
/// with no leading zero byte); 0 when it is not base64url.
fn modulus_bits(n_b64: &str) -> usize {
    use base64::Engine;
    let Ok(n) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n_b64) else {
        return 0;
    };
    match n.first() {
        None => 0,
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
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
mod tests;
