#!/usr/bin/env python3
"""Interop check for GET /ws (PROTOCOL.md §7): live sockets to agentd, spoken to with
the Python `websockets` library and judged by sentient-agent-framework 0.3.0.

Usage: ws_check.py BASE_URL   (e.g. http://127.0.0.1:8080; the socket is BASE/ws)

Each case opens its own socket. Every event message is checked twice by the official
`ResponseEventAdapter`: `validate_json` on the exact message text with the appended
`"requestId"` cut off, and `validate_python` on the parsed object without it. Then the
response-level rules: key order, ids strictly increasing, text streams closed with " ",
exactly one done, last, and the echo agent's exact answer; `requestId` echoed as the
last key of every event; `{"type":"metrics",...}` last. Errors must leave the socket
open; a close from the client must be answered with a close frame.
Prints one line per case, then "N passed, N failed". Exits 1 if any case failed.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional

from ulid import ULID

from check import CROCKFORD, KEY_ORDER, SPECIAL, Ctx, run_case, show, verr
from websockets.sync.client import ClientConnection, connect

from sentient_agent_framework.interface.events import (
    DoneEvent,
    ResponseEventAdapter,
    TextChunkEvent,
)

DEFAULT_SOURCE = "agentd"  # processor_id agentd uses for /ws (no session there)
ECHO_PREFIX = "⚡ High-speed response to: "
TIMEOUT = 15.0

_MISSING = object()


def compact(v: Any) -> str:
    """JSON as agentd writes it: compact, raw UTF-8, U+2028/U+2029/U+0085 escaped."""
    s = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    for ch in SPECIAL:
        s = s.replace(ch, "\\u%04x" % ord(ch))
    return s


def recv_text(ws: ClientConnection, ctx: Ctx) -> Optional[str]:
    msg = ws.recv(timeout=TIMEOUT)
    if not ctx.check(isinstance(msg, str), f"binary message {msg[:80]!r} (text frames expected)"):
        return None
    return msg


def read_answer(ws: ClientConnection, ctx: Ctx, request_id: Any, prompt: str) -> int:
    """Reads one answer up to the metrics message and checks it; returns the number of
    events. `request_id` is _MISSING when the query had none."""
    events: list[tuple[Any, dict]] = []
    metrics = None
    for _ in range(10_000):
        text = recv_text(ws, ctx)
        if text is None:
            return len(events)
        try:
            obj = json.loads(text)
        except ValueError as e:
            ctx.errors.append(f"message is not JSON ({e}): {show(text)}")
            continue
        if "type" in obj:
            metrics = (text, obj)
            break
        i = len(events)
        data = text
        if request_id is not _MISSING:
            keys = list(obj.keys())
            ctx.check(keys[-1:] == ["requestId"], f"event {i}: requestId is not the last key: {keys}")
            ctx.check(obj.pop("requestId", _MISSING) == request_id,
                      f"event {i}: requestId not echoed: {show(text)}")
            suffix = ',"requestId":' + compact(request_id) + "}"
            if ctx.check(text.endswith(suffix), f"event {i} does not end with {suffix!r}: {show(text)}"):
                data = text[: -len(suffix)] + "}"
        else:
            ctx.check("requestId" not in obj, f"event {i} has a requestId nobody sent: {show(text)}")
        try:
            ev = ResponseEventAdapter.validate_json(data)
            ResponseEventAdapter.validate_python(obj)
        except Exception as e:  # pydantic ValidationError
            ctx.errors.append(f"event {i} rejected by ResponseEventAdapter: {verr(e)}; data={show(data)}")
            continue
        want = KEY_ORDER.get(obj.get("content_type"))
        ctx.check(list(obj.keys()) == want, f"event {i} keys {list(obj.keys())} != {want}")
        ctx.check(compact(obj) == data, f"event {i} JSON not compact/canonical: {show(data)}")
        ctx.check(obj.get("metadata", "missing") is None, f"event {i} metadata {obj.get('metadata', 'missing')!r}")
        ctx.check(ev.source == DEFAULT_SOURCE, f"event {i} source {ev.source!r} != {DEFAULT_SOURCE!r}")
        idstr = obj.get("id", "")
        ctx.check(isinstance(idstr, str) and len(idstr) == 26 and set(idstr) <= CROCKFORD,
                  f"event {i} id {idstr!r} not an upper-case Crockford ULID string")
        for ch in SPECIAL:
            ctx.check(ch not in text, f"event {i}: raw U+{ord(ch):04X} in the message")
        events.append((ev, obj))
    else:
        ctx.errors.append("no metrics message after 10000 messages")

    # The metrics message comes last, after done.
    if ctx.check(metrics is not None, "no metrics message"):
        text, m = metrics
        ctx.check(m.get("type") == "metrics", f"unexpected message {show(text)}")
        pt = m.get("processingTime")
        ctx.check(isinstance(pt, (int, float)) and not isinstance(pt, bool) and pt >= 0,
                  f"processingTime {pt!r} is not a number of ms")
        ctx.check(m.get("requestId", _MISSING) == request_id,
                  f"metrics requestId {m.get('requestId', 'missing')!r} != {request_id!r}")

    # Response-level rules.
    ids = [o["id"] for _, o in events]
    for a, b in zip(ids, ids[1:]):
        ctx.check(a < b and ULID.from_str(a) < ULID.from_str(b), f"ids not strictly increasing: {a} then {b}")
    dones = [i for i, (ev, _) in enumerate(events) if isinstance(ev, DoneEvent)]
    ctx.check(dones == [len(events) - 1] and len(events) > 0, f"done events at {dones}, {len(events)} events")
    streams: dict[str, bool] = {}
    for i, (ev, _) in enumerate(events):
        if isinstance(ev, TextChunkEvent):
            ctx.check(not streams.get(ev.stream_id, False), f"event {i}: chunk after its stream completed")
            if ev.is_complete:
                ctx.check(ev.content == " ", f"event {i}: completing chunk content {ev.content!r} != ' '")
            streams[ev.stream_id] = streams.get(ev.stream_id, False) or ev.is_complete
    for sid, done in streams.items():
        ctx.check(done, f"stream {sid!r} never completed")

    # The echo agent's exact answer: [chunk(prefix + prompt), chunk(" ", complete), done].
    shapes = [type(ev).__name__ for ev, _ in events]
    if ctx.check(shapes == ["TextChunkEvent", "TextChunkEvent", "DoneEvent"],
                 f"expected [chunk, chunk, done], got {shapes}"):
        e0, e1 = events[0][0], events[1][0]
        ctx.check(e0.content == ECHO_PREFIX + prompt and not e0.is_complete,
                  f"first chunk {e0.content[:80]!r} != the echo of the prompt")
        ctx.check(e1.is_complete and e0.stream_id == e1.stream_id, "second chunk does not complete the stream")
    return len(events)


def expect_error(ws: ClientConnection, ctx: Ctx, sent: str, needle: str, request_id: Any = _MISSING) -> None:
    ws.send(sent)
    text = recv_text(ws, ctx)
    if text is None:
        return
    obj = json.loads(text)
    ctx.check(obj.get("type") == "error" and isinstance(obj.get("error"), str),
              f"{show(sent, 80)} -> {show(text)} (an error message expected)")
    ctx.check(needle in str(obj.get("error")), f"{needle!r} not in the error {show(text)}")
    ctx.check(obj.get("requestId", _MISSING) == request_id, f"error requestId: {show(text)}")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: ws_check.py BASE_URL", file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/")
    url = "ws" + base[len("http"):] + "/ws" if base.startswith("http") else base + "/ws"
    cases: list[tuple[str, Callable[[ClientConnection, Ctx], int]]] = []

    def ping(ws: ClientConnection, ctx: Ctx) -> int:
        ws.send('{"type":"ping"}')
        text = recv_text(ws, ctx)
        ctx.check(text == '{"type":"pong"}', f"pong: {text!r}")
        ws.send(json.dumps({"type": "ping", "requestId": "p-1"}))
        text = recv_text(ws, ctx)
        ctx.check(text == '{"type":"pong","requestId":"p-1"}', f"pong with requestId: {text!r}")
        # A protocol-level ping, answered with a pong frame.
        ctx.check(ws.ping(b"x").wait(TIMEOUT), "no pong frame for a ping frame")
        return 0

    def query(prompt: str, request_id: Any, with_id: bool = False):
        def run(ws: ClientConnection, ctx: Ctx) -> int:
            msg: dict[str, Any] = {"type": "agent-query", "prompt": prompt}
            if with_id:
                msg["id"] = str(ULID())
            if request_id is not _MISSING:
                msg["requestId"] = request_id
            ws.send(json.dumps(msg, ensure_ascii=False))
            return read_answer(ws, ctx, request_id, prompt)
        return run

    def several(ws: ClientConnection, ctx: Ctx) -> int:
        n = 0
        for i in range(3):  # sent together, answered in order
            ws.send(json.dumps({"type": "agent-query", "prompt": f"q{i}", "requestId": i}))
        for i in range(3):
            n += read_answer(ws, ctx, i, f"q{i}")
        return n

    def errors(ws: ClientConnection, ctx: Ctx) -> int:
        expect_error(ws, ctx, "{not json", "invalid JSON")
        expect_error(ws, ctx, '{"type":"dance","requestId":7}', "unknown type", 7)
        expect_error(ws, ctx, '{"type":"agent-query","requestId":"r"}', "prompt", "r")
        expect_error(ws, ctx, '{"type":"agent-query","prompt":""}', "prompt")
        expect_error(ws, ctx, json.dumps({"type": "agent-query", "prompt": "a" * 10001}), "10000")
        expect_error(ws, ctx, '{"type":"agent-query","prompt":"x","id":"not-a-ulid"}', "ULID")
        ws.send(b'{"type":"ping"}')
        text = recv_text(ws, ctx)
        ctx.check(text is not None and json.loads(text).get("type") == "error", f"binary frame -> {text!r}")
        # Still open and working.
        ws.send(json.dumps({"type": "agent-query", "prompt": "after errors", "requestId": "ok"}))
        return read_answer(ws, ctx, "ok", "after errors")

    emoji = "Hello 👋 wörld 🚀 — 日本語 🧑‍💻"
    special = "line\u2028sep\u2029para\u0085nel end"
    cases.append(("ping/pong", ping))
    cases.append(("agent-query with a string requestId", query("What is SSE?", "req-1")))
    cases.append(("agent-query with an object requestId", query(emoji, {"n": 1, "tags": ["a", special]})))
    cases.append(("agent-query with id, no requestId", query("with an id", _MISSING, with_id=True)))
    cases.append(("agent-query U+2028/U+2029/U+0085", query(special, 42)))
    cases.append(("agent-query 10000-char prompt", query("a" * 10000, None)))
    cases.append(("three queries at once, in order", several))
    cases.append(("errors keep the socket open", errors))

    passed = failed = 0
    for name, run in cases:
        def in_socket(ctx: Ctx, run=run) -> int:
            with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=None) as ws:
                n = run(ws, ctx)
                ws.close()
                # The server answered our close frame with its own.
                ctx.check(ws.close_code == 1000, f"close not answered with 1000: {ws.close_code!r}")
                return n
        ok = run_case(name, in_socket)
        passed += ok
        failed += not ok
    print(f"ws interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
