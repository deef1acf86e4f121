#!/usr/bin/env python3
"""Interop check: live requests to agentd, judged by sentient-agent-framework 0.3.0.

Usage: check.py BASE_URL   (e.g. http://127.0.0.1:8080)

Every event of every response goes through the official package's
`ResponseEventAdapter.validate_json`. sentient-agent-framework 0.3.0 has no SSE
client of its own, so each response's exact bytes are read three ways and all of them must agree:
  1. a strict byte-level parser written here, which checks the framing agentd promises;
  2. httpx-sse, a common Python SSE client that splits lines on CR/LF only;
  3. httpx `Response.iter_lines()`, the naive path many clients take. It splits on
     str.splitlines() boundaries (U+2028/U+2029/U+0085 included), so it only works
     when the server escapes those characters.
Prints one line per case, then "N passed, N failed". Exits 1 if any case failed.
"""
from __future__ import annotations

import json
import sys
import traceback
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable, Optional

import httpx
import httpx_sse
from ulid import ULID

from sentient_agent_framework.interface.events import (
    DoneEvent,
    ResponseEventAdapter,
    TextChunkEvent,
)
from sentient_agent_framework.interface.request import Query, Request
from sentient_agent_framework.interface.session import SessionObject

DEFAULT_SOURCE = "agentd"  # processor_id agentd uses when no session is sent
PROCESSOR_ID = "sentient-chat-client"
ECHO_PREFIX = "⚡ High-speed response to: "
TIMEOUT = httpx.Timeout(15.0)
SPECIAL = "\u2028\u2029\u0085"
SPECIAL_ESCAPED = {"\u2028": b"\\u2028", "\u2029": b"\\u2029", "\u0085": b"\\u0085"}

COMMON_KEYS = ["content_type", "event_name", "schema_version", "id", "source", "metadata"]
KEY_ORDER = {
    "atomic.textblock": COMMON_KEYS + ["content"],
    "atomic.json": COMMON_KEYS + ["content"],
    "chunked.text": COMMON_KEYS + ["stream_id", "is_complete", "content"],
    "atomic.error": COMMON_KEYS + ["content"],
    "atomic.done": COMMON_KEYS,
}
CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


@dataclass
class Response:
    status: int
    headers: httpx.Headers
    raw: bytes


@dataclass
class Ctx:
    errors: list[str] = field(default_factory=list)

    def check(self, cond: bool, msg: str) -> bool:
        if not cond:
            self.errors.append(msg)
        return cond


