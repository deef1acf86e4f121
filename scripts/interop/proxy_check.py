#!/usr/bin/env python3
"""Proxy interop check: agentd (AGENT=proxy) in front of the official Python
DefaultServer running scripts/interop/reference_agent.py, judged by
sentient-agent-framework 0.3.0.

Usage: proxy_check.py PROXY_BASE_URL UPSTREAM_URL
       (e.g. http://127.0.0.1:8080 http://127.0.0.1:8000/assist)

Every response through agentd goes through check.py's checks (strict framing, the
official ResponseEventAdapter on every event, key order, compact JSON, ids strictly
increasing, one done last, streams closed, httpx-sse and httpx iter_lines agreeing)
and must carry exactly the reference agent's events. The same request sent to the
upstream directly must give the same events (content types, names, contents), so
nothing is lost or changed on the way; only ids, stream ids and escaping differ.
Cases: /assist and /agent, with the official session and without any (the reference
alone breaks its answer without one), emoji, raw U+2028/U+2029/U+0085 in the prompt,
a 10,000-character prompt, and 16 concurrent requests.
Prints one line per case, then "N passed, N failed". Exits 1 if any case failed.
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import httpx

from check import (
    PROCESSOR_ID,
    SPECIAL,
    SPECIAL_ESCAPED,
    Ctx,
    check_stream_response,
    do_request,
    official_request_body,
    run_case,
    sessionless_body,
    show,
)
from reference_agent import GREETING, echo_content, pieces
from sentient_agent_framework.interface.events import ResponseEventAdapter

DEFAULT_SOURCE = "agentd"  # processor_id agentd fills in when a request has no session
TIMEOUT = httpx.Timeout(15.0)


def expected_events(prompt: str) -> list[tuple]:
    """What the reference agent says: (content_type, event_name, content, is_complete)."""
    out = [
        ("atomic.textblock", "GREETING", GREETING, None),
        ("atomic.json", "ECHO", echo_content(prompt), None),
    ]
    out += [("chunked.text", "RESPONSE", p, False) for p in pieces(prompt)]
    out += [("chunked.text", "RESPONSE", " ", True), ("atomic.done", "done", None, None)]
    return out


def shape(obj: dict) -> tuple:
    return (obj.get("content_type"), obj.get("event_name"), obj.get("content"), obj.get("is_complete"))


def check_events(ctx: Ctx, datas: list[str], prompt: str, source: str, who: str) -> None:
    """The events (data fields) must be exactly the reference agent's answer."""
    objs = []
    for i, d in enumerate(datas):
        try:
            ResponseEventAdapter.validate_json(d)
        except Exception as e:
            ctx.errors.append(f"{who}: event {i} rejected by ResponseEventAdapter: {e}; data={show(d.encode())}")
        objs.append(json.loads(d))
    got = [shape(o) for o in objs]
    want = expected_events(prompt)
    ctx.check(got == want, f"{who}: events differ from the reference agent's:\n       got  {got!r:.400}\n       want {want!r:.400}")
    for o in objs:
        ctx.check(o.get("source") == source, f"{who}: source {o.get('source')!r} != {source!r}")
        if o.get("content_type") == "atomic.json":
            keys = list(o["content"].keys())
            ctx.check(keys == list(echo_content(prompt).keys()), f"{who}: JSON content keys reordered: {keys}")
    streams = {o["stream_id"] for o in objs if o.get("content_type") == "chunked.text"}
    ctx.check(len(streams) == 1, f"{who}: one text stream expected, saw {streams}")


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: proxy_check.py PROXY_BASE_URL UPSTREAM_URL", file=sys.stderr)
        return 2
    base, upstream = sys.argv[1].rstrip("/"), sys.argv[2]
    cases: list[tuple[str, Callable[[httpx.Client, Ctx], int]]] = []

    def through_proxy(client: httpx.Client, ctx: Ctx, route: str, prompt: str, with_session: bool) -> int:
        body = official_request_body(prompt) if with_session else sessionless_body(prompt)
        resp, naive, sse = do_request(client, "POST", base + route, body)
        source = PROCESSOR_ID if with_session else DEFAULT_SOURCE
        n = check_stream_response(ctx, resp, naive, sse, True, source, None)
        for ch in SPECIAL:
            if ch in prompt:
                ctx.check(SPECIAL_ESCAPED[ch] in resp.raw, f"escaped {SPECIAL_ESCAPED[ch]!r} missing: {show(resp.raw)}")
        if resp.status == 200:
            check_events(ctx, [d for _, d in sse], prompt, source, "through agentd")
        return n

    def proxy_case(name: str, route: str, prompt: str, with_session: bool):
        cases.append((name, lambda client, ctx: through_proxy(client, ctx, route, prompt, with_session)))

    def same_as_direct_case(name: str, prompt: str):
        """The upstream alone and through agentd: the same events."""
        def run(client: httpx.Client, ctx: Ctx) -> int:
            body = official_request_body(prompt)
            direct, _, direct_sse = do_request(client, "POST", upstream, body)
            if ctx.check(direct.status == 200, f"upstream alone: status {direct.status}"):
                check_events(ctx, [d for _, d in direct_sse], prompt, PROCESSOR_ID, "upstream alone")
            return through_proxy(client, ctx, "/assist", prompt, True)
        cases.append((name, run))

    def sessionless_repaired_case(name: str):
        """The reference alone breaks its answer without a session; agentd fills one in."""
        def run(client: httpx.Client, ctx: Ctx) -> int:
            broken = False
            try:
                resp, _, sse = do_request(client, "POST", upstream, sessionless_body("hi"))
                broken = resp.status != 200 or not any('"atomic.done"' in d for _, d in sse)
            except httpx.HTTPError:
                broken = True
            ctx.check(broken, "the reference alone answered a sessionless request whole "
                              "(this case documents that it does not)")
            return through_proxy(client, ctx, "/assist", "hi", False)
        cases.append((name, run))

    def concurrent_case(name: str, n: int):
        def run(client: httpx.Client, ctx: Ctx) -> int:
            def one(i: int) -> Ctx:
                c = Ctx()
                with httpx.Client(timeout=TIMEOUT) as own:
                    through_proxy(own, c, "/agent", f"request number {i}", i % 2 == 0)
                return c
            with ThreadPoolExecutor(max_workers=n) as pool:
                for i, c in enumerate(pool.map(one, range(n))):
                    ctx.errors.extend(f"request {i}: {e}" for e in c.errors)
            return n
        cases.append((name, run))

    emoji = "Hello 👋 wörld 🚀 — 日本語 🧑‍💻"
    special = "line\u2028sep\u2029para\u0085nel end"
    for route in ("/assist", "/agent"):
        proxy_case(f"proxy {route} official session", route, "What is SSE?", True)
        proxy_case(f"proxy {route} no session", route, "What is SSE?", False)
        proxy_case(f"proxy {route} U+2028/U+2029/U+0085", route, special, True)
        proxy_case(f"proxy {route} U+2028/U+2029/U+0085 no session", route, special, False)
    proxy_case("proxy /assist emoji", "/assist", emoji, True)
    proxy_case("proxy /assist 10000-char prompt", "/assist", "word " * 2000, True)
    same_as_direct_case("upstream alone == through agentd", "What is SSE?")
    same_as_direct_case("upstream alone == through agentd, U+2028/U+2029/U+0085", special)
    sessionless_repaired_case("no session: reference alone breaks, agentd answers")
    concurrent_case("16 concurrent requests through agentd", 16)

    passed = failed = 0
    with httpx.Client(timeout=TIMEOUT) as client:
        for name, run in cases:
            ok = run_case(name, lambda ctx: run(client, ctx))
            passed += ok
            failed += not ok
    print(f"proxy interop: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
