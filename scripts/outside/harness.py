"""Plumbing of the outside-client suite: agentd processes, a fake OpenAI-compatible
upstream that counts agent runs, a static page server on another origin, and the
PASS/FAIL bookkeeping. The clients under test live in run.py and chromium.py.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from sentient_agent_framework.interface.events import DoneEvent, ResponseEventAdapter

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def short(v: Any, limit: int = 240) -> str:
    r = v if isinstance(v, str) else repr(v)
    return r if len(r) <= limit else r[: limit // 2] + " … " + r[-limit // 2 :]


# ------------------------------------------------------------------ results


class CheckFailed(Exception):
    pass


@dataclass
class Ctx:
    """One check: expect() records 'expected …, got …' problems."""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def expect(self, cond: bool, msg: str) -> bool:
        if not cond:
            self.problems.append(msg)
        return cond

    def require(self, cond: bool, msg: str) -> None:
        if not cond:
            self.problems.append(msg)
            raise CheckFailed(msg)

    def note(self, msg: str) -> None:
        self.notes.append(msg)


class Results:
    def __init__(self, only: Optional[set[str]] = None):
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []
        self.only = only

    def check(self, name: str, fn: Callable[[Ctx], None]) -> bool:
        ctx = Ctx()
        t0 = time.monotonic()
        try:
            fn(ctx)
        except CheckFailed:
            pass
        except Exception as e:  # a client crash is a failure of the check, with its place
            tb = traceback.extract_tb(e.__traceback__)[-1]
            ctx.problems.append(
                f"exception {type(e).__name__}: {short(str(e), 400)} "
                f"(at {os.path.basename(tb.filename)}:{tb.lineno})"
            )
        dt = time.monotonic() - t0
        if ctx.problems:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL {name} ({dt:.1f} s)", flush=True)
            for p in ctx.problems[:10]:
                print(f"     - {p}", flush=True)
            if len(ctx.problems) > 10:
                print(f"     - … {len(ctx.problems) - 10} more", flush=True)
            for n in ctx.notes[:6]:
                print(f"     · {n}", flush=True)
            return False
        self.passed += 1
        extra = f": {ctx.notes[0]}" if ctx.notes else ""
        print(f"PASS {name} ({dt:.1f} s){extra}", flush=True)
        return True


# ------------------------------------------------------------------ agentd


class Agentd:
    """One agentd process on a free 127.0.0.1 port, with exactly the environment given
    (nothing inherited but PATH, HOME and the locale), in an empty working directory so
    that no .env file is read. Stopped by PID (SIGTERM, then SIGKILL after 5 s)."""

    def __init__(self, binary: str, out_dir: str, name: str, env: dict[str, str]):
        self.binary = binary
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        self.log_path = os.path.join(out_dir, f"agentd-{name}.log")
        self.env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL") if k in os.environ}
        self.env.update({
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORKERS": "1",
            "NO_COLOR": "1",
            "LOG_FORMAT": "json",
            "REQUEST_LOGGING": "true",
            "MAX_EVENT_LOOP_DELAY": "0",  # a loaded CI machine must not shed the checks
        })
        self.env.update(env)
        self.proc: Optional[subprocess.Popen] = None
        self.cwd = tempfile.mkdtemp(prefix=f"agentd-{name}-")

    def __enter__(self) -> "Agentd":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.binary], env=self.env, cwd=self.cwd,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agentd ({self.name}) exited with {self.proc.returncode} at start: "
                                   f"{short(self.log_tail(), 600)}")
            try:
                with urllib.request.urlopen(self.base + "/health/live", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"agentd ({self.name}) did not answer /health/live within 15 s")

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.logf.close()
        shutil.rmtree(self.cwd, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def metric(self, name: str, labels: Optional[dict[str, str]] = None) -> float:
        """Sum of the samples of one metric in /metrics (labels: a subset to match)."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, lab = head.partition("{")
            if metric != name:
                continue
            if labels and not all(f'{k}="{v}"' in lab for k, v in labels.items()):
                continue
            total += float(value)
        return total


# --------------------------------------------------- fake OpenAI-compatible upstream


class FakeOpenAI:
    """A minimal OpenAI-compatible server: GET /v1/models, and POST
    /v1/chat/completions streaming a short answer. `runs` counts the completions asked
    for, that is the agent runs of an agentd whose LLM agent points here (see
    agent_runs)."""

    def __init__(self) -> None:
        fake = self
        self.runs = 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, "application/json",
                               b'{"object":"list","data":[{"id":"fake-model","object":"model"}]}')
                else:
                    self._send(404, "application/json", b'{"error":{"message":"not found"}}')

            def do_POST(self) -> None:
                if self.path.endswith("/chat/completions"):
                    with fake.lock:  # counted on the request head: a run cut short counts too
                        fake.runs += 1
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                if not self.path.endswith("/chat/completions"):
                    self._send(404, "application/json", b'{"error":{"message":"not found"}}')
                    return

                def chunk(delta: dict, finish: Optional[str] = None, **extra: Any) -> bytes:
                    obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                           "model": "fake-model",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    obj.update(extra)
                    return b"data: " + json.dumps(obj).encode() + b"\n\n"

                body = (chunk({"role": "assistant", "content": ""})
                        + chunk({"content": "Hello"}) + chunk({"content": " from the fake model"})
                        + chunk({}, "stop")
                        + b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
                          b'"model":"fake-model","choices":[],"usage":{"prompt_tokens":3,'
                          b'"completion_tokens":4,"total_tokens":7}}\n\n'
                        + b"data: [DONE]\n\n")
                self._send(200, "text/event-stream", body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def agent_env(self) -> dict[str, str]:
        return {"AGENT": "llm", "OPENAI_API_KEY": "sk-outside-test", "OPENAI_BASE_URL": self.base,
                "OPENAI_MODEL": "fake-model", "HEALTH_CHECK_INTERVAL": "60000", "ENABLE_METRICS": "true"}

    def agent_runs(self, a: "Agentd") -> int:
        """Agent runs of `a` (which uses this upstream) so far: the LLM requests agentd says
        it started (a run cut short may never reach the upstream), or the ones that reached
        the upstream, whichever is more."""
        try:
            started = int(a.metric("agentd_llm_requests_total"))
        except Exception:
            started = 0
        return max(self.runs, started)


# ------------------------------------------- the in-repo fake LLM upstream, a process


class FakeLlmProcess:
    """The in-repo `fake-llm` binary (tests/fake_llm) on a free 127.0.0.1 port: an
    OpenAI-compatible streaming upstream whose answers are `tok 0tok 1…` and whose
    faults are prompt directives (`[[fault:mid_stream_error,after=2]]`, `[[tokens=N]]`,
    `[[token_delay_ms=N]]`). Stopped by PID."""

    def __init__(self, binary: str, out_dir: str, tokens: int = 5) -> None:
        self.binary = binary
        self.tokens = tokens
        self.log_path = os.path.join(out_dir, "fake-llm.log")
        self.proc: Optional[subprocess.Popen] = None
        self.base = ""

    def __enter__(self) -> "FakeLlmProcess":
        # stdout carries only the `listening on` line; anything else goes to the log.
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.binary, "--port", "0", "--threads", "1", "--tokens", str(self.tokens)],
                                     stdout=subprocess.PIPE, stderr=self.logf,
                                     stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening on http://"):
            self.__exit__()
            raise RuntimeError(f"fake-llm did not start: {short(line)}")
        self.base = line.strip().split(" ", 2)[2] + "/v1"
        return self

    def __exit__(self, *exc) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.logf.close()

    @staticmethod
    def answer(tokens: int) -> str:
        return "".join(f"tok {i}" for i in range(tokens))

    def agent_env(self) -> dict[str, str]:
        return {"AGENT": "llm", "OPENAI_API_KEY": "sk-outside-test", "OPENAI_BASE_URL": self.base,
                "OPENAI_MODEL": "fake-model", "HEALTH_CHECK_INTERVAL": "60000", "ENABLE_METRICS": "true",
                "LLM_MAX_RETRIES": "0"}


