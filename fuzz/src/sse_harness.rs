//! Drives agentd's incremental upstream SSE parser for the `upstream_sse*` targets:
//! feeding in one piece or cut by a deterministic generator, and judging the result
//! against the [reference parser](crate::sse_reference).
//!
//! The only part of this crate that calls agentd; it never panics except to report a
//! disagreement.

use agentd::backend::sse::{SseError, SseEvent, SseParser, MAX_EVENT_BYTES};

use crate::sse_reference::{self, Outcome};

/// Piece sizes from a xorshift generator: deterministic for one input.
pub struct Pieces {
    pub state: u32,
    pub max: usize,
}

impl Pieces {
    pub fn next_size(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + (self.state as usize) % self.max
    }
}

/// Feeds `stream` in one piece; returns the events and the error.
pub fn feed_whole(stream: &[u8]) -> (Vec<SseEvent>, Option<SseError>) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let error = parser.feed(stream, &mut |e| events.push(e)).err();
    (events, error)
}

/// Feeds `stream` cut by `pieces`, handing each event to `on_event`, until the first
/// error, which it returns.
pub fn feed_cut(
    stream: &[u8],
    pieces: &mut Pieces,
    on_event: &mut dyn FnMut(SseEvent),
) -> Option<SseError> {
    let mut parser = SseParser::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = pieces.next_size().min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = parser.feed(piece, on_event) {
            return Some(e);
        }
    }
    None
}

/// Feeds `stream` cut by `pieces` and demands exactly the events and the error that
/// feeding it whole gave (`want`, `want_error`).
pub fn check_cut_feeding(
    stream: &[u8],
    pieces: &mut Pieces,
    want: &[SseEvent],
    want_error: &Option<SseError>,
) {
    let mut seen = 0;
    let error = feed_cut(stream, pieces, &mut |e| {
        assert_eq!(Some(&e), want.get(seen), "cut feeding gives another event");
        seen += 1;
    });
    assert_eq!(seen, want.len(), "cut feeding gives fewer events");
    assert_eq!(&error, want_error, "cut feeding ends otherwise");
}

/// The limit on what one accepted event holds.
pub fn check_event_size(events: &[SseEvent]) {
    for ev in events {
        assert!(
            ev.event.len() + ev.data.len() <= MAX_EVENT_BYTES,
            "an event of {} bytes was accepted",
            ev.event.len() + ev.data.len()
        );
    }
}

/// The parser's events and error judged against the reference parser's blocks.
pub fn check_against_reference(stream: &[u8], events: &[SseEvent], error: &Option<SseError>) {
    let blocks = sse_reference::parse(stream);
    let mut got = events.iter();
    let mut oversized_since_last_event = false;
    for block in &blocks {
        oversized_since_last_event |= block.footprint > MAX_EVENT_BYTES;
        match &block.outcome {
            Outcome::Event { event, data } => {
                let utf8 = std::str::from_utf8(event).is_ok() && std::str::from_utf8(data).is_ok();
                match got.next() {
                    Some(e) => {
                        assert!(utf8, "an event with invalid UTF-8 was accepted");
                        assert_eq!(
                            (e.event.as_bytes(), e.data.as_bytes()),
                            (&event[..], &data[..])
                        );
                        oversized_since_last_event = false;
                    }
                    None => {
                        match error {
                            Some(SseError::InvalidUtf8) => {
                                assert!(!utf8, "a UTF-8 error on valid text")
                            }
                            Some(SseError::TooLarge) => assert!(
                                oversized_since_last_event,
                                "TooLarge on a stream whose events all fit the limit"
                            ),
                            None => panic!("the reference parser dispatches more events"),
                        }
                        return;
                    }
                }
            }
            Outcome::Nothing | Outcome::Unfinished => {}
        }
    }
    assert!(
        got.next().is_none(),
        "the parser dispatched more events than the reference"
    );
    match error {
        None => {}
        Some(SseError::TooLarge) => {
            assert!(oversized_since_last_event, "TooLarge on events that fit")
        }
        Some(SseError::InvalidUtf8) => panic!("a UTF-8 error with no event left to dispatch"),
    }
}

/// Reads the `upstream_sse*` input header: byte 0 holds flags (bits 2-4 pick the
/// largest piece, from 1 byte to unlimited; the rest are the target's), bytes 1-4 seed
/// the piece generator. Returns the flags, the generator and the stream.
pub fn split_input(data: &[u8]) -> Option<(u8, Pieces, &[u8])> {
    let (header, stream) = data.split_at_checked(5)?;
    let flags = header[0];
    let max = match (flags >> 2) & 7 {
        0 => 1,
        1 => 2,
        2 => 3,
        3 => 7,
        4 => 64,
        5 => 4096,
        6 => 1 << 20,
        _ => usize::MAX,
    };
    // xorshift must not start from 0.
    let state = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) | 1;
    Some((flags, Pieces { state, max }, stream))
}
