"""Turn the manifest into a lock: resolve what changed, keep every pin that did not.

uv-style: an entry whose spec is unchanged is reused without touching the network; a
change to fields that do not affect resolution (convert, serve, …) keeps revision and files;
a change to ``files`` re-resolves at the *locked* revision; only a changed ``source`` or
``--upgrade`` follows branches and tags again. Local sources are always re-read.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modelmora.errors import IntegrityError, ModelMoraError, SourceError
from modelmora.fsutil import sha256_file
from modelmora.layout import layout_problem
from modelmora.lock.model import LockedFile, LockedModel, LockFile, drop_none
from modelmora.sources import (
    RemoteFile,
    Source,
    SourceContext,
    is_builtin,
    make_source,
    parse_source,
    safe_relpath,
)

_SHA256 = re.compile(r"[0-9a-f]{64}")
LOCK_SCRATCH_PREFIX = "modelmora-lock-"
"""Temporary directories of files fetched at lock time only to be hashed."""

RESOLUTION_FIELDS = ("source", "sha256", "registry", "files")
"""Spec fields that decide which bytes a model is; the rest only affect later stages."""

Action = Literal["added", "updated", "unchanged", "removed"]


@dataclass(frozen=True)
class ModelChange:
    name: str
    action: Action
    revision: str | None
    files: int
    reason: str = ""


@dataclass(frozen=True)
class LockResult:
    lock: LockFile
    changes: tuple[ModelChange, ...]

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


def lock_spec(normalized: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as stored in the lock (TOML has no null)."""
    result: dict[str, Any] = drop_none(dict(normalized))
    return result


def resolve_lock(
    specs: Mapping[str, Mapping[str, Any]],
    context: SourceContext,
    *,
    previous: LockFile | None,
    upgrade: bool | Collection[str] = False,
    jobs: int = 8,
    on_done: Callable[[ModelChange], None] | None = None,
    scratch_dir: Path | None = None,
) -> LockResult:
    """Build a new lock for ``specs`` (name → normalized spec), reusing ``previous`` pins.

    ``upgrade=True`` re-resolves every model; a collection of names re-resolves those.
    Models resolve in parallel (``jobs`` threads): resolution is network-bound.
    ``scratch_dir`` holds files fetched only to be hashed (the store's tmp dir, so they
    land on the store's disk and ``cache gc`` sweeps what a kill leaves); each is removed
    on every exit path.
    """
    old_models = previous.models if previous else {}
    unknown = set(upgrade) - set(specs) if not isinstance(upgrade, bool) else set()
    if unknown:
        raise ModelMoraError(
            f"--upgrade names unknown model(s): {', '.join(sorted(unknown))}",
            hint=f"models in modelmora.yml: {', '.join(sorted(specs)) or '(none)'}",
        )

    def one(name: str) -> tuple[LockedModel, ModelChange]:
        wants_upgrade = upgrade is True or (not isinstance(upgrade, bool) and name in upgrade)
        entry, change = _lock_one(
            name, lock_spec(specs[name]), old_models.get(name), context, wants_upgrade, scratch_dir
        )
        if on_done:
            on_done(change)
        return entry, change

    names = sorted(specs)
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(names) or 1))) as pool:
        results = list(pool.map(one, names))
    models = {entry.name: entry for entry, _ in results}
    changes = [change for _, change in results]
    for name in sorted(set(old_models) - set(specs)):
        changes.append(ModelChange(name, "removed", None, 0, "removed from modelmora.yml"))
    return LockResult(LockFile(models=models), tuple(changes))


@contextmanager
def _attributed(name: str, scheme: str) -> Iterator[None]:
    """Errors name the model; a plugin's unexpected exception also names the plugin."""
    try:
        yield
    except ModelMoraError as exc:
        exc.message = f"models.{name}: {exc.message}"
        raise
    except Exception as exc:
        if is_builtin(scheme):
            raise  # our bug: keep the traceback
        raise ModelMoraError(f"models.{name}: source plugin {scheme!r} failed: {exc}") from exc


def _lock_one(
    name: str,
    spec: dict[str, Any],
    old: LockedModel | None,
    context: SourceContext,
    upgrade: bool,
    scratch_dir: Path | None,
) -> tuple[LockedModel, ModelChange]:
    scheme = parse_source(str(spec["source"]))[0]
    with _attributed(name, scheme):
        source = make_source(spec, context)
    same_bytes_spec = old is not None and all(
        old.spec.get(k) == spec.get(k) for k in RESOLUTION_FIELDS
    )
    if old is not None and not upgrade and not source.local and same_bytes_spec:
        if old.spec == spec:
            return old, ModelChange(name, "unchanged", old.revision, len(old.files))
        entry = old.model_copy(update={"spec": spec})
        return entry, ModelChange(name, "updated", old.revision, len(old.files), "spec changed")

    pinned = None
    if old is not None and not upgrade and old.source == spec["source"] and not source.local:
        pinned = old.revision  # files changed: same commit, new selection
    with _attributed(name, scheme):
        resolution = source.resolve(pinned)
        files = tuple(
            _locked_file(source, resolution.revision, f, name, scratch_dir)
            for f in resolution.files
        )
    if not files:
        raise SourceError(f"models.{name}: {spec['source']} resolved to no files")
    problem = layout_problem(f.path for f in files)
    if problem is not None:
        raise SourceError(
            f"models.{name}: {spec['source']} lists files that cannot be laid out: {problem}"
        )
    entry = LockedModel(
        name=name,
        source=spec["source"],
        revision=resolution.revision,
        spec=spec,
        metadata=dict(sorted(resolution.metadata.items())),
        files=tuple(sorted(files, key=lambda f: f.path)),
    )
    if old is None:
        return entry, ModelChange(name, "added", entry.revision, len(files))
    if old == entry:
        return entry, ModelChange(name, "unchanged", entry.revision, len(files))
    reason = "new revision" if old.revision != entry.revision else "files or spec changed"
    return entry, ModelChange(name, "updated", entry.revision, len(files), reason)


def _locked_file(
    source: Source, revision: str, file: RemoteFile, name: str, scratch_dir: Path | None
) -> LockedFile:
    path = safe_relpath(file.path, origin=f"models.{name}")
    hints = {"etag": file.etag, "version_id": file.version_id}
    if file.size < 0:
        raise SourceError(f"models.{name}: the registry lists {path} with size {file.size}")
    if file.sha256 is not None:
        if not _SHA256.fullmatch(file.sha256):
            raise SourceError(
                f"models.{name}: the registry lists {path} with sha256 {file.sha256[:80]!r}, "
                "which is not 64 lowercase hex digits"
            )
        return LockedFile(path=path, size=file.size, sha256=file.sha256, **hints)
    # The registry publishes no sha256 (small non-LFS files on the HF Hub): fetch and hash.
    if scratch_dir is not None:
        try:
            scratch_dir.mkdir(parents=True, exist_ok=True)
        except OSError:  # a store we cannot write to: locking does not need it
            scratch_dir = None
    with tempfile.TemporaryDirectory(prefix=LOCK_SCRATCH_PREFIX, dir=scratch_dir) as tmp:
        dest = Path(tmp) / "blob"
        try:
            source.fetch(revision, file, dest)
        except IntegrityError as exc:
            exc.message = f"{path}: {exc.message}"
            raise
        size = dest.stat().st_size
        if size != file.size:
            raise IntegrityError(
                f"models.{name}: {path}: registry says {file.size} bytes but sent {size}"
            )
        return LockedFile(path=path, size=size, sha256=sha256_file(dest), **hints)
