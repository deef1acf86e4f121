//! Edge policies over real sockets: security headers on every route and status, CORS
//! preflights and simple requests.

mod support;

use support::*;

const SECURITY: [&str; 12] = [
    "content-security-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "origin-agent-cluster",
    "referrer-policy",
    "strict-transport-security",
    "x-content-type-options",
    "x-dns-prefetch-control",
    "x-download-options",
    "x-frame-options",
    "x-permitted-cross-domain-policies",
    "x-xss-protection",
];

#[tokio::test]
async fn security_headers_on_every_route_and_status() {
    let server = start_echo();
    let c = client();
    let responses = vec![
        c.get(server.url("/health")).send().await.unwrap(),
        c.get(server.url("/health/live")).send().await.unwrap(),
        c.get(server.url("/nope")).send().await.unwrap(),
        c.get(server.url("/agent")).send().await.unwrap(),
        post_json(&server, "/agent", body("x")).await,
        post_json(&server, "/agent", "{".into()).await,
        c.get(server.url("/stream?prompt=x")).send().await.unwrap(),
    ];
    for res in responses {
        for h in SECURITY {
            assert!(
                res.headers().contains_key(h),
                "{h} missing on {} {}",
                res.url(),
                res.status()
            );
        }
        assert_eq!(res.headers()["x-frame-options"], "SAMEORIGIN");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert!(res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("style-src 'self' 'unsafe-inline'"));
        assert!(!res.headers().contains_key("cross-origin-embedder-policy"));
    }
    let mut cfg = config();
    cfg.security_headers = false;
    let server = start_echo_with(cfg);
    let res = c.get(server.url("/health/live")).send().await.unwrap();
    assert!(!res.headers().contains_key("x-frame-options"));
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    let mut cfg = config();
    cfg.cors_origins = "https://app.example, https://other.example".into();
    let server = start_echo_with(cfg);
    let c = client();
    // Preflight from an allowed origin: answered without reaching a handler.
    let res = c
        .request(reqwest::Method::OPTIONS, server.url("/agent"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, OPTIONS");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, authorization"
    );
    assert!(h.get_all("vary").iter().any(|v| v == "Origin"));
    // Preflight from a disallowed origin: no CORS headers.
    let res = c
        .request(reqwest::Method::OPTIONS, server.url("/agent"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    assert!(!res.headers().contains_key("access-control-allow-methods"));
    // Simple requests.
    let res = c
        .post(server.url("/agent"))
        .header("origin", "https://other.example")
        .header("content-type", "application/json")
        .body(body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://other.example"
    );
    assert_well_formed(&events(res).await);
    let res = c
        .get(server.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    let res = c.get(server.url("/health")).send().await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    // `*` reflects any origin (credentials forbid a literal `*`).
    let server = start_echo();
    let res = c
        .get(server.url("/health/live"))
        .header("origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://any.example"
    );
}
