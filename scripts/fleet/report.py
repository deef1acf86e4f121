#!/usr/bin/env python3
"""Judges the fleet drill's load reports (scripts/fleet/load.py output) and prints a
table; writes a Markdown summary with --md.

Usage: report.py --rolling ROLLING.json --kill KILL.json --killed SERVER [--md OUT.md]

Rolling restarts pass with 0 requests without a 2xx status, 0 streams without `done`,
0 streams carrying `atomic.error` and none hung. The SIGKILL phase passes when nothing
hung, every request not served by the killed replica completed with `done`, and every
stream without `done` was one the killed replica was serving (a killed process cannot
send `done`: its streams are cut, and the report says how the client saw each end).
Exit 0 passed, 1 failed.
"""
import argparse
import collections
import json
import sys


def summary(path):
    reqs = json.load(open(path))["requests"]
    s = {
        "requests": len(reqs),
        "short": sum(r["kind"] == "short" for r in reqs),
        "long": sum(r["kind"] == "long" for r in reqs),
        "non_2xx": collections.Counter(str(r["status"]) for r in reqs
                                       if r["status"] is None or not 200 <= r["status"] < 300),
        # streams: answers that began (200); a non-2xx answer is counted above
        "without_done": collections.Counter(r["end"] for r in reqs
                                            if r["status"] == 200 and not r["done"]),
        "atomic_error": collections.Counter(str(c) for r in reqs for c in r["errors"]),
        "hung": sum((r["end"] or "").startswith("timeout") for r in reqs),
        "served_by": collections.Counter(r["served_by"] or "-" for r in reqs),
        "longest_s": max((r["seconds"] for r in reqs), default=0),
    }
    return s, reqs


def fmt(c):
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "0"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rolling", required=True)
    ap.add_argument("--kill", required=True)
    ap.add_argument("--killed", required=True)
    ap.add_argument("--md")
    a = ap.parse_args()
    ok = True
    lines = ["| phase | requests (short/long) | non-2xx | streams without `done` | `atomic.error` by code | hung | longest s |",
             "|---|---|---|---|---|---|---|"]
    for name, path in (("rolling restarts", a.rolling), ("SIGKILL", a.kill)):
        s, reqs = summary(path)
        lines.append(f"| {name} | {s['requests']} ({s['short']}/{s['long']}) | {fmt(s['non_2xx'])} | "
                     f"{fmt(s['without_done'])} | {fmt(s['atomic_error'])} | {s['hung']} | {s['longest_s']} |")
        problems = []
        if s["hung"]:
            problems.append(f"{s['hung']} hung")
        if name == "rolling restarts":
            if sum(s["non_2xx"].values()):
                problems.append("non-2xx answers")
            if sum(s["without_done"].values()):
                problems.append("streams without done")
            if sum(s["atomic_error"].values()):
                problems.append("streams with atomic.error")
        else:
            bad = [r for r in reqs if r["status"] == 200 and not r["done"]
                   and r["served_by"] != a.killed]
            if sum(s["non_2xx"].values()):
                problems.append("non-2xx answers")
            if bad:
                problems.append(f"{len(bad)} streams without done not served by {a.killed}: "
                                + fmt(collections.Counter(r["end"] for r in bad)))
            cut = sum(1 for r in reqs if r["status"] == 200 and not r["done"])
            lines.append(f"|  | cut on {a.killed}: {cut} | | | | | |")
        if problems:
            ok = False
            lines.append(f"| FAILED | {'; '.join(problems)} | | | | | |")
        print(f"{name}: served by {fmt(s['served_by'])}", file=sys.stderr)
    text = "\n".join(lines)
    print(text)
    if a.md:
        open(a.md, "w").write(text + "\n")
    print("fleet drill: " + ("passed" if ok else "FAILED"), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
