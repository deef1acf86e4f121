#!/usr/bin/env python3
"""Aggregate a scripts/bench.sh run: CSV, JSON, a Markdown table, RESULTS.md, the chart.

    report.py --raw RUN/raw.jsonl --meta RUN/meta.json --out RUN
              [--results-md benches/RESULTS.md] [--svg benches/results.svg]

Medians over repetitions per (scenario, server); agentd's ratio to each peer is taken
from the medians of the same run. Standard library only.
"""

import argparse
import csv
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot  # noqa: E402

SCENARIO_ORDER = ["health-50", "health-256", "agent-50", "agent-256", "agent-close", "openai-50", "sse-10k", "llm"]
SERVER_ORDER = ["agentd", "hyper-ceiling", "fastify", "fastify-full", "fastify-cluster"]
SUBJECT = "agentd"
LIKE_FOR_LIKE = plot.LIKE_FOR_LIKE

CSV_FIELDS = [
    "scenario", "server", "rep", "conns", "duration_s", "server_cores", "requests", "rps",
    "p50_us", "p90_us", "p99_us", "p999_us", "lat_mean_us", "lat_max_us",
    "cpu_us_per_req", "server_cpu_s", "server_cpu_util", "rss_before_mib", "peak_rss_mib",
    "rss_after_mib", "server_procs", "non_2xx", "socket_errors", "connect_errors",
    "read_errors", "write_errors", "timeout_errors", "server_alive", "wall_s",
    "held", "open_s", "burst_s", "streams_ok", "bad_body", "client_cpu_s", "other_cpu_util",
    "attempt",
]


def order(value, known):
    return (known.index(value), value) if value in known else (len(known), value)


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["server"]), []).append(r)
    summary = []
    for (scen, server), rows in sorted(groups.items(),
                                       key=lambda kv: (order(kv[0][0], SCENARIO_ORDER),
                                                       order(kv[0][1], SERVER_ORDER))):
        s = {
            "scenario": scen, "server": server, "reps": len(rows), "conns": rows[0].get("conns"),
            "rps": med(rows, "rps"), "p50_us": med(rows, "p50_us"), "p99_us": med(rows, "p99_us"),
            "cpu_us_per_req": med(rows, "cpu_us_per_req"),
            "server_cpu_util": med(rows, "server_cpu_util"),
            "peak_rss_mib": med(rows, "peak_rss_mib"),
            "non_2xx": sum(r.get("non_2xx", 0) for r in rows),
            "socket_errors": sum(r.get("socket_errors", 0) for r in rows),
            "requests": sum(r.get("requests", 0) for r in rows),
            "server_died": any(not r.get("server_alive", True) for r in rows),
        }
        if any("held" in r for r in rows):
            per_conn = [(r["peak_rss_mib"] - r["rss_before_mib"]) * 1024 / r["held"]
                        for r in rows if r.get("held")]
            s["held"] = med(rows, "held")
            s["rss_kib_per_conn"] = statistics.median(per_conn) if per_conn else None
            s["open_s"] = med(rows, "open_s")
            s["burst_s"] = med(rows, "burst_s")
        summary.append(s)
    # agentd's ratios to each peer, per scenario
    by = {(s["scenario"], s["server"]): s for s in summary}
    for s in summary:
        a = by.get((s["scenario"], SUBJECT))
        if s["server"] == SUBJECT or a is None:
            continue
        if a["rps"] and s["rps"]:
            s["agentd_rps_ratio"] = a["rps"] / s["rps"]
        if a["cpu_us_per_req"] and s["cpu_us_per_req"]:
            s["agentd_cpu_ratio"] = a["cpu_us_per_req"] / s["cpu_us_per_req"]
        if a["peak_rss_mib"] and s["peak_rss_mib"]:
            s["agentd_rss_ratio"] = a["peak_rss_mib"] / s["peak_rss_mib"]
    return summary


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{suffix}"


def ms(us):
    return "–" if us is None else f"{us / 1000:.2f}"


