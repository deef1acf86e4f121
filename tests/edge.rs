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

fn gunzip_with_the_gzip_tool(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the gzip tool");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn sse_is_compressed_event_by_event() {
    use std::io::Write;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let agent = Arc::new(SlowStreamAgent::new(3, Duration::from_millis(400)));
    let server = start(config(), agent);
    let b = body("x");
    let req = raw_agent_request(
        &b,
        "Accept-Encoding: br;q=1, gzip;q=0.9, deflate;q=0.5\r\nConnection: close\r\n",
    );
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let started = Instant::now();
    // Read until the first event decodes, long before the stream ends (3 x 400 ms).
    let mut raw = Vec::new();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut fed = 0;
    loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        raw.extend_from_slice(&buf[..n]);
        if let Some(p) = find(&raw, b"\r\n\r\n") {
            // Feed the chunked body's payloads seen so far.
            let body = &raw[p + 4..];
            let mut i = 0;
            let mut payload = Vec::new();
            while let Some(e) = find(&body[i..], b"\r\n") {
                let size = usize::from_str_radix(std::str::from_utf8(&body[i..i + e]).unwrap(), 16)
                    .unwrap();
                if body.len() < i + e + 2 + size + 2 {
                    break;
                }
                payload.extend_from_slice(&body[i + e + 2..i + e + 2 + size]);
                i += e + 2 + size + 2;
            }
            decoder.write_all(&payload[fed..]).unwrap();
            decoder.flush().unwrap();
            fed = payload.len();
            if String::from_utf8_lossy(decoder.get_ref()).contains("chunk 0") {
                break;
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "first event decoded early"
    );
    let head =
        String::from_utf8_lossy(&raw[..find(&raw, b"\r\n\r\n").unwrap()]).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"));
    // The whole stream, decoded by an independent decoder.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    let p = find(&raw, b"\r\n\r\n").unwrap();
    let mut body = &raw[p + 4..];
    let mut payload = Vec::new();
    loop {
        let e = find(body, b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..e]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        payload.extend_from_slice(&body[e + 2..e + 2 + size]);
        body = &body[e + 2 + size + 2..];
    }
    let text = gunzip_with_the_gzip_tool(&payload);
    assert!(text.contains("chunk 2"));
    assert!(text.ends_with("\"metadata\":null}\n\n"));
}

#[tokio::test]
async fn full_bodies_are_compressed_above_the_threshold_only() {
    let mut cfg = config();
    cfg.compress_threshold = 50;
    let server = start_echo_with(cfg);
    let c = client();
    let res = c
        .get(server.url("/health"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let raw = res.bytes().await.unwrap();
    let text = gunzip_with_the_gzip_tool(&raw);
    assert!(text.contains("\"status\":\"healthy\""));
    let res = c
        .get(server.url("/health/live"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        !res.headers().contains_key("content-encoding"),
        "15 bytes stay plain"
    );
    let res = c
        .get(server.url("/health"))
        .header("accept-encoding", "deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "deflate");
    let res = c
        .get(server.url("/health"))
        .header("accept-encoding", "identity")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("content-encoding"));
}

#[tokio::test]
async fn compression_level_reaches_the_encoder() {
    // Both formats record the level class in their header: gzip's XFL byte (2 = best,
    // 4 = fastest, RFC 1952) and zlib's FLEVEL bits (0 = fastest, 3 = best, RFC 1950).
    for (level, xfl, flevel) in [(1u32, 4u8, 0u8), (9, 2, 3)] {
        let mut cfg = config();
        cfg.compress_threshold = 50;
        cfg.compression_level = level;
        let server = start_echo_with(cfg);
        let c = client();
        for (enc, sse) in [("gzip", false), ("deflate", false), ("gzip", true)] {
            let req = if sse {
                c.post(server.url("/agent"))
                    .header("content-type", "application/json")
                    .body(body("level"))
            } else {
                c.get(server.url("/health"))
            };
            let res = req.header("accept-encoding", enc).send().await.unwrap();
            assert_eq!(res.headers()["content-encoding"], enc);
            let raw = res.bytes().await.unwrap();
            match enc {
                "gzip" => assert_eq!(raw[8], xfl, "level {level}, gzip header {:?}", &raw[..10]),
                _ => assert_eq!(
                    raw[1] >> 6,
                    flevel,
                    "level {level}, zlib header {:?}",
                    &raw[..2]
                ),
            }
        }
    }
}

#[tokio::test]
async fn overload_is_shed_but_liveness_answers() {
    use std::sync::Arc;
    use std::time::Duration;
    let mut cfg = config();
    cfg.max_in_flight = 1;
    let agent = Arc::new(SlowStreamAgent::new(3, Duration::from_millis(200)));
    let server = start(cfg, agent.clone());
    let c = client();
    let first = tokio::spawn({
        let c = c.clone();
        let url = server.url("/agent");
        async move {
            let res = c
                .post(url)
                .header("content-type", "application/json")
                .body(body("x"))
                .send()
                .await
                .unwrap();
            events(res).await
        }
    });
    assert!(agent.has_started(1).await);
    let res = post_json(&server, "/agent", body("y")).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "50");
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["code"], "under_pressure");
    assert_eq!(get_status(&server, "/health/live").await, 200);
    let ready = c.get(server.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("requests in flight"));
    assert_well_formed(&first.await.unwrap());
    // Pressure gone: served again.
    assert_eq!(post_json(&server, "/agent", body("z")).await.status(), 200);

    let mut cfg = config();
    cfg.max_rss_bytes = 1;
    let server = start_echo_with(cfg);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get_status(&server, "/health").await, 503);
    assert_eq!(get_status(&server, "/health/live").await, 200);
}

#[tokio::test]
async fn rate_limits_per_client_ip() {
    let mut cfg = config();
    cfg.rate_limit_max = 3;
    cfg.rate_limit_window = 60_000;
    cfg.trust_proxy = agentd::edge::forwarded::TrustProxy::All;
    let server = start_echo_with(cfg);
    let c = client();
    for remaining in ["2", "1", "0"] {
        let res = post_json(&server, "/agent", body("x")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-ratelimit-limit"], "3");
        assert_eq!(res.headers()["x-ratelimit-remaining"], remaining);
        let reset: u64 = res.headers()["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&reset));
    }
    let res = c.get(server.url("/stream?prompt=x")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["code"], "rate_limited");
    assert_eq!(j["error"], "Rate limit exceeded");
    assert_eq!(j["statusCode"], 429);
    assert_eq!(j["message"], "Too many requests from 127.0.0.1");
    assert!(j["requestId"].is_string() && j["expiresIn"].is_u64() && j["date"].is_u64());
    // Probes are never limited.
    assert_eq!(get_status(&server, "/health/live").await, 200);
    assert_eq!(get_status(&server, "/health").await, 200);
    // Behind a trusted proxy each forwarded client has its own budget.
    let res = c
        .get(server.url("/stream?prompt=x"))
        .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-remaining"], "2");

    // Without TRUST_PROXY the header is ignored.
    let mut cfg = config();
    cfg.rate_limit_max = 1;
    let server = start_echo_with(cfg);
    assert_eq!(get_status(&server, "/stream?prompt=x").await, 200);
    let res = c
        .get(server.url("/stream?prompt=x"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
}

fn hs256(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn jwt_on_the_agent_routes() {
    let mut cfg = config();
    cfg.jwt_secret = Some("s3cret".into());
    let server = start_echo_with(cfg);
    let c = client();
    let send = |auth: Option<String>| {
        let mut r = c
            .post(server.url("/agent"))
            .header("content-type", "application/json")
            .body(body("x"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    // Optional, as in the guide: no header is fine.
    assert_eq!(send(None).await.unwrap().status(), 200);
    let good = hs256(
        "s3cret",
        serde_json::json!({"sub": "u1", "role": "user", "exp": now() + 60}),
    );
    let res = send(Some(format!("Bearer {good}"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_well_formed(&events(res).await);
    for bad in [
        format!(
            "Bearer {}",
            hs256("wrong", serde_json::json!({"exp": now() + 60}))
        ),
        format!(
            "Bearer {}",
            hs256("s3cret", serde_json::json!({"exp": now() - 3600}))
        ),
        format!("Bearer {}", &good[..good.len() - 5]),
        good.clone(),
        "Bearer".into(),
    ] {
        let res = send(Some(bad)).await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let j: serde_json::Value = res.json().await.unwrap();
        assert_eq!(j["error"], "Invalid token");
        assert_eq!(j["code"], "invalid_token");
    }
    let guest = hs256(
        "s3cret",
        serde_json::json!({"role": "guest", "exp": now() + 60}),
    );
    let res = send(Some(format!("Bearer {guest}"))).await.unwrap();
    assert_eq!(res.status(), 403);
    // Required.
    let mut cfg = config();
    cfg.jwt_secret = Some("s3cret".into());
    cfg.auth_required = true;
    let server = start_echo_with(cfg);
    let res = c.get(server.url("/stream?prompt=x")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .get(server.url("/stream?prompt=x"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        get_status(&server, "/health").await,
        200,
        "health needs no token"
    );
}

#[tokio::test]
async fn api_keys_on_agent_api() {
    let mut cfg = config();
    cfg.api_key_secret = Some("key-one, key-two".into());
    let server = start_echo_with(cfg);
    let c = client();
    let send = |key: Option<&'static str>| {
        let mut r = c
            .post(server.url("/agent-api"))
            .header("content-type", "application/json")
            .body(body("x"));
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send()
    };
    for k in ["key-one", "key-two"] {
        let res = send(Some(k)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_well_formed(&events(res).await);
    }
    for k in [None, Some("key-on"), Some("key-one-and-more"), Some("")] {
        let res = send(k).await.unwrap();
        assert_eq!(res.status(), 401, "{k:?}");
        let j: serde_json::Value = res.json().await.unwrap();
        assert_eq!(j["code"], "invalid_api_key");
    }
    // No key configured: /agent-api is closed.
    let server = start_echo();
    let res = c
        .post(server.url("/agent-api"))
        .header("x-api-key", "x")
        .body(body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// `AUTH_REQUIRED` does not reach `/agent-api`: there the API key alone authorises, as
/// in the guide where `/agent-api` is its own context without the JWT hook.
#[tokio::test]
async fn agent_api_is_authorised_by_the_api_key_alone() {
    let mut cfg = config();
    cfg.jwt_secret = Some("s3cret".into());
    cfg.auth_required = true;
    cfg.api_key_secret = Some("key-one".into());
    let server = start_echo_with(cfg);
    let c = client();
    let send = |path: &'static str, key: Option<&'static str>| {
        let mut r = c
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body("x"));
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send()
    };
    let res = send("/agent-api", Some("key-one")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_well_formed(&events(res).await);
    let res = send("/agent-api", None).await.unwrap();
    assert_eq!(res.status(), 401);
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["code"], "invalid_api_key");
    // The key is not a token: /agent still needs one.
    let res = send("/agent", Some("key-one")).await.unwrap();
    assert_eq!(res.status(), 401);
}

/// A raw WebSocket handshake on `/ws` (path and query `target`) with extra header
/// lines; returns the response head.
async fn ws_handshake(server: &TestServer, target: &str, extra: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut s).await;
    format!("{head}{}", String::from_utf8_lossy(&body))
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// EventSource and WebSocket cannot send `Authorization`: on `/stream` and `/ws` the
/// token may come as `?access_token=` (RFC 6750 §2.3), and never reaches a log.
#[tokio::test]
async fn browsers_authenticate_stream_and_ws_with_access_token() {
    let logs = captured_logs();
    let mut cfg = config();
    cfg.jwt_secret = Some("s3cret".into());
    cfg.auth_required = true;
    cfg.request_logging = Some(true);
    let server = start_echo_with(cfg);
    let c = client();
    let good = hs256(
        "s3cret",
        serde_json::json!({"sub": "u1", "role": "user", "exp": now() + 60}),
    );
    let bad = hs256("wrong", serde_json::json!({"exp": now() + 60}));
    let stream = |q: String| c.get(server.url(&format!("/stream?prompt=x{q}"))).send();
    let res = stream(format!("&access_token={good}")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_well_formed(&events(res).await);
    // First in the query, too.
    let res = c
        .get(server.url(&format!("/stream?access_token={good}&prompt=x")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for q in [
        format!("&access_token={bad}"),
        "&access_token=".into(),
        String::new(),
    ] {
        let res = stream(q.clone()).await.unwrap();
        assert_eq!(res.status(), 401, "{q}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
    }
    // Header and query together: RFC 6750 allows one method only.
    let res = c
        .get(server.url(&format!("/stream?prompt=x&access_token={good}")))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // WebSocket upgrade.
    let head = ws_handshake(&server, &format!("/ws?access_token={good}"), "").await;
    assert_eq!(status_of(&head), 101, "{head}");
    let head = ws_handshake(&server, &format!("/ws?access_token={bad}"), "").await;
    assert_eq!(status_of(&head), 401, "{head}");
    // Only those two routes: /agent takes the header.
    let res = c
        .post(server.url(&format!("/agent?access_token={good}")))
        .header("content-type", "application/json")
        .body(body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // The request log line shows the URL with the token's value hidden.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("/stream?prompt=x&access_token=[REDACTED]"),
        "request lines are logged: {text}"
    );
    assert!(text.contains("/ws?access_token=[REDACTED]"), "{text}");
    for secret in [&good, &bad] {
        let sig = secret.rsplit('.').next().unwrap();
        assert!(!text.contains(sig), "a token reached the log");
    }
}

/// Browsers apply no CORS to WebSockets: the upgrade itself checks `Origin` against
/// `CORS_ORIGINS` (cross-site WebSocket hijacking). No `Origin` (not a browser) is let
/// through; the default `*` allows any.
#[tokio::test]
async fn websocket_upgrade_from_a_refused_origin_is_403() {
    let mut cfg = config();
    cfg.cors_origins = "https://app.example".into();
    let server = start_echo_with(cfg);
    let head = ws_handshake(&server, "/ws", "Origin: https://evil.example\r\n").await;
    assert_eq!(status_of(&head), 403, "{head}");
    assert!(head.contains("\"code\":\"origin_not_allowed\""), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let head = ws_handshake(&server, "/ws", "Origin: https://app.example\r\n").await;
    assert_eq!(status_of(&head), 101, "{head}");
    let head = ws_handshake(&server, "/ws", "").await;
    assert_eq!(status_of(&head), 101, "{head}");
    // EventSource from the refused origin gets no CORS headers either (the browser
    // blocks it): both transports agree.
    let res = client()
        .get(server.url("/stream?prompt=x"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));

    let server = start_echo();
    let head = ws_handshake(&server, "/ws", "Origin: https://evil.example\r\n").await;
    assert_eq!(status_of(&head), 101, "CORS_ORIGINS=* allows any: {head}");
}

/// Browser code reads only the headers a CORS response exposes.
#[tokio::test]
async fn cors_responses_expose_agentds_headers() {
    let mut cfg = config();
    cfg.rate_limit_max = 100;
    let server = start_echo_with(cfg);
    let res = client()
        .get(server.url("/stream?prompt=x"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    let exposed: Vec<&str> = exposed.split(',').map(str::trim).collect();
    for h in [
        "x-request-id",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-response-time",
    ] {
        assert!(exposed.contains(&h), "{h} not exposed: {exposed:?}");
        if h != "retry-after" {
            assert!(res.headers().contains_key(h), "{h} sent");
        }
    }
    // Not for a request without an Origin (no CORS).
    let res = client().get(server.url("/health")).send().await.unwrap();
    assert!(!res.headers().contains_key("access-control-expose-headers"));
}

/// The 429 body is the guide's (`@fastify/rate-limit` with its errorResponseBuilder):
/// `expiresIn` is the limiter's `ttl`, in milliseconds; `Retry-After` stays seconds.
#[tokio::test]
async fn rate_limit_body_is_the_guides_with_expires_in_ms() {
    let mut cfg = config();
    cfg.rate_limit_max = 1;
    cfg.rate_limit_window = 60_000;
    let server = start_echo_with(cfg);
    assert_eq!(get_status(&server, "/stream?prompt=x").await, 200);
    let res = client()
        .get(server.url("/stream?prompt=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&retry), "seconds: {retry}");
    let j: serde_json::Value = res.json().await.unwrap();
    assert_eq!(j["statusCode"], 429);
    assert_eq!(j["error"], "Rate limit exceeded");
    assert_eq!(j["message"], "Too many requests from 127.0.0.1");
    let expires = j["expiresIn"].as_u64().unwrap();
    assert!(
        (55_000..=60_000).contains(&expires),
        "milliseconds: {expires}"
    );
    assert!(expires.div_ceil(1000) <= retry);
}

/// `TRUST_PROXY` in Fastify's forms: the client is the nearest untrusted hop, so what
/// the client writes at the left of `X-Forwarded-For` does not pick its key; IPv6
/// clients share their /64's budget.
#[tokio::test]
async fn trust_proxy_takes_the_nearest_untrusted_hop() {
    use agentd::edge::forwarded::TrustProxy;
    let c = client();
    let limited = |server: &TestServer, xff: &'static str| {
        let req = c
            .get(server.url("/stream?prompt=x"))
            .header("x-forwarded-for", xff)
            .send();
        async move {
            let res = req.await.unwrap();
            let status = res.status().as_u16();
            let text = res.text().await.unwrap();
            (status, text)
        }
    };
    for spec in ["1", "127.0.0.1", "127.0.0.0/8, 10.0.0.0/8", "loopback"] {
        let mut cfg = config();
        cfg.rate_limit_max = 1;
        cfg.rate_limit_window = 60_000;
        cfg.trust_proxy = TrustProxy::parse(spec).unwrap();
        let server = start_echo_with(cfg);
        assert_eq!(
            limited(&server, "6.6.6.6, 203.0.113.7").await.0,
            200,
            "{spec}"
        );
        // A new leftmost entry is the client's own writing: the same client.
        let (status, text) = limited(&server, "7.7.7.7, 203.0.113.7").await;
        assert_eq!(status, 429, "{spec}");
        assert!(
            text.contains("Too many requests from 203.0.113.7"),
            "{text}"
        );
        // Another client behind the proxy has its own budget.
        assert_eq!(limited(&server, "203.0.113.8").await.0, 200, "{spec}");
        // One address of a /64 uses the /64's budget.
        assert_eq!(limited(&server, "2001:db8:1:2::1").await.0, 200, "{spec}");
        assert_eq!(
            limited(&server, "2001:db8:1:2::ffff").await.0,
            429,
            "{spec}"
        );
        assert_eq!(limited(&server, "2001:db8:1:3::1").await.0, 200, "{spec}");
    }
    // An untrusted peer: the header is not read at all.
    let mut cfg = config();
    cfg.rate_limit_max = 1;
    cfg.trust_proxy = TrustProxy::parse("10.0.0.0/8").unwrap();
    let server = start_echo_with(cfg);
    assert_eq!(limited(&server, "203.0.113.7").await.0, 200);
    let (status, text) = limited(&server, "203.0.113.8").await;
    assert_eq!(status, 429);
    assert!(text.contains("Too many requests from 127.0.0.1"), "{text}");
}
