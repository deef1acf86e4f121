//! What agentd's fuzz targets share: oracles (an order-preserving JSON tree, a
//! reference SSE parser, the protocol's request rules, the providers' stream formats),
//! each written independently of the code under test so that the targets can check
//! agentd against them, and the harness that drives the upstream SSE parser.
//!
//! No oracle may call into agentd: one that reused the code it judges could never
//! disagree with it. Only [`sse_harness`] does.

pub mod json_tree;
pub mod request_oracle;
pub mod sse_harness;
pub mod sse_reference;
pub mod wire_oracle;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls `f` once and returns its output. The harnesses only drive futures that never
/// wait (an unbounded event queue), so a pending one is a failure.
pub fn ready_now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a future that cannot wait in this harness was pending"),
    }
}

/// Characters Python's `str.splitlines` breaks on, which the official client applies to
/// the decoded stream: raw, any of them would split an event line.
pub fn is_python_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}
