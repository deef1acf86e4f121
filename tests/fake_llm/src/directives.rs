//! Prompt directives: `[[…]]` markers in the last user message that set a fault or change
//! the behaviour of that one request, so a client can drive the fake without access to the
//! [`FakeLlm`](crate::FakeLlm) handle (e.g. the `fake-llm` binary under a benchmark).
//!
//! Syntax (several directives may appear anywhere in the text; items inside one directive
//! are separated by commas; unknown directives are ignored):
//!
//! | directive | effect |
//! |---|---|
//! | `[[fault:status=429,retry_after=1,retry_after_ms=1500]]` | [`Fault::Status`] (retry items optional) |
//! | `[[fault:mid_stream_error,after=2]]` | [`Fault::MidStreamError`] |
//! | `[[fault:eof,after=2]]` | [`Fault::EofWithoutDone`] |
//! | `[[fault:reset,after=1]]` | [`Fault::Reset`] |
//! | `[[fault:hang]]` | [`Fault::HangBeforeHeaders`] |
//! | `[[fault:stall,after=1]]` | [`Fault::Stall`] |
//! | `[[tokens=N]]` | [`Behaviour::tokens`] |
//! | `[[ttft_ms=N]]` | [`Behaviour::ttft`] |
//! | `[[token_delay_ms=N]]` | [`Behaviour::token_delay`] |
//! | `[[split=N]]` / `[[coalesced]]` / `[[per_event]]` | [`Behaviour::chunking`] |
//! | `[[line_ending=lf\|crlf\|cr]]` | [`Quirks::line_ending`] |
//! | `[[comments]]` / `[[unknown_fields]]` / `[[llama_cpp]]` | the [`Quirks`] flags |
//!
//! `after` defaults to 0. Behaviour items may share one directive: `[[tokens=3,ttft_ms=50]]`.
//! A fault queued with [`FakeLlm::push_fault`](crate::FakeLlm::push_fault) wins over a
//! fault directive; behaviour directives also apply on top of a queued
//! [`Fault::Tokens`].

use std::time::Duration;

use crate::behaviour::{Behaviour, Chunking, Fault, LineEnding, Quirks};

/// The directives found in one prompt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub fault: Option<Fault>,
    tokens: Option<usize>,
    ttft: Option<Duration>,
    token_delay: Option<Duration>,
    chunking: Option<Chunking>,
    line_ending: Option<LineEnding>,
    comments: bool,
    unknown_fields: bool,
    llama_cpp: bool,
}

impl Directives {
    /// Finds every `[[…]]` in `text`.
    pub(crate) fn parse(text: &str) -> Directives {
        let mut d = Directives::default();
        let mut rest = text;
        while let Some(start) = rest.find("[[") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("]]") else { break };
            d.apply_one(after[..end].trim());
            rest = &after[end + 2..];
        }
        d
    }

    fn apply_one(&mut self, inner: &str) {
        if let Some(spec) = inner.strip_prefix("fault:") {
            match parse_fault(spec) {
                Some(f) => self.fault = Some(f),
                None => tracing::warn!(directive = inner, "fake-llm: bad fault directive"),
            }
            return;
        }
        for item in inner.split(',').map(str::trim) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let num = value.and_then(|v| v.parse::<u64>().ok());
            match (key, num, value) {
                ("tokens", Some(n), _) => self.tokens = Some(n as usize),
                ("ttft_ms", Some(n), _) => self.ttft = Some(Duration::from_millis(n)),
                ("token_delay_ms", Some(n), _) => self.token_delay = Some(Duration::from_millis(n)),
                ("split", Some(n), _) => self.chunking = Some(Chunking::SplitEvery(n as usize)),
                ("coalesced", _, None) => self.chunking = Some(Chunking::Coalesced),
                ("per_event", _, None) => self.chunking = Some(Chunking::PerEvent),
                ("line_ending", _, Some(v)) => {
                    self.line_ending = match v.to_ascii_lowercase().as_str() {
                        "lf" => Some(LineEnding::Lf),
                        "crlf" => Some(LineEnding::CrLf),
                        "cr" => Some(LineEnding::Cr),
                        _ => self.line_ending,
                    }
                }
                ("comments", _, None) => self.comments = true,
                ("unknown_fields", _, None) => self.unknown_fields = true,
                ("llama_cpp", _, None) => self.llama_cpp = true,
                _ => tracing::debug!(directive = item, "fake-llm: unknown directive ignored"),
            }
        }
    }

    /// Applies the behaviour directives to `b`.
    pub(crate) fn apply(&self, b: &mut Behaviour) {
        if let Some(n) = self.tokens {
            b.tokens = n;
        }
        if let Some(d) = self.ttft {
            b.ttft = d;
        }
        if let Some(d) = self.token_delay {
            b.token_delay = d;
        }
        if let Some(c) = self.chunking {
            b.chunking = c;
        }
        let q: &mut Quirks = &mut b.quirks;
        if let Some(le) = self.line_ending {
            q.line_ending = le;
        }
        q.comments |= self.comments;
        q.unknown_fields |= self.unknown_fields;
        q.llama_cpp |= self.llama_cpp;
    }
}

