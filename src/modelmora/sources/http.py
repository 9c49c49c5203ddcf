"""One shared HTTP client for every source.

Creating an ``httpx.Client`` costs ~30 ms (it loads the CA bundle); a lock that fetches a
few small files from 50 repos would spend seconds on that alone. ``httpx.Client`` is
thread-safe and pools connections, so all sources share one; timeouts and auth headers are
passed per request. The client is keyed on ``SSL_CERT_FILE``/``SSL_CERT_DIR`` so a changed
trust store (a corporate CA, a test's self-signed certificate) is honoured.
"""

from __future__ import annotations

import os
from functools import cache

import httpx


def shared_client() -> httpx.Client:
    return _client(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@cache
def _client(cert_file: str | None, cert_dir: str | None) -> httpx.Client:
    return httpx.Client(
        follow_redirects=True,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )
