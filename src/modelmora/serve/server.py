"""Run the app under uvicorn on a socket we bind ourselves (so ``--port 0`` works and the
real port is printed once the server is ready to take requests)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn

from modelmora import netutil
from modelmora.errors import ModelMoraError, UserInputError
from modelmora.serve.app import create_app
from modelmora.serve.config import ServedModel, ServerSettings
from modelmora.serve.http_limits import ConnectionLimits, limited_protocol

__all__ = ["READY_PREFIX", "run"]

READY_PREFIX = "modelmora serve: ready on "
"""The stdout line scripts and tests wait for: ``READY_PREFIX + "http://HOST:PORT"``."""


def run(
    settings: ServerSettings, models: Sequence[ServedModel], *, access_log: bool = False
) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish before workers stop."""
    by_name: dict[str, ServedModel] = {}
    for model in models:
        if model.name in by_name:
            raise UserInputError(f"model {model.name!r} is given twice")
        model.check_files()
        by_name[model.name] = model
    missing = [name for name in settings.preload if name not in by_name]
    if missing:
        raise UserInputError(
            f"--preload {', '.join(missing)}: no such model "
            f"(served: {', '.join(by_name) or 'none'})"
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    sock = netutil.bind(settings.host, settings.port)
    sock.set_inheritable(True)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def announce() -> None:
        print(READY_PREFIX + url, flush=True)

    app = create_app(settings, by_name, on_ready=announce)
    limits = ConnectionLimits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_header_bytes=settings.max_header_bytes,
    )
    config = uvicorn.Config(
        app,
        http=limited_protocol(limits),
        limit_concurrency=settings.max_connections,
        lifespan="on",
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
        server_header=False,
        # No X-Forwarded-For rewriting: nothing here uses the client address, and the
        # middleware costs every request a pass over its headers.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise ModelMoraError("the server did not start (see the log above)")
    sys.stdout.flush()
