//! URI length and request-head size: refused with 414 or 431, the connection closed,
//! the server healthy after.

use std::net::SocketAddr;
use std::time::Duration;

use agentd::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;
use crate::support::*;

/// Sends `head`, expects one response with `status` and the connection closed.
async fn expect_refused_and_closed(addr: SocketAddr, head: &[u8], status: u16) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(head).await;
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let statuses = response_statuses(&got);
    assert_eq!(
        statuses,
        [status],
        "{}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(closed, "the connection stays open after {status}");
}

#[tokio::test]
async fn long_uris_and_big_heads_are_refused_and_closed() {
    // hyper refuses a URI over 65,534 bytes with 414 once the head fits the buffer
    // (MAX_HEADER_BYTES), and any head over MAX_HEADER_BYTES with 431.
    let mut cfg = config();
    cfg.max_header_bytes = 131_072;
    let roomy = start_echo_with(cfg);
    let long_uri = format!(
        "GET /health/live?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    expect_refused_and_closed(roomy.addr, long_uri.as_bytes(), 414).await;
    assert_eq!(get_status(&roomy, "/health/live").await, 200);

    let server = start_echo();
    let limit = Config::defaults().max_header_bytes as usize;
    let longer_uri = format!(
        "GET /health/live?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(limit + 1)
    );
    expect_refused_and_closed(server.addr, longer_uri.as_bytes(), 431).await;
    // Many fields, each small, adding up past the limit.
    let mut many = String::from("GET /health/live HTTP/1.1\r\nHost: x\r\n");
    for i in 0..90 {
        many.push_str(&format!("X-F{i}: {}\r\n", "v".repeat(limit / 80)));
    }
    many.push_str("\r\n");
    expect_refused_and_closed(server.addr, many.as_bytes(), 431).await;
    // Just under the limit is served.
    let near = format!(
        "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "b".repeat(limit - 1_024)
    );
    let got = raw(server.addr, near.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(response_statuses(&got), [200]);
    // A head trickled past the limit without ever ending is cut by size, not time.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let line = format!("X-T: {}\r\n", "t".repeat(4_000));
    let mut refused = false;
    for _ in 0..(limit / line.len() + 4) {
        if s.write_all(line.as_bytes()).await.is_err() {
            refused = true;
            break;
        }
    }
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(
        refused || response_statuses(&got) == [431],
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(get_status(&server, "/health/live").await, 200);
}
