"""``modelmora cache …`` through the real CLI: ls, path, verify, gc, reindex, a lost index."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cache_helpers import CliRunner, HubProject, write_hub_project

from modelmora.cache import Store
from modelmora.testing.hub_emulator import HubEmulator

pytestmark = pytest.mark.torch_free

MiB = 1024 * 1024


def _pulled(hub: HubEmulator, tmp_path: Path, run_cli: CliRunner) -> HubProject:
    project = write_hub_project(
        hub,
        tmp_path / "proj",
        {"m": ("org/m", {"model.safetensors": os.urandom(MiB), "config.json": b'{"m": 1}'})},
    )
    result = run_cli(project.dir, "pull")
    assert result.returncode == 0, result.stderr
    return project


def test_ls_and_path(hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner) -> None:
    project = _pulled(hub, tmp_path, run_cli)
    entry = project.lock.models["m"]
    rows = json.loads(run_cli(project.dir, "cache", "ls", "--json").stdout)
    assert [(r["name"], r["revision"], r["file_count"]) for r in rows] == [("m", entry.revision, 2)]
    assert rows[0]["total_size"] == MiB + len(b'{"m": 1}')
    assert run_cli(project.dir, "cache", "path").stdout.strip() == str(home)
    snap = Path(run_cli(project.dir, "cache", "path", "m").stdout.strip())
    assert snap == Path(rows[0]["path"])
    assert (snap / "config.json").read_bytes() == b'{"m": 1}'
    missing = run_cli(project.dir, "cache", "path", "zzz")
    assert missing.returncode == 2 and "not in modelmora.lock: zzz" in missing.stderr


def test_first_pull_leaves_the_index_to_its_first_reader(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    """A fresh home's first pull writes no index; the first reader builds it, silently."""
    project = _pulled(hub, tmp_path, run_cli)
    assert not (home / "index.duckdb").exists()
    ls = run_cli(project.dir, "cache", "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    assert [r["name"] for r in json.loads(ls.stdout)] == ["m"]
    assert "warning" not in ls.stderr
    assert (home / "index.duckdb").exists()

    # From now on pulls keep it current: a second model appears without a rebuild.
    more = write_hub_project(
        hub, tmp_path / "proj2", {"n": ("org/n", {"config.json": b'{"n": 2}'})}
    )
    assert run_cli(more.dir, "pull").returncode == 0
    rows = json.loads(run_cli(project.dir, "cache", "ls", "--json").stdout)
    assert sorted(r["name"] for r in rows) == ["m", "n"]


def test_corrupt_or_deleted_index_is_rebuilt_saying_so(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = _pulled(hub, tmp_path, run_cli)
    expected = json.loads(run_cli(project.dir, "cache", "ls", "--json").stdout)
    index = home / "index.duckdb"

    index.write_bytes(os.urandom(64 * 1024))
    ls = run_cli(project.dir, "cache", "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    assert json.loads(ls.stdout) == expected
    assert "warning: index" in ls.stderr and "rebuilt it from the store" in ls.stderr

    index.unlink()
    again = run_cli(project.dir, "pull")
    assert again.returncode == 0 and "rebuilt it from the store" in again.stderr

    reindex = run_cli(project.dir, "cache", "reindex", "--json")
    assert reindex.returncode == 0, reindex.stderr
    assert json.loads(reindex.stdout)["snapshots"] == 1
    assert json.loads(run_cli(project.dir, "cache", "ls", "--json").stdout) == expected


def test_verify_detects_tampering_and_repair_then_pull_heals(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = _pulled(hub, tmp_path, run_cli)
    ok = run_cli(project.dir, "cache", "verify", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["rehashed"] == 0  # warm cache: stat cache only

    sha = project.file("m", "model.safetensors").sha256
    blob = Store(home).blob_path(sha)
    blob.chmod(0o644)
    blob.write_bytes(b"\0" * MiB)  # same size, other bytes (a bad disk, a stray write)
    bad = run_cli(project.dir, "cache", "verify")
    assert bad.returncode == 1
    assert f"corrupt: blob {sha}" in bad.stderr

    repaired = run_cli(project.dir, "cache", "verify", "--repair")
    assert repaired.returncode == 1 and "removed corrupt blob" in repaired.stderr
    assert not blob.exists()
    healed = run_cli(project.dir, "pull", "--json")
    assert healed.returncode == 0 and json.loads(healed.stdout)["blobs_fetched"] == 1
    assert run_cli(project.dir, "cache", "verify", "--full").returncode == 0


def test_gc_never_deletes_what_a_registered_lock_references(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    shared = os.urandom(MiB)
    keep = write_hub_project(
        hub, tmp_path / "keep", {"k": ("org/k", {"model.safetensors": shared, "a.json": b"1"})}
    )
    gone = write_hub_project(
        hub, tmp_path / "gone", {"g": ("org/g", {"model.safetensors": shared, "b.json": b"2"})}
    )
    for p in (keep, gone):
        assert run_cli(p.dir, "pull").returncode == 0
    shutil.rmtree(gone.dir)

    dry = run_cli(keep.dir, "cache", "gc", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    only_gone = gone.file("g", "b.json").sha256
    assert [b["sha256"] for b in plan["blobs"]] == [only_gone]
    assert Store(home).blob_path(only_gone).exists()

    done = run_cli(keep.dir, "cache", "gc")
    assert done.returncode == 0, done.stderr
    store = Store(home)
    assert not store.blob_path(only_gone).exists()
    for f in keep.lock.models["k"].files:
        assert store.blob_path(f.sha256).exists()
    rows = json.loads(run_cli(keep.dir, "cache", "ls", "--json").stdout)
    assert [r["name"] for r in rows] == ["k"]
    assert run_cli(keep.dir, "cache", "verify").returncode == 0
