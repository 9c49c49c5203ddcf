"""The content-addressed model store, its downloads, its DuckDB index and its upkeep.

Public surface (everything else is an implementation detail):

* :class:`Store` — layout and atomic operations under ``MODELMORA_HOME``;
* :func:`ensure_blob` / :func:`pull` / :func:`pull_entries` — verified downloads;
* :class:`Index` — ``index.duckdb`` (imported lazily: DuckDB takes ~0.3 s to import);
* :func:`verify_store`, :func:`collect_garbage` — ``cache verify`` and ``cache gc``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelmora.cache.download import BlobResult, PullReport, ensure_blob, pull, pull_entries
from modelmora.cache.gc import GcReport, collect_garbage
from modelmora.cache.home import default_home, modelmora_home
from modelmora.cache.store import SnapshotRecord, Store, StoreError
from modelmora.cache.verify import VerifyReport, verify_store

if TYPE_CHECKING:
    from modelmora.cache.index import Index

__all__ = [
    "BlobResult",
    "GcReport",
    "Index",
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
    if name == "Index":
        from modelmora.cache.index import Index

        return Index
    raise AttributeError(name)
