"""Figures about another process read from /proc (Linux): CPU time, resident memory,
open descriptors; and a one-shot health probe.

Read-only: it never signals or changes the process it looks at.
"""

import http.client
import os

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid`, in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def live_status(host: str, port: int, timeout: float = 3.0):
    """Status of GET /health/live over HTTP/1.1 on a new connection; None on failure."""
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("GET", "/health/live")
        status = c.getresponse().status
        c.close()
        return status
    except OSError:
        return None


def main() -> int:
    """`procstat.py --pid P --url U`: one JSON line saying whether the server is alive
    and healthy now; exits 1 when it is not."""
    import argparse
    import json

    from h2raw import host_port

    ap = argparse.ArgumentParser(description="Is agentd alive and serving?")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--url", required=True)
    a = ap.parse_args()
    host, port = host_port(a.url)
    is_alive = alive(a.pid)
    status = live_status(host, port)
    out = {
        "alive": is_alive,
        "health_live": status,
        "rss_mib": round(rss_bytes(a.pid) / 2**20, 1) if is_alive else None,
        "failures": [],
    }
    if not is_alive:
        out["failures"].append("agentd is not running")
    if status != 200:
        out["failures"].append(f"GET /health/live answered {status}")
    print(json.dumps(out))
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
