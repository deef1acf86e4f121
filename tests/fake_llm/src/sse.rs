//! SSE encoding and write scheduling: turns a provider's list of events (each with the
//! delay before it) into the [`Step`]s a response body plays, applying the line-ending,
//! comment and unknown-field quirks and the [`Chunking`] mode.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use crate::behaviour::{Chunking, Quirks};

/// Time between the last bytes before a [`Fault::Reset`](crate::Fault::Reset) and the RST,
/// so the bytes reach the client's socket before the reset discards the send buffer.
pub(crate) const RESET_GRACE: Duration = Duration::from_millis(25);

/// One thing a response body does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Wait.
    Sleep(Duration),
    /// Write (and flush) these bytes as one frame.
    Data(Bytes),
    /// Abort the TCP connection with an RST.
    Reset,
    /// Never produce anything again.
    Stall,
    /// Fail the body: the server drops the connection without ending the body.
    Abort,
}

/// A control action that ends a run of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    Reset,
    Stall,
}

enum Item {
    Bytes { bytes: Vec<u8>, delay: Duration },
    Control(Control),
}

/// Builds one SSE body.
pub(crate) struct SseWriter {
    quirks: Quirks,
    items: Vec<Item>,
    events: usize,
}

impl SseWriter {
    pub(crate) fn new(quirks: Quirks) -> SseWriter {
        SseWriter {
            quirks,
            items: Vec::new(),
            events: 0,
        }
    }

    /// Appends an event (`event:` line if `name` is given, one `data:` line), to be written
    /// `delay` after the previous one.
    pub(crate) fn event(&mut self, name: Option<&str>, data: &str, delay: Duration) {
        let le = self.quirks.line_ending.as_str();
        let mut out = String::with_capacity(data.len() + 48);
        if self.events == 0 && self.quirks.comments {
            out.push_str(": keep-alive");
            out.push_str(le);
            out.push_str(le);
        }
        encode_into(&mut out, name, data, self.quirks);
        self.items.push(Item::Bytes {
            bytes: out.into_bytes(),
            delay,
        });
        self.events += 1;
        if self.events == 1 && self.quirks.unknown_fields {
            let mut out = String::new();
            encode_into(
                &mut out,
                Some("x_fake_unknown"),
                r#"{"type":"x_fake_unknown"}"#,
                self.quirks,
            );
            self.items.push(Item::Bytes {
                bytes: out.into_bytes(),
                delay: Duration::ZERO,
            });
        }
    }

    /// Appends a control action.
    pub(crate) fn control(&mut self, control: Control) {
        self.items.push(Item::Control(control));
    }

    /// The steps that play this body with the given chunking.
    pub(crate) fn finish(self, chunking: Chunking) -> VecDeque<Step> {
        let mut steps = VecDeque::new();
        let mut run: Vec<(Vec<u8>, Duration)> = Vec::new();
        for item in self.items {
            match item {
                Item::Bytes { bytes, delay } => run.push((bytes, delay)),
                Item::Control(c) => {
                    schedule_run(&mut steps, std::mem::take(&mut run), chunking);
                    match c {
                        Control::Reset => {
                            steps.push_back(Step::Sleep(RESET_GRACE));
                            steps.push_back(Step::Reset);
                        }
                        Control::Stall => steps.push_back(Step::Stall),
                    }
                }
            }
        }
        schedule_run(&mut steps, run, chunking);
        steps
    }
}

fn encode_into(out: &mut String, name: Option<&str>, data: &str, quirks: Quirks) {
    let le = quirks.line_ending.as_str();
    if quirks.comments {
        out.push_str(": keep-alive");
        out.push_str(le);
    }
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push_str(le);
    }
    if quirks.unknown_fields {
        out.push_str("x-fake-field: ignored");
        out.push_str(le);
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push_str(le);
    out.push_str(le);
}

fn sleep(steps: &mut VecDeque<Step>, d: Duration) {
    if !d.is_zero() {
        steps.push_back(Step::Sleep(d));
    }
}

