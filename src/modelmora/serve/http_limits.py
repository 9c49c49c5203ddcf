"""HTTP/1.1 connection limits uvicorn does not have: header and body read timeouts and a
header size limit (a slow-loris or a 40 MB header must not hold a connection or memory).

uvicorn's httptools protocol keeps the server fast (h11 costs ~30 % of small-request
throughput here) but takes headers of any size at any pace: its only timer is the idle
keep-alive one, and the first byte of a request cancels it. :func:`limited_protocol` is
that protocol with three rules added at its parser callbacks:

* the request line plus headers must arrive within ``header_timeout_s`` of the
  connection opening or of the previous response ending, else ``408`` and close;
* they may be at most ``max_header_bytes``, else ``431`` and close — counted as bytes
  arrive, so memory stays bounded by the limit plus one socket read;
* a request body must arrive within ``body_timeout_s`` of its headers, else ``408``.

The connection limit is uvicorn's own ``limit_concurrency`` (503 beyond it). This is the one
module that knows uvicorn's protocol internals; uvicorn is pinned in constraints.txt.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ConnectionLimits", "limited_protocol"]


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def limited_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with ``limits`` applied (pass as ``http=``)."""

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._limit_timer: asyncio.TimerHandle | None = None
            self._in_headers = True
            self._header_bytes = 0

        # -- timers --------------------------------------------------------------------
        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._limit_timer = self.loop.call_later(seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._limit_timer is not None:
                self._limit_timer.cancel()
                self._limit_timer = None

        def _timed_out(self) -> None:
            self._limit_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete or not self._responding():
                self._refuse(408, "the request did not arrive in time")
            else:
                self.transport.close()

        def _responding(self) -> bool:
            return bool(self.cycle is not None and self.cycle.response_started)

        def _refuse(self, status: int, message: str) -> None:
            body = message.encode()
            head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
            self.transport.write(
                head + b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body
            )
            if self.cycle is not None:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()

        # -- uvicorn's hooks -----------------------------------------------------------
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(limits.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            too_big = self._in_headers and self._header_bytes > limits.max_header_bytes
            if too_big and not self.transport.is_closing():
                self._refuse(431, f"request line and headers over {limits.max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            if self._limit_timer is None:
                self._arm(limits.header_timeout_s)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._header_bytes = 0
            self._arm(limits.body_timeout_s)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._in_headers = True
                self._header_bytes = 0
                # The next request's headers: uvicorn's keep-alive timer covers the idle
                # wait; ours covers a request that starts and then trickles.

    return LimitedHttpToolsProtocol
