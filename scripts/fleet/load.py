#!/usr/bin/env python3
"""Mixed load for the fleet drill (scripts/fleet.sh): short and long /agent streams
through the load balancer, every response read to its end and judged.

Short requests ask the fake LLM upstream for one token at once (an echo-like answer);
long ones take the upstream's default answer (several seconds). Each request opens its
own connection (Connection: close), reads the whole response (chunked or not), splits
the SSE events and records: status, whether the stream ended with `done`, the
`atomic.error` codes it carried, how a stream without `done` ended (the server or the
balancer closed the connection, a reset, a time-out), and which replica served it (the
balancer's `x-served-by` header).

Resume (agentd with RESUME_STORE=redis behind the balancer): with --cut-share F, that
share of the long streams is cut by the client itself after a random number of events
(at least 1, before `done`): the socket is closed. Every stream that ended without
`done` and carried an x-stream-id, cut by the client or by the server, is then resumed
in `on_cut`: a new connection through the balancer (so any replica may answer),
GET /agent/streams/{id} with Last-Event-ID naming the last event seen, read to the end
(a resume that is itself cut is resumed again from its last event, a few times). The
result is judged in `judge`: the events seen plus the events resumed must be the
answer's events exactly once each, in order, byte for byte as the stream fetched whole
from the start (GET /agent/streams/{id} without Last-Event-ID, once it ended), with
exactly one `done`, last, one closing chunk (is_complete), and the text of their other
chunked.text events must be the fake upstream's deterministic answer (--tokens N:
"tok 0tok 1…tok N-1"). A resume whose
answer's replica died ends with `atomic.error` 503, details reason agent_lost, then
`done`: recorded as such (the report allows it only for the killed replica's streams,
as it allows 404 stream_not_found for a stream whose replica died before its first
events reached Redis).

Usage: load.py --port PORT --stop-file FILE --out REPORT.json
              [--short N] [--long N] [--short-think-ms MS] [--timeout S] [--max-seconds S]
              [--cut-share F] [--tokens N] [--seed N] [--no-resume]
Workers start requests until FILE exists (or --max-seconds pass), then the requests in
flight finish (each bounded by --timeout, and its resume by another --timeout) and the
report is written. Exit 0 always once the report is written; the judge is
scripts/fleet/report.py. --no-resume (agentd without a resume store): cut streams are
only counted.
"""
import argparse
import asyncio
import json
import os
import random
import sys
import time

ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Most connections one cut stream's resume may take (each resume that is itself cut
# is resumed again from its last event).
RESUME_ATTEMPTS = 5


def ulid() -> str:
    return "0" + "".join(random.choice(ULID_CHARS) for _ in range(25))


class Cut(Exception):
    """The connection ended before the response did."""


class ClientCut(Exception):
    """The client closed the connection on purpose (--cut-share)."""


