#!/usr/bin/env python3
"""Judges a soak run and writes its report: the RSS trend, the unexpected errors, an SVG
of RSS (and CPU) over time, and a Markdown summary.

    report.py --run DIR [--max-slope MIB_PER_MIN] [--svg OUT.svg] [--md OUT.md]

DIR is what scripts/soak.sh left: rss.csv (scripts/soak/sample.py), wrk-*.out (lines
`SOAKJSON {...}` from scripts/soak/mix.lua), ws.out (`WSJSON {...}` from
scripts/soak/ws_load.py), agentd-*.log (agentd's JSON log lines), meta.json.

Trend: the least-squares slope of each agentd process's RSS over the second half of
the run, in MiB per minute (the first half is warm-up: pools, caches and the allocator
settle). Unexpected errors: responses other than each request kind's expected answer
(the bad requests' 4xx are expected), wrk socket errors, WebSocket failures, and WARN or
ERROR lines in agentd's logs. Exit status 1 when a slope is above --max-slope or there
is any unexpected error; the report is written either way. Standard library only; the
chart reuses scripts/bench/plot.py's axis and label helpers.
"""

import argparse
import csv
import json
import os
import sys
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from plot import FONT, axis, short  # noqa: E402

COLORS = {"echo": "#d9480f", "llm": "#1c7ed6"}
EXTRA = ["#2b8a3e", "#ae3ec9"]


def tagged(path, tag):
    """The JSON after `tag` on the last line that starts with it, or None."""
    found = None
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(tag + " "):
                    found = json.loads(line[len(tag) + 1:])
    except OSError:
        pass
    return found


def slope(ts, ys):
    """Least-squares slope dy/dt."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0


def load_samples(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    names = [c[: -len("_rss_mib")] for c in rows[0] if c.endswith("_rss_mib")] if rows else []
    t = [float(r["t_s"]) for r in rows]
    series = {n: {"rss": [float(r[f"{n}_rss_mib"]) for r in rows],
                  "cpu": [float(r[f"{n}_cpu_pct"]) for r in rows]} for n in names}
    return t, series


def log_problems(path):
    """WARN and ERROR lines of one agentd log (JSON lines)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    level = json.loads(line).get("level", "")
                except ValueError:
                    level = "ERROR" if "panick" in line else ""
                if level in ("WARN", "ERROR"):
                    out.append(line.strip()[:300])
    except OSError:
        pass
    return out


def judge(run, max_slope):
    meta = json.load(open(os.path.join(run, "meta.json")))
    t, series = load_samples(os.path.join(run, "rss.csv"))
    half = (t[-1] if t else 0) / 2
    procs = {}
    for name, s in series.items():
        idx = [i for i, x in enumerate(t) if x >= half]
        k = slope([t[i] for i in idx], [s["rss"][i] for i in idx]) * 60
        cpu = s["cpu"][1:] or [0.0]
        procs[name] = {
            "rss_start_mib": s["rss"][0], "rss_end_mib": s["rss"][-1], "rss_max_mib": max(s["rss"]),
            "slope_mib_per_min": round(k, 3), "cpu_mean_pct": round(sum(cpu) / len(cpu), 1),
        }
    load = {}
    unexpected = []
    for fname in sorted(os.listdir(run)):
        if fname.startswith("wrk-") and fname.endswith(".out"):
            r = tagged(os.path.join(run, fname), "SOAKJSON")
            if r is None:
                unexpected.append(f"{fname}: wrk printed no result")
                continue
            load[r["mix"]] = r
            for kind, c in r["kinds"].items():
                if c["bad"]:
                    unexpected.append(f"{r['mix']}/{kind}: {c['bad']} unexpected answers")
            for kind, n in r["socket_errors"].items():
                if n:
                    unexpected.append(f"{r['mix']}: {n} socket {kind} errors")
    ws = tagged(os.path.join(run, "ws.out"), "WSJSON")
    if ws is None:
        unexpected.append("ws.out: the WebSocket client printed no result")
    else:
        load["ws"] = ws
        for kind, c in ws["kinds"].items():
            if c["bad"]:
                unexpected.append(f"ws/{kind}: {c['bad']} unexpected ({'; '.join(ws['failures'][:3])})")
    logs = {}
    for fname in sorted(os.listdir(run)):
        if fname.startswith("agentd-") and fname.endswith(".log"):
            problems = log_problems(os.path.join(run, fname))
            logs[fname] = len(problems)
            if problems:
                unexpected.append(f"{fname}: {len(problems)} WARN/ERROR lines, first: {problems[0]}")
    for name, died in meta.get("died", {}).items():
        unexpected.append(f"{name} exited during the soak: {died}")
    growth = [f"{n}: RSS slope {p['slope_mib_per_min']} MiB/min over the second half "
              f"(limit {max_slope})" for n, p in procs.items() if p["slope_mib_per_min"] > max_slope]
    return {"meta": meta, "t": t, "series": series, "procs": procs, "load": load, "logs": logs,
            "unexpected": unexpected, "growth": growth, "max_slope": max_slope,
            "passed": not unexpected and not growth}


