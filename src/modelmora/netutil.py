"""Listening sockets, shared by every command that starts a server (``serve``, ``ui``)."""

from __future__ import annotations

import socket

from modelmora.errors import UserInputError

BACKLOG = 2048
"""Connections waiting to be accepted (uvicorn's default, which listens again with it)."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``0``: any free port) and listening, or a user error
    saying why not (port in use, unknown host, no permission) — the same words for every
    server. Listening from here on: ``modelmora serve`` prints its ready line from the app's
    start-up, before uvicorn starts accepting, and a client that connects at once must wait
    in the backlog, not be refused."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise UserInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
