"""The schema of ``modelmora.lock``.

The lock is the contract between ``lock`` and everything after it: ``pull`` fetches exactly
these files and verifies size + sha256; ``install`` keys artifacts on the entry's spec and
file digests. It never holds secrets or absolute machine paths.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelmora.errors import UserInputError

LOCK_VERSION = 1


class LockedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    etag: str | None = None
    """The version tag the registry gave these bytes at lock time; a source may send it as
    ``If-Match``. A transport hint, not identity: it stays out of both digests below, so
    adding it never renames a snapshot or invalidates an artifact."""
    version_id: str | None = None
    """The registry's id for this version of the object (S3 VersionId on a versioned
    bucket): the bytes stay reachable after the object is overwritten. A transport hint
    like ``etag``, out of both digests."""

    def identity(self) -> dict[str, Any]:
        """The fields that say which bytes these are (what the digests cover)."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


class LockedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    source: str
    """The source string as written in the manifest (after interpolation), ``@rev`` included."""
    revision: str
    """Immutable: 40-hex commit for hf, dist version for pkg, content digest for path/https."""
    spec: dict[str, Any]
    """The normalized spec (``ModelSpec.normalized()``) this entry was resolved from."""
    metadata: dict[str, str] = {}
    files: tuple[LockedFile, ...]

    def content_digest(self) -> str:
        """sha256 over revision + files: identifies the exact bytes of this model."""
        payload = json.dumps(
            {"revision": self.revision, "files": [f.identity() for f in self.files]},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def entry_digest(self) -> str:
        """sha256 over the whole entry (bytes + spec): what install keys its work on."""
        entry = self.model_dump(mode="json") | {"files": [f.identity() for f in self.files]}
        payload = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


class LockFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = LOCK_VERSION
    models: dict[str, LockedModel] = {}

    def select(self, names: Sequence[str]) -> list[LockedModel]:
        """The entries named on a command line (all, sorted, when none are named)."""
        if not names:
            return [self.models[n] for n in sorted(self.models)]
        unknown = [n for n in names if n not in self.models]
        if unknown:
            known = ", ".join(sorted(self.models)) or "none"
            raise UserInputError(
                f"not in modelmora.lock: {', '.join(unknown)} (locked models: {known})",
                hint="add the model to modelmora.yml and run `modelmora lock`",
            )
        return [self.models[n] for n in dict.fromkeys(names)]
