"""``index.duckdb``: a queryable index of the store, rebuildable from it at any time.

DuckDB lets one process at a time hold a database file for writing, so every operation
here is open → one short transaction → close, serialized between ModelMora processes by a
file lock and retried with backoff when something else (a DuckDB shell, a notebook) holds
the file. The store is the truth: a missing, corrupt or outdated index is rebuilt from it,
saying so, and ``modelmora cache reindex`` does the same on demand.

The index mirrors the store's own records (snapshots, blobs, projects) and install's
(:mod:`modelmora.records`): :class:`Index` is the one way in, for writes, reads and rebuilds.
The store reports its changes through :class:`~modelmora.cache.mirror.StoreMirror`, which
this class implements; the pipeline calls the ``record_*`` methods for install's records.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from modelmora.cache.mirror import Pulled, Removed
from modelmora.cache.store import Store, store_os_error
from modelmora.errors import ModelMoraError
from modelmora.index import rows
from modelmora.index.schema import PIPELINE_TABLES, SCHEMA, SCHEMA_VERSION, STORE_TABLES
from modelmora.records import ArtifactLinks, ArtifactRecord, BenchmarkRecord, ValidationRecord

if TYPE_CHECKING:
    import duckdb

    from modelmora.index.status import ModelStatus
    from modelmora.lock import LockedModel

log = logging.getLogger(__name__)


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
        return {**asdict(self), "created_at": self.created_at.isoformat() + "Z"}


@dataclass(frozen=True)
class RunRow:
    """One model's install run (the Dagster run id links to the UI)."""

    run_id: str
    project_dir: str
    model_name: str
    ok: bool
    started_at: datetime
    finished_at: datetime
    message: str | None
    stages: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


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
        counts = rows.populate(con, self.store)
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
        for table in tables & set(STORE_TABLES):
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

    # -- writes: the store (StoreMirror) --------------------------------------------------
    def record_pull(self, pulled: Pulled) -> None:
        """Record what one ``pull`` verified and materialized, in one transaction.

        Only once the store has an index: until then the first command that reads it builds
        it from the store, so a first pull on a fresh home (a CI job, a Docker layer) does
        not pay for importing DuckDB and creating the schema (~0.2 s) after its last byte.
        """
        if not self.was_created():
            return
        with self.transaction() as con:
            if pulled.project is not None:
                rows.insert_project(con, pulled.project)
            for record in pulled.snapshots:
                rows.insert_snapshot(con, self.store, record)
            for sha, size in pulled.blobs:
                rows.insert_blob(con, self.store, sha, size, rows.utc())

    def forget(self, removed: Removed) -> None:
        """Drop rows of what ``cache gc`` removed."""
        with self.transaction() as con:
            for key in removed.artifacts:
                for table in ("artifacts", "model_artifacts", "validations", "benchmarks"):
                    con.execute(f"DELETE FROM {table} WHERE artifact_key = ?", [key])
            for name, digest in removed.snapshots:
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
            for sha in removed.blobs:
                con.execute("DELETE FROM blobs WHERE sha256 = ?", [sha])
            for project_dir in removed.projects:
                con.execute("DELETE FROM projects WHERE project_dir = ?", [project_dir])

    def linked_artifacts(self, entry_digests: Collection[str]) -> set[str]:
        if not self.path.is_file() or not entry_digests:
            return set()
        found = self.query(
            "SELECT artifact_key FROM model_artifacts WHERE entry_digest IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [sorted(entry_digests)],
        )
        return {str(key) for (key,) in found}

    # -- writes: install's records ---------------------------------------------------------
    def record_artifacts(self, entry: LockedModel, records: Sequence[ArtifactRecord]) -> None:
        """Mirror ``records`` and which lock entry they serve (an artifact can serve several).

        Called with cached records too: a run killed after writing a record but before indexing
        it leaves the index behind the store, and this catches it up. The store keeps the links
        too (``links/<entry_digest>.json``): gc and reindex must not depend on the index.
        """
        links = ArtifactLinks.of(entry.name, entry.entry_digest(), records)
        self.store.write_artifact_links(links)
        with self.transaction() as con:
            for record in records:
                rows.insert_artifact(con, self.store, record)
            rows.replace_links(con, links)

    def record_validations(self, records: Sequence[ValidationRecord]) -> None:
        """Mirror validation records (fresh or found on disk) in one transaction."""
        with self.transaction() as con:
            for record in records:
                rows.insert_validation(con, record)

    def record_benchmarks(self, records: Sequence[BenchmarkRecord]) -> None:
        """Mirror benchmark records (fresh or found on disk) in one transaction."""
        with self.transaction() as con:
            for record in records:
                rows.insert_benchmark(con, record)

    def record_run(self, run: RunRow) -> None:
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO runs (run_id, project_dir, model_name, step, status, "
                "started_at, finished_at, message, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run.run_id,
                    run.project_dir,
                    run.model_name,
                    "install",
                    "success" if run.ok else "failure",
                    rows.utc(run.started_at),
                    rows.utc(run.finished_at),
                    run.message,
                    json.dumps({"stages": run.stages, "seconds": round(run.seconds, 3)}),
                ],
            )

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

    def statuses(self, entries: Sequence[LockedModel]) -> list[ModelStatus]:
        """What is installed for each lock entry (``list``, ``show``, ``install``, ``serve``)."""
        from modelmora.index.status import read_statuses

        with self.transaction() as con:
            return read_statuses(con, entries)

    def counts(self) -> dict[str, int]:
        with self.transaction() as con:
            return {
                t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                for t in (*STORE_TABLES, *PIPELINE_TABLES)
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
                    counts = rows.populate(con, self.store)
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
