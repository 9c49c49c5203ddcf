"""HTTP shared by every source: one pooled client, one byte pump, one retry policy.

Creating an ``httpx.Client`` costs ~30 ms (it loads the CA bundle), so small requests share
one, keyed on ``SSL_CERT_FILE``/``SSL_CERT_DIR`` so a changed trust store is honoured.
File bodies go through urllib3 with 4 MiB reads instead: httpx reads 64 KiB at a time,
which caps a single download at a fraction of what curl gets from the same server.

Every registry fails the same way: a request that hit a timeout, a dropped connection, 429
or 5xx is tried again (``1 + context.max_retries`` attempts, capped exponential backoff),
then the source says which registry was unreachable where, after how many attempts, and
the last short reason (:func:`retrying`, :class:`Transient`). Anything else fails at once,
mapped by the source to its own message.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import urllib3

from modelmora.errors import IntegrityError

if TYPE_CHECKING:
    import httpx

READ_SIZE = 4 << 20
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 2.0
RETRY_AFTER_CAP_S = 30.0
"""The longest ``Retry-After`` we wait for: a registry asking for an hour gets a failure
that says so instead of a command that seems to hang."""
_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_T = TypeVar("_T")


class HttpStatusError(Exception):
    """A non-success answer to a file request; the source maps it to its own error."""

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = dict(headers)


class HttpTransportError(Exception):
    """Connection refused, reset or timed out: worth a retry."""


def shared_client() -> httpx.Client:
    return _client(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@cache
def _client(cert_file: str | None, cert_dir: str | None) -> httpx.Client:
    # Imported here: httpx costs ~60 ms, and downloads (urllib3) never need it.
    import httpx

    return httpx.Client(
        follow_redirects=True,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )


@cache
def _pool(cert_file: str | None, cert_dir: str | None) -> urllib3.PoolManager:
    if cert_file or cert_dir:
        return urllib3.PoolManager(
            num_pools=16, maxsize=16, ca_certs=cert_file, ca_cert_dir=cert_dir
        )
    import certifi

    return urllib3.PoolManager(num_pools=16, maxsize=16, ca_certs=certifi.where())


def stream_to_file(
    url: str,
    dest: Path,
    *,
    headers: Mapping[str, str],
    offset: int,
    timeout_s: float,
    size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """GET ``url`` into ``dest``: appended from ``offset`` on a 206, rewritten on a 200.

    With ``size`` (the whole file's declared or locked size) ``dest`` never grows past it:
    a ``Content-Length`` above what is left is refused before the body is read, and a body
    that goes on past it is cut off with :class:`IntegrityError` after one extra byte, so a
    lying or endless server costs at most ``size`` bytes of disk.

    Redirects are followed; urllib3 drops ``Authorization`` when a redirect leaves the host
    (the HF Hub sends LFS files to a CDN), so a token never travels to a third party.
    """
    pool = _pool(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    request_headers = dict(headers)
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    try:
        resp = pool.request(
            "GET",
            url,
            headers=request_headers,
            preload_content=False,
            redirect=True,
            retries=urllib3.Retry(total=None, connect=0, read=0, redirect=10, status=0),
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        )
    except urllib3.exceptions.HTTPError as exc:
        raise HttpTransportError(_reason(exc)) from exc
    try:
        if resp.status == 206 and offset:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise HttpStatusError(resp.status, resp.headers)
            mode, start = "ab", offset
        elif resp.status == 200:
            mode, start = "wb", 0
        else:
            raise HttpStatusError(resp.status, resp.headers)
        left = None if size is None else size - start
        declared = resp.headers.get("Content-Length", "")
        if left is not None and declared.isdigit() and int(declared) > left:
            raise _oversize(size)
        with dest.open(mode) as fh:
            while True:
                want = READ_SIZE if left is None else min(READ_SIZE, left)
                if want == 0:
                    if resp.read(1):
                        raise _oversize(size)
                    break
                chunk = resp.read(want)
                if not chunk:
                    break
                fh.write(chunk)
                if left is not None:
                    left -= len(chunk)
                if progress is not None:
                    progress(len(chunk))
    except urllib3.exceptions.HTTPError as exc:
        raise HttpTransportError(_reason(exc)) from exc
    finally:
        resp.release_conn()


def _oversize(size: int | None) -> IntegrityError:
    return IntegrityError(
        f"the registry sent more than the {size} bytes the file has; stopped reading there",
        hint="nothing was stored; the registry is misbehaving or the file changed since "
        "`modelmora lock` (run it again if the change is intended)",
    )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).split(": ", 1)[-1][:200]


class Transient(Exception):
    """A failure another attempt may cure; ``reason`` is short and safe to show.

    Safe means no URL, header or token: it ends up in the final "unreachable" message.
    """

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        """How long the server asked us to wait (``Retry-After``), when it said."""


def short_reason(exc: BaseException) -> str:
    """``[Errno 111] Connection refused`` → ``Connection refused``.

    httpx and requests wrap the socket error in text that can carry the URL (with a query
    string that may hold a signed credential); the errno text is what a user needs.
    """
    text = str(exc)
    m = _ERRNO_RE.search(text)
    if m:
        return m.group(1).strip()
    return type(exc).__name__ if len(text) > 200 or not text else text


def raise_if_transient(status: int, headers: Mapping[str, str] | None = None) -> None:
    """429 and 5xx: the server is throttling or restarting, so a later attempt may succeed.

    Its ``Retry-After`` (seconds or an HTTP date) is kept for :func:`retrying` to honour.
    """
    if status == 429 or status >= 500:
        wait = retry_after_seconds((headers or {}).get("Retry-After"))
        raise Transient(f"HTTP {status}", retry_after_s=wait)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After: 3`` → 3.0; an HTTP date → seconds from now; junk → None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    from datetime import datetime, timezone

    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


@contextmanager
def transient_failures(timeout_s: float) -> Iterator[None]:
    """Turn what the shared client and :func:`stream_to_file` raise on a failure worth
    retrying into :class:`Transient`: timeouts, connection errors, 429/5xx file answers.

    Other ``HttpStatusError`` answers pass through, for the source to map (401, 404 …).
    """
    try:
        yield
    except HttpTransportError as exc:
        raise Transient(str(exc)) from None
    except HttpStatusError as exc:
        raise_if_transient(exc.status, exc.headers)
        raise
    except Exception as exc:
        # Only a client that was imported can have raised: no need to import httpx here.
        httpx = sys.modules.get("httpx")
        if httpx is not None and isinstance(exc, httpx.TimeoutException):
            raise Transient(f"timed out after {timeout_s:g} s") from None
        if httpx is not None and isinstance(exc, httpx.TransportError):
            raise Transient(short_reason(exc)) from None
        raise


def retrying(
    call: Callable[[], _T], *, retries: int, unreachable: Callable[[int, str], Exception]
) -> _T:
    """``call()``, again after each :class:`Transient` up to ``1 + retries`` attempts.

    Backoff doubles from 0.2 s up to 2 s, so a blip costs well under a second while a dead
    host fails in bounded time; a server's ``Retry-After`` is waited for instead, up to
    :data:`RETRY_AFTER_CAP_S` (longer requests end the attempts). After the last attempt, raises
    ``unreachable(attempts, last reason)``: the registry's own wording and hint. Any other
    exception ends the attempts at once.
    """
    attempts = 1 + max(retries, 0)
    reason = ""
    for attempt in range(1, attempts + 1):
        asked: float | None = None
        try:
            return call()
        except Transient as exc:
            reason = exc.reason
            asked = exc.retry_after_s
        if asked is not None and asked > RETRY_AFTER_CAP_S:
            reason += f" (the server asked to retry after {asked:.0f} s)"
            raise unreachable(attempt, reason)
        if attempt < attempts:
            backoff = min(BACKOFF_BASE_S * 2 ** (attempt - 1), BACKOFF_CAP_S)
            time.sleep(backoff if asked is None else max(asked, backoff))
    raise unreachable(attempts, reason)


def download_resuming(
    target: Callable[[], tuple[str, Mapping[str, str]]],
    dest: Path,
    *,
    size: int,
    offset: int,
    timeout_s: float,
    retries: int,
    refused: Callable[[HttpStatusError], Exception],
    unreachable: Callable[[int, str], Exception],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Download one file of known ``size`` into ``dest`` under the shared retry policy.

    The first attempt appends from ``offset`` (what the caller already has); every later
    one resumes from what is in ``dest`` by then, so a connection dropped at 90 % costs the
    last 10 %. ``target()`` gives the URL and headers per attempt (registries that sign
    URLs hand out fresh ones); ``refused`` maps a non-retryable HTTP answer to the
    registry's error, and may return :class:`Transient` to ask for another attempt.
    """
    first = [offset]

    def attempt() -> None:
        url, headers = target()
        start = first.pop() if first else (dest.stat().st_size if dest.exists() else 0)
        if start > size:  # not a prefix of this file: start over
            start = 0
        if start and start == size:
            return
        try:
            with transient_failures(timeout_s):
                stream_to_file(
                    url,
                    dest,
                    headers=headers,
                    offset=start,
                    timeout_s=timeout_s,
                    size=size,
                    progress=progress,
                )
        except HttpStatusError as exc:
            raise refused(exc) from None

    retrying(attempt, retries=retries, unreachable=unreachable)
