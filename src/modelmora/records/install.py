"""The files install writes about its work, beside the artifacts they describe.

Every artifact directory under ``artifacts/<key>/`` holds ``artifact.json`` (what was
built and how; written last, so a directory without it is an unfinished build),
``validation-<id>.json`` and ``benchmark-<id>.json``; ``links/<entry digest>.json`` names
the artifacts one lock entry uses. The store, the pipeline, the index (a mirror of these
files) and ``cache gc`` / ``cache reindex`` all read and write them through this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from modelmora.fsutil import atomic_write_bytes
from modelmora.manifest.model import ValidateSpec
from modelmora.records.benchmark import BackendBenchmark
from modelmora.records.conversion import ConversionResult
from modelmora.records.validation import ValidationReport

ARTIFACT_RECORD = "artifact.json"
_RECORD_FILE = re.compile(r"artifact\.json|(validation|benchmark)-[0-9a-f]+\.json")
_ID_CHARS = 16
"""Record ids are sha256 hex digests; file names carry their first 16 characters."""

VARIANT_ORDER = {"base": 0, "optimized": 1, "int8": 2, "int4": 3}
"""Position of each variant among a model's artifacts (the order install builds them in)."""


def now() -> datetime:
    """The one timestamp convention of records: aware UTC, whole seconds."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def is_record_file(relpath: str) -> bool:
    """Whether a path inside an artifact directory is a record *about* the artifact (never
    part of it: a variant built from a directory or an exported copy leaves these out)."""
    return _RECORD_FILE.fullmatch(relpath) is not None


def digest_of(payload: Any) -> str:
    """sha256 of canonical JSON: stable ids for records keyed by settings."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def validation_spec_digest(spec: ValidateSpec) -> str:
    """Identifies the thresholds a validation was judged by."""
    return digest_of(spec.model_dump(mode="json", exclude_none=True))


class ArtifactRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str
    model: str
    content_digest: str
    """Of the snapshot it was built from (``LockedModel.content_digest``)."""
    entry_digest: str
    conversion: ConversionResult
    created_at: datetime

    @property
    def variant(self) -> str:
        return self.conversion.variant


class ValidationRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    artifact_key: str
    spec_digest: str
    """Of the thresholds it was judged by: models sharing an artifact may set different ones."""
    model: str
    report: ValidationReport
    created_at: datetime


class BenchmarkRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    artifact_key: str
    model: str
    settings: dict[str, Any]
    result: BackendBenchmark
    created_at: datetime


class LinkedArtifact(BaseModel):
    model_config = ConfigDict(extra="ignore")

    position: int
    """0 for the base artifact, then the variants in their fixed order."""
    key: str


class ArtifactLinks(BaseModel):
    """The artifacts one lock entry's install uses: ``links/<entry_digest>.json``.

    An artifact's own record names only the entry that first built it; entries that share
    it (the same files at another revision, or in another project) are known only from
    these files, which ``cache gc`` and ``cache reindex`` read. Each install of the entry
    rewrites its file.
    """

    model_config = ConfigDict(extra="ignore")

    name: str
    entry_digest: str
    artifacts: list[LinkedArtifact]

    @classmethod
    def of(cls, name: str, entry_digest: str, records: Sequence[ArtifactRecord]) -> ArtifactLinks:
        """The links of one install: its artifacts in their variants' fixed order."""
        linked = [LinkedArtifact(position=VARIANT_ORDER[r.variant], key=r.key) for r in records]
        return cls(name=name, entry_digest=entry_digest, artifacts=linked)


# -- paths -----------------------------------------------------------------------------
def artifact_path(directory: Path) -> Path:
    return directory / ARTIFACT_RECORD


def validation_path(directory: Path, validation_id: str) -> Path:
    return directory / f"validation-{validation_id[:_ID_CHARS]}.json"


def benchmark_path(directory: Path, benchmark_id: str) -> Path:
    return directory / f"benchmark-{benchmark_id[:_ID_CHARS]}.json"


def links_path(links_dir: Path, entry_digest: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{64}", entry_digest):
        raise ValueError(f"invalid entry digest {entry_digest!r}")
    return links_dir / f"{entry_digest}.json"


# -- reading and writing ---------------------------------------------------------------
def write_record(path: Path, record: BaseModel, *, durable: bool = True) -> None:
    atomic_write_bytes(path, record.model_dump_json(indent=2).encode(), durable=durable)


def read_artifact(directory: Path) -> ArtifactRecord | None:
    """The record of a finished artifact; None while it is built or after a kill.
    A damaged record raises (``ValueError``): callers decide whether to rebuild or skip."""
    path = artifact_path(directory)
    if not path.is_file():
        return None
    return ArtifactRecord.model_validate_json(path.read_bytes())


def read_artifact_quietly(directory: Path) -> ArtifactRecord | None:
    """:func:`read_artifact`, with a damaged or unreadable record read as absent."""
    try:
        return read_artifact(directory)
    except (OSError, ValueError):
        return None


def read_validation(directory: Path, validation_id: str) -> ValidationRecord | None:
    path = validation_path(directory, validation_id)
    return ValidationRecord.model_validate_json(path.read_bytes()) if path.is_file() else None


def read_benchmark(directory: Path, benchmark_id: str) -> BenchmarkRecord | None:
    path = benchmark_path(directory, benchmark_id)
    return BenchmarkRecord.model_validate_json(path.read_bytes()) if path.is_file() else None


def iter_records(
    directory: Path,
) -> tuple[ArtifactRecord | None, list[ValidationRecord], list[BenchmarkRecord]]:
    """Everything recorded in one artifact directory (for reindex and read commands)."""
    artifact = read_artifact(directory)
    validations = [
        ValidationRecord.model_validate_json(p.read_bytes())
        for p in sorted(directory.glob("validation-*.json"))
    ]
    benchmarks = [
        BenchmarkRecord.model_validate_json(p.read_bytes())
        for p in sorted(directory.glob("benchmark-*.json"))
    ]
    return artifact, validations, benchmarks


def read_all_links(links_dir: Path) -> list[ArtifactLinks]:
    return read_json_records(links_dir, ArtifactLinks)


_Record = TypeVar("_Record", bound=BaseModel)


def read_json_records(directory: Path, model: type[_Record]) -> list[_Record]:
    """Every readable ``*.json`` record in ``directory``; a torn or foreign one reads as absent."""
    found = []
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            try:
                found.append(model.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError, ValueError):
                continue
    return found


def iter_artifact_dirs(artifacts_dir: Path) -> Iterator[Path]:
    """Every directory under ``artifacts/``, sorted (finished or not)."""
    if artifacts_dir.is_dir():
        yield from sorted(p for p in artifacts_dir.iterdir() if p.is_dir())
