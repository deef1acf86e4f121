//! Header values built once, request ids, and `X-Response-Time` (with the millisecond
//! format every reported duration uses).
//!
//! A request keeps a sane client `x-request-id`; otherwise it gets a fresh ULID.
//! Per-request header values are cut from a per-worker arena, so they cost a
//! reference count, not an allocation (one 16 KiB block per few hundred requests).

use std::cell::RefCell;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::protocol::ids::{encode, next_ulid, ULID_LEN};

pub static JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
pub static EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");
pub static NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
pub static NO: HeaderValue = HeaderValue::from_static("no");

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_RESPONSE_TIME: HeaderName = HeaderName::from_static("x-response-time");
pub static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// Longest client-supplied request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

const ARENA_BLOCK: usize = 16 * 1024;

thread_local! {
    static ARENA: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(ARENA_BLOCK));
}

/// A decimal number as a header value, without allocating.
pub fn number(n: u64) -> HeaderValue {
    arena_value(itoa::Buffer::new().format(n).as_bytes())
}

/// Copies `bytes` (visible ASCII) into a header value cut from the worker's arena.
fn arena_value(bytes: &[u8]) -> HeaderValue {
    ARENA.with(|a| {
        let mut a = a.borrow_mut();
        if a.capacity() - a.len() < bytes.len() {
            *a = BytesMut::with_capacity(ARENA_BLOCK.max(bytes.len()));
        }
        a.put_slice(bytes);
        let piece = a.split().freeze();
        // Callers only pass visible ASCII.
        HeaderValue::from_maybe_shared(piece).unwrap_or_else(|_| HeaderValue::from_static(""))
    })
}

fn is_sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID_LEN
        && b.iter().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

/// The client's request id if it is sane, else a new ULID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if is_sane_request_id(v) => v.clone(),
        _ => {
            let mut buf = [0u8; ULID_LEN];
            arena_value(encode(next_ulid(), &mut buf).as_bytes())
        }
    }
}

/// `X-Response-Time` in milliseconds with microsecond precision, e.g. `0.042ms`.
pub fn response_time(elapsed: Duration) -> HeaderValue {
    // 20 digits of whole milliseconds at most, `.`, 3 decimals, `ms`.
    let mut out = [0u8; 32];
    let mut rest = &mut out[..];
    write_millis(&mut rest, elapsed);
    rest.put_slice(b"ms");
    let n = 32 - rest.len();
    arena_value(&out[..n])
}

/// `elapsed` in milliseconds with three decimals (microseconds), e.g. `12.345`: the
/// one format of the durations agentd reports (`X-Response-Time`, the WebSocket
/// `processingTime`). Writes at most 24 bytes and never allocates.
pub(crate) fn write_millis(out: &mut impl BufMut, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    out.put_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let frac = micros % 1000;
    out.put_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_time_format() {
        assert_eq!(response_time(Duration::from_micros(42)), "0.042ms");
        assert_eq!(response_time(Duration::from_micros(12_345)), "12.345ms");
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_static("bad id with spaces"),
        );
        let id = request_id(&h);
        assert_eq!(id.len(), ULID_LEN);
        h.insert(
            X_REQUEST_ID.clone(),
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h).len(), ULID_LEN);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
