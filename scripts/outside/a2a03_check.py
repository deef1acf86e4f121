"""The official A2A Python SDK of the 0.3 protocol (PyPI `a2a-sdk` 0.3.x, pinned in
a2a03-requirements.txt) against agentd's A2A front door, speaking the 0.3 method names
(message/send, message/stream, tasks/get, tasks/cancel, tasks/resubscribe) and shapes:
the agent card through A2ACardResolver, a client from ClientFactory on that card,
streaming and non-streaming sends, tasks/get, tasks/cancel mid-stream, tasks/resubscribe
(mid-stream on a slow answer, and refused on a finished task), a non-blocking send
followed by polling, a task that fails mid-stream, an unknown task, and the API key as
the bearer token that the SDK's AuthInterceptor adds because the card's security
schemes say so.

Runs in its own venv (.venv-outside-a2a03: the 0.3 SDK cannot share one with the 1.0
SDK the a2a-python group uses); run.py starts it and reads the one JSON line it prints.

usage: python a2a03_check.py BASE_URL PROMPT ERROR_PROMPT|- SLOW_PROMPT|- LIVE_PROMPT|- API_KEY|-
Prints {version, card, stream, send, get, notFound, resubscribe, live, polling, cancel,
error}; cancel is null when SLOW_PROMPT is "-", live and polling when LIVE_PROMPT is
"-", error when ERROR_PROMPT is "-". LIVE_PROMPT must stream a few chunks and then
complete: tasks/resubscribe is sent once three chunks have come. A stream is summed up
by `summary` below (kinds as the events' `kind`, lowercase 0.3 states, final flags);
a part the client threw in is {"crash": ...}; an expected error is {error, message,
code (JSON-RPC), status (HTTP)}.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import json
import sys
import uuid
from typing import Any

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.auth import AuthInterceptor, CredentialService
from a2a.client.errors import A2AClientHTTPError, A2AClientJSONRPCError
from a2a.types import Message, Part, Role, TaskIdParams, TaskQueryParams, TextPart

ANSWER = "answer"


class KeyService(CredentialService):
    """The one API key, for whichever scheme the card asks for."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def get_credentials(self, security_scheme_name: str, context: Any) -> str | None:
        return self.key


def message(text: str) -> Message:
    return Message(role=Role.user, parts=[Part(root=TextPart(text=text))], message_id=str(uuid.uuid4()))


def parts_text(parts: list | None) -> str:
    return "".join(p.get("text", "") for p in (parts or []) if p.get("kind") == "text")


def answer_text(task: dict) -> str:
    return "".join(parts_text(a.get("parts")) for a in task.get("artifacts") or [] if a.get("artifactId") == ANSWER)


def dump(event: Any) -> dict:
    """An event as it came: dumped at once, since the SDK's task tracker later appends
    chunks into the artifact objects it has seen."""
    return event.model_dump(mode="json", by_alias=True, exclude_none=True)


def raw(client_event: Any) -> dict:
    """The wire event behind a BaseClient (task, update) pair, or a Message."""
    if isinstance(client_event, tuple):
        task, update = client_event
        return dump(update if update is not None else task)
    return dump(client_event)


def summary(events: list[dict]) -> dict:
    """kinds in order; text = the answer's artifact-update chunks; snapshot = the first
    task's answer text and state; states and finals of the status updates."""
    out: dict[str, Any] = {"kinds": [e.get("kind") for e in events], "text": "", "chunks": 0, "lastChunk": False,
                           "snapshotText": None, "snapshotState": None, "states": [], "finals": [],
                           "statusMessage": "", "taskId": None, "appendFlags": []}
    for i, e in enumerate(events):
        kind = e.get("kind")
        if kind == "task":
            out["taskId"] = out["taskId"] or e.get("id")
            if i == 0:
                out["snapshotText"] = answer_text(e)
                out["snapshotState"] = (e.get("status") or {}).get("state")
        elif kind == "artifact-update" and (e.get("artifact") or {}).get("artifactId") == ANSWER:
            out["text"] += parts_text(e["artifact"].get("parts"))
            out["chunks"] += 1
            out["appendFlags"].append(bool(e.get("append")))
            out["lastChunk"] = out["lastChunk"] or bool(e.get("lastChunk"))
        elif kind == "status-update":
            status = e.get("status") or {}
            out["states"].append(status.get("state"))
            out["finals"].append(bool(e.get("final")))
            out["statusMessage"] = parts_text((status.get("message") or {}).get("parts"))
            out["taskId"] = out["taskId"] or e.get("taskId")
    out["appendFlags"] = sorted(set(out["appendFlags"]))
    return out


