#!/usr/bin/env python3
"""The outside-client suite: agentd spoken to by clients nobody on this project wrote.

Usage: run.py AGENTD_BIN OUT_DIR [--only chromium,node-eventsource,node-ws,httpx-sse,pyjwt,promtool,aiohttp,openai-python,node-ai-sdk,openapi,playground,mcp-python,a2a-python,resume-python,a2a-js,mcp-fastmcp,a2a-python-v03]

The OpenAI-client, MCP and A2A groups also need the in-repo fake LLM upstream:
FAKE_LLM_BIN in the environment, the `fake-llm` binary (scripts/outside.sh builds it).
The mcp-fastmcp group runs fastmcp in a venv of its own: FASTMCP_PY, its python
(scripts/outside.sh makes it); the a2a-python-v03 group likewise the a2a-sdk 0.3.x
client: A2A03_PY.

Each group starts its own agentd processes (free 127.0.0.1 ports, the environment it
needs, nothing inherited) and stops them by PID. Every check prints one PASS or FAIL
line (a FAIL says what was expected and what came back); the last line is
"N passed, M failed". Exit status 1 when any check failed.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import aiohttp
import httpx
import httpx_sse
import jwt
import openai
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from ulid import ULID

from sentient_agent_framework.interface.request import Query, Request
from sentient_agent_framework.interface.session import SessionObject

from harness import (HERE, Agentd, Ctx, FakeLlmProcess, FakeOpenAI, Results, free_port, judge_events, log, short,
                     wait_until)

NODE_DIR = os.path.join(HERE, "node")
TIMEOUT = httpx.Timeout(15.0)
GROUPS = ["chromium", "node-eventsource", "node-ws", "httpx-sse", "pyjwt", "promtool", "aiohttp",
          "openai-python", "node-ai-sdk", "openapi", "playground", "mcp-python",
          "a2a-python", "resume-python", "a2a-js", "mcp-fastmcp", "a2a-python-v03"]


def ulid() -> str:
    return str(ULID())


def node(script: str, *args: str, timeout: float = 30) -> dict:
    p = subprocess.run(["node", os.path.join(NODE_DIR, script), *args], capture_output=True,
                       text=True, timeout=timeout, cwd=NODE_DIR)
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"node {script} exited {p.returncode}: {short(p.stderr, 600)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------- SSE over httpx-sse


def post_sse(base: str, path: str, body: bytes, headers: Optional[dict] = None) -> tuple[int, list, str, httpx.Headers]:
    """POSTs body as is; returns (status, [(event, data)], error body, headers)."""
    h = {"content-type": "application/json", "accept": "text/event-stream"}
    h.update(headers or {})
    with httpx.Client(timeout=TIMEOUT) as c:
        with httpx_sse.connect_sse(c, "POST", base + path, content=body, headers=h) as es:
            r = es.response
            if r.status_code != 200:
                return r.status_code, [], r.read().decode("utf-8", "replace"), r.headers
            return 200, [(s.event, s.data) for s in es.iter_sse()], "", r.headers


def expect_stream(ctx: Ctx, base: str, path: str, body: bytes, what: str, headers: Optional[dict] = None) -> int:
    status, evs, err, _ = post_sse(base, path, body, headers)
    ctx.require(status == 200, f"{what}: expected 200 and events; got {status} {short(err)} for body {short(body)}")
    judge_events(ctx, [d for _, d in evs], what, names=[e for e, _ in evs])
    return len(evs)


def official_body(prompt: str, session: bool = True) -> bytes:
    """The body as the official package's models serialise it."""
    req = Request(query=Query(id=ULID(), prompt=prompt),
                  session=SessionObject(processor_id="sentient-chat-client", activity_id=ULID(),
                                        request_id=ULID(), interactions=[]) if session else None)
    return req.model_dump_json().encode()


def group_httpx_sse(res: Results, binary: str, out: str) -> None:
    with Agentd(binary, out, "httpx-sse", {}) as a:
        res.check("httpx-sse: POST /agent with the official Request model, every event through ResponseEventAdapter",
                  lambda ctx: ctx.note(f"{expect_stream(ctx, a.base, '/agent', official_body('Hello from httpx-sse'), 'official Request')} events"))
        res.check("httpx-sse: POST /assist, the reference's route, same events",
                  lambda ctx: ctx.note(f"{expect_stream(ctx, a.base, '/assist', official_body('assist'), '/assist')} events"))

        def bom(ctx: Ctx) -> None:
            body = b"\xef\xbb\xbf" + json.dumps({"query": {"id": ulid(), "prompt": "with a BOM"}}).encode()
            expect_stream(ctx, a.base, "/agent", body, "body starting with a UTF-8 BOM (Fastify strips it)")
        res.check("httpx-sse: a body with a UTF-8 BOM is accepted", bom)

        def session_null(ctx: Ctx) -> None:
            body = json.dumps({"query": {"id": ulid(), "prompt": "null session"}, "session": None}).encode()
            expect_stream(ctx, a.base, "/agent", body, '"session": null (null for an optional object means absent)')
        res.check('httpx-sse: "session": null is accepted', session_null)

        def context_null(ctx: Ctx) -> None:
            body = json.dumps({"query": {"id": ulid(), "prompt": "null context", "context": None}}).encode()
            expect_stream(ctx, a.base, "/agent", body, '"query": {"context": null}')
        res.check('httpx-sse: "query": {"context": null} is accepted', context_null)

        def official_none(ctx: Ctx) -> None:
            body = official_body("official, no session", session=False)
            ctx.note(f"body {body.decode()}")
            expect_stream(ctx, a.base, "/agent", body, "Request(query, session=None).model_dump_json()")
        res.check("httpx-sse: the official Request(..., session=None).model_dump_json() POSTed as is", official_none)

    with FakeOpenAI() as fake, Agentd(binary, out, "httpx-sse-head", fake.agent_env()) as a:
        def head(ctx: Ctx) -> None:
            with httpx.Client(timeout=TIMEOUT) as c:
                before = fake.agent_runs(a)
                statuses = [c.head(a.base + f"/stream?prompt=head{i}").status_code for i in range(3)]
                time.sleep(1.0)
                heads = fake.agent_runs(a) - before
                ctx.expect(all(200 <= s < 300 for s in statuses), f"expected HEAD /stream?prompt=x to answer 2xx; got {statuses}")
                ctx.expect(heads == 0, f"expected HEAD to run no agent (no LLM request); got {heads} agent run(s) "
                                       "for three HEADs")
                # and a GET still runs it, so the counter is known to work
                g = c.get(a.base + "/stream?prompt=y")
                time.sleep(0.2)
                gets = fake.agent_runs(a) - before - heads
                ctx.expect(g.status_code == 200 and gets == 1,
                           f"expected a GET to run the agent once; got {g.status_code}, {gets} run(s)")
                ctx.note(f"HEAD {statuses}, agent runs for them: {heads}; GET ran the agent once")
        res.check("httpx-sse: HEAD /stream?prompt=x runs no agent", head)


# ------------------------------------------------------------------ node clients


def group_node_eventsource(res: Results, binary: str, out: str) -> None:
    with FakeOpenAI() as fake, Agentd(binary, out, "node-eventsource", fake.agent_env()) as a:
        before = fake.agent_runs(a)
        t0 = time.monotonic()
        seen: dict[str, Any] = {}
        try:
            seen = node("es_check.mjs", a.base + "/stream?prompt=" + "Hello%20from%20node", "8000", timeout=30)
        except Exception as e:
            seen = {"crash": str(e)}
        # watch the whole 8 s for re-runs, even when the client stopped early
        time.sleep(max(0.0, 8.0 - (time.monotonic() - t0)))
        runs = fake.agent_runs(a) - before

        def summary() -> str:
            return (f"requests {[(r['lastEventId'], r['status']) for r in seen.get('requests', [])]}, "
                    f"errors {[(e['code'], e['message']) for e in seen.get('errors', [])]}, "
                    f"readyState {seen.get('readyState')} ({seen.get('why')})")

        def events(ctx: Ctx) -> None:
            ctx.require("crash" not in seen, f"node eventsource crashed: {seen.get('crash')}")
            msgs = seen["messages"]
            names = [json.loads(m["data"]).get("event_name") for m in msgs]
            ctx.require("done" in names, f"expected events through done; got {names}; {summary()}")
            first = msgs[: names.index("done") + 1]
            judge_events(ctx, [m["data"] for m in first], "node eventsource /stream")
            ids = [m["lastEventId"] for m in first]
            ctx.expect(all(ids), f"expected an SSE id on every /stream event; got lastEventId {ids}")
            ctx.note(f"{len(first)} events, ids {ids[:1]}…")
        res.check("node eventsource: /stream events parsed, ids present, ends at done", events)

        def stops(ctx: Ctx) -> None:
            ctx.require("crash" not in seen, f"node eventsource crashed: {seen.get('crash')}")
            reqs = seen["requests"]
            last_id = next((m["lastEventId"] for m in reversed(seen["messages"]) if m["lastEventId"]), "")
            ctx.expect(runs == 1, f"expected exactly 1 agent run in 8 s; got {runs}; {summary()}")
            ctx.expect(len(reqs) == 2 and reqs[1]["status"] == 204 and reqs[1]["lastEventId"] == last_id and last_id,
                       f"expected one reconnect with Last-Event-ID {last_id or '<an id>'!r} answered 204; got {summary()}")
            ctx.expect(seen["readyState"] == 2 and seen["why"] == "closed",
                       f"expected the EventSource closed (readyState 2) after the 204; got {summary()}")
            ctx.note(summary())
        res.check("node eventsource: reconnect after done gets 204 and stops (1 agent run in 8 s)", stops)


def group_node_ws(res: Results, binary: str, out: str) -> None:
    allowed, refused = "http://allowed.example", "http://evil.example"
    with Agentd(binary, out, "node-ws", {"CORS_ORIGINS": allowed}) as a:
        seen = node("ws_check.mjs", a.ws_base + "/ws", allowed, refused, timeout=60)

        def answer(key: str, rid: str, what: str):
            def run(ctx: Ctx) -> None:
                r = seen[key]
                ctx.require(r["opened"], f"{what}: expected the socket to open; got {short(r)}")
                msgs = [json.loads(m) for m in r["messages"] if isinstance(m, str)]
                errs = [m for m in msgs if m.get("type") == "error"]
                ctx.require(not errs, f"{what}: expected events through done then metrics; got the error "
                                      f"{short(errs[:1])}")
                ctx.require(msgs and msgs[-1].get("type") == "metrics",
                            f"{what}: expected a metrics message last; got {short(r['messages'], 400)}")
                events = msgs[:-1]
                ctx.expect(all(e.get("requestId") == rid for e in events + msgs[-1:]),
                           f"{what}: expected requestId {rid!r} on every message; got {[m.get('requestId') for m in msgs]}")
                for e in events:
                    e.pop("requestId", None)
                judge_events(ctx, [json.dumps(e) for e in events], what)
                ctx.note(f"{len(events)} events then metrics")
            return run
        res.check('node ws: {"type":"agent-query","prompt":"hi","requestId":"r1"} streams through done',
                  answer("flat", "r1", "flat message"))
        res.check('node ws: {"type":"agent-query","query":{"id","prompt"},"requestId":"r2"} streams through done',
                  answer("nested", "r2", "the guide's query-object message"))

        def ping(ctx: Ctx) -> None:
            r = seen["ping"]
            ctx.require(r["opened"], f"expected the socket to open; got {short(r)}")
            ctx.expect(r["messages"][:1] == ['{"type":"pong"}'], f'expected {{"type":"pong"}}; got {r["messages"]}')
            ctx.expect(r["pongFrame"], "expected a pong frame for a ping frame; got none")
        res.check("node ws: ping/pong (JSON and frames)", ping)

        def origin(ctx: Ctx) -> None:
            r = seen["refused"]
            ctx.expect(not r["opened"] and r["upgradeStatus"] == 403,
                       f"expected 403 to an upgrade with Origin {refused} (CORS_ORIGINS={allowed}); got "
                       f"opened={r['opened']} status {r['upgradeStatus']} messages {short(r['messages'])}")
            n = seen["noOrigin"]
            ctx.expect(n["opened"] and n["messages"][:1] == ['{"type":"pong"}'],
                       f"expected a client that sends no Origin (not a browser) to be served; got {short(n)}")
        res.check("node ws: an upgrade from a disallowed Origin gets 403", origin)


