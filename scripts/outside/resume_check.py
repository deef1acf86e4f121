"""The `resume-python` group of the outside-client suite: resumable streams across two
agentd replicas sharing a real `redis-server` (RESUME_STORE=redis), for the echo, llm
and proxy agents, read with httpx-sse and every event parsed by the official
`sentient-agent-framework` ResponseEventAdapter.

For each agent kind: POST /agent on replica A, read a few events and drop the
connection mid-answer; GET /agent/streams/{x-stream-id} on replica B with the last
event's id as Last-Event-ID; the events seen plus the events resumed must be, byte for
byte and as parsed, the answer as replica A keeps it from the start, and a well-formed
answer (ids increasing, one done, last) whose text is the agent's whole answer."""
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from typing import Callable

import httpx
from sentient_agent_framework.interface.events import DoneEvent, TextChunkEvent

from harness import Agentd, Ctx, FakeLlmProcess, Results, free_port, judge_events, short, wait_until

TIMEOUT = httpx.Timeout(20.0)


@contextlib.contextmanager
def redis_server(out: str):
    """A `redis-server` on a free port, stopped by PID."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is needed (apt-get install -y redis-server)")
    port = free_port()
    work = tempfile.mkdtemp(prefix="agentd-outside-redis-")
    log = open(os.path.join(out, "redis-server.log"), "wb")
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                import socket
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        if not wait_until(up, 10):
            raise RuntimeError("redis-server did not answer PING within 10 s")
        yield f"redis://127.0.0.1:{port}/"
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def frames(raw: bytes) -> list[tuple[str, str]]:
    """(event name, data) of each SSE frame in raw bytes (agentd's framing: one `event:`
    and one `data:` line per frame)."""
    out = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((name, data))
    return out


def cut_after(base: str, body: bytes, n: int) -> tuple[str, bytes]:
    """POSTs /agent, reads until n whole events arrived, drops the connection; returns
    the stream id and the bytes of those n events."""
    with httpx.Client(timeout=TIMEOUT) as c:
        with c.stream("POST", base + "/agent", content=body,
                      headers={"content-type": "application/json", "accept": "text/event-stream",
                               "accept-encoding": "identity"}) as r:
            if r.status_code != 200:
                raise RuntimeError(f"POST /agent answered {r.status_code}: {short(r.read())}")
            sid = r.headers.get("x-stream-id", "")
            buf = b""
            for chunk in r.iter_bytes():
                buf += chunk
                if buf.count(b"\n\n") >= n:
                    break
    # Keep exactly n events (one read may carry more).
    end = 0
    for _ in range(n):
        end = buf.index(b"\n\n", end) + 2
    return sid, buf[:end]


def check_resume(ctx: Ctx, a: Agentd, b: Agentd, prompt: str, n: int, expect_text: Callable[[str], bool],
                 what: str) -> None:
    import json
    from ulid import ULID
    body = json.dumps({"query": {"id": str(ULID()), "prompt": prompt}}).encode()
    sid, seen = cut_after(a.base, body, n)
    ctx.require(len(sid) >= 32, f"{what}: expected an x-stream-id of at least 128 bits; got {sid!r}")
    last_id = json.loads(frames(seen)[-1][1])["id"]
    with httpx.Client(timeout=TIMEOUT, headers={"accept-encoding": "identity"}) as c:
        # The owner copies an answer to Redis a moment after it starts: a resume that
        # reaches another replica before that gets 404 and tries again.
        r = c.get(f"{b.base}/agent/streams/{sid}", headers={"last-event-id": last_id})
        for _ in range(20):
            if r.status_code != 404:
                break
            time.sleep(0.05)
            r = c.get(f"{b.base}/agent/streams/{sid}", headers={"last-event-id": last_id})
        ctx.require(r.status_code == 200, f"{what}: the other replica answered {r.status_code}: {short(r.text)}")
        rest = r.content
        whole = c.get(f"{a.base}/agent/streams/{sid}").content
    joined = seen + rest
    ctx.expect(joined == whole, f"{what}: seen ({len(seen)} B) + resumed on the other replica ({len(rest)} B) "
                                f"differs from the answer as its replica keeps it ({len(whole)} B)")
    fr = frames(joined)
    events = judge_events(ctx, [d for _, d in fr], what, names=[e for e, _ in fr])
    ctx.expect(isinstance(events[-1], DoneEvent), f"{what}: the last event is not done")
    text = "".join(e.content for e in events if isinstance(e, TextChunkEvent))
    ctx.expect(expect_text(text), f"{what}: unexpected text {short(text)}")
    ctx.note(f"{n} events seen, {len(fr) - n} resumed on the other replica, {len(joined)} bytes equal")


def group_resume_python(res: Results, binary: str, out: str) -> None:
    fake_bin = os.environ.get("FAKE_LLM_BIN", "")
    if not os.access(fake_bin, os.X_OK):
        raise RuntimeError(f"FAKE_LLM_BIN must name the fake-llm binary; got {fake_bin!r}")
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_server(out))
        shared = {"RESUME_STORE": "redis", "REDIS_URL": url}
        fake = stack.enter_context(FakeLlmProcess(fake_bin, out, tokens=12))
        # The upstream of the proxy: an llm agentd (resume off there; the proxy keeps it).
        origin = stack.enter_context(Agentd(binary, out, "resume-origin", fake.agent_env()))
        kinds = {
            "echo": {},
            "llm": dict(fake.agent_env(), **shared),
            "proxy": dict({"AGENT": "proxy", "AGENT_UPSTREAMS": origin.base + "/assist",
                           "PROXY_HEALTH_CHECK_INTERVAL": "60000"}, **shared),
        }
        other = stack.enter_context(Agentd(binary, out, "resume-b", dict(shared)))
        slow = "[[token_delay_ms=40]] tell me"
        whole = FakeLlmProcess.answer(12)
        for kind, env in kinds.items():
            a = stack.enter_context(Agentd(binary, out, f"resume-{kind}", dict(shared, **env)))
            if kind == "echo":
                res.check("resume-python: echo: cut on one replica, resumed on another through Redis, byte-equal",
                          lambda ctx, a=a: check_resume(ctx, a, other, "resume me", 1,
                                                        lambda t: "resume me" in t, "echo"))
            else:
                res.check(f"resume-python: {kind}: cut mid-answer on one replica, resumed live on another, "
                          "byte-equal, parsed by ResponseEventAdapter",
                          lambda ctx, a=a, kind=kind: check_resume(ctx, a, other, slow, 3,
                                                                   lambda t: t.rstrip() == whole, kind))
