//! A reference Server-Sent Events parser, written from the WHATWG HTML "event stream
//! interpretation" rules, over a whole input held in memory.
//!
//! It exists to judge agentd's SSE encoder and its incremental upstream parser, so it
//! must never share code with either, keep no limits of its own and stay obviously
//! correct rather than fast. It works on bytes so that invalid UTF-8 stays visible.
//! One deliberate difference from the standard: a leading byte-order mark is not
//! stripped (agentd's upstream parser does not strip it either, and no provider sends
//! one).

/// What one block (the lines up to a blank line) produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A dispatched event: the last `event` field (empty when none) and the `data`
    /// fields joined with LF.
    Event { event: Vec<u8>, data: Vec<u8> },
    /// No `data` field: nothing is dispatched.
    Nothing,
    /// The input ended before the blank line: never dispatched.
    Unfinished,
}

/// One block of lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Bytes of all its lines, each counted with one terminator byte: an upper bound on
    /// what any parser must hold to build this block's event.
    pub footprint: usize,
    pub outcome: Outcome,
}

/// Splits `input` into lines ending in CRLF, LF or CR. The last element is the
/// unterminated rest (possibly empty).
pub fn lines(input: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\n' => {
                out.push(&input[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push(&input[start..i]);
                i += if input.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    (out, &input[start..])
}

/// Parses a whole stream into its blocks, in order.
pub fn parse(input: &[u8]) -> Vec<Block> {
    let (lines, rest) = lines(input);
    let mut blocks = Vec::new();
    let mut footprint = 0usize;
    let mut event: Vec<u8> = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    for line in lines {
        if line.is_empty() {
            let outcome = if data.is_empty() {
                Outcome::Nothing
            } else {
                // The data buffer ends in the LF appended after the last field.
                data.pop();
                Outcome::Event {
                    event: std::mem::take(&mut event),
                    data: std::mem::take(&mut data),
                }
            };
            event.clear();
            data.clear();
            blocks.push(Block { footprint, outcome });
            footprint = 0;
            continue;
        }
        footprint += line.len() + 1;
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (
                    &line[..i],
                    if v.first() == Some(&b' ') { &v[1..] } else { v },
                )
            }
            None => (line, &line[line.len()..]),
        };
        if field == b"event" {
            event = value.to_vec();
        } else if field == b"data" {
            data.extend_from_slice(value);
            data.push(b'\n');
        }
    }
    footprint += rest.len();
    if footprint > 0 {
        blocks.push(Block {
            footprint,
            outcome: Outcome::Unfinished,
        });
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_examples() {
        let blocks = parse(b"data: a\r\ndata:b\revent: x\n\n: c\n\ndata\n\nevent:y\ndata: z");
        let events: Vec<_> = blocks.iter().map(|b| &b.outcome).collect();
        assert_eq!(
            events,
            vec![
                &Outcome::Event {
                    event: b"x".to_vec(),
                    data: b"a\nb".to_vec()
                },
                &Outcome::Nothing,
                &Outcome::Event {
                    event: Vec::new(),
                    data: Vec::new()
                },
                &Outcome::Unfinished,
            ]
        );
    }
}
