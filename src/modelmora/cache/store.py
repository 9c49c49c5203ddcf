"""The content-addressed store under ``MODELMORA_HOME`` — the source of truth.

Layout (see docs/cache.md)::

    blobs/sha256/<2 hex>/<64 hex>          verified file contents, read-only, one per digest
    snapshots/<model>/<content-digest>/    a locked model laid out like its source repo,
                                           every file a link to its blob
    snapshots/<model>/<content-digest>.json   the record of that snapshot (the lock entry)
    artifacts/<key>/                       converted artifacts (written by the pipeline)
    projects/<id>.json                     projects that pulled into this store (for gc)
    tmp/partial/<sha256>.part              downloads in progress, resumable
    locks/                                 per-blob / per-snapshot file locks
    statcache.json, index.duckdb           derived data: both can be deleted and rebuilt

Nothing under ``blobs/`` is ever partial or unverified: bytes are streamed into
``tmp/partial``, verified, fsynced and renamed into place. Snapshot directories are built
beside their final name and renamed, and their ``.json`` record is written last, so a
snapshot without a record is an interrupted build, never a model.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict

from modelmora.cache.statcache import StatCache
from modelmora.errors import LockFileError, ModelMoraError, SourceError
from modelmora.fsutil import atomic_write_bytes, sha256_file
from modelmora.home import modelmora_home
from modelmora.lock import LockedFile, LockedModel
from modelmora.records import (
    ArtifactLinks,
    ArtifactRecord,
    artifact_path,
    iter_artifact_dirs,
    links_path,
    now,
    read_all_links,
    read_artifact_quietly,
    read_json_records,
    write_record,
)
from modelmora.sources.base import safe_relpath

LinkMode = Literal["hardlink", "symlink", "copy"]
LINK_MODE_ENV = "MODELMORA_LINK_MODE"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class StoreError(ModelMoraError):
    """The store cannot be read or written (permissions, disk full, not a directory)."""


def store_os_error(action: str, path: Path, exc: OSError) -> StoreError:
    reason = exc.strerror or str(exc)
    hint = None
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        hint = "set MODELMORA_HOME to a directory you can write to"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free disk space (`modelmora cache gc`) or point MODELMORA_HOME elsewhere"
    return StoreError(f"cannot {action} {path}: {reason}", hint=hint)


class SnapshotRecord(BaseModel):
    """What the store knows about one snapshot; ``cache reindex`` rebuilds the index from it."""

    model_config = ConfigDict(extra="ignore")

    format: int = 1
    model: LockedModel
    link_mode: LinkMode
    created_at: datetime

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def content_digest(self) -> str:
        return self.model.content_digest()


class ProjectRecord(BaseModel):
    """A project that pulled into this store; ``cache gc`` keeps what its lock references."""

    model_config = ConfigDict(extra="ignore")

    project_dir: str
    lock_path: str
    registered_at: datetime


class Store:
    """Paths and atomic operations of one store; cheap to construct, touches nothing."""

    def __init__(self, root: Path | None = None, *, link_mode: str | None = None) -> None:
        self.root = (root or modelmora_home()).absolute()
        mode = (link_mode or os.environ.get(LINK_MODE_ENV) or "auto").strip().lower()
        if mode not in ("auto", "hardlink", "symlink", "copy"):
            raise ModelMoraError(
                f"invalid link mode {mode!r} (from {LINK_MODE_ENV})",
                hint="use one of: auto, hardlink, symlink, copy",
            )
        self.link_mode = mode
        self.statcache = StatCache.of_store(self.root)

    # -- layout --------------------------------------------------------------------------
    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def partial_dir(self) -> Path:
        return self.tmp_dir / "partial"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def index_path(self) -> Path:
        return self.root / "index.duckdb"

    def ensure_layout(self) -> None:
        """Create the directories, turning OS errors into one clear message."""
        for d in (
            self.blobs_dir,
            self.snapshots_dir,
            self.artifacts_dir,
            self.projects_dir,
            self.partial_dir,
            self.locks_dir,
        ):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise store_os_error("create the store directory", d, exc) from exc
        probe = self.tmp_dir / f".probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise store_os_error("write to the store directory", self.tmp_dir, exc) from exc

    def exists(self) -> bool:
        return self.blobs_dir.is_dir()

    # -- blobs ---------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if not _HEX64.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.blobs_dir / sha256[:2] / sha256

    def partial_path(self, sha256: str) -> Path:
        return self.partial_dir / f"{sha256}.part"

    def blob_lock(self, sha256: str) -> FileLock:
        return FileLock(self.locks_dir / f"blob-{sha256}.lock")

    def check_blob(self, sha256: str, size: int) -> Literal["ok", "missing", "corrupt"]:
        """Whether the blob is present and intact, hashing it only if its stat changed."""
        path = self.blob_path(sha256)
        try:
            st = path.stat()
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise store_os_error("read", path, exc) from exc
        if st.st_size != size:
            return "corrupt"
        if self.statcache.matches(sha256, st):
            return "ok"
        if sha256_file(path) != sha256:
            return "corrupt"
        self.statcache.record({sha256: path.stat()})
        return "ok"

    def discard_blob(self, sha256: str) -> None:
        """Remove a blob (corrupt or garbage); callers hold its lock."""
        path = self.blob_path(sha256)
        try:
            if path.exists():
                path.chmod(0o644)
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise store_os_error("remove", path, exc) from exc
        self.statcache.forget([sha256])

    def commit_blob(self, partial: Path, sha256: str) -> Path:
        """Move a verified, fsynced partial into place and remember its stat."""
        final = self.blob_path(sha256)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            partial.chmod(0o444)
            os.replace(partial, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise store_os_error("store blob", final, exc) from exc
        self.statcache.record({sha256: final.stat()})
        return final

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        """Every file under ``blobs/sha256``, named by its digest (names are not checked)."""
        try:
            prefixes = sorted(os.scandir(self.blobs_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for prefix in prefixes:
            if not prefix.is_dir(follow_symlinks=False):
                continue
            for entry in sorted(os.scandir(prefix.path), key=lambda e: e.name):
                yield entry.name, Path(entry.path)

    # -- snapshots -----------------------------------------------------------------------
    def snapshot_dir(self, name: str, content_digest: str) -> Path:
        return self.snapshots_dir / name / content_digest

    def snapshot_record_path(self, name: str, content_digest: str) -> Path:
        return self.snapshots_dir / name / f"{content_digest}.json"

    def read_snapshot(self, name: str, content_digest: str) -> SnapshotRecord | None:
        path = self.snapshot_record_path(name, content_digest)
        try:
            record = SnapshotRecord.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValueError):  # ValueError: pydantic's too
            return None
        if record.content_digest != content_digest or record.name != name:
            return None
        return record if self.snapshot_dir(name, content_digest).is_dir() else None

    def iter_snapshots(self) -> Iterator[SnapshotRecord]:
        """Complete snapshots (directory plus a valid record), sorted by name then digest."""
        if not self.snapshots_dir.is_dir():
            return
        for model_dir in sorted(self.snapshots_dir.iterdir()):
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            for record_path in sorted(model_dir.glob("*.json")):
                record = self.read_snapshot(model_dir.name, record_path.stem)
                if record is not None:
                    yield record

    def materialize(self, entry: LockedModel) -> SnapshotRecord:
        """Lay out a locked model as a directory of links to its (present) blobs.

        Built under a hidden name next to the final one and renamed, then recorded; a
        concurrent ``pull`` of the same model waits on the snapshot lock and reuses it.
        """
        digest = entry.content_digest()
        paths = []
        for f in entry.files:
            try:
                paths.append((safe_relpath(f.path, origin=f"lock entry {entry.name!r}"), f))
            except SourceError as exc:
                raise LockFileError(str(exc)) from exc
        final = self.snapshot_dir(entry.name, digest)
        with FileLock(self.locks_dir / f"snapshot-{entry.name}-{digest}.lock"):
            existing = self.read_snapshot(entry.name, digest)
            if existing is not None:
                self._heal_snapshot(existing)
                return existing
            final.parent.mkdir(parents=True, exist_ok=True)
            # Not mkdtemp: its 0700 would make a shared store's snapshots private.
            build = final.parent / f".tmp-{digest[:12]}-{secrets.token_hex(4)}"
            try:
                build.mkdir()
                modes: set[LinkMode] = set()
                for rel, f in paths:
                    modes.add(self._link(self.blob_path(f.sha256), build / rel))
                if final.exists():  # an interrupted build left a directory without record
                    shutil.rmtree(final)
                os.rename(build, final)
            except OSError as exc:
                shutil.rmtree(build, ignore_errors=True)
                raise store_os_error("create snapshot", final, exc) from exc
            record = SnapshotRecord(
                model=entry,
                link_mode=_overall_mode(modes),
                created_at=now(),
            )
            # Not fsynced: a record a crash leaves torn reads as "no snapshot" and the next
            # pull re-links it from the (fsynced) blobs.
            atomic_write_bytes(
                self.snapshot_record_path(entry.name, digest),
                record.model_dump_json(indent=2).encode(),
                durable=False,
            )
            return record

    def snapshot_file_problem(
        self, record: SnapshotRecord, file: LockedFile, *, full: bool = False
    ) -> str | None:
        """Why a snapshot file is not (any more) its blob's bytes, or None.

        A symlink must point at the blob; a hardlink must be the blob's inode (a blob
        fetched again after corruption is a new inode, and the old link keeps the bad
        bytes); a copy must have the blob's size and, when it changed after the snapshot
        was made or with ``full``, its content.
        """
        path = self.snapshot_dir(record.name, record.content_digest) / file.path
        blob = self.blob_path(file.sha256)
        try:
            lst = path.lstat()
        except FileNotFoundError:
            return "file missing"
        if stat.S_ISLNK(lst.st_mode):
            if os.path.realpath(path) != os.path.realpath(blob):
                return f"symlink points to {os.path.realpath(path)}, not to blob {file.sha256}"
            return None
        try:
            blob_st = blob.stat()
        except FileNotFoundError:
            blob_st = None
        if blob_st is not None and (lst.st_dev, lst.st_ino) == (blob_st.st_dev, blob_st.st_ino):
            return None  # the blob itself, checked as a blob
        if record.link_mode == "hardlink" and blob_st is not None:
            return "a different file from its blob (not the same inode any more)"
        if lst.st_size != file.size:
            return f"size {lst.st_size}, lock says {file.size}"
        changed = lst.st_mtime > record.created_at.timestamp()
        if (full or changed) and sha256_file(path) != file.sha256:
            return "content differs from the lock"
        return None

    def _heal_snapshot(self, record: SnapshotRecord) -> None:
        """Re-link every snapshot file that is not its (intact) blob any more."""
        root = self.snapshot_dir(record.name, record.content_digest)
        for f in record.model.files:
            if self.snapshot_file_problem(record, f) is None:
                continue
            if self.check_blob(f.sha256, f.size) != "ok":
                continue  # nothing good to link to; pull fetches the blob first
            dst = root / f.path
            tmp = dst.with_name(f".{dst.name}.heal-{secrets.token_hex(4)}")
            try:
                self._link(self.blob_path(f.sha256), tmp)
                os.replace(tmp, dst)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise store_os_error("repair snapshot file", dst, exc) from exc

    def _link(self, blob: Path, dst: Path) -> LinkMode:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.link_mode in ("auto", "hardlink"):
            try:
                os.link(blob, dst)
                return "hardlink"
            except OSError:
                if self.link_mode == "hardlink":
                    raise
        if self.link_mode in ("auto", "symlink"):
            try:
                os.symlink(os.path.relpath(blob, dst.parent), dst)
                return "symlink"
            except OSError:
                if self.link_mode == "symlink":
                    raise
        shutil.copyfile(blob, dst)
        return "copy"

    def remove_snapshot(self, name: str, content_digest: str) -> None:
        """Drop the record first so a half-removed snapshot never looks complete."""
        self.snapshot_record_path(name, content_digest).unlink(missing_ok=True)
        shutil.rmtree(self.snapshot_dir(name, content_digest), ignore_errors=True)
        with contextlib.suppress(OSError):  # other snapshots of the model remain
            (self.snapshots_dir / name).rmdir()

    # -- artifacts -----------------------------------------------------------------------
    def artifact_dir(self, key: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}", key):
            raise ValueError(f"invalid artifact key {key!r}")
        return self.artifacts_dir / key

    def artifact_lock(self, key: str) -> FileLock:
        """Held while an artifact is built, and by ``cache gc`` while it deletes one."""
        return FileLock(self.locks_dir / f"artifact-{key[:32]}.lock")

    @property
    def links_dir(self) -> Path:
        return self.root / "links"

    def write_artifact_links(self, links: ArtifactLinks) -> None:
        path = links_path(self.links_dir, links.entry_digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Not fsynced: a lost file only makes gc fall back to the artifact records.
            write_record(path, links, durable=False)
        except OSError as exc:
            raise store_os_error("record the artifacts of", path, exc) from exc

    def artifact_links(self) -> list[ArtifactLinks]:
        return read_all_links(self.links_dir)

    def remove_artifact_links(self, entry_digest: str) -> None:
        links_path(self.links_dir, entry_digest).unlink(missing_ok=True)

    def iter_artifacts(self) -> Iterator[tuple[Path, ArtifactRecord]]:
        """``(directory, record)`` of every complete artifact, sorted by key (unfinished,
        killed and damaged builds have no readable record and are left out)."""
        for directory in iter_artifact_dirs(self.artifacts_dir):
            record = read_artifact_quietly(directory)
            if record is not None:
                yield directory, record

    def remove_artifact(self, key: str) -> None:
        """Drop the record first so a half-removed artifact never looks complete."""
        directory = self.artifact_dir(key)
        artifact_path(directory).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)

    # -- projects ------------------------------------------------------------------------
    def _project_record_path(self, project_dir: Path) -> Path:
        ident = hashlib.sha256(str(project_dir).encode()).hexdigest()[:20]
        return self.projects_dir / f"{ident}.json"

    def register_project(self, project_dir: Path, lock_path: Path) -> ProjectRecord:
        project_dir = project_dir.resolve()
        record = ProjectRecord(
            project_dir=str(project_dir),
            lock_path=str(lock_path.resolve()),
            registered_at=now(),
        )
        path = self._project_record_path(project_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, record.model_dump_json(indent=2).encode())
        except OSError as exc:
            raise store_os_error("register project in", path, exc) from exc
        return record

    def projects(self) -> list[ProjectRecord]:
        return read_json_records(self.projects_dir, ProjectRecord)

    def unregister_project(self, project_dir: str) -> None:
        self._project_record_path(Path(project_dir)).unlink(missing_ok=True)


def _overall_mode(modes: set[LinkMode]) -> LinkMode:
    """The weakest link used: a snapshot with one copied file is reported as ``copy``."""
    for mode in ("copy", "symlink"):
        if mode in modes:
            return mode
    return "hardlink"


def _fsync_dir(path: Path) -> None:
    """Persist a rename (POSIX); directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