async def consume(stream: Any) -> dict:
    """summary() of a BaseClient stream, plus what the SDK's own task tracker made of it:
    the answer text and state of the task it hands back with the last event."""
    events, last = [], None
    async for e in stream:
        events.append(raw(e))
        last = e
    out = summary(events)
    if isinstance(last, tuple):
        tracked = dump(last[0])
        out["sdkText"], out["sdkState"] = answer_text(tracked), (tracked.get("status") or {}).get("state")
    return out


def failure(e: BaseException) -> dict:
    out: dict[str, Any] = {"error": type(e).__name__, "message": str(e)}
    if isinstance(e, A2AClientJSONRPCError):
        out["code"] = e.error.code
        out["errorType"] = type(e.error).__name__
        out["message"] = e.error.message
    if isinstance(e, A2AClientHTTPError):
        out["status"] = e.status_code
    return out


async def guarded(fn) -> Any:
    try:
        return await fn()
    except Exception as e:  # noqa: BLE001 (reported to run.py)
        return {"crash": f"{type(e).__name__}: {e}"}


def task_view(t: Any) -> dict:
    d = dump(t)
    return {"kind": d.get("kind"), "id": d.get("id"), "contextId": d.get("contextId"),
            "state": (d.get("status") or {}).get("state"), "text": answer_text(d),
            "statusMessage": parts_text(((d.get("status") or {}).get("message") or {}).get("parts"))}


