#!/usr/bin/env python3
"""Summarizes scripts/bench/proxy.sh's records as Markdown.

Usage: proxy-report.py RECORDS.jsonl CONNECTIONS

Medians over repetitions per scenario, then what they mean: the latency agentd adds
(1 connection), throughput through agentd against the Python server alone, and how
many Python replicas one agentd core can front. Standard library only.
"""
import json
import statistics
import sys


def main() -> int:
    path, conns = sys.argv[1], sys.argv[2]
    by = {}
    for line in open(path):
        if line.strip():
            r = json.loads(line)
            by.setdefault(r["scenario"], []).append(r)

    def med(scen, key):
        vals = [r[key] for r in by.get(scen, []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    order = ["python-c1", "proxy-c1", f"python-c{conns}", f"proxy-c{conns}"]
    order += sorted(s for s in by if s.startswith(f"proxy-c{conns}-r"))
    order += [s for s in by if s.startswith(("proxy-replay", "proxy-echo"))]
    print("| scenario | reps | req/s | p50 ms | p99 ms | measured process: CPU µs/req (share of a core) "
          "| upstream CPU µs/req | errors | other load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in order:
        if s not in by:
            continue
        errors = sum(r.get("non_2xx", 0) + r.get("socket_errors", 0) for r in by[s])
        util = med(s, "server_cpu_util")
        up = med(s, "others_cpu_us_per_req") if not s.startswith("python") else None
        print(f"| `{s}` | {len(by[s])} | {fmt(med(s, 'rps'), ',.0f')} "
              f"| {fmt(med(s, 'p50_us') and med(s, 'p50_us') / 1000, '.2f')} "
              f"| {fmt(med(s, 'p99_us') and med(s, 'p99_us') / 1000, '.2f')} "
              f"| {fmt(med(s, 'cpu_us_per_req'), '.1f')} ({fmt(util and util * 100, '.0f')}%) "
              f"| {fmt(up, '.1f')} | {errors} | {fmt(med(s, 'other_cpu_util') and med(s, 'other_cpu_util') * 100, '.0f')}% |")
    print()
    p1, x1 = med("python-c1", "p50_us"), med("proxy-c1", "p50_us")
    p99, x99 = med("python-c1", "p99_us"), med("proxy-c1", "p99_us")
    if None not in (p1, x1, p99, x99):
        print(f"- Latency agentd adds (1 connection, one request at a time): "
              f"p50 {(x1 - p1) / 1000:+.2f} ms ({p1 / 1000:.2f} → {x1 / 1000:.2f}), "
              f"p99 {(x99 - p99) / 1000:+.2f} ms ({p99 / 1000:.2f} → {x99 / 1000:.2f}).")
    pr, xr = med(f"python-c{conns}", "rps"), med(f"proxy-c{conns}", "rps")
    if pr and xr:
        print(f"- Throughput at {conns} connections: Python alone {pr:,.0f} req/s, through agentd "
              f"{xr:,.0f} req/s ({xr / pr * 100:.0f}%).")
    py_util = med(f"python-c{conns}", "server_cpu_util") or 1.0
    py_per_core = pr / py_util if pr else None
    for prefix, what in (("proxy-replay", "a cheap upstream answering like the reference"),
                         ("proxy-echo", "agentd's echo agent, 3 events in one write")):
        sat = [s for s in by if s.startswith(prefix)]
        if not (sat and py_per_core):
            continue
        rps, util = med(sat[0], "rps"), med(sat[0], "server_cpu_util")
        if rps and util:
            per_core = rps / util
            print(f"- In front of {what}: {rps:,.0f} req/s using {util * 100:.0f}% of agentd's core, "
                  f"{per_core:,.0f} req/s per core; one Python replica serves {py_per_core:,.0f} req/s "
                  f"per core, so one agentd core can front about {per_core / py_per_core:.0f} of them.")
    py_cpu, px_cpu = med(f"python-c{conns}", "cpu_us_per_req"), med(f"proxy-c{conns}", "cpu_us_per_req")
    if py_cpu and px_cpu:
        print(f"- CPU per request at one replica's load: Python {py_cpu:,.0f} µs, agentd relaying it "
              f"{px_cpu:,.1f} µs (≈ {py_cpu / px_cpu:.0f} replicas per agentd core; a lower bound: "
              f"a lightly loaded proxy wakes once per small upstream write, a busy one batches).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
