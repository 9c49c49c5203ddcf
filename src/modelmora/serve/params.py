"""Request parameters every protocol shares: priority and deadline, parsed once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TypeVar

from modelmora.serve.errors import BadRequest

__all__ = ["next_before", "parse_priority", "parse_timeout_ms"]

_MAX_TIMEOUT_MS = 24 * 3600 * 1000.0
_PRIORITY_RANGE = (-(2**31), 2**31 - 1)


def parse_priority(value: object, source: str) -> int | None:
    """``X-Priority`` / v2 ``parameters.priority``: an integer; larger is served first."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{source} must be an integer, got {value!r}")
    try:
        priority = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise BadRequest(f"{source} must be an integer, got {value!r}") from None
    if not _PRIORITY_RANGE[0] <= priority <= _PRIORITY_RANGE[1]:
        raise BadRequest(f"{source} must fit in 32 bits, got {priority}")
    return priority


def parse_timeout_ms(value: object, source: str) -> float | None:
    """A deadline in milliseconds → seconds; 0 or absent means none."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{source} must be a number of milliseconds, got {value!r}")
    try:
        ms = float(value) if isinstance(value, int | float) else float(str(value).strip())
    except ValueError:
        raise BadRequest(f"{source} must be a number of milliseconds, got {value!r}") from None
    if not 0 <= ms <= _MAX_TIMEOUT_MS or ms != ms:
        raise BadRequest(f"{source} must be between 0 and {_MAX_TIMEOUT_MS:g} ms, got {value!r}")
    return ms / 1000.0 if ms > 0 else None


_T = TypeVar("_T")


async def next_before(stream: AsyncIterator[_T], deadline: float | None) -> _T:
    """The next item of ``stream``; ``asyncio.TimeoutError`` once ``deadline`` (a
    ``time.monotonic()`` value) has passed, ``StopAsyncIteration`` at its end."""
    if deadline is None:  # no timer to arm: this runs once per streamed token
        return await anext(stream)
    wait = deadline - time.monotonic()
    if wait <= 0:
        raise asyncio.TimeoutError
    return await asyncio.wait_for(anext(stream), wait)
