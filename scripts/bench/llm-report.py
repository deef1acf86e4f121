#!/usr/bin/env python3
"""Aggregate a scripts/bench/llm.sh run: Markdown tables, the targets' ratios, the chart.

    llm-report.py --raw RUN/raw.jsonl --meta RUN/meta.json [--raw RUN2/raw.jsonl --meta
                  RUN2/meta.json] --out DIR [--svg DIR/llm.svg]
                  [--results-md benches/RESULTS.md --results-svg benches/llm.svg]

Medians over repetitions per (scenario, rate, server); every ratio is taken between
medians of the same run. Several runs (pairs of --raw and --meta, e.g. llm-10k measured
apart with other settings) can be reported together: each scenario is then described
with the settings of the run that measured it. With --results-md the section between the markers
"<!-- llm-scenarios:begin -->" and "<!-- llm-scenarios:end -->" of that file is
replaced (appended when absent). Standard library only.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot  # noqa: E402

SERVER_ORDER = ["upstream", "relay-ceiling", "agentd", "agentd-openai", "litellm", "portkey"]
BEGIN, END = "<!-- llm-scenarios:begin -->", "<!-- llm-scenarios:end -->"


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def ms(us, digits=2):
    return "–" if us is None else f"{us / 1000:,.{digits}f}"


def ratio(a, b, digits=2):
    return f"{a / b:.{digits}f}×" if a is not None and b else "–"


def summarize(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["scenario"], r.get("rate", 0), r["server"]), []).append(r)
    out = {}
    for key, rows in groups.items():
        s = {k: med(rows, k) for k in (
            "rps", "p50_us", "p99_us", "p999_us", "ttft_p50_us", "ttft_p99_us", "ttft_p999_us",
            "cpu_us_per_req", "server_cpu_util", "peak_rss_mib", "rss_before_mib",
            "max_in_flight", "late_p99_us", "upstream_cpu_s", "other_cpu_util")}
        s["reps"] = len(rows)
        s["errors"] = sum(r.get("errors", 0) for r in rows)
        s["requests"] = sum(r.get("requests", 0) for r in rows)
        s["died"] = any(not r.get("server_alive", True) for r in rows)
        tok = [r["server_cpu_s"] * 1e6 / r["tokens"] for r in rows if r.get("tokens")]
        s["cpu_us_per_token"] = statistics.median(tok) if tok else None
        per = [(r["peak_rss_mib"] - r["rss_before_mib"]) * 1024 / r["max_in_flight"]
               for r in rows if r.get("max_in_flight")]
        s["rss_kib_per_stream"] = statistics.median(per) if per else None
        cores = [r["requests"] / r["server_cpu_s"] for r in rows if r.get("server_cpu_s")]
        s["answers_per_core_s"] = statistics.median(cores) if cores else None
        up = [r["upstream_cpu_s"] * 1e6 / r["requests"] for r in rows
              if r.get("upstream_cpu_s") is not None and r.get("requests")]
        s["upstream_cpu_us_per_req"] = statistics.median(up) if up else None
        out[key] = s
    return out


def servers_of(summary, scen, rate=0):
    seen = {k[2] for k in summary if k[0] == scen and k[1] == rate}
    return [s for s in SERVER_ORDER if s in seen] + sorted(seen - set(SERVER_ORDER))


def errs(s):
    return f"{s['errors']}" + (" (died)" if s["died"] else "")


def relay_table(summary, scen="llm-relay", ref="agentd"):
    """llm-relay (ref agentd on /agent) or openai-relay (ref agentd-openai: agentd's
    /v1/chat/completions, against the gateways' same route and agentd's /agent)."""
    rows = servers_of(summary, scen)
    if not rows:
        return ""
    ag = summary.get((scen, 0, ref))
    out = ["| server | answers/s | CPU µs/answer | CPU µs/token | answers per core-second | p50 ms | p99 ms | "
           f"server CPU | peak RSS MiB | errors | {ref} CPU/answer ÷ this | {ref} answers per core ÷ this |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in rows:
        s = summary[(scen, 0, name)]
        cpu = s["cpu_us_per_req"]
        vs = (ratio(ag["cpu_us_per_req"], cpu), ratio(ag["answers_per_core_s"], s["answers_per_core_s"], 1)) \
            if ag and name not in (ref, "upstream") else ("–", "–")
        label = {"agentd": "**agentd** (`/agent`)" if scen == "openai-relay" else "**agentd**",
                 "agentd-openai": "**agentd** (`/v1/chat/completions`)"}.get(name, name)
        out.append(f"| {label} | {fmt(s['rps'])} | {fmt(cpu, 1)} | "
                   f"{fmt(s['cpu_us_per_token'], 2)} | {fmt(s['answers_per_core_s'])} | {ms(s['p50_us'])} | "
                   f"{ms(s['p99_us'])} | {fmt((s['server_cpu_util'] or 0) * 100)}% | {fmt(s['peak_rss_mib'], 1)} | "
                   f"{errs(s)} | {vs[0]} | {vs[1]} |")
    return "\n".join(out)


def latency_table(summary):
    rates = sorted({k[1] for k in summary if k[0] == "llm-latency"})
    if not rates:
        return ""
    out = ["| rate /s | server | achieved /s | TTFT p50 / p99 / p99.9 ms | added TTFT p50 / p99 / p99.9 ms | "
           "total p50 / p99 / p99.9 ms | added total p50 / p99 / p99.9 ms | CPU µs/answer | errors |",
           "|---:|---|---:|---|---|---|---|---:|---:|"]
    for rate in rates:
        base = summary.get(("llm-latency", rate, "upstream"))
        for name in servers_of(summary, "llm-latency", rate):
            s = summary[("llm-latency", rate, name)]

            def trio(prefix, sub=None):
                ks = [f"{prefix}p50_us", f"{prefix}p99_us", f"{prefix}p999_us"]
                if sub is None:
                    return " / ".join(ms(s[k]) for k in ks)
                if name == "upstream" or not sub:
                    return "–"
                return " / ".join(ms(None if s[k] is None or sub[k] is None else s[k] - sub[k], 3) for k in ks)
            out.append(f"| {fmt(rate)} | {'**agentd**' if name == 'agentd' else name} | {fmt(s['rps'])} | "
                       f"{trio('ttft_')} | {trio('ttft_', base)} | {trio('')} | {trio('', base)} | "
                       f"{fmt(s['cpu_us_per_req'], 1)} | {errs(s)} |")
    return "\n".join(out)


def skipped_line(runs, meta):
    rates = [int(r) for r in meta.get("rates", [])]
    measured = {(r["server"], r.get("rate")) for r in runs if r["scenario"] == "llm-latency"}
    servers = [s for s in SERVER_ORDER if any(m[0] == s for m in measured)]
    missing = [f"{s} at {r:,}/s" for s in servers for r in rates if (s, r) not in measured]
    return ("Not asked (did not hold a lower rate: errors or p99 over 1 s): " + ", ".join(missing) + ".") \
        if missing else ""


def tenk_table(summary):
    rows = servers_of(summary, "llm-10k")
    if not rows:
        return ""
    ag = summary.get(("llm-10k", 0, "agentd"))
    out = ["| server | requests in flight (client, peak) | peak RSS MiB | RSS KiB per active stream | CPU µs per relayed token | "
           "answers/s | p99 total s | errors | agentd RSS per stream ÷ this |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in rows:
        s = summary[("llm-10k", 0, name)]
        vs = ratio(ag["rss_kib_per_stream"], s["rss_kib_per_stream"]) \
            if ag and name not in ("agentd", "upstream") else "–"
        out.append(f"| {'**agentd**' if name == 'agentd' else name} | {fmt(s['max_in_flight'])} | "
                   f"{fmt(s['peak_rss_mib'], 1)} | {fmt(s['rss_kib_per_stream'], 1)} | {fmt(s['cpu_us_per_token'], 2)} | "
                   f"{fmt(s['rps'])} | {ms(s['p99_us'] and s['p99_us'] / 1000)} | {errs(s)} | {vs} |")
    return "\n".join(out)


def targets(summary, meta):
    def g(scen, server, key, rate=0):
        s = summary.get((scen, rate, server))
        return s.get(key) if s else None
    lines = []

    def caveat(scen, rate=0):
        bad = [f"{n} {g(scen, n, 'errors', rate):,}" for n in ("agentd", "relay-ceiling", "upstream")
               if g(scen, n, "errors", rate)]
        return f" Not a valid measure in this run: errors ({', '.join(bad)})." if bad else ""
    a, c = g("llm-relay", "agentd", "cpu_us_per_req"), g("llm-relay", "relay-ceiling", "cpu_us_per_req")
    if a and c:
        lines.append(f"- CPU per relayed answer, agentd ÷ relay ceiling: **{a / c:.2f}×** "
                     f"({a:,.1f} vs {c:,.1f} µs; target ≤ 1.25×).")
    rates = sorted({k[1] for k in summary if k[0] == "llm-latency"})
    for rate in rates:
        t, b = g("llm-latency", "agentd", "ttft_p99_us", rate), g("llm-latency", "upstream", "ttft_p99_us", rate)
        if t is not None and b is not None and rate == 1000:
            lines.append(f"- Added p99 time to first token at {rate:,} answers/s: **{(t - b) / 1000:.3f} ms** "
                         f"({t / 1000:.2f} through agentd vs {b / 1000:.2f} ms direct; target ≤ 1 ms)."
                         + caveat("llm-latency", rate))
    a, c = g("llm-10k", "agentd", "rss_kib_per_stream"), g("llm-10k", "relay-ceiling", "rss_kib_per_stream")
    n = g("llm-10k", "agentd", "max_in_flight")
    if a and c:
        lines.append(f"- Memory per active stream with {fmt(n)} streams, agentd ÷ relay ceiling: **{a / c:.2f}×** "
                     f"({a:,.1f} vs {c:,.1f} KiB; target ≤ 1.5×)." + caveat("llm-10k"))
    for peer, goal in (("litellm", 50), ("portkey", 10)):
        a, p = g("llm-relay", "agentd", "answers_per_core_s"), g("llm-relay", peer, "answers_per_core_s")
        if a and p:
            lines.append(f"- Answers per core, agentd ÷ {peer}: **{a / p:,.1f}×** "
                         f"({a:,.0f} vs {p:,.0f} answers per core-second; target ≥ {goal}×).")
    return "\n".join(lines)


def chart(summary, meta):
    rows = []
    for scen in ("llm-relay",):
        for name in servers_of(summary, scen):
            if name == "upstream":
                continue
            s = summary[(scen, 0, name)]
            rows.append({"scenario": scen, "server": name, "rps": s["answers_per_core_s"],
                         "cpu_us_per_req": s["cpu_us_per_req"]})
    m = dict(meta, server_cores=1, pinned=True)
    svg = plot.render(rows, m)
    return svg.replace("Requests per second (higher is better)", "Answers per core-second (higher is better)") \
              .replace("Server CPU µs per request (lower is better)", "Server CPU µs per answer (lower is better)")


def report_md(meta, summary, runs, heading="##"):
    other = [r.get("other_cpu_util") for r in runs if r.get("other_cpu_util") is not None]
    parts = [
        f"{heading} LLM path: agentd against a relay ceiling and the LLM gateways",
        "",
        f"Run {meta['date']}, commit `{meta['commit']}`, `{meta['command']}`. Machine: {meta['nproc']} CPU(s), "
        f"{meta['cpu_model']}, {meta['mem_gib']} GiB, Linux {meta['kernel']}; Node {meta['node']}, rustc {meta['rustc']}. "
        f"{meta['reps']} repetition(s) × {meta['duration_s']} s after a {meta['warmup_s']} s warm-up, servers "
        f"interleaved, medians; each server on one core ({meta['layout']}). Fake upstream: `fake-llm --threads 1`."
        + "".join(f" {', '.join(m['scenarios'])}: measured apart, {m['date']}, commit `{m['commit']}`, "
                  f"`{m['command']}`, {m['reps']} repetition(s) × {m['duration_s']} s."
                  for m in meta.get("more", []))
        + (f" Other load during the runs (unrelated processes): median {statistics.median(other) * 100:.0f}% "
           f"of a core, max {max(other) * 100:.0f}%." if other else ""),
        "",
    ]
    t = targets(summary, meta)
    if t:
        parts += ["Targets (issue 15), measured in this run:", "", t, ""]
    rt = relay_table(summary)
    if rt:
        parts += [f"{heading}# llm-relay: 50 connections, closed loop, 20-token answers, no delay", "", rt, "",
                  "CPU µs/answer: the server's CPU time (utime+stime, whole process tree) over the answers "
                  "completed; per token: over the tokens relayed. For `upstream` the figures are the fake "
                  "upstream's own. Answers/s are bounded by the load generator and the fake upstream sharing "
                  "one core on a 2-CPU machine; CPU per answer is the figure to compare.", ""]
    ot = relay_table(summary, "openai-relay", "agentd-openai")
    if ot:
        parts += [f"{heading}# openai-relay: the OpenAI-compatible routes, llm-relay's load", "", ot, "",
                  "The same closed loop (50 connections, 20-token answers, no delay) on `POST /v1/chat/completions` "
                  "with `\"stream\":true` for agentd's OpenAI front door and the gateways (OpenAI chunks back, every "
                  "answer checked: 200, all 20 tokens, `data: [DONE]`), and on agentd's own `POST /agent` (Sentient "
                  "events) beside them. Ratios are agentd's `/v1/chat/completions` to each.", ""]
    lt = latency_table(summary)
    if lt:
        parts += [f"{heading}# llm-latency: open loop, 20 ms to the first token, 20 tokens 5 ms apart", "", lt, ""]
        sk = skipped_line(runs, meta)
        parts += ["Added: the server's percentile minus the upstream-direct percentile at the same rate "
                  "(each measured from the request's due time: no coordinated omission)."
                  + (" " + sk if sk else ""), ""]
    tk = tenk_table(summary)
    if tk:
        asked = meta.get("streams_asked", meta["streams"])
        capped = (f"{asked:,} asked; a relay holds two sockets per stream and this host's open-file limit "
                  f"fits {meta['streams']:,}." if asked > meta["streams"] else "")
        parts += [f"{heading}# llm-10k: {meta['streams']:,} concurrent answers of {meta['stream_tokens']} tokens "
                  f"{meta.get('stream_delay_ms', 100)} ms apart", ""] + ([capped, ""] if capped else []) + [tk, "",
                  "RSS per active stream: (peak RSS − RSS before the run) ÷ the most requests the client had in "
                  "flight; only meaningful for a server without errors (a shed or timed-out request holds no "
                  "stream). CPU per relayed token: the server's CPU ÷ the tokens that reached the client.", ""]
    return "\n".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raw", action="append", required=True)
    ap.add_argument("--meta", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--svg")
    ap.add_argument("--results-md")
    ap.add_argument("--results-svg")
    a = ap.parse_args()
    if len(a.raw) != len(a.meta):
        ap.error("one --meta per --raw")
    metas = [json.load(open(m)) for m in a.meta]
    runs, meta = [], dict(metas[0])
    for raw, m in zip(a.raw, metas):
        rs = [json.loads(line) for line in open(raw) if line.strip()]
        runs += rs
        if m is not metas[0] and rs:
            # this run's settings describe its scenarios
            meta.setdefault("more", []).append(
                {"command": m["command"], "date": m["date"], "commit": m["commit"], "reps": m["reps"],
                 "duration_s": m["duration_s"], "scenarios": sorted({r["scenario"] for r in rs})})
            if any(r["scenario"] == "llm-10k" for r in rs):
                for k in ("streams", "streams_asked", "stream_tokens", "stream_delay_ms"):
                    if k in m:
                        meta[k] = m[k]
    if not runs:
        print("llm-report.py: no measurements", file=sys.stderr)
        return 1
    summary = summarize(runs)
    md = report_md(meta, summary, runs)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"meta": meta, "summary": [dict(scenario=k[0], rate=k[1], server=k[2], **v)
                                             for k, v in sorted(summary.items())]}, f, indent=2)
    svg = chart(summary, meta) if any(k[0] == "llm-relay" for k in summary) else None
    for path in filter(None, (a.svg, a.results_svg)):
        if svg:
            with open(path, "w") as f:
                f.write(svg)
    print()
    print(md)
    if a.results_md:
        section = BEGIN + "\n" + report_md(meta, summary, runs) + \
            ("\n![answers per core and CPU per answer, LLM relay](llm.svg)\n" if svg else "") + END
        old = open(a.results_md).read() if os.path.exists(a.results_md) else ""
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + section + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + section + "\n"
        with open(a.results_md, "w") as f:
            f.write(new)
        print(f"wrote {a.results_md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
