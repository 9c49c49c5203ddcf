"""The schema of ``modelmora.lock``.

The lock is the contract between ``lock`` and everything after it: ``pull`` fetches exactly
these files and verifies size + sha256; ``install`` keys artifacts on the entry's spec and
file digests. It never holds secrets or absolute machine paths.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelmora.errors import UserInputError
from modelmora.layout import layout_problem, model_name_problem, path_problem

if TYPE_CHECKING:
    from modelmora.manifest.model import ModelSpec

LOCK_VERSION = 1


def drop_none(value: Any) -> Any:
    """TOML has no null: drop ``None`` recursively (defaults restore them on read)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [drop_none(v) for v in value]
    return value


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

    @field_validator("path")
    @classmethod
    def _clean_path(cls, path: str) -> str:
        """The lock is input too: a hand-edited path must not make pull write elsewhere."""
        problem = path_problem(path)
        if problem is not None:
            raise ValueError(f"file {path!r}: {problem}")
        return path

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

    @field_validator("name")
    @classmethod
    def _clean_name(cls, name: str) -> str:
        problem = model_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _laid_out(self) -> LockedModel:
        if not self.files:
            raise ValueError("no files (a model has at least one)")
        problem = layout_problem(f.path for f in self.files)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def model_spec(self) -> ModelSpec:
        """The entry's spec typed, with the manifest's defaults: every consumer reads it here
        instead of ``spec.get(key, default)``, so a default is stated once. (Imported here:
        the manifest package brings ruamel.yaml, which reading a lock does not need.)"""
        from modelmora.manifest.model import ModelSpec

        return ModelSpec.model_validate(self.spec)

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

    def integrity(self) -> str:
        """``sha256:`` over every entry as the lock stores it (nulls dropped, files sorted) but
        not over TOML bytes, so formatting is free: written at the top of the lock, so a
        truncated or hand-edited lock is named as such."""
        entries = []
        for name in sorted(self.models):
            entry = drop_none(self.models[name].model_dump(mode="json"))
            entry["files"] = sorted(entry["files"], key=lambda f: str(f["path"]))
            entries.append(entry)
        payload = json.dumps(entries, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()

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
