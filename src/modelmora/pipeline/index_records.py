"""Mirror install records into ``index.duckdb`` (short transactions, like every index write).

Also used by ``cache reindex`` to rebuild the artifact, validation and benchmark tables
from the records on disk.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from modelmora.cache import Store
from modelmora.lock import LockedModel
from modelmora.pipeline.records import ArtifactRecord, BenchmarkRecord, ValidationRecord

if TYPE_CHECKING:
    import duckdb


def record_artifact(store: Store, record: ArtifactRecord) -> None:
    from modelmora.cache import Index

    with Index(store).transaction() as con:
        insert_artifact(con, store, record)


def link_artifacts(store: Store, entry: LockedModel, records: list[ArtifactRecord]) -> None:
    """Which artifacts serve this lock entry (an artifact can serve several entries)."""
    from modelmora.cache import Index

    with Index(store).transaction() as con:
        con.execute(
            "DELETE FROM model_artifacts WHERE name = ? AND entry_digest = ?",
            [entry.name, entry.entry_digest()],
        )
        con.executemany(
            "INSERT INTO model_artifacts (name, entry_digest, position, artifact_key) "
            "VALUES (?, ?, ?, ?)",
            [[entry.name, entry.entry_digest(), i, r.key] for i, r in enumerate(records)],
        )


def record_validation(store: Store, record: ValidationRecord) -> None:
    from modelmora.cache import Index

    with Index(store).transaction() as con:
        insert_validation(con, record)


def record_benchmark(store: Store, record: BenchmarkRecord) -> None:
    from modelmora.cache import Index

    with Index(store).transaction() as con:
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
        "INSERT OR REPLACE INTO validations (validation_id, artifact_key, passed, max_abs_diff, "
        "min_cosine, created_at, metrics) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            record.id,
            record.artifact_key,
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
    meta = json.dumps({"settings": record.settings, "session_providers": result.session_providers})
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
