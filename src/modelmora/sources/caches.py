"""Download caches that sources keep beside the store: tfhub archives and git mirrors.

They are not content-addressed and no lock references them: a locked model needs its
blobs, and ``pull`` copies those out of these caches into ``blobs/``. Once every blob of a
model is stored, its archive or mirror is a second copy of the same bytes, so ``cache gc``
deletes it — except

* while a source uses it: a source holds a shared *use claim* (:func:`using`) while it
  creates or reads an item, and gc deletes an item only if it can take the claim
  exclusively without waiting, so nothing disappears under a running ``lock`` or ``pull``;
* while a registered lock has a model from that kind of source whose blobs are not all
  stored (a lock not pulled yet, or an interrupted pull): its next ``pull``, maybe
  offline, reads the cache.

The claim is filelock's SQLite-backed reader/writer lock, in a ``<item>.claim`` file that
is never deleted (deleting a lock file someone may be opening would let two processes
hold "the" lock at once).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelmora.fsutil import disk_size

if TYPE_CHECKING:
    from filelock import ReadWriteLock

log = logging.getLogger(__name__)

_STALE_DOWNLOAD_S = 3600.0
"""A temporary download older than this belongs to a process that is gone."""


@dataclass(frozen=True)
class SourceCache:
    directory: str
    """Under ``MODELMORA_HOME``."""
    item_glob: str
    """One archive or mirror, relative to ``directory``."""
    leftover_glob: str | None
    """Temporary downloads a killed process may have left, relative to ``directory``."""
    scheme: str
    """The source scheme whose ``lock`` and ``pull`` fill and read this cache."""


SOURCE_CACHES = (
    SourceCache("tfhub", "*/*.tar.gz", "*/.*.tmp", "tfhub"),
    SourceCache("git", "*.git", None, "torchhub"),
)


@dataclass(frozen=True)
class CacheItem:
    cache: SourceCache
    path: Path
    size: int


def _claim_failures() -> tuple[type[Exception], ...]:
    """What filelock's SQLite lock raises for a claim file it cannot use (not contention)."""
    import sqlite3  # not at module level: every CLI command imports this module

    return (OSError, sqlite3.Error, ValueError)


def _claim(item: Path) -> ReadWriteLock:
    # Imported here: the SQLite-backed lock costs ~10 ms to import, and every CLI command
    # imports this module through `cache gc`; only tfhub, torchhub and gc need it.
    from filelock import ReadWriteLock

    return ReadWriteLock(f"{item}.claim", is_singleton=False)


@contextmanager
def using(item: Path) -> Iterator[Path]:
    """Hold a shared use claim on ``item`` (which may not exist yet) for the block.

    A claim that cannot be taken (a claim file that is not a database, a filesystem where
    SQLite cannot lock) is not worth failing a lock or pull for: the block runs unclaimed,
    with a warning, and gc cannot take that claim either, so it skips the item.
    """
    item.parent.mkdir(parents=True, exist_ok=True)
    try:
        claim = _claim(item)
        claim.acquire_read()
    except _claim_failures() as exc:
        log.warning("could not claim %s (%s); continuing without the claim", item, exc)
        yield item
        return
    try:
        yield item
    finally:
        claim.release()
        claim.close()


def find_items(home: Path) -> list[CacheItem]:
    """Every archive and mirror in the source caches, and leftovers old enough to be dead."""
    items: list[CacheItem] = []
    cutoff = time.time() - _STALE_DOWNLOAD_S
    for cache in SOURCE_CACHES:
        root = home / cache.directory
        if not root.is_dir():
            continue
        try:
            found = sorted(root.glob(cache.item_glob))
            if cache.leftover_glob:
                leftovers = root.glob(cache.leftover_glob)
                found += sorted(p for p in leftovers if p.stat().st_mtime < cutoff)
            items += [CacheItem(cache, p, disk_size(p)) for p in found]
        except FileNotFoundError:  # a concurrent gc or source replaced something: skip it
            continue
    return items


def remove_unless_in_use(item: Path) -> bool:
    """Delete ``item`` if no source holds its claim; never waits. False when in use."""
    from filelock import Timeout

    try:
        claim = _claim(item)
    except _claim_failures() as exc:
        log.warning("cache gc skips %s: its claim cannot be checked (%s)", item, exc)
        return False
    try:
        try:
            claim.acquire_write(blocking=False)
        except Timeout:
            return False
        except _claim_failures() as exc:
            log.warning("cache gc skips %s: its claim cannot be checked (%s)", item, exc)
            return False
        try:
            if item.is_dir():
                shutil.rmtree(item)
            else:
                os.unlink(item)
        except FileNotFoundError:
            pass
        finally:
            claim.release()
        return True
    finally:
        claim.close()
