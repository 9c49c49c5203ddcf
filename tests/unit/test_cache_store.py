"""The store and the download core, driven by a real local source (no network).

``CountingPathSource`` is the real ``path:`` source with a log of the calls it received,
so tests can assert *what* was fetched (offsets, how often) without mocking anything.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest

from modelmora.cache import Store, collect_garbage, ensure_blob, pull_entries, verify_store
from modelmora.cache.progress import RichProgress
from modelmora.cache.statcache import StatCache
from modelmora.errors import IntegrityError, LockFileError, ModelMoraError
from modelmora.lock import LockedFile, LockedModel, LockFile, write_lock
from modelmora.sources import RemoteFile, SourceContext
from modelmora.sources.caches import using
from modelmora.sources.local import PathSource

pytestmark = pytest.mark.torch_free


class CountingPathSource(PathSource):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def fetch(self, revision: str, file: RemoteFile, dest: Path, **kw: Any) -> None:
        self.calls.append((file.path, kw.get("offset", 0)))
        super().fetch(revision, file, dest, **kw)


def locked(path: str, data: bytes) -> LockedFile:
    return LockedFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def make_model(root: Path, name: str, files: dict[str, bytes]) -> tuple[LockedModel, Path]:
    src = root / f"src-{name}"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    entry = LockedModel(
        name=name,
        source=f"path:{src}",
        revision="r" + name,
        spec={"source": f"path:{src}"},
        files=tuple(locked(p, d) for p, d in sorted(files.items())),
    )
    return entry, src


def source_for(tmp_path: Path, src: Path) -> CountingPathSource:
    return CountingPathSource(str(src), SourceContext(project_dir=tmp_path))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "home")
    s.ensure_layout()
    return s


def test_blob_is_fetched_once_and_verified(tmp_path: Path, store: Store) -> None:
    data = os.urandom(300_000)
    entry, src = make_model(tmp_path, "m", {"w.bin": data})
    source = source_for(tmp_path, src)
    first = ensure_blob(source, entry.revision, entry.files[0], store)
    second = ensure_blob(source, entry.revision, entry.files[0], store)
    assert (first.status, first.downloaded) == ("fetched", len(data))
    assert second.status == "present"
    assert source.calls == [("w.bin", 0)]
    blob = store.blob_path(entry.files[0].sha256)
    assert blob.read_bytes() == data
    assert blob.parent.name == entry.files[0].sha256[:2]
    assert list(store.partial_dir.iterdir()) == []


def test_mismatch_names_file_and_digests_and_stores_nothing(tmp_path: Path, store: Store) -> None:
    entry, src = make_model(tmp_path, "m", {"w.bin": b"published bytes"})
    (src / "w.bin").write_bytes(b"tampered bytes!")  # same size, different content
    with pytest.raises(IntegrityError) as err:
        ensure_blob(
            source_for(tmp_path, src), entry.revision, entry.files[0], store, label="m/w.bin"
        )
    msg = str(err.value)
    assert "m/w.bin" in msg
    assert entry.files[0].sha256 in msg
    assert hashlib.sha256(b"tampered bytes!").hexdigest() in msg
    assert list(store.iter_blobs()) == []
    assert list(store.partial_dir.iterdir()) == []


def test_resume_hashes_prefix_and_asks_only_for_the_rest(tmp_path: Path, store: Store) -> None:
    data = os.urandom(200_000)
    entry, src = make_model(tmp_path, "m", {"w.bin": data})
    f = entry.files[0]
    store.partial_path(f.sha256).write_bytes(data[:123_456])  # left by an interrupted pull
    source = source_for(tmp_path, src)
    result = ensure_blob(source, entry.revision, f, store)
    assert source.calls == [("w.bin", 123_456)]
    assert (result.resumed_from, result.downloaded) == (123_456, len(data) - 123_456)
    assert store.blob_path(f.sha256).read_bytes() == data


def test_bad_partial_prefix_is_discarded_and_refetched(tmp_path: Path, store: Store) -> None:
    data = os.urandom(50_000)
    entry, src = make_model(tmp_path, "m", {"w.bin": data})
    f = entry.files[0]
    store.partial_path(f.sha256).write_bytes(b"\0" * 1000)  # garbage, not a prefix
    source = source_for(tmp_path, src)
    ensure_blob(source, entry.revision, f, store)
    assert source.calls == [("w.bin", 1000), ("w.bin", 0)]
    assert store.blob_path(f.sha256).read_bytes() == data


def test_corrupt_blob_in_store_is_detected_and_refetched(tmp_path: Path, store: Store) -> None:
    data = os.urandom(10_000)
    entry, src = make_model(tmp_path, "m", {"w.bin": data})
    f = entry.files[0]
    source = source_for(tmp_path, src)
    ensure_blob(source, entry.revision, f, store)
    blob = store.blob_path(f.sha256)
    blob.chmod(0o644)
    blob.write_bytes(b"x" * len(data))  # rewritten in place: stat changes
    assert store.check_blob(f.sha256, f.size) == "corrupt"
    assert ensure_blob(source, entry.revision, f, store).status == "fetched"
    assert blob.read_bytes() == data


@pytest.mark.parametrize("mode", ["hardlink", "symlink", "copy"])
def test_snapshot_is_a_plain_directory_of_the_repo_layout(tmp_path: Path, mode: str) -> None:
    store = Store(tmp_path / "home", link_mode=mode)
    files = {"config.json": b'{"a": 1}', "1_Pooling/config.json": b"{}", "w.bin": b"w" * 999}
    entry, src = make_model(tmp_path, "m", files)
    report = pull_entries([entry], lambda e: source_for(tmp_path, src), store, mirror=None)
    snap = report.models[0].snapshot
    assert snap == store.snapshot_dir("m", entry.content_digest())
    for rel, data in files.items():
        assert (snap / rel).read_bytes() == data
    record = store.read_snapshot("m", entry.content_digest())
    assert record is not None and record.link_mode == mode
    w = entry.files[-1]
    if mode == "hardlink":
        assert (snap / "w.bin").stat().st_ino == store.blob_path(w.sha256).stat().st_ino
    elif mode == "symlink":
        assert not os.path.isabs(os.readlink(snap / "w.bin"))  # the store stays relocatable
    assert not any(p.name.startswith(".tmp-") for p in snap.parent.iterdir())


def test_snapshot_torn_by_a_crash_is_rebuilt_by_the_next_pull(tmp_path: Path, store: Store) -> None:
    """Snapshot records are not fsynced: an empty one (what a crash can leave) is no record."""
    files = {"config.json": b'{"a": 1}', "w.bin": os.urandom(999)}
    entry, src = make_model(tmp_path, "m", files)
    pull_entries([entry], lambda e: source_for(tmp_path, src), store, mirror=None)
    digest = entry.content_digest()
    store.snapshot_record_path("m", digest).write_bytes(b"")
    assert store.read_snapshot("m", digest) is None
    source = source_for(tmp_path, src)
    report = pull_entries([entry], lambda e: source, store, mirror=None)
    assert source.calls == []  # the blobs were fine: nothing downloaded again
    record = store.read_snapshot("m", digest)
    assert record is not None and record.content_digest == digest
    assert (report.models[0].snapshot / "w.bin").read_bytes() == files["w.bin"]


def test_identical_files_across_models_are_stored_once(tmp_path: Path, store: Store) -> None:
    shared = os.urandom(5000)
    a, src_a = make_model(tmp_path, "a", {"shared.bin": shared, "a.txt": b"a"})
    b, src_b = make_model(tmp_path, "b", {"shared.bin": shared, "b.txt": b"b"})
    sources = {"a": source_for(tmp_path, src_a), "b": source_for(tmp_path, src_b)}
    report = pull_entries([a, b], lambda e: sources[e.name], store, mirror=None)
    assert report.blobs_fetched == 3
    assert len(sources["a"].calls) + len(sources["b"].calls) == 3
    assert len(list(store.iter_blobs())) == 3


def test_unsafe_lock_path_is_refused(tmp_path: Path, store: Store) -> None:
    entry, src = make_model(tmp_path, "m", {"ok.txt": b"x"})
    # The lock's own validation refuses this path (tests/unit/test_lock_io.py); an entry
    # built around that validation must still not make pull write outside the store.
    sha = locked("x", b"x").sha256
    bad = LockedFile.model_construct(path="../../escape.txt", size=1, sha256=sha)
    evil = entry.model_copy(update={"files": (bad,)})
    with pytest.raises(LockFileError, match="escape"):
        pull_entries([evil], lambda e: source_for(tmp_path, src), store, mirror=None)
    assert not (store.root.parent / "escape.txt").exists()


def test_statcache_trusts_unchanged_stat_only(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    cache = StatCache(tmp_path / "sc.json", tmp_path / "sc.lock")
    cache.record({"d": f.stat()})
    assert StatCache(tmp_path / "sc.json", tmp_path / "sc.lock").matches("d", f.stat())
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not cache.matches("d", f.stat())
    (tmp_path / "sc.json").write_text("{not json")
    assert StatCache(tmp_path / "sc.json", tmp_path / "sc.lock").entries() == {}


def test_verify_fast_path_rehashes_nothing_full_finds_bit_rot(tmp_path: Path, store: Store) -> None:
    data = os.urandom(64_000)
    entry, src = make_model(tmp_path, "m", {"w.bin": data, "c.json": b"{}"})
    pull_entries([entry], lambda e: source_for(tmp_path, src), store, mirror=None)
    fast = verify_store(store)
    assert fast.ok and fast.blobs == 2 and fast.rehashed == 0 and fast.snapshots == 1

    # Bit rot: content changes, metadata (size, mtime, inode) does not.
    sha = entry.files[-1].sha256
    blob = store.blob_path(sha)
    st = blob.stat()
    blob.chmod(0o644)
    with blob.open("r+b") as fh:
        fh.write(bytes([data[0] ^ 0xFF]))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    blob.chmod(0o444)
    assert verify_store(store).ok  # by design: the fast path trusts unchanged metadata
    full = verify_store(store, full=True)
    assert not full.ok and full.rehashed == 2
    assert [p.kind for p in full.problems] == ["corrupt"]
    assert sha in full.problems[0].subject

    repaired = verify_store(store, full=True, repair=True)
    assert not blob.exists()
    assert store.read_snapshot("m", entry.content_digest()) is None
    assert len(repaired.repaired) == 2
    pull_entries([entry], lambda e: source_for(tmp_path, src), store, mirror=None)
    assert verify_store(store, full=True).ok


def test_verify_reports_missing_blob_and_file(tmp_path: Path, store: Store) -> None:
    entry, src = make_model(tmp_path, "m", {"a.bin": b"aaaa", "b.bin": b"bbbb"})
    pull_entries([entry], lambda e: source_for(tmp_path, src), store, mirror=None)
    store.discard_blob(entry.files[0].sha256)
    (store.snapshot_dir("m", entry.content_digest()) / "b.bin").unlink()
    kinds = sorted((p.kind, p.subject) for p in verify_store(store).problems)
    assert kinds[0] == ("missing", f"blob {entry.files[0].sha256}")
    assert kinds[1][0] == "snapshot" and kinds[1][1].endswith("b.bin")


def _register(store: Store, project: Path, entries: list[LockedModel]) -> None:
    project.mkdir(parents=True, exist_ok=True)
    write_lock(project / "modelmora.lock", LockFile(models={e.name: e for e in entries}))
    store.register_project(project, project / "modelmora.lock")


def test_gc_keeps_what_registered_locks_reference(tmp_path: Path, store: Store) -> None:
    shared = os.urandom(2000)
    a, src_a = make_model(tmp_path, "a", {"shared.bin": shared, "only-a.bin": b"A" * 100})
    b, src_b = make_model(tmp_path, "b", {"shared.bin": shared, "only-b.bin": b"B" * 100})
    srcs = {"a": src_a, "b": src_b}
    pull_entries([a, b], lambda e: source_for(tmp_path, srcs[e.name]), store, mirror=None)
    _register(store, tmp_path / "pa", [a])
    _register(store, tmp_path / "pb", [b])
    assert collect_garbage(store, mirror=None).blobs == []  # everything referenced
    store.partial_path("f" * 64).write_bytes(b"abandoned")

    (tmp_path / "pb" / "modelmora.lock").unlink()
    (tmp_path / "pb").rmdir()
    dry = collect_garbage(store, dry_run=True, mirror=None)
    only_b = b.files[0].sha256
    assert [s for s, _ in dry.blobs] == [only_b]
    assert dry.snapshots == [("b", b.content_digest())]
    assert store.blob_path(only_b).exists()  # dry run deleted nothing

    done = collect_garbage(store, mirror=None)
    assert [s for s, _ in done.blobs] == [only_b]
    assert done.partials == [("f" * 64, 9)]
    assert done.dropped_projects == [str((tmp_path / "pb").resolve())]
    assert not store.blob_path(only_b).exists()
    assert store.blob_path(a.files[0].sha256).exists() and store.blob_path(a.files[1].sha256)
    assert store.read_snapshot("a", a.content_digest()) is not None
    assert store.read_snapshot("b", b.content_digest()) is None
    assert verify_store(store).ok


def test_gc_refuses_to_guess_when_a_lock_is_unreadable(tmp_path: Path, store: Store) -> None:
    a, src = make_model(tmp_path, "a", {"x.bin": b"x"})
    pull_entries([a], lambda e: source_for(tmp_path, src), store, mirror=None)
    _register(store, tmp_path / "p", [a])
    (tmp_path / "p" / "modelmora.lock").write_text("version = [broken")
    with pytest.raises(ModelMoraError, match="nothing deleted"):
        collect_garbage(store, mirror=None)
    assert store.blob_path(a.files[0].sha256).exists()


def test_rich_progress_counts_every_downloaded_byte(tmp_path: Path, store: Store) -> None:
    entry, src = make_model(tmp_path, "m", {"a.bin": b"a" * 3000, "b.bin": b"b" * 2000})
    out = io.StringIO()
    with RichProgress(stream=out) as progress:
        pull_entries(
            [entry],
            lambda e: source_for(tmp_path, src),
            store,
            progress=progress,
            mirror=None,
        )
    text = out.getvalue()
    assert "total" in text and "5.0/5.0 kB" in text  # 3000 + 2000 bytes, all finished


def test_gc_removes_source_download_leftovers_only_once_they_are_stale(store: Store) -> None:
    """A killed tfhub download leaves ``.NAME.*.tmp``; one younger than an hour may be live."""
    key_dir = store.root / "tfhub" / "k"
    key_dir.mkdir(parents=True)
    stale, live = key_dir / ".1.tar.gz.a.tmp", key_dir / ".1.tar.gz.b.tmp"
    stale.write_bytes(b"x" * 10)
    live.write_bytes(b"y" * 20)
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    report = collect_garbage(store, mirror=None)
    assert report.source_caches == [("tfhub/k/.1.tar.gz.a.tmp", 10)]
    assert not stale.exists() and live.exists()


def test_an_unusable_use_claim_neither_fails_a_source_nor_lets_gc_delete(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A claim file SQLite cannot open (torn, or a filesystem without locking)."""
    archive = store.root / "tfhub" / "k" / "1.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"archive")
    Path(f"{archive}.claim").write_bytes(b"not a database")
    with using(archive) as path:  # a source reading the archive goes on, with a warning
        assert path.read_bytes() == b"archive"
    assert "could not claim" in caplog.text
    report = collect_garbage(store, mirror=None)
    assert report.source_caches == [] and report.skipped_busy == ["tfhub/k/1.tar.gz"]
    assert archive.is_file()


def test_gc_removes_unfinished_artifact_builds_only_once_they_are_stale(store: Store) -> None:
    """A directory without ``artifact.json`` is a build in progress, or a killed one."""
    store.ensure_layout()
    killed, building = store.artifact_dir("a" * 64), store.artifact_dir("b" * 64)
    for directory in (killed, building):
        directory.mkdir()
        (directory / "model.onnx").write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(killed, (two_hours_ago, two_hours_ago))
    report = collect_garbage(store, mirror=None)
    assert report.artifacts == [("a" * 64, "?", 4)]
    assert not killed.exists() and building.is_dir()
