"""``cache gc``: delete what no registered project's lock references any more.

A project registers itself on every ``pull``. Garbage is every snapshot, blob and partial
download that none of the still-existing registered projects' locks mention; every
converted artifact that none of their entries' installs uses (see
:class:`~modelmora.records.ArtifactLinks`); and the sources' download caches (tfhub
archives, git mirrors) that no unfinished pull needs (see
:mod:`modelmora.sources.caches`). A project whose directory is gone is unregistered;
a project whose lock cannot be read stops the collection (we cannot know what it needs, so
we delete nothing). Blobs, partials, artifacts and source caches that a running ``lock``,
``pull`` or ``install`` holds are skipped, never waited for.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from modelmora.cache.mirror import Removed, StoreMirror
from modelmora.cache.store import Store
from modelmora.errors import LockFileError, ModelMoraError
from modelmora.fsutil import disk_size
from modelmora.lock import read_lock
from modelmora.lock.resolve import LOCK_SCRATCH_PREFIX
from modelmora.records import ArtifactLinks, iter_artifact_dirs, read_artifact_quietly
from modelmora.sources.caches import find_items, remove_unless_in_use

_STALE_BUILD_S = 3600.0


@dataclass
class GcReport:
    dry_run: bool
    projects: list[str] = field(default_factory=list)
    dropped_projects: list[str] = field(default_factory=list)
    snapshots: list[tuple[str, str]] = field(default_factory=list)
    blobs: list[tuple[str, int]] = field(default_factory=list)
    partials: list[tuple[str, int]] = field(default_factory=list)
    artifacts: list[tuple[str, str, int]] = field(default_factory=list)
    """Converted artifacts (key, model that built it, bytes)."""
    source_caches: list[tuple[str, int]] = field(default_factory=list)
    """Archives and mirrors (path under the home, bytes)."""
    kept_source_caches: list[tuple[str, str]] = field(default_factory=list)
    """(cache directory, model) pairs: kept because that model's blobs are not all stored."""
    skipped_busy: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        sizes = [s for _, s in [*self.blobs, *self.partials, *self.source_caches]]
        return sum(sizes) + sum(s for _, _, s in self.artifacts)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "projects": self.projects,
            "dropped_projects": self.dropped_projects,
            "snapshots": [{"name": n, "content_digest": d} for n, d in self.snapshots],
            "blobs": [{"sha256": s, "size": n} for s, n in self.blobs],
            "partials": [{"sha256": s, "size": n} for s, n in self.partials],
            "artifacts": [{"key": k, "model": m, "size": n} for k, m, n in self.artifacts],
            "source_caches": [{"path": p, "size": n} for p, n in self.source_caches],
            "kept_source_caches": [
                {"cache": c, "needed_by": m} for c, m in self.kept_source_caches
            ],
            "skipped_busy": self.skipped_busy,
            "freed_bytes": self.freed_bytes,
        }


def _try_lock(lock: FileLock) -> bool:
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    return True


_Named = TypeVar("_Named", bound=tuple[Any, ...])


def _remove_unlocked(
    items: list[_Named],
    lock_for: Callable[[str], FileLock],
    remove: Callable[[str], None],
    busy: list[str],
) -> list[_Named]:
    """Remove each item (named by its first field) whose lock is free now, never waiting.

    Returns the removed items; the names of those someone holds go to ``busy``.
    """
    removed = []
    for item in items:
        name = str(item[0])
        lock = lock_for(name)
        if not _try_lock(lock):
            busy.append(name)
            continue
        try:
            remove(name)
            removed.append(item)
        finally:
            lock.release()
    return removed


