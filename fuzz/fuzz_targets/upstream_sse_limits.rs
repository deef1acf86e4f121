//! agentd's upstream SSE parser against streams of megabytes: the 4 MiB event limit and
//! the parser's memory, whatever the stream's length.
//!
//! Input layout: as `upstream_sse` (flags, 4 seed bytes, the stream), but `0xFE k` in
//! the stream repeats the byte before it `(k + 1) * 16 KiB` times (up to 32 MiB in all),
//! so a small input describes a huge line, event name or event. Kept apart from
//! `upstream_sse` because each run costs milliseconds, not microseconds.
//!
//! Checks: no panic; whole and cut feeding give the same events and error; no accepted
//! event holds more than the limit; a size error only where some event's lines do
//! exceed it (the reference parser's measure); the heap the parser holds stays under a
//! fixed bound however long the stream.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use agentd::backend::sse::MAX_EVENT_BYTES;
use agentd_fuzz::sse_harness::{
    check_against_reference, check_cut_feeding, check_event_size, feed_whole, split_input,
};
use libfuzzer_sys::fuzz_target;

/// Counts live heap bytes so that the parser's footprint can be measured.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the parser may hold whatever the input: its three buffers (line, event name,
/// data), each at most the event limit and at most doubled by growth, plus slack.
const MEMORY_BOUND: usize = 6 * MAX_EVENT_BYTES + (1 << 20);
/// Most a stream may expand to: past [`MEMORY_BOUND`], so a parser that buffered a
/// whole line or event without limit would be caught.
const MAX_EXPANDED: usize = 8 * MAX_EVENT_BYTES;
const RUN_UNIT: usize = 16 << 10;
/// Smallest piece fed: a byte at a time through megabytes would only cost time.
const MIN_PIECE: usize = 1 << 16;

fn expand(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == 0xFE && i + 1 < raw.len() {
            let fill = out.last().copied().unwrap_or(b'x');
            let n = ((raw[i + 1] as usize + 1) * RUN_UNIT)
                .min(MAX_EXPANDED - out.len().min(MAX_EXPANDED));
            out.resize(out.len() + n, fill);
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((_, mut pieces, raw)) = split_input(data) else {
        return;
    };
    let stream = expand(raw);
    pieces.max = pieces.max.max(MIN_PIECE);

    let (events, error) = feed_whole(&stream);
    check_event_size(&events);
    // Measured while cut feeding, which keeps no event: all the heap is the parser's
    // (and the one event it is handing out).
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    check_cut_feeding(&stream, &mut pieces, &events, &error);
    let held = PEAK.load(Relaxed).saturating_sub(base);
    assert!(held <= MEMORY_BOUND, "the parser held {held} bytes");
    check_against_reference(&stream, &events, &error);
});
