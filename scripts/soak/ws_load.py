#!/usr/bin/env python3
"""WebSocket share of the soak: a few sockets on GET /ws, each asking agent queries,
pinging, and sending bad messages, reconnecting now and then, until the time is up.

    ws_load.py --port PORT [--sockets 4] [--duration 30] [--think-ms 50] [--reconnect-every 200]

Per socket, in turn: `{"type":"agent-query",...}` (expected: events up to `done`, none an
error, then `{"type":"metrics"}`), every 10th a `{"type":"ping"}` (expected `pong`), every
25th a message that is not JSON (the injected fault; expected `{"type":"error"}` and the
socket left open). Every --reconnect-every operations the socket is closed with the
close handshake and a new one opened. Anything else (another answer, a timeout, a socket
that fails) counts as unexpected. Prints one line `WSJSON {...}` at the end.

A minimal RFC 6455 client on the standard library only (masked client frames, no
extensions), so the soak needs nothing installed. It must never be used against a
server it does not start a soak for: it has no TLS and no limits of its own beyond
the socket timeout.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time

TIMEOUT_S = 10.0
ULID = "01JDX3ABCDEFGHJKMNPQRSTVWX"


class Closed(Exception):
    pass


class Ws:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\nx-request-id: soak.ws\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise Closed(f"handshake refused: {head[:80]!r}")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed("connection closed")
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, opcode, payload=b""):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self.send(0x1, text.encode())

    def recv(self):
        """The next data message as (opcode, bytes); answers pings on the way."""
        parts, first_op = [], None
        while True:
            b0, b1 = self._take(2)
            fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            payload = self._take(n)
            if op == 0x9:
                self.send(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                raise Closed(f"close frame {payload[:2].hex()}")
            if op != 0x0:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def recv_json(self):
        op, data = self.recv()
        if op != 0x1:
            raise Closed(f"binary message {data[:40]!r}")
        return json.loads(data)

    def close(self):
        """The close handshake: our close frame, then the server's."""
        try:
            self.send(0x8, struct.pack("!H", 1000))
            while True:
                self.recv()
        except (Closed, OSError):
            pass
        finally:
            self.sock.close()


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = {k: {"ok": 0, "bad": 0} for k in ("query", "ping", "bad_message", "socket")}
        self.sockets = 0
        self.failures = []

    def add(self, kind, ok, why=None):
        with self.lock:
            self.kinds[kind]["ok" if ok else "bad"] += 1
            if not ok and why and len(self.failures) < 20:
                self.failures.append(f"{kind}: {why}")


def query(ws, n):
    rid = f"soak-{n}"
    ws.send_text(json.dumps({"type": "agent-query", "prompt": "soak", "id": ULID, "requestId": rid}))
    saw_done, saw_error = False, False
    while True:
        m = ws.recv_json()
        if m.get("type") == "metrics":
            if not saw_done:
                return "metrics before done"
            if saw_error:
                return "an error event"
            return None if m.get("requestId") == rid else f"metrics for {m.get('requestId')}"
        if m.get("type") is not None:
            return f"unexpected message {str(m)[:120]}"
        saw_done |= m.get("content_type") == "atomic.done"
        saw_error |= m.get("content_type") == "atomic.error"


def one_op(ws, n, counts):
    if n % 25 == 0:
        ws.send_text("this is not JSON")
        m = ws.recv_json()
        counts.add("bad_message", m.get("type") == "error", str(m)[:120])
    elif n % 10 == 0:
        ws.send_text('{"type":"ping"}')
        m = ws.recv_json()
        counts.add("ping", m.get("type") == "pong", str(m)[:120])
    else:
        why = query(ws, n)
        counts.add("query", why is None, why)


def run_socket(port, deadline, think_s, reconnect_every, counts):
    n, ws = 0, None
    while time.monotonic() < deadline:
        try:
            if ws is None:
                ws = Ws(port)
                with counts.lock:
                    counts.sockets += 1
            n += 1
            one_op(ws, n, counts)
            if n % reconnect_every == 0:
                ws.close()
                ws = None
        except (Closed, OSError, ValueError) as e:
            counts.add("socket", False, str(e))
            if ws is not None:
                ws.sock.close()
            ws = None
            time.sleep(0.2)
        time.sleep(think_s)
    if ws is not None:
        ws.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sockets", type=int, default=4)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--think-ms", type=float, default=50.0)
    ap.add_argument("--reconnect-every", type=int, default=200)
    a = ap.parse_args()
    counts = Counts()
    deadline = time.monotonic() + a.duration
    threads = [threading.Thread(target=run_socket, daemon=True,
                                args=(a.port, deadline, a.think_ms / 1000, a.reconnect_every, counts))
               for _ in range(a.sockets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.duration + 2 * TIMEOUT_S)
    with counts.lock:
        print("WSJSON " + json.dumps({"kinds": counts.kinds, "sockets_opened": counts.sockets,
                                      "failures": counts.failures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
