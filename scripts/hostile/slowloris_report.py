#!/usr/bin/env python3
"""Reads slowhttptest's CSV (`-g -o PREFIX` writes PREFIX.csv) for a slow-headers run
and checks the server's defence: every connection closed, the service available
throughout, and never more connections held open than the opening rate allows when
each is cut within the header timeout + 1 s.

Prints one JSON line of figures; exits 1 when the defence failed.

    slowloris_report.py CSV --connections C --rate R --header-timeout-ms T
"""

import argparse
import csv
import json
import math
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--connections", type=int, required=True, help="slowhttptest -c")
    ap.add_argument("--rate", type=int, required=True, help="slowhttptest -r")
    ap.add_argument("--header-timeout-ms", type=int, required=True, help="HEADER_READ_TIMEOUT")
    ap.add_argument("--stdout", help="slowhttptest's own output, for its exit status line")
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        rows = [
            {k.strip(): int(v) for k, v in r.items() if k and v not in (None, "")}
            for r in csv.DictReader(f)
        ]
    if not rows:
        print(json.dumps({"attack": "slowloris", "failures": ["empty CSV"]}))
        return 1
    # The CSV is sampled once a second: allow one more second of openings.
    held_bound = math.ceil(a.rate * (a.header_timeout_ms / 1000 + 1 + 1))
    max_connected = max(r.get("Connected", 0) for r in rows)
    unavailable = [r["Seconds"] for r in rows if r.get("Service Available", 1) == 0]
    exit_line = ""
    if a.stdout:
        with open(a.stdout, errors="replace") as f:
            for line in f:
                line = ANSI.sub("", line)
                if "Exit status:" in line:
                    exit_line = line.split("Exit status:", 1)[1].strip()
    out = {
        "attack": "slowloris",
        "connections": a.connections,
        "rate_per_s": a.rate,
        "header_timeout_ms": a.header_timeout_ms,
        "seconds": rows[-1]["Seconds"],
        "max_connected": max_connected,
        "max_connected_bound": held_bound,
        "closed_at_end": rows[-1].get("Closed", 0),
        "unavailable_seconds": unavailable,
        "slowhttptest_exit": exit_line,
    }
    failures = []
    if max_connected > held_bound:
        failures.append(
            f"{max_connected} slow connections held at once (bound {held_bound}): "
            "they are not cut within the header timeout + 1 s"
        )
    if unavailable:
        failures.append(f"service unavailable at seconds {unavailable}")
    if exit_line and "No open connections left" not in exit_line:
        failures.append(f"slowhttptest ended with: {exit_line}")
    out["failures"] = failures
    print(json.dumps(out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
