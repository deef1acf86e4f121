//! The providers' `retry-after-ms` / `retry-after` headers, as
//! `llm::provider::parse_retry_after` reads them.
//!
//! Input layout: the `retry-after-ms` value, a 0 byte, the `retry-after` value (no 0
//! byte: only `retry-after-ms`; a leading 0 byte: only `retry-after`).
//!
//! Checks: no panic; the wait is never more than `MAX_RETRY_AFTER` and adding it to now
//! never overflows; against an oracle written from the headers' rules: a finite,
//! non-negative decimal number in `retry-after-ms` (milliseconds) wins, else one in
//! `retry-after` (seconds), each capped at a day; anything else is no wait.

#![no_main]

use std::time::Instant;

use agentd::llm::provider::{parse_retry_after, MAX_RETRY_AFTER};
use libfuzzer_sys::fuzz_target;

/// Seconds asked by one header value, before the cap: `None` unless it is a finite,
/// non-negative number.
fn asked(v: Option<&[u8]>, per_second: f64) -> Option<f64> {
    let text = std::str::from_utf8(v?).ok()?;
    let n: f64 = text.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n / per_second)
}

fuzz_target!(|data: &[u8]| {
    let (ms, secs) = match data.iter().position(|&b| b == 0) {
        None => (Some(data), None),
        Some(0) => (None, Some(&data[1..])),
        Some(i) => (Some(&data[..i]), Some(&data[i + 1..])),
    };
    let got = parse_retry_after(ms, secs);
    if let Some(d) = got {
        assert!(d <= MAX_RETRY_AFTER, "{d:?}");
        assert!(Instant::now().checked_add(d).is_some());
    }
    let cap = MAX_RETRY_AFTER.as_secs_f64();
    let want = asked(ms, 1000.0)
        .or_else(|| asked(secs, 1.0))
        .map(|s| s.min(cap));
    match (got, want) {
        (None, None) => {}
        (Some(d), Some(w)) => {
            // Within a microsecond: the conversion rounds to nanoseconds.
            assert!((d.as_secs_f64() - w).abs() < 1e-6, "{d:?} vs {w}");
        }
        _ => panic!("got {got:?}, the rules say {want:?}"),
    }
});
