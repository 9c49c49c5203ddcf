"""Faults during ``pull``: real processes, the real hub emulator, real signals and limits."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cache_helpers import REPO_ROOT, CliRunner, cli_command, write_hub_project

from modelmora.cache import Store
from modelmora.testing.hub_emulator import HubEmulator

pytestmark = pytest.mark.torch_free

MiB = 1024 * 1024


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def blob_files(home: Path) -> list[Path]:
    root = home / "blobs" / "sha256"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def file_gets(hub: HubEmulator, repo: str, path: str) -> list[str | None]:
    """The Range header of every GET of that file (None = whole file)."""
    suffix = f"/{repo}/resolve/"
    return [
        r.range
        for r in hub.requests
        if r.method == "GET" and r.path.startswith(suffix) and r.path.endswith("/" + path)
    ]


def test_corrupted_bytes_are_refused_and_nothing_is_stored(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = write_hub_project(
        hub,
        tmp_path / "proj",
        {"m": ("org/m", {"model.safetensors": os.urandom(2 * MiB), "config.json": b"{}"})},
    )
    hub.corrupt("org/m", "model.safetensors")
    result = run_cli(project.dir, "pull", "--jobs", "1")
    assert result.returncode == 1
    expected = project.file("m", "model.safetensors").sha256
    served = hub.bytes_served("org/m", "model.safetensors")
    assert served == 2 * MiB
    assert "m/model.safetensors" in result.stderr
    assert f"expected sha256 {expected}" in result.stderr
    assert "got sha256 " in result.stderr and "Traceback" not in result.stderr
    actual = result.stderr.split("got sha256 ")[1].split()[0]
    assert len(actual) == 64 and actual != expected

    store = Store(home)
    assert not store.blob_path(expected).exists()
    assert list(store.partial_dir.iterdir()) == []
    assert store.read_snapshot("m", project.lock.models["m"].content_digest()) is None
    listing = run_cli(project.dir, "cache", "ls", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout) == []


def test_kill_9_mid_file_then_pull_resumes_with_range(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    size = 8 * MiB
    data = os.urandom(size)
    project = write_hub_project(
        hub, tmp_path / "proj", {"m": ("org/m", {"model.safetensors": data})}
    )
    sha = project.file("m", "model.safetensors").sha256
    store = Store(home)
    partial = store.partial_path(sha)
    hub.throttle_bytes_per_s = 2 * MiB  # ~4 s for the file: the kill lands mid-file

    proc = subprocess.Popen(
        cli_command(project.dir, "pull", "--quiet"),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def partial_has_data() -> bool:
            assert not blob_files(home), "a blob appeared before the download finished"
            assert proc.poll() is None, "pull ended before it could be killed"
            return partial.exists() and partial.stat().st_size >= MiB

        wait_for(partial_has_data, "the partial download to reach 1 MiB")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()

    kept = partial.stat().st_size
    assert MiB <= kept < size
    assert blob_files(home) == []
    assert partial.read_bytes() == data[:kept]  # what was written is a true prefix

    hub.throttle_bytes_per_s = None
    result = run_cli(project.dir, "pull", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bytes_resumed"] == kept
    assert report["bytes_fetched"] == size - kept
    assert file_gets(hub, "org/m", "model.safetensors")[-1] == f"bytes={kept}-"
    assert store.blob_path(sha).read_bytes() == data
    assert not partial.exists()


def test_two_pulls_started_together_both_succeed_and_fetch_each_byte_once(
    hub: HubEmulator, home: Path, tmp_path: Path
) -> None:
    files = {
        "model.safetensors": os.urandom(4 * MiB),
        "extra.safetensors": os.urandom(2 * MiB),
        "config.json": b'{"hidden": 8}',
    }
    project = write_hub_project(hub, tmp_path / "proj", {"m": ("org/m", files)})
    hub.throttle_bytes_per_s = 8 * MiB  # long enough for the two pulls to overlap

    procs = [
        subprocess.Popen(
            cli_command(project.dir, "pull", "--json"),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    reports = [json.loads(out) for out, _ in outputs]
    # Between them, the two processes fetched every blob exactly once.
    assert sum(r["blobs_fetched"] for r in reports) == 3
    for path, data in files.items():
        assert hub.bytes_served("org/m", path) == len(data)
        assert len(file_gets(hub, "org/m", path)) == 1
        assert Store(home).blob_path(hashlib.sha256(data).hexdigest()).read_bytes() == data
    digest = project.lock.models["m"].content_digest()
    assert all(r["models"][0]["snapshot"] for r in reports)
    assert Store(home).read_snapshot("m", digest) is not None


def _with_file_size_limit(
    project: Path, *args: str, limit: int
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child that cannot write files past ``limit`` bytes: a real write error
    (EFBIG) without root-only tricks. CPython ignores SIGXFSZ, so write() raises OSError."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        cli_command(project, *args),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size,
    )


def test_reindex_on_a_full_disk_is_a_clear_error_and_keeps_the_old_index(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = write_hub_project(hub, tmp_path / "proj", {"m": ("org/m", {"a.bin": b"abc"})})
    assert run_cli(project.dir, "pull").returncode == 0
    assert run_cli(project.dir, "cache", "reindex").returncode == 0
    index = home / "index.duckdb"
    before = index.read_bytes()

    # 4 KiB: DuckDB cannot write a fresh database file.
    result = _with_file_size_limit(project.dir, "cache", "reindex", limit=4096)
    assert result.returncode == 1
    assert "cannot rebuild the index" in result.stderr and "File too large" in result.stderr
    assert "Traceback" not in result.stderr
    assert index.read_bytes() == before
    assert sorted(p.name for p in home.glob("index.duckdb*")) == ["index.duckdb"]


def test_write_error_mid_download_gives_a_clear_message_and_leaves_nothing(
    hub: HubEmulator, home: Path, tmp_path: Path
) -> None:
    project = write_hub_project(
        hub, tmp_path / "proj", {"m": ("org/m", {"model.safetensors": os.urandom(12 * MiB)})}
    )
    result = _with_file_size_limit(project.dir, "pull", limit=8 * MiB)
    assert result.returncode == 1
    assert "error: cannot write m/model.safetensors to" in result.stderr
    assert "File too large" in result.stderr
    assert "hint: free disk space" in result.stderr
    assert "Traceback" not in result.stderr
    store = Store(home)
    assert blob_files(home) == []
    assert list(store.partial_dir.iterdir()) == []
    assert list(store.snapshots_dir.iterdir()) == []


def test_home_under_a_regular_file_is_a_clear_error(
    hub: HubEmulator, tmp_path: Path, run_cli: CliRunner
) -> None:
    """ENOTDIR: MODELMORA_HOME points below a file (works the same for root and users)."""
    project = write_hub_project(hub, tmp_path / "proj", {"m": ("org/m", {"c.json": b"{}"})})
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    result = run_cli(project.dir, "pull", env={"MODELMORA_HOME": str(blocker / "home")})
    assert result.returncode == 1
    assert f"cannot create the store directory {blocker}/home" in result.stderr
    assert "Not a directory" in result.stderr
    assert "hint: set MODELMORA_HOME to a directory you can write to" in result.stderr
    assert blocker.read_text() == "x"


def _without_root_powers(cmd: list[str]) -> list[str]:
    """Root ignores file modes through CAP_DAC_OVERRIDE; drop it so EACCES is real."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]


def test_permission_denied_on_home_is_a_clear_error(hub: HubEmulator, tmp_path: Path) -> None:
    """EACCES for real on a read-only MODELMORA_HOME: as root the child runs without
    CAP_DAC_OVERRIDE (via util-linux ``setpriv``), so the kernel enforces the 0555 mode."""
    project = write_hub_project(hub, tmp_path / "proj", {"m": ("org/m", {"c.json": b"{}"})})
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    result = subprocess.run(
        _without_root_powers(cli_command(project.dir, "pull")),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MODELMORA_HOME": str(home)},
    )
    assert result.returncode == 1, result.stderr
    assert f"cannot create the store directory {home}/" in result.stderr
    assert "Permission denied" in result.stderr
    assert "hint: set MODELMORA_HOME to a directory you can write to" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(home.iterdir()) == []
