#!/usr/bin/env python3
"""Token coalescing's effect on the LLM path: events per answer, agentd's CPU per answer
and the client's parse cost, with coalescing off and on.

    scripts/bench/coalesce.py [--agentd target/release/agentd]
        [--fake-llm target/release/fake-llm] [--answers 200] [--concurrency 20]
        [--tokens 200] [--token-text ab] [--token-delay-ms 1]
        [--settings 0:50,100:50]

For each STREAM_CHUNK_SIZE:STREAM_BUFFER_TIMEOUT pair it starts agentd (AGENT=llm,
WORKERS=1, 127.0.0.1, request log off) over one fake OpenAI upstream (`fake-llm`,
`--tokens` tokens `token-text` + i, `--token-delay-ms` apart), warms it up, then sends
`--answers` POST /agent requests, `--concurrency` at a time on keep-alive connections,
and reads every answer to its end. Each answer is checked: its text is the upstream's
tokens, in order, and `done` is last. Reported per answer: chunk events, all events, SSE
bytes, agentd's CPU (utime+stime from /proc/<pid>/stat, before and after, divided by
answers), the client's CPU to split and JSON-parse the events (this process's CPU time,
divided by answers), and the median time from the request to the first chunk event.
Prints a Markdown table. Standard library only; every wait is bounded.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


BODY = json.dumps({"query": {"id": "01JDX3ABCDEFGHJKMNPQRSTVWX", "prompt": "x" * 200}})


def one_answer(conn, expected_text):
    """One answer: (events, chunk events, bytes, seconds to first chunk, parse CPU s)."""
    started = time.monotonic()
    conn.request("POST", "/agent", BODY, {"content-type": "application/json"})
    res = conn.getresponse()
    if res.status != 200:
        raise RuntimeError(f"status {res.status}")
    events = chunks = size = 0
    first = None
    text = []
    names = []
    buf = b""
    parse_cpu = 0.0
    while True:
        data = res.read1(65536)
        if not data:
            break
        if first is None and b"chunked.text" in data:
            first = time.monotonic() - started
        size += len(data)
        t0 = time.thread_time()
        buf += data
        *complete, buf = buf.split(b"\n\n")
        for raw in complete:
            lines = raw.split(b"\n")
            name = lines[0][len(b"event: "):].decode()
            ev = json.loads(lines[1][len(b"data: "):])
            events += 1
            names.append(name)
            if ev["content_type"] == "chunked.text" and not ev["is_complete"]:
                chunks += 1
                text.append(ev["content"])
        parse_cpu += time.thread_time() - t0
    if "".join(text) != expected_text or names[-1] != "done":
        raise RuntimeError("an answer is incomplete or out of order")
    return events, chunks, size, first, parse_cpu


def run(args, chunk_size, timeout_ms):
    fake_port, port = free_port(), free_port()
    fake = subprocess.Popen(
        [args.fake_llm, "--port", str(fake_port), "--threads", "1",
         "--tokens", str(args.tokens), "--token-text", args.token_text,
         "--token-delay-ms", str(args.token_delay_ms)],
        stdout=subprocess.DEVNULL)
    env = dict(os.environ, AGENT="llm", HOST="127.0.0.1", PORT=str(port), WORKERS="1",
               OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=f"http://127.0.0.1:{fake_port}/v1",
               REQUEST_LOGGING="false", STREAM_CHUNK_SIZE=str(chunk_size),
               STREAM_BUFFER_TIMEOUT=str(timeout_ms), LOG_LEVEL="warn")
    agentd = subprocess.Popen([args.agentd], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        wait_port(fake_port, deadline)
        wait_port(port, deadline)
        expected = "".join(f"{args.token_text}{i}" for i in range(args.tokens))
        results, errors = [], []
        lock = threading.Lock()

        def client(n):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(n):
                try:
                    r = one_answer(conn, expected)
                    with lock:
                        results.append(r)
                except Exception as e:  # counted, the run is refused below
                    with lock:
                        errors.append(repr(e))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        warm = [threading.Thread(target=client, args=(1,)) for _ in range(args.concurrency)]
        for t in warm:
            t.start()
        for t in warm:
            t.join(60)
        results.clear()
        per = [args.answers // args.concurrency] * args.concurrency
        for i in range(args.answers % args.concurrency):
            per[i] += 1
        cpu0 = cpu_seconds(agentd.pid)
        wall0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in per]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(agentd.pid) - cpu0
        if errors or len(results) != args.answers:
            raise SystemExit(f"{len(errors)} failed answers: {errors[:3]}")
        n = len(results)
        return {
            "chunk_size": chunk_size,
            "timeout_ms": timeout_ms,
            "events": sum(r[0] for r in results) / n,
            "chunks": sum(r[1] for r in results) / n,
            "bytes": sum(r[2] for r in results) / n,
            "ttfc_ms": statistics.median(r[3] for r in results) * 1000,
            "agentd_cpu_us": cpu / n * 1e6,
            "client_parse_us": sum(r[4] for r in results) / n * 1e6,
            "answers_per_s": n / wall,
        }
    finally:
        for p in (agentd, fake):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agentd", default="target/release/agentd")
    ap.add_argument("--fake-llm", default="target/release/fake-llm")
    ap.add_argument("--answers", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--token-text", default="ab")
    ap.add_argument("--token-delay-ms", type=int, default=1)
    ap.add_argument("--settings", default="0:50,100:50")
    args = ap.parse_args()
    if not 1 <= args.answers <= 100_000 or not 1 <= args.concurrency <= 1000:
        raise SystemExit("--answers 1..100000, --concurrency 1..1000")
    rows = []
    for pair in args.settings.split(","):
        size, timeout = (int(x) for x in pair.split(":"))
        rows.append(run(args, size, timeout))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print("| STREAM_CHUNK_SIZE / TIMEOUT | chunk events per answer | events per answer "
          "| SSE KB per answer | agentd CPU µs per answer | client parse CPU µs per answer "
          "| time to first chunk p50 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        label = "off" if r["chunk_size"] == 0 else f"{r['chunk_size']} / {r['timeout_ms']} ms"
        print(f"| {label} | {r['chunks']:.1f} | {r['events']:.1f} | {r['bytes'] / 1024:.1f} "
              f"| {r['agentd_cpu_us']:.0f} | {r['client_parse_us']:.0f} "
              f"| {r['ttfc_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
