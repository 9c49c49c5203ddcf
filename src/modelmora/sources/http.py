"""HTTP shared by every source: one pooled client for small requests, one byte pump for files.

Creating an ``httpx.Client`` costs ~30 ms (it loads the CA bundle), so small requests share
one, keyed on ``SSL_CERT_FILE``/``SSL_CERT_DIR`` so a changed trust store is honoured.
File bodies go through urllib3 with 4 MiB reads instead: httpx reads 64 KiB at a time,
which caps a single download at a fraction of what curl gets from the same server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

import httpx
import urllib3

READ_SIZE = 4 << 20


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