def ratio(s):
    parts = []
    if "agentd_rps_ratio" in s:
        parts.append(f"{s['agentd_rps_ratio']:.2f}× req/s")
    if "agentd_cpu_ratio" in s:
        parts.append(f"{s['agentd_cpu_ratio']:.2f}× CPU/req")
    return ", ".join(parts) if parts else "–"


def main_table(summary):
    out = ["| scenario | server | conns | req/s | p50 ms | p99 ms | CPU µs/req | server CPU | peak RSS MiB | non-2xx / socket errors | agentd vs this |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in summary:
        errs = f"{s['non_2xx']} / {s['socket_errors']}" + (" (died)" if s["server_died"] else "")
        name = f"**{s['server']}**" if s["server"] == SUBJECT else s["server"]
        out.append(
            f"| {s['scenario']} | {name} | {fmt(s['conns'])} | {fmt(s['rps'])} | {ms(s['p50_us'])} | "
            f"{ms(s['p99_us'])} | {fmt(s['cpu_us_per_req'], 1)} | "
            f"{fmt(None if s['server_cpu_util'] is None else s['server_cpu_util'] * 100, 0, '%')} | "
            f"{fmt(s['peak_rss_mib'], 1)} | {errs} | {ratio(s) if s['server'] != SUBJECT else '–'} |")
    return "\n".join(out)


def ratio_table(summary):
    scenarios = [x for x in dict.fromkeys(s["scenario"] for s in summary)]
    peers = sorted({s["server"] for s in summary if s["server"] != SUBJECT},
                   key=lambda x: order(x, SERVER_ORDER))
    if not any(s["server"] == SUBJECT for s in summary) or not peers:
        return ""
    by = {(s["scenario"], s["server"]): s for s in summary}
    out = ["| scenario | " + " | ".join(f"vs {p}" for p in peers) + " |",
           "|---|" + "---|" * len(peers)]
    for scen in scenarios:
        cells = [ratio(by[(scen, p)]) if (scen, p) in by else "–" for p in peers]
        out.append(f"| {scen} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def sse_table(summary):
    rows = [s for s in summary if "held" in s]
    if not rows:
        return ""
    out = ["| server | connections held | open + first stream, s | peak RSS MiB | RSS KiB per held connection | burst: streams/s | burst p99 ms | CPU µs/stream |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        out.append(f"| {s['server']} | {fmt(s['held'])} | {fmt(s['open_s'], 2)} | {fmt(s['peak_rss_mib'], 1)} | "
                   f"{fmt(s['rss_kib_per_conn'], 1)} | {fmt(s['rps'])} | {ms(s['p99_us'])} | {fmt(s['cpu_us_per_req'], 1)} |")
    return "\n".join(out)


def noise_line(meta, runs):
    """How busy the machine was with other work during the measured runs."""
    others = [r.get("other_cpu_util") for r in runs if r.get("other_cpu_util") is not None]
    if not others:
        return ""
    limit = meta.get("max_other", 0.15)
    noisy = [r for r in runs if (r.get("other_cpu_util") or 0) > limit]
    retried = sum(1 for r in runs if r.get("attempt", 1) > 1)
    line = (f"Other load (CPU used by unrelated processes during a measured run): median "
            f"{statistics.median(others) * 100:.0f}% of a core, max {max(others) * 100:.0f}%; "
            f"runs above {limit * 100:.0f}% are measured again")
    line += f" ({retried} were)" if retried else ""
    if noisy:
        line += ("; kept although the machine stayed busy: " +
                 ", ".join(f"{r['scenario']}/{r['server']}/rep {r['rep']} ({r['other_cpu_util'] * 100:.0f}%)"
                           for r in noisy))
    return line + "."


def machine_line(meta):
    return (f"{meta['nproc']} CPU(s), {meta['cpu_model']}, {meta['mem_gib']} GiB, Linux {meta['kernel']}; "
            f"wrk {meta['wrk']}, Node {meta['node']}, rustc {meta['rustc']}")


def setup_line(meta):
    pin = (f"server pinned to CPU {meta['server_cpus']}, load generator to CPU {meta['client_cpus']}"
           if meta["pinned"] else "no CPU pinning (server and load generator share the CPUs)")
    return (f"{meta['reps']} repetition(s) × {meta['duration_s']} s after a {meta['warmup_s']} s warm-up, "
            f"servers interleaved; {pin}; each server given {meta['server_cores']} core(s) "
            f"(WORKERS / cluster workers / threads = {meta['server_cores']}); wrk with "
            f"{meta['wrk_threads']} thread(s)")


def like_for_like_note(summary):
    """Which column compares like with like, when that peer was measured."""
    if not any(s["server"] == LIKE_FOR_LIKE for s in summary):
        return ""
    return (f"; vs {LIKE_FOR_LIKE} compares like with like (the same security headers, CORS, "
            f"metrics and load-shedding work per response)")


def summary_md(meta, summary, runs):
    parts = [f"Run {meta['date']}, commit `{meta['commit']}`, `{meta['command']}`",
             "", f"Machine: {machine_line(meta)}.", "", f"Setup: {setup_line(meta)}.", "",
             main_table(summary)]
    nl = noise_line(meta, runs)
    if nl:
        parts += ["", nl]
    rt = ratio_table(summary)
    if rt:
        parts += ["", "agentd relative to each peer (req/s: higher is better for agentd; CPU/req: lower is)"
                  + like_for_like_note(summary) + ":", "", rt]
    st = sse_table(summary)
    if st:
        parts += ["", "sse-10k:", "", st]
    return "\n".join(parts) + "\n"


RESULTS_TEMPLATE = """# Benchmark results

agentd against its peers on one machine, as measured by `scripts/bench.sh`. This file and
`results.svg` are rewritten by every full run of it; reproduce with:

```
{command}
```

- Date: {date}
- Commit: `{commit}`
- Machine: {machine}
- Setup: {setup}

## Results

Medians over the repetitions.

{main}

{noise}
{ratios}{sse}
![req/s and CPU per request, agentd and peers](results.svg)

## What is measured

- **Servers.** `agentd`: `target/release/agentd` with `NODE_ENV=production`,
  `WORKERS` = the server's cores. `hyper-ceiling` (`benches/peers/hyper-ceiling`): the
  smallest honest hyper 1.x server, thread-per-core with `SO_REUSEPORT`, mimalloc, fixed
  responses (it reads the request body but never parses it): the ceiling for any hyper
  server on this machine. `fastify` (`benches/peers/fastify`): the Fastify integration
  guide's server (Fastify 5, pinned versions) with agentd's request validation, the
  guide's echo agent, ids from the `ulid` package's monotonic factory, one `res.write`
  per event as the SDK does; its optional plugins (helmet, cors, compress, rate limit,
  under-pressure, metrics) and request logging are left out, which only favours it.
  `fastify-full`: the same server with `FULL=1`, one process, the feature-equal peer:
  the guide's `@fastify/helmet`, `@fastify/cors`, `@fastify/under-pressure` and
  `fastify-metrics` registrations (the guide's options) and its `X-Response-Time`
  hooks, i.e. the security headers, CORS handling, load-shedding checks and metrics
  agentd runs on every response; compression and rate limiting stay off, as in
  agentd's runs (wrk asks for no compression; agentd's rate limit is off by default).
  It runs in the `health-*` and `agent-*` scenarios; agentd's ratio to it compares like
  with like, its ratio to `fastify` compares agentd with the least a Fastify server can
  do. `fastify-cluster`: `fastify` under Node's cluster, one worker per server core.
- **Scenarios.** `health-*`: `GET /health`, keep-alive. `agent-*`: `POST /agent` with a
  valid request (`scripts/bench/agent-body.json`), answered with the echo agent's three
  SSE events, keep-alive. `agent-close`: the same with a new connection per request.
  The number is the concurrent connections (wrk `-c`).
- **sse-10k.** The echo agent finishes a stream as soon as it starts, so no client can
  keep 10,000 of its streams open mid-response. What a server pays for 10,000 concurrent
  streaming clients is then the connections it holds and 10,000 streams started at
  once, and that is what `scripts/bench/hold.py` measures: it opens 10,000 keep-alive
  connections (256 connecting at a time), completes one `POST /agent` stream on each,
  holds all of them open for the run's duration while the server's memory is sampled
  (peak RSS, and RSS per held connection over the server's RSS before), then sends the
  next request on all 10,000 at once and reads every response (streams/s and latency of
  that burst; the Python client's own queueing is part of those latencies, so compare
  servers with them, not with wrk's figures). The scenario `llm` (streams paced by a
  real model) is skipped until agentd has an LLM connector.
- **Columns.** req/s: completed requests over the run's duration (wrk). p50/p99:
  wrk's latency percentiles. CPU µs/req: the server's user+system CPU time (utime+stime
  from `/proc/<pid>/stat`, the server process and all its children, i.e. cluster
  workers included) over the measured run, divided by the requests completed: the cost
  per request, independent of whether the server or the load generator was the
  bottleneck. Server CPU: that CPU time over wall time (100% = one core busy); a server
  below 100% × its cores was not saturated, and its req/s then says more about the load
  generator than about it. Peak RSS: the largest sum of VmRSS over the server's process
  tree, sampled every 50 ms during the run. Errors: wrk's non-2xx responses / socket
  errors (connect, read, write, timeout). agentd vs this: agentd's median req/s and CPU
  µs/req divided by this server's, from the same run.
- **Other load.** The machine's busy time (`/proc/stat`) minus the server's, the load
  generator's and the harness's: what unrelated processes took during a measured run.
  A run above `--max-other` (default 0.15 cores) is measured again, up to `--retries`
  times; the line under the table says how many were and lists any kept anyway.
- **Caveats.** A loopback benchmark on a small machine: the load generator competes for
  memory bandwidth and the kernel's network stack is shared; the kernel's share of the
  work (TCP over loopback) is counted in the CPU time of the process it ran for.
  Response headers differ by a few bytes: Node's HTTP server adds `Connection:
  keep-alive` and `Keep-Alive`, agentd adds `x-request-id` and `x-response-time`, the
  ceiling neither; `fastify-full` adds helmet's 12 headers and `x-response-time` as
  agentd does, CORS's `vary` and `access-control-allow-credentials` (agentd sends CORS
  headers only to a request with an `Origin`), and no `x-request-id` (the guide sets
  none).
"""


def results_md(meta, summary, runs):
    rt = ratio_table(summary)
    st = sse_table(summary)
    return RESULTS_TEMPLATE.format(
        command=meta["command"], date=meta["date"], commit=meta["commit"],
        machine=machine_line(meta), setup=setup_line(meta), main=main_table(summary),
        noise=noise_line(meta, runs),
        ratios=("\n### agentd relative to each peer\n\nagentd's req/s and CPU per request divided by "
                "the peer's (req/s: above 1 is better for agentd; CPU/req: below 1 is)"
                + like_for_like_note(summary) + ".\n\n" + rt + "\n")
        if rt else "",
        sse=("\n### sse-10k\n\n" + st + "\n") if st else "",
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--results-md")
    ap.add_argument("--svg")
    a = ap.parse_args()
    meta = json.load(open(a.meta))
    runs = [json.loads(l) for l in open(a.raw) if l.strip()]
    if not runs:
        print("report.py: no measurements", file=sys.stderr)
        return 1
    summary = summarize(runs)

    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date", "commit"] + CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow({"date": meta["date"], "commit": meta["commit"], **r})
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=2)
    md = summary_md(meta, summary, runs)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    if a.results_md:
        # The LLM scenarios' section (scripts/bench/llm-report.py) is kept as it is.
        keep = ""
        if os.path.exists(a.results_md):
            old = open(a.results_md).read()
            begin, end = "<!-- llm-scenarios:begin -->", "<!-- llm-scenarios:end -->"
            if begin in old and end in old:
                keep = "\n" + old[old.index(begin):old.index(end) + len(end)] + "\n"
        with open(a.results_md, "w") as f:
            f.write(results_md(meta, summary, runs) + keep)
        print(f"wrote {a.results_md}", file=sys.stderr)
    if a.svg:
        with open(a.svg, "w") as f:
            f.write(plot.render(summary, meta))
        print(f"wrote {a.svg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
