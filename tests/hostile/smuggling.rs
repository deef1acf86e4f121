//! Request smuggling in raw bytes: every shape of ambiguous HTTP/1 framing, each with a
//! second request hidden where a front end and agentd could disagree. None may ever be
//! processed; what hyper does with each is written beside its case.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentd::{Agent, AgentError, Query, ResponseHandler, Session};
use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;
use crate::support::*;

/// Records every prompt it is asked, and answers with one text block.
#[derive(Default)]
struct RecordingAgent {
    prompts: Mutex<Vec<String>>,
}

#[async_trait]
impl Agent for RecordingAgent {
    fn name(&self) -> &str {
        "recording"
    }
    async fn assist(
        &self,
        _s: &Session,
        q: &Query,
        h: &mut ResponseHandler,
    ) -> Result<(), AgentError> {
        self.prompts.lock().unwrap().push(q.prompt.clone());
        h.emit_text_block("SEEN", "ok").await?;
        Ok(())
    }
}

/// The request an attacker hides; if any server path processes it, the agent sees
/// this prompt.
const SMUGGLED: &[u8] = b"GET /stream?prompt=SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n";

/// What a case must end in (beyond "the smuggled request is never processed").
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// hyper refuses the head: at most its own 400, then the connection closes; the
    /// agent is not called.
    HeadRefused,
    /// The head is accepted but the body's framing is broken: at most one 400, then
    /// the connection closes; the agent is not called.
    BodyRefused,
    /// Exactly one response with this status; `closes` says the connection must close
    /// after it; the front prompt reaches the agent exactly when the status is 200.
    One { status: u16, closes: bool },
}

struct Case {
    name: &'static str,
    wire: Vec<u8>,
    expect: Expect,
}

fn post_head(extra: &str) -> Vec<u8> {
    format!("POST /agent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}\r\n")
        .into_bytes()
}

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The legitimate request's body in the case `name`: its prompt names the case, so
/// "served once" is checkable per case.
fn front(name: &str) -> Vec<u8> {
    body(&format!("front: {name}")).into_bytes()
}

