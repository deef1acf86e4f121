//! An incremental parser for the SSE streams backends send (LLM providers, upstream
//! agents).
//!
//! Bytes arrive in arbitrary pieces: an event, a line, even a UTF-8 character may be
//! split across reads. Lines end in LF, CRLF or CR (a CR at the end of one piece and an
//! LF at the start of the next are one line end). `:` lines are comments; fields other
//! than `event` and `data` are ignored. Text is decoded only once an event is complete.
//! Every buffer is bounded by [`MAX_EVENT_BYTES`]; the parser never panics on input.

/// Largest event (all its lines) accepted from an upstream.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, empty when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("upstream event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("upstream event is not valid UTF-8")]
    InvalidUtf8,
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    skip_lf: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `on_event` for each completed event.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        on_event: &mut dyn FnMut(SseEvent),
    ) -> Result<(), SseError> {
        // The LF of a CRLF split across pieces; an empty piece leaves it pending.
        if self.skip_lf && !bytes.is_empty() {
            self.skip_lf = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while !bytes.is_empty() {
            match memchr::memchr2(b'\n', b'\r', bytes) {
                None => {
                    self.push_partial(bytes)?;
                    return Ok(());
                }
                Some(i) => {
                    self.push_partial(&bytes[..i])?;
                    let cr = bytes[i] == b'\r';
                    bytes = &bytes[i + 1..];
                    if cr {
                        if let Some(rest) = bytes.strip_prefix(b"\n") {
                            bytes = rest;
                        } else if bytes.is_empty() {
                            self.skip_lf = true;
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, on_event)?;
                    self.line = line;
                    self.line.clear();
                }
            }
        }
        Ok(())
    }

    /// Bytes the event being built holds besides the current line.
    fn held(&self) -> usize {
        self.event.len() + self.data.len()
    }

    fn push_partial(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + self.held() + bytes.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(
        &mut self,
        line: &[u8],
        on_event: &mut dyn FnMut(SseEvent),
    ) -> Result<(), SseError> {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"data" => {
                if self.held() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge);
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(SseEvent)) -> Result<(), SseError> {
        if !self.has_data {
            self.event.clear();
            return Ok(());
        }
        let data =
            String::from_utf8(std::mem::take(&mut self.data)).map_err(|_| SseError::InvalidUtf8)?;
        let event = String::from_utf8(std::mem::take(&mut self.event))
            .map_err(|_| SseError::InvalidUtf8)?;
        self.has_data = false;
        on_event(SseEvent { event, data });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input.chunks(piece.max(1)) {
            p.feed(c, &mut |e| out.push(e)).unwrap();
        }
        out
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let input = "event: a\ndata: {\"t\":\"é⚡😀\"}\n\n: comment\r\ndata: x\r\ndata: y\r\n\r\nid: 3\rretry: 5\rfoo: bar\revent: b\rdata:no-space\r\r".as_bytes();
        let whole = parse_in_pieces(input, input.len());
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: "a".into(),
                    data: "{\"t\":\"é⚡😀\"}".into()
                },
                SseEvent {
                    event: "".into(),
                    data: "x\ny".into()
                },
                SseEvent {
                    event: "b".into(),
                    data: "no-space".into()
                },
            ]
        );
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), whole, "piece size {piece}");
        }
    }

    #[test]
    fn cr_then_lf_across_pieces_is_one_line_end() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: a\r", &mut |e| out.push(e)).unwrap();
        p.feed(b"\n\r", &mut |e| out.push(e)).unwrap();
        p.feed(b"\n", &mut |e| out.push(e)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, "a");
    }

    #[test]
    fn limits_and_bad_utf8() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.feed(&big, &mut |_| {}), Err(SseError::TooLarge));
        let mut p = SseParser::new();
        assert_eq!(
            p.feed(b"data: \xff\n\n", &mut |_| {}),
            Err(SseError::InvalidUtf8)
        );
    }

    #[test]
    fn a_split_crlf_does_not_swallow_the_next_line_end() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in ["data: a\r", "\n", "", "\ndata: b\n\n"] {
            p.feed(piece.as_bytes(), &mut |e| out.push(e.data)).unwrap();
        }
        assert_eq!(out, ["a", "b"]);
    }

    #[test]
    fn the_event_name_counts_toward_the_limit() {
        let half = "x".repeat(MAX_EVENT_BYTES / 2 + 1);
        let mut p = SseParser::new();
        let input = format!("event: {half}\ndata: {half}\n\n");
        assert_eq!(
            p.feed(input.as_bytes(), &mut |_| {}),
            Err(SseError::TooLarge)
        );
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert!(parse_in_pieces(b"event: ping\n\n: c\n\n", 3).is_empty());
    }
}
