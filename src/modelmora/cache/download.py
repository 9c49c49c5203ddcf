"""Downloading into the store: exactly the locked bytes, once, safely.

:func:`ensure_blob` is the single-file primitive the pipeline's download step calls;
:func:`pull_entries` fans it out over a lock's files. Sources are byte pumps (they write
to a path we choose); everything that makes a download trustworthy lives here:

* bytes go to ``tmp/partial/<sha256>.part`` — never a path that looks like a blob;
* they are hashed *while* the source writes them (a follower thread reads behind the
  writer from the page cache), so verification costs no second pass over the network
  data; size and sha256 are compared with the lock, the file is fsynced and renamed;
* a per-blob file lock makes concurrent pulls of the same file wait for each other
  instead of downloading twice; the loser finds the blob present;
* an interrupted download leaves its partial file: the next attempt hashes that prefix
  once and asks the source for the rest (HTTP Range);
* a mismatch deletes the partial and raises :class:`IntegrityError` naming file, expected
  and actual digest. Nothing unverified reaches ``blobs/``, snapshots or the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modelmora.cache.mirror import Pulled, StoreMirror
from modelmora.cache.progress import NullProgress, PullProgress
from modelmora.cache.store import ProjectRecord, SnapshotRecord, Store, store_os_error
from modelmora.errors import (
    AuthenticationError,
    IntegrityError,
    LockFileError,
    ModelMoraError,
    SourceError,
    SourceNotFoundError,
)
from modelmora.lock import LockedFile, LockedModel
from modelmora.sources.base import RemoteFile, Source, safe_relpath

if TYPE_CHECKING:
    from modelmora.project import Project

log = logging.getLogger(__name__)

_BUF = 1024 * 1024
_FLUSH_EVERY = 32 * 1024 * 1024
_CAN_FLUSH_EARLY = sys.platform.startswith("linux")
"""Linux syncs a file through a read-only descriptor; elsewhere only the final fsync runs."""
_RESUME_ATTEMPTS = 2
"""Extra attempts, each resuming from the partial file, after a source fails mid-file."""


@dataclass(frozen=True)
class BlobResult:
    sha256: str
    size: int
    status: Literal["present", "fetched"]
    downloaded: int = 0
    """Bytes the source wrote in this call (0 when the blob was already present)."""
    resumed_from: int = 0
    """Bytes of an earlier partial download that were reused."""


class _FollowingHasher:
    """Hashes a file while another thread appends to it, reading behind the writer.

    The source keeps writing at full speed; this thread catches up from the page cache, so
    by the time the download ends the digest is (nearly) done. Signs that the source
    rewrote bytes already hashed (it restarted from byte 0 after a server ignored Range,
    or replaced the file) make :meth:`finish` re-hash the whole file instead.
    """

    def __init__(self, path: Path, offset: int) -> None:
        self._fh = path.open("rb", buffering=0)
        self._ino = os.fstat(self._fh.fileno()).st_ino
        self._digest = hashlib.sha256()
        self._buf = bytearray(_BUF)
        self._pos = 0
        self._read(limit=offset)
        self._wake = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelmora-hash", daemon=True)
        self._thread.start()

    def _read(self, limit: int | None = None) -> int:
        view = memoryview(self._buf)
        total = 0
        while limit is None or self._pos < limit:
            want = _BUF if limit is None else min(_BUF, limit - self._pos)
            n = self._fh.readinto(view[:want])
            if not n:
                break
            self._digest.update(view[:n])
            self._pos += n
            total += n
        return total

    def _run(self) -> None:
        flushed = self._pos
        try:
            while True:
                if self._read():
                    if _CAN_FLUSH_EARLY and self._pos - flushed >= _FLUSH_EVERY:
                        # Start write-back of what is hashed already, so the final fsync
                        # does not have to push the whole file to disk at the end.
                        os.fdatasync(self._fh.fileno())
                        flushed = self._pos
                    continue
                if self._done:
                    self._read()  # the writer closed the file: drain what is left
                    return
                self._wake.wait(0.05)
                self._wake.clear()
        except BaseException as exc:  # surfaced by finish()
            self._error = exc

    def poke(self) -> None:
        self._wake.set()

    def finish(self, path: Path, *, suspicious: bool) -> str:
        self._done = True
        self._wake.set()
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            st = path.stat()
            if suspicious or st.st_ino != self._ino or st.st_size != self._pos:
                self._digest, self._pos = hashlib.sha256(), 0
                self._fh.seek(0)
                self._read()
            return self._digest.hexdigest()
        finally:
            self._fh.close()

    def abort(self) -> None:
        self._done = True
        self._wake.set()
        self._thread.join()
        self._fh.close()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_transient(exc: SourceError) -> bool:
    return not isinstance(exc, SourceNotFoundError | AuthenticationError)


def ensure_blob(
    source: Source,
    revision: str,
    file: LockedFile,
    store: Store,
    *,
    progress: PullProgress | None = None,
    label: str | None = None,
) -> BlobResult:
    """Make ``blobs/sha256/…/<file.sha256>`` exist with exactly the locked bytes.

    Returns at once if the blob is present and its stat matches the stat cache; otherwise
    takes the blob's file lock (so concurrent callers fetch it once), resumes or starts
    the download, verifies it and moves it into place.
    """
    label = label or file.path
    progress = progress or NullProgress()
    if store.check_blob(file.sha256, file.size) == "ok":
        return BlobResult(file.sha256, file.size, "present")
    try:
        lock = store.blob_lock(file.sha256)
        lock.acquire()
    except OSError as exc:
        raise store_os_error("lock", store.locks_dir, exc) from exc
    try:
        state = store.check_blob(file.sha256, file.size)
        if state == "ok":  # another process finished it while we waited
            return BlobResult(file.sha256, file.size, "present")
        if state == "corrupt":
            log.warning("blob %s in the store is corrupt; fetching it again", file.sha256)
            store.discard_blob(file.sha256)
        return _download(source, revision, file, store, progress, label)
    finally:
        lock.release()


def _usable_prefix(partial: Path, size: int) -> int:
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        partial.touch()
        return 0
    if have > size:  # cannot be a prefix of the right bytes
        os.truncate(partial, 0)
        return 0
    return have


def _drop_if_empty(partial: Path) -> None:
    """A failed attempt that wrote nothing leaves no 0-byte ``.part`` behind."""
    with contextlib.suppress(OSError):
        if partial.stat().st_size == 0:
            partial.unlink()


def _download(
    source: Source,
    revision: str,
    file: LockedFile,
    store: Store,
    progress: PullProgress,
    label: str,
) -> BlobResult:
    partial = store.partial_path(file.sha256)
    remote = RemoteFile(
        path=file.path,
        size=file.size,
        sha256=file.sha256,
        etag=file.etag,
        version_id=file.version_id,
    )
    first_offset: int | None = None
    downloaded = 0
    transient_left = _RESUME_ATTEMPTS
    fresh_retry_left = 1
    while True:
        try:
            offset = _usable_prefix(partial, file.size)
            hasher = _FollowingHasher(partial, offset)
        except OSError as exc:
            raise store_os_error("write", partial, exc) from exc
        if first_offset is None:
            first_offset = offset
        written = 0

        def on_bytes(n: int, hasher: _FollowingHasher = hasher, offset: int = offset) -> None:
            nonlocal written
            written += n
            # The built-in sources never write past the size; this catches a plugin's (the
            # count can overshoot for a source that truncated and rewrote: ask the file).
            if offset + written > file.size and partial.stat().st_size > file.size:
                raise IntegrityError(f"the source wrote more than the {file.size} bytes locked")
            hasher.poke()
            progress.advance(file.sha256, n)

        progress.start(file.sha256, label, file.size, offset)
        try:
            source.fetch(revision, remote, partial, offset=offset, progress=on_bytes)
        except SourceError as exc:
            hasher.abort()
            progress.finish(file.sha256, ok=False)
            downloaded += written
            if _is_transient(exc) and written > 0 and transient_left > 0:
                transient_left -= 1
                log.warning("%s: %s; resuming", label, exc.message)
                continue
            _drop_if_empty(partial)  # a prefix is kept for the next attempt to resume
            raise
        except IntegrityError as exc:
            hasher.abort()
            progress.finish(file.sha256, ok=False)
            partial.unlink(missing_ok=True)
            exc.message = f"{label}: {exc.message}"
            raise
        except OSError as exc:
            hasher.abort()
            progress.finish(file.sha256, ok=False)
            partial.unlink(missing_ok=True)  # a write error (disk full): do not keep half
            raise store_os_error(f"write {label} to", partial, exc) from exc
        except BaseException:
            hasher.abort()
            progress.finish(file.sha256, ok=False)
            _drop_if_empty(partial)
            raise
        downloaded += written
        try:
            actual = hasher.finish(partial, suspicious=written > file.size - offset)
            actual_size = partial.stat().st_size
        except OSError as exc:
            progress.finish(file.sha256, ok=False)
            raise store_os_error("read back", partial, exc) from exc
        if actual_size != file.size or actual != file.sha256:
            partial.unlink(missing_ok=True)
            progress.finish(file.sha256, ok=False)
            if offset > 0 and fresh_retry_left > 0:
                # The reused prefix may have been the bad part: one clean attempt.
                fresh_retry_left -= 1
                log.warning("%s: resumed download did not verify; starting over", label)
                continue
            raise IntegrityError(
                f"{label}: downloaded bytes do not match the lock: expected sha256 "
                f"{file.sha256} ({file.size} bytes), got sha256 {actual} ({actual_size} bytes)",
                hint="nothing was stored; the registry served different bytes than it did "
                "at lock time — if the change is intended, run `modelmora lock` again",
            )
        try:
            _fsync_file(partial)
        except OSError as exc:
            progress.finish(file.sha256, ok=False)
            raise store_os_error("fsync", partial, exc) from exc
        store.commit_blob(partial, file.sha256)
        progress.finish(file.sha256, ok=True)
        return BlobResult(file.sha256, file.size, "fetched", downloaded, first_offset)


# -- pulling a lock ----------------------------------------------------------------------


@dataclass
class ModelPull:
    name: str
    content_digest: str
    files: int
    fetched: int = 0
    bytes_fetched: int = 0
    snapshot: Path | None = None
    missing: list[LockedFile] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "snapshot": str(self.snapshot) if self.snapshot else None,
            "missing": [f.model_dump(exclude_none=True) for f in self.missing],
        }


@dataclass
class PullReport:
    models: list[ModelPull]
    blobs_fetched: int = 0
    blobs_present: int = 0
    bytes_fetched: int = 0
    bytes_resumed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [m.to_json() for m in self.models],
            "blobs_fetched": self.blobs_fetched,
            "blobs_present": self.blobs_present,
            "bytes_fetched": self.bytes_fetched,
            "bytes_resumed": self.bytes_resumed,
        }


class MissingFromCacheError(ModelMoraError):
    """Offline, and some locked files are not in the store."""


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def pull_entries(
    entries: Sequence[LockedModel],
    source_for: Callable[[LockedModel], Source],
    store: Store,
    *,
    jobs: int = 4,
    offline: bool = False,
    progress: PullProgress | None = None,
    project: tuple[Path, Path] | None = None,
    mirror: StoreMirror | None,
    notify: Callable[[str], None] | None = None,
) -> PullReport:
    """Fetch and verify every file of ``entries`` into the store and materialize snapshots.

    ``project`` (directory, lock path) registers the project so that ``cache gc`` keeps
    what its lock references; it is recorded before any download so a concurrent gc
    cannot collect blobs this pull is about to link. ``mirror`` (the index) is told what
    was verified and materialized, also when some downloads failed.
    """
    if jobs < 1:
        raise ModelMoraError(f"--jobs must be at least 1 (got {jobs})")
    progress = progress or NullProgress()
    store.ensure_layout()
    project_record: ProjectRecord | None = None
    if project is not None:
        project_record = store.register_project(*project)

    # One job per distinct blob: files shared between models are fetched once.
    owners: dict[str, tuple[LockedModel, LockedFile]] = {}
    for entry in entries:
        for f in entry.files:
            try:  # a hand-edited lock must not make a source read, or us write, elsewhere
                safe_relpath(f.path, origin=f"modelmora.lock: model {entry.name!r}")
            except SourceError as exc:
                raise LockFileError(str(exc)) from exc
            seen = owners.get(f.sha256)
            if seen is not None and seen[1].size != f.size:
                raise LockFileError(
                    f"lock is inconsistent: sha256 {f.sha256} has size {seen[1].size} in "
                    f"{seen[0].name}/{seen[1].path} but {f.size} in {entry.name}/{f.path}"
                )
            owners.setdefault(f.sha256, (entry, f))

    report = PullReport(models=[])
    missing = {sha for sha, (_, f) in owners.items() if store.check_blob(sha, f.size) != "ok"}
    report.blobs_present = len(owners) - len(missing)
    results: dict[str, BlobResult] = {}
    errors: list[ModelMoraError] = []

    sources: dict[str, Source] = {}
    sources_lock = threading.Lock()

    def source_of(entry: LockedModel) -> Source:
        with sources_lock:
            if entry.name not in sources:
                sources[entry.name] = source_for(entry)
            return sources[entry.name]

    # Offline, local sources (path:, pkg://) still deliver: they need no network, and
    # install reads them offline too.
    fetchable = missing if not offline else {s for s in missing if source_of(owners[s][0]).local}
    if fetchable:

        def job(sha: str) -> BlobResult:
            entry, f = owners[sha]
            return ensure_blob(
                source_of(entry),
                entry.revision,
                f,
                store,
                progress=progress,
                label=f"{entry.name}/{f.path}",
            )

        order = sorted(fetchable, key=lambda s: -owners[s][1].size)  # big files start first
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="modelmora-pull") as pool:
            futures: dict[Future[BlobResult], str] = {pool.submit(job, s): s for s in order}
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            if pending and any(fut.exception() for fut in done):
                for fut in pending:
                    fut.cancel()  # running downloads finish; queued ones never start
                done2, _ = wait(pending)
                done |= done2
            for fut in done:
                if fut.cancelled():
                    continue
                failure = fut.exception()
                if failure is None:
                    results[futures[fut]] = fut.result()
                elif isinstance(failure, ModelMoraError):
                    errors.append(failure)
                else:
                    raise failure

    for r in results.values():
        if r.status == "fetched":
            report.blobs_fetched += 1
            report.bytes_fetched += r.downloaded
            report.bytes_resumed += r.resumed_from
        else:
            report.blobs_present += 1

    ready = {sha for sha in owners if sha not in missing or sha in results}
    snapshots: list[SnapshotRecord] = []
    for entry in entries:
        pulled = ModelPull(entry.name, entry.content_digest(), len(entry.files))
        for f in entry.files:
            got = results.get(f.sha256)
            if got is not None and got.status == "fetched" and owners[f.sha256][0] is entry:
                pulled.fetched += 1
                pulled.bytes_fetched += got.downloaded
            if f.sha256 not in ready:
                pulled.missing.append(f)
        if not pulled.missing:
            record = store.materialize(entry)
            snapshots.append(record)
            pulled.snapshot = store.snapshot_dir(entry.name, pulled.content_digest)
        report.models.append(pulled)

    if mirror is not None:
        try:
            blobs = [(sha, owners[sha][1].size) for sha in sorted(ready)]
            mirror.record_pull(Pulled(project_record, snapshots, blobs))
        except ModelMoraError as exc:
            if not errors:
                raise
            # The download error is the one to report; the index is rebuildable anyway.
            (notify or log.warning)(f"index not updated: {exc.message}")

    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise ModelMoraError(
            f"{len(errors)} downloads failed:\n" + "\n".join(f"  - {e}" for e in errors)
        )
    if offline and missing - set(results):
        raise _missing_error(report)
    return report


def _missing_error(report: PullReport) -> MissingFromCacheError:
    lines = []
    total = 0
    for m in report.models:
        for f in m.missing:
            total += f.size
            lines.append(f"  - {m.name}: {f.path} ({_human(f.size)}, sha256 {f.sha256})")
    return MissingFromCacheError(
        f"offline: {len(lines)} locked file(s) ({_human(total)}) are not in the cache:\n"
        + "\n".join(lines),
        hint="run `modelmora pull` with network access (unset HF_HUB_OFFLINE, drop "
        "--offline), or copy MODELMORA_HOME from a machine that has them",
    )


def pull(
    project: Project,
    names: Sequence[str] = (),
    *,
    store: Store,
    mirror: StoreMirror | None,
    jobs: int = 4,
    offline: bool | None = None,
    progress: PullProgress | None = None,
    notify: Callable[[str], None] | None = None,
) -> PullReport:
    """``modelmora pull``: download and verify a project's locked models (or some of them).

    ``offline=None`` follows ``HF_HUB_OFFLINE``. Offline, nothing touches the network:
    present models are materialized and anything missing is listed in the error.
    """
    from modelmora.settings import offline_from_env

    lock = project.read_lock()
    entries = lock.select(names)
    offline = offline_from_env() if offline is None else offline
    return pull_entries(
        entries,
        lambda entry: project.source_for(entry, offline=offline),
        store,
        jobs=jobs,
        offline=offline,
        progress=progress,
        project=(project.dir, project.lock_path),
        mirror=mirror,
        notify=notify,
    )
