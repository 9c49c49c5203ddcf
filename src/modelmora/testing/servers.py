"""A socket server running on a background thread: what every test server and emulator needs.

Test fixtures and the emulators each started ``serve_forever`` on a thread and, at teardown,
shut it down, closed the socket and joined the thread. This is that, once. The server is
bound (and listening) before it is handed over, so it is ready at once: no polling.
"""

from __future__ import annotations

import socketserver
import threading
from types import TracebackType

__all__ = ["BackgroundServer"]

_POLL_S = 0.05
"""``serve_forever``'s poll interval: short, so that stopping (every teardown) is fast."""


class BackgroundServer:
    """Serves ``server`` on a daemon thread from construction until :meth:`stop`."""

    def __init__(self, server: socketserver.TCPServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(_POLL_S,), name=name, daemon=True
        )
        self._thread.start()

    def url(self, scheme: str = "http") -> str:
        host, port = self.server.server_address[:2]
        return f"{scheme}://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
