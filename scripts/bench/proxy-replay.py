#!/usr/bin/env python3
"""A cheap stand-in for the Python reference server, for scripts/bench/proxy.sh: it
answers `POST /assist` with the same bytes, written the same way, as
sentient-agent-framework 0.3.0's DefaultServer running reference_agent.py (HTTP/1.1
chunked, every event as two writes, `event: NAME\\n` then `data: JSON\\n\\n`, so a
proxy in front sees the same stream of small segments), but without FastAPI, pydantic or
an agent behind it: a raw asyncio protocol. Behind it, agentd's proxy core saturates
long before the upstream does, which is how the bench measures how many Python replicas
one agentd core can front.

Usage: proxy-replay.py PORT [--host HOST]. Standard library only; runs until killed.
"""
import argparse
import asyncio
import json
import logging
import re

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
NOT_ALLOWED = b'HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\ncontent-length: 31\r\n\r\n{"detail":"Method Not Allowed"}'
ID = "01JDX3ABCDEFGHJKMNPQRSTVWX"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def events(source: str, prompt: str) -> list:
    """The reference agent's answer (see scripts/interop/reference_agent.py)."""
    def ev(content_type, name, **rest):
        return {"content_type": content_type, "event_name": name, "schema_version": "1.0",
                "id": ID, "source": source, "metadata": None, **rest}
    out = [ev("atomic.textblock", "GREETING", content="Hello from the reference agent"),
           ev("atomic.json", "ECHO", content={"prompt": prompt, "length": len(prompt), "zeta": 1,
                                              "alpha": {"b": [1, 2.5], "a": "x"}})]
    for piece in re.findall(r"\S+\s*|\s+", prompt) or [prompt]:
        out.append(ev("chunked.text", "RESPONSE", stream_id="w70mg0tz5s", is_complete=False, content=piece))
    out.append(ev("chunked.text", "RESPONSE", stream_id="w70mg0tz5s", is_complete=True, content=" "))
    out.append(ev("atomic.done", "done"))
    return out


class Replay(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            n = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + n:
                return
            body, self.buf = self.buf[end + 4:end + 4 + n], self.buf[end + 4 + n:]
            if not head.startswith("POST"):
                self.t.write(NOT_ALLOWED)
                continue
            if self.t.is_closing():
                return
            req = json.loads(body)
            self.t.write(HEAD)
            for e in events(req["session"]["processor_id"], req["query"]["prompt"]):
                self.t.write(chunk(f"event: {e['event_name']}\n".encode()))
                self.t.write(chunk(f"data: {json.dumps(e, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()))
            self.t.write(b"0\r\n\r\n")


async def main() -> None:
    # wrk resets its connections at the end of a run; asyncio would log every write
    # that follows.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    server = await asyncio.get_running_loop().create_server(Replay, a.host, a.port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