def verr(e: Exception) -> str:
    """One line for a pydantic ValidationError (first error: loc, type, msg)."""
    errs = getattr(e, "errors", None)
    if callable(errs):
        try:
            first = errs()[0]
            return f"{first.get('type')} at {'.'.join(str(x) for x in first.get('loc', ()))}: {first.get('msg')}"
        except Exception:
            pass
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def show(b: bytes, limit: int = 300) -> str:
    """Show exact bytes, shortened around the middle if long."""
    r = repr(b)
    return r if len(r) <= limit else r[: limit // 2] + " ... " + r[-limit // 2 :]


def run_case(name: str, run: Callable[[Ctx], int]) -> bool:
    """Runs one case, turning an exception into a problem; prints PASS or FAIL."""
    ctx = Ctx()
    n = 0
    try:
        n = run(ctx)
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        ctx.errors.append(f"exception: {type(e).__name__}: {e} (at {tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})")
    if ctx.errors:
        print(f"FAIL {name}: {len(ctx.errors)} problem(s)")
        for err in ctx.errors[:12]:
            print(f"     - {err}")
        if len(ctx.errors) > 12:
            print(f"     - ... {len(ctx.errors) - 12} more")
        return False
    print(f"PASS {name} ({n} events)")
    return True


def official_request_body(prompt: str, processor_id: str = PROCESSOR_ID) -> bytes:
    """The body as the official models serialise it (upper-case ULIDs, interactions [])."""
    req = Request(
        query=Query(id=ULID(), prompt=prompt),
        session=SessionObject(
            processor_id=processor_id,
            activity_id=ULID(),
            request_id=ULID(),
            interactions=[],
        ),
    )
    body = req.model_dump_json().encode("utf-8")
    # Sanity: the official model must accept its own body back.
    Request.model_validate_json(body)
    return body


def sessionless_body(prompt: str) -> bytes:
    return json.dumps(
        {"query": {"id": str(ULID()), "prompt": prompt}}, ensure_ascii=False
    ).encode("utf-8")


# ----------------------------------------------------------------- SSE readers

def parse_strict(raw: bytes, named: bool, ctx: Ctx) -> list[tuple[Optional[str], bytes]]:
    """Byte-level parse of agentd's promised framing.

    named=True:  every event is exactly b"event: NAME\\ndata: JSON\\n\\n"
    named=False: every event is exactly b"id: ID\\ndata: JSON\\n\\n" (/stream: the SSE id an
                 EventSource sends back as Last-Event-ID), ID being the event's own "id"
    A heartbeat comment block b":\\n\\n" (or b": text\\n\\n") is tolerated.
    """
    out: list[tuple[Optional[str], bytes]] = []
    ctx.check(b"\r" not in raw, f"body contains CR (LF only expected): {show(raw)}")
    if not ctx.check(raw.endswith(b"\n\n"), f"body does not end with a blank line: tail={show(raw[-120:])}"):
        return out
    blocks = raw[:-2].split(b"\n\n")
    for i, block in enumerate(blocks):
        lines = block.split(b"\n")
        if all(l.startswith(b":") for l in lines):
            continue  # heartbeat / comment
        if named:
            ok = (
                len(lines) == 2
                and lines[0].startswith(b"event: ")
                and lines[1].startswith(b"data: ")
            )
            if not ctx.check(ok, f"block {i} is not 'event: X\\ndata: Y': {show(block)}"):
                continue
            out.append((lines[0][len(b"event: "):].decode("utf-8"), lines[1][len(b"data: "):]))
        else:
            ok = (
                len(lines) == 2
                and lines[0].startswith(b"id: ")
                and lines[1].startswith(b"data: ")
            )
            if not ctx.check(ok, f"block {i} is not 'id: X\\ndata: Y': {show(block)}"):
                continue
            sse_id = lines[0][len(b"id: "):].decode("ascii", "replace")
            data = lines[1][len(b"data: "):]
            ctx.check(
                f'"id":"{sse_id}"'.encode() in data,
                f"block {i}: the SSE id {sse_id} is not the event's id: {show(block)}",
            )
            out.append((None, data))
    return out


def parse_naive_lines(lines: list[str]) -> list[str]:
    """What a naive client does with httpx iter_lines(): take each 'data:' line."""
    return [l[5:].lstrip(" ") for l in lines if l.startswith("data:")]


# ------------------------------------------------------------------ requests

class _ReplayStream(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes]):
        self._chunks = chunks

    def __iter__(self):
        yield from self._chunks


def _replay_client(status: int, headers: httpx.Headers, chunks: list[bytes]) -> httpx.Client:
    """A client whose transport replays the exact chunks agentd sent (no re-request,
    so the ids are the same), to run the public client-library parsing paths on them."""
    hdrs = [(k, v) for k, v in headers.multi_items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=hdrs, stream=_ReplayStream(chunks))
    return httpx.Client(transport=httpx.MockTransport(handler))


def do_request(client: httpx.Client, method: str, url: str, body: Optional[bytes] = None,
               encoding: str = "identity") -> tuple[Response, list[str], list[tuple[str, str]]]:
    """One live request; its exact chunks (raw for `identity`, else as httpx decodes
    them) are then replayed through httpx iter_lines() and httpx-sse's
    connect_sse()/iter_sse()."""
    headers = {"accept": "text/event-stream", "accept-encoding": encoding}
    if body is not None:
        headers["content-type"] = "application/json"
    with client.stream(method, url, content=body, headers=headers) as r:
        if encoding != "identity" and r.status_code == 200:
            got = r.headers.get("content-encoding")
            if got != encoding:
                raise AssertionError(f"asked for {encoding}, got content-encoding {got!r}")
        chunks = list(r.iter_raw()) if encoding == "identity" else list(r.iter_bytes())
        resp = Response(r.status_code, r.headers, b"".join(chunks))
    naive: list[str] = []
    sse_events: list[tuple[str, str]] = []
    if resp.status == 200:
        with _replay_client(resp.status, resp.headers, chunks) as rc:
            with rc.stream(method, url) as r:
                naive = list(r.iter_lines())
            with httpx_sse.connect_sse(rc, method, url) as es:
                sse_events = [(e.event, e.data) for e in es.iter_sse()]
    return resp, naive, sse_events


