#!/usr/bin/env python3
"""Normal traffic for a fixed time: GET a path at a steady rate, each request on a new
HTTP/1.1 connection (so accepting is measured too), and report latency percentiles.

It paces requests (one every 1/rate s) instead of flooding, so its figures are the
latency a well-behaved client sees, not the server's throughput. A request slower
than the pace delays the next one (no catch-up burst). Prints one JSON line.

    normal_traffic.py --url http://127.0.0.1:PORT [--path /health/live] [--seconds S] [--rate R]
"""

import argparse
import http.client
import json
import sys
import time

from h2raw import host_port


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-len(sorted_values) * q // 1))))
    return sorted_values[rank - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="base URL, http://host:port")
    ap.add_argument("--path", default="/health/live")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--timeout", type=float, default=5.0, help="per request")
    a = ap.parse_args()
    host, port = host_port(a.url)
    lat_ms, errors, non_2xx = [], 0, 0
    start = time.monotonic()
    end = start + a.seconds
    next_at = start
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            c = http.client.HTTPConnection(host, port, timeout=a.timeout)
            c.request("GET", a.path, headers={"Connection": "close"})
            r = c.getresponse()
            r.read()
            c.close()
            if not 200 <= r.status < 300:
                non_2xx += 1
            lat_ms.append((time.monotonic() - t0) * 1e3)
        except OSError:
            errors += 1
        next_at = max(next_at + 1.0 / a.rate, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))
    lat_ms.sort()
    out = {
        "requests": len(lat_ms) + errors,
        "errors": errors,
        "non_2xx": non_2xx,
        "p50_ms": round(percentile(lat_ms, 0.50) or 0, 3),
        "p99_ms": round(percentile(lat_ms, 0.99) or 0, 3),
        "max_ms": round(lat_ms[-1], 3) if lat_ms else None,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