fn schedule_run(steps: &mut VecDeque<Step>, run: Vec<(Vec<u8>, Duration)>, chunking: Chunking) {
    if run.is_empty() {
        return;
    }
    match chunking {
        Chunking::PerEvent => {
            for (bytes, delay) in run {
                sleep(steps, delay);
                steps.push_back(Step::Data(Bytes::from(bytes)));
            }
        }
        Chunking::Coalesced => {
            let total: Duration = run.iter().map(|(_, d)| *d).sum();
            sleep(steps, total);
            let all: Vec<u8> = run.into_iter().flat_map(|(b, _)| b).collect();
            steps.push_back(Step::Data(Bytes::from(all)));
        }
        Chunking::SplitEvery(n) => {
            let n = n.max(1);
            // (start offset, delay) of every event, and the concatenated bytes.
            let mut starts = Vec::with_capacity(run.len());
            let mut all = Vec::new();
            for (bytes, delay) in run {
                starts.push((all.len(), delay));
                all.extend_from_slice(&bytes);
            }
            let all = Bytes::from(all);
            let mut next_event = 0;
            let mut pos = 0;
            while pos < all.len() {
                let end = (pos + n).min(all.len());
                let mut delay = Duration::ZERO;
                while next_event < starts.len() && starts[next_event].0 < end {
                    delay += starts[next_event].1;
                    next_event += 1;
                }
                sleep(steps, delay);
                steps.push_back(Step::Data(all.slice(pos..end)));
                pos = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behaviour::LineEnding;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn writer() -> SseWriter {
        let mut w = SseWriter::new(Quirks::default());
        w.event(Some("a"), "1", ms(0));
        w.event(None, "22", ms(10));
        w
    }

    #[test]
    fn per_event() {
        let steps = writer().finish(Chunking::PerEvent);
        assert_eq!(
            steps,
            [
                Step::Data(Bytes::from_static(b"event: a\ndata: 1\n\n")),
                Step::Sleep(ms(10)),
                Step::Data(Bytes::from_static(b"data: 22\n\n")),
            ]
        );
    }

    #[test]
    fn coalesced_sums_delays() {
        let steps = writer().finish(Chunking::Coalesced);
        assert_eq!(
            steps,
            [
                Step::Sleep(ms(10)),
                Step::Data(Bytes::from_static(b"event: a\ndata: 1\n\ndata: 22\n\n")),
            ]
        );
    }

    #[test]
    fn split_every_keeps_bytes_and_delays() {
        let steps = writer().finish(Chunking::SplitEvery(7));
        let mut bytes = Vec::new();
        let mut sleeps = Duration::ZERO;
        for s in &steps {
            match s {
                Step::Data(b) => {
                    assert!(b.len() <= 7);
                    bytes.extend_from_slice(b);
                }
                Step::Sleep(d) => sleeps += *d,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(bytes, b"event: a\ndata: 1\n\ndata: 22\n\n");
        assert_eq!(sleeps, ms(10));
        // The second event starts at byte 18, inside the third piece (14..21).
        assert_eq!(steps[2], Step::Sleep(ms(10)));
    }

    #[test]
    fn quirks_and_controls() {
        let q = Quirks {
            line_ending: LineEnding::CrLf,
            comments: true,
            unknown_fields: true,
            llama_cpp: false,
        };
        let mut w = SseWriter::new(q);
        w.event(Some("a"), "1", ms(0));
        w.control(Control::Stall);
        let steps = w.finish(Chunking::PerEvent);
        assert_eq!(
            steps,
            [
                Step::Data(Bytes::from_static(
                    b": keep-alive\r\n\r\n: keep-alive\r\nevent: a\r\nx-fake-field: ignored\r\ndata: 1\r\n\r\n"
                )),
                Step::Data(Bytes::from_static(
                    b": keep-alive\r\nevent: x_fake_unknown\r\nx-fake-field: ignored\r\ndata: {\"type\":\"x_fake_unknown\"}\r\n\r\n"
                )),
                Step::Stall,
            ]
        );
    }
}
