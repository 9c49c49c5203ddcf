"""The content-addressed model store, its downloads and its upkeep (its DuckDB mirror is
:mod:`modelmora.index`).

Public surface (everything else is an implementation detail):

* :class:`Store` — layout and atomic operations under ``MODELMORA_HOME``;
* :func:`ensure_blob` / :func:`pull` / :func:`pull_entries` — verified downloads;
* :func:`verify_store`, :func:`collect_garbage` — ``cache verify`` and ``cache gc``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelmora.cache.download import BlobResult, PullReport, ensure_blob, pull, pull_entries
    from modelmora.cache.gc import GcReport, collect_garbage
    from modelmora.cache.store import SnapshotRecord, Store, StoreError
    from modelmora.cache.verify import VerifyReport, verify_store
    from modelmora.home import default_home, modelmora_home

_HOMES = {
    "BlobResult": "download",
    "PullReport": "download",
    "ensure_blob": "download",
    "pull": "download",
    "pull_entries": "download",
    "GcReport": "gc",
    "collect_garbage": "gc",
    "default_home": "modelmora.home",
    "modelmora_home": "modelmora.home",
    "SnapshotRecord": "store",
    "Store": "store",
    "StoreError": "store",
    "VerifyReport": "verify",
    "verify_store": "verify",
}
__all__ = [
    "BlobResult",
    "GcReport",
    "PullReport",
    "SnapshotRecord",
    "Store",
    "StoreError",
    "VerifyReport",
    "collect_garbage",
    "default_home",
    "ensure_blob",
    "modelmora_home",
    "pull",
    "pull_entries",
    "verify_store",
]


def __getattr__(name: str) -> Any:
    """Each name is imported on first use, so that ``modelmora.cache.statcache`` or
    ``modelmora.cache.filecheck`` (the install fast path, serve workers) cost only themselves."""
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(import_module(module if "." in module else f"modelmora.cache.{module}"), name)