# ------------------------------------------------------------------ static pages


class StaticSite:
    """Serves a folder on its own 127.0.0.1 port: a page of another origin than agentd."""

    def __init__(self, directory: str) -> None:
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=directory, **kw)

            def log_message(self, *a: Any) -> None:
                pass

            def end_headers(self) -> None:
                self.send_header("cache-control", "no-store")
                super().end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StaticSite":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ events


def judge_events(ctx: Ctx, datas: list[str], what: str, names: Optional[list[str]] = None) -> list[Any]:
    """Every event's JSON through the official ResponseEventAdapter; ids strictly
    increasing; exactly one done, last. `names`: the SSE event names, when framed."""
    events = []
    for i, data in enumerate(datas):
        try:
            ev = ResponseEventAdapter.validate_json(data)
        except Exception as e:
            ctx.expect(False, f"{what}: event {i} rejected by ResponseEventAdapter ({short(str(e).splitlines()[0] if str(e) else e, 200)}): {short(data)}")
            continue
        if names is not None:
            ctx.expect(names[i] == ev.event_name,
                       f"{what}: SSE event name {names[i]!r} != event_name {ev.event_name!r}")
        events.append(ev)
    ctx.require(len(datas) > 0, f"{what}: expected events, got none")
    ids = [str(e.id) for e in events]
    ctx.expect(all(a < b for a, b in zip(ids, ids[1:])), f"{what}: ids not strictly increasing: {ids}")
    dones = [i for i, e in enumerate(events) if isinstance(e, DoneEvent)]
    ctx.expect(dones == [len(datas) - 1], f"{what}: expected exactly one done, last; got done at {dones} of {len(datas)} events")
    return events


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
