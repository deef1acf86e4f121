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

Usage: load.py --port PORT --stop-file FILE --out REPORT.json
              [--short N] [--long N] [--short-think-ms MS] [--timeout S] [--max-seconds S]
Workers start requests until FILE exists (or --max-seconds pass), then the requests in
flight finish (each bounded by --timeout) and the report is written. Exit 0 always once
the report is written; the judge is scripts/fleet/report.py.

A later resume step hooks in at `on_cut` below: a stream without `done` whose response
carried an x-stream-id would be resumed there (GET /agent/streams/{id} with
Last-Event-ID) and judged complete and equal; until agentd resumes streams, a cut
stream is only counted.
"""
import argparse
import asyncio
import json
import os
import random
import sys
import time

ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    return "0" + "".join(random.choice(ULID_CHARS) for _ in range(25))


class Cut(Exception):
    """The connection ended before the response did."""


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


async def one(port, kind, timeout):
    prompt = "[[tokens=1]] hi" if kind == "short" else "a long answer please"
    body = json.dumps({"query": {"id": ulid(), "prompt": prompt}}).encode()
    rec = {"kind": kind, "status": None, "done": False, "errors": [], "end": None,
           "served_by": None, "events": 0, "start": time.time()}
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /agent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Accept: text/event-stream\r\nConnection: close\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise Cut("closed before a status line")
            rec["status"] = int(status_line.split()[1])
            headers = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            rec["served_by"] = headers.get("x-served-by")
            rec["stream_id"] = headers.get("x-stream-id")
            buf = b""
            try:
                async for data in read_body(reader, headers):
                    buf += data
                    while b"\n\n" in buf:
                        block, buf = buf.split(b"\n\n", 1)
                        name, payload = None, None
                        for ln in block.split(b"\n"):
                            if ln.startswith(b"event:"):
                                name = ln[6:].strip().decode()
                            elif ln.startswith(b"data:"):
                                payload = ln[5:].strip()
                        if name is None and payload is None:
                            continue
                        rec["events"] += 1
                        if rec["done"]:
                            rec["errors"].append("event_after_done")
                        if name == "done":
                            rec["done"] = True
                        elif name == "error":
                            try:
                                code = json.loads(payload)["content"]["error_code"]
                            except (ValueError, KeyError, TypeError):
                                code = "unparsed"
                            rec["errors"].append(code)
                rec["end"] = "complete" if rec["done"] else "eof_without_done"
            except (Cut, asyncio.IncompleteReadError) as e:
                rec["end"] = "cut: " + (str(e) if isinstance(e, Cut) else "closed mid-chunk")
    except TimeoutError:
        rec["end"] = "timeout (hung)"
    except Cut as e:
        rec["end"] = "cut: " + str(e)
    except (ConnectionError, OSError) as e:
        rec["end"] = "connection: " + type(e).__name__
    finally:
        if writer is not None:
            writer.close()
    rec["seconds"] = round(time.time() - rec["start"], 3)
    if rec["status"] == 200 and not rec["done"]:
        await on_cut(rec)
    return rec


async def on_cut(rec):
    """Hook for the resume step (issue: resumable streams): resume rec['stream_id']
    through the balancer here once agentd serves GET /agent/streams/{id}."""
    rec["resumed"] = None


async def worker(port, kind, stop, think, timeout, results):
    while not stop():
        results.append(await one(port, kind, timeout))
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
    a = ap.parse_args()
    t0 = time.time()
    stop = lambda: os.path.exists(a.stop_file) or time.time() - t0 > a.max_seconds
    results = []
    tasks = [asyncio.create_task(worker(a.port, "short", stop, a.short_think_ms / 1000,
                                        a.timeout, results)) for _ in range(a.short)]
    tasks += [asyncio.create_task(worker(a.port, "long", stop, 0.05, a.timeout, results))
              for _ in range(a.long)]
    await asyncio.gather(*tasks)
    with open(a.out, "w") as f:
        json.dump({"seconds": round(time.time() - t0, 1), "requests": results}, f)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
