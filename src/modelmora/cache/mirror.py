"""What the store tells a mirror of itself (the DuckDB index) when it changes.

The index lives above the store (it also mirrors install's records), so the store cannot
import it; store operations that add or remove things take a :class:`StoreMirror` instead,
as an explicit argument — ``None`` where nothing mirrors the store (tests of the store
alone). ``modelmora.index.Index`` is the implementation.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from modelmora.cache.store import ProjectRecord, SnapshotRecord


class StoreMirror(Protocol):
    def record_pull(
        self,
        *,
        project: ProjectRecord | None,
        snapshots: Sequence[SnapshotRecord],
        blobs: Sequence[tuple[str, int]],
    ) -> None:
        """What one ``pull`` verified and materialized (blobs as ``(sha256, size)``)."""

    def forget(
        self,
        *,
        snapshots: Sequence[tuple[str, str]],
        blobs: Sequence[str],
        artifacts: Sequence[str] = (),
        projects: Sequence[str] = (),
    ) -> None:
        """What ``cache gc`` removed: snapshots as ``(name, content digest)``, blob
        digests, artifact keys, project directories."""

    def linked_artifacts(self, entry_digests: Collection[str]) -> set[str]:
        """Keys of the artifacts the mirror links to these lock entries (installs from
        before the store kept ``links/`` files are known only there)."""