def panel(out, t, series, key, colors, title, unit, x0, y0, w, h, fits=None):
    tmax = t[-1] if t else 1
    xstep, xtop = axis(tmax)
    top_v = max((max(s[key]) for s in series.values()), default=1)
    ystep, ytop = axis(top_v * 1.1)
    out.append(f'<text x="{x0}" y="{y0 - 10}" font-size="14" font-weight="bold" {FONT}>{escape(title)}</text>')
    for i in range(int(round(ytop / ystep)) + 1):
        v = ystep * i
        y = y0 + h - h * v / ytop
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#dee2e6"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#495057" '
                   f'{FONT}>{short(v) if v else "0"}</text>')
    for i in range(int(round(xtop / xstep)) + 1):
        v = xstep * i
        x = x0 + w * v / xtop
        out.append(f'<text x="{x:.1f}" y="{y0 + h + 15}" font-size="11" text-anchor="middle" fill="#495057" '
                   f'{FONT}>{short(v)}</text>')
    out.append(f'<text x="{x0 + w}" y="{y0 + h + 30}" font-size="11" text-anchor="end" fill="#495057" '
               f'{FONT}>seconds ({escape(unit)} on the left)</text>')

    def xy(tt, v):
        return x0 + w * tt / xtop, y0 + h - h * v / ytop

    for name, s in series.items():
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(tt, v) for tt, v in zip(t, s[key])))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colors[name]}" stroke-width="1.5">'
                   f'<title>{escape(name)}</title></polyline>')
        if fits and name in fits:
            a, b, t1 = fits[name]
            (xa, ya), (xb, yb) = xy(t1, a + b * t1), xy(t[-1], a + b * t[-1])
            out.append(f'<line x1="{xa:.1f}" y1="{ya:.1f}" x2="{xb:.1f}" y2="{yb:.1f}" stroke="#212529" '
                       f'stroke-width="1" stroke-dasharray="5,3"/>')
    out.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#212529"/>')


def fit_lines(t, series, half):
    """Per process: (intercept, slope per s, start t) of the second half's RSS fit."""
    fits = {}
    for name, s in series.items():
        idx = [i for i, x in enumerate(t) if x >= half]
        ts, ys = [t[i] for i in idx], [s["rss"][i] for i in idx]
        if len(ts) < 2:
            continue
        b = slope(ts, ys)
        a = sum(ys) / len(ys) - b * sum(ts) / len(ts)
        fits[name] = (a, b, ts[0])
    return fits


