#!/usr/bin/env python3
"""Summarises a hostile.sh run: reads the JSON line each step wrote into a results
folder, prints the figures, and judges normal traffic under the slowloris run against
its baseline. Exits 1 when any step reported a failure or a step is missing.

    summary.py RESULTS_DIR [--p99-factor F] [--p99-slack-ms MS]
"""

import argparse
import json
import pathlib
import sys

STEPS = [
    "baseline",
    "slowloris",
    "during_slowloris",
    "rapid_reset",
    "made_you_reset",
    "paced_reset",
    "continuation_flood",
    "after",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("--p99-factor", type=float, default=10.0)
    ap.add_argument("--p99-slack-ms", type=float, default=100.0)
    a = ap.parse_args()
    d = pathlib.Path(a.results)
    results, failures = {}, []
    for step in STEPS:
        f = d / f"{step}.json"
        try:
            results[step] = json.loads(f.read_text().strip().splitlines()[-1])
        except (OSError, IndexError, json.JSONDecodeError):
            failures.append(f"{step}: no result")
    for step, r in results.items():
        failures += [f"{step}: {x}" for x in r.get("failures", [])]

    base, during = results.get("baseline"), results.get("during_slowloris")
    if base and during:
        bound = base["p99_ms"] * a.p99_factor + a.p99_slack_ms
        if during["errors"] or during["non_2xx"]:
            failures.append(
                f"normal traffic during slowloris: {during['errors']} errors, "
                f"{during['non_2xx']} non-2xx of {during['requests']}"
            )
        if during["p99_ms"] > bound:
            failures.append(
                f"normal traffic p99 {during['p99_ms']} ms during slowloris "
                f"(baseline {base['p99_ms']} ms, bound {bound:.1f} ms)"
            )
        if base["errors"] or base["non_2xx"]:
            failures.append("normal traffic failed before any attack")

    print("\n== hostile clients: figures")
    if base:
        print(f"normal traffic, baseline      : {base['requests']} requests, "
              f"p50 {base['p50_ms']} ms, p99 {base['p99_ms']} ms, max {base['max_ms']} ms")
    if during:
        print(f"normal traffic, slowloris     : {during['requests']} requests, "
              f"{during['errors']} errors, {during['non_2xx']} non-2xx, "
              f"p50 {during['p50_ms']} ms, p99 {during['p99_ms']} ms, max {during['max_ms']} ms")
    s = results.get("slowloris")
    if s:
        print(f"slowloris (slowhttptest)      : {s['connections']} connections at {s['rate_per_s']}/s, "
              f"header timeout {s['header_timeout_ms']} ms: at most {s['max_connected']} held "
              f"(bound {s['max_connected_bound']}), ended in {s['seconds']} s: {s['slowhttptest_exit']}")
    for step in ("rapid_reset", "made_you_reset", "paced_reset"):
        r = results.get(step)
        if r:
            g = r["goaway"]
            said = f"GOAWAY {g['error']} {g['debug']!r} after {r['goaway_after_ms']} ms" if g else "no GOAWAY"
            print(f"{step:<30}: {r['streams_opened_and_reset']} streams on {r['path']}; {said}, "
                  f"closed {r['closed_by_server']}; server CPU {r['server_cpu_seconds_during']} s during, "
                  f"{r['server_cpu_seconds_second_after']} s the second after; RSS MiB "
                  f"{' -> '.join(map(str, r['server_rss_mib']))}")
    c = results.get("continuation_flood")
    if c:
        g = c["goaway"]
        said = f"GOAWAY {g['error']} {g['debug']!r} after {c['goaway_after_ms']} ms" if g else "no GOAWAY"
        print(f"continuation_flood            : {c['continuation_frames_sent']} frames, "
              f"{c['header_bytes_sent']} header bytes sent; {said}, closed {c['closed_by_server']}; "
              f"server CPU {c['server_cpu_seconds']} s; RSS MiB {' -> '.join(map(str, c['server_rss_mib']))}")
    after = results.get("after")
    if after:
        print(f"after everything              : /health/live {after.get('health_live')}, "
              f"server alive {after.get('alive')}, RSS {after.get('rss_mib')} MiB")
    if failures:
        print("\n== FAILED")
        for f in failures:
            print(f"  - {f}")
        return 1
    print("\n== every defence held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
