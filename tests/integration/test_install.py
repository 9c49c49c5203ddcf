"""``modelmora install`` end to end: real Dagster instance, real DuckDB index, real ORT.

Each test drives the real CLI in a subprocess (as a user does) against tiny models built by
the test, with ``MODELMORA_HOME`` and the project in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmora.testing.cli import cli_command, run_cli
from modelmora.testing.tiny_models import make_tiny_bert, make_tiny_classifier

pytestmark = pytest.mark.timeout(600)

FAST_BENCH = "    benchmark: {batch_sizes: [1, 2], seq_len: 8, warmup: 1, iterations: 3}\n"


def modelmora(project: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(project, *args, env={"MODELMORA_HOME": str(home)})


def listing(project: Path, home: Path) -> dict[str, dict[str, object]]:
    proc = modelmora(project, home, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return {m["name"]: m for m in json.loads(proc.stdout)}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    make_tiny_bert(root / "models" / "embedder")
    make_tiny_classifier(root / "models" / "sentiment")
    (root / "modelmora.yml").write_text(
        "models:\n"
        "  embedder:\n    source: ./models/embedder\n    task: feature-extraction\n"
        "    backends: [cpu, cuda]\n"
        + FAST_BENCH
        + "  sentiment:\n    source: ./models/sentiment\n"
        "    convert: {quantize: dynamic-int8}\n" + FAST_BENCH
    )
    return root


def test_install_converts_validates_benchmarks_and_records_runs(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    proc = modelmora(project, home, "install", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    models = {m["name"]: m for m in result["models"]}
    assert set(models) == {"embedder", "sentiment"}

    embedder = models["embedder"]
    assert embedder["stages"] == {
        "download": "ok", "convert": "ok", "validate": "ok", "benchmark": "ok"
    }  # fmt: skip
    artifact = embedder["artifacts"][0]
    onnx_file = Path(artifact["path"]) / "model.onnx"
    assert onnx_file.is_file() and artifact["validated"] is True
    assert artifact["max_abs_diff"] < 1e-4 and artifact["min_cosine"] > 0.999
    by_backend = {(b["backend"], b["batch_size"]): b for b in artifact["benchmarks"]}
    assert by_backend[("cpu", 1)]["status"] == "ok" and by_backend[("cpu", 1)]["p50_ms"] > 0
    cuda = by_backend[("cuda", 0)]  # no GPU here: recorded as unavailable, never measured
    assert cuda["status"] == "unavailable" and cuda["p50_ms"] is None and cuda["reason"]
    assert embedder["best_backend"] == "cpu"

    sentiment = models["sentiment"]
    variants = [a["variant"] for a in sentiment["artifacts"]]
    assert variants == ["base", "int8"]
    assert all(a["validated"] for a in sentiment["artifacts"])

    # Runs went to the project's own Dagster instance, one per model partition.
    script = (
        "import dagster as dg, json\n"
        "runs = dg.DagsterInstance.get().get_runs()\n"
        "print(json.dumps(sorted((r.tags.get('dagster/partition'), r.status.value) "
        "for r in runs)))"
    )
    env = {**os.environ, "DAGSTER_HOME": str(project / ".modelmora" / "dagster")}
    runs = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(runs.stdout) == [["embedder", "SUCCESS"], ["sentiment", "SUCCESS"]]

    # Read commands: `show` details one model, `bench` re-measures on demand.
    shown = json.loads(modelmora(project, home, "show", "embedder", "--json").stdout)
    assert [f["path"] for f in shown["files_detail"]][:2] == [
        "1_Pooling/config.json",
        "config.json",
    ]
    rerun = modelmora(project, home, "bench", "embedder", "--backend", "cpu", "--json")
    assert rerun.returncode == 0, rerun.stderr
    measured = json.loads(rerun.stdout)["embedder"][0]
    assert measured["status"] == "ok" and [b["batch_size"] for b in measured["batches"]] == [1, 2]
    not_there = modelmora(project, home, "show", "nope")
    assert not_there.returncode == 2 and "not in modelmora.lock: nope" in not_there.stderr

    # The store is the truth: a lost index is rebuilt with every install record.
    before = listing(project, home)
    (home / "index.duckdb").unlink()
    reindex = modelmora(project, home, "cache", "reindex")
    assert reindex.returncode == 0, reindex.stderr
    rebuilt = listing(project, home)
    assert rebuilt["embedder"]["installed"] is True
    assert rebuilt["embedder"]["artifacts"] == before["embedder"]["artifacts"]
    assert [a["variant"] for a in rebuilt["sentiment"]["artifacts"]] == ["base", "int8"]

    # Nothing changed: the no-op path answers without importing Dagster, torch or DuckDB.
    probe = (
        "import sys\n"
        "from modelmora.cli import main\n"
        "try:\n"
        f"    main(['-C', {str(project)!r}, 'install'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('dagster', 'torch', 'duckdb', 'onnxruntime') "
        "if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    noop = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELMORA_HOME": str(home)},
        check=True,
    )
    assert "nothing to do" in noop.stdout and "HEAVY []" in noop.stdout


def test_failing_model_does_not_stop_others_and_gate_names_numbers(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    manifest = project / "modelmora.yml"
    # An impossible threshold: a correct export still differs by ~1e-7 from PyTorch, so the
    # gate must fail with the measured numbers and stop the benchmark.
    manifest.write_text(
        manifest.read_text().replace(
            "    task: feature-extraction\n",
            "    task: feature-extraction\n    validate: {atol: 1.0e-12, min_cosine: 1.0}\n",
        )
    )
    proc = modelmora(project, home, "install")
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "embedder" in out and "validation failed" in out and "max abs diff" in out
    state = listing(project, home)
    assert state["sentiment"]["installed"] is True
    assert state["embedder"]["stages"]["validate"] == "failed"
    assert state["embedder"]["stages"]["benchmark"] == "missing"

    # Fix the threshold: conversion is not redone (same artifact), validation re-runs.
    before = json.loads(
        (Path(state["embedder"]["artifacts"][0]["path"]) / "artifact.json").read_text()
    )
    manifest.write_text(
        manifest.read_text().replace("atol: 1.0e-12, min_cosine: 1.0", "atol: 1.0e-4")
    )
    again = modelmora(project, home, "install")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "embedder: convert cached" in again.stderr
    after_state = listing(project, home)["embedder"]
    after = json.loads((Path(after_state["artifacts"][0]["path"]) / "artifact.json").read_text())
    assert after["created_at"] == before["created_at"]
    assert after_state["installed"] is True


def test_unsupported_and_pickle_models_fail_with_what_to_set(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    odd = root / "models" / "odd"
    odd.mkdir(parents=True)
    (odd / "config.json").write_text('{"architectures": ["FrobnicatorModel"], "model_type": "x"}')
    (odd / "model.safetensors").write_bytes(b"\0" * 16)
    pickled = root / "models" / "pickled"
    make_tiny_bert(pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    (root / "modelmora.yml").write_text(
        "models:\n  odd:\n    source: ./models/odd\n  pickled:\n    source: ./models/pickled\n"
    )
    proc = modelmora(root, tmp_path / "home", "install")
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "error: odd: model 'odd'" in out and "models.odd." in out
    assert "pytorch_model.bin" in out and "allow_pickle" in out
    assert "Traceback" not in out and "modelmora.errors" not in out


def test_locked_and_frozen(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert modelmora(project, home, "lock").returncode == 0
    manifest = project / "modelmora.yml"
    manifest.write_text(manifest.read_text().replace("seq_len: 8", "seq_len: 9", 1))
    locked = modelmora(project, home, "install", "--locked", "embedder")
    assert locked.returncode == 1
    assert "out of date" in locked.stderr and "models.embedder.benchmark.seq_len" in locked.stderr
    unknown = modelmora(project, home, "install", "--frozen", "nope")
    assert unknown.returncode == 2 and "not in modelmora.lock: nope" in unknown.stderr
    for command in ("bench", "show", "pull"):
        named = modelmora(project, home, command, "nope")
        assert named.returncode == 2, (command, named.stderr)
        assert "not in modelmora.lock: nope (locked models: embedder, sentiment)" in named.stderr

    # A corrupt lock is an error for install too, and is never rewritten by it.
    (project / "modelmora.lock").write_text("version = 1\n[[model]\n")
    corrupt = modelmora(project, home, "install")
    assert corrupt.returncode == 2 and "not valid TOML" in corrupt.stderr
    assert (project / "modelmora.lock").read_text() == "version = 1\n[[model]\n"


def test_killed_install_resumes_without_redoing_finished_stages(
    project: Path, tmp_path: Path
) -> None:
    """kill -9 once the first artifact is complete; the next install reuses it."""
    home = tmp_path / "home"
    env = {**os.environ, "MODELMORA_HOME": str(home), "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.Popen(
        cli_command(project, "install", "embedder"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    records: list[Path] = []
    while not records:
        assert time.monotonic() < deadline, "no artifact was completed in time"
        assert proc.poll() is None or proc.returncode == 0
        records = list((home / "artifacts").glob("*/artifact.json"))
        time.sleep(0.05)  # polling interval for a file to appear, not synchronisation
    proc.kill()
    proc.wait()
    built_at = json.loads(records[0].read_text())["created_at"]

    again = modelmora(project, home, "install", "embedder")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "embedder: convert cached" in again.stderr
    assert json.loads(records[0].read_text())["created_at"] == built_at
    assert listing(project, home)["embedder"]["installed"] is True


@pytest.mark.parametrize("verbose", [False, True])
def test_progress_lines_and_library_noise_only_in_the_run_log(
    tmp_path: Path, verbose: bool
) -> None:
    """Not a TTY: a line per finished stage and per measurement. The exporters' warnings
    (TracerWarning, deprecations, the accelerate advisory, onnxruntime.quantization's advice,
    which it logs on the root logger) go to the run's log, which the terminal shows only with
    ``-v``."""
    root = tmp_path / "proj"
    make_tiny_bert(root / "models" / "tiny")
    (root / "modelmora.yml").write_text(
        "models:\n  tiny:\n    source: ./models/tiny\n    task: feature-extraction\n"
        "    convert: {quantize: dynamic-int8}\n" + FAST_BENCH
    )
    env = {"MODELMORA_HOME": str(tmp_path / "home"), "TRANSFORMERS_VERBOSITY": "warning"}
    proc = run_cli(root, "install", *(["-v"] if verbose else []), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tiny: convert done (" in proc.stderr
    assert "tiny: benchmark 1/4 base on cpu: batch 1, p50 " in proc.stderr
    assert "tiny: benchmark 4/4 int8 on cpu: batch 2, p50 " in proc.stderr
    noise = ("TracerWarning", "torch_dtype", "Weight deduplication", "pre-processing before quant")
    shown = [n for n in noise if n in proc.stdout + proc.stderr]
    assert shown == (list(noise) if verbose else []), proc.stderr
    if not verbose:  # diffusers warns while imported (where optimum comes in two distributions)
        assert "Multiple distributions found" not in proc.stderr
