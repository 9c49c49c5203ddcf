"""A stat cache: ``(device, inode, size, mtime_ns) → sha256`` for blobs we already hashed.

Re-hashing gigabytes to answer "is my cache intact?" is DVC's most cited complaint. A blob
whose inode, size and modification time are unchanged since we last hashed it is trusted;
anything that rewrote it (in place, via a hardlinked snapshot file, or by replacement)
changes at least one of those and forces a re-hash. ``ctime`` is deliberately left out:
creating a hardlink bumps it, and every snapshot does that. Bit rot that changes no
metadata is what ``cache verify --full`` is for.

The cache is one JSON file so that checking thousands of blobs costs one read plus one
``stat`` each. Writers merge under a file lock and replace the file atomically; a lost or
unreadable cache only costs a re-hash.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from filelock import FileLock

from modelmora.fsutil import atomic_write_bytes

_VERSION = 1
Key = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class StatCache:
    """Process-local view of the shared stat-cache file; safe to use from several threads."""

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self._file_lock = FileLock(lock_path)
        self._mutex = threading.Lock()
        self._entries: dict[str, Key] | None = None

    @classmethod
    def of_store(cls, root: Path) -> StatCache:
        """The store's one stat cache (a serve worker opens it without a ``Store``)."""
        return cls(root / "statcache.json", root / "locks" / "statcache.lock")

    def _read(self) -> dict[str, Key]:
        try:
            raw = json.loads(self.path.read_bytes())
            if raw.get("version") != _VERSION:
                return {}
            return {
                str(k): (int(v[0]), int(v[1]), int(v[2]), int(v[3]))
                for k, v in raw["entries"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return {}

    def entries(self, *, reload: bool = False) -> dict[str, Key]:
        with self._mutex:
            if self._entries is None or reload:
                self._entries = self._read()
            return self._entries

    def matches(self, sha256: str, st: os.stat_result) -> bool:
        """Whether ``st`` is the stat we recorded when ``sha256`` was last verified.

        A miss re-reads the file once: another process may have verified the blob since.
        """
        key = stat_key(st)
        if self.entries().get(sha256) == key:
            return True
        return self.entries(reload=True).get(sha256) == key

    def record(self, verified: Mapping[str, os.stat_result]) -> None:
        """Remember blobs whose bytes were just hashed and matched their name."""
        self._update(add={sha: stat_key(st) for sha, st in verified.items()}, remove=())

    def forget(self, shas: Iterable[str]) -> None:
        self._update(add={}, remove=tuple(shas))

    def _update(self, *, add: Mapping[str, Key], remove: Iterable[str]) -> None:
        remove = tuple(remove)
        if not add and not remove:
            return
        with self._file_lock, self._mutex:
            entries = self._read()
            entries.update(add)
            for sha in remove:
                entries.pop(sha, None)
            payload = {"version": _VERSION, "entries": {k: list(v) for k, v in entries.items()}}
            # A cache: torn by a crash it reads as empty and blobs are simply re-hashed.
            atomic_write_bytes(
                self.path, json.dumps(payload, sort_keys=True).encode(), durable=False
            )
            self._entries = entries

    def clear(self) -> None:
        with self._file_lock, self._mutex:
            self.path.unlink(missing_ok=True)
            self._entries = {}
