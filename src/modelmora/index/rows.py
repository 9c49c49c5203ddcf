"""Rows of ``index.duckdb``: how each record of the store becomes rows, written or rebuilt.

The same functions serve a live write (a pull, an install stage) and ``cache reindex``
(:func:`populate`, which reads every record back from the store), so a rebuilt index holds
exactly what the live writes would have. Every timestamp goes through :func:`utc`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from modelmora.cache.store import ProjectRecord, SnapshotRecord, Store
from modelmora.records import (
    VARIANT_ORDER,
    ArtifactLinks,
    ArtifactRecord,
    BenchmarkRecord,
    ValidationRecord,
    iter_artifact_dirs,
    iter_records,
)

if TYPE_CHECKING:
    import duckdb


def utc(when: datetime | None = None) -> datetime:
    """The index's one timestamp convention: naive UTC, whole seconds (records hold aware
    UTC; DuckDB would otherwise convert aware values through the session's time zone)."""
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.replace(microsecond=0)


# -- the store's own records -----------------------------------------------------------
def insert_project(con: duckdb.DuckDBPyConnection, project: ProjectRecord) -> None:
    con.execute(
        "INSERT OR REPLACE INTO projects VALUES (?, ?, ?)",
        [project.project_dir, project.lock_path, utc(project.registered_at)],
    )


def insert_blob(
    con: duckdb.DuckDBPyConnection, store: Store, sha: str, size: int, when: datetime
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?)",
        [sha, size, str(store.blob_path(sha).relative_to(store.root)), utc(when)],
    )


def insert_snapshot(con: duckdb.DuckDBPyConnection, store: Store, record: SnapshotRecord) -> None:
    m = record.model
    digest = record.content_digest
    when = utc(record.created_at)
    con.execute(
        """
        INSERT INTO models VALUES (?, ?, ?, ?)
        ON CONFLICT DO UPDATE SET last_seen = greatest(models.last_seen, excluded.last_seen)
        """,
        [m.name, m.source, when, when],
    )
    con.execute(
        "INSERT OR REPLACE INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            m.name,
            digest,
            m.source,
            m.revision,
            m.entry_digest(),
            len(m.files),
            sum(f.size for f in m.files),
            json.dumps(m.metadata, sort_keys=True),
            json.dumps(m.spec, sort_keys=True),
            when,
        ],
    )
    con.execute("DELETE FROM files WHERE content_digest = ?", [digest])
    if m.files:
        con.executemany(
            "INSERT INTO files VALUES (?, ?, ?, ?)",
            [[digest, f.path, f.size, f.sha256] for f in m.files],
        )
    con.execute(
        "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)",
        [
            m.name,
            digest,
            str(store.snapshot_dir(m.name, digest).relative_to(store.root)),
            record.link_mode,
            when,
        ],
    )


# -- install's records -----------------------------------------------------------------
def insert_artifact(con: duckdb.DuckDBPyConnection, store: Store, record: ArtifactRecord) -> None:
    conv = record.conversion
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
            sum(f.size for f in conv.files),
            conv.sha256,
            utc(record.created_at),
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
            utc(record.created_at),
            report.model_dump_json(),
        ],
    )


def insert_benchmark(con: duckdb.DuckDBPyConnection, record: BenchmarkRecord) -> None:
    """One row per batch size (one row for a backend that was not measured)."""
    result = record.result
    con.execute("DELETE FROM benchmarks WHERE benchmark_id LIKE ?", [f"{record.id}:%"])
    meta: dict[str, Any] = {
        "settings": record.settings,
        "session_providers": result.session_providers,
        "notes": result.notes,
    }
    head = [record.artifact_key, result.backend, result.provider, result.status, result.reason]
    when = utc(record.created_at)
    rows: list[list[Any]] = []
    if result.status != "ok" or not result.batches:
        rows.append([f"{record.id}:0", *head, 0, *[None] * 7, when, json.dumps(meta)])
    for b in result.batches:
        measured = [b.seq_len, b.iterations, b.load_time_ms, b.p50_ms, b.p95_ms, b.p99_ms]
        extra = {
            "peak_rss_mb": b.peak_rss_mb,
            "gpu_memory_mb": b.gpu_memory_mb,
            "kind": result.kind,
            "ttft_ms": b.ttft_ms,
            "prompt_tokens_per_s": b.prompt_tokens_per_s,
        }
        rows.append(
            [
                f"{record.id}:{b.batch_size}",
                *head,
                b.batch_size,
                *measured,
                b.throughput_items_per_s,
                when,
                json.dumps({**meta, **extra}),
            ]
        )
    con.executemany(
        "INSERT INTO benchmarks (benchmark_id, artifact_key, backend, provider, status, reason, "
        "batch_size, seq_len, iterations, load_time_ms, latency_ms_p50, latency_ms_p95, "
        "latency_ms_p99, throughput_per_s, created_at, metadata) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def replace_links(con: duckdb.DuckDBPyConnection, links: ArtifactLinks) -> None:
    con.execute(
        "DELETE FROM model_artifacts WHERE name = ? AND entry_digest = ?",
        [links.name, links.entry_digest],
    )
    con.executemany(
        "INSERT INTO model_artifacts (name, entry_digest, position, artifact_key) "
        "VALUES (?, ?, ?, ?)",
        [[links.name, links.entry_digest, a.position, a.key] for a in links.artifacts],
    )


# -- rebuilding from the store ---------------------------------------------------------
def populate(con: duckdb.DuckDBPyConnection, store: Store) -> dict[str, int]:
    """Fill every table but ``runs`` (a log) from the records in the store."""
    counts = _populate_store(con, store)
    counts.update(_populate_install(con, store))
    return counts


def _populate_store(con: duckdb.DuckDBPyConnection, store: Store) -> dict[str, int]:
    counts = {"snapshots": 0, "blobs": 0, "projects": 0}
    for record in store.iter_snapshots():
        insert_snapshot(con, store, record)
        counts["snapshots"] += 1
    for sha, path in store.iter_blobs():
        try:
            if store.blob_path(sha) != path:
                continue
            st = path.stat()
        except (ValueError, OSError):
            continue
        insert_blob(con, store, sha, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))
        counts["blobs"] += 1
    for project in store.projects():
        insert_project(con, project)
        counts["projects"] += 1
    return counts


def _populate_install(con: duckdb.DuckDBPyConnection, store: Store) -> dict[str, int]:
    counts = {"artifacts": 0, "validations": 0, "benchmarks": 0, "model_artifacts": 0}
    bases: dict[str, ArtifactRecord] = {}  # base model.onnx sha256 → its record
    variants: list[ArtifactRecord] = []
    for directory in iter_artifact_dirs(store.artifacts_dir):
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
            replace_links(con, links)
            counts["model_artifacts"] += len(links.artifacts)
    return counts
