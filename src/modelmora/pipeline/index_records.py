"""Mirror install records into ``index.duckdb`` (short transactions, like every index write).

Also used by ``cache reindex`` to rebuild the artifact, validation and benchmark tables
from the records on disk.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from modelmora.cache import Store
from modelmora.cache.store import ArtifactLinks, LinkedArtifact
from modelmora.lock import LockedModel
from modelmora.pipeline.records import ArtifactRecord, BenchmarkRecord, ValidationRecord

VARIANT_ORDER = {"base": 0, "optimized": 1, "int8": 2, "int4": 3}
"""Order of a model's artifacts (``planned_variants`` builds them in this order)."""

if TYPE_CHECKING:
    import duckdb


def link_artifacts(store: Store, entry: LockedModel, records: list[ArtifactRecord]) -> None:
    """Mirror ``records`` and which lock entry they serve (an artifact can serve several).

    Called with cached records too: a run killed after writing a record but before indexing
    it leaves the index behind the store, and this catches it up. The store keeps the links
    too (``links/<entry_digest>.json``): gc and reindex must not depend on the index.
    """
    from modelmora.cache import Index

    links = ArtifactLinks(
        name=entry.name,
        entry_digest=entry.entry_digest(),
        artifacts=[LinkedArtifact(position=VARIANT_ORDER[r.variant], key=r.key) for r in records],
    )
    store.write_artifact_links(links)
    with Index(store).transaction() as con:
        for record in records:
            insert_artifact(con, store, record)
        _replace_links(con, links)


def _replace_links(con: duckdb.DuckDBPyConnection, links: ArtifactLinks) -> None:
    con.execute(
        "DELETE FROM model_artifacts WHERE name = ? AND entry_digest = ?",
        [links.name, links.entry_digest],
    )
    con.executemany(
        "INSERT INTO model_artifacts (name, entry_digest, position, artifact_key) "
        "VALUES (?, ?, ?, ?)",
        [[links.name, links.entry_digest, a.position, a.key] for a in links.artifacts],
    )


def record_run(store: Store, project_dir: str, outcome: Any, started_at: Any) -> None:
    """One row per model per install run (the Dagster run id links to the UI)."""
    from modelmora.cache import Index
    from modelmora.pipeline.records import now

    with Index(store).transaction() as con:
        con.execute(
            "INSERT OR REPLACE INTO runs (run_id, project_dir, model_name, step, status, "
            "started_at, finished_at, message, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                outcome.run_id,
                project_dir,
                outcome.name,
                "install",
                "success" if outcome.ok else "failure",
                started_at,
                now(),
                outcome.error or None,
                json.dumps({"stages": outcome.stages, "seconds": round(outcome.seconds, 3)}),
            ],
        )


def record_validations(store: Store, records: list[ValidationRecord]) -> None:
    """Mirror validation records (fresh or found on disk) in one transaction."""
    from modelmora.cache import Index

    with Index(store).transaction() as con:
        for record in records:
            insert_validation(con, record)


def record_benchmarks(store: Store, records: list[BenchmarkRecord]) -> None:
    """Mirror benchmark records (fresh or found on disk) in one transaction."""
    from modelmora.cache import Index

    with Index(store).transaction() as con:
        for record in records:
            insert_benchmark(con, record)


def insert_artifact(con: duckdb.DuckDBPyConnection, store: Store, record: ArtifactRecord) -> None:
    conv = record.conversion
    size = sum(f.size for f in conv.files)
    con.execute(
        "INSERT OR REPLACE INTO artifacts (artifact_key, name, content_digest, entry_digest, "
        "kind, path, size, sha256, created_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            record.key,
            record.model,
            record.content_digest,
            record.entry_digest,
            conv.variant,
            str(store.artifact_dir(record.key)),
            size,
            conv.sha256,
            record.created_at,
            conv.model_dump_json(),
        ],
    )


def insert_validation(con: duckdb.DuckDBPyConnection, record: ValidationRecord) -> None:
    report = record.report
    cosines = [o.min_cosine for o in report.outputs if o.min_cosine is not None]
    con.execute(
        "INSERT OR REPLACE INTO validations (validation_id, artifact_key, spec_digest, passed, "
        "max_abs_diff, min_cosine, created_at, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            record.id,
            record.artifact_key,
            record.spec_digest,
            report.passed,
            max((o.max_abs_diff for o in report.outputs), default=None),
            min(cosines) if cosines else None,
            record.created_at,
            report.model_dump_json(),
        ],
    )


