"""The one way servers here take their port."""

from __future__ import annotations

import socket

import pytest

from modelmora.errors import UserInputError
from modelmora.netutil import bind


def test_a_bound_socket_already_accepts_connections() -> None:
    """`modelmora serve` prints its ready line before uvicorn starts accepting; a client that
    connects right after it waits in the backlog instead of being refused."""
    sock = bind("127.0.0.1", 0)
    try:
        socket.create_connection(sock.getsockname()[:2], timeout=5).close()
    finally:
        sock.close()


def test_a_port_in_use_is_a_user_error_naming_it() -> None:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    try:
        with pytest.raises(UserInputError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            bind("127.0.0.1", port)
    finally:
        sock.close()
