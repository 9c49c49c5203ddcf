"""On-disk records of what install produced, next to the artifacts they describe.

The store is the truth: every artifact directory holds ``artifact.json`` (what was built and
how), ``validation-<id>.json`` and ``benchmark-<id>.json``. The DuckDB index mirrors them
for queries and ``cache reindex`` rebuilds it from these files.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from modelmora.bench.report import BackendBenchmark
from modelmora.cache.store import ARTIFACT_RECORD
from modelmora.convert.result import ConversionResult
from modelmora.fsutil import atomic_write_bytes
from modelmora.manifest.model import ValidateSpec
from modelmora.validate.report import ValidationReport


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


def now() -> datetime:
    return datetime.now(timezone.utc)


def write_record(path: Path, record: BaseModel) -> None:
    atomic_write_bytes(path, record.model_dump_json(indent=2).encode())


def read_artifact(directory: Path) -> ArtifactRecord | None:
    path = directory / ARTIFACT_RECORD
    if not path.is_file():
        return None
    return ArtifactRecord.model_validate_json(path.read_bytes())


def read_validation(directory: Path, validation_id: str) -> ValidationRecord | None:
    path = validation_path(directory, validation_id)
    return ValidationRecord.model_validate_json(path.read_bytes()) if path.is_file() else None


def validation_path(directory: Path, validation_id: str) -> Path:
    return directory / f"validation-{validation_id[:16]}.json"


def benchmark_path(directory: Path, benchmark_id: str) -> Path:
    return directory / f"benchmark-{benchmark_id[:16]}.json"


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