# ------------------------------------------------------------------ PyJWT


def group_pyjwt(res: Results, binary: str, out: str) -> None:
    secret = "outside-suite-hs256-secret-0123456789"
    api_key = "outside-suite-api-key-42"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    tmp = tempfile.mkdtemp(prefix="agentd-outside-jwt-")
    pub_path = os.path.join(tmp, "jwt-public.pem")
    with open(pub_path, "wb") as f:
        f.write(pub_pem)
    now = int(time.time())
    claims = {"sub": "outside-user", "role": "user", "iat": now, "exp": now + 600}

    def hs256_with(k: bytes, payload: dict) -> str:
        # PyJWT refuses a PEM key as an HMAC secret (it guards against this attack), so
        # this token is put together by hand as an attacker would.
        import base64, hashlib, hmac
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
        signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(payload).encode())
        return (signing + b"." + b64(hmac.new(k, signing, hashlib.sha256).digest())).decode()

    body = lambda: official_body("authorised")

    def refused(ctx: Ctx, base: str, token: Optional[str], what: str) -> None:
        h = {"authorization": f"Bearer {token}"} if token is not None else {}
        status, evs, err, hd = post_sse(base, "/agent", body(), h)
        ctx.expect(status == 401, f"{what}: expected 401; got {status} {short(err) if err else f'{len(evs)} events'}")
        if status == 401:
            ctx.expect(hd.get("www-authenticate", "").lower().startswith("bearer"),
                       f"{what}: expected WWW-Authenticate: Bearer on the 401; got {hd.get('www-authenticate')!r}")

    with Agentd(binary, out, "pyjwt-hs256", {"AUTH_REQUIRED": "true", "JWT_SECRET": secret,
                                             "API_KEY_SECRET": api_key}) as a:
        def hs_ok(ctx: Ctx) -> None:
            tok = jwt.encode(claims, secret, algorithm="HS256")
            expect_stream(ctx, a.base, "/agent", body(), "HS256 token from PyJWT", {"authorization": f"Bearer {tok}"})
        res.check("pyjwt: an HS256 token (JWT_SECRET) is accepted on /agent with AUTH_REQUIRED=true", hs_ok)

        def hs_bad(ctx: Ctx) -> None:
            refused(ctx, a.base, jwt.encode({**claims, "exp": now - 3600}, secret, algorithm="HS256"), "expired token")
            refused(ctx, a.base, jwt.encode(claims, "another-secret-entirely-0123456789", algorithm="HS256"), "wrong key")
            refused(ctx, a.base, jwt.encode(claims, None, algorithm="none"), "alg none")
            refused(ctx, a.base, jwt.encode({k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"), "no exp")
            refused(ctx, a.base, jwt.encode({**claims, "nbf": now + 3600}, secret, algorithm="HS256"), "not valid before an hour from now")
            refused(ctx, a.base, None, "no token")
        res.check("pyjwt: expired, wrong-key, alg-none, no-exp, future-nbf and missing tokens get 401", hs_bad)

        def api_key_alone(ctx: Ctx) -> None:
            expect_stream(ctx, a.base, "/agent-api", body(), "/agent-api with X-API-Key only (AUTH_REQUIRED=true)",
                          {"x-api-key": api_key})
            status, _, err, _ = post_sse(a.base, "/agent-api", body(), {"x-api-key": "wrong-key"})
            ctx.expect(status == 401, f"/agent-api with a wrong X-API-Key: expected 401; got {status} {short(err)}")
        res.check("pyjwt: /agent-api with a valid X-API-Key and no JWT gets 200 under AUTH_REQUIRED=true", api_key_alone)

    with Agentd(binary, out, "pyjwt-rs256", {"AUTH_REQUIRED": "true", "JWT_PUBLIC_KEY": pub_path}) as a:
        def rs_ok(ctx: Ctx) -> None:
            tok = jwt.encode(claims, key, algorithm="RS256")
            expect_stream(ctx, a.base, "/agent", body(), "RS256 token from PyJWT", {"authorization": f"Bearer {tok}"})
        res.check("pyjwt: an RS256 token (JWT_PUBLIC_KEY as a file path) is accepted", rs_ok)

        def rs_bad(ctx: Ctx) -> None:
            refused(ctx, a.base, jwt.encode(claims, other, algorithm="RS256"), "RS256 signed with another key")
            refused(ctx, a.base, hs256_with(pub_pem, claims), "HS256 signed with the public key (algorithm confusion)")
            refused(ctx, a.base, jwt.encode({**claims, "exp": now - 3600}, key, algorithm="RS256"), "expired RS256")
            refused(ctx, a.base, jwt.encode(claims, None, algorithm="none"), "alg none")
        res.check("pyjwt: RS256 from another key, HS256 signed with the public key, expired, alg none get 401", rs_bad)
    shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ promtool


def group_promtool(res: Results, binary: str, out: str) -> None:
    promtool = shutil.which("promtool")

    def run(ctx: Ctx) -> None:
        ctx.require(promtool is not None, "expected promtool on PATH (Debian package prometheus)")
        with FakeOpenAI() as fake, Agentd(binary, out, "promtool", {**fake.agent_env(), "ENABLE_METRICS": "true"}) as a:
            with httpx.Client(timeout=TIMEOUT) as c:  # traffic, so that every family has samples
                c.post(a.base + "/agent", content=official_body("metrics"), headers={"content-type": "application/json"})
                c.get(a.base + "/stream?prompt=metrics")
                c.get(a.base + "/health")
                c.get(a.base + "/nope")
                c.post(a.base + "/agent", content=b"{", headers={"content-type": "application/json"})
                r = c.get(a.base + "/metrics")
            ctx.require(r.status_code == 200, f"expected 200 from /metrics with ENABLE_METRICS=true; got {r.status_code}")
            text = r.content
        with open(os.path.join(out, "metrics.txt"), "wb") as f:
            f.write(text)
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
        said = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
        for line in said.splitlines()[:20]:
            print(f"     promtool: {line}", flush=True)
        # promtool exits 1 on a parse error and 3 on lint problems; an operator's
        # `curl /metrics | promtool check metrics` fails on either, so both fail here.
        ctx.expect(p.returncode == 0, f"expected `promtool check metrics` to pass (exit 0); got exit {p.returncode}: {short(said, 600)}")
        ctx.note(f"{len(text)} bytes, {text.count(b'# TYPE')} families, no problems")
    res.check("promtool: /metrics passes `promtool check metrics`", run)


# ------------------------------------------------------------------ openapi


def group_openapi(res: Results, binary: str, out: str) -> None:
    from openapi_spec_validator import validate

    with Agentd(binary, out, "openapi", {"ENABLE_METRICS": "true"}) as a:
        def document(ctx: Ctx) -> None:
            r = httpx.get(a.base + "/openapi.json", timeout=TIMEOUT)
            ctx.require(r.status_code == 200, f"expected 200 from /openapi.json; got {r.status_code}")
            ctx.expect(r.headers.get("content-type", "").startswith("application/json"),
                       f"expected a JSON content type; got {r.headers.get('content-type')}")
            doc = r.json()
            with open(os.path.join(out, "openapi.json"), "w") as f:
                json.dump(doc, f, indent=1)
            try:
                validate(doc)
            except Exception as e:  # the validator's own error says what is wrong
                ctx.require(False, f"openapi-spec-validator refused the document: {short(str(e), 600)}")
            # Every documented operation is served (never a 404 for the path itself).
            with httpx.Client(timeout=TIMEOUT) as c:
                for path, item in doc["paths"].items():
                    for method in item:
                        if method == "parameters":
                            continue
                        concrete = path.replace("{id}", "00" + "ab" * 16)
                        if method == "get" and path in ("/ws",):
                            continue
                        # A body only where the operation takes one: a server that does not
                        # read a GET's body must close the connection after it.
                        body = {"content": b"{}", "headers": {"content-type": "application/json"}} \
                            if method == "post" else {}
                        resp = c.request(method.upper(), a.base + concrete, **body)
                        ok = resp.status_code != 404 or (path == "/agent/streams/{id}"
                                                         and resp.json().get("code") == "stream_not_found")
                        ctx.expect(ok and resp.status_code != 405,
                                   f"{method.upper()} {path}: documented but answered {resp.status_code}")
            ctx.note(f"{len(doc['paths'])} paths, valid OpenAPI {doc['openapi']}")
        res.check("openapi: /openapi.json is a valid OpenAPI 3.1 document and every path in it is served", document)


# ------------------------------------------------------------------ aiohttp


async def aio_stream(base: str, body: bytes) -> tuple[int, list[tuple[str, str]], str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        async with s.post(base + "/agent", data=body, headers={"content-type": "application/json"}) as r:
            if r.status != 200:
                return r.status, [], await r.text()
            events, name, data = [], None, []
            async for raw in r.content:  # line by line, as the chunks arrive
                line = raw.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        events.append((name, "\n".join(data)))
                    name, data = None, []
                elif line.startswith("event:"):
                    name = line[6:].lstrip(" ")
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
            return 200, events, ""


def group_aiohttp(res: Results, binary: str, out: str) -> None:
    with Agentd(binary, out, "aiohttp", {}) as a:
        def stream(ctx: Ctx) -> None:
            status, evs, err = asyncio.run(aio_stream(a.base, official_body("Hello from aiohttp 👋")))
            ctx.require(status == 200, f"expected 200; got {status} {short(err)}")
            judge_events(ctx, [d for _, d in evs], "aiohttp /agent", names=[n for n, _ in evs])
            ctx.note(f"{len(evs)} events")
        res.check("aiohttp: streaming POST /agent, every event through ResponseEventAdapter", stream)

    with Agentd(binary, out, "aiohttp-ratelimit", {"RATE_LIMIT_MAX": "2", "RATE_LIMIT_WINDOW": "60000"}) as a:
        def limited(ctx: Ctx) -> None:
            async def go() -> list[tuple[int, str, Any]]:
                got = []
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
                    for i in range(3):
                        async with s.post(a.base + "/agent", data=official_body(f"r{i}"),
                                          headers={"content-type": "application/json"}) as r:
                            got.append((r.status, await r.text(), r.headers.get("retry-after")))
                return got
            got = asyncio.run(go())
            ctx.require([g[0] for g in got] == [200, 200, 429],
                        f"expected 200, 200, 429 with RATE_LIMIT_MAX=2; got {[g[0] for g in got]}")
            text, retry_after = got[2][1], got[2][2]
            try:
                b = json.loads(text)
            except ValueError:
                ctx.require(False, f"expected a JSON 429 body; got {short(text)}")
            ctx.expect(b.get("statusCode") == 429, f"expected statusCode 429 in the body (@fastify/rate-limit); got {short(text)}")
            exp = b.get("expiresIn")
            ctx.require(isinstance(exp, (int, float)) and not isinstance(exp, bool),
                        f"expected expiresIn, a number; got {short(text)}")
            # @fastify/rate-limit's ttl, which the guide sends as expiresIn, is in
            # milliseconds: a 60 s window just started leaves ~60000, not ~60.
            ctx.expect(1000 < exp <= 60000,
                       f"expected expiresIn in milliseconds (1000 < expiresIn <= 60000 for a fresh 60 s window, "
                       f"as @fastify/rate-limit's ttl); got {exp} (seconds?) in {short(text)}")
            if retry_after is not None and retry_after.isdigit():
                ctx.expect(abs(exp / 1000 - int(retry_after)) <= 1.5,
                           f"expected expiresIn/1000 ≈ Retry-After; got expiresIn {exp}, Retry-After {retry_after}")
            ctx.note(f"429 body {short(text, 200)}, Retry-After {retry_after}")
        res.check("aiohttp: 429 body as @fastify/rate-limit's (statusCode 429, expiresIn in ms)", limited)


# ------------------------------------------------- OpenAI-compatible front door

ECHO_PREFIX = "⚡ High-speed response to: "
FAIL_PROMPT = "[[fault:mid_stream_error,after=2]] fail after two tokens"
LONG_TOKENS = 400
#: A slow answer that completes (~0.6 s): the A2A groups join it mid-stream with
#: SubscribeToTask. Under the llm agent's max_tokens for a short prompt (72).
LIVE_TOKENS = 40


@dataclass
class OpenAIAgent:
    """One agentd serving /v1/chat/completions, and what its answers must be."""
    kind: str
    agentd: Agentd
    answer: Callable[[str], str]
    #: A prompt whose answer fails after some text (None: this agent cannot fail).
    fail_prompt: Optional[str]
    fail_partial: str
    long_prompt: str

    @property
    def v1(self) -> str:
        return self.agentd.base + "/v1"


@contextlib.contextmanager
def openai_agents(binary: str, out: str, group: str):
    """echo; llm against the in-repo fake-llm; proxy in front of that llm agentd."""
    fake_bin = os.environ.get("FAKE_LLM_BIN", "")
    if not os.access(fake_bin, os.X_OK):
        raise RuntimeError(f"FAKE_LLM_BIN must name the fake-llm binary; got {fake_bin!r}")
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeLlmProcess(fake_bin, out))
        echo = stack.enter_context(Agentd(binary, out, f"{group}-echo", {}))
        llm = stack.enter_context(Agentd(binary, out, f"{group}-llm", fake.agent_env()))
        proxy = stack.enter_context(Agentd(binary, out, f"{group}-proxy", {
            "AGENT": "proxy", "AGENT_UPSTREAMS": llm.base + "/assist", "PROXY_HEALTH_CHECK_INTERVAL": "60000"}))
        fixed = lambda _p: fake.answer(fake.tokens)
        yield [
            OpenAIAgent("echo", echo, lambda p: ECHO_PREFIX + p, None, "", "é" * 10_000),
            OpenAIAgent("llm", llm, fixed, FAIL_PROMPT, fake.answer(2), f"[[tokens={LONG_TOKENS}]] a long answer"),
            OpenAIAgent("proxy", proxy, fixed, FAIL_PROMPT, fake.answer(2), f"[[tokens={LONG_TOKENS}]] a long answer"),
        ]


@contextlib.contextmanager
def reference_server(out: str):
    """The official DefaultServer running scripts/interop/reference_agent.py; yields
    its /assist URL. Stopped by PID."""
    port = free_port()
    script = os.path.join(HERE, "..", "interop", "reference_agent.py")
    with open(os.path.join(out, "reference-agent.log"), "wb") as logf:
        p = subprocess.Popen([sys.executable, script, str(port), "--quiet"], stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        try:
            def up() -> bool:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        return True
                except OSError:
                    return False
            if not wait_until(up, 20):
                raise RuntimeError("the reference agent did not listen within 20 s")
            yield f"http://127.0.0.1:{port}/assist"
        finally:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def long_answer(ag: OpenAIAgent) -> str:
    return ag.answer(ag.long_prompt) if ag.kind == "echo" else FakeLlmProcess.answer(LONG_TOKENS)


def oa_client(ag: OpenAIAgent, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=ag.v1, api_key=key, max_retries=0, timeout=20)


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def judge_chunks(ctx: Ctx, chunks: list, expected: str, what: str) -> None:
    """Role on the first chunk, text in order, one stop, then the usage chunk last."""
    ctx.require(chunks, f"{what}: expected chunks; got none")
    first = chunks[0].choices[0].delta if chunks[0].choices else None
    ctx.expect(first is not None and first.role == "assistant",
               f"{what}: expected role 'assistant' on the first chunk; got {short(chunks[0].model_dump())}")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ctx.expect(text == expected, f"{what}: expected the text {short(expected)}; got {short(text)}")
    stops = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason == "stop"]
    ctx.expect(stops == [len(chunks) - 2], f"{what}: expected one finish_reason 'stop', just before the usage "
                                           f"chunk; got it at {stops} of {len(chunks)} chunks")
    last = chunks[-1]
    ctx.expect(last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
               and last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens,
               f"{what}: expected a last chunk with choices [] and usage; got {short(last.model_dump())}")
    ctx.note(f"{len(chunks)} chunks, {len(text)} characters, usage {last.usage.model_dump() if last.usage else None}")


def extension_names(chunks: list) -> list[str]:
    return [e.get("event_name") for c in chunks for e in ((c.model_extra or {}).get("sentient_events") or [])]


def group_openai_python(res: Results, binary: str, out: str) -> None:
    with openai_agents(binary, out, "openai-python") as agents:
        for ag in agents:
            prompt = f"Hello from the openai SDK to {ag.kind}"

            def sync_stream(ctx: Ctx, ag=ag, prompt=prompt) -> None:
                with oa_client(ag) as c:
                    chunks = list(c.chat.completions.create(model="agentd", messages=user(prompt), stream=True,
                                                            stream_options={"include_usage": True}))
                judge_chunks(ctx, chunks, ag.answer(prompt), "sync stream")
                if ag.kind != "echo":
                    names = extension_names(chunks)
                    ctx.expect(names == ["ANALYSIS", "PERFORMANCE"],
                               f"expected the LLM agent's JSON events under sentient_events; got {names}")
            res.check(f"openai-python ({ag.kind}): sync streaming: role first, deltas in order, stop, usage chunk",
                      sync_stream)

            def async_stream(ctx: Ctx, ag=ag, prompt=prompt) -> None:
                async def go() -> list:
                    async with openai.AsyncOpenAI(base_url=ag.v1, api_key="unused", max_retries=0, timeout=20) as c:
                        s = await c.chat.completions.create(model="agentd", messages=user(prompt), stream=True,
                                                            stream_options={"include_usage": True})
                        return [chunk async for chunk in s]
                judge_chunks(ctx, asyncio.run(go()), ag.answer(prompt), "async stream")
            res.check(f"openai-python ({ag.kind}): async streaming (AsyncOpenAI)", async_stream)

            def whole(ctx: Ctx, ag=ag, prompt=prompt) -> None:
                with oa_client(ag) as c:
                    r = c.chat.completions.create(model="agentd", messages=[
                        {"role": "system", "content": "Answer briefly."},
                        {"role": "user", "content": "An earlier question"},
                        {"role": "assistant", "content": "An earlier answer"},
                        {"role": "user", "content": [{"type": "text", "text": prompt}]}])
                ctx.expect(r.object == "chat.completion" and r.choices[0].message.role == "assistant",
                           f"expected a chat.completion from the assistant; got {short(r.model_dump())}")
                ctx.expect(r.choices[0].message.content == ag.answer(prompt),
                           f"expected {short(ag.answer(prompt))}; got {short(r.choices[0].message.content)}")
                ctx.expect(r.choices[0].finish_reason == "stop" and r.usage and r.usage.completion_tokens > 0,
                           f"expected finish_reason stop and usage; got {short(r.model_dump())}")
                ctx.note(f"{len(r.choices[0].message.content or '')} characters, usage {r.usage.model_dump() if r.usage else None}")
            res.check(f"openai-python ({ag.kind}): non-streaming chat.completion (history, text parts)", whole)

            def not_short(ctx: Ctx, ag=ag) -> None:
                with oa_client(ag) as c:
                    # max_tokens becomes the agent's maxTokens preference (the LLM agent
                    # otherwise allows twice the prompt's length).
                    chunks = list(c.chat.completions.create(model="agentd", messages=user(ag.long_prompt), stream=True,
                                                            max_tokens=4000, stream_options={"include_usage": True}))
                judge_chunks(ctx, chunks, long_answer(ag), "long answer")
            res.check(f"openai-python ({ag.kind}): a long answer arrives whole (max_tokens 4000)", not_short)

            if ag.fail_prompt:
                def fails(ctx: Ctx, ag=ag) -> None:
                    got: list = []
                    raised = None
                    with oa_client(ag) as c:
                        try:
                            for chunk in c.chat.completions.create(model="agentd", messages=user(ag.fail_prompt),
                                                                   stream=True):
                                got.append(chunk)
                        except openai.APIError as e:
                            raised = e
                    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
                    ctx.expect(raised is not None,
                               f"expected openai.APIError from the stream (never a silently short answer); "
                               f"it ended normally after {short(text)}")
                    ctx.expect(text == ag.fail_partial, f"expected the text before the failure {ag.fail_partial!r}; got {short(text)}")
                    ctx.expect(not any(c.choices and c.choices[0].finish_reason for c in got),
                               "expected no finish_reason before the error")
                    with oa_client(ag) as c:
                        try:
                            c.chat.completions.create(model="agentd", messages=user(ag.fail_prompt))
                            ctx.expect(False, "non-streaming: expected an APIStatusError; got a completion")
                        except openai.APIStatusError as e:
                            ctx.expect(e.status_code >= 500, f"non-streaming: expected a 5xx; got {e.status_code}")
                    ctx.note(f"raised {type(raised).__name__}: {short(str(raised), 120)} after {text!r}")
                res.check(f"openai-python ({ag.kind}): an error mid-stream raises APIError (and 5xx without stream)", fails)

        llm = agents[1]

        def leaves(ctx: Ctx) -> None:
            with oa_client(llm) as c:
                s = c.chat.completions.create(model="agentd", messages=user("[[tokens=5000,token_delay_ms=5]] leave"),
                                              stream=True)
                n = 0
                for _ in s:
                    n += 1
                    if n == 3:
                        break
                s.close()
            gone = lambda: any('/v1/chat/completions' in line and 'client_gone' in line
                               for line in llm.agentd.log_tail(200_000).splitlines())
            ctx.expect(wait_until(gone, 5), "expected the request log to say end=client_gone for the stream left early")
            ctx.expect(wait_until(lambda: llm.agentd.metric("agentd_llm_slots_in_use") == 0, 5),
                       "expected the LLM request released (agentd_llm_slots_in_use 0) after the client left")
            ctx.note(f"left after {n} chunks; the answer ended client_gone")
        res.check("openai-python (llm): a client that leaves mid-stream cancels the agent", leaves)

    with reference_server(out) as upstream, Agentd(binary, out, "openai-python-reference", {
            "AGENT": "proxy", "AGENT_UPSTREAMS": upstream, "PROXY_HEALTH_CHECK_INTERVAL": "60000"}) as a:
        ag = OpenAIAgent("proxy", a, lambda p: p, None, "", "")

        def reference(ctx: Ctx) -> None:
            prompt = "What did we say before?"
            with oa_client(ag) as c:
                chunks = list(c.chat.completions.create(model="agentd", stream=True, stream_options={"include_usage": True},
                                                        messages=[{"role": "system", "content": "Answer briefly."},
                                                                  {"role": "user", "content": "An earlier question"},
                                                                  {"role": "assistant", "content": "An earlier answer"},
                                                                  {"role": "user", "content": prompt}]))
            # The reference agent streams the prompt back in RESPONSE, after GREETING and ECHO.
            judge_chunks(ctx, chunks, prompt, "through the reference server")
            names = extension_names(chunks)
            ctx.expect(names == ["GREETING", "ECHO"], f"expected GREETING and ECHO under sentient_events; got {names}")
        res.check("openai-python (proxy → the official Python DefaultServer): the history passes the reference's "
                  "Session models; the answer streams back", reference)

    with Agentd(binary, out, "openai-python-auth", {"API_KEY_SECRET": "outside-openai-key", "AGENT_ID": "outside-agent"}) as a:
        ag = OpenAIAgent("echo", a, lambda p: ECHO_PREFIX + p, None, "", "")

        def auth(ctx: Ctx) -> None:
            with oa_client(ag, "outside-openai-key") as c:
                ids = [m.id for m in c.models.list()]
                ctx.expect(ids == ["outside-agent"], f"expected models ['outside-agent'] (AGENT_ID); got {ids}")
                r = c.chat.completions.create(model="outside-agent", messages=user("keyed"))
                ctx.expect(r.choices[0].message.content == ECHO_PREFIX + "keyed", f"got {short(r.model_dump())}")
            with oa_client(ag, "a-wrong-key") as c:
                try:
                    c.chat.completions.create(model="outside-agent", messages=user("x"))
                    ctx.expect(False, "a wrong key: expected openai.AuthenticationError; got a completion")
                except openai.AuthenticationError as e:
                    ctx.expect(e.code == "invalid_api_key", f"expected code invalid_api_key; got {e.code!r} {short(e.body)}")
        res.check("openai-python: the API key as api_key (Bearer) is accepted, a wrong one is AuthenticationError; models.list()", auth)

        def refused(ctx: Ctx) -> None:
            with oa_client(ag, "outside-openai-key") as c:
                try:
                    c.chat.completions.create(model="outside-agent", messages=[{"role": "user", "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
                    ctx.expect(False, "an image part: expected openai.BadRequestError; got a completion")
                except openai.BadRequestError as e:
                    ctx.expect(e.param == "messages[0].content[1]", f"expected param messages[0].content[1]; got {e.param!r}")
                    ctx.note(short(str(e), 160))
                try:
                    c.chat.completions.create(model="outside-agent", messages=user("x"),
                                              tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
                    ctx.expect(False, "tools: expected openai.BadRequestError; got a completion")
                except openai.BadRequestError as e:
                    ctx.expect(e.param == "tools", f"expected param tools; got {e.param!r}")
        res.check("openai-python: an image part and tools are refused with BadRequestError naming the param", refused)


def group_node_ai_sdk(res: Results, binary: str, out: str) -> None:
    with openai_agents(binary, out, "node-ai-sdk") as agents:
        for ag in agents:
            prompt = f"Hello from the ai SDK to {ag.kind}"
            seen = node("ai_check.mjs", ag.agentd.base, prompt, ag.fail_prompt or "-", "-", timeout=60)

            def streamed(ctx: Ctx, ag=ag, prompt=prompt, seen=seen) -> None:
                for key in ("stream", "history"):
                    s = seen[key]
                    ctx.require("crash" not in s, f"{key}: the client threw: {s.get('crash')}")
                    ctx.expect(not s["errors"], f"{key}: expected no error parts; got {s['errors']}")
                    ctx.expect(s["text"] == ag.answer(prompt), f"{key}: expected {short(ag.answer(prompt))}; got {short(s['text'])}")
                    ctx.expect("stop" in json.dumps(s["finishReason"]), f"{key}: expected finish reason stop; got {s['finishReason']}")
                    usage = s["usage"] or {}
                    ctx.expect((usage.get("outputTokens") or 0) > 0, f"{key}: expected usage with outputTokens; got {usage}")
                ctx.note(f"{seen['stream']['deltas']} deltas, usage {seen['stream']['usage']}")
            res.check(f"node ai-sdk ({ag.kind}): streamText through @ai-sdk/openai-compatible (and with history)", streamed)

            def generated(ctx: Ctx, ag=ag, prompt=prompt, seen=seen) -> None:
                g = seen["generate"]
                ctx.require("crash" not in g, f"generateText threw: {g.get('crash')}")
                ctx.expect(g["text"] == ag.answer(prompt), f"expected {short(ag.answer(prompt))}; got {short(g['text'])}")
                ctx.expect("stop" in json.dumps(g["finishReason"]), f"expected finish reason stop; got {g['finishReason']}")
            res.check(f"node ai-sdk ({ag.kind}): generateText (non-streaming)", generated)

            if ag.fail_prompt:
                def failed(ctx: Ctx, ag=ag, seen=seen) -> None:
                    e = seen["error"]
                    ctx.require("crash" not in e or e.get("errors"), f"the client threw without an error part: {e.get('crash')}")
                    ctx.expect(e["errors"], f"expected an error part (never a silently short answer); got text "
                                            f"{short(e['text'])}, finish {e['finishReason']}")
                    ctx.expect("stop" not in json.dumps(e["finishReason"]),
                               f"expected no finish reason 'stop' for a failed answer; got {e['finishReason']}")
                    ctx.note(f"error part {short(e['errors'][:1], 160)} after {e['text']!r}")
                res.check(f"node ai-sdk ({ag.kind}): an error mid-stream is an error part, not a stop", failed)


def a2a_text(events: list) -> str:
    """The `answer` artifact's text, from a2a-sdk StreamResponses, in order."""
    out = []
    for e in events:
        if e.HasField("artifact_update") and e.artifact_update.artifact.artifact_id == "answer":
            out.extend(p.text for p in e.artifact_update.artifact.parts)
        elif e.HasField("task"):
            for a in e.task.artifacts:
                if a.artifact_id == "answer":
                    out.extend(p.text for p in a.parts)
    return "".join(out)


def a2a_final_state(events: list):
    """The last state an A2A stream reported (a status update, else a task)."""
    for e in reversed(events):
        if e.HasField("status_update"):
            return e.status_update.status
        if e.HasField("task"):
            return e.task.status
    return None


def group_a2a_python(res: Results, binary: str, out: str) -> None:
    """The official a2a-sdk client (A2A 1.0, JSON-RPC) on /.well-known/agent-card.json and /a2a."""
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import (CancelTaskRequest, GetTaskRequest, Role, SendMessageRequest, SubscribeToTaskRequest,
                           TaskState)
    from a2a.utils.errors import TaskNotFoundError, UnsupportedOperationError

    def ask(prompt: str):
        return SendMessageRequest(message=new_text_message(prompt, role=Role.ROLE_USER))

    async def collect(base: str, prompt: str, streaming: bool = True) -> list:
        client = await create_client(base, ClientConfig(streaming=streaming))
        try:
            return [e async for e in client.send_message(ask(prompt))]
        finally:
            await client.close()

    with openai_agents(binary, out, "a2a-python") as agents:
        for ag in agents:
            base = ag.agentd.base
            prompt = f"Hello from the a2a-sdk to {ag.kind}"

            def stream(ctx: Ctx, ag=ag, base=base, prompt=prompt) -> None:
                events = asyncio.run(collect(base, prompt))
                ctx.require(events and events[0].HasField("task"), f"expected the task first; got {short(str(events[:1]))}")
                text = a2a_text(events)
                ctx.expect(text == ag.answer(prompt), f"expected the text {short(ag.answer(prompt))}; got {short(text)}")
                status = a2a_final_state(events)
                ctx.expect(status is not None and status.state == TaskState.TASK_STATE_COMPLETED,
                           f"expected a final completed status; got {status}")
                ctx.note(f"{len(events)} stream responses, {len(text)} characters")
            res.check(f"a2a-python ({ag.kind}): discovery, then a streamed task: task, text artifact chunks, completed",
                      stream)

            def whole(ctx: Ctx, ag=ag, base=base, prompt=prompt) -> None:
                async def run():
                    client = await create_client(base, ClientConfig(streaming=False))
                    try:
                        events = [e async for e in client.send_message(ask(prompt))]
                        task = events[0].task
                        got = await client.get_task(GetTaskRequest(id=task.id))
                        return events, task, got
                    finally:
                        await client.close()
                events, task, got = asyncio.run(run())
                ctx.expect(task.status.state == TaskState.TASK_STATE_COMPLETED, f"expected completed; got {task.status}")
                text = a2a_text(events)
                ctx.expect(text == ag.answer(prompt), f"expected the text {short(ag.answer(prompt))}; got {short(text)}")
                ctx.expect(got.status.state == TaskState.TASK_STATE_COMPLETED and got.context_id == task.context_id,
                           f"expected GetTask to find the completed task; got {got.status}")
            res.check(f"a2a-python ({ag.kind}): SendMessage without streaming returns the completed task; GetTask finds it",
                      whole)

            def ended(ctx: Ctx, base=base, prompt=prompt) -> None:
                async def run():
                    client = await create_client(base, ClientConfig(streaming=True))
                    try:
                        events = [e async for e in client.send_message(ask(prompt))]
                        task_id = events[0].task.id
                        try:
                            return task_id, [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]
                        except UnsupportedOperationError as e:
                            return task_id, e
                    finally:
                        await client.close()
                task_id, got = asyncio.run(run())
                ctx.expect(isinstance(got, UnsupportedOperationError),
                           f"expected subscribe() to a completed task to raise UnsupportedOperationError; "
                           f"got {short(str(got))}")
                ctx.note(f"{type(got).__name__}: {short(str(got), 100)}")
            res.check(f"a2a-python ({ag.kind}): subscribe() to a finished task raises UnsupportedOperationError", ended)

            if ag.kind != "echo":  # the echo agent answers at once: nothing to join
                def joins(ctx: Ctx, base=base) -> None:
                    async def run():
                        client = await create_client(base, ClientConfig(streaming=True))
                        try:
                            async def follow(task_id: str) -> list:
                                return [e async for e in client.subscribe(SubscribeToTaskRequest(id=task_id))]

                            async def leave(task_id: str):
                                sub = client.subscribe(SubscribeToTaskRequest(id=task_id))
                                first = await anext(sub)
                                await sub.aclose()
                                return first

                            original, chunks, joined, left = [], 0, None, None
                            async for e in client.send_message(ask(f"[[tokens={LIVE_TOKENS},token_delay_ms=15]] join me")):
                                original.append(e)
                                if e.HasField("artifact_update") and e.artifact_update.artifact.artifact_id == "answer":
                                    chunks += 1
                                    if chunks == 3:
                                        task_id = e.artifact_update.task_id
                                        joined = asyncio.create_task(follow(task_id))
                                        left = asyncio.create_task(leave(task_id))
                            return original, (await joined if joined else None), (await left if left else None)
                        finally:
                            await client.close()
                    original, sub, left = asyncio.run(run())
                    want = FakeLlmProcess.answer(LIVE_TOKENS)
                    st = a2a_final_state(original)
                    ctx.expect(a2a_text(original) == want and st is not None
                               and st.state == TaskState.TASK_STATE_COMPLETED,
                               f"the original stream (a second subscriber left early): expected {short(want)} then "
                               f"completed; got {st} {short(a2a_text(original))}")
                    ctx.require(sub, "expected subscribe() to stream; got nothing")
                    first = sub[0]
                    ctx.expect(first.HasField("task") and first.task.status.state == TaskState.TASK_STATE_WORKING,
                               f"expected the working task first; got {short(str(first))}")
                    snapshot = a2a_text(sub[:1])
                    ctx.expect(bool(snapshot) and want.startswith(snapshot),
                               f"expected the snapshot to hold the text so far (three chunks had come); got {snapshot!r}")
                    middle = [e.WhichOneof("payload") for e in sub[1:-1]]
                    ctx.expect(bool(middle) and set(middle) == {"artifact_update"},
                               f"expected artifact updates between the task and the final status; got {middle[:8]}")
                    last = sub[-1]
                    ctx.expect(last.HasField("status_update")
                               and last.status_update.status.state == TaskState.TASK_STATE_COMPLETED,
                               f"expected a final completed status update; got {short(str(last))}")
                    whole = a2a_text(sub)
                    ctx.expect(whole == a2a_text(original),
                               f"expected snapshot + chunks to equal the original stream's text "
                               f"({len(a2a_text(original))} characters); got {len(whole)}: {short(whole)}")
                    ctx.expect(left is not None and left.HasField("task"),
                               f"the subscriber that left: expected the task first; got {short(str(left))}")
                    ctx.note(f"snapshot {len(snapshot)} characters, then {len(middle)} artifact updates")
                res.check(f"a2a-python ({ag.kind}): subscribe() mid-stream: the working task with the text so far, "
                          f"artifact updates, completed; snapshot + chunks = the answer; a subscriber that leaves "
                          f"cancels nothing", joins)

            if ag.fail_prompt:
                def fails(ctx: Ctx, ag=ag, base=base) -> None:
                    events = asyncio.run(collect(base, ag.fail_prompt))
                    text = a2a_text(events)
                    status = a2a_final_state(events)
                    ctx.expect(status is not None and status.state == TaskState.TASK_STATE_FAILED,
                               f"expected a failed task (never a silently short completed one); got {status}")
                    ctx.expect(text == ag.fail_partial, f"expected the text before the failure {ag.fail_partial!r}; got {short(text)}")
                    message = "".join(p.text for p in status.message.parts) if status is not None else ""
                    ctx.expect(bool(message), "expected the failure's message on the failed status")
                    whole_events = asyncio.run(collect(base, ag.fail_prompt, streaming=False))
                    st = whole_events[0].task.status.state
                    ctx.expect(st == TaskState.TASK_STATE_FAILED, f"non-streaming: expected a failed task; got {st}")
                    ctx.note(f"failed with {message!r} after {text!r}")
                res.check(f"a2a-python ({ag.kind}): an error mid-stream is a failed task with the error's message", fails)

        llm = agents[1]

        def leaves(ctx: Ctx) -> None:
            async def run():
                client = await create_client(llm.agentd.base, ClientConfig(streaming=True))
                try:
                    n = 0
                    task_id = None
                    stream = client.send_message(ask("[[tokens=5000,token_delay_ms=5]] leave"))
                    async for e in stream:
                        if e.HasField("task"):
                            task_id = e.task.id
                        n += 1
                        if n == 3:
                            break
                    await stream.aclose()
                    return n, task_id
                finally:
                    await client.close()
            n, task_id = asyncio.run(run())
            gone = lambda: any('/a2a' in line and 'client_gone' in line
                               for line in llm.agentd.log_tail(200_000).splitlines())
            ctx.expect(wait_until(gone, 5), "expected the request log to say end=client_gone for the stream left early")
            ctx.expect(wait_until(lambda: llm.agentd.metric("agentd_llm_slots_in_use") == 0, 5),
                       "expected the LLM request released (agentd_llm_slots_in_use 0) after the client left")

            async def state():
                client = await create_client(llm.agentd.base)
                try:
                    return (await client.get_task(GetTaskRequest(id=task_id))).status.state
                finally:
                    await client.close()
            st = asyncio.run(state())
            ctx.expect(st == TaskState.TASK_STATE_CANCELED, f"expected the task canceled; got {st}")
            ctx.note(f"left after {n} responses; the answer ended client_gone")
        res.check("a2a-python (llm): a client that leaves mid-stream cancels the agent", leaves)

        def cancels(ctx: Ctx) -> None:
            async def run():
                client = await create_client(llm.agentd.base, ClientConfig(streaming=True))
                try:
                    events = []
                    canceled = None
                    async for e in client.send_message(ask("[[tokens=5000,token_delay_ms=5]] cancel me")):
                        events.append(e)
                        if e.HasField("task") and canceled is None:
                            canceled = await client.cancel_task(CancelTaskRequest(id=e.task.id))
                    return events, canceled
                finally:
                    await client.close()
            events, canceled = asyncio.run(run())
            ctx.expect(canceled is not None and canceled.status.state == TaskState.TASK_STATE_CANCELED,
                       f"expected CancelTask to return the canceled task; got {canceled}")
            status = a2a_final_state(events)
            ctx.expect(status is not None and status.state == TaskState.TASK_STATE_CANCELED,
                       f"expected the stream to end with a canceled status; got {status}")
            ctx.expect(wait_until(lambda: llm.agentd.metric("agentd_llm_slots_in_use") == 0, 5),
                       "expected the LLM request released (agentd_llm_slots_in_use 0) after the cancel")
        res.check("a2a-python (llm): CancelTask mid-stream cancels the agent and ends the stream canceled", cancels)

        def errors(ctx: Ctx) -> None:
            async def run():
                client = await create_client(agents[0].agentd.base)
                try:
                    await client.get_task(GetTaskRequest(id="no-such-task"))
                    return None
                except TaskNotFoundError as e:
                    return e
                finally:
                    await client.close()
            e = asyncio.run(run())
            ctx.expect(e is not None, "expected TaskNotFoundError for an unknown task")
            r = httpx.post(agents[0].agentd.base + "/a2a", content=b"{nope", headers={"content-type": "application/json"})
            ctx.expect(r.json().get("error", {}).get("code") == -32700, f"expected -32700 for bad JSON; got {r.text}")
            r = httpx.post(agents[0].agentd.base + "/a2a", json={"jsonrpc": "2.0", "id": 1, "method": "Nope"})
            ctx.expect(r.json().get("error", {}).get("code") == -32601, f"expected -32601; got {r.text}")
        res.check("a2a-python: TaskNotFoundError, -32700 on bad JSON, -32601 on an unknown method", errors)

    with Agentd(binary, out, "a2a-python-auth", {"API_KEY_SECRET": "outside-a2a-key"}) as a:
        def auth(ctx: Ctx) -> None:
            async def run(key: str):
                h = httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=20)
                client = await create_client(a.base, ClientConfig(streaming=False, httpx_client=h))
                try:
                    events = [e async for e in client.send_message(ask("hi"))]
                    return events[0].task.status.state, client
                except Exception as e:  # noqa: BLE001 (the SDK's error for a 401)
                    return e, None
                finally:
                    await client.close()
                    await h.aclose()
            ok, _ = asyncio.run(run("outside-a2a-key"))
            ctx.expect(ok == TaskState.TASK_STATE_COMPLETED, f"expected the API key accepted; got {ok}")
            bad, _ = asyncio.run(run("wrong"))
            ctx.expect(isinstance(bad, Exception), f"expected a wrong key refused; got {bad}")
            card = httpx.get(a.base + "/.well-known/agent-card.json").json()
            ctx.expect("apiKey" in card.get("securitySchemes", {}), f"expected the card's securitySchemes; got {card}")
            ctx.note(f"a wrong key: {type(bad).__name__}")
        res.check("a2a-python: the API key as the bearer token is accepted, a wrong one refused; the card names it", auth)

def group_a2a_js(res: Results, binary: str, out: str) -> None:
    """The official A2A JavaScript SDK (@a2a-js/sdk, node/a2a_check.mjs) on the A2A front
    door, against the echo, llm and proxy agents."""
    slow = "[[tokens=5000,token_delay_ms=5]] cancel me from js"
    live = f"[[tokens={LIVE_TOKENS},token_delay_ms=15]] subscribe to me from js"
    with openai_agents(binary, out, "a2a-js") as agents:
        llm = agents[1]
        for ag in agents:
            prompt = f"Hello from @a2a-js/sdk to {ag.kind}"
            can_cancel = ag.kind != "echo"  # the echo agent answers at once: nothing to cancel or join
            seen = node("a2a_check.mjs", ag.agentd.base, prompt, ag.fail_prompt or "-", slow if can_cancel else "-",
                        "-", live if can_cancel else "-", timeout=60)
            want = ag.answer(prompt)

            def need(ctx: Ctx, key: str, seen=seen) -> dict:
                ctx.require("crash" not in seen, f"the client threw during discovery: {seen.get('crash')}")
                part = seen[key]
                ctx.require(isinstance(part, dict) and "crash" not in part,
                            f"{key}: the client threw: {short(part.get('crash') if isinstance(part, dict) else part)}")
                return part

            def discovery_stream(ctx: Ctx, ag=ag, seen=seen, want=want) -> None:
                card = need(ctx, "card")
                ctx.expect(card["streaming"] is True, f"expected capabilities.streaming true; got {card}")
                ctx.expect({"url": ag.agentd.base + "/a2a", "binding": "JSONRPC", "version": "1.0"} in card["interfaces"],
                           f"expected the JSONRPC 1.0 interface at {ag.agentd.base}/a2a; got {card['interfaces']}")
                ctx.expect(card["protocolVersion"] == "1.0", f"expected the client on protocol 1.0; got {card}")
                s = need(ctx, "stream")
                ctx.expect(s["kinds"][:1] == ["task"], f"expected the task first; got {s['kinds']}")
                ctx.expect(s["text"] == want, f"expected the streamed text {short(want)}; got {short(s['text'])}")
                ctx.expect(s["lastChunk"], "expected the answer artifact's last chunk marked lastChunk")
                ctx.expect(s["kinds"][-1:] == ["statusUpdate"] and s["state"] == "TASK_STATE_COMPLETED",
                           f"expected a final completed status update; got {s['kinds'][-1:]} {s['state']}")
                ctx.note(f"{len(s['kinds'])} stream responses ({s['artifactUpdates']} text chunks), "
                         f"{len(s['text'])} characters")
            res.check(f"a2a-js ({ag.kind}): createFromUrl (agent card), sendMessageStream: task, text chunks that "
                      f"concatenate to the answer, completed", discovery_stream)

            def send_get(ctx: Ctx, ag=ag, seen=seen, want=want) -> None:
                s, g = need(ctx, "send"), need(ctx, "get")
                ctx.expect(s["kind"] == "task" and s["state"] == "TASK_STATE_COMPLETED" and s["text"] == want,
                           f"expected sendMessage to return the completed task with {short(want)}; got {short(s)}")
                ctx.expect(g["id"] == s["id"] and g["contextId"] == s["contextId"]
                           and g["state"] == "TASK_STATE_COMPLETED" and g["text"] == want,
                           f"expected getTask to find the same completed task; got {short(g)}")
            res.check(f"a2a-js ({ag.kind}): sendMessage returns the completed task; getTask finds it", send_get)

            def refusals(ctx: Ctx, seen=seen) -> None:
                r, n = need(ctx, "resubscribe"), need(ctx, "notFound")
                ctx.expect("UnsupportedOperation" in (r.get("error") or ""),
                           f"expected resubscribeTask on a completed task refused with the SDK's "
                           f"UnsupportedOperationError; got {short(r)}")
                ctx.expect("TaskNotFound" in (n.get("error") or ""),
                           f"expected getTask of an unknown id to throw TaskNotFoundError; got {short(n)}")
                ctx.note(f"resubscribe: {r.get('error')}; unknown task: {n.get('error')}")
            res.check(f"a2a-js ({ag.kind}): resubscribeTask on a finished task is UnsupportedOperationError, "
                      f"an unknown task TaskNotFoundError", refusals)

            if can_cancel:
                def joins(ctx: Ctx, seen=seen) -> None:
                    r = need(ctx, "resubscribeLive")
                    o, s = r["original"], r["subscribed"]
                    ctx.require(isinstance(s, dict), f"expected resubscribeTask to have been called after three "
                                                     f"chunks; got {short(s)} (the original saw {o['artifactUpdates']})")
                    ctx.require("error" not in s, f"expected resubscribeTask mid-stream to stream; it threw {short(s)}")
                    want = FakeLlmProcess.answer(LIVE_TOKENS)
                    ctx.expect(o["text"] == want and o["state"] == "TASK_STATE_COMPLETED",
                               f"the original stream: expected {short(want)} then completed; got {o['state']} "
                               f"{short(o['text'])}")
                    ctx.expect(s["kinds"][:1] == ["task"] and s["snapshotState"] == "TASK_STATE_WORKING",
                               f"expected the working task first; got {s['kinds'][:1]} {s['snapshotState']}")
                    ctx.expect(bool(s["snapshotText"]) and want.startswith(s["snapshotText"]),
                               f"expected the snapshot to hold the text so far (three chunks had come); "
                               f"got {s['snapshotText']!r}")
                    middle = s["kinds"][1:-1]
                    ctx.expect(s["artifactUpdates"] >= 1 and set(middle) == {"artifactUpdate"},
                               f"expected artifact updates between the task and the final status; got {middle[:8]}")
                    ctx.expect(s["kinds"][-1:] == ["statusUpdate"] and s["state"] == "TASK_STATE_COMPLETED"
                               and s["lastChunk"],
                               f"expected the last chunk then a final completed status update; got {s['kinds'][-2:]} "
                               f"{s['state']}, lastChunk {s['lastChunk']}")
                    joined = s["snapshotText"] + s["text"]
                    ctx.expect(joined == o["text"],
                               f"expected snapshot + chunks to equal the original stream's text "
                               f"({len(o['text'])} characters); got {len(joined)}: {short(joined)}")
                    ctx.note(f"snapshot {len(s['snapshotText'])} characters, then {s['artifactUpdates']} chunks")
                res.check(f"a2a-js ({ag.kind}): resubscribeTask mid-stream: the working task with the text so far, "
                          f"then the rest as artifact updates, then completed; snapshot + chunks = the answer", joins)

                def cancels(ctx: Ctx, ag=ag, seen=seen) -> None:
                    c = need(ctx, "cancel")
                    ctx.expect(c["canceled"] == "TASK_STATE_CANCELED",
                               f"expected cancelTask to return the canceled task; got {c['canceled']}")
                    ctx.expect(c["state"] == "TASK_STATE_CANCELED",
                               f"expected the stream to end with a canceled status; got {c['state']} after {c['kinds'][-3:]}")
                    ctx.expect(c["get"] == "TASK_STATE_CANCELED", f"expected getTask to say canceled; got {c['get']}")
                    ctx.expect(len(c["text"]) < len(FakeLlmProcess.answer(5000)),
                               f"expected the answer cut short; got {len(c['text'])} characters")
                    ctx.expect("TaskNotCancelable" in str((c["cancelAgain"] or {}).get("error")),
                               f"expected a second cancelTask to throw TaskNotCancelableError; got {c['cancelAgain']}")
                    ctx.expect(wait_until(lambda: llm.agentd.metric("agentd_llm_slots_in_use") == 0, 5),
                               "expected the LLM request released (agentd_llm_slots_in_use 0) after the cancel")
                    ctx.note(f"canceled after {len(c['text'])} characters")
                res.check(f"a2a-js ({ag.kind}): cancelTask mid-stream on a slow answer: canceled task, the stream "
                          f"ends canceled, the LLM request released", cancels)

            if ag.fail_prompt:
                def fails(ctx: Ctx, ag=ag, seen=seen) -> None:
                    e = need(ctx, "error")
                    st = e["streamed"]
                    ctx.expect(st["state"] == "TASK_STATE_FAILED",
                               f"expected a failed task (never a silently short completed one); got {st['state']}")
                    ctx.expect(st["text"] == ag.fail_partial,
                               f"expected the text before the failure {ag.fail_partial!r}; got {short(st['text'])}")
                    ctx.expect(bool(st["statusMessage"]), "expected the failure's message on the failed status")
                    ctx.expect(e["sendState"] == "TASK_STATE_FAILED" and e["sendMessage"],
                               f"sendMessage: expected a failed task with a message; got {e['sendState']} {e['sendMessage']!r}")
                    ctx.note(f"failed with {st['statusMessage']!r} after {st['text']!r}")
                res.check(f"a2a-js ({ag.kind}): an error mid-stream (atomic.error) is a failed task with its message",
                          fails)

    with Agentd(binary, out, "a2a-js-auth", {"API_KEY_SECRET": "outside-a2a-js-key"}) as a:
        def auth(ctx: Ctx) -> None:
            ok = node("a2a_check.mjs", a.base, "with a key", "-", "-", "outside-a2a-js-key", timeout=60)
            ctx.require("crash" not in ok, f"with the key: the client threw during discovery: {ok.get('crash')}")
            ctx.expect(ok["stream"].get("state") == "TASK_STATE_COMPLETED" and ok["stream"].get("text") == ECHO_PREFIX + "with a key",
                       f"with the key: expected the completed answer; got {short(ok['stream'])}")
            bad = node("a2a_check.mjs", a.base, "with a wrong key", "-", "-", "wrong", timeout=60)
            ctx.expect("crash" in bad.get("stream", {}) and "crash" in bad.get("send", {}),
                       f"with a wrong key: expected the client to throw; got {short(bad.get('stream'))}")
            ctx.note(f"wrong key: {short(bad.get('stream', {}).get('crash'), 120)}")
        res.check("a2a-js: the API key as the bearer token is accepted, a wrong one refused", auth)


def a2a03(base: str, prompt: str, error_prompt: str = "-", slow_prompt: str = "-", live_prompt: str = "-",
          key: str = "-") -> dict:
    """a2a03_check.py in its own venv (A2A03_PY, set by scripts/outside.sh)."""
    py = os.environ.get("A2A03_PY", "")
    if not os.access(py, os.X_OK):
        raise RuntimeError(f"A2A03_PY must name the a2a-sdk 0.3 venv's python; got {py!r}")
    p = subprocess.run([py, os.path.join(HERE, "a2a03_check.py"), base, prompt, error_prompt, slow_prompt,
                        live_prompt, key], capture_output=True, text=True, timeout=90, cwd=HERE)
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"a2a03_check.py exited {p.returncode}: {short(p.stderr, 600)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def group_a2a_python_v03(res: Results, binary: str, out: str) -> None:
    """The official a2a-sdk 0.3.x Python client (a2a03_check.py, the A2A 0.3 method names
    and shapes) on the A2A front door, against the echo, llm and proxy agents."""
    slow = "[[tokens=5000,token_delay_ms=5]] cancel me from a2a-sdk 0.3"
    live = f"[[tokens={LIVE_TOKENS},token_delay_ms=15]] join me from a2a-sdk 0.3"
    with openai_agents(binary, out, "a2a-python-v03") as agents:
        llm = agents[1]
        for ag in agents:
            prompt = f"Hello from a2a-sdk 0.3 to {ag.kind}"
            slow_one = ag.kind != "echo"  # the echo agent answers at once: nothing to cancel or join
            seen = a2a03(ag.agentd.base, prompt, ag.fail_prompt or "-", slow if slow_one else "-",
                         live if slow_one else "-")
            want = ag.answer(prompt)

            def need(ctx: Ctx, key: str, seen=seen) -> dict:
                ctx.require("crash" not in seen, f"the client failed: {short(seen.get('crash'), 400)}")
                part = seen[key]
                ctx.require(isinstance(part, dict) and "crash" not in part,
                            f"{key}: the client threw: {short(part.get('crash') if isinstance(part, dict) else part)}")
                return part

            def completed_stream(ctx: Ctx, s: dict, want: str, what: str) -> None:
                """task first, then artifact updates, then one final status-update, completed."""
                ctx.expect(s["kinds"][:1] == ["task"] and s["snapshotState"] == "working",
                           f"{what}: expected the working task first; got {s['kinds'][:1]} {s['snapshotState']}")
                middle = s["kinds"][1:-1]
                ctx.expect(bool(middle) and set(middle) == {"artifact-update"},
                           f"{what}: expected artifact-update events between the task and the status; got {middle[:8]}")
                ctx.expect(s["kinds"][-1:] == ["status-update"] and s["states"] == ["completed"]
                           and s["finals"] == [True],
                           f"{what}: expected one status-update, completed, final=true, last; got "
                           f"{s['kinds'][-1:]} states {s['states']} finals {s['finals']}")
                ctx.expect(s["lastChunk"], f"{what}: expected the answer's last chunk marked lastChunk")
                ctx.expect(s.get("sdkText") == want and s.get("sdkState") == "completed",
                           f"{what}: expected the SDK's tracked task completed with {short(want)}; got "
                           f"{s.get('sdkState')} {short(s.get('sdkText'))}")

            def discovery_stream(ctx: Ctx, ag=ag, seen=seen, want=want) -> None:
                card = need(ctx, "card")
                ctx.expect(card["url"] == ag.agentd.base + "/a2a" and card["protocolVersion"] == "0.3.0"
                           and card["preferredTransport"] == "JSONRPC" and card["streaming"] is True,
                           f"expected url {ag.agentd.base}/a2a, protocolVersion 0.3.0, JSONRPC, streaming; got {card}")
                s = need(ctx, "stream")
                ctx.expect(s["text"] == want, f"expected the streamed text {short(want)}; got {short(s['text'])}")
                completed_stream(ctx, s, want, "message/stream")
                ctx.note(f"a2a-sdk {seen['version']}: {len(s['kinds'])} events ({s['chunks']} text chunks)")
            res.check(f"a2a-python-v03 ({ag.kind}): A2ACardResolver reads the 0.3 card; message/stream: task, "
                      f"artifact-updates that concatenate to the answer, a final completed status-update", discovery_stream)

            def send_get(ctx: Ctx, seen=seen, want=want) -> None:
                s, g = need(ctx, "send"), need(ctx, "get")
                ctx.expect(s["kind"] == "task" and s["state"] == "completed" and s["text"] == want and s["count"] == 1,
                           f"expected message/send to return the completed Task with {short(want)}; got {short(s)}")
                ctx.expect(g["kind"] == "task" and g["id"] == s["id"] and g["contextId"] == s["contextId"]
                           and g["state"] == "completed" and g["text"] == want,
                           f"expected tasks/get to find the same completed task; got {short(g)}")
            res.check(f"a2a-python-v03 ({ag.kind}): message/send returns the completed Task; tasks/get finds it",
                      send_get)

            def refusals(ctx: Ctx, seen=seen) -> None:
                r, n = need(ctx, "resubscribe"), need(ctx, "notFound")
                ctx.expect(r.get("error") == "A2AClientJSONRPCError" and r.get("code") == -32004,
                           f"expected tasks/resubscribe on a completed task to raise A2AClientJSONRPCError -32004 "
                           f"(UnsupportedOperationError); got {short(r, 300)}")
                ctx.expect(n.get("error") == "A2AClientJSONRPCError" and n.get("code") == -32001,
                           f"expected tasks/get of an unknown id to raise A2AClientJSONRPCError -32001; got {short(n)}")
                ctx.note(f"resubscribe: {r.get('error')} {r.get('code')}; unknown task: {n.get('code')}")
            res.check(f"a2a-python-v03 ({ag.kind}): tasks/resubscribe on a finished task is the JSON-RPC error -32004, "
                      f"tasks/get of an unknown task -32001", refusals)

            if slow_one:
                def joins(ctx: Ctx, seen=seen) -> None:
                    r = need(ctx, "live")
                    o, s = r["original"], r["subscribed"]
                    want = FakeLlmProcess.answer(LIVE_TOKENS)
                    ctx.expect(o["text"] == want and o["states"] == ["completed"],
                               f"the original stream (a second subscriber left early): expected {short(want)} then "
                               f"completed; got {o['states']} {short(o['text'])}")
                    ctx.require(isinstance(s, dict) and "error" not in s,
                                f"expected tasks/resubscribe mid-stream to stream; got {short(s, 300)}")
                    completed_stream(ctx, s, want, "tasks/resubscribe")
                    ctx.expect(bool(s["snapshotText"]) and want.startswith(s["snapshotText"]),
                               f"expected the snapshot task to hold the text so far (three chunks had come); "
                               f"got {s['snapshotText']!r}")
                    ctx.expect(s["appendFlags"] == [True],
                               f"expected every chunk after the snapshot to be append=true; got {s['appendFlags']}")
                    joined = s["snapshotText"] + s["text"]
                    ctx.expect(joined == o["text"],
                               f"expected snapshot + chunks to equal the original stream's text "
                               f"({len(o['text'])} characters); got {len(joined)}: {short(joined)}")
                    ctx.expect(r["left"] == "task", f"the subscriber that left: expected the task first; got {r['left']}")
                    ctx.note(f"snapshot {len(s['snapshotText'])} characters, then {s['chunks']} chunks")
                res.check(f"a2a-python-v03 ({ag.kind}): tasks/resubscribe mid-stream: the working task with the text "
                          f"so far, append chunks, a final completed status-update; snapshot + chunks = the answer; "
                          f"a subscriber that leaves cancels nothing", joins)

                def polls(ctx: Ctx, seen=seen) -> None:
                    p = need(ctx, "polling")
                    want = FakeLlmProcess.answer(LIVE_TOKENS)
                    ctx.expect(p["first"].get("kind") == "task" and p["first"].get("state") == "working",
                               f"expected message/send with blocking false to return the working task at once; "
                               f"got {short(p['first'])}")
                    ctx.expect(p["last"]["state"] == "completed" and p["last"]["text"] == want,
                               f"expected tasks/get to find it completed with {short(want)} after polling; got "
                               f"{p['last']['state']} {short(p['last']['text'])} after {p['polls']} polls")
                    ctx.note(f"{p['polls']} tasks/get polls, states seen {p['states']}")
                res.check(f"a2a-python-v03 ({ag.kind}): message/send with blocking false (ClientConfig polling) "
                          f"returns the working task; tasks/get follows it to completed", polls)

                def cancels(ctx: Ctx, seen=seen) -> None:
                    c = need(ctx, "cancel")
                    s = c["stream"]
                    ctx.expect(c["canceled"]["state"] == "canceled",
                               f"expected tasks/cancel to return the canceled task; got {short(c['canceled'])}")
                    ctx.expect(s["kinds"][-1:] == ["status-update"] and s["states"] == ["canceled"]
                               and s["finals"] == [True],
                               f"expected the stream to end with one final canceled status-update; got "
                               f"{s['kinds'][-3:]} {s['states']} {s['finals']}")
                    ctx.expect(c["get"]["state"] == "canceled", f"expected tasks/get to say canceled; got {c['get']}")
                    ctx.expect(len(s["text"]) < len(FakeLlmProcess.answer(5000)),
                               f"expected the answer cut short; got {len(s['text'])} characters")
                    ctx.expect(c["cancelAgain"].get("code") == -32002,
                               f"expected a second tasks/cancel to raise -32002 (TaskNotCancelable); got "
                               f"{short(c['cancelAgain'])}")
                    ctx.expect(wait_until(lambda: llm.agentd.metric("agentd_llm_slots_in_use") == 0, 5),
                               "expected the LLM request released (agentd_llm_slots_in_use 0) after the cancel")
                    ctx.note(f"canceled after {len(s['text'])} characters")
                res.check(f"a2a-python-v03 ({ag.kind}): tasks/cancel mid-stream: the canceled task, a final canceled "
                          f"status-update, tasks/get canceled, a second cancel -32002", cancels)

            if ag.fail_prompt:
                def fails(ctx: Ctx, ag=ag, seen=seen) -> None:
                    e = need(ctx, "error")
                    st, sd = e["streamed"], e["send"]
                    ctx.expect(st["states"] == ["failed"] and st["finals"] == [True] and st.get("sdkState") == "failed",
                               f"expected one final failed status-update (never a silently short completed task); "
                               f"got {st['states']} {st['finals']}")
                    ctx.expect(st["text"] == ag.fail_partial,
                               f"expected the text before the failure {ag.fail_partial!r}; got {short(st['text'])}")
                    ctx.expect(bool(st["statusMessage"]), "expected the failure's message on the failed status")
                    ctx.expect(sd.get("state") == "failed" and sd.get("statusMessage"),
                               f"message/send: expected a failed Task with a message; got {short(sd)}")
                    ctx.note(f"failed with {st['statusMessage']!r} after {st['text']!r}")
                res.check(f"a2a-python-v03 ({ag.kind}): an error mid-stream is a failed task with its message", fails)

    with Agentd(binary, out, "a2a-python-v03-auth", {"API_KEY_SECRET": "outside-a2a03-key"}) as a:
        def auth(ctx: Ctx) -> None:
            ok = a2a03(a.base, "with a key", key="outside-a2a03-key")
            ctx.require("crash" not in ok, f"with the key: the client failed: {short(ok.get('crash'), 300)}")
            card = ok["card"]
            ctx.expect(card["securitySchemes"].get("apiKey") == {"class": "HTTPAuthSecurityScheme", "type": "http",
                                                                  "scheme": "bearer"}
                       and {"apiKey": []} in (card["security"] or []),
                       f"expected the card's apiKey scheme read as a 0.3 HTTP bearer scheme and required; got {card}")
            for part in ("stream", "send"):
                got = ok[part]
                ctx.expect(got.get("text") == ECHO_PREFIX + "with a key",
                           f"with the key (AuthInterceptor from the card's scheme), {part}: got {short(got)}")
            bad = a2a03(a.base, "with a wrong key", key="wrong")
            for part in ("stream", "send"):
                ctx.expect("401" in str(bad.get(part, {}).get("crash")),
                           f"with a wrong key, {part}: expected an HTTP 401 error; got {short(bad.get(part))}")
            ctx.note(f"wrong key: {short(bad.get('send', {}).get('crash'), 100)}")
        res.check("a2a-python-v03: the card's bearer scheme makes AuthInterceptor send the API key, which is "
                  "accepted; a wrong one is refused with 401", auth)


def fastmcp(url: str, prompt: str, error_prompt: str = "-", key: str = "-") -> dict:
    """fastmcp_check.py in its own venv (FASTMCP_PY, set by scripts/outside.sh)."""
    py = os.environ.get("FASTMCP_PY", "")
    if not os.access(py, os.X_OK):
        raise RuntimeError(f"FASTMCP_PY must name the fastmcp venv's python; got {py!r}")
    p = subprocess.run([py, os.path.join(HERE, "fastmcp_check.py"), url, prompt, error_prompt, key],
                       capture_output=True, text=True, timeout=60, cwd=HERE)
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"fastmcp_check.py exited {p.returncode}: {short(p.stderr, 600)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def group_mcp_fastmcp(res: Results, binary: str, out: str) -> None:
    """fastmcp's Client (streamable HTTP) on POST /mcp, against the echo, llm and proxy agents."""
    with openai_agents(binary, out, "mcp-fastmcp") as agents:
        for ag in agents:
            url = ag.agentd.base + "/mcp"
            prompt = f"héllo from fastmcp to {ag.kind}"
            seen = fastmcp(url, prompt, ag.fail_prompt or "-")
            want = ag.answer(prompt)

            def need(ctx: Ctx, key: str, seen=seen) -> Any:
                ctx.require("crash" not in seen, f"the client failed: {short(seen.get('crash'), 400)}")
                part = seen[key]
                ctx.require(not (isinstance(part, dict) and "crash" in part),
                            f"{key}: the client threw: {short(part.get('crash') if isinstance(part, dict) else '')}")
                return part

            def handshake(ctx: Ctx, seen=seen) -> None:
                init, tools = need(ctx, "init"), need(ctx, "tools")
                ctx.expect(init["protocolVersion"] in ("2025-06-18", "2025-03-26"),
                           f"expected a negotiated protocol version; got {init['protocolVersion']!r}")
                ctx.expect(init["server"] == "agentd" and init["tools"] and init["ping"] is True,
                           f"expected serverInfo agentd, the tools capability and a ping; got {init}")
                ctx.expect(tools == [{"name": MCP_TOOL, "required": ["prompt"]}],
                           f"expected one tool {MCP_TOOL} requiring prompt; got {tools}")
                ctx.note(f"fastmcp {seen['version']}, protocol {init['protocolVersion']}")
            res.check(f"mcp-fastmcp ({ag.kind}): Client(url): initialize, ping, list_tools: one tool", handshake)

            def progress(ctx: Ctx, seen=seen, want=want) -> None:
                p, w = need(ctx, "progress"), need(ctx, "whole")
                ctx.expect(not p["isError"] and p["text"] == want,
                           f"expected the answer {short(want)}; got isError={p['isError']} {short(p['text'])}")
                ctx.expect(not w["isError"] and w["text"] == want,
                           f"without a progress handler: expected {short(want)}; got {short(w['text'])}")
                ups = p["updates"]
                ctx.expect(len(ups) >= 1, "expected at least one progress notification")
                ctx.expect(all(b[0] > a[0] for a, b in zip(ups, ups[1:])),
                           f"expected progress to increase; got {[u[0] for u in ups]}")
                ctx.expect(all(want.startswith(m or "") for _, m in ups),
                           f"expected each progress message to be the text so far; got {short([m for _, m in ups])}")
                ctx.note(f"{len(ups)} progress notification(s), then {short(want, 60)}")
            res.check(f"mcp-fastmcp ({ag.kind}): call_tool with progress_handler: text so far, then the result; "
                      f"and without", progress)

            if ag.fail_prompt:
                def fails(ctx: Ctx, ag=ag, seen=seen) -> None:
                    e = need(ctx, "error")
                    s, r = e["streamed"], e["raised"]
                    ctx.expect(s["isError"] and s["text"] and s["text"] != ag.fail_partial,
                               f"raise_on_error=False: expected isError with the error's message (never a silently "
                               f"short answer); got {short(s)}")
                    ctx.expect(r.get("error") == "ToolError" and r.get("message"),
                               f"raise_on_error=True (the default): expected ToolError; got {short(r)}")
                    ctx.note(f"isError after {s['progress']} progress notification(s): {short(s['text'], 100)}")
                res.check(f"mcp-fastmcp ({ag.kind}): an error mid-stream is isError (ToolError by default)", fails)

            def invalid(ctx: Ctx, seen=seen) -> None:
                i = need(ctx, "invalid")
                ctx.expect(i.get("error") == "MCPError" and "prompt" in (i.get("message") or ""),
                           f"expected an empty prompt refused with a JSON-RPC error naming it; got {short(i)}")
            res.check(f"mcp-fastmcp ({ag.kind}): an empty prompt is a JSON-RPC error naming the argument", invalid)

    with Agentd(binary, out, "mcp-fastmcp-auth", {"API_KEY_SECRET": "outside-fastmcp-key"}) as a:
        def auth(ctx: Ctx) -> None:
            ok = fastmcp(a.base + "/mcp", "x", key="outside-fastmcp-key")
            ctx.expect("crash" not in ok and ok["whole"].get("text") == ECHO_PREFIX + "x",
                       f"with the key (Client(url, auth=key)): got {short(ok.get('crash') or ok.get('whole'))}")
            bad = fastmcp(a.base + "/mcp", "x", key="wrong")
            ctx.expect("crash" in bad, f"with a wrong key: expected the connection to fail; got {short(bad)}")
            ctx.note(f"wrong key: {short(bad.get('crash'), 120)}")
        res.check("mcp-fastmcp: the API key as the bearer token (auth=) is accepted, a wrong one refused", auth)


# ------------------------------------------------------------------ main


MCP_TOOL = "ask_agent"


@contextlib.asynccontextmanager
async def mcp_session(url: str, headers: Optional[dict] = None):
    """The official `mcp` SDK's streamable HTTP client and a ClientSession, initialized."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                yield session, init


def mcp_text(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def group_mcp_python(res: Results, binary: str, out: str) -> None:
    from mcp.shared.exceptions import MCPError
    with openai_agents(binary, out, "mcp-python") as agents:
        for ag in agents:
            url = ag.agentd.base + "/mcp"

            def handshake(ctx: Ctx, ag=ag, url=url) -> None:
                async def go():
                    async with mcp_session(url) as (s, init):
                        tools = await s.list_tools()
                        await s.send_ping()
                        return init, tools
                init, tools = asyncio.run(go())
                ctx.expect(init.protocol_version in ("2025-06-18", "2025-03-26"),
                           f"expected a negotiated handshake version; got {init.protocol_version!r}")
                ctx.expect(init.capabilities.tools is not None, "expected the tools capability")
                ctx.expect(init.server_info.name == "agentd", f"expected serverInfo agentd; got {init.server_info!r}")
                names = [t.name for t in tools.tools]
                ctx.expect(names == [MCP_TOOL], f"expected one tool {MCP_TOOL}; got {names}")
                schema = tools.tools[0].input_schema if names else {}
                ctx.expect(schema.get("required") == ["prompt"], f"expected prompt required; got {short(str(schema))}")
                ctx.note(f"protocol {init.protocol_version}, mcp {importlib.metadata.version('mcp')}")
            res.check(f"mcp-python ({ag.kind}): initialize (version negotiated), ping, tools/list: one tool", handshake)

            def progress(ctx: Ctx, ag=ag, url=url) -> None:
                prompt = "héllo from mcp"
                updates: list = []

                async def on_progress(p, total, message):
                    updates.append((p, message))

                async def go():
                    async with mcp_session(url) as (s, _):
                        streamed = await s.call_tool(MCP_TOOL, {"prompt": prompt}, progress_callback=on_progress)
                        whole = await s.call_tool(MCP_TOOL, {"prompt": prompt})
                        return streamed, whole
                streamed, whole = asyncio.run(go())
                want = ag.answer(prompt)
                ctx.expect(not streamed.is_error and mcp_text(streamed) == want,
                           f"expected the answer {short(want)}; got isError={streamed.is_error} {short(mcp_text(streamed))}")
                ctx.expect(not whole.is_error and mcp_text(whole) == want,
                           f"without a progress token: expected {short(want)}; got {short(mcp_text(whole))}")
                ctx.expect(len(updates) >= 1, "expected at least one notifications/progress")
                ctx.expect(all(b[0] > a[0] for a, b in zip(updates, updates[1:])),
                           f"expected progress to increase; got {[u[0] for u in updates]}")
                ctx.expect(all(want.startswith(m or "") for _, m in updates),
                           "expected each progress message to be the text so far")
                ctx.note(f"{len(updates)} progress notification(s), then {short(want, 60)}")
            res.check(f"mcp-python ({ag.kind}): call_tool with progress_callback: text so far, then the result; "
                      f"and without", progress)

            if ag.fail_prompt:
                def fails(ctx: Ctx, ag=ag, url=url) -> None:
                    async def go():
                        async with mcp_session(url) as (s, _):
                            streamed = await s.call_tool(MCP_TOOL, {"prompt": ag.fail_prompt},
                                                         progress_callback=lambda *a: asyncio.sleep(0))
                            whole = await s.call_tool(MCP_TOOL, {"prompt": ag.fail_prompt})
                            return streamed, whole
                    streamed, whole = asyncio.run(go())
                    for what, r in (("streamed", streamed), ("not streamed", whole)):
                        ctx.expect(r.is_error, f"{what}: expected isError (never a silently short answer); "
                                               f"got {short(mcp_text(r))}")
                        ctx.expect(mcp_text(r) != ag.fail_partial and mcp_text(r),
                                   f"{what}: expected the error message as the text; got {short(mcp_text(r))}")
                    ctx.note(f"isError: {short(mcp_text(streamed), 100)}")
                res.check(f"mcp-python ({ag.kind}): an error mid-stream is a result with isError", fails)

            def refusals(ctx: Ctx, url=url) -> None:
                async def go():
                    out = {}
                    async with mcp_session(url) as (s, _):
                        for name, args in (("bad", (MCP_TOOL, {"prompt": ""})), ("unknown", ("nope", {"prompt": "x"}))):
                            try:
                                out[name] = await s.call_tool(*args)
                            except MCPError as e:
                                out[name] = e
                    return out
                got = asyncio.run(go())
                for name, r in got.items():
                    ctx.expect(isinstance(r, MCPError) and r.error.code == -32602,
                               f"{name}: expected MCPError -32602; got {short(repr(r))}")
            res.check(f"mcp-python ({ag.kind}): invalid arguments and an unknown tool are MCPError -32602", refusals)

        llm = agents[1]

        def leaves(ctx: Ctx) -> None:
            async def go():
                seen = asyncio.Event()

                async def on_progress(p, total, message):
                    seen.set()
                async with mcp_session(llm.agentd.base + "/mcp") as (s, _):
                    call = asyncio.ensure_future(s.call_tool(
                        MCP_TOOL, {"prompt": "[[tokens=5000,token_delay_ms=5]] leave"}, progress_callback=on_progress))
                    await asyncio.wait_for(seen.wait(), 10)
                # Leaving the session closes the transport: the stream is dropped mid-answer.
                call.cancel()
                with contextlib.suppress(BaseException):
                    await call
            with contextlib.suppress(BaseException):
                asyncio.run(go())
            gone = lambda: any('/mcp' in line and 'client_gone' in line
                               for line in llm.agentd.log_tail(200_000).splitlines())
            ctx.expect(wait_until(gone, 5), "expected the request log to say end=client_gone for the stream left early")
            ctx.expect(wait_until(lambda: llm.agentd.metric("agentd_llm_slots_in_use") == 0, 5),
                       "expected the LLM request released (agentd_llm_slots_in_use 0) after the client left")
        res.check("mcp-python (llm): a client that leaves mid-call cancels the agent", leaves)

    with Agentd(binary, out, "mcp-python-auth", {"API_KEY_SECRET": "outside-mcp-key",
                                                  "CORS_ORIGINS": "https://app.example"}) as a:
        url = a.base + "/mcp"

        def auth(ctx: Ctx) -> None:
            async def ok():
                async with mcp_session(url, {"Authorization": "Bearer outside-mcp-key"}) as (s, _):
                    return await s.call_tool(MCP_TOOL, {"prompt": "x"})
            r = asyncio.run(ok())
            ctx.expect(not r.is_error and mcp_text(r) == ECHO_PREFIX + "x", f"with the key: got {short(mcp_text(r))}")
            raised = None
            try:
                async def bad():
                    async with mcp_session(url, {"Authorization": "Bearer wrong"}):
                        pass
                asyncio.run(bad())
            except BaseException as e:  # the SDK raises from its task group
                raised = e
            ctx.expect(raised is not None, "expected a wrong key to fail the connection")
            r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                           headers={"Authorization": "Bearer outside-mcp-key", "Origin": "https://evil.example"})
            ctx.expect(r.status_code == 403, f"expected 403 for a disallowed Origin; got {r.status_code}")
            r = httpx.get(url, headers={"Authorization": "Bearer outside-mcp-key"})
            ctx.expect(r.status_code == 405 and r.headers.get("allow") == "POST",
                       f"expected GET 405 with Allow: POST; got {r.status_code} {r.headers.get('allow')}")
            ctx.note(f"wrong key: {type(raised).__name__}")
        res.check("mcp-python: the API key as bearer works, a wrong one fails; a disallowed Origin is 403; GET is 405",
                  auth)


def main() -> int:
    # `timeout` sends SIGTERM: unwind, so that every agentd and Chromium is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = set(args[i + 1].split(","))
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary, out = os.path.abspath(args[0]), os.path.abspath(args[1])
    os.makedirs(out, exist_ok=True)
    unknown = (only or set()) - set(GROUPS)
    if unknown:
        print(f"unknown group(s) {sorted(unknown)}; known: {GROUPS}", file=sys.stderr)
        return 2
    import resume_check  # noqa: E402
    import chromium  # noqa: E402 (here so that --only without chromium needs no browser bits)
    runners = {
        "chromium": chromium.run_chromium,
        "playground": chromium.run_playground,
        "node-eventsource": group_node_eventsource,
        "node-ws": group_node_ws,
        "httpx-sse": group_httpx_sse,
        "pyjwt": group_pyjwt,
        "promtool": group_promtool,
        "aiohttp": group_aiohttp,
        "openai-python": group_openai_python,
        "node-ai-sdk": group_node_ai_sdk,
        "openapi": group_openapi,
        "mcp-python": group_mcp_python,
        "a2a-python": group_a2a_python,
        "resume-python": resume_check.group_resume_python,
        "a2a-js": group_a2a_js,
        "mcp-fastmcp": group_mcp_fastmcp,
        "a2a-python-v03": group_a2a_python_v03,
    }
    res = Results()
    t0 = time.monotonic()
    for g in GROUPS:
        if only and g not in only:
            continue
        log(f"--- {g}")
        try:
            runners[g](res, binary, out)
        except Exception as e:  # a group that could not even start is one failure
            res.check(f"{g}: set-up", lambda ctx, e=e: ctx.require(False, f"{type(e).__name__}: {short(str(e), 600)}"))
    print(f"outside clients: {time.monotonic() - t0:.0f} s, agentd logs and screenshots in {out}", flush=True)
    if res.failures:
        print("failed: " + "; ".join(res.failures), flush=True)
    print(f"{res.passed} passed, {res.failed} failed", flush=True)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