# ------------------------------------------------------------------ checks

def check_stream_response(ctx: Ctx, resp: Response, naive: list[str], sse_events: list[tuple[str, str]],
                          named: bool, expected_source: str, prompt: Optional[str]) -> int:
    if not ctx.check(resp.status == 200, f"status {resp.status}, body={show(resp.raw)}"):
        return 0
    ct = resp.headers.get("content-type", "")
    ctx.check(ct.split(";")[0].strip().lower() == "text/event-stream",
              f"content-type {ct!r}")
    ctx.check(ct.replace(" ", "").lower() == "text/event-stream;charset=utf-8",
              f"content-type {ct!r} (PROTOCOL.md §3 says 'text/event-stream; charset=utf-8')")
    ctx.check(resp.headers.get("cache-control", "").lower() == "no-cache",
              f"cache-control {resp.headers.get('cache-control')!r}")
    ctx.check(resp.headers.get("x-accel-buffering", "").lower() == "no",
              f"x-accel-buffering {resp.headers.get('x-accel-buffering')!r}")
    ctx.check(resp.headers.get("transfer-encoding", "").lower() == "chunked",
              f"transfer-encoding {resp.headers.get('transfer-encoding')!r} (HTTP/1.1 chunked expected)")

    for ch in SPECIAL:
        ctx.check(ch.encode("utf-8") not in resp.raw,
                  f"raw U+{ord(ch):04X} ({show(ch.encode())}) in body: {show(resp.raw)}")
    if prompt is not None:
        for ch in SPECIAL:
            if ch in prompt:
                ctx.check(SPECIAL_ESCAPED[ch] in resp.raw,
                          f"escaped form {SPECIAL_ESCAPED[ch]!r} not in body: {show(resp.raw)}")

    framed = parse_strict(resp.raw, named, ctx)
    events = []
    for i, (name, data) in enumerate(framed):
        try:
            ev = ResponseEventAdapter.validate_json(data)
        except Exception as e:  # pydantic ValidationError or JSON error
            ctx.errors.append(f"event {i} rejected by ResponseEventAdapter: {verr(e)}; data={show(data)}")
            continue
        obj = json.loads(data)
        keys = list(obj.keys())
        want = KEY_ORDER.get(obj.get("content_type"), None)
        ctx.check(keys == want, f"event {i} keys {keys} != {want}")
        ctx.check(obj.get("metadata", "missing") is None, f"event {i} metadata {obj.get('metadata', 'missing')!r} (expected null)")
        ctx.check(obj.get("schema_version") == "1.0", f"event {i} schema_version {obj.get('schema_version')!r}")
        compact = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        for ch in SPECIAL:
            compact = compact.replace(ch, "\\u%04x" % ord(ch))
        ctx.check(compact.encode("utf-8") == data,
                  f"event {i} JSON not compact/canonical: got {show(data)} expected {show(compact.encode())}")
        if named:
            ctx.check(name == ev.event_name, f"event {i}: 'event: {name}' != event_name {ev.event_name!r}")
        idstr = obj.get("id", "")
        ctx.check(isinstance(idstr, str) and len(idstr) == 26 and set(idstr) <= CROCKFORD,
                  f"event {i} id {idstr!r} not an upper-case Crockford ULID string")
        ctx.check(ev.source == expected_source, f"event {i} source {ev.source!r} != {expected_source!r}")
        events.append((ev, obj))

    if not ctx.check(len(events) == len(framed) and len(events) > 0,
                     f"{len(events)} valid events of {len(framed)} framed"):
        return len(events)

    # ids strictly increasing (string order == 128-bit order for valid ULIDs)
    ids = [o["id"] for _, o in events]
    for a, b in zip(ids, ids[1:]):
        ctx.check(a < b, f"ids not strictly increasing: {a} then {b}")
        ctx.check(ULID.from_str(a) < ULID.from_str(b), f"ULID values not increasing: {a} then {b}")

    # exactly one done, and last
    dones = [i for i, (ev, _) in enumerate(events) if isinstance(ev, DoneEvent)]
    ctx.check(dones == [len(events) - 1], f"done events at {dones}, {len(events)} events")
    if dones:
        ctx.check(events[dones[-1]][0].event_name == "done", "done event_name != 'done'")

    # every chunked.text stream ends with is_complete true, content " "; nothing after it
    streams: dict[str, bool] = {}
    for i, (ev, _) in enumerate(events):
        if isinstance(ev, TextChunkEvent):
            ctx.check(not streams.get(ev.stream_id, False),
                      f"event {i}: chunk on stream {ev.stream_id!r} after it completed")
            if ev.is_complete:
                ctx.check(ev.content == " ", f"event {i}: completing chunk content {ev.content!r} != ' '")
            streams[ev.stream_id] = streams.get(ev.stream_id, False) or ev.is_complete
    for sid, done in streams.items():
        ctx.check(done, f"stream {sid!r} never completed")

    # echo agent's exact events
    if prompt is not None:
        expect = ECHO_PREFIX + prompt
        shapes = [(type(ev).__name__, getattr(ev, "event_name", None)) for ev, _ in events]
        if ctx.check(len(events) == 3 and isinstance(events[0][0], TextChunkEvent)
                     and isinstance(events[1][0], TextChunkEvent) and isinstance(events[2][0], DoneEvent),
                     f"expected [chunk, chunk, done], got {shapes}"):
            e0, e1 = events[0][0], events[1][0]
            ctx.check(e0.event_name == "RESPONSE" and e1.event_name == "RESPONSE",
                      f"event names {e0.event_name!r}, {e1.event_name!r} != 'RESPONSE'")
            ctx.check(e0.stream_id == e1.stream_id, f"stream ids differ {e0.stream_id!r} {e1.stream_id!r}")
            ctx.check(e0.is_complete is False and e0.content == expect,
                      f"first chunk is_complete={e0.is_complete} content={e0.content[:80]!r}... (len {len(e0.content)}) "
                      f"!= expected (len {len(expect)})")
            ctx.check(e1.is_complete is True and e1.content == " ",
                      f"second chunk is_complete={e1.is_complete} content={e1.content!r}")

    # The two client-library paths must see the same events.
    raw_datas = [d.decode("utf-8") for _, d in framed]
    sse_datas = [d for _, d in sse_events]
    ctx.check(sse_datas == raw_datas, f"httpx-sse saw {len(sse_datas)} data fields, strict parser {len(raw_datas)}; differ")
    if named:
        ctx.check([e for e, _ in sse_events] == [n for n, _ in framed], "httpx-sse event names differ")
    for i, d in enumerate(sse_datas):
        try:
            ResponseEventAdapter.validate_json(d)
        except Exception as e:
            ctx.errors.append(f"httpx-sse event {i} rejected: {verr(e)}; data={show(d.encode())}")
    naive_datas = parse_naive_lines(naive)
    if naive_datas != raw_datas:
        split = [l for l in naive if l and not l.startswith(("data:", "event:", ":"))]
        ctx.errors.append(f"httpx iter_lines() (str.splitlines) split an event: {len(naive)} lines, "
                          f"stray pieces {[show(x.encode(), 80) for x in split[:3]]}")
    for i, d in enumerate(naive_datas):
        try:
            ResponseEventAdapter.validate_json(d)
        except Exception as e:
            ctx.errors.append(f"httpx iter_lines data line {i} rejected: {verr(e)}; data={show(d.encode())}")
    return len(events)


