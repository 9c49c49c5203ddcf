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

if TYPE_CHECKING:
    import httpx

READ_SIZE = 4 << 20
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 2.0
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
    progress: Callable[[int], None] | None = None,
) -> None:
    """GET ``url`` into ``dest``: appended from ``offset`` on a 206, rewritten on a 200.

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
            mode = "ab"
        elif resp.status == 200:
            mode = "wb"
        else:
            raise HttpStatusError(resp.status, resp.headers)
        with dest.open(mode) as fh:
            while chunk := resp.read(READ_SIZE):
                fh.write(chunk)
                if progress is not None:
                    progress(len(chunk))
    except urllib3.exceptions.HTTPError as exc:
        raise HttpTransportError(_reason(exc)) from exc
    finally:
        resp.release_conn()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).split(": ", 1)[-1][:200]


class Transient(Exception):
    """A failure another attempt may cure; ``reason`` is short and safe to show.

    Safe means no URL, header or token: it ends up in the final "unreachable" message.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


def raise_if_transient(status: int) -> None:
    """429 and 5xx: the server is throttling or restarting, so a later attempt may succeed."""
    if status == 429 or status >= 500:
        raise Transient(f"HTTP {status}")


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
        raise_if_transient(exc.status)
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
    host fails in bounded time. After the last attempt, raises
    ``unreachable(attempts, last reason)``: the registry's own wording and hint. Any other
    exception ends the attempts at once.
    """
    attempts = 1 + max(retries, 0)
    reason = ""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Transient as exc:
            reason = exc.reason
        if attempt < attempts:
            time.sleep(min(BACKOFF_BASE_S * 2 ** (attempt - 1), BACKOFF_CAP_S))
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
                    url, dest, headers=headers, offset=start, timeout_s=timeout_s, progress=progress
                )
        except HttpStatusError as exc:
            raise refused(exc) from None

    retrying(attempt, retries=retries, unreachable=unreachable)
