"""The install stages as plain functions: download → convert → validate → benchmark.

Dagster assets (``definitions.py``) are thin wrappers over these, and tests call them
directly. Every stage is idempotent and content-addressed: a re-run after an interruption
finds the finished work on disk (``artifact.json``, ``validation-*.json``, ``benchmark-*.json``)
and skips it, so ``install`` resumes instead of redoing.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from modelmora.cache import Store, pull_entries
from modelmora.cache.filecheck import file_problems, remember_hashed
from modelmora.errors import ModelMoraError
from modelmora.index import Index
from modelmora.lock import LockedModel
from modelmora.manifest.model import ModelSpec
from modelmora.pipeline import progress
from modelmora.project import Project
from modelmora.records import (
    ArtifactRecord,
    BenchmarkRecord,
    ValidationRecord,
    artifact_path,
    benchmark_path,
    digest_of,
    now,
    read_artifact,
    read_benchmark,
    read_validation,
    validation_path,
    validation_spec_digest,
    write_record,
)
from modelmora.records.benchmark import BackendBenchmark, BatchResult, BenchmarkKind
from modelmora.records.conversion import ConversionResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelJob:
    """Everything a stage needs to work on one locked model."""

    project: Project
    entry: LockedModel
    store: Store

    @cached_property
    def spec(self) -> ModelSpec:
        return self.entry.model_spec

    @property
    def name(self) -> str:
        return self.entry.name

    @cached_property
    def index(self) -> Index:
        return Index(self.store)


def download(job: ModelJob) -> Path:
    """Fetch and verify the locked files; return the snapshot directory."""
    progress.stage(job.name, "download", "running")
    report = pull_entries(
        [job.entry],
        lambda entry: job.project.source_for(entry),
        job.store,
        jobs=4,
        progress=progress.files(),
        project=(job.project.dir, job.project.lock_path),
        mirror=job.index,
    )
    snapshot = report.models[0].snapshot
    if snapshot is None:  # pull_entries raises for missing files; this is a safety net
        raise ModelMoraError(f"model '{job.name}': download produced no snapshot")
    progress.stage(job.name, "download", "done" if report.bytes_fetched else "cached")
    return snapshot


def convert(job: ModelJob, snapshot: Path) -> list[ArtifactRecord]:
    """The base ONNX artifact plus the variants the manifest asks for."""
    from modelmora.convert import (
        artifact_key,
        conversion_recipe,
        make_variant,
        planned_variants,
        tool_versions,
    )
    from modelmora.convert import convert as convert_snapshot
    from modelmora.convert.api import resolve_format, resolve_task

    progress.stage(job.name, "convert", "running")
    spec = job.spec
    fmt = resolve_format(snapshot, name=job.name, exporter=spec.convert.exporter)
    task = resolve_task(
        snapshot, fmt, declared=spec.task, metadata=job.entry.metadata, name=job.name
    )
    tools = tool_versions(fmt)
    inputs = {f.path: f.sha256 for f in job.entry.files}
    base_key = artifact_key(
        inputs, conversion_recipe(spec.convert, source_format=fmt, task=task), tools
    )

    def build_base(out: Path) -> ConversionResult:
        return convert_snapshot(
            snapshot,
            out,
            name=job.name,
            task=task,
            spec=spec.convert,
            metadata=job.entry.metadata,
            trust_remote_code=spec.trust_remote_code,
            allow_pickle=spec.allow_pickle,
        )

    base, built = _ensure_artifact(job, base_key, build_base)
    records = [base]
    base_dir = job.store.artifact_dir(base.key)
    for variant in planned_variants(spec.convert):
        recipe = conversion_recipe(spec.convert, source_format=fmt, task=task, variant=variant)
        key = artifact_key({"base": base.conversion.sha256}, recipe, tools)

        def build_variant(out: Path, variant: str = variant) -> ConversionResult:
            return make_variant(
                variant,
                base_dir,
                out,
                name=job.name,
                spec=spec.convert,
                source_format=fmt,
                task=task,
            )

        record, new = _ensure_artifact(job, key, build_variant)
        built = built or new
        records.append(record)
    job.index.record_artifacts(job.entry, records)
    progress.stage(job.name, "convert", "done" if built else "cached")
    return records


def _ensure_artifact(
    job: ModelJob, key: str, build: Callable[[Path], ConversionResult]
) -> tuple[ArtifactRecord, bool]:
    """Build the artifact ``key`` unless a complete one exists; return it and whether built.

    The record is written last: a directory without ``artifact.json`` is an interrupted
    build and is discarded, never used.
    """
    directory = job.store.artifact_dir(key)
    job.store.ensure_layout()
    with job.store.artifact_lock(key):
        existing = read_artifact(directory)
        if existing is not None:
            problems = file_problems(directory, existing.conversion.files, job.store.statcache)
            if not problems:
                return existing, False
            log.warning(
                "%s: artifact %s differs from its record (%s); rebuilding it",
                job.name,
                key,
                "; ".join(map(str, problems[:3])),
            )
        if directory.exists():
            shutil.rmtree(directory)
        result = build(directory)
        remember_hashed(job.store.statcache, directory, result.files)
        record = ArtifactRecord(
            key=key,
            model=job.name,
            content_digest=job.entry.content_digest(),
            entry_digest=job.entry.entry_digest(),
            conversion=result,
            created_at=now(),
        )
        write_record(artifact_path(directory), record)
    return record, True


def validate(
    job: ModelJob, snapshot: Path, artifacts: list[ArtifactRecord]
) -> list[ValidationRecord]:
    """The hard gate: every artifact against the reference, thresholds from the manifest."""
    from modelmora.convert import tool_versions
    from modelmora.convert.keys import QUANTIZED_VARIANTS
    from modelmora.validate import validate as run_validation

    progress.stage(job.name, "validate", "running")
    spec = job.spec.validate_
    results = []
    fresh = False
    for artifact in artifacts:
        directory = job.store.artifact_dir(artifact.key)
        vid = digest_of(
            {
                "artifact": artifact.key,
                "validate": spec.model_dump(exclude_none=True),
                "tools": tool_versions(),
            }
        )
        record = read_validation(directory, vid)
        if record is None:
            report = run_validation(
                snapshot,
                directory / artifact.conversion.model_file,
                task=artifact.conversion.task,
                spec=spec,
                quantized=artifact.variant in QUANTIZED_VARIANTS,
                allow_pickle=job.spec.allow_pickle,
                trust_remote_code=job.spec.trust_remote_code,
            )
            record = ValidationRecord(
                id=vid,
                artifact_key=artifact.key,
                spec_digest=validation_spec_digest(spec),
                model=job.name,
                report=report,
                created_at=now(),
            )
            write_record(validation_path(directory, vid), record)
            fresh = True
        results.append(record)
    job.index.record_validations(results)
    passed = all(r.report.passed for r in results)
    progress.stage(job.name, "validate", ("done" if fresh else "cached") if passed else "failed")
    return results


def benchmark(
    job: ModelJob,
    artifacts: list[ArtifactRecord],
    *,
    backends: list[str] | None = None,
    force: bool = False,
) -> list[BenchmarkRecord]:
    """Measure every validated artifact on every requested backend.

    A backend whose provider is not really active is recorded as ``unavailable`` with the
    reason, never as a measurement; one that raised while measuring as ``failed``. ``force``
    re-measures even when a record exists.
    """
    from modelmora.bench.core import ort_version
    from modelmora.bench.dispatch import benchmark_artifact, benchmark_kind, planned_sizes

    progress.stage(job.name, "benchmark", "running")
    spec = job.spec.benchmark
    settings_base = spec.model_dump(exclude_none=True)
    chosen = backends or job.spec.backends
    counts = [len(planned_sizes(a.conversion.task, spec)) for a in artifacts]
    total = sum(counts) * len(chosen)
    done = 0
    records = []
    fresh = False
    for artifact, sizes in zip(artifacts, counts, strict=True):
        directory = job.store.artifact_dir(artifact.key)
        for backend in chosen:
            settings = {"backend": backend, **settings_base}
            bid = digest_of({"artifact": artifact.key, **settings, "onnxruntime": ort_version()})
            record = None if force else read_benchmark(directory, bid)
            where = f"{artifact.variant} on {backend}"
            kind = benchmark_kind(artifact.conversion.task)

            def measured(row: BatchResult, where: str = where, kind: BenchmarkKind = kind) -> None:
                nonlocal done
                done += 1
                progress.step(job.name, "benchmark", done, total, f"{where}: {row.summary(kind)}")

            pair_start = done
            if record is None or record.result.status == "failed":  # a failure is re-tried
                result: BackendBenchmark = benchmark_artifact(
                    directory,
                    task=artifact.conversion.task,
                    backend=backend,
                    spec=spec,
                    on_row=measured,
                    model_file=artifact.conversion.model_file,
                )
                record = BenchmarkRecord(
                    id=bid,
                    artifact_key=artifact.key,
                    model=job.name,
                    settings=settings,
                    result=result,
                    created_at=now(),
                )
                write_record(benchmark_path(directory, bid), record)
                fresh = True
            if record.result.status != "ok" or done == pair_start:  # not measured row by row
                done = pair_start + sizes
                progress.step(
                    job.name, "benchmark", done, total, f"{where}: {record.result.status_line}"
                )
            records.append(record)
    job.index.record_benchmarks(records)
    progress.stage(job.name, "benchmark", "done" if fresh else "cached")
    return records
