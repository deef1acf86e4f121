//! The WebSocket opening handshake (RFC 6455 §4.2): the upgrade request's checks and
//! the `Sec-WebSocket-Accept` key.
//!
//! Pure functions of the request head: they must never read the body, touch the
//! socket or decide anything about agents.

use http::{header, HeaderMap, HeaderValue, Method, Version};

use crate::protocol::request::Issue;

fn issue(path: &'static str, message: &'static str) -> Issue {
    Issue {
        path: path.into(),
        message: message.into(),
    }
}

/// True when a comma-separated header (all its lines) has `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// A `Sec-WebSocket-Key`: base64 of 16 bytes, so 22 base64 characters then `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Checks a WebSocket opening handshake (RFC 6455 §4.2.1). Returns the key, or every
/// problem found and whether the version was one of them.
pub(super) fn check_upgrade<'h>(
    method: &Method,
    version: Version,
    headers: &'h HeaderMap,
) -> Result<&'h [u8], (Vec<Issue>, bool)> {
    let mut issues = Vec::new();
    if version != Version::HTTP_11 {
        issues.push(issue(
            "/version",
            "WebSocket upgrades need HTTP/1.1 (RFC 6455)",
        ));
    }
    if method != Method::GET {
        issues.push(issue("/method", "must be GET"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        issues.push(issue("/headers/connection", "must include 'upgrade'"));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        issues.push(issue("/headers/upgrade", "must be 'websocket'"));
    }
    let bad_version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13");
    if bad_version {
        issues.push(issue("/headers/sec-websocket-version", "must be 13"));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if is_valid_key(k.as_bytes().trim_ascii()) => {
            Some(k.as_bytes().trim_ascii())
        }
        _ => {
            issues.push(issue(
                "/headers/sec-websocket-key",
                "must be one base64-encoded 16-byte value",
            ));
            None
        }
    };
    match key {
        Some(key) if issues.is_empty() => Ok(key),
        _ => Err((issues, bad_version)),
    }
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + the RFC 6455 GUID)).
pub(super) fn accept_key(key: &[u8]) -> HeaderValue {
    use aws_lc_rs::digest;
    use base64::Engine;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    // 20 bytes of SHA-1 are exactly 28 base64 characters.
    let mut out = [0u8; 28];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(ctx.finish().as_ref(), &mut out)
        .unwrap_or(0);
    // Base64 characters are always a valid header value.
    HeaderValue::from_bytes(&out[..n]).unwrap_or_else(|_| HeaderValue::from_static(""))
}
