"""Benchmark: `modelmora pull` vs `curl` from the same hub emulator, and `cache verify` speed.

Run from the repository root:

    .venv/bin/python bench/download.py [--size-mb 300] [--warm-gb 1.0] [--rounds 3] \
        [--link-mb-s 200]

What it does, in one run (everything on 127.0.0.1, nothing leaves the machine):

1. writes a random ``--size-mb`` file, serves it with the hub emulator as a child process
   (``python -m modelmora.testing.hub_emulator``), and writes a project + lock for it;
2. alternates, ``--rounds`` times: ``curl -s -o /dev/null`` of the file, ``curl -o FILE``
   (same bytes written to disk), ``HfSource.fetch`` alone (the HTTP client), ``ensure_blob``
   (fetch + sha256 while writing + fsync + rename, in process) and ``modelmora pull`` into a
   fresh MODELMORA_HOME (the CLI process end to end: start-up, imports, HTTP, hashing,
   fsync, snapshot, index); prints medians, each speed relative to curl, and the CPU
   seconds the client and the emulator spent;
3. prints the CPU budget of a pull: sha256 speed, the CPU the transfer needs divided by the
   cores, the import time of our libraries, and the fastest CLI pull those allow;
4. repeats curl vs the CLI against an emulator throttled to ``--link-mb-s`` (a network-bound
   transfer, where hashing and start-up overlap with the wait for bytes);
5. pulls extra files until the cache holds ``--warm-gb`` GB, then times ``cache verify``
   (stat-cache fast path, in process and as a CLI process) and ``cache verify --full``.

The machine is shared and noisy: compare the side-by-side medians, not absolute numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from modelmora.cache import Store, ensure_blob, verify_store
from modelmora.lock import LockedFile, LockedModel, LockFile, write_lock
from modelmora.manifest import ModelSpec
from modelmora.project import Project
from modelmora.sources import RemoteFile

MB = 1_000_000
FLOOR_IMPORTS = "import click, pydantic, urllib3, filelock"
"""What any Python CLI built on our libraries imports before it can send a request."""
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


def start_hub(
    root: Path, repos: dict[str, Path], *, throttle_mb_s: float | None = None
) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "modelmora.testing.hub_emulator", "--root", str(root)]
    if throttle_mb_s:
        cmd += ["--throttle-mb-s", str(throttle_mb_s)]
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


def run_quietly(cmd: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


@dataclass(frozen=True)
class Run:
    wall: float
    client_cpu: float
    """CPU seconds (user + system, all threads) of this process and the children it waited for."""
    server_cpu: float | None
    """CPU seconds the emulator process used meanwhile (None where /proc is missing)."""


def process_cpu(pid: int) -> float | None:
    """CPU seconds a running process has used so far, from /proc (Linux only)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(action: Callable[[], None], server_pid: int | None) -> Run:
    server0 = process_cpu(server_pid) if server_pid else None
    own0, children0 = time.process_time(), children_cpu()
    start = time.perf_counter()
    action()
    wall = time.perf_counter() - start
    client = time.process_time() - own0 + children_cpu() - children0
    server1 = process_cpu(server_pid) if server_pid else None
    server = server1 - server0 if server0 is not None and server1 is not None else None
    return Run(wall, client, server)


def sha256_speed() -> float:
    """MB/s of hashlib's sha256 on bytes already in memory: the floor of verification."""
    block = os.urandom(CHUNK)
    digest = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(16):
        digest.update(block)
    return 16 * CHUNK / (time.perf_counter() - start) / MB


def print_cpu_budget(
    runs: dict[str, list[Run]],
    wall: dict[str, float],
    size: int,
    pull_present: list[str],
    env: dict[str, str],
) -> None:
    """Why the CLI cannot reach curl's speed on this machine, in measured numbers.

    During the transfer three things need a core each: the emulator sending, our client
    receiving and writing, and sha256 over every byte. Their CPU seconds divided by the
    cores is the fastest the transfer can finish; a CLI process adds the imports of its
    libraries before it can read the lock and send the first request.
    """
    cores = os.cpu_count() or 1
    ensure = runs["ensure"]
    server = [r.server_cpu for r in ensure if r.server_cpu is not None]
    transfer_cpu = statistics.median(r.client_cpu for r in ensure) + (
        statistics.median(server) if server else 0.0
    )
    imports = statistics.median(
        measure(lambda: run_quietly([sys.executable, "-c", FLOOR_IMPORTS]), None).wall
        for _ in range(5)
    )
    present = statistics.median(
        measure(lambda: run_quietly(pull_present, env), None).wall for _ in range(5)
    )
    best = imports + transfer_cpu / cores
    print()
    print(f"# CPU budget of a pull on this machine ({cores} cores)")
    print(f"sha256 over bytes in memory:                     {sha256_speed():.0f} MB/s")
    print(
        f"ensure_blob CPU, client + emulator:              {transfer_cpu:.3f} s "
        f"-> at least {transfer_cpu / cores:.3f} s on {cores} cores"
    )
    print(f"python -c 'import {FLOOR_IMPORTS[7:]}': {imports:.3f} s")
    print(f"modelmora pull of a present blob (fixed cost):   {present:.3f} s")
    print(
        f"fastest CLI pull these allow (imports + CPU/cores): {best:.3f} s "
        f"= {wall['curl'] / best:.2f}x curl -o /dev/null, "
        f"{wall['curl-file'] / best:.2f}x curl -o FILE"
    )


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


