"""A socket server running on a background thread: what every test server and emulator needs.

Test fixtures and the emulators each started ``serve_forever`` on a thread and, at teardown,
shut it down, closed the socket and joined the thread. This is that, once. The server is
bound (and listening) before it is handed over, so it is ready at once: no polling.
"""

from __future__ import annotations

import socketserver
import sys
import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["BackgroundServer", "CountingProxy", "Emulator", "EmulatorServer"]

_POLL_S = 0.05
"""``serve_forever``'s poll interval: short, so that stopping (every teardown) is fast."""


_E = TypeVar("_E", bound="Emulator")


class Emulator:
    """What every emulator is: started and closed, or used as a context manager."""

    def start(self: _E) -> _E:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _E) -> _E:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EmulatorServer(ThreadingHTTPServer):
    """The HTTP server of an emulator: a thread per request, and clients that hang up
    (timeouts, killed downloads) are expected, not errors worth a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


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


_HOP_HEADERS = ("content-length", "content-encoding", "transfer-encoding", "connection")


class CountingProxy:
    """A reverse proxy on 127.0.0.1 that forwards every request to ``upstream`` and counts
    them: what a contract test puts in front of a real registry server (mlflow, moto) to
    prove that nothing reached it. Bodies are buffered (test payloads are small)."""

    def __init__(self, upstream: str) -> None:
        import http.server

        import httpx

        self.count = 0
        lock = threading.Lock()
        client = httpx.Client(base_url=upstream.rstrip("/"), timeout=60)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                with lock:
                    proxy.count += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                resp = client.request(self.command, self.path, content=body, headers=headers)
                self.send_response(resp.status_code)
                for key, value in resp.headers.items():
                    if key.lower() not in _HOP_HEADERS:
                        self.send_header(key, value)
                head = self.command == "HEAD"
                data = b"" if head else resp.content  # decoded: Content-Encoding is dropped
                size = resp.headers.get("content-length", "0") if head else str(len(data))
                self.send_header("Content-Length", size)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = _forward

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._client = client
        self._running = BackgroundServer(server, "counting-proxy")
        self.url = self._running.url()

    def close(self) -> None:
        self._running.stop()
        self._client.close()
