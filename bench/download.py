"""Benchmark: `modelmora pull` vs `curl` from the same hub emulator, and `cache verify` speed.

Run from the repository root:

    .venv/bin/python bench/download.py [--size-mb 300] [--warm-gb 1.0] [--rounds 3]

What it does, in one run (everything on 127.0.0.1, nothing leaves the machine):

1. writes a random ``--size-mb`` file, serves it with the hub emulator as a child process
   (``python -m modelmora.testing.hub_emulator``), and writes a project + lock for it;
2. alternates, ``--rounds`` times: ``curl -s -o /dev/null`` of the file, ``curl -o FILE``
   (same bytes written to disk), ``HfSource.fetch`` alone (the HTTP client), ``ensure_blob``
   (fetch + sha256 while writing + fsync + rename, in process) and ``modelmora pull`` into a
   fresh MODELMORA_HOME (the CLI process end to end: start-up, imports, HTTP, hashing,
   fsync, snapshot, index); prints medians and each speed relative to curl;
3. pulls extra files until the cache holds ``--warm-gb`` GB, then times ``cache verify``
   (stat-cache fast path, in process and as a CLI process) and ``cache verify --full``.

The machine is shared and noisy: compare the side-by-side medians, not absolute numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from modelmora.cache import Store, ensure_blob, verify_store
from modelmora.lock import LockedFile, LockedModel, LockFile, write_lock
from modelmora.manifest import ModelSpec
from modelmora.project import Project
from modelmora.sources import RemoteFile

MB = 1_000_000
LABELS = {
    "curl": "curl -s -o /dev/null",
    "curl-file": "curl -s -o FILE",
    "urllib3": "urllib3 stream -> file (reference Python client)",
    "fetch": "HfSource.fetch -> file (HTTP client alone)",
    "ensure": "ensure_blob (fetch + sha256 + fsync + rename)",
    "cli": "modelmora pull (CLI process, fresh MODELMORA_HOME)",
}
CHUNK = 8 * 1024 * 1024


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
    return digest.hexdigest()


def start_hub(root: Path, repos: dict[str, Path]) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "modelmora.testing.hub_emulator", "--root", str(root)]
    for repo_id, src in repos.items():
        cmd += ["--repo", f"{repo_id}={src}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"hub emulator did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def write_project(
    project: Path, url: str, models: dict[str, tuple[str, dict[str, tuple[int, str]]]]
) -> LockFile:
    """``models``: name → (repo_id, {path: (size, sha256)}); the revision comes from the hub."""
    project.mkdir(parents=True, exist_ok=True)
    lines = ["registries:", "  hf:", f"    endpoint: {url}", "models:"]
    entries = {}
    for name, (repo_id, files) in models.items():
        info = httpx.get(f"{url}/api/models/{repo_id}", timeout=30).json()
        source = f"hf://{repo_id}"
        lines += [f"  {name}:", f"    source: {source}"]
        entries[name] = LockedModel(
            name=name,
            source=source,
            revision=info["sha"],
            spec=ModelSpec(source=source).normalized(),
            files=tuple(
                LockedFile(path=p, size=s, sha256=h) for p, (s, h) in sorted(files.items())
            ),
        )
    (project / "modelmora.yml").write_text("\n".join(lines) + "\n")
    lock = LockFile(models=entries)
    write_lock(project / "modelmora.lock", lock)
    return lock


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def stream_with_urllib3(url: str, dest: Path) -> None:
    """What a Python client can do on this machine: urllib3 (via requests, already a
    dependency of huggingface_hub) reading 4 MiB at a time, no hashing, no fsync."""
    import urllib3

    response = urllib3.PoolManager().request("GET", url, preload_content=False)
    with dest.open("wb") as fh:
        for chunk in response.stream(4 * 1024 * 1024):
            fh.write(chunk)
    response.release_conn()


def modelmora(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelmora", *args]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--warm-gb", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="default: a temp dir, removed")
    args = ap.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is required")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="modelmora-bench-"))
    hub_proc = None
    try:
        size = args.size_mb * MB
        big_src = work / "src-big"
        big_src.mkdir(parents=True)
        big_sha = write_random(big_src / "model.safetensors", size)
        warm_left = int(args.warm_gb * 1e9) - size
        warm_src = work / "src-warm"
        warm_src.mkdir()
        warm_files: dict[str, tuple[int, str]] = {}
        part = 0
        while warm_left > 0:
            n = min(256 * MB, warm_left) if warm_left > 64 * MB else warm_left + 64 * MB
            name = f"model-{part:05d}.safetensors"
            warm_files[name] = (n, write_random(warm_src / name, n))
            warm_left -= n
            part += 1

        hub_proc, url = start_hub(work / "hub", {"org/big": big_src, "org/warm": warm_src})
        project = work / "project"
        lock = write_project(
            project,
            url,
            {
                "big": ("org/big", {"model.safetensors": (size, big_sha)}),
                "warm": ("org/warm", warm_files),
            },
        )
        file_url = f"{url}/org/big/resolve/{lock.models['big'].revision}/model.safetensors"

        source = Project(project).source_for(lock.models["big"])
        locked_file = lock.models["big"].files[0]
        remote = RemoteFile(path=locked_file.path, size=size, sha256=big_sha)
        times: dict[str, list[float]] = {label: [] for label in LABELS}
        for i in range(args.rounds):
            times["curl"].append(timed(["curl", "-s", "-f", "-o", "/dev/null", file_url]))
            out = work / f"curl-{i}.bin"
            times["curl-file"].append(timed(["curl", "-s", "-f", "-o", str(out), file_url]))
            out.unlink()
            start = time.perf_counter()
            stream_with_urllib3(file_url, out)
            times["urllib3"].append(time.perf_counter() - start)
            out.unlink()
            start = time.perf_counter()
            source.fetch(lock.models["big"].revision, remote, out)
            times["fetch"].append(time.perf_counter() - start)
            out.unlink()
            store = Store(work / f"lib-home-{i}")
            store.ensure_layout()
            start = time.perf_counter()
            ensure_blob(source, lock.models["big"].revision, locked_file, store)
            times["ensure"].append(time.perf_counter() - start)
            shutil.rmtree(store.root)
            home = work / f"home-{i}"
            env = {**os.environ, "MODELMORA_HOME": str(home)}
            times["cli"].append(timed(modelmora("-C", str(project), "pull", "-q", "big"), env))
            if i < args.rounds - 1:
                shutil.rmtree(home)

        def speed(label: str) -> float:
            return float(size / statistics.median(times[label]) / MB)

        print(f"# download of one {args.size_mb} MB file, median of {args.rounds} rounds")
        print(f"{'client':<52} {'median s':>9} {'MB/s':>7} {'vs curl':>8}")
        for label, text in LABELS.items():
            print(
                f"{text:<52} {statistics.median(times[label]):>9.3f} {speed(label):>7.0f} "
                f"{speed(label) / speed('curl'):>7.2f}x"
            )

        # -- warm cache verify ------------------------------------------------------------
        home = work / f"home-{args.rounds - 1}"
        env = {**os.environ, "MODELMORA_HOME": str(home)}
        subprocess.run(modelmora("-C", str(project), "pull", "-q"), check=True, env=env)
        store = Store(home)
        fast = []
        for _ in range(7):
            start = time.perf_counter()
            report = verify_store(store)
            fast.append(time.perf_counter() - start)
            assert report.ok and report.rehashed == 0, report.to_json()
        cli = subprocess.run(
            modelmora("cache", "verify", "--json"), env=env, check=True, capture_output=True
        )
        cli_json = json.loads(cli.stdout)
        cli_wall = timed(modelmora("cache", "verify"), env)
        start = time.perf_counter()
        full = verify_store(store, full=True)
        full_s = time.perf_counter() - start
        assert full.ok
        print()
        print(f"# cache verify on a warm cache: {report.blobs} blobs, {report.bytes / 1e9:.2f} GB")
        print(
            f"verify (stat cache), in process, median of 7: {statistics.median(fast) * 1e3:.1f} ms"
        )
        print(f"verify (stat cache), CLI-reported:            {cli_json['seconds'] * 1e3:.1f} ms")
        print(f"verify (stat cache), CLI process wall time:   {cli_wall * 1e3:.0f} ms")
        print(
            f"verify --full (re-hash every byte):           {full_s * 1e3:.0f} ms "
            f"({full.rehashed_bytes / full_s / MB:.0f} MB/s)"
        )
    finally:
        if hub_proc is not None:
            hub_proc.terminate()
            hub_proc.wait(timeout=30)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
