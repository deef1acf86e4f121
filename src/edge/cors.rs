//! CORS as the guide's `@fastify/cors` registration: allowed origins from
//! `CORS_ORIGINS` (a comma list, or `*`), credentials allowed, methods GET, POST and
//! OPTIONS. An allowed origin is reflected (with credentials a literal `*` is not valid);
//! a disallowed origin gets no CORS headers at all. Preflights are answered here and
//! never reach a handler. Responses to an allowed origin expose agentd's own headers
//! ([`EXPOSE`]) to the page's script, which otherwise sees only the CORS-safelisted
//! ones. It must never reflect an origin that is not allowed.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method};

pub static METHODS: HeaderValue = HeaderValue::from_static("GET, POST, OPTIONS");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
static MAX_AGE: HeaderValue = HeaderValue::from_static("600");
/// `Access-Control-Expose-Headers`: the request id, the rate-limit figures and
/// `Retry-After` (a browser client needs them to back off), the response time and a
/// resumable answer's stream id.
pub static EXPOSE: HeaderValue = HeaderValue::from_static(
    "x-request-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, \
     x-ratelimit-reset, x-response-time, x-stream-id",
);

#[derive(Clone, Debug)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// `spec`: `*` or a comma-separated list of origins.
    pub fn new(spec: &str) -> Cors {
        let origins: Vec<String> = spec
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins,
        }
    }

    fn allows(&self, origin: &[u8]) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// True for a CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`).
    pub fn is_preflight(method: &Method, req: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && req.contains_key(header::ORIGIN)
            && req.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The allowed request origin, if any.
    pub fn allowed_origin(&self, req: &HeaderMap) -> Option<HeaderValue> {
        let o = req.get(header::ORIGIN)?;
        self.allows(o.as_bytes()).then(|| o.clone())
    }

    /// Headers for an actual (non-preflight) response.
    pub fn apply(&self, origin: Option<HeaderValue>, res: &mut HeaderMap) {
        if let Some(o) = origin {
            res.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            res.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
            res.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE.clone());
            res.append(header::VARY, ORIGIN.clone());
        }
    }

    /// Whether a request with these headers may open a WebSocket: one without `Origin`
    /// (not a browser) or from an allowed origin. Browsers apply no CORS to
    /// WebSockets, so without this check any site could open one with the visitor's
    /// cookies (cross-site WebSocket hijacking).
    pub fn allows_websocket(&self, req: &HeaderMap) -> bool {
        match req.get(header::ORIGIN) {
            None => true,
            Some(o) => self.allows(o.as_bytes()),
        }
    }

    /// Whether a request from a browser page may reach an endpoint that does not rely
    /// on CORS alone (`POST /mcp`, the MCP transports' DNS-rebinding protection): one
    /// without `Origin` (not a browser) or from an allowed origin.
    pub fn allows_request_origin(&self, req: &HeaderMap) -> bool {
        self.allows_websocket(req)
    }

    /// Headers for a preflight answer (204); `requested_headers` is reflected.
    pub fn apply_preflight(
        &self,
        origin: Option<HeaderValue>,
        requested_headers: Option<HeaderValue>,
        res: &mut HeaderMap,
    ) {
        if origin.is_none() {
            return;
        }
        self.apply(origin, res);
        res.insert(header::ACCESS_CONTROL_ALLOW_METHODS, METHODS.clone());
        if let Some(h) = requested_headers {
            res.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h);
        }
        res.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_wildcards() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://a.example"),
        );
        assert!(Cors::new("*").allowed_origin(&h).is_some());
        assert!(Cors::new("https://b.example, https://a.example/")
            .allowed_origin(&h)
            .is_some());
        assert!(Cors::new("https://b.example").allowed_origin(&h).is_none());
        assert!(Cors::new("https://b.example")
            .allowed_origin(&HeaderMap::new())
            .is_none());
    }
}