fn parse_fault(spec: &str) -> Option<Fault> {
    let mut items = spec.split(',').map(str::trim);
    let first = items.next()?;
    let (kind, kind_value) = match first.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (first, None),
    };
    let mut after = 0usize;
    let mut retry_after = None;
    let mut retry_after_ms = None;
    for item in items {
        let (k, v) = item.split_once('=')?;
        let (k, v) = (k.trim(), v.trim());
        match k {
            "after" => after = v.parse().ok()?,
            "retry_after" => retry_after = Some(v.to_owned()),
            "retry_after_ms" => retry_after_ms = Some(v.to_owned()),
            _ => return None,
        }
    }
    Some(match kind {
        "status" => Fault::Status {
            status: kind_value?.parse().ok()?,
            retry_after,
            retry_after_ms,
        },
        "mid_stream_error" | "error" => Fault::MidStreamError {
            after_tokens: after,
        },
        "eof" | "eof_without_done" => Fault::EofWithoutDone {
            after_tokens: after,
        },
        "reset" => Fault::Reset {
            after_tokens: after,
        },
        "hang" | "hang_before_headers" => Fault::HangBeforeHeaders,
        "stall" => Fault::Stall {
            after_tokens: after,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(text: &str) -> Option<Fault> {
        Directives::parse(text).fault
    }

    #[test]
    fn faults() {
        assert_eq!(
            fault("hi [[fault:status=429,retry_after=1]] there"),
            Some(Fault::Status {
                status: 429,
                retry_after: Some("1".into()),
                retry_after_ms: None
            })
        );
        assert_eq!(
            fault("[[fault:status=529, retry_after_ms=250]]"),
            Some(Fault::Status {
                status: 529,
                retry_after: None,
                retry_after_ms: Some("250".into())
            })
        );
        assert_eq!(
            fault("[[fault:mid_stream_error,after=2]]"),
            Some(Fault::MidStreamError { after_tokens: 2 })
        );
        assert_eq!(
            fault("[[fault:eof,after=2]]"),
            Some(Fault::EofWithoutDone { after_tokens: 2 })
        );
        assert_eq!(
            fault("[[fault:reset,after=1]]"),
            Some(Fault::Reset { after_tokens: 1 })
        );
        assert_eq!(fault("[[fault:hang]]"), Some(Fault::HangBeforeHeaders));
        assert_eq!(
            fault("[[fault:stall,after=1]]"),
            Some(Fault::Stall { after_tokens: 1 })
        );
        assert_eq!(
            fault("[[fault:stall]]"),
            Some(Fault::Stall { after_tokens: 0 })
        );
        assert_eq!(fault("[[fault:nope]]"), None);
        assert_eq!(fault("[[fault:status]]"), None);
        assert_eq!(fault("[[fault:status=429,bogus=1]]"), None);
        assert_eq!(fault("no directive [[ unterminated"), None);
    }

    #[test]
    fn behaviour() {
        let d = Directives::parse(
            "[[tokens=3]] [[ttft_ms=20,token_delay_ms=5]] [[split=1]] [[line_ending=crlf]] [[comments]] [[llama_cpp]] [[what]]",
        );
        let mut b = Behaviour::default();
        d.apply(&mut b);
        assert_eq!(b.tokens, 3);
        assert_eq!(b.ttft, Duration::from_millis(20));
        assert_eq!(b.token_delay, Duration::from_millis(5));
        assert_eq!(b.chunking, Chunking::SplitEvery(1));
        assert_eq!(b.quirks.line_ending, LineEnding::CrLf);
        assert!(b.quirks.comments && b.quirks.llama_cpp && !b.quirks.unknown_fields);
        assert_eq!(d.fault, None);

        let mut b = Behaviour::default();
        Directives::parse("[[coalesced]][[unknown_fields]]").apply(&mut b);
        assert_eq!(b.chunking, Chunking::Coalesced);
        assert!(b.quirks.unknown_fields);
    }
}
