"""``index.duckdb``: a queryable index of the store, rebuildable from it at any time.

DuckDB lets one process at a time hold a database file for writing, so every operation
here is open → one short transaction → close, serialized between ModelMora processes by a
file lock and retried with backoff when something else (a DuckDB shell, a notebook) holds
the file. The store is the truth: a missing, corrupt or outdated index is rebuilt from it,
saying so, and ``modelmora cache reindex`` does the same on demand.

The schema is documented table by table in docs/cache.md; bump ``SCHEMA_VERSION`` on any
change (older indexes are rebuilt automatically).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from modelmora.cache.store import ProjectRecord, SnapshotRecord, Store, store_os_error
from modelmora.errors import ModelMoraError

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

# Tables filled by the cache (rebuilt from the store by reindex) ...
_STORE_TABLES = ("models", "revisions", "files", "blobs", "snapshots", "projects")
# ... and tables the pipeline writes (carried over from the old file by reindex).
_PIPELINE_TABLES = ("artifacts", "model_artifacts", "validations", "benchmarks", "runs")

SCHEMA = """
CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE models (
    name VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (name, source)
);
CREATE TABLE revisions (
    name VARCHAR NOT NULL,
    content_digest VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    revision VARCHAR NOT NULL,
    entry_digest VARCHAR NOT NULL,
    file_count BIGINT NOT NULL,
    total_size BIGINT NOT NULL,
    metadata JSON NOT NULL,
    spec JSON NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, content_digest)
);
CREATE TABLE files (
    content_digest VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    PRIMARY KEY (content_digest, path)
);
CREATE TABLE blobs (
    sha256 VARCHAR PRIMARY KEY,
    size BIGINT NOT NULL,
    path VARCHAR NOT NULL,
    stored_at TIMESTAMP NOT NULL
);
CREATE TABLE snapshots (
    name VARCHAR NOT NULL,
    content_digest VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    link_mode VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (name, content_digest)
);
CREATE TABLE projects (
    project_dir VARCHAR PRIMARY KEY,
    lock_path VARCHAR NOT NULL,
    registered_at TIMESTAMP NOT NULL
);
CREATE TABLE artifacts (
    artifact_key VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    content_digest VARCHAR NOT NULL,
    entry_digest VARCHAR,
    kind VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    size BIGINT,
    sha256 VARCHAR,
    created_at TIMESTAMP NOT NULL,
    metadata JSON
);
CREATE TABLE validations (
    validation_id VARCHAR PRIMARY KEY,
    artifact_key VARCHAR NOT NULL,
    spec_digest VARCHAR NOT NULL,
    passed BOOLEAN NOT NULL,
    max_abs_diff DOUBLE,
    min_cosine DOUBLE,
    created_at TIMESTAMP NOT NULL,
    metrics JSON
);
CREATE TABLE model_artifacts (
    name VARCHAR NOT NULL,
    entry_digest VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    artifact_key VARCHAR NOT NULL,
    PRIMARY KEY (name, entry_digest, position)
);
CREATE TABLE benchmarks (
    benchmark_id VARCHAR PRIMARY KEY,
    artifact_key VARCHAR NOT NULL,
    backend VARCHAR NOT NULL,
    provider VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    batch_size INTEGER NOT NULL,
    seq_len INTEGER,
    iterations INTEGER,
    load_time_ms DOUBLE,
    latency_ms_p50 DOUBLE,
    latency_ms_p95 DOUBLE,
    latency_ms_p99 DOUBLE,
    throughput_per_s DOUBLE,
    created_at TIMESTAMP NOT NULL,
    metadata JSON
);
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    project_dir VARCHAR,
    model_name VARCHAR,
    step VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    message VARCHAR,
    metadata JSON
);
"""


class IndexBusyError(ModelMoraError):
    """Another program kept ``index.duckdb`` locked for longer than the timeout."""


@dataclass(frozen=True)
class SnapshotRow:
    name: str
    source: str
    revision: str
    content_digest: str
    file_count: int
    total_size: int
    path: str
    link_mode: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "revision": self.revision,
            "content_digest": self.content_digest,
            "file_count": self.file_count,
            "total_size": self.total_size,
            "path": self.path,
            "link_mode": self.link_mode,
            "created_at": self.created_at.isoformat() + "Z",
        }


def _utc(when: datetime | None = None) -> datetime:
    """DuckDB ``TIMESTAMP`` columns hold naive UTC (TIMESTAMPTZ would need pytz)."""
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.replace(microsecond=0)


_CREATED_MARKER = ".index-created"
"""Written once an index exists, so a missing index file means "lost", not "never built"."""


def _is_lock_conflict(exc: Exception) -> bool:
    return "lock" in str(exc).lower() and "conflicting" in str(exc).lower()


class Index:
    """Short-lived access to ``index.duckdb``; construct freely, nothing opens until used."""

    def __init__(
        self,
        store: Store,
        *,
        timeout_s: float = 30.0,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.path = store.index_path
        self.timeout_s = timeout_s
        self._notify = notify or log.warning

    # -- connection handling -----------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short transaction; commits on success, rolls back on error, always closes."""
        self.store.ensure_layout()
        lock = FileLock(self.store.locks_dir / "index.lock")
        try:
            lock.acquire(timeout=self.timeout_s)
        except Timeout:
            raise IndexBusyError(
                f"{self.path}: another modelmora process held the index for more than "
                f"{self.timeout_s:g} s"
            ) from None
        import duckdb

        try:
            con = self._open_ready()
            try:
                con.begin()
                try:
                    yield con
                except BaseException:
                    con.rollback()
                    raise
                con.commit()
            finally:
                con.close()
        except duckdb.Error as exc:
            raise ModelMoraError(
                f"index {self.path}: {_first_line(exc)}",
                hint="the store is unaffected; `modelmora cache reindex` rebuilds the index",
            ) from exc
        finally:
            lock.release()

    def _connect(self, path: Path) -> duckdb.DuckDBPyConnection:
        """Open, retrying with jittered backoff while another process holds the file."""
        import duckdb

        deadline = time.monotonic() + self.timeout_s
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(path))
            except duckdb.IOException as exc:
                if not _is_lock_conflict(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise IndexBusyError(
                        f"{path}: locked by another program for more than "
                        f"{self.timeout_s:g} s ({exc})",
                        hint="close DuckDB shells or notebooks that opened the index",
                    ) from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)

    def _open_ready(self) -> duckdb.DuckDBPyConnection:
        """Open the index; create, upgrade or rebuild it from the store when needed."""
        import duckdb

        # The marker tells "never had an index" (silent) from "the index was lost" (say so).
        marker = self.store.root / _CREATED_MARKER
        reason = None if self.path.exists() or not marker.exists() else "missing"
        try:
            con = self._connect(self.path)
        except IndexBusyError:
            raise
        except duckdb.Error as exc:
            reason = self._quarantine(f"unreadable ({_first_line(exc)})")
            con = self._connect(self.path)
        except OSError as exc:
            raise store_os_error("open the index", self.path, exc) from exc
        try:
            version = self._schema_version(con)
        except duckdb.Error as exc:
            con.close()
            reason = self._quarantine(f"corrupt ({_first_line(exc)})")
            con = self._connect(self.path)
            version = None
        if version == SCHEMA_VERSION:
            return con
        if version is not None and version > SCHEMA_VERSION:
            con.close()
            raise ModelMoraError(
                f"{self.path}: index schema v{version} was written by a newer modelmora "
                f"(this one uses v{SCHEMA_VERSION})",
                hint="upgrade modelmora, or delete the index and run `modelmora cache reindex`",
            )
        if version is not None:  # older schema: the store has everything, start over
            con.close()
            reason = self._quarantine(f"from an older schema v{version}")
            con = self._connect(self.path)
        con.begin()
        con.execute(SCHEMA)
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        counts = _populate(con, self.store)
        con.commit()
        marker.touch()
        if reason is not None:
            self._notify(
                f"index {self.path} was {reason}; rebuilt it from the store "
                f"({counts['snapshots']} snapshots, {counts['blobs']} blobs)"
            )
        return con

    @staticmethod
    def _schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        if "meta" not in tables:
            return None
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        # Reading a table touches its blocks: checksum failures surface here, not on connect.
        for table in tables & set(_STORE_TABLES):
            con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else None

    def _quarantine(self, why: str) -> str:
        """Move a broken index aside (kept for inspection); return how to describe it."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        try:
            os.replace(self.path, aside)
            wal = self.path.with_name(self.path.name + ".wal")
            if wal.exists():
                os.replace(wal, aside.with_name(aside.name + ".wal"))
        except OSError as exc:
            raise store_os_error("move aside the broken index", self.path, exc) from exc
        return f"{why}, moved to {aside.name}"

    def was_created(self) -> bool:
        """Whether this store has (or had) an index.

        Until then there is nothing to keep up to date: the first command that reads the
        index builds it from the store, which holds everything a pull records. So a first
        pull on a fresh home (a CI job, a Docker layer) does not pay for importing DuckDB
        and creating the schema (~0.2 s) after its last byte.
        """
        return self.path.exists() or (self.store.root / _CREATED_MARKER).exists()

    # -- writes ------------------------------------------------------------------------
    def record_pull(
        self,
        *,
        project: ProjectRecord | None,
        snapshots: Sequence[SnapshotRecord],
        blobs: Sequence[tuple[str, int]],
    ) -> None:
        """Record what one ``pull`` verified and materialized, in one transaction."""
        with self.transaction() as con:
            if project is not None:
                _insert_project(con, project)
            for record in snapshots:
                _insert_snapshot(con, self.store, record)
            for sha, size in blobs:
                _insert_blob(con, self.store, sha, size, _utc())

    def forget(
        self,
        *,
        snapshots: Sequence[tuple[str, str]],
        blobs: Sequence[str],
        artifacts: Sequence[str] = (),
    ) -> None:
        """Drop rows of snapshots, blobs and artifacts that ``cache gc`` removed."""
        with self.transaction() as con:
            for key in artifacts:
                for table in ("artifacts", "model_artifacts", "validations", "benchmarks"):
                    con.execute(f"DELETE FROM {table} WHERE artifact_key = ?", [key])
            for name, digest in snapshots:
                con.execute(
                    "DELETE FROM snapshots WHERE name = ? AND content_digest = ?", [name, digest]
                )
                con.execute(
                    "DELETE FROM revisions WHERE name = ? AND content_digest = ?", [name, digest]
                )
            con.execute(
                "DELETE FROM files WHERE content_digest NOT IN "
                "(SELECT content_digest FROM revisions)"
            )
            con.execute(
                "DELETE FROM models WHERE (name, source) NOT IN "
                "(SELECT name, source FROM revisions)"
            )
            for sha in blobs:
                con.execute("DELETE FROM blobs WHERE sha256 = ?", [sha])

    def forget_project(self, project_dir: str) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM projects WHERE project_dir = ?", [project_dir])

    # -- reads -------------------------------------------------------------------------
    def list_snapshots(self) -> list[SnapshotRow]:
        with self.transaction() as con:
            rows = con.execute(
                """
                SELECT s.name, r.source, r.revision, s.content_digest, r.file_count,
                       r.total_size, s.path, s.link_mode, s.created_at
                FROM snapshots s JOIN revisions r USING (name, content_digest)
                ORDER BY s.name, s.created_at
                """
            ).fetchall()
        return [SnapshotRow(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self.transaction() as con:
            return {
                t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                for t in (*_STORE_TABLES, *_PIPELINE_TABLES)
            }

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one read query (for tests, tools and ``cache ls`` variants)."""
        with self.transaction() as con:
            return con.execute(sql, list(params)).fetchall()

    # -- rebuild -----------------------------------------------------------------------
    def rebuild(self) -> dict[str, int]:
        """``cache reindex``: a fresh index from the store, built aside and swapped in.

        Every table except ``runs`` comes from records in the store (snapshots, blobs,
        projects, and install's artifact/validation/benchmark records); ``runs`` (a log) is
        copied from the old index when it is still readable.
        """
        import duckdb

        self.store.ensure_layout()
        with FileLock(self.store.locks_dir / "index.lock", timeout=self.timeout_s):
            fresh = self.path.with_name(f"{self.path.name}.rebuild-{os.getpid()}")
            fresh.unlink(missing_ok=True)
            try:
                con = self._connect(fresh)
                try:
                    con.begin()
                    con.execute(SCHEMA)
                    con.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
                    )
                    counts = _populate(con, self.store)
                    con.commit()
                    if self.path.exists():
                        counts.update(self._carry_over(con))
                finally:
                    con.close()
            except duckdb.Error as exc:  # a full disk, a file size limit, an unwritable dir
                for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
                    leftover.unlink(missing_ok=True)
                raise ModelMoraError(
                    f"cannot rebuild the index {self.path}: {_first_line(exc)}",
                    hint="the old index and the store are unchanged; free disk space "
                    "(`modelmora cache gc`) and run `modelmora cache reindex` again",
                ) from None
            try:
                os.replace(fresh, self.path)
                (self.store.root / _CREATED_MARKER).touch()
                self.path.with_name(self.path.name + ".wal").unlink(missing_ok=True)
            except OSError as exc:
                raise store_os_error("replace the index", self.path, exc) from exc
            return counts

    def _carry_over(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        import duckdb

        copied: dict[str, int] = {}
        try:
            con.execute(f"ATTACH '{_sql_str(self.path)}' AS old (READ_ONLY)")
        except duckdb.Error as exc:
            self._notify(
                f"old index unreadable ({_first_line(exc)}); pipeline records "
                "(artifacts, validations, benchmarks, runs) were not carried over"
            )
            return copied
        try:
            for table in ("runs",):  # the rest is rebuilt from records in the store
                try:
                    con.execute(f"INSERT INTO {table} SELECT * FROM old.{table}")
                    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
                    copied[table] = int(row[0]) if row else 0
                except duckdb.Error as exc:
                    self._notify(f"could not carry over table {table}: {_first_line(exc)}")
        finally:
            con.execute("DETACH old")
        return copied


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")


def _insert_project(con: duckdb.DuckDBPyConnection, project: ProjectRecord) -> None:
    con.execute(
        "INSERT OR REPLACE INTO projects VALUES (?, ?, ?)",
        [project.project_dir, project.lock_path, _utc(project.registered_at)],
    )


def _insert_blob(
    con: duckdb.DuckDBPyConnection, store: Store, sha: str, size: int, when: datetime
) -> None:
    con.execute(
        "INSERT OR REPLACE INTO blobs VALUES (?, ?, ?, ?)",
        [sha, size, str(store.blob_path(sha).relative_to(store.root)), when],
    )


def _insert_snapshot(con: duckdb.DuckDBPyConnection, store: Store, record: SnapshotRecord) -> None:
    m = record.model
    digest = record.content_digest
    when = _utc(record.created_at)
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


def _populate(con: duckdb.DuckDBPyConnection, store: Store) -> dict[str, int]:
    """Fill the cache tables from the store's own records (snapshots, blobs, projects)."""
    counts = {"snapshots": 0, "blobs": 0, "projects": 0}
    for record in store.iter_snapshots():
        _insert_snapshot(con, store, record)
        counts["snapshots"] += 1
    rows = []
    for sha, path in store.iter_blobs():
        try:
            if store.blob_path(sha) != path:
                continue
            st = path.stat()
        except (ValueError, OSError):
            continue
        rows.append(
            [
                sha,
                st.st_size,
                str(path.relative_to(store.root)),
                _utc(datetime.fromtimestamp(st.st_mtime, timezone.utc)),
            ]
        )
    if rows:
        con.executemany("INSERT INTO blobs VALUES (?, ?, ?, ?)", rows)
    counts["blobs"] = len(rows)
    for project in store.projects():
        _insert_project(con, project)
        counts["projects"] += 1
    # The index mirrors every stage's records, and the store is the truth for all of them:
    # install writes artifact/validation/benchmark records next to each artifact.
    from modelmora.pipeline.index_records import populate_from_store

    counts.update(populate_from_store(con, store))
    return counts