def insert_benchmark(con: duckdb.DuckDBPyConnection, record: BenchmarkRecord) -> None:
    result = record.result
    con.execute("DELETE FROM benchmarks WHERE benchmark_id LIKE ?", [f"{record.id}:%"])
    rows: list[list[Any]] = []
    meta = json.dumps(
        {
            "settings": record.settings,
            "session_providers": result.session_providers,
            "notes": result.notes,
        }
    )
    if result.status != "ok" or not result.batches:
        rows.append(
            [
                f"{record.id}:0",
                record.artifact_key,
                result.backend,
                result.provider,
                result.status,
                result.reason,
                0,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                record.created_at,
                meta,
            ]
        )
    for b in result.batches:
        rows.append(
            [
                f"{record.id}:{b.batch_size}",
                record.artifact_key,
                result.backend,
                result.provider,
                result.status,
                result.reason,
                b.batch_size,
                b.seq_len,
                b.iterations,
                b.load_time_ms,
                b.p50_ms,
                b.p95_ms,
                b.p99_ms,
                b.throughput_items_per_s,
                record.created_at,
                json.dumps(
                    {
                        **json.loads(meta),
                        "peak_rss_mb": b.peak_rss_mb,
                        "gpu_memory_mb": b.gpu_memory_mb,
                        "kind": result.kind,
                        "ttft_ms": b.ttft_ms,
                        "prompt_tokens_per_s": b.prompt_tokens_per_s,
                    }
                ),
            ]
        )
    con.executemany(
        "INSERT INTO benchmarks (benchmark_id, artifact_key, backend, provider, status, reason, "
        "batch_size, seq_len, iterations, load_time_ms, latency_ms_p50, latency_ms_p95, "
        "latency_ms_p99, throughput_per_s, created_at, metadata) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def populate_from_store(con: duckdb.DuckDBPyConnection, store: Store) -> dict[str, int]:
    """Rebuild the artifact, validation, benchmark and link tables from the records on disk."""
    from modelmora.pipeline.records import iter_records

    counts = {"artifacts": 0, "validations": 0, "benchmarks": 0, "model_artifacts": 0}
    if not store.artifacts_dir.is_dir():
        return counts
    bases: dict[str, ArtifactRecord] = {}  # base model.onnx sha256 → its record
    variants: list[ArtifactRecord] = []
    for directory in sorted(p for p in store.artifacts_dir.iterdir() if p.is_dir()):
        try:
            artifact, validations, benchmarks = iter_records(directory)
        except ValueError:  # a damaged record: skip it, the artifact will be rebuilt
            continue
        if artifact is None:
            continue
        insert_artifact(con, store, artifact)
        counts["artifacts"] += 1
        if artifact.variant == "base":
            bases[artifact.conversion.sha256] = artifact
        else:
            variants.append(artifact)
        for validation in validations:
            insert_validation(con, validation)
            counts["validations"] += 1
        for benchmark in benchmarks:
            insert_benchmark(con, benchmark)
            counts["benchmarks"] += 1
    # Links: the entry that built a base artifact, and the variants derived from that base;
    # then every entry's links file (installs since links files exist), which also names
    # the entries that share an artifact they did not build.
    for base in bases.values():
        con.execute(
            "INSERT OR REPLACE INTO model_artifacts VALUES (?, ?, 0, ?)",
            [base.model, base.entry_digest, base.key],
        )
        counts["model_artifacts"] += 1
    for variant in variants:
        parent = bases.get(variant.conversion.base_sha256 or "")
        if parent is None:
            continue
        con.execute(
            "INSERT OR REPLACE INTO model_artifacts VALUES (?, ?, ?, ?)",
            [parent.model, parent.entry_digest, VARIANT_ORDER.get(variant.variant, 9), variant.key],
        )
        counts["model_artifacts"] += 1
    known = {a.key for a in [*bases.values(), *variants]}
    for links in store.artifact_links():
        if all(a.key in known for a in links.artifacts):  # else: an artifact was deleted
            _replace_links(con, links)
            counts["model_artifacts"] += len(links.artifacts)
    return counts
