#!/usr/bin/env python3
"""Run one load command against a server process and measure the server meanwhile.

    measure.py --pid PID [--meta key=value ...] -- LOAD COMMAND ...

While LOAD COMMAND runs (wrk with scripts/bench/wrk.lua, or scripts/bench/hold.py) this
samples the server's process tree (PID and all its descendants, e.g. Node cluster
workers) every --interval seconds:

* CPU: utime+stime from /proc/<pid>/stat for every process of the tree, plus the root's
  cutime+cstime (reaped children), read before and after the load; the delta divided by
  the requests the load tool completed gives CPU microseconds per request.
* memory: the tree's resident set (VmRSS, i.e. /proc/<pid>/statm's second field), summed
  over the tree at each sample; the peak and the value just before the load are kept.

* other load: the whole machine's busy CPU time (/proc/stat) minus the server's,
  the load tool's and this script's own; anything else running (a compiler, say) shows
  up here, and the run can be flagged or repeated (--max-other).

* an upstream (--upstream-pid, e.g. the fake LLM upstream behind the server): its tree's
  CPU time is read the same way, reported as upstream_cpu_s and not counted as other load.

The load tool prints one line "WRKJSON {...}", "HOLDJSON {...}" or "LOADJSON {...}"
(wrk with wrk.lua, hold.py, the loadgen binary); its fields are merged into the record. One JSON record is printed on stdout; a human-readable progress line
goes to stderr. Exit status: the load tool's (2 when it printed no result line).
Standard library only.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(root):
    """root and all its descendants that are alive now."""
    seen, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(children(p))
    return seen


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # the command name may hold spaces and parentheses: split after the last ')'
    return s[s.rindex(")") + 2:].split()


def cpu_ticks(root):
    total = 0
    for pid in tree(root):
        try:
            f = stat_fields(pid)
        except (OSError, ValueError):
            continue
        # fields after the name start at field 3 (state): utime is 14, stime 15,
        # cutime 16, cstime 17 -> indexes 11..14 here.
        total += int(f[11]) + int(f[12])
        if pid == root:
            total += int(f[13]) + int(f[14])
    return total


def machine_busy_ticks():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    # user nice system idle iowait irq softirq: tasks' utime+stime include the irq and
    # softirq ticks spent in their context, so those count as busy too
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return user + nice + system + irq + softirq


def rusage_s(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def rss_bytes(root):
    pids = tree(root)
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total, len(pids)


class Sampler(threading.Thread):
    def __init__(self, root, interval):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak, self.nprocs, self.samples = 0, 0, 0
        self.stop = threading.Event()

    def run(self):
        while True:
            rss, n = rss_bytes(self.root)
            self.samples += 1
            if rss > self.peak:
                self.peak = rss
            self.nprocs = max(self.nprocs, n)
            if self.stop.wait(self.interval):
                break


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pid", type=int, required=True, help="the server's PID")
    ap.add_argument("--interval", type=float, default=0.05, help="RSS sampling period (s)")
    ap.add_argument("--upstream-pid", type=int, help="an upstream process whose CPU is reported apart")
    ap.add_argument("--meta", action="append", default=[], help="key=value copied into the record")
    ap.add_argument("--log", help="append the load tool's own output here")
    ap.add_argument("--max-other", type=float,
                    help="exit 5 when other processes used more than this many cores on average")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no load command")
    if not os.path.exists(f"/proc/{a.pid}"):
        print(f"measure.py: server PID {a.pid} is not running", file=sys.stderr)
        return 3

    rec = {}
    for kv in a.meta:
        k, _, v = kv.partition("=")
        rec[k] = int(v) if v.isdigit() else v

    rss_before, _ = rss_bytes(a.pid)
    sampler = Sampler(a.pid, a.interval)
    sampler.start()
    cpu0 = cpu_ticks(a.pid)
    up0 = cpu_ticks(a.upstream_pid) if a.upstream_pid else 0
    busy0, client0, self0 = machine_busy_ticks(), rusage_s(resource.RUSAGE_CHILDREN), rusage_s(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.monotonic() - t0
    cpu1 = cpu_ticks(a.pid)
    up1 = cpu_ticks(a.upstream_pid) if a.upstream_pid else 0
    busy1, client1, self1 = machine_busy_ticks(), rusage_s(resource.RUSAGE_CHILDREN), rusage_s(resource.RUSAGE_SELF)
    sampler.stop.set()
    sampler.join()
    rss_after, _ = rss_bytes(a.pid)
    alive = os.path.exists(f"/proc/{a.pid}")

    out = proc.stdout.decode("utf-8", "replace")
    if a.log:
        with open(a.log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out}\n")
    result = None
    for line in out.splitlines():
        for tag in ("WRKJSON ", "HOLDJSON ", "LOADJSON "):
            if line.startswith(tag):
                result = json.loads(line[len(tag):])
    if result is None:
        sys.stderr.write(out[-2000:])
        print(f"measure.py: the load tool printed no result (exit {proc.returncode})", file=sys.stderr)
        return proc.returncode or 2
    rec.update(result)

    cpu_s = (cpu1 - cpu0) / TICK
    client_s = client1 - client0
    upstream_s = (up1 - up0) / TICK
    other_s = max(0.0, (busy1 - busy0) / TICK - cpu_s - client_s - upstream_s - (self1 - self0))
    dur_s = result.get("duration_us", wall * 1e6) / 1e6
    reqs = result.get("requests", 0)
    socket_errors = sum(result.get(k, 0) for k in
                        ("connect_errors", "read_errors", "write_errors", "timeout_errors"))
    rec.update({
        "wall_s": round(wall, 3),
        # hold.py reports its own rate (its burst phase); wrk's is requests / duration
        "rps": result["rps"] if "rps" in result else (round(reqs / dur_s, 1) if dur_s > 0 else 0.0),
        "server_cpu_s": round(cpu_s, 3),
        "server_cpu_util": round(cpu_s / wall, 3) if wall > 0 else 0.0,
        "cpu_us_per_req": round(cpu_s * 1e6 / reqs, 2) if reqs else None,
        "client_cpu_s": round(client_s, 3),
        **({"upstream_cpu_s": round(upstream_s, 3)} if a.upstream_pid else {}),
        "other_cpu_util": round(other_s / wall, 3) if wall > 0 else 0.0,
        "rss_before_mib": round(rss_before / 2**20, 2),
        "peak_rss_mib": round(max(sampler.peak, rss_after) / 2**20, 2),
        "rss_after_mib": round(rss_after / 2**20, 2),
        "rss_samples": sampler.samples,
        "server_procs": sampler.nprocs,
        "non_2xx": result.get("status_errors", 0),
        "socket_errors": socket_errors,
        "server_alive": alive,
        "load_rc": proc.returncode,
    })
    print(json.dumps(rec, sort_keys=True))
    p99 = result.get("p99_us", 0) / 1000
    cpu = rec["cpu_us_per_req"]
    print(f"    {rec['rps']:>10,.0f} req/s  p99 {p99:7.2f} ms  "
          f"cpu {cpu if cpu is not None else float('nan'):7.1f} µs/req  "
          f"({rec['server_cpu_util'] * 100:.0f}% of a core)  peak rss {rec['peak_rss_mib']:.1f} MiB  "
          f"non-2xx {rec['non_2xx']}  socket errors {socket_errors}"
          + (f"  OTHER LOAD {rec['other_cpu_util'] * 100:.0f}% of a core" if rec["other_cpu_util"] >= 0.05 else ""),
          file=sys.stderr)
    if not alive:
        print("measure.py: the server died during the run", file=sys.stderr)
        return 4
    if proc.returncode == 0 and a.max_other is not None and rec["other_cpu_util"] > a.max_other:
        return 5
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
