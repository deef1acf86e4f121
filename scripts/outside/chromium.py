"""Headless Chromium on a page of another origin: EventSource on /stream and WebSocket
on /ws, from an allowed and a refused origin, with and without a token, and what the
browser does after `done`. Chromium is driven over the DevTools protocol (its own
--remote-debugging-port), so the browser's own EventSource, WebSocket, fetch and CORS
code is what is tested.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

import jwt
from websockets.sync.client import connect

from harness import HERE, Agentd, Ctx, FakeOpenAI, Results, StaticSite, judge_events, log, short

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1100,900"]


class Browser:
    """One Chromium process (its own process group, stopped by its PID) and one page."""

    def __init__(self, out_dir: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="agentd-outside-chromium-")
        self.log_path = os.path.join(out_dir, "chromium.log")
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode} (log: {self.log_path})")
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                if first:
                    port = int(first)
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        if port is None:
            self.close()
            raise RuntimeError(f"chromium wrote no DevToolsActivePort within 30 s (log: {self.log_path})")
        targets = []
        while time.monotonic() < deadline and not targets:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = [t for t in json.load(r) if t.get("type") == "page"]
            if not targets:
                time.sleep(0.1)
        if not targets:
            self.close()
            raise RuntimeError("chromium has no page target")
        self.ws = connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.n = 0
        self.events: list[dict] = []  # DevTools events seen while waiting for answers

    def call(self, method: str, params: Optional[dict] = None, timeout: float = 30) -> dict:
        self.n += 1
        mid = self.n
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DevTools {method}: no answer in {timeout} s")
            msg = json.loads(self.ws.recv(timeout=left))
            if "method" in msg:
                self.events.append(msg)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg["result"]

    def eval(self, expr: str, timeout: float = 30) -> Any:
        r = self.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True,
                                           "returnByValue": True}, timeout)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {short(json.dumps(r['exceptionDetails']), 400)}")
        return r["result"].get("value")

    def goto(self, url: str, ready: str = "typeof window.esRun === 'function'") -> None:
        self.call("Network.enable")
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.eval(f"document.readyState === 'complete' && ({ready})", 5):
                    return
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"page {url} did not load")

    def ws_errors(self, url: str) -> list[str]:
        """The handshake errors the browser logged for WebSockets to url."""
        self.call("Runtime.evaluate", {"expression": "0"})  # flush pending events
        ids = {e["params"]["requestId"] for e in self.events
               if e["method"] == "Network.webSocketCreated" and e["params"]["url"] == url}
        return [e["params"]["errorMessage"] for e in self.events
                if e["method"] == "Network.webSocketFrameError" and e["params"]["requestId"] in ids]

    def statuses(self, url: str) -> list[int]:
        """HTTP statuses of the browser's responses for url, in order."""
        self.call("Runtime.evaluate", {"expression": "0"})
        return [e["params"]["response"]["status"] for e in self.events
                if e["method"] == "Network.responseReceived" and e["params"]["response"]["url"] == url]

    def screenshot(self, path: str) -> None:
        r = self.call("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group this Popen started
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.logf.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def js(v: Any) -> str:
    return json.dumps(v)


def es_summary(r: dict) -> str:
    names = [m["event_name"] for m in r["messages"]]
    statuses = f"HTTP statuses the browser got {r['statuses']}, " if "statuses" in r else ""
    return (f"{statuses}{len(names)} events ({names.count('done')} done), errors (ms, readyState) {[(e['t'], e['readyState']) for e in r['errors']]}, "
            f"final readyState {r['readyState']} ({r.get('why')})")


def ws_summary(r: dict) -> str:
    return (f"opened={r['opened'] is not None}, {len(r['messages'])} messages, close code {r['closeCode']}, "
            f"error {r['error']!r} ({r.get('why')}); first: {short(r['messages'][:1], 160)}")


def judge_es_events(ctx: Ctx, r: dict, what: str) -> None:
    ctx.require(r["doneAt"] is not None,
                f"{what}: expected the EventSource to receive events through done; got {es_summary(r)}")
    judge_events(ctx, [m["data"] for m in r["messages"][: [m["event_name"] for m in r["messages"]].index("done") + 1]], what)


def judge_ws(ctx: Ctx, r: dict, what: str) -> None:
    ctx.require(r["opened"] is not None, f"{what}: expected the WebSocket to open; got {ws_summary(r)}")
    msgs = [json.loads(m) for m in r["messages"]]
    ctx.require(bool(msgs) and msgs[-1].get("type") == "metrics",
                f"{what}: expected events then a metrics message; got {short(r['messages'], 400)}")
    events = [m for m in msgs[:-1]]
    for m in events:
        m.pop("requestId", None)
    judge_events(ctx, [json.dumps(m) for m in events], what)


def run_chromium(res: Results, binary: str, out_dir: str) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        res.check("chromium: available", lambda ctx: ctx.require(False, f"expected {CHROMIUM} (Debian package chromium)"))
        return
    page_dir = os.path.join(HERE, "page")
    secret = "outside-suite-hs256-secret-0123456789"
    browser: Optional[Browser] = None
    with StaticSite(page_dir) as page, StaticSite(page_dir) as other, FakeOpenAI() as fake:
        page_url = page.origin + "/index.html"
        other_url = other.origin + "/index.html"
        cors = {"CORS_ORIGINS": page.origin}
        def snap(phase: str) -> None:
            shot = os.path.join(out_dir, f"chromium-{phase}.png")
            browser.screenshot(shot)
            print(f"     screenshot of the page ({phase}): {shot}", flush=True)

        try:
            browser = Browser(out_dir)
            browser.goto(page_url)
            log(f"chromium: page at {page.origin}, refused origin {other.origin}")

            # (a) allowed origin; (d) what the browser does after done. The LLM agent on a
            # fake upstream, so that every agent run is counted where it costs: upstream.
            with Agentd(binary, out_dir, "chromium-allowed",
                        {**cors, **fake.agent_env(), "RATE_LIMIT_MAX": "1000"}) as a:
                def allowed_es(ctx: Ctx) -> None:
                    r = browser.eval(f"esRun({js(a.base + '/stream?prompt=' + urllib.parse.quote('Hello from a page'))}, {{untilDone: true, maxMs: 10000}})", 20)
                    judge_es_events(ctx, r, "EventSource from the allowed origin")
                    ctx.note(f"{len(r['messages'])} events through done in {r['doneAt']} ms")
                res.check("chromium: allowed origin: EventSource on /stream receives the events through done", allowed_es)

                def allowed_headers(ctx: Ctx) -> None:
                    names = ["x-request-id", "x-response-time"]
                    r = browser.eval(f"fetchHeaders({js(a.base + '/health')}, {js(names)})", 15)
                    ctx.require("error" not in r, f"expected a readable cross-origin fetch of /health; got {r}")
                    ctx.expect(bool(r["headers"].get("x-request-id")),
                               "expected the page to read x-request-id of /health (Access-Control-Expose-Headers); "
                               f"got headers {r['headers']} (status {r['status']})")
                    names = ["x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining"]
                    s = browser.eval(f"fetchHeaders({js(a.base + '/stream?prompt=headers')}, {js(names)})", 15)
                    ctx.require("error" not in s, f"expected a readable cross-origin fetch of /stream; got {s}")
                    ctx.expect(all(s["headers"].get(n) for n in names),
                               f"expected the page to read {names} of /stream with RATE_LIMIT_MAX set "
                               f"(Access-Control-Expose-Headers); got headers {s['headers']} (status {s['status']})")
                    ctx.note(f"page reads {r['headers']} of /health, {s['headers']} of /stream")
                res.check("chromium: allowed origin: page reads x-request-id and x-ratelimit-* of cross-origin fetches", allowed_headers)

                def allowed_ws(ctx: Ctx) -> None:
                    r = browser.eval(f"wsRun({js(a.ws_base + '/ws')}, {js({'type': 'agent-query', 'prompt': 'hi from a page', 'requestId': 'page-1'})})", 20)
                    judge_ws(ctx, r, "WebSocket from the allowed origin")
                    ctx.note(f"{len(r['messages'])} messages")
                res.check("chromium: allowed origin: WebSocket on /ws answers an agent-query through done", allowed_ws)

                def after_done(ctx: Ctx) -> None:
                    before = fake.agent_runs(a)
                    t0 = time.monotonic()
                    url = a.base + "/stream?prompt=once"
                    r = browser.eval(f"esRun({js(url)}, {{maxMs: 8000}})", 20)
                    time.sleep(max(0.0, 8.0 - (time.monotonic() - t0)))  # watch the whole 8 s
                    runs = fake.agent_runs(a) - before
                    r["statuses"] = browser.statuses(url)
                    ctx.expect(r["doneAt"] is not None, f"expected done; got {es_summary(r)}")
                    ids = [m["lastEventId"] for m in r["messages"]]
                    ctx.expect(all(ids), f"expected an SSE id on every /stream event (so that the browser "
                                         f"reconnects with Last-Event-ID); got lastEventId {ids}")
                    ctx.expect(runs == 1, f"expected exactly 1 agent run in 8 s after one EventSource; got "
                                          f"{runs} (the browser reconnects after done and the server re-runs the agent); "
                                          f"{es_summary(r)}")
                    ctx.expect(r["readyState"] == 2 and r["why"] == "closed by the browser" and r["statuses"][-1:] == [204],
                               "expected the browser to close the EventSource (readyState 2) when its "
                               f"reconnect with Last-Event-ID got 204; got {es_summary(r)}")
                    ctx.note(f"{runs} agent run(s) in 8 s; {es_summary(r)}")
                res.check("chromium: after done the EventSource stops (204 to Last-Event-ID), 1 agent run in 8 s", after_done)

            # (b) a refused origin: the page is served from `other`, agentd allows only `page`.
            snap("allowed")
            browser.goto(other_url)
            with Agentd(binary, out_dir, "chromium-refused", {**cors}) as b:
                def refused_es(ctx: Ctx) -> None:
                    r = browser.eval(f"esRun({js(b.base + '/stream?prompt=x')}, {{maxMs: 6000}})", 15)
                    ctx.expect(not r["messages"] and r["errors"] and r["readyState"] == 2,
                               f"expected a CORS error and a closed EventSource from {other.origin}; got {es_summary(r)}")
                res.check("chromium: refused origin: EventSource fails (CORS)", refused_es)

                def refused_ws(ctx: Ctx) -> None:
                    url = b.ws_base + "/ws"
                    r = browser.eval(f"wsRun({js(url)}, {js({'type': 'agent-query', 'prompt': 'hijack', 'requestId': 'x'})}, {{maxMs: 6000}})", 15)
                    errs = browser.ws_errors(url)
                    ctx.expect(r["opened"] is None and not r["messages"] and any("403" in e for e in errs),
                               f"expected the upgrade from {other.origin} to be refused with 403 (cross-site WebSocket "
                               f"hijacking); got {ws_summary(r)}; browser's handshake errors {errs}")
                    ctx.note(f"browser: {errs}")
                res.check("chromium: refused origin: WebSocket upgrade refused", refused_ws)

            # (c) AUTH_REQUIRED: a token in ?access_token= is all a browser can send.
            snap("refused")
            browser.goto(page_url)
            claims = {"sub": "page-user", "role": "user", "exp": int(time.time()) + 600}
            token = jwt.encode(claims, secret, algorithm="HS256")
            forged = jwt.encode(claims, "not-the-server-secret-0123456789", algorithm="HS256")
            with Agentd(binary, out_dir, "chromium-auth",
                        {**cors, "AUTH_REQUIRED": "true", "JWT_SECRET": secret}) as c:
                q = "?prompt=authorised&access_token=" + urllib.parse.quote(token)

                def auth_es(ctx: Ctx) -> None:
                    r = browser.eval(f"esRun({js(c.base + '/stream' + q)}, {{untilDone: true, maxMs: 8000}})", 15)
                    judge_es_events(ctx, r, "EventSource with ?access_token=<jwt>")
                    r = browser.eval(f"esRun({js(c.base + '/stream?prompt=anonymous')}, {{maxMs: 6000}})", 15)
                    ctx.expect(not r["messages"] and r["readyState"] == 2,
                               f"expected an EventSource without a token to fail (401); got {es_summary(r)}")
                    r = browser.eval(f"esRun({js(c.base + '/stream?prompt=forged&access_token=' + forged)}, {{maxMs: 6000}})", 15)
                    ctx.expect(not r["messages"] and r["readyState"] == 2,
                               f"expected an EventSource with a token of another key to fail (401); got {es_summary(r)}")
                res.check("chromium: AUTH_REQUIRED: EventSource with ?access_token= succeeds, without or forged fails", auth_es)

                def auth_ws(ctx: Ctx) -> None:
                    msg = {"type": "agent-query", "prompt": "authorised", "requestId": "a1"}
                    r = browser.eval(f"wsRun({js(c.ws_base + '/ws?access_token=' + urllib.parse.quote(token))}, {js(msg)})", 15)
                    judge_ws(ctx, r, "WebSocket with ?access_token=<jwt>")
                    r = browser.eval(f"wsRun({js(c.ws_base + '/ws')}, {js(msg)}, {{maxMs: 6000}})", 15)
                    ctx.expect(r["opened"] is None and not r["messages"],
                               f"expected a WebSocket without a token to be refused (401); got {ws_summary(r)}")
                    r = browser.eval(f"wsRun({js(c.ws_base + '/ws?access_token=' + forged)}, {js(msg)}, {{maxMs: 6000}})", 15)
                    ctx.expect(r["opened"] is None and not r["messages"],
                               f"expected a WebSocket with a token of another key to be refused (401); got {ws_summary(r)}")
                res.check("chromium: AUTH_REQUIRED: WebSocket with ?access_token= succeeds, without or forged is refused", auth_ws)

                def token_not_logged(ctx: Ctx) -> None:
                    time.sleep(0.3)
                    sig = token.rsplit(".", 1)[1]
                    ctx.expect(sig not in c.log_tail(10_000_000),
                               f"expected access_token never to be written to the log; found it in {c.log_path}")
                res.check("chromium: AUTH_REQUIRED: the access_token is not written to agentd's log", token_not_logged)

            snap("auth")
        finally:
            if browser is not None:
                browser.close()


def run_playground(res: Results, binary: str, out_dir: str) -> None:
    """The playground page in Chromium, under agentd's own CSP: load it, ask on each of
    its three routes, see the streamed answer in the DOM (and a screenshot of it)."""
    if not os.access(CHROMIUM, os.X_OK):
        res.check("playground: chromium available", lambda ctx: ctx.require(False, f"expected {CHROMIUM}"))
        return
    browser: Optional[Browser] = None
    with Agentd(binary, out_dir, "playground", {}) as a:
        try:
            browser = Browser(out_dir)

            def ask(ctx: Ctx) -> None:
                url = a.base + "/playground"
                browser.goto(url, "window.playgroundReady === true")
                csp = [e["params"]["response"]["headers"] for e in browser.events
                       if e["method"] == "Network.responseReceived" and e["params"]["response"]["url"] == url]
                ctx.expect(any("content-security-policy" in {k.lower() for k in h} for h in csp),
                           "expected the page to be served under agentd's CSP")
                for route in ["/agent", "/stream", "/v1/chat/completions"]:
                    prompt = f"playground on {route}"
                    started = browser.eval("document.body.dataset.finished || ''")
                    browser.eval(f"document.getElementById('prompt').value = {js(prompt)};"
                                 f"document.getElementById('route').value = {js(route)};"
                                 "document.getElementById('send').click(); true")
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline:
                        if browser.eval("document.body.dataset.finished || ''") != started:
                            break
                        time.sleep(0.1)
                    state = browser.eval("({answer: document.getElementById('answer').textContent,"
                                         " events: document.getElementById('events').textContent,"
                                         " status: document.getElementById('status').textContent,"
                                         " rid: document.getElementById('request-id').textContent,"
                                         " first: document.getElementById('first').textContent})")
                    shot = os.path.join(out_dir, f"playground{route.replace('/', '-')}.png")
                    browser.screenshot(shot)
                    print(f"     screenshot of the playground ({route}): {shot}", flush=True)
                    ctx.require(state["status"] == "200", f"{route}: expected status 200 on the page; got {state}")
                    ctx.expect(prompt in state["answer"], f"{route}: expected the answer to hold the prompt; got {state}")
                    ctx.expect(state["rid"] not in ("", "–", "…"), f"{route}: expected a request id; got {state}")
                    ctx.expect(state["first"] not in ("", "–", "…"), f"{route}: expected a time to first event; got {state}")
                    done = "finish_reason: stop" if route.startswith("/v1") else "done"
                    ctx.expect(done in state["events"], f"{route}: expected {done!r} in the side panel; got {state}")
                ctx.note("answers streamed into the page on /agent, /stream and /v1/chat/completions")
            res.check("playground: the page answers in Chromium on its three routes, under agentd's CSP", ask)
        finally:
            if browser is not None:
                browser.close()
    with Agentd(binary, out_dir, "playground-off", {"PLAYGROUND": "false"}) as a:
        def off(ctx: Ctx) -> None:
            r = urllib.request.Request(a.base + "/playground")
            try:
                urllib.request.urlopen(r, timeout=5)
                ctx.require(False, "expected 404 with PLAYGROUND=false")
            except urllib.error.HTTPError as e:
                ctx.require(e.code == 404, f"expected 404 with PLAYGROUND=false; got {e.code}")
        res.check("playground: PLAYGROUND=false answers 404", off)
