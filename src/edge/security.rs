//! Security headers: the helmet set the guide registers (with its CSP directives and
//! `crossOriginEmbedderPolicy: false`), built once at start and added to every
//! response. Adding them costs no allocation: names and values are static.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Helmet's defaults merged with the guide's directives.
pub const CSP: &str = "default-src 'self';script-src 'self';style-src 'self' 'unsafe-inline';\
base-uri 'self';font-src 'self' https: data:;form-action 'self';frame-ancestors 'self';\
img-src 'self' data:;object-src 'none';script-src-attr 'none';upgrade-insecure-requests";

static HEADERS: [(HeaderName, HeaderValue); 12] = [
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    ),
    (
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    ),
    (
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    ),
    (
        HeaderName::from_static("origin-agent-cluster"),
        HeaderValue::from_static("?1"),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ),
    (
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    ),
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (
        header::X_DNS_PREFETCH_CONTROL,
        HeaderValue::from_static("off"),
    ),
    (
        HeaderName::from_static("x-download-options"),
        HeaderValue::from_static("noopen"),
    ),
    (
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    ),
    (
        HeaderName::from_static("x-permitted-cross-domain-policies"),
        HeaderValue::from_static("none"),
    ),
    (header::X_XSS_PROTECTION, HeaderValue::from_static("0")),
];

/// Adds the security headers to `h`.
pub fn apply(h: &mut HeaderMap) {
    for (n, v) in HEADERS.iter() {
        h.insert(n.clone(), v.clone());
    }
}

/// The names, for tests and docs.
pub fn names() -> impl Iterator<Item = &'static str> {
    HEADERS.iter().map(|(n, _)| n.as_str())
}
