//! `GET /ws`: the agent over WebSocket (README.md, Endpoints).
//!
//! The upgrade is validated ([`handshake`]: `Connection: upgrade`, `Upgrade:
//! websocket`, `Sec-WebSocket-Version: 13`, a 16-byte base64 `Sec-WebSocket-Key`;
//! anything else is a 400 in the usual JSON error shape) and answered with a `101`
//! [`Reply`]; hyper then hands the socket over and one task on this worker serves it
//! until it closes.
//!
//! Messages are text frames of JSON. `{"type":"ping"}` gets `{"type":"pong"}`.
//! `{"type":"agent-query","prompt":…,"id"?:ULID,"requestId"?:any}` (or, the guide's
//! other shape, `{"type":"agent-query","query":{"id"?,"prompt"},"requestId"?}`; the
//! grammar is [`message`]) runs the configured agent exactly as `/agent` does: the same
//! prompt and id rules, a synthesized session, and the same answer lifecycle
//! (`routes::answer`: every answer ends with one `done`). Each event is one text
//! message, its JSON with `"requestId"` appended as the last key when the query had
//! one; then `{"type":"metrics","processingTime":<ms>,"requestId"?:…}`, the time from
//! the answer's start, in milliseconds with microsecond decimals. Bad JSON, an invalid
//! field, an unknown type or a binary message gets
//! `{"type":"error","error":"…","requestId"?:…}` and the socket stays open. Replies to
//! a message that carried a `requestId` carry it too.
//!
//! One answer runs at a time per socket. Queries that arrive meanwhile wait, in order
//! (at most [`MAX_WAITING`] of them and `WS_MAX_MESSAGE` bytes in all; beyond that
//! they are refused with an error); pings and errors are answered at once, so a pong
//! may come between two events of a running answer. The socket is read all the time,
//! so a close frame or a dropped connection cancels the running agent at once.
//!
//! Limits: a message (or a frame) over `WS_MAX_MESSAGE` closes the socket with 1009,
//! refused from the frame header before the payload is buffered; invalid UTF-8 closes
//! with 1007, a protocol violation with 1002. No message from the client for
//! `WS_IDLE_TIMEOUT` while no answer runs closes it with 1000; the server draining
//! lets the running answer finish (the shutdown deadline still cuts it with error +
//! done), refuses waiting queries, then closes with 1001. Events go through the
//! per-answer bounded queue (`SSE_QUEUE_BYTES`); every write to the socket must finish
//! within `SSE_SLOW_READER_TIMEOUT`, and the agent waits no longer than that for queue
//! space, so a client that stops reading is dropped (and its agent cancelled) instead
//! of growing memory. The close handshake is answered by the library; a close we start
//! waits for the client's reply, within [`CLOSE_TIMEOUT`].
//!
//! Cost: an event without `requestId` is a slice of the queue's buffer (no copy, no
//! allocation); with one it is built in a buffer the socket reuses. The socket's read
//! buffer starts at [`READ_BUFFER`] bytes, so thousands of idle sockets stay cheap.
//!
//! Code map: [`handshake`] checks the upgrade and computes the accept key,
//! [`message`] is the message grammar (pure), `socket` is the socket's task, and the
//! answer itself runs through `routes::answer` like every other route's. This module
//! only joins them and must never hold per-socket state.

pub mod handshake;
pub mod message;
mod socket;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

pub use socket::{CLOSE_TIMEOUT, MAX_WAITING, READ_BUFFER};

use crate::http::{HttpError, Reply};
use crate::routes::App;

/// The connection's slot and drain token, carried into the upgraded socket's task.
#[derive(Clone)]
pub struct Hold(pub crate::http::activity::ConnHold);

/// `GET /ws`: validates the upgrade, answers `101` and serves the socket in a task on
/// this worker.
pub fn upgrade(
    req: Request<Incoming>,
    headers: &HeaderMap,
    app: &Arc<App>,
    request_id: &HeaderValue,
) -> Result<Reply, HttpError> {
    // Before anything else: a page from a refused origin must not get a socket.
    if !app.cors.allows_websocket(headers) {
        return Err(HttpError::OriginNotAllowed);
    }
    let key = match handshake::check_upgrade(req.method(), req.version(), headers) {
        Ok(key) => key,
        Err((issues, bad_version)) => {
            let reply = HttpError::Validation(issues).into_reply(request_id);
            // RFC 6455 §4.4: tell the client which version we speak.
            return Ok(if bad_version {
                reply.with_header(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                )
            } else {
                reply
            });
        }
    };
    let accept = handshake::accept_key(key);
    let hold = req.extensions().get::<Hold>().cloned();
    let on_upgrade = hyper::upgrade::on(req);
    let (app, request_id) = (app.clone(), request_id.clone());
    tokio::spawn(async move {
        let _hold = hold;
        match on_upgrade.await {
            Ok(upgraded) => socket::serve(TokioIo::new(upgraded), app, request_id).await,
            Err(e) => {
                tracing::debug!(request_id = ?request_id, error = %e, "websocket upgrade failed")
            }
        }
    });
    Ok(Reply::websocket_upgrade(accept))
}
