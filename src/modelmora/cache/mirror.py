"""What the store tells a mirror of itself (the DuckDB index) when it changes.

The index lives above the store (it also mirrors install's records), so the store cannot
import it; store operations that add or remove things take a :class:`StoreMirror` instead,
as an explicit argument — ``None`` where nothing mirrors the store (tests of the store
alone). ``modelmora.index.Index`` is the implementation.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from modelmora.cache.store import ProjectRecord, SnapshotRecord


@dataclass(frozen=True)
class Pulled:
    """What one ``pull`` verified and materialized."""

    project: ProjectRecord | None
    """The project that pulled (registered so that ``cache gc`` keeps what it locks)."""
    snapshots: Sequence[SnapshotRecord]
    blobs: Sequence[tuple[str, int]]
    """``(sha256, size)`` of every blob the pulled snapshots use."""


@dataclass(frozen=True)
class Removed:
    """What one ``cache gc`` removed from the store."""

    snapshots: Sequence[tuple[str, str]] = ()
    """``(name, content digest)``."""
    blobs: Sequence[str] = ()
    """sha256 digests."""
    artifacts: Sequence[str] = ()
    """Artifact keys."""
    projects: Sequence[str] = ()
    """Project directories that are gone."""


class StoreMirror(Protocol):
    def record_pull(self, pulled: Pulled) -> None:
        """What one ``pull`` verified and materialized."""

    def forget(self, removed: Removed) -> None:
        """What ``cache gc`` removed."""

    def linked_artifacts(self, entry_digests: Collection[str]) -> set[str]:
        """Keys of the artifacts the mirror links to these lock entries (installs from
        before the store kept ``links/`` files are known only there)."""