def collect_garbage(
    store: Store,
    *,
    mirror: StoreMirror | None,
    dry_run: bool = False,
) -> GcReport:
    """Find (and unless ``dry_run``, delete) the garbage; ``mirror`` (the index) is told
    what went, and asked which artifacts it links to kept entries."""
    report = GcReport(dry_run=dry_run)
    keep_blobs: set[str] = set()
    keep_snapshots: set[tuple[str, str]] = set()
    keep_entries: set[str] = set()
    unfinished: dict[str, str] = {}  # source scheme -> a model of it with blobs missing
    for project in store.projects():
        if not Path(project.project_dir).is_dir():
            report.dropped_projects.append(project.project_dir)
            continue
        report.projects.append(project.project_dir)
        lock_path = Path(project.lock_path)
        if not lock_path.is_file():
            continue
        try:
            locked = read_lock(lock_path)
        except LockFileError as exc:
            raise ModelMoraError(
                f"cache gc stopped, nothing deleted: the lock of registered project "
                f"{project.project_dir} cannot be read ({exc.message})",
                hint="fix or regenerate that lock (`modelmora lock`), or delete the project",
            ) from exc
        for entry in locked.models.values():
            keep_snapshots.add((entry.name, entry.content_digest()))
            keep_entries.add(entry.entry_digest())
            keep_blobs.update(f.sha256 for f in entry.files)
            if not all(store.blob_path(f.sha256).is_file() for f in entry.files):
                unfinished.setdefault(entry.source.split("://", 1)[0], entry.name)

    for record in store.iter_snapshots():
        key = (record.name, record.content_digest)
        if key not in keep_snapshots:
            report.snapshots.append(key)
    for sha, path in store.iter_blobs():
        if sha not in keep_blobs:
            report.blobs.append((sha, path.stat().st_size))
    if store.partial_dir.is_dir():
        for part in sorted(store.partial_dir.glob("*.part")):
            size = part.stat().st_size
            if part.stem not in keep_blobs or size == 0:  # an empty one resumes nothing
                report.partials.append((part.stem, size))
    all_links = store.artifact_links()
    report.artifacts = _unused_artifacts(store, all_links, keep_entries, mirror)
    for item in find_items(store.root):
        needed_by = unfinished.get(item.cache.scheme)
        if needed_by is None:
            report.source_caches.append((item.path.relative_to(store.root).as_posix(), item.size))
        elif (item.cache.directory, needed_by) not in report.kept_source_caches:
            report.kept_source_caches.append((item.cache.directory, needed_by))
    if dry_run:
        return report

    for project_dir in report.dropped_projects:
        store.unregister_project(project_dir)
    for name, digest in report.snapshots:
        store.remove_snapshot(name, digest)
    _remove_stale_builds(store)
    busy = report.skipped_busy
    report.blobs = _remove_unlocked(report.blobs, store.blob_lock, store.discard_blob, busy)
    report.partials = _remove_unlocked(
        report.partials,
        store.blob_lock,
        lambda sha: store.partial_path(sha).unlink(missing_ok=True),
        busy,
    )
    # An install holds an artifact's lock while it builds it.
    report.artifacts = _remove_unlocked(
        report.artifacts, store.artifact_lock, store.remove_artifact, busy
    )
    for links in all_links:
        if links.entry_digest not in keep_entries:
            store.remove_artifact_links(links.entry_digest)
    removed_caches: list[tuple[str, int]] = []
    for relpath, size in report.source_caches:
        if remove_unless_in_use(store.root / relpath):
            removed_caches.append((relpath, size))
        else:
            report.skipped_busy.append(relpath)
    report.source_caches = removed_caches
    if mirror is not None and (
        report.snapshots or report.blobs or report.artifacts or report.dropped_projects
    ):
        mirror.forget(
            Removed(
                snapshots=report.snapshots,
                blobs=[sha for sha, _ in report.blobs],
                artifacts=[key for key, _, _ in report.artifacts],
                projects=report.dropped_projects,
            )
        )
    return report


def _unused_artifacts(
    store: Store,
    all_links: list[ArtifactLinks],
    keep_entries: set[str],
    mirror: StoreMirror | None,
) -> list[tuple[str, str, int]]:
    """Artifacts no kept entry uses, and unfinished builds old enough to be dead.

    An entry uses the artifacts its links file names, the ones whose record says it built
    them, and — for installs from before links files existed — the ones the index links to
    it (when there is an index). Anything else is garbage.
    """
    used = {
        a.key for links in all_links if links.entry_digest in keep_entries for a in links.artifacts
    }
    if mirror is not None and keep_entries:
        used |= mirror.linked_artifacts(keep_entries)
    cutoff = time.time() - _STALE_BUILD_S
    unused = []
    for directory in iter_artifact_dirs(store.artifacts_dir):
        head = read_artifact_quietly(directory)
        if head is None:  # building, killed, or damaged
            try:
                if directory.stat().st_mtime < cutoff:
                    unused.append((directory.name, "?", disk_size(directory)))
            except OSError:
                pass
            continue
        if directory.name not in used and head.entry_digest not in keep_entries:
            unused.append((directory.name, head.model, disk_size(directory)))
    return unused


def _remove_stale_builds(store: Store) -> None:
    """Hidden ``.tmp-*`` snapshot builds and lock-time scratch directories left by a killed
    process (old enough to be dead)."""
    cutoff = time.time() - _STALE_BUILD_S
    leftovers = [
        *store.snapshots_dir.glob("*/.tmp-*"),
        *store.tmp_dir.glob(f"{LOCK_SCRATCH_PREFIX}*"),
    ]
    for build in leftovers:
        try:
            if build.stat().st_mtime < cutoff:
                shutil.rmtree(build, ignore_errors=True)
        except OSError:
            continue