def render_svg(r):
    t, series, meta = r["t"], r["series"], r["meta"]
    colors = {}
    for i, name in enumerate(series):
        colors[name] = COLORS.get(name, EXTRA[i % len(EXTRA)])
    width, x0, w = 760, 70, 650
    h1, h2 = 260, 110
    height = 70 + h1 + 60 + h2 + 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{x0}" y="24" font-size="16" font-weight="bold" {FONT}>agentd soak: resident memory, '
           f'{escape(str(meta.get("duration_s")))} s of mixed load</text>',
           f'<text x="{x0}" y="42" font-size="11" fill="#495057" {FONT}>{escape(str(meta.get("date", "")))}, '
           f'commit {escape(str(meta.get("commit", "")))}, {escape(str(meta.get("nproc", "?")))} CPU(s)</text>']
    panel(out, t, series, "rss", colors, "RSS (MiB); dashed: least-squares fit over the second half",
          "MiB", x0, 80, w, h1,
          fits=fit_lines(t, series, (t[-1] if t else 0) / 2))
    panel(out, t, series, "cpu", colors, "CPU (% of one core)", "%", x0, 80 + h1 + 60, w, h2)
    lx, ly = x0, height - 14
    for name in series:
        p = r["procs"][name]
        label = (f"{name}: {p['rss_start_mib']:.1f} → {p['rss_end_mib']:.1f} MiB, "
                 f"max {p['rss_max_mib']:.1f}, slope {p['slope_mib_per_min']:+.3f} MiB/min")
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colors[name]}"/>')
        out.append(f'<text x="{lx + 16}" y="{ly}" font-size="11" {FONT}>{escape(label)}</text>')
        lx += 340
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_md(r, svg_name):
    m, load = r["meta"], r["load"]
    lines = [
        "# Soak",
        "",
        f"{m.get('duration_s')} s of mixed load on {m.get('date')}, commit `{m.get('commit')}`, "
        f"{m.get('nproc')} CPU(s) ({m.get('cpu_model', '')}), load average before the run "
        f"{m.get('loadavg_before', '?')}. Verdict: **{'passed' if r['passed'] else 'FAILED'}** "
        f"(RSS slope limit {r['max_slope']} MiB/min over the second half, no unexpected errors).",
        "",
        f"Reproduce: `{m.get('command', 'scripts/soak.sh')}` (builds release agentd and fake-llm, "
        "starts them on 127.0.0.1, drives the load below, samples RSS and CPU every second; "
        "the raw samples and logs go to `bench-out/`).",
        "",
        "## Set-up",
        "",
        "Two agentd processes, because one process serves one agent: **echo** (`AGENT=echo`, "
        f"`WORKERS={m.get('workers')}`, `BODY_LIMIT=4096` so the oversized request is small) takes "
        "the health, echo, `/stream`, WebSocket and bad-request traffic; **llm** (`AGENT=llm`, "
        f"`WORKERS={m.get('workers')}`) answers `/agent` through the fake OpenAI upstream "
        f"(`fake-llm`, {m.get('llm_tokens')} tokens, {m.get('llm_token_delay_ms')} ms apart). Load: "
        f"wrk (`scripts/soak/mix.lua`) with {m.get('echo_connections')} connections on echo and "
        f"{m.get('llm_connections')} on llm, each waiting {m.get('echo_think_ms')} / "
        f"{m.get('llm_think_ms')} ms between requests; `scripts/soak/ws_load.py` with "
        f"{m.get('ws_sockets')} WebSockets.",
        "",
        "## Requests",
        "",
        "| target | kind | expected | answered as expected | unexpected |",
        "|---|---|---|---:|---:|",
    ]
    expected = {"health": "200", "live": "200", "echo": "200, SSE to done, no error",
                "stream": "200, SSE to done, no error", "close": "200 (`Connection: close`)",
                "bad_json": "400 (injected)", "bad_field": "400 (injected)",
                "oversized": "413 (injected)", "unknown_route": "404 (injected)",
                "llm": "200, SSE to done, no error", "unidentified": "(a response without its id)",
                "query": "events to done, no error, metrics", "ping": "pong",
                "bad_message": "`{type:error}`, socket open (injected)",
                "socket": "(socket failures)"}
    total = 0
    for target in ("echo", "llm", "ws"):
        r_ = load.get(target)
        if not r_:
            continue
        for kind, c in r_["kinds"].items():
            total += c["ok"] + c["bad"]
            if kind in ("unidentified", "socket") and not c["ok"] + c["bad"]:
                continue
            lines.append(f"| {target} | {kind} | {expected.get(kind, '')} | {c['ok']:,} | {c['bad']:,} |")
    rates = []
    for target in ("echo", "llm"):
        r_ = load.get(target)
        if r_:
            rates.append(f"{target}: {r_['requests'] / (r_['duration_us'] / 1e6):,.0f} req/s, "
                         f"p50 {r_['p50_us'] / 1000:.2f} ms, p99 {r_['p99_us'] / 1000:.2f} ms")
    lines += ["", f"{total:,} requests and WebSocket operations in all; {'; '.join(rates)}.", "",
              "## Memory and CPU", "",
              f"![RSS over time]({svg_name})", "",
              "| process | RSS start MiB | RSS end MiB | RSS max MiB | slope, second half, MiB/min | mean CPU % |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, p in r["procs"].items():
        lines.append(f"| {name} | {p['rss_start_mib']:.2f} | {p['rss_end_mib']:.2f} | {p['rss_max_mib']:.2f} "
                     f"| {p['slope_mib_per_min']:+.3f} | {p['cpu_mean_pct']:.1f} |")
    lines += ["", "## Errors", ""]
    if r["unexpected"] or r["growth"]:
        lines += [f"- {e}" for e in r["growth"] + r["unexpected"]]
    else:
        lines.append("None beyond the injected ones: every bad request got its 4xx, every other "
                     "request its expected answer, no socket errors, no WARN or ERROR log line.")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--max-slope", type=float, default=0.5)
    ap.add_argument("--svg")
    ap.add_argument("--md")
    a = ap.parse_args()
    r = judge(a.run, a.max_slope)
    svg = a.svg or os.path.join(a.run, "soak-rss.svg")
    md = a.md or os.path.join(a.run, "SOAK.md")
    with open(svg, "w") as f:
        f.write(render_svg(r))
    with open(md, "w") as f:
        f.write(render_md(r, os.path.basename(svg)))
    summary = {"passed": r["passed"], "procs": r["procs"], "unexpected": r["unexpected"],
               "growth": r["growth"], "svg": svg, "md": md}
    print(json.dumps(summary, indent=1))
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
