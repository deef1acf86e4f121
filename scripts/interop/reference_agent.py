#!/usr/bin/env python3
"""A small agent served by the official sentient-agent-framework 0.3.0 DefaultServer:
the upstream that scripts/proxy-interop.sh and scripts/bench/proxy.sh put agentd in
front of.

Usage: reference_agent.py PORT [--host HOST] [--quiet]

It mounts the package's own server unchanged (FastAPI + uvicorn, `POST /assist` only,
body `{query, session}`). For each query it emits, through the package's response
handler: a text block `GREETING`, a JSON block `ECHO` ({prompt, length, zeta, alpha},
keys in that order), a text stream `RESPONSE` carrying the prompt in pieces (word plus
its trailing blanks, so the pieces join back into the prompt), then `done`.
--quiet turns uvicorn's access log off (one line per request costs a Python server
a good part of its time; the bench uses it so agentd is compared with the fastest
form of the reference). Runs until killed.
"""
from __future__ import annotations

import argparse
import re

import uvicorn

from sentient_agent_framework import AbstractAgent, DefaultServer, Query, ResponseHandler, Session

GREETING = "Hello from the reference agent"


def pieces(prompt: str) -> list[str]:
    """The prompt cut after each run of blanks; "".join(pieces(p)) == p."""
    return re.findall(r"\S+\s*|\s+", prompt) or [prompt]


def echo_content(prompt: str) -> dict:
    return {"prompt": prompt, "length": len(prompt), "zeta": 1, "alpha": {"b": [1, 2.5], "a": "x"}}


class ReferenceAgent(AbstractAgent):
    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler):
        await response_handler.emit_text_block("GREETING", GREETING)
        await response_handler.emit_json("ECHO", echo_content(query.prompt))
        stream = response_handler.create_text_stream("RESPONSE")
        for piece in pieces(query.prompt):
            await stream.emit_chunk(piece)
        await stream.complete()
        await response_handler.complete()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--quiet", action="store_true", help="no access log")
    args = ap.parse_args()
    server = DefaultServer(ReferenceAgent(name="reference agent"))
    if args.quiet:
        # The same app DefaultServer.run() serves, with the access log off.
        uvicorn.run(server._app, host=args.host, port=args.port, access_log=False, log_level="warning")
    else:
        server.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
