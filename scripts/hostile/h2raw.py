"""A minimal HTTP/2 cleartext client (h2c, prior knowledge) at the frame level, for
attack scripts.

It sends exactly the frames it is given, answers SETTINGS and PING and returns
connection-level flow-control credit so the server keeps talking, and records the
server's GOAWAY and the connection's close. It never retries or reconnects, and every
wait is bounded.
"""

import socket
import time
from urllib.parse import urlsplit

from h2.errors import ErrorCodes
from hyperframe.exceptions import UnknownFrameError
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_LEN = 9


def host_port(url: str):
    u = urlsplit(url)
    return u.hostname or "127.0.0.1", u.port or 80


def error_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


class Goaway:
    def __init__(self, frame: GoAwayFrame, at: float):
        self.error = error_name(frame.error_code)
        self.last_stream_id = frame.last_stream_id
        self.debug = bytes(frame.additional_data).decode("utf-8", "replace")
        self.at = at

    def as_dict(self):
        return {
            "error": self.error,
            "last_stream_id": self.last_stream_id,
            "debug": self.debug,
        }


class Conn:
    def __init__(self, host: str, port: int, connect_timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.started = time.monotonic()
        self.buf = bytearray()
        self.goaway = None
        self.closed_at = None
        self.bytes_sent = 0
        self.frames_received = 0
        self.settings_seen = False
        self.send(PREFACE + SettingsFrame(0).serialize())
        # Settle the SETTINGS exchange first: an ACK sent later could land inside a
        # header block, which is a protocol error of ours, not the server's defence.
        end = time.monotonic() + connect_timeout
        while not self.settings_seen and not self.stopped and time.monotonic() < end:
            self.poll(0.05)

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def stopped(self) -> bool:
        """The server said GOAWAY or closed the connection."""
        return self.goaway is not None or self.closed

    def _close(self):
        if self.closed_at is None:
            self.closed_at = time.monotonic()

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.sock.settimeout(5.0)
            self.sock.sendall(data)
            self.bytes_sent += len(data)
            return True
        except OSError:
            # Broken pipe, reset, or a server that stopped reading for 5 s.
            self._close()
            return False

    def poll(self, wait: float = 0.0):
        """Reads whatever has arrived, waiting up to `wait` s for the first bytes."""
        if self.closed:
            return
        try:
            self.sock.settimeout(wait if wait > 0 else 0.0)
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    self._close()
                    break
                self.buf += chunk
                self.sock.settimeout(0.0)
        except (BlockingIOError, TimeoutError):
            pass
        except OSError:
            self._close()
        self._parse()

    def wait_stopped(self, seconds: float):
        """Reads until GOAWAY or close, or `seconds` pass."""
        end = time.monotonic() + seconds
        while not self.stopped and time.monotonic() < end:
            self.poll(min(0.1, max(0.0, end - time.monotonic())))

    def _parse(self):
        while len(self.buf) >= FRAME_HEADER_LEN:
            try:
                frame, length = Frame.parse_frame_header(
                    memoryview(self.buf[:FRAME_HEADER_LEN])
                )
            except UnknownFrameError as e:
                frame, length = None, e.length
            if len(self.buf) < FRAME_HEADER_LEN + length:
                return
            body = memoryview(bytes(self.buf[FRAME_HEADER_LEN : FRAME_HEADER_LEN + length]))
            del self.buf[: FRAME_HEADER_LEN + length]
            self.frames_received += 1
            if frame is None:
                continue
            frame.parse_body(body)
            self._handle(frame)

    def _handle(self, frame):
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.send(SettingsFrame(0, flags=["ACK"]).serialize())
            self.settings_seen = True
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.send(PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize())
        elif isinstance(frame, GoAwayFrame):
            if self.goaway is None:
                self.goaway = Goaway(frame, time.monotonic())
        elif isinstance(frame, DataFrame) and frame.flow_controlled_length:
            # Credit the connection window so responses to reset streams never stall it.
            self.send(WindowUpdateFrame(0, window_increment=frame.flow_controlled_length).serialize())

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
