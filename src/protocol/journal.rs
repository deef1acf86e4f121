//! A resumable answer's journal: every event as first sent (its framed bytes), keyed
//! by its id, so that a client that lost its connection can ask for everything after
//! the last event it saw and get the same bytes.
//!
//! Bounded in bytes: past the limit the oldest events are dropped and the journal says
//! so (a resume from a position it no longer holds is refused, never answered with a
//! gap). It must never hold an event twice or reorder events.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use ulid::Ulid;

/// Why a journal cannot answer a resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Events after the position were dropped to stay under the byte limit.
    Truncated,
    /// No event with that id was sent on this answer.
    UnknownPosition,
}

#[derive(Debug)]
pub struct Journal {
    events: VecDeque<(Ulid, Bytes)>,
    bytes: usize,
    limit: usize,
    /// Some events were dropped from the front.
    truncated: bool,
}

impl Journal {
    /// A journal keeping at most `limit` bytes of events.
    pub fn new(limit: usize) -> Journal {
        Journal {
            events: VecDeque::new(),
            bytes: 0,
            limit,
            truncated: false,
        }
    }

    /// Keeps one event's bytes.
    pub fn append(&mut self, id: Ulid, event: &[u8]) {
        self.bytes += event.len();
        self.events.push_back((id, Bytes::copy_from_slice(event)));
        while self.bytes > self.limit {
            match self.events.pop_front() {
                Some((_, b)) => {
                    self.bytes -= b.len();
                    self.truncated = true;
                }
                None => break,
            }
        }
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The id of the last event kept.
    pub fn last(&self) -> Option<Ulid> {
        self.events.back().map(|(id, _)| *id)
    }

    /// True when the event `id` is kept.
    pub fn contains(&self, id: Ulid) -> bool {
        self.events.binary_search_by(|(e, _)| e.cmp(&id)).is_ok()
    }

    /// Where the events after `after` start in `events`.
    fn start(&self, after: Option<Ulid>) -> Result<usize, ReplayError> {
        match after {
            None if self.truncated => Err(ReplayError::Truncated),
            None => Ok(0),
            Some(id) => match self.events.binary_search_by(|(e, _)| e.cmp(&id)) {
                Ok(i) => Ok(i + 1),
                // Older than everything kept: dropped, or never ours.
                Err(0) if self.truncated => Err(ReplayError::Truncated),
                Err(_) => Err(ReplayError::UnknownPosition),
            },
        }
    }

    /// Every event after `after` (all of them for `None`), one by one.
    pub fn events_after(&self, after: Option<Ulid>) -> Result<Vec<(Ulid, Bytes)>, ReplayError> {
        let start = self.start(after)?;
        Ok(self.events.iter().skip(start).cloned().collect())
    }

    /// Every event after `after` (all of them for `None`), concatenated.
    pub fn replay(&self, after: Option<Ulid>) -> Result<BytesMut, ReplayError> {
        let start = self.start(after)?;
        let len = self.events.iter().skip(start).map(|(_, b)| b.len()).sum();
        let mut out = BytesMut::with_capacity(len);
        for (_, b) in self.events.iter().skip(start) {
            out.extend_from_slice(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Ulid {
        Ulid::from_parts(1_000 + n, 0)
    }

    #[test]
    fn replays_after_a_position_in_order() {
        let mut j = Journal::new(1 << 20);
        for n in 0..4 {
            j.append(id(n), format!("e{n};").as_bytes());
        }
        assert_eq!(&j.replay(None).unwrap()[..], b"e0;e1;e2;e3;");
        assert_eq!(&j.replay(Some(id(1))).unwrap()[..], b"e2;e3;");
        assert_eq!(&j.replay(Some(id(3))).unwrap()[..], b"");
        assert_eq!(
            j.replay(Some(Ulid::from_parts(1_001, 7))),
            Err(ReplayError::UnknownPosition)
        );
    }

    #[test]
    fn past_the_limit_the_oldest_go_and_the_start_is_refused() {
        let mut j = Journal::new(10);
        for n in 0..5 {
            j.append(id(n), b"abcd");
        }
        assert!(j.bytes() <= 10);
        assert!(j.is_truncated());
        assert_eq!(j.replay(None), Err(ReplayError::Truncated));
        assert_eq!(j.replay(Some(id(0))), Err(ReplayError::Truncated));
        assert_eq!(&j.replay(Some(id(3))).unwrap()[..], b"abcd");
    }
}