def compare_on_a_link(
    work: Path, src: Path, size: int, sha256: str, mb_s: float, rounds: int
) -> None:
    """curl vs the CLI when the bytes arrive at network speed, not at loopback speed.

    The emulator sends at most ``mb_s`` MB/s per response, so both clients wait on the
    "network" and our hashing and start-up overlap with it, as they would on a real link.
    """
    proc, url = start_hub(work / "hub-link", {"org/big": src}, throttle_mb_s=mb_s)
    try:
        project = work / "project-link"
        lock = write_project(
            project, url, {"big": ("org/big", {"model.safetensors": (size, sha256)})}
        )
        file_url = f"{url}/org/big/resolve/{lock.models['big'].revision}/model.safetensors"
        home = work / "link-home"
        env = {**os.environ, "MODELMORA_HOME": str(home)}
        curl, cli = [], []
        for _ in range(rounds):
            curl.append(
                measure(
                    lambda: run_quietly(["curl", "-s", "-f", "-o", "/dev/null", file_url]), None
                ).wall
            )
            cli.append(
                measure(
                    lambda: run_quietly(modelmora("-C", str(project), "pull", "-q"), env), None
                ).wall
            )
            shutil.rmtree(home)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    curl_s, cli_s = statistics.median(curl), statistics.median(cli)
    print()
    print(f"# the same file over a {mb_s:g} MB/s link (throttled emulator), median of {rounds}")
    print(f"curl -s -o /dev/null:                          {curl_s:.3f} s")
    print(
        f"modelmora pull (CLI process, fresh home):      {cli_s:.3f} s = {curl_s / cli_s:.2f}x curl"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--warm-gb", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--link-mb-s",
        type=float,
        default=200.0,
        help="also compare on an emulator throttled to this speed, like a network link (0: skip)",
    )
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
        revision = lock.models["big"].revision
        pull_big = modelmora("-C", str(project), "pull", "-q", "big")

        def to_file(action: Callable[[Path], object]) -> Callable[[], None]:
            def run() -> None:
                out = work / "out.bin"
                action(out)
                out.unlink()

            return run

        def ensure() -> None:
            store = Store(work / "lib-home")
            store.ensure_layout()
            ensure_blob(source, revision, locked_file, store)
            shutil.rmtree(store.root)

        def cli() -> None:
            home = work / "cli-home"
            run_quietly(pull_big, {**os.environ, "MODELMORA_HOME": str(home)})
            shutil.rmtree(home)

        clients: dict[str, Callable[[], None]] = {
            "curl": lambda: run_quietly(["curl", "-s", "-f", "-o", "/dev/null", file_url]),
            "curl-file": to_file(
                lambda out: run_quietly(["curl", "-s", "-f", "-o", str(out), file_url])
            ),
            "urllib3": to_file(lambda out: stream_with_urllib3(file_url, out)),
            "fetch": to_file(lambda out: source.fetch(revision, remote, out)),
            "ensure": ensure,
            "cli": cli,
        }
        runs: dict[str, list[Run]] = {label: [] for label in LABELS}
        for _ in range(args.rounds):
            for label, action in clients.items():
                runs[label].append(measure(action, hub_proc.pid))
        wall = {label: statistics.median(r.wall for r in rs) for label, rs in runs.items()}

        print(f"# download of one {args.size_mb} MB file, median of {args.rounds} rounds")
        print(
            f"{'client':<52} {'median s':>9} {'MB/s':>7} {'vs curl':>8} "
            f"{'client CPU s':>13} {'emulator CPU s':>15}"
        )
        for label, text in LABELS.items():
            client_cpu = statistics.median(r.client_cpu for r in runs[label])
            server = [r.server_cpu for r in runs[label] if r.server_cpu is not None]
            server_text = f"{statistics.median(server):.3f}" if server else "n/a"
            print(
                f"{text:<52} {wall[label]:>9.3f} {size / wall[label] / MB:>7.0f} "
                f"{wall['curl'] / wall[label]:>7.2f}x {client_cpu:>13.3f} {server_text:>15}"
            )
        print_cpu_budget(
            runs, wall, size, pull_big, {**os.environ, "MODELMORA_HOME": str(work / "cli-home")}
        )
        if args.link_mb_s:
            compare_on_a_link(work, big_src, size, big_sha, args.link_mb_s, args.rounds)

        # -- warm cache verify ------------------------------------------------------------
        home = work / "cli-home"
        env = {**os.environ, "MODELMORA_HOME": str(home)}
        subprocess.run(modelmora("-C", str(project), "pull", "-q"), check=True, env=env)
        store = Store(home)
        fast = []
        for _ in range(7):
            start = time.perf_counter()
            report = verify_store(store)
            fast.append(time.perf_counter() - start)
            assert report.ok and report.rehashed == 0, report.to_json()
        verify_cli = subprocess.run(
            modelmora("cache", "verify", "--json"), env=env, check=True, capture_output=True
        )
        cli_json = json.loads(verify_cli.stdout)
        cli_wall = measure(lambda: run_quietly(modelmora("cache", "verify"), env), None).wall
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