async def main(base: str, prompt: str, error_prompt: str, slow_prompt: str, live_prompt: str, key: str) -> dict:
    given = lambda v: v != "-"  # noqa: E731
    out: dict[str, Any] = {"version": importlib.metadata.version("a2a-sdk")}
    async with httpx.AsyncClient(timeout=30) as h:
        try:
            card = await A2ACardResolver(h, base).get_agent_card()
        except Exception as e:  # noqa: BLE001 (the card could not be read or is not a 0.3 card)
            out["crash"] = f"A2ACardResolver: {type(e).__name__}: {e}"
            return out
        schemes = {name: {"class": type(s.root).__name__, "type": getattr(s.root, "type", None),
                          "scheme": getattr(s.root, "scheme", None)}
                   for name, s in (card.security_schemes or {}).items()}
        out["card"] = {"name": card.name, "url": card.url, "protocolVersion": card.protocol_version,
                       "preferredTransport": card.preferred_transport, "streaming": card.capabilities.streaming,
                       "securitySchemes": schemes, "security": card.security}
        interceptors = [AuthInterceptor(KeyService(key))] if given(key) else []

        def client(**config: Any):
            return ClientFactory(ClientConfig(httpx_client=h, **config)).create(card, interceptors=interceptors)

        streaming, whole, polling = client(streaming=True), client(streaming=False), client(streaming=False,
                                                                                           polling=True)

        async def stream() -> dict:
            return await consume(streaming.send_message(message(prompt)))
        out["stream"] = await guarded(stream)

        async def send() -> dict:
            got = [e async for e in whole.send_message(message(prompt))]
            first = got[0]
            if not isinstance(first, tuple):
                return {"kind": "message", "count": len(got), "text": parts_text(raw(first).get("parts"))}
            return {**task_view(first[0]), "count": len(got)}
        out["send"] = await guarded(send)

        async def get() -> dict:
            return task_view(await whole.get_task(TaskQueryParams(id=out["send"]["id"])))
        out["get"] = await guarded(get)

        async def not_found() -> dict:
            try:
                return {"task": task_view(await whole.get_task(TaskQueryParams(id="no-such-task")))}
            except A2AClientJSONRPCError as e:
                return failure(e)
        out["notFound"] = await guarded(not_found)

        # A finished task: tasks/resubscribe must be refused (UnsupportedOperation, -32004),
        # surfaced by the client as its JSON-RPC error with that code.
        async def resubscribe_ended() -> dict:
            try:
                got = [raw(e) async for e in streaming.resubscribe(TaskIdParams(id=out["send"]["id"]))]
                return {"events": [e.get("kind") for e in got]}
            except Exception as e:  # noqa: BLE001 (which error: judged by run.py)
                return failure(e)
        out["resubscribe"] = await guarded(resubscribe_ended)

        out["live"] = None
        out["polling"] = None
        if given(live_prompt):
            # Once the original stream has had three chunks: one subscriber reads to the end,
            # another leaves after the first event (which must cancel nothing).
            async def live() -> dict:
                async def follow(task_id: str) -> Any:
                    try:
                        return await consume(streaming.resubscribe(TaskIdParams(id=task_id)))
                    except Exception as e:  # noqa: BLE001
                        return failure(e)

                async def leave(task_id: str) -> Any:
                    sub = streaming.resubscribe(TaskIdParams(id=task_id))
                    try:
                        return raw(await anext(sub)).get("kind")
                    except Exception as e:  # noqa: BLE001
                        return failure(e)
                    finally:
                        await sub.aclose()

                chunks: list[str] = []
                followed = left = None

                async def original():
                    nonlocal followed, left
                    async for e in streaming.send_message(message(live_prompt)):
                        ev = raw(e)
                        if ev.get("kind") == "artifact-update" and ev["artifact"].get("artifactId") == ANSWER:
                            chunks.append(ev["taskId"])
                            if len(chunks) == 3:
                                followed = asyncio.create_task(follow(ev["taskId"]))
                                left = asyncio.create_task(leave(ev["taskId"]))
                        yield e
                return {"original": await consume(original()), "subscribed": await followed if followed else None,
                        "left": await left if left else None}
            out["live"] = await guarded(live)

            # message/send with blocking false: the working task at once, then tasks/get.
            async def poll() -> dict:
                first = [e async for e in polling.send_message(message(live_prompt))][0]
                task = task_view(first[0]) if isinstance(first, tuple) else {"kind": "message"}
                states = []
                for _ in range(200):
                    t = task_view(await polling.get_task(TaskQueryParams(id=task["id"])))
                    states.append(t["state"])
                    if t["state"] not in ("submitted", "working"):
                        break
                    await asyncio.sleep(0.05)
                return {"first": task, "polls": len(states), "states": sorted(set(states)), "last": t}
            out["polling"] = await guarded(poll)

        out["cancel"] = None
        if given(slow_prompt):
            async def cancel() -> dict:
                events, canceled = [], None
                async for e in streaming.send_message(message(slow_prompt)):
                    events.append(raw(e))
                    if canceled is None and events[-1].get("kind") == "task":
                        canceled = task_view(await streaming.cancel_task(TaskIdParams(id=events[-1]["id"])))
                seen = summary(events)
                got = task_view(await streaming.get_task(TaskQueryParams(id=seen["taskId"])))
                try:
                    again = {"task": task_view(await streaming.cancel_task(TaskIdParams(id=seen["taskId"])))}
                except A2AClientJSONRPCError as e:
                    again = failure(e)
                return {"stream": seen, "canceled": canceled, "get": got, "cancelAgain": again}
            out["cancel"] = await guarded(cancel)

        out["error"] = None
        if given(error_prompt):
            async def error() -> dict:
                streamed = await consume(streaming.send_message(message(error_prompt)))
                first = [e async for e in whole.send_message(message(error_prompt))][0]
                return {"streamed": streamed,
                        "send": task_view(first[0]) if isinstance(first, tuple) else {"kind": "message"}}
            out["error"] = await guarded(error)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
