#!/usr/bin/env python3
"""Judges the fleet drill's load reports (scripts/fleet/load.py output) and prints a
table; writes a Markdown summary with --md.

Usage: report.py --rolling ROLLING.json --kill KILL.json --killed SERVER
                 [--resume RESUME.json] [--md OUT.md]

Streams cut by the client on purpose (load.py --cut-share) are not counted as streams
without `done`: they are judged by their resume. Every resumed stream (cut by the
client, or by the server) must come back complete and equal (load.py's judge: the
events seen plus the events resumed are the answer's events exactly once, byte for
byte as the stream fetched whole, one `done`, the upstream's text), except that a
stream whose replica was SIGKILLed may end with `atomic.error` 503 agent_lost (or 404
stream_not_found, when the replica died before its first events reached Redis): these
are counted by code. A resume answered with another error status, cut past load.py's
attempts, or hung fails.

Rolling restarts and the resume phase pass with 0 requests without a 2xx status, 0
streams without `done`, 0 streams carrying `atomic.error`, none hung, and every resume
complete and equal. The SIGKILL phase passes when nothing hung, every request not
served by the killed replica completed with `done` (or was cut by the client and
resumed complete and equal), and every stream without `done` was one the killed
replica was serving (a killed process cannot send `done`: its streams are cut, and the
report says how the client saw each end).
Exit 0 passed, 1 failed.
"""
import argparse
import collections
import json
import sys


# How a resume of a stream whose replica was SIGKILLed may end: the reader is told the
# answer is lost (atomic.error 503 agent_lost, then done), or, when the replica died
# before its first events reached Redis, the stream is unknown.
LOST_WITH_ITS_REPLICA = ("agent_lost", "resume answered 404 stream_not_found")


def summary(path):
    reqs = json.load(open(path))["requests"]
    resumed = [r for r in reqs if "resume" in r]
    s = {
        "requests": len(reqs),
        "short": sum(r["kind"] == "short" for r in reqs),
        "long": sum(r["kind"] == "long" for r in reqs),
        "non_2xx": collections.Counter(str(r["status"]) for r in reqs
                                       if r["status"] is None or not 200 <= r["status"] < 300),
        # streams: answers that began (200); a non-2xx answer is counted above; a
        # stream the client cut on purpose is judged by its resume
        "without_done": collections.Counter(r["end"] for r in reqs
                                            if r["status"] == 200 and not r["done"]
                                            and not r.get("client_cut")),
        "atomic_error": collections.Counter(str(c) for r in reqs for c in r["errors"]),
        "hung": sum((r["end"] or "").startswith("timeout") for r in reqs)
                + sum((r["resume"]["outcome"] or "").startswith("timeout") for r in resumed),
        "served_by": collections.Counter(r["served_by"] or "-" for r in reqs),
        "longest_s": max((r["seconds"] for r in reqs), default=0),
        "client_cut": sum(bool(r.get("client_cut")) for r in reqs),
        "resumed": len(resumed),
        "outcomes": collections.Counter(r["resume"]["outcome"] for r in resumed),
        # resumes answered by another replica than the one that ran the answer
        "remote": sum(1 for r in resumed
                      if any(s and s != r["served_by"] for s in r["resume"]["served_by"])),
        "resume_attempts": sum(r["resume"]["attempts"] for r in resumed),
    }
    return s, reqs


def fmt(c):
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "0"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rolling", required=True)
    ap.add_argument("--kill", required=True)
    ap.add_argument("--killed", required=True)
    ap.add_argument("--resume")
    ap.add_argument("--md")
    a = ap.parse_args()
    ok = True
    lines = ["| phase | requests (short/long) | non-2xx | streams without `done` | `atomic.error` by code "
             "| hung | resumed (client cut / answered by another replica) | complete and equal "
             "| lost with the killed replica, by code | longest s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    phases = [("rolling restarts", a.rolling), ("SIGKILL", a.kill)]
    if a.resume:
        phases.append(("resume", a.resume))
    for name, path in phases:
        s, reqs = summary(path)
        resumed = [r for r in reqs if "resume" in r]
        lost_ok = [r for r in resumed if r["resume"]["outcome"] in LOST_WITH_ITS_REPLICA
                   and name == "SIGKILL" and r["served_by"] == a.killed]
        bad_resumes = [r for r in resumed if r["resume"]["outcome"] != "complete_equal"
                       and r not in lost_ok]
        equal = s["outcomes"]["complete_equal"]
        judged = s["resumed"] - len(lost_ok)
        pct = f"{100 * equal / judged:.1f}%" if judged else "-"
        lines.append(f"| {name} | {s['requests']} ({s['short']}/{s['long']}) | {fmt(s['non_2xx'])} | "
                     f"{fmt(s['without_done'])} | {fmt(s['atomic_error'])} | {s['hung']} | "
                     f"{s['resumed']} ({s['client_cut']} / {s['remote']}) | {equal} of {judged} ({pct}) | "
                     f"{fmt(collections.Counter(r['resume']['outcome'] for r in lost_ok))} | "
                     f"{s['longest_s']} |")
        problems = []
        if s["hung"]:
            problems.append(f"{s['hung']} hung")
        if sum(s["non_2xx"].values()):
            problems.append("non-2xx answers")
        if bad_resumes:
            problems.append(f"{len(bad_resumes)} resumes not complete and equal: "
                            + fmt(collections.Counter(r["resume"]["outcome"] for r in bad_resumes)))
        if name == "SIGKILL":
            bad = [r for r in reqs if r["status"] == 200 and not r["done"]
                   and not r.get("client_cut") and r["served_by"] != a.killed]
            if bad:
                problems.append(f"{len(bad)} streams without done not served by {a.killed}: "
                                + fmt(collections.Counter(r["end"] for r in bad)))
            cut = sum(1 for r in reqs if r["status"] == 200 and not r["done"]
                      and not r.get("client_cut"))
            lines.append(f"|  | cut on {a.killed}: {cut} | | | | | | | | |")
        else:
            if sum(s["without_done"].values()):
                problems.append("streams without done")
            if sum(s["atomic_error"].values()):
                problems.append("streams with atomic.error")
        if problems:
            ok = False
            lines.append(f"| FAILED | {'; '.join(problems)} | | | | | | | | |")
            for r in bad_resumes[:5]:
                print(f"{name}: {r.get('stream_id')} served by {r['served_by']}, "
                      f"resume {r['resume']}", file=sys.stderr)
        print(f"{name}: served by {fmt(s['served_by'])}; resume outcomes {fmt(s['outcomes'])}, "
              f"{s['resume_attempts']} resume connections", file=sys.stderr)
    text = "\n".join(lines)
    print(text)
    if a.md:
        open(a.md, "w").write(text + "\n")
    print("fleet drill, load and resume targets: " + ("passed" if ok else "FAILED"), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
