#!/usr/bin/env python3
"""Samples processes' resident memory and CPU once per interval into a CSV.

    sample.py --out FILE.csv [--interval 1] --duration S NAME=PID [NAME=PID ...]

Columns: `t_s` (seconds since the first sample), then per process `NAME_rss_mib`
(VmRSS of the process and its descendants, as scripts/bench/measure.py reads it) and
`NAME_cpu_pct` (CPU time over the interval, 100 = one core). A row is flushed as it is
taken, so the file is complete up to the moment the sampler stops. It stops after S
seconds, on SIGTERM/SIGINT, or when a process disappears (exit status 3, naming it).
Reads /proc only; never signals the processes it watches.
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from measure import TICK, cpu_ticks, rss_bytes  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("procs", nargs="+", metavar="NAME=PID")
    a = ap.parse_args()
    procs = []
    for p in a.procs:
        name, _, pid = p.partition("=")
        procs.append((name, int(pid)))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    cols = ["t_s"] + [f"{n}_{c}" for n, _ in procs for c in ("rss_mib", "cpu_pct")]
    t0 = time.monotonic()
    last = {pid: cpu_ticks(pid) for _, pid in procs}
    last_t = t0
    with open(a.out, "w") as f:
        f.write(",".join(cols) + "\n")
        n = 0
        while not stop:
            now = time.monotonic()
            row = [f"{now - t0:.2f}"]
            for name, pid in procs:
                if not os.path.exists(f"/proc/{pid}"):
                    print(f"sample.py: {name} (PID {pid}) is gone", file=sys.stderr)
                    return 3
                rss, _ = rss_bytes(pid)
                ticks = cpu_ticks(pid)
                dt = now - last_t
                pct = 100.0 * (ticks - last[pid]) / TICK / dt if dt > 0 else 0.0
                last[pid] = ticks
                row += [f"{rss / 2**20:.2f}", f"{pct:.1f}"]
            last_t = now
            f.write(",".join(row) + "\n")
            f.flush()
            n += 1
            if now - t0 >= a.duration:
                break
            # Sleep to the next tick of a fixed grid, so samples do not drift.
            time.sleep(max(0.0, t0 + n * a.interval - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
