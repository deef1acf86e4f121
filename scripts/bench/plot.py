#!/usr/bin/env python3
"""Render the benchmark summary as an SVG bar chart, by hand (standard library only).

    plot.py RUN/results.json OUT.svg

Two panels, one group of bars per scenario and one bar per server: median requests per
second (higher is better) and median server CPU microseconds per request (lower is
better). Under each scenario with both measured, agentd's ratio to the like-for-like
peer (fastify-full: the same per-response work as agentd) is written out.
scripts/bench/report.py calls render() directly.
"""

import json
import math
import sys
from xml.sax.saxutils import escape

COLORS = {
    "agentd": "#d9480f",
    "hyper-ceiling": "#495057",
    "fastify": "#1c7ed6",
    "fastify-full": "#5f3dc4",
    "fastify-cluster": "#74c0fc",
}
# The peer doing the same per-response work as agentd (security headers, CORS, metrics,
# load-shedding checks): agentd's ratio to it is the like-for-like comparison.
LIKE_FOR_LIKE = "fastify-full"
# Which ratio (from report.py's summary) goes under each panel's scenario labels.
PANEL_RATIO = {"rps": "agentd_rps_ratio", "cpu_us_per_req": "agentd_cpu_ratio"}
EXTRA_COLORS = ["#2b8a3e", "#ae3ec9", "#f59f00", "#0ca678"]
FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


def axis(v):
    """A round tick step and the axis top (a whole number of steps, 5 at most) for max v."""
    if v <= 0:
        return 1.0, 1.0
    exp = 10 ** math.floor(math.log10(v / 5))
    for m in (1, 2, 2.5, 5, 10, 20):
        step = m * exp
        if math.ceil(v / step - 1e-9) <= 5:
            return step, step * math.ceil(v / step - 1e-9)
    return v, v


def short(v):
    if v is None:
        return "–"
    if v == int(v) and abs(v) < 1e3:
        return f"{int(v)}"
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def panel(out, summary, scenarios, servers, colors, key, title, x0, y0, w, h):
    vals = [s[key] for s in summary if s.get(key) is not None]
    step, top = axis(max(vals) if vals else 1)
    ticks = int(round(top / step))
    out.append(f'<text x="{x0}" y="{y0 - 12}" font-size="14" font-weight="bold" {FONT}>{escape(title)}</text>')
    # grid and axis labels
    for i in range(ticks + 1):
        v = step * i
        y = y0 + h - h * v / top
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#dee2e6" stroke-width="1"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#495057" {FONT}>{short(v) if v else "0"}</text>')
    by = {(s["scenario"], s["server"]): s for s in summary}
    group_w = w / max(1, len(scenarios))
    bar_w = min(36.0, (group_w * 0.8) / max(1, len(servers)))
    for gi, scen in enumerate(scenarios):
        gx = x0 + gi * group_w + (group_w - bar_w * len(servers)) / 2
        for si, server in enumerate(servers):
            s = by.get((scen, server))
            v = s.get(key) if s else None
            x = gx + si * bar_w
            if v is None:
                continue
            bh = h * v / top
            out.append(f'<rect x="{x + 1:.1f}" y="{y0 + h - bh:.1f}" width="{bar_w - 2:.1f}" height="{bh:.1f}" '
                       f'fill="{colors[server]}"><title>{escape(server)} {escape(scen)}: {v:,.1f}</title></rect>')
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{y0 + h - bh - 3:.1f}" font-size="9" text-anchor="middle" '
                       f'fill="#212529" {FONT}>{short(v)}</text>')
        out.append(f'<text x="{x0 + gi * group_w + group_w / 2:.1f}" y="{y0 + h + 16}" font-size="12" '
                   f'text-anchor="middle" {FONT}>{escape(scen)}</text>')
        like = by.get((scen, LIKE_FOR_LIKE))
        r = like.get(PANEL_RATIO.get(key, "")) if like else None
        if r is not None:
            out.append(f'<text x="{x0 + gi * group_w + group_w / 2:.1f}" y="{y0 + h + 30}" font-size="10" '
                       f'text-anchor="middle" fill="{colors[LIKE_FOR_LIKE]}" {FONT}>'
                       f'agentd {r:.2f}× vs {escape(LIKE_FOR_LIKE)}</text>')
    out.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="#212529" stroke-width="1"/>')


def render(summary, meta):
    scenarios = list(dict.fromkeys(s["scenario"] for s in summary))
    # In the known servers' order (a server measured in only some scenarios would
    # otherwise move to the end), then any other in order of appearance.
    known = list(COLORS)
    seen = list(dict.fromkeys(s["server"] for s in summary))
    servers = sorted(seen, key=lambda x: (known.index(x), 0) if x in known else (len(known), seen.index(x)))
    colors = dict(COLORS)
    for i, s in enumerate(x for x in servers if x not in colors):
        colors[s] = EXTRA_COLORS[i % len(EXTRA_COLORS)]
    width = max(760, 140 + 60 * len(scenarios) * max(1, len(servers)) // 2 + 60 * len(scenarios))
    x0, w, h = 80, width - 110, 230
    height = 60 + 2 * (h + 80) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{x0}" y="24" font-size="16" font-weight="bold" {FONT}>agentd vs peers: medians, '
           f'{escape(str(meta.get("date", "")))}, commit {escape(str(meta.get("commit", "")))}</text>',
           f'<text x="{x0}" y="42" font-size="11" fill="#495057" {FONT}>{escape(str(meta.get("nproc", "?")))} CPU(s), '
           f'{escape(str(meta.get("cpu_model", "")))}; server on {escape(str(meta.get("server_cores", "?")))} core(s)'
           f'{", pinned" if meta.get("pinned") else ""}'
           f'{"; sse-10k bars are the burst of streams on held connections" if "sse-10k" in scenarios else ""}</text>']
    panel(out, summary, scenarios, servers, colors, "rps",
          "Requests per second (higher is better)", x0, 90, w, h)
    panel(out, summary, scenarios, servers, colors, "cpu_us_per_req",
          "Server CPU µs per request (lower is better)", x0, 90 + h + 80, w, h)
    # legend
    lx, ly = x0, height - 18
    for server in servers:
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colors[server]}"/>')
        out.append(f'<text x="{lx + 16}" y="{ly}" font-size="12" {FONT}>{escape(server)}</text>')
        lx += 30 + 8 * len(server)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    data = json.load(open(sys.argv[1]))
    with open(sys.argv[2], "w") as f:
        f.write(render(data["summary"], data["meta"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
