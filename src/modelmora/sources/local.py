"""``path:`` sources: a model directory (or single file) on the local filesystem.

Relative paths are relative to the manifest's directory, so a project checked out anywhere
locks the same. The revision is a digest of the file list (paths, sizes, sha256s): the lock
changes exactly when the bytes do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from modelmora.errors import SourceNotFoundError
from modelmora.fsutil import copy_range, sha256_file
from modelmora.sources.base import ProgressCallback, RemoteFile, Resolution, Source

_SKIP_DIRS = {".git", "__pycache__", ".ipynb_checkpoints"}


def tree_digest(files: tuple[RemoteFile, ...]) -> str:
    """A content revision for sources without one of their own."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.size}\0{f.sha256}\n".encode())
    return "sha256:" + h.hexdigest()


def list_tree(root: Path) -> list[str]:
    """Relative POSIX paths of all regular files under ``root``, skipping VCS/cache dirs."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for fn in filenames:
            rel = Path(dirpath, fn).relative_to(root).as_posix()
            found.append(rel)
    return found


class LocalTreeSource(Source):
    """Shared logic of sources whose files already sit in a local directory."""

    local = True

    def root(self) -> Path:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.scheme}:{self.location}"

    def _select_files(self, root: Path) -> tuple[RemoteFile, ...]:
        if root.is_file():
            return (RemoteFile(path=root.name, size=root.stat().st_size, sha256=sha256_file(root)),)
        chosen = self.select_some(list_tree(root), where=self.describe())
        return tuple(
            RemoteFile(path=p, size=(root / p).stat().st_size, sha256=sha256_file(root / p))
            for p in chosen
        )

    def _file_path(self, file: RemoteFile) -> Path:
        root = self.root()
        return root if root.is_file() else root / file.path

    def fetch(
        self,
        revision: str,
        file: RemoteFile,
        dest: Path,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> None:
        src = self._file_path(file)
        if not src.is_file():
            raise SourceNotFoundError(f"{self.describe()}: file {file.path!r} no longer exists")
        copy_range(src, dest, offset=offset, progress=progress)


class PathSource(LocalTreeSource):
    scheme = "path"

    def root(self) -> Path:
        p = Path(os.path.expanduser(self.location))
        return p if p.is_absolute() else (self.context.project_dir / p)

    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        root = self.root()
        if not root.exists():
            raise SourceNotFoundError(
                f"{self.describe()}: {root} does not exist",
                hint="relative paths are relative to the directory of modelmora.yml",
            )
        files = self._select_files(root)
        return Resolution(revision=tree_digest(files), files=files)
