"""index.duckdb: real DuckDB files, rebuilt from the store when lost, corrupt or busy."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from modelmora.cache import Store, pull_entries
from modelmora.index import Index, IndexBusyError
from modelmora.index.schema import SCHEMA_VERSION
from modelmora.lock import LockedFile, LockedModel
from modelmora.sources import SourceContext
from modelmora.sources.local import PathSource

pytestmark = pytest.mark.torch_free


def _model(tmp_path: Path, name: str, files: dict[str, bytes]) -> tuple[LockedModel, Path]:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    return (
        LockedModel(
            name=name,
            source=f"path:{src}",
            revision="rev-" + name,
            spec={"source": f"path:{src}"},
            metadata={"pipeline_tag": "feature-extraction"},
            files=tuple(
                LockedFile(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest())
                for p, d in sorted(files.items())
            ),
        ),
        src,
    )


@pytest.fixture
def pulled(tmp_path: Path) -> tuple[Store, list[LockedModel], list[str]]:
    store = Store(tmp_path / "home")
    a, src_a = _model(tmp_path, "alpha", {"config.json": b'{"x": 1}', "w.bin": b"w" * 4096})
    b, src_b = _model(tmp_path, "beta", {"config.json": b'{"x": 1}'})
    srcs = {"alpha": src_a, "beta": src_b}
    notices: list[str] = []
    pull_entries(
        [a, b],
        lambda e: PathSource(str(srcs[e.name]), SourceContext(project_dir=tmp_path)),
        store,
        project=(tmp_path, tmp_path / "modelmora.lock"),
        mirror=Index(store, notify=notices.append),
        notify=notices.append,
    )
    return store, [a, b], notices


def test_pull_records_models_files_blobs_snapshots(
    pulled: tuple[Store, list[LockedModel], list[str]],
) -> None:
    store, (a, b), notices = pulled
    assert notices == []  # a first index on a fresh store is not "rebuilt"
    index = Index(store)
    rows = index.list_snapshots()
    assert [(r.name, r.revision, r.file_count, r.total_size) for r in rows] == [
        ("alpha", a.revision, 2, sum(f.size for f in a.files)),
        ("beta", b.revision, 1, b.files[0].size),
    ]
    assert rows[0].content_digest == a.content_digest()
    assert (store.root / rows[0].path) == store.snapshot_dir("alpha", a.content_digest())
    counts = index.counts()
    assert counts["blobs"] == 2  # config.json is shared
    assert counts["files"] == 3 and counts["models"] == 2 and counts["projects"] == 1
    meta = index.query("SELECT value FROM meta WHERE key = 'schema_version'")
    assert meta == [(str(SCHEMA_VERSION),)]
    tags = index.query("SELECT metadata->>'pipeline_tag' FROM revisions WHERE name = 'alpha'")
    assert tags == [("feature-extraction",)]


def test_deleted_index_is_rebuilt_from_the_store_saying_so(
    pulled: tuple[Store, list[LockedModel], list[str]],
) -> None:
    store, _, _ = pulled
    before = Index(store).list_snapshots()
    store.index_path.unlink()
    notices: list[str] = []
    assert Index(store, notify=notices.append).list_snapshots() == before
    assert len(notices) == 1 and "missing" in notices[0] and "rebuilt" in notices[0]


def test_corrupt_index_is_moved_aside_and_rebuilt(
    pulled: tuple[Store, list[LockedModel], list[str]],
) -> None:
    store, _, _ = pulled
    before = Index(store).list_snapshots()
    store.index_path.write_bytes(b"this is not a duckdb file" * 1000)
    notices: list[str] = []
    assert Index(store, notify=notices.append).list_snapshots() == before
    assert "rebuilt" in notices[0]
    aside = list(store.root.glob("index.duckdb.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")


def test_reindex_rebuilds_store_tables_and_keeps_pipeline_rows(
    pulled: tuple[Store, list[LockedModel], list[str]],
) -> None:
    store, _, _ = pulled
    index = Index(store)
    with index.transaction() as con:
        con.execute(
            "INSERT INTO runs (run_id, step, status, started_at) "
            "VALUES ('r1', 'download', 'success', now())"
        )
        con.execute("DELETE FROM snapshots")  # the index drifted from the store
    counts = index.rebuild()
    assert counts["snapshots"] == 2 and counts["blobs"] == 2 and counts["runs"] == 1
    assert [r.name for r in index.list_snapshots()] == ["alpha", "beta"]
    assert index.query("SELECT step, status FROM runs") == [("download", "success")]


_HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.readline()
con.close()
"""


def test_index_held_by_another_program_times_out_then_works(
    pulled: tuple[Store, list[LockedModel], list[str]],
) -> None:
    store, _, _ = pulled
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store.index_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexBusyError, match="locked by another program"):
            Index(store, timeout_s=0.3).list_snapshots()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    assert [r.name for r in Index(store).list_snapshots()] == ["alpha", "beta"]