def check_validation_error(ctx: Ctx, resp: Response, path: str) -> int:
    ctx.check(resp.status == 400, f"status {resp.status} (expected 400), body={show(resp.raw)}")
    ct = resp.headers.get("content-type", "")
    ctx.check(ct.split(";")[0].strip().lower() == "application/json", f"content-type {ct!r}")
    try:
        obj = json.loads(resp.raw)
    except Exception:
        ctx.errors.append(f"body not JSON: {show(resp.raw)}")
        return 0
    ctx.check(isinstance(obj, dict) and obj.get("code") == "validation_failed", f"code != validation_failed: {show(resp.raw)}")
    ctx.check(isinstance(obj.get("error"), str), f"no 'error' string: {show(resp.raw)}")
    ctx.check(isinstance(obj.get("requestId"), str), f"no 'requestId' string: {show(resp.raw)}")
    details = obj.get("details")
    ctx.check(isinstance(details, list) and any(isinstance(d, dict) and d.get("path") == path for d in details),
              f"details has no path {path!r}: {show(resp.raw)}")
    return 0


# ------------------------------------------------------------------ cases

def main() -> int:
    if len(sys.argv) != 2:
        print("usage: check.py BASE_URL", file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/")
    cases: list[tuple[str, Callable[[httpx.Client, Ctx], int]]] = []

    def post_case(name: str, route: str, prompt: str, with_session: bool, processor_id: str = PROCESSOR_ID,
                  encoding: str = "identity"):
        def run(client: httpx.Client, ctx: Ctx) -> int:
            body = official_request_body(prompt, processor_id) if with_session else sessionless_body(prompt)
            resp, naive, sse = do_request(client, "POST", base + route, body, encoding)
            src = processor_id if with_session else DEFAULT_SOURCE
            return check_stream_response(ctx, resp, naive, sse, True, src, prompt)
        cases.append((name, run))

    def get_case(name: str, prompt: str, encoding: str = "identity"):
        def run(client: httpx.Client, ctx: Ctx) -> int:
            url = base + "/stream?" + urllib.parse.urlencode({"prompt": prompt})
            resp, naive, sse = do_request(client, "GET", url, None, encoding)
            return check_stream_response(ctx, resp, naive, sse, False, DEFAULT_SOURCE, prompt)
        cases.append((name, run))

    def too_long_case(name: str, route: str, prompt: str, with_session: bool):
        def run(client: httpx.Client, ctx: Ctx) -> int:
            body = official_request_body(prompt) if with_session else sessionless_body(prompt)
            resp, _, _ = do_request(client, "POST", base + route, body)
            return check_validation_error(ctx, resp, "/query/prompt")
        cases.append((name, run))

    emoji = "Hello 👋 wörld 🚀 — 日本語 🧑‍💻"
    special = "line\u2028sep\u2029para\u0085nel end"
    for route in ("/assist", "/agent"):
        post_case(f"POST {route} official session", route, "What is SSE?", True)
        post_case(f"POST {route} no session", route, "What is SSE?", False)
        post_case(f"POST {route} emoji", route, emoji, True)
        post_case(f"POST {route} U+2028/U+2029/U+0085", route, special, True)
        post_case(f"POST {route} U+2028/U+2029/U+0085 no session", route, special, False)
        post_case(f"POST {route} 10000-char prompt", route, "a" * 10000, True)
        too_long_case(f"POST {route} 10001-char prompt -> 400", route, "a" * 10001, True)
    post_case("POST /assist custom processor_id", "/assist", "hi", True, processor_id="my-processor-42")
    post_case("POST /assist 10000 emoji (40000 bytes)", "/assist", "😀" * 10000, True)
    too_long_case("POST /assist 10001 emoji -> 400", "/assist", "😀" * 10001, True)
    too_long_case("POST /agent 10001-char prompt no session -> 400", "/agent", "b" * 10001, False)
    get_case("GET /stream ascii", "What is SSE?")
    get_case("GET /stream emoji", emoji)
    get_case("GET /stream U+2028/U+2029/U+0085", special)
    get_case("GET /stream 10000-char prompt", "c" * 10000)
    # Compressed streams, decoded by httpx as real clients do.
    for enc in ("gzip", "deflate"):
        post_case(f"POST /assist {enc}", "/assist", special, True, encoding=enc)
        get_case(f"GET /stream {enc}", emoji, encoding=enc)

    passed = failed = 0
    with httpx.Client(timeout=TIMEOUT) as client:
        for name, run in cases:
            ok = run_case(name, lambda ctx: run(client, ctx))
            passed += ok
            failed += not ok
    print(f"interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
