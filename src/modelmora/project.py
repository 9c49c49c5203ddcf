"""A ModelMora project: a directory with ``modelmora.yml`` and (after locking) ``modelmora.lock``.

This is the one place that knows the file names and how a lock entry becomes a
:class:`~modelmora.sources.base.Source`; commands and pipeline steps go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelmora.errors import LockFileError, UserInputError
from modelmora.lock import LockedModel, LockFile, read_lock, write_lock
from modelmora.manifest import LoadedManifest, load_manifest
from modelmora.names import LOCK_NAME, MANIFEST_NAME, STATE_DIR
from modelmora.settings import offline_from_env
from modelmora.sources import Source, SourceContext, make_source

if TYPE_CHECKING:
    from modelmora.lock.resolve import LockResult, ModelChange

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "STATE_DIR", "Project", "offline_from_env"]


@dataclass
class Project:
    dir: Path

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST_NAME

    @property
    def lock_path(self) -> Path:
        return self.dir / LOCK_NAME

    @property
    def state_dir(self) -> Path:
        """Project-local state (Dagster home, logs); git-ignored."""
        return self.dir / STATE_DIR

    @cached_property
    def manifest(self) -> LoadedManifest:
        if not self.manifest_path.is_file():
            raise UserInputError(
                f"{MANIFEST_NAME} not found in {self.dir}",
                hint="run `modelmora init` to create one, or pass -C DIR",
            )
        return load_manifest(self.manifest_path)

    def specs(self) -> dict[str, dict[str, Any]]:
        """Every model's normalized spec (defaults filled in): what the lock is compared to."""
        return {name: spec.normalized() for name, spec in self.manifest.manifest.models.items()}

    def read_lock(self) -> LockFile:
        return read_lock(self.lock_path)

    def lock(
        self,
        *,
        upgrade: bool | Collection[str] = False,
        jobs: int = 8,
        on_done: Callable[[ModelChange], None] | None = None,
        scratch_dir: Path | None = None,
    ) -> tuple[LockResult, bool]:
        """Resolve the manifest into ``modelmora.lock`` (``modelmora lock``, and ``install``
        when the lock is out of date): pins are kept unless ``upgrade`` (True: all, or these
        names); the file is rewritten only when its bytes change. Returns the result and
        whether the file changed. A lock that cannot be read is an error, except with
        ``upgrade=True`` (resolving from scratch needs nothing of it)."""
        from modelmora.lock.resolve import resolve_lock

        previous = None
        if self.lock_path.exists():
            try:
                previous = read_lock(self.lock_path)
            except LockFileError as exc:
                if upgrade is not True:
                    exc.hint = (
                        "fix or delete it, or run `modelmora lock --upgrade` to resolve "
                        "from scratch"
                    )
                    raise
        result = resolve_lock(
            self.specs(),
            self.source_context(),
            previous=previous,
            upgrade=upgrade,
            jobs=jobs,
            on_done=on_done,
            scratch_dir=scratch_dir,
        )
        return result, write_lock(self.lock_path, result.lock)

    def source_context(self, *, offline: bool | None = None) -> SourceContext:
        return SourceContext(
            project_dir=self.dir,
            registries=self.manifest.registries,
            offline=offline_from_env() if offline is None else offline,
        )

    def source_for(self, entry: LockedModel, *, offline: bool | None = None) -> Source:
        """The source that can fetch a locked model's files (uses the manifest's registries)."""
        return make_source(entry.spec, self.source_context(offline=offline))
