//! Configuration types: what a normal answer looks like ([`Behaviour`], [`Chunking`],
//! [`Quirks`], [`LineEnding`]) and what can go wrong with one ([`Fault`]).

use std::time::Duration;

/// How a successful answer is generated and written.
///
/// Token `i` (0-based) of an answer is `format!("{token_text}{i}")`, so with the default
/// `token_text` of `"tok "` a 3-token answer is `"tok 0tok 1tok 2"`. [`Behaviour::token`]
/// and [`Behaviour::text`] compute them for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Content tokens in a full answer (before `max_tokens` truncation). Default 5.
    pub tokens: usize,
    /// Prefix of every token; token `i` is `format!("{token_text}{i}")`. Default `"tok "`.
    pub token_text: String,
    /// Delay before the first content token (the preamble events and the response
    /// headers are sent at once). Default 0.
    pub ttft: Duration,
    /// Delay between content tokens. Default 0.
    pub token_delay: Duration,
    /// How the SSE byte stream is cut into writes.
    pub chunking: Chunking,
    /// Legal-but-awkward variations of the wire format.
    pub quirks: Quirks,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            tokens: 5,
            token_text: "tok ".to_owned(),
            ttft: Duration::ZERO,
            token_delay: Duration::ZERO,
            chunking: Chunking::PerEvent,
            quirks: Quirks::default(),
        }
    }
}

impl Behaviour {
    /// Token `i` (0-based): `format!("{token_text}{i}")`.
    pub fn token(&self, i: usize) -> String {
        format!("{}{}", self.token_text, i)
    }

    /// The concatenation of the first `n` tokens: the full text of an `n`-token answer.
    pub fn text(&self, n: usize) -> String {
        (0..n).map(|i| self.token(i)).collect()
    }

    /// Total time the content tokens of an `n`-token answer take (ttft + delays).
    pub fn duration(&self, n: usize) -> Duration {
        if n == 0 {
            self.ttft
        } else {
            self.ttft + self.token_delay * (n as u32 - 1)
        }
    }
}

/// How the response body's bytes are cut into writes (HTTP/1.1 chunks / HTTP/2 DATA frames,
/// each flushed on its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Chunking {
    /// Each SSE event in its own write.
    #[default]
    PerEvent,
    /// Re-split the whole byte stream into pieces of N bytes (cut anywhere, even inside a
    /// UTF-8 character or between `\r` and `\n`). 0 is treated as 1. A token's delay is
    /// waited before the piece that holds the token event's first byte.
    SplitEvery(usize),
    /// All events in one write (sent when the last of them would have been; a fault's
    /// control action, e.g. a stall, still ends the write before it).
    Coalesced,
}

/// Line terminator used for every SSE line (and for the blank line ending an event).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LineEnding {
    /// `\n`
    #[default]
    Lf,
    /// `\r\n`
    CrLf,
    /// `\r`
    Cr,
}

impl LineEnding {
    /// The terminator's bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n",
            LineEnding::CrLf => "\r\n",
            LineEnding::Cr => "\r",
        }
    }
}

/// Variations of the wire format that a correct SSE/JSON consumer must tolerate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Line terminator for all lines.
    pub line_ending: LineEnding,
    /// A standalone `: keep-alive` comment block opens the stream, and every event is
    /// preceded by a `: keep-alive` comment line.
    pub comments: bool,
    /// Every top-level JSON object gets an extra `"x_fake_extra":{…}` key, every event an
    /// extra `x-fake-field: ignored` line, and right after the first event comes an event
    /// of an unknown name: `event: x_fake_unknown` / `data: {"type":"x_fake_unknown"}`
    /// (for both providers).
    pub unknown_fields: bool,
    /// llama.cpp's `llama-server`: OpenAI's first chunk has `"content":null` and chunks
    /// before the usage chunk have no `usage` key (OpenAI sends `"usage":null` when
    /// `include_usage` is set); Anthropic's stream has no `ping`.
    pub llama_cpp: bool,
}

/// A one-off thing to do to a request instead of the default behaviour.
///
/// "After `after_tokens`" counts content tokens; it is clamped to the number of tokens
/// the answer would have had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and the provider's JSON error body (`529` on the
    /// Anthropic route is `overloaded_error`, `429` a rate-limit error). The header values,
    /// if given, are sent as `retry-after` (seconds) and `retry-after-ms`.
    Status {
        status: u16,
        retry_after: Option<String>,
        retry_after_ms: Option<String>,
    },
    /// Stream `after_tokens` tokens, then an error event, then end the body cleanly.
    /// OpenAI: `data: {"error":{"message":…,"type":"server_error","param":null,"code":null}}`;
    /// Anthropic: `event: error` + `{"type":"error","error":{"type":"overloaded_error",…}}`.
    /// On a non-streaming request: a 500 (OpenAI) / 529 (Anthropic) error response.
    MidStreamError { after_tokens: usize },
    /// Stream `after_tokens` tokens, then end the body cleanly (chunked terminator / END_STREAM)
    /// without the finish chunk, usage and `[DONE]` (OpenAI) or `content_block_stop`,
    /// `message_delta` and `message_stop` (Anthropic). On a non-streaming request: half the
    /// JSON, then the body is aborted.
    EofWithoutDone { after_tokens: usize },
    /// Stream `after_tokens` tokens, then abort the TCP connection with an RST (SO_LINGER 0).
    /// On a non-streaming request: reset before the headers.
    Reset { after_tokens: usize },
    /// Read the whole request, never answer (until the client goes away).
    HangBeforeHeaders,
    /// Stream `after_tokens` tokens, then go silent forever (until the client goes away).
    /// On a non-streaming request: like [`Fault::HangBeforeHeaders`].
    Stall { after_tokens: usize },
    /// Answer normally, with this behaviour instead of the default.
    Tokens(Behaviour),
}

impl Fault {
    /// `Status` with no retry headers.
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            retry_after: None,
            retry_after_ms: None,
        }
    }

    /// `Status` with a `retry-after` header (seconds).
    pub fn status_retry_after(status: u16, seconds: u64) -> Fault {
        Fault::Status {
            status,
            retry_after: Some(seconds.to_string()),
            retry_after_ms: None,
        }
    }
}
