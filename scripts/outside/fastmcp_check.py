"""fastmcp's Client (PyPI `fastmcp`, pinned in fastmcp-requirements.txt) against agentd's
MCP front door over streamable HTTP: initialize, ping, tools/list, tools/call with
progress notifications and without, a call that fails mid-stream (isError, and the
client's ToolError), and invalid arguments.

Runs in its own venv (fastmcp needs a Starlette newer than the one the official
sentient-agent-framework pins for the rest of the suite); run.py starts it and reads
the one JSON line it prints.

usage: python fastmcp_check.py MCP_URL PROMPT ERROR_PROMPT|- API_KEY|-
Prints {init, tools, progress, whole, error, invalid, version}; error is null when
ERROR_PROMPT is "-"; a part the client threw in is {"crash": ...}.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys
from typing import Any

from fastmcp import Client
from fastmcp.exceptions import ToolError

TOOL = "ask_agent"


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def failure(e: BaseException) -> dict:
    return {"error": type(e).__name__, "message": str(e)}


async def main(url: str, prompt: str, error_prompt: str, key: str) -> dict:
    out: dict[str, Any] = {"version": importlib.metadata.version("fastmcp")}
    client = Client(url, auth=key if key != "-" else None, timeout=20)
    try:
        async with client:
            init = client.initialize_result
            out["init"] = {
                "protocolVersion": init.protocol_version if init else None,
                "server": init.server_info.name if init else None,
                "tools": init.capabilities.tools is not None if init else False,
                "ping": await client.ping(),
            }
            tools = await client.list_tools()
            out["tools"] = [{"name": t.name, "required": t.input_schema.get("required")} for t in tools]

            updates: list[tuple[float, str | None]] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                updates.append((progress, message))

            try:
                r = await client.call_tool(TOOL, {"prompt": prompt}, progress_handler=on_progress)
                out["progress"] = {"text": text_of(r), "isError": r.is_error, "updates": updates}
            except Exception as e:  # noqa: BLE001 (reported to run.py)
                out["progress"] = {"crash": f"{type(e).__name__}: {e}"}

            try:
                r = await client.call_tool(TOOL, {"prompt": prompt})
                out["whole"] = {"text": text_of(r), "isError": r.is_error}
            except Exception as e:  # noqa: BLE001
                out["whole"] = {"crash": f"{type(e).__name__}: {e}"}

            out["error"] = None
            if error_prompt != "-":
                err: dict[str, Any] = {}
                seen: list[float] = []

                async def on_fail_progress(progress: float, total: float | None, message: str | None) -> None:
                    seen.append(progress)

                r = await client.call_tool(TOOL, {"prompt": error_prompt}, progress_handler=on_fail_progress,
                                           raise_on_error=False)
                err["streamed"] = {"isError": r.is_error, "text": text_of(r), "progress": len(seen)}
                try:
                    r = await client.call_tool(TOOL, {"prompt": error_prompt})
                    err["raised"] = {"error": None, "text": text_of(r)}
                except ToolError as e:
                    err["raised"] = failure(e)
                out["error"] = err

            try:
                r = await client.call_tool(TOOL, {"prompt": ""}, raise_on_error=False)
                out["invalid"] = {"isError": r.is_error, "text": text_of(r)}
            except Exception as e:  # noqa: BLE001 (a JSON-RPC error: what is expected)
                out["invalid"] = failure(e)
    except Exception as e:  # noqa: BLE001 (connection refused, 401, …)
        out["crash"] = f"{type(e).__name__}: {e}"
    return out


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