/// Every smuggling shape.
fn smuggling_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &'static str, wire: &dyn Fn(&[u8]) -> Vec<u8>, expect| {
        cases.push(Case {
            name,
            wire: wire(&front(name)),
            expect,
        })
    };
    // CL.TE: Content-Length covers a chunked body and a second request. hyper: chunked
    // wins, Content-Length is dropped and the connection closes after the response.
    add(
        "CL+TE",
        &|b| {
            let c = chunked(b);
            let cl = c.len() + SMUGGLED.len();
            cat(&[
                &post_head(&format!(
                    "Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"
                )),
                &c,
                SMUGGLED,
            ])
        },
        Expect::One {
            status: 200,
            closes: true,
        },
    );
    // TE.CL: a chunk holds the second request, Content-Length covers only the size
    // line. hyper: chunked wins (the chunk is the body: not JSON, 400), then closes.
    add(
        "TE+CL",
        &|_| {
            cat(&[
                &post_head("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"),
                &chunked(SMUGGLED),
            ])
        },
        Expect::One {
            status: 400,
            closes: true,
        },
    );
    // Two differing Content-Length lines. hyper: 400 from the parser.
    add(
        "duplicate differing Content-Length",
        &|b| {
            let (short, long) = (b.len(), b.len() + SMUGGLED.len());
            cat(&[
                &post_head(&format!(
                    "Content-Length: {short}\r\nContent-Length: {long}\r\n"
                )),
                b,
                SMUGGLED,
            ])
        },
        Expect::HeadRefused,
    );
    // One Content-Length line holding a list. hyper: not a number, 400.
    add(
        "Content-Length list",
        &|b| {
            let (short, long) = (b.len(), b.len() + SMUGGLED.len());
            cat(&[
                &post_head(&format!("Content-Length: {short}, {long}\r\n")),
                b,
                SMUGGLED,
            ])
        },
        Expect::HeadRefused,
    );
    add(
        "Content-Length with a sign",
        &|b| {
            cat(&[
                &post_head(&format!("Content-Length: +{}\r\n", b.len())),
                b,
                SMUGGLED,
            ])
        },
        Expect::HeadRefused,
    );
    add(
        "Content-Length overflowing u64",
        &|b| {
            cat(&[
                &post_head("Content-Length: 99999999999999999999999\r\n"),
                b,
                SMUGGLED,
            ])
        },
        Expect::HeadRefused,
    );
    // Transfer-Encoding that does not end in chunked, or is not quite "chunked": a
    // front end might fall back to Content-Length. hyper: 400 for all.
    for (name, te) in [
        ("Transfer-Encoding: chunked, identity", "chunked, identity"),
        ("Transfer-Encoding: xchunked", "xchunked"),
        ("Transfer-Encoding: identity", "identity"),
        ("Transfer-Encoding with a vertical tab", "\x0bchunked"),
        // Whitespace between a field name and its colon must be refused (RFC 9112 §5.1).
        ("space before the colon of Transfer-Encoding", "SPACE"),
    ] {
        add(
            name,
            &|b| {
                let c = chunked(b);
                let cl = c.len() + SMUGGLED.len();
                let te_line = if te == "SPACE" {
                    "Transfer-Encoding : chunked\r\n".to_string()
                } else {
                    format!("Transfer-Encoding: {te}\r\n")
                };
                cat(&[
                    &post_head(&format!("{te_line}Content-Length: {cl}\r\n")),
                    &c,
                    SMUGGLED,
                ])
            },
            Expect::HeadRefused,
        );
    }
    // Chunked over HTTP/1.0, which has no chunked coding. hyper: 400.
    add(
        "HTTP/1.0 with Transfer-Encoding",
        &|b| {
            let c = chunked(b);
            let head = format!(
                "POST /agent HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n",
                c.len() + SMUGGLED.len()
            );
            cat(&[head.as_bytes(), &c, SMUGGLED])
        },
        Expect::HeadRefused,
    );
    // obs-fold: a front end that unfolds sees "X-Pad: a Transfer-Encoding: chunked" and
    // uses Content-Length; one that does not sees Transfer-Encoding. hyper (httparse): a
    // line starting with white space is not a field name, 400.
    add(
        "obs-fold hiding Transfer-Encoding",
        &|b| {
            let c = chunked(b);
            let cl = c.len() + SMUGGLED.len();
            cat(&[
                &post_head(&format!(
                    "Content-Length: {cl}\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n"
                )),
                &c,
                SMUGGLED,
            ])
        },
        Expect::HeadRefused,
    );
    add(
        "obs-fold continuing Transfer-Encoding",
        &|b| {
            let c = chunked(b);
            let cl = c.len() + SMUGGLED.len();
            cat(&[
                &post_head(&format!(
                    "Transfer-Encoding: identity\r\n\tchunked\r\nContent-Length: {cl}\r\n"
                )),
                &c,
                SMUGGLED,
            ])
        },
        Expect::HeadRefused,
    );
    // Chunk sizes that are not hex, or overflow: the body fails, the request is 400
    // (or dropped) and the connection closes.
    for (name, size) in [
        ("chunk size not hex", "zz"),
        ("chunk size overflowing u64", "1ffffffffffffffff"),
        ("chunk size negative", "-1"),
    ] {
        add(
            name,
            &|b| {
                cat(&[
                    &post_head("Transfer-Encoding: chunked\r\n"),
                    size.as_bytes(),
                    b"\r\n",
                    b,
                    b"\r\n0\r\n\r\n",
                    SMUGGLED,
                ])
            },
            Expect::BodyRefused,
        );
    }
    // Bare LF ending chunk lines. hyper: the chunked decoder wants CRLF, the body fails.
    add(
        "bare LF in chunk lines",
        &|b| {
            cat(&[
                &post_head("Transfer-Encoding: chunked\r\n"),
                format!("{:x}\n", b.len()).as_bytes(),
                b,
                b"\n0\n\n",
                SMUGGLED,
            ])
        },
        Expect::BodyRefused,
    );
    // Bare LF splitting a header line: a front end that needs CRLF sees one field
    // "X-Pad: a\nTransfer-Encoding: chunked" and uses Content-Length. hyper (httparse)
    // takes LF as a line end: TE + CL, so chunked and close; the front is served once.
    add(
        "bare LF hiding Transfer-Encoding",
        &|b| {
            let c = chunked(b);
            let cl = c.len() + SMUGGLED.len();
            cat(&[
                &post_head(&format!(
                    "Content-Length: {cl}\r\nX-Pad: a\nTransfer-Encoding: chunked\r\n"
                )),
                &c,
                SMUGGLED,
            ])
        },
        Expect::One {
            status: 200,
            closes: true,
        },
    );
    // A head with only bare LF line ends (hyper accepts them), Content-Length covering
    // the JSON and the second request: all of it is the body (not JSON), one 400.
    add(
        "bare LF head, second request inside Content-Length",
        &|b| {
            let head = format!(
                "POST /agent HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {}\n\n",
                b.len() + SMUGGLED.len()
            );
            cat(&[head.as_bytes(), b, SMUGGLED])
        },
        Expect::One {
            status: 400,
            closes: false,
        },
    );
    // A second request as the whole body of the first: it is body, never a request.
    add(
        "request hidden in a POST body",
        &|_| {
            cat(&[
                &post_head(&format!("Content-Length: {}\r\n", SMUGGLED.len())),
                SMUGGLED,
            ])
        },
        Expect::One {
            status: 400,
            closes: false,
        },
    );
    // The same in the body of a GET whose route never reads a body: hyper still frames
    // it by Content-Length (drains it or closes), so it is never parsed as a request.
    add(
        "request hidden in a GET body the route ignores",
        &|_| {
            let head = format!(
                "GET /health/live HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                SMUGGLED.len()
            );
            cat(&[head.as_bytes(), SMUGGLED])
        },
        Expect::One {
            status: 200,
            closes: false,
        },
    );
    cases
}

