"""Server-Sent Events: the framing, and a response that writes events as they come.

Why not Starlette's ``StreamingResponse``: on a server speaking ASGI below 2.4 (uvicorn) it
runs every response in an anyio task group, the body in one task and a disconnect listener
in another, and its body task is one more generator between the worker's chunk and the
socket. A generation streams one event per token, so that machinery is paid per request and
per token on the router's single event-loop thread, which shares the cores with the worker.
:class:`EventStream` streams from the request's own task and listens for the disconnect in
one plain asyncio task that cancels it: the producer's ``finally`` blocks run at once (the
worker is told to drop the sequence), not when the next event fails to be written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelmora.serve.wire import dumps

__all__ = ["DONE", "EventStream", "event"]

DONE = b"data: [DONE]\n\n"
"""The end marker OpenAI clients wait for."""


def event(doc: Any) -> bytes:
    """One ``data:`` event carrying ``doc`` as JSON (JSON has no raw newlines to escape)."""
    return b"data: " + dumps(doc) + b"\n\n"


class EventStream(Response):
    """``text/event-stream`` from an async generator of already framed events (closed when
    the response ends, however it ends)."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        assert streaming is not None
        gone = False

        async def listen() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            streaming.cancel()

        listener = asyncio.ensure_future(listen())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # Before the last write: a server may report a finished response as a disconnect.
            listener.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            uncancel = getattr(streaming, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
        finally:
            listener.cancel()
            await self.events.aclose()
