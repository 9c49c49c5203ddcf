"""Wall time to lock 50 HF repos served by the local hub emulator (target: under 2 s).

Run: .venv/bin/python bench/lock.py [--repos 50] [--jobs 8]

The emulator runs in its own process (as a real hub would), each repo has two small
non-LFS files (which `lock` must fetch and hash, the expensive case) and one LFS weight file.
Printed: cold `modelmora lock` (a fresh process, as a user runs it), the same with --jobs 1
for the parallel speed-up, and a warm re-lock (every pin reused, no network).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repos", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="modelmora-bench-lock-") as tmp:
        root = Path(tmp)
        repo_args = []
        for i in range(args.repos):
            src = root / "src" / f"repo-{i:03d}"
            src.mkdir(parents=True)
            (src / "config.json").write_text(f'{{"architectures": ["BertModel"], "i": {i}}}')
            (src / "tokenizer_config.json").write_text(f'{{"model_max_length": {i + 128}}}')
            (src / "model.safetensors").write_bytes(os.urandom(4096))
            repo_args += ["--repo", f"bench/repo-{i:03d}={src}"]
        hub = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelmora.testing.hub_emulator",
                "--root",
                str(root / "hub"),
                *repo_args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert hub.stdout is not None
            line = hub.stdout.readline().strip()
            if not line.startswith("READY "):
                raise SystemExit(f"emulator did not start: {line!r}")
            url = line.split(" ", 1)[1]
            project = root / "project"
            project.mkdir()
            models = "".join(
                f"  repo-{i:03d}:\n    source: hf://bench/repo-{i:03d}\n" for i in range(args.repos)
            )
            (project / "modelmora.yml").write_text(
                f"registries:\n  hf: {{endpoint: '{url}'}}\nmodels:\n{models}"
            )
            env = {**os.environ, "HF_HUB_DISABLE_XET": "1"}
            cli = [sys.executable, "-m", "modelmora", "-C", str(project), "lock"]
            cold = timed([*cli, "--jobs", str(args.jobs)], env)
            relock = timed([*cli, "--jobs", str(args.jobs)], env)
            (project / "modelmora.lock").unlink()
            serial = timed([*cli, "--jobs", "1"], env)
            startup = timed([sys.executable, "-m", "modelmora", "--version"], env)
        finally:
            hub.terminate()
            hub.wait(timeout=10)

    print(f"lock of {args.repos} hf repos (emulator on 127.0.0.1, {os.cpu_count()} cores)")
    print(f"  cold lock, --jobs {args.jobs:<3}  {cold:6.2f} s   (target < 2 s)")
    print(f"  cold lock, --jobs 1    {serial:6.2f} s   parallel speed-up {serial / cold:4.1f}x")
    print(f"  warm re-lock (no-op)   {relock:6.2f} s")
    print(f"  CLI start-up alone     {startup:6.2f} s")


if __name__ == "__main__":
    main()
