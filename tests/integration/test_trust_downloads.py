"""A hostile registry cannot fill the disk, lay files outside the store, or leave debris.

Real CLI processes against the hub emulator in its hostile modes (endless bodies, 429 with
``Retry-After``, listings with names no file system should get).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cache_helpers import CliRunner, write_hub_project

from modelmora.cache import Store
from modelmora.testing.hub_emulator import HubEmulator

pytestmark = pytest.mark.torch_free

MiB = 1024 * 1024


def hub_manifest(hub: HubEmulator, project: Path, repo: str) -> None:
    project.mkdir(parents=True, exist_ok=True)
    (project / "modelmora.yml").write_text(
        f"registries:\n  hf:\n    endpoint: {hub.url}\nmodels:\n  m:\n    source: hf://{repo}\n"
    )


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def leftovers(home: Path) -> list[str]:
    tmp = home / "tmp"
    return sorted(p.relative_to(home).as_posix() for p in tmp.rglob("*") if p.is_file())


def test_an_endless_body_stops_at_the_locked_size(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    weights = os.urandom(2 * MiB)
    project = write_hub_project(
        hub, tmp_path / "proj", {"m": ("org/m", {"model.safetensors": weights})}
    )
    hub.endless("org/m", "model.safetensors")
    result = run_cli(project.dir, "pull", "--jobs", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "m/model.safetensors" in result.stderr
    assert f"more than the {len(weights)} bytes" in result.stderr
    assert "Traceback" not in result.stderr
    # The emulator counts what it handed the socket; we read at most one byte past the
    # size (plus what the kernel had buffered), never the gigabyte an endless body offers.
    assert hub.bytes_served("org/m", "model.safetensors") < len(weights) + 16 * MiB
    assert leftovers(home) == []  # the cut-off partial is deleted, not kept for resume
    assert list(Store(home).iter_blobs()) == []


def test_a_lock_time_fetch_is_capped_and_leaves_no_temp_file(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    config = json.dumps({"model_type": "bert", "hidden_size": 8}).encode()
    hub.create_repo("org/m", {"config.json": config})  # small: no sha256 in the listing
    hub.endless("org/m", "config.json")
    hub_manifest(hub, tmp_path / "proj", "org/m")
    result = run_cli(tmp_path / "proj", "lock")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "models.m: config.json:" in result.stderr
    assert f"more than the {len(config)} bytes" in result.stderr
    assert not (tmp_path / "proj" / "modelmora.lock").exists()
    assert leftovers(home) == []
    assert [p.name for p in (home / "tmp").iterdir() if p.name.startswith("modelmora-lock")] == []

    hub.endless("org/m", "config.json", enabled=False)
    assert run_cli(tmp_path / "proj", "lock").returncode == 0


def test_retry_after_is_waited_for(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = write_hub_project(hub, tmp_path / "proj", {"m": ("org/m", {"a.bin": b"abc"})})
    hub.requests.clear()
    hub.fail_next(1, 429, retry_after="1")
    result = run_cli(project.dir, "pull")
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = hub.requests[0], hub.requests[1]
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0  # not the 0.2 s backoff


def test_a_retry_after_beyond_the_cap_fails_at_once_saying_so(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = write_hub_project(hub, tmp_path / "proj", {"m": ("org/m", {"a.bin": b"abc"})})
    hub.requests.clear()
    hub.fail_next(5, 429, retry_after="3600")
    result = run_cli(project.dir, "pull")
    assert result.returncode == 1
    assert "asked to retry after 3600 s" in result.stderr
    assert len(hub.requests) == 1  # one answer was enough to know
    assert leftovers(home) == []  # no 0-byte .part


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"bad\nname.json": b"{}"}, "control characters"),
        ({"esc\x1b[31m.json": b"{}"}, "control characters"),
        ({"nul\x00.json": b"{}"}, "control characters"),
        ({"x" * 256 + ".json": b"{}"}, "longer than 255 bytes"),
        ({"./x.json": b"{}", "x.json": b"{}"}, "'.', '..' or empty path segments"),
        ({"caf\u00e9.json": b"1", "cafe\u0301.json": b"2"}, "are the same file name"),
    ],
)
def test_lock_refuses_names_that_cannot_be_laid_out(
    hub: HubEmulator,
    home: Path,
    tmp_path: Path,
    run_cli: CliRunner,
    files: dict[str, bytes],
    named: str,
) -> None:
    hub.create_repo("org/evil", files, unsafe_paths_ok=True)
    hub_manifest(hub, tmp_path / "proj", "org/evil")
    result = run_cli(tmp_path / "proj", "lock")
    assert result.returncode != 0
    assert "models.m:" in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "proj" / "modelmora.lock").exists()
    assert not (home / "snapshots").exists() or list((home / "snapshots").iterdir()) == []


def test_a_refetched_blob_heals_the_snapshot_that_linked_the_bad_one(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    data = os.urandom(64 * 1024)
    project = write_hub_project(hub, tmp_path / "proj", {"m": ("org/m", {"w.bin": data})})
    assert run_cli(project.dir, "pull").returncode == 0
    store = Store(home)
    locked = project.file("m", "w.bin")
    snap_file = store.snapshot_dir("m", project.lock.models["m"].content_digest()) / "w.bin"
    blob = store.blob_path(locked.sha256)
    assert snap_file.stat().st_ino == blob.stat().st_ino  # hardlinked
    # Made with the umask (0o022 here), not mkdtemp's 0o700: a shared store stays readable.
    assert stat.S_IMODE(snap_file.parent.stat().st_mode) == 0o777 & ~_umask()
    blob.chmod(0o644)
    with blob.open("r+b") as fh:  # a flipped byte; the mtime changes
        fh.seek(100)
        fh.write(bytes([data[100] ^ 0xFF]))

    verify = run_cli(project.dir, "cache", "verify")
    assert verify.returncode == 1 and f"blob {locked.sha256}" in verify.stderr

    assert run_cli(project.dir, "pull").returncode == 0  # fetches the blob again …
    assert blob.read_bytes() == data
    assert snap_file.stat().st_ino == blob.stat().st_ino  # … and re-links the snapshot
    assert snap_file.read_bytes() == data
    assert run_cli(project.dir, "cache", "verify").returncode == 0


def _negative_size(name: str, item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "size": -5, **({"lfs": {**item["lfs"], "size": -5}} if "lfs" in item else {})}


def _bad_sha(name: str, item: dict[str, Any]) -> dict[str, Any]:
    if "lfs" not in item:
        return item
    lfs = {**item["lfs"], "sha256": "NOT-HEX", "oid": "NOT-HEX"}
    return {**item, "lfs": lfs}


@pytest.mark.parametrize(
    ("hook", "named"),
    [(_negative_size, "with size -5"), (_bad_sha, "which is not 64 lowercase hex digits")],
)
def test_a_lying_listing_is_a_clean_error_at_lock(
    hub: HubEmulator,
    home: Path,
    tmp_path: Path,
    run_cli: CliRunner,
    hook: Callable[[str, dict[str, Any]], dict[str, Any]],
    named: str,
) -> None:
    hub.create_repo("org/liar", {"model.safetensors": os.urandom(2 * MiB)})
    hub.listing_hook = hook
    hub_manifest(hub, tmp_path / "proj", "org/liar")
    result = run_cli(tmp_path / "proj", "lock")
    assert result.returncode != 0
    assert "models.m:" in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
