#!/usr/bin/env python3
"""The sse-10k client: many concurrent streaming connections held open at once.

    hold.py --port P [--host 127.0.0.1] [--connections 10000] [--hold 10]
            [--path /agent] [--body FILE] [--open-concurrency 256]

What it measures, and why this way: the echo agent answers at once, so an SSE response
from it is open for microseconds, and no client can keep 10,000 of them open. What a
server pays for 10,000 concurrent streaming clients is then (a) the connections
themselves, held open between streams, and (b) 10,000 streams started at the same
moment. So, in three phases:

1. open: N keep-alive connections (at most --open-concurrency connecting at a time, to
   stay inside the listen backlog), each sending POST /agent and reading its SSE response
   to the end (status 200 and an `event: done`);
2. hold: all N connections stay open, idle, for --hold seconds, while the harness
   samples the server's resident memory (peak RSS, and RSS per held connection);
3. burst: every connection sends its second request at once; all N responses are read.
   The burst's streams/s and latency percentiles are reported (latencies here include
   this Python client's own queueing: compare servers with them, not with wrk's numbers).

A connection the server closed during the hold counts as a read error in the burst.
Prints one line "HOLDJSON {...}" (see scripts/bench/measure.py). Standard library only.
"""

import argparse
import asyncio
import json
import resource
import socket
import sys
import time


class Failure(Exception):
    pass


def build_request(host, port, path, body):
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader):
    """Read one HTTP/1.1 response; return (status, body, keep_alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise Failure("bad status line")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip().lower()
    chunks = []
    if headers.get("transfer-encoding", "").endswith("chunked"):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # trailers, if any, end with an empty line
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            chunk = await reader.readexactly(size + 2)
            chunks.append(chunk[:-2])
    elif "content-length" in headers:
        chunks.append(await reader.readexactly(int(headers["content-length"])))
    else:
        chunks.append(await reader.read())  # body ends with the connection
        return status, b"".join(chunks), False
    keep_alive = headers.get("connection", "") != "close"
    return status, b"".join(chunks), keep_alive


class Conn:
    __slots__ = ("reader", "writer", "open")

    def __init__(self, reader, writer):
        self.reader, self.writer, self.open = reader, writer, True


class Stats:
    def __init__(self):
        self.ok = 0
        self.non_2xx = 0
        self.bad_body = 0
        self.connect_errors = 0
        self.read_errors = 0
        self.timeouts = 0
        self.latencies = []


async def one_stream(conn, request, stats, timeout, record):
    t0 = time.perf_counter()
    try:
        conn.writer.write(request)
        status, body, keep_alive = await asyncio.wait_for(read_response(conn.reader), timeout)
    except asyncio.TimeoutError:
        stats.timeouts += 1
        conn.open = False
        return
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, Failure):
        stats.read_errors += 1
        conn.open = False
        return
    if record:
        stats.latencies.append(time.perf_counter() - t0)
    if not 200 <= status < 300:
        stats.non_2xx += 1
    elif b"event: done\n" not in body:
        stats.bad_body += 1
    else:
        stats.ok += 1
    conn.open = keep_alive


def pct(sorted_values, p):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


async def run(a):
    body = open(a.body, "rb").read() if a.body else (
        b'{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"Hello Fast Agent!"}}')
    request = build_request(a.host, a.port, a.path, body)
    conns = []
    first, burst = Stats(), Stats()
    sem = asyncio.Semaphore(a.open_concurrency)

    async def open_one():
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(a.host, a.port), a.timeout)
            except (OSError, asyncio.TimeoutError):
                first.connect_errors += 1
                return
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(reader, writer)
            await one_stream(conn, request, first, a.timeout, record=False)
            conns.append(conn)

    t0 = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(a.connections)))
    open_s = time.perf_counter() - t0
    held = [c for c in conns if c.open]
    print(f"opened {len(held)}/{a.connections} connections in {open_s:.2f}s; holding {a.hold}s",
          file=sys.stderr, flush=True)

    await asyncio.sleep(a.hold)

    t1 = time.perf_counter()
    await asyncio.gather(*(one_stream(c, request, burst, a.timeout, record=True) for c in held))
    burst_s = time.perf_counter() - t1
    total_s = time.perf_counter() - t0

    for c in conns:
        try:
            c.writer.close()
        except Exception:
            pass

    lat = sorted(burst.latencies)
    us = lambda s: int(s * 1e6)
    out = {
        "tool": "hold.py",
        "connections": a.connections,
        "held": len(held),
        "open_s": round(open_s, 3),
        "hold_s": a.hold,
        "burst_s": round(burst_s, 3),
        "duration_us": us(total_s),
        # every stream completed, both phases: the CPU per request divides by this
        "requests": first.ok + burst.ok + first.non_2xx + burst.non_2xx + first.bad_body + burst.bad_body,
        "streams_ok": first.ok + burst.ok,
        "bad_body": first.bad_body + burst.bad_body,
        "rps": round(burst.ok / burst_s, 1) if burst_s > 0 else 0.0,
        "status_errors": first.non_2xx + burst.non_2xx,
        "connect_errors": first.connect_errors,
        "read_errors": first.read_errors + burst.read_errors + first.bad_body + burst.bad_body,
        "write_errors": 0,
        "timeout_errors": first.timeouts + burst.timeouts,
        "p50_us": us(pct(lat, 50)),
        "p90_us": us(pct(lat, 90)),
        "p99_us": us(pct(lat, 99)),
        "p999_us": us(pct(lat, 99.9)),
        "lat_max_us": us(lat[-1]) if lat else 0,
        "lat_mean_us": round(us(sum(lat) / len(lat)), 1) if lat else 0,
    }
    print("HOLDJSON " + json.dumps(out), flush=True)
    return 0  # failed streams are data (counted above), not a failure of the client


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/agent")
    ap.add_argument("--body", help="request body file (JSON)")
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=10.0, help="seconds to hold them all open")
    ap.add_argument("--open-concurrency", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=60.0, help="per connect / per response (s)")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.connections + 256
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError):
            pass
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
            print(f"hold.py: open-file limit {soft} is below {want}; raise ulimit -n", file=sys.stderr)
            return 2
    return asyncio.run(run(a))


if __name__ == "__main__":
    sys.exit(main())
