"""Are these files still the bytes their record names? Asked before anything uses them.

``install`` asks it of an artifact before reusing it, a serve worker before loading one,
``cache verify`` of everything. The fast path is the store's stat cache (a file whose
device, inode, size and mtime are unchanged since it was hashed is trusted), so a warm
start costs one ``stat`` per file; ``full=True`` re-hashes every byte. Light on imports:
serve workers run it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelmora.cache.statcache import StatCache
from modelmora.fsutil import sha256_file


class RecordedFile(Protocol):
    """A file as a record lists it (an artifact's ``ArtifactFile``, a ``LockedFile``)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class FileDigest:
    """A :class:`RecordedFile` as plain data (what a serve worker is handed; pickles cheaply)."""

    path: str
    size: int
    sha256: str

    @classmethod
    def of(cls, f: RecordedFile) -> FileDigest:
        return cls(f.path, f.size, f.sha256)


@dataclass(frozen=True)
class FileProblem:
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


def file_problems(
    root: Path, files: Iterable[RecordedFile], cache: StatCache | None, *, full: bool = False
) -> list[FileProblem]:
    """What is wrong with ``files`` under ``root`` (empty when all match their record).

    Files that hash right are remembered in ``cache`` so that the next check is a stat.
    """
    problems: list[FileProblem] = []
    verified: dict[str, os.stat_result] = {}
    for f in files:
        path = root / f.path
        try:
            st = path.stat()
        except FileNotFoundError:
            problems.append(FileProblem(f.path, "missing"))
            continue
        except OSError as exc:
            problems.append(FileProblem(f.path, f"unreadable ({exc.strerror})"))
            continue
        if st.st_size != f.size:
            problems.append(FileProblem(f.path, f"{st.st_size} bytes, recorded {f.size}"))
            continue
        key = cache_key(path, f.sha256)
        if not full and cache is not None and cache.matches(key, st):
            continue
        actual = sha256_file(path)
        if actual != f.sha256:
            problems.append(
                FileProblem(f.path, f"content hashes to sha256 {actual}, recorded {f.sha256}")
            )
            continue
        verified[key] = path.stat()
    if verified and cache is not None:
        # A store we may read but not write (shared): the files are hashed again next time.
        with contextlib.suppress(OSError):
            cache.record(verified)
    return problems


def cache_key(path: Path, sha256: str) -> str:
    """Stat-cache key of a file outside ``blobs/`` (blobs are keyed by their digest alone)."""
    return f"{path}#{sha256}"


def remember_hashed(cache: StatCache, root: Path, files: Iterable[RecordedFile]) -> None:
    """Record files this process has just written and hashed, so no first check re-hashes."""
    with contextlib.suppress(OSError):
        cache.record({cache_key(root / f.path, f.sha256): (root / f.path).stat() for f in files})