async def read_body(reader, headers):
    """Yields body bytes as they arrive, de-chunked; raises Cut on an early end."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n"):
                raise Cut("closed inside the chunked body (no last chunk)")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size) if size else b""
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if n:
            yield await reader.readexactly(n)
    else:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            yield data


def parse_event(block):
    """One SSE block: a dict (name, id, raw bytes, text, error code and reason), or
    None for a comment (a heartbeat)."""
    name, payload = None, None
    for ln in block.split(b"\n"):
        if ln.startswith(b"event:"):
            name = ln[6:].strip().decode()
        elif ln.startswith(b"data:"):
            payload = ln[5:].strip()
    if name is None and payload is None:
        return None
    ev = {"name": name, "id": None, "raw": block, "text": None, "closing": False,
          "code": None, "reason": None}
    try:
        data = json.loads(payload)
        ev["id"] = data.get("id")
        if data.get("content_type") == "chunked.text":
            # The closing chunk (is_complete) carries a placeholder, not answer text.
            if data.get("is_complete"):
                ev["closing"] = True
            else:
                ev["text"] = data.get("content")
        elif name == "error":
            ev["code"] = data["content"]["error_code"]
            details = data["content"].get("details")
            if isinstance(details, dict):
                ev["reason"] = details.get("reason")
    except (ValueError, KeyError, TypeError, AttributeError):
        if name == "error":
            ev["code"] = "unparsed"
    return ev


async def request(info, port, method, path, body=b"", headers=(), on_event=None):
    """One request on its own connection; returns how it ended: "complete",
    "eof_without_done" or why the body was cut. info["status"] and info["headers"] are
    filled in as they arrive (a time-out around the call still finds them).
    on_event(ev) is called per event; it may raise ClientCut to close the connection
    there."""
    writer = None
    info["status"], info["headers"] = None, {}
    hdrs = info["headers"]
    status = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        for k, v in headers:
            head += f"{k}: {v}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write((head + "Connection: close\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise Cut("closed before a status line")
        status = info["status"] = int(status_line.split()[1])
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        buf = b""
        done = False
        try:
            async for data in read_body(reader, hdrs):
                buf += data
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    ev = parse_event(block)
                    if ev is None:
                        continue
                    done |= ev["name"] == "done"
                    if on_event is not None:
                        on_event(ev)
            if status != 200:
                hdrs["body"] = buf.decode("utf-8", "replace")[:300]
            return "complete" if done else "eof_without_done"
        except (Cut, asyncio.IncompleteReadError) as e:
            return "cut: " + (str(e) if isinstance(e, Cut) else "closed mid-chunk")
    except ClientCut:
        return "client cut"
    except Cut as e:
        return "cut: " + str(e)
    except (ConnectionError, OSError) as e:
        return "connection: " + type(e).__name__
    finally:
        if writer is not None:
            writer.close()


async def one(a, kind):
    prompt = "[[tokens=1]] hi" if kind == "short" else "a long answer please"
    body = json.dumps({"query": {"id": ulid(), "prompt": prompt}}).encode()
    rec = {"kind": kind, "status": None, "done": False, "errors": [], "end": None,
           "served_by": None, "events": 0, "start": time.time(), "client_cut": False}
    cut_after = None
    if kind == "long" and a.cut_share and random.random() < a.cut_share:
        # Somewhere in the answer, never after its end: 1 .. tokens - 1 events.
        cut_after = random.randint(1, max(1, a.tokens - 1))
    seen = []

    def on_event(ev):
        rec["events"] += 1
        if rec["done"]:
            rec["errors"].append("event_after_done")
        if ev["name"] == "done":
            rec["done"] = True
        elif ev["name"] == "error":
            rec["errors"].append(ev["code"])
        seen.append(ev)
        if cut_after is not None and rec["events"] >= cut_after and not rec["done"]:
            rec["client_cut"] = True
            raise ClientCut()

    info = {}
    try:
        async with asyncio.timeout(a.timeout):
            end = await request(info, a.port, "POST", "/agent", body, on_event=on_event)
    except TimeoutError:
        end = "timeout (hung)"
    rec["status"], rec["end"] = info.get("status"), end
    hdrs = info.get("headers", {})
    rec["served_by"] = hdrs.get("x-served-by")
    rec["stream_id"] = hdrs.get("x-stream-id")
    rec["seconds"] = round(time.time() - rec["start"], 3)
    if rec["status"] == 200 and not rec["done"] and not end.startswith("timeout") and a.resume:
        await on_cut(a, rec, seen)
    return rec


async def on_cut(a, rec, seen):
    """Resumes a stream that ended without `done` through the balancer and judges it:
    rec['resume'] = {outcome, attempts, served_by, statuses, ...}."""
    res = {"outcome": None, "attempts": 0, "served_by": [], "statuses": [], "ends": [],
           "events_seen": len(seen), "events_resumed": 0}
    rec["resume"] = res
    if not rec.get("stream_id"):
        res["outcome"] = "no x-stream-id"
        return
    resumed = []
    t0 = time.time()
    try:
        async with asyncio.timeout(a.timeout):
            while res["attempts"] < RESUME_ATTEMPTS:
                last = (resumed or seen)[-1]["id"] if (resumed or seen) else None
                res["attempts"] += 1
                info = {}
                end = await request(
                    info, a.port, "GET", f"/agent/streams/{rec['stream_id']}",
                    headers=[("Last-Event-ID", last)] if last else [],
                    on_event=resumed.append)
                status, hdrs = info["status"], info["headers"]
                res["statuses"].append(status)
                res["ends"].append(end)
                res["served_by"].append(hdrs.get("x-served-by"))
                if status != 200:
                    try:
                        code = json.loads(hdrs.get("body", ""))["code"]
                    except (ValueError, KeyError, TypeError):
                        code = hdrs.get("body", "")[:80]
                    res["outcome"] = f"resume answered {status} {code}"
                    return
                if end in ("complete", "eof_without_done") or any(
                        e["name"] == "done" for e in resumed):
                    break
            else:
                res["outcome"] = f"incomplete: still cut after {RESUME_ATTEMPTS} resumes"
                return
            res["events_resumed"] = len(resumed)
            whole = []
            if any(e["name"] == "done" for e in resumed) and not is_agent_lost(resumed):
                info = {}
                end = await request(info, a.port, "GET", f"/agent/streams/{rec['stream_id']}",
                                    on_event=whole.append)
                status, hdrs = info["status"], info["headers"]
                if status != 200 or end != "complete":
                    res["outcome"] = f"error: fetching it whole: {status} {end} {hdrs.get('body', '')}"
                    return
            res["outcome"] = judge(seen, resumed, whole, a.tokens)
    except TimeoutError:
        res["outcome"] = "timeout (hung)"
    finally:
        res["seconds"] = round(time.time() - t0, 3)


def is_agent_lost(events):
    return (len(events) >= 2 and events[-1]["name"] == "done"
            and events[-2]["name"] == "error" and events[-2]["code"] == 503
            and events[-2]["reason"] == "agent_lost")


def judge(seen, resumed, whole, tokens):
    """complete_equal, agent_lost, or what is wrong."""
    events = seen + resumed
    ids = [e["id"] for e in events]
    if None in ids:
        return "unequal: an event without id"
    if len(set(ids)) != len(ids):
        return f"unequal: {len(ids) - len(set(ids))} duplicate event ids"
    if ids != sorted(ids):
        return "unequal: event ids out of order"
    dones = sum(e["name"] == "done" for e in events)
    if dones != 1 or events[-1]["name"] != "done":
        return f"incomplete: {dones} done events" + ("" if dones == 0 else ", not last")
    text = "".join(e["text"] for e in events if e["text"] is not None)
    expected = "".join(f"tok {i}" for i in range(tokens))
    if is_agent_lost(events):
        if not expected.startswith(text):
            return "unequal: text before agent_lost is not a prefix of the answer"
        return "agent_lost"
    errors = [e["code"] for e in events if e["name"] == "error"]
    if errors:
        return "error: atomic.error " + ",".join(str(c) for c in errors)
    closing = sum(e["closing"] for e in events)
    if closing != 1:
        return f"unequal: {closing} closing chunks (is_complete)"
    if [e["raw"] for e in events] != [e["raw"] for e in whole]:
        missing = len(set(e["id"] for e in whole) - set(ids))
        return (f"unequal: not the stream fetched whole ({len(events)} events, whole "
                f"{len(whole)}, {missing} missing)")
    if text != expected:
        return f"unequal: text of {len(text)} chars, expected {len(expected)}"
    return "complete_equal"


async def worker(a, kind, stop, think, results):
    while not stop():
        results.append(await one(a, kind))
        if think:
            await asyncio.sleep(think * random.uniform(0.5, 1.5))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--short", type=int, default=4)
    ap.add_argument("--long", type=int, default=12)
    ap.add_argument("--short-think-ms", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--cut-share", type=float, default=0.0)
    ap.add_argument("--tokens", type=int, default=40,
                    help="tokens of the fake upstream's long answer")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--no-resume", dest="resume", action="store_false",
                    help="cut streams are not resumed (no resume store)")
    a = ap.parse_args()
    if a.seed is not None:
        random.seed(a.seed)
    t0 = time.time()
    stop = lambda: os.path.exists(a.stop_file) or time.time() - t0 > a.max_seconds
    results = []
    tasks = [asyncio.create_task(worker(a, "short", stop, a.short_think_ms / 1000, results))
             for _ in range(a.short)]
    tasks += [asyncio.create_task(worker(a, "long", stop, 0.05, results))
              for _ in range(a.long)]
    await asyncio.gather(*tasks)
    with open(a.out, "w") as f:
        json.dump({"seconds": round(time.time() - t0, 1), "cut_share": a.cut_share,
                   "requests": results}, f)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
