"""Scrapes agentd's /metrics after traffic and parses it with prometheus_client's own
text parser (an independent implementation of the exposition format). Checks the
families exist, have the right types, and that counters moved with the requests made.
Usage: metrics_check.py BASE_URL"""
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

ULID = "01JDX3ABCDEFGHJKMNPQRSTVWX"


def scrape(client: httpx.Client, base: str) -> dict:
    r = client.get(base + "/metrics")
    r.raise_for_status()
    assert r.headers["content-type"].startswith("text/plain"), r.headers["content-type"]
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict, family: str, sample: str, **labels) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


def main() -> int:
    base = sys.argv[1].rstrip("/")
    with httpx.Client(timeout=10.0) as c:
        before = scrape(c, base)
        n = 25
        for _ in range(n):
            # A fresh connection each time, so both workers serve some.
            with httpx.Client(timeout=10.0) as fresh:
                r = fresh.post(base + "/agent", json={"query": {"id": ULID, "prompt": "metrics"}},
                               headers={"accept-encoding": "identity"})
                assert r.status_code == 200 and r.text.endswith("\n\n")
        after = scrape(c, base)
    problems = []
    expected_types = {
        "agentd_http_requests": "counter",
        "agentd_http_request_duration_seconds": "histogram",
        "agentd_requests_in_flight": "gauge",
        "agentd_open_connections": "gauge",
        "agentd_open_sse_streams": "gauge",
        "agentd_sse_events": "counter",
        "agentd_sse_bytes": "counter",
        "agentd_shed_requests": "counter",
        "agentd_worker_restarts": "counter",
    }
    for name, kind in expected_types.items():
        if name not in after:
            problems.append(f"missing family {name}")
        elif after[name].type != kind:
            problems.append(f"{name} is {after[name].type}, expected {kind}")
    if not problems:
        moved = (value(after, "agentd_http_requests", "agentd_http_requests_total", route="agent", status="2xx")
                 - value(before, "agentd_http_requests", "agentd_http_requests_total", route="agent", status="2xx"))
        if moved != n:
            problems.append(f"agent 2xx counter moved by {moved}, expected {n}")
        count = (value(after, "agentd_http_request_duration_seconds", "agentd_http_request_duration_seconds_count", route="agent")
                 - value(before, "agentd_http_request_duration_seconds", "agentd_http_request_duration_seconds_count", route="agent"))
        if count != n:
            problems.append(f"agent duration histogram count moved by {count}, expected {n}")
        events = (value(after, "agentd_sse_events", "agentd_sse_events_total")
                  - value(before, "agentd_sse_events", "agentd_sse_events_total"))
        if events != 3 * n:
            problems.append(f"events moved by {events}, expected {3 * n}")
        buckets = [s for s in after["agentd_http_request_duration_seconds"].samples
                   if s.name.endswith("_bucket") and s.labels.get("route") == "agent"]
        values = [s.value for s in buckets]
        if values != sorted(values):
            problems.append("histogram buckets are not cumulative")
    for p in problems:
        print(f"FAIL metrics: {p}")
    print(f"metrics: {'ok' if not problems else 'failed'} ({len(after)} families parsed by prometheus_client)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