/// What one case did on the wire.
struct Outcome {
    statuses: Vec<u16>,
    closed: bool,
}

async fn run_case(addr: SocketAddr, wire: Vec<u8>) -> Outcome {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may refuse before reading everything; a failed write is fine.
    let _ = s.write_all(&wire).await;
    // Long enough for a response and a close; a kept-alive connection idles it out.
    let (got, closed) = read_to_close(&mut s, Duration::from_millis(1_500)).await;
    Outcome {
        statuses: response_statuses(&got),
        closed,
    }
}

#[tokio::test]
async fn smuggling_shapes_never_reach_a_second_request() {
    let agent = Arc::new(RecordingAgent::default());
    let server = start(config(), agent.clone());
    let cases = smuggling_cases();
    let runs: Vec<_> = cases
        .iter()
        .map(|c| tokio::spawn(run_case(server.addr, c.wire.clone())))
        .collect();
    let mut outcomes = Vec::new();
    for r in runs {
        outcomes.push(r.await.unwrap());
    }
    let prompts = agent.prompts.lock().unwrap().clone();
    let mut failures = Vec::new();
    let mut served_fronts = Vec::new();
    for (c, o) in cases.iter().zip(&outcomes) {
        eprintln!(
            "smuggling: {:<52} responses {:?}, closed {}",
            c.name, o.statuses, o.closed
        );
        let ok = match c.expect {
            Expect::HeadRefused | Expect::BodyRefused => {
                o.statuses.len() <= 1 && o.statuses.iter().all(|s| *s == 400) && o.closed
            }
            Expect::One { status, closes } => o.statuses == [status] && (o.closed || !closes),
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got responses {:?}, closed {}\n  wire: {:?}",
                c.name,
                c.expect,
                o.statuses,
                o.closed,
                String::from_utf8_lossy(&c.wire)
            ));
        }
        if c.wire.starts_with(b"POST /agent") && o.statuses.first() == Some(&200) {
            served_fronts.push(format!("front: {}", c.name));
        }
    }
    assert!(
        !prompts.iter().any(|p| p == "SMUGGLED"),
        "a smuggled request was processed; prompts seen: {prompts:?}"
    );
    let mut seen = prompts.clone();
    seen.sort();
    served_fronts.sort();
    assert_eq!(
        seen, served_fronts,
        "the agent ran once for each front request answered 200, and for nothing else"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(get_status(&server, "/health/live").await, 200);
}

/// The control: when a second request really is there (a plain pipeline), this
/// harness sees it, on the wire and in the agent, so the test above can fail.
#[tokio::test]
async fn a_real_pipelined_second_request_is_seen() {
    let agent = Arc::new(RecordingAgent::default());
    let server = start(config(), agent.clone());
    let b = front("control");
    let wire = cat(&[
        &post_head(&format!("Content-Length: {}\r\n", b.len())),
        &b,
        SMUGGLED,
    ]);
    let o = run_case(server.addr, wire).await;
    assert_eq!(o.statuses, [200, 200]);
    let prompts = agent.prompts.lock().unwrap().clone();
    assert_eq!(prompts, ["front: control", "SMUGGLED"]);
}
