"""Honest benchmark statuses, through the real CLI on a real store.

``long`` is an ONNX model that takes at most 64 positions and says so nowhere, benchmarked at
``seq_len: 128``: ONNX Runtime fails, and that must be ``failed`` (✗, exit 1) everywhere, not
``unavailable`` (reserved for a backend that is not active) or ✓. ``clamped`` is the same
graph with a ``config.json`` that declares its 64 positions: the benchmark clamps its input
length and says so. Both are ``path:`` sources passed through without conversion (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelmora.bench import benchmark
from modelmora.bench.core import MIN_ITERATIONS
from modelmora.testing.cli import run_cli
from modelmora.testing.tiny_models import positions_onnx

pytestmark = pytest.mark.torch_free

BENCH = "    benchmark: {batch_sizes: [1, 2], seq_len: 128, warmup: 1, iterations: 3}\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-status")
    for name in ("long", "clamped"):
        (root / name).mkdir()
        (root / name / "model.onnx").write_bytes(positions_onnx(64))
    (root / "clamped" / "config.json").write_text('{"max_position_embeddings": 64}\n')
    (root / "modelmora.yml").write_text(
        f"models:\n  long:\n    source: ./long\n{BENCH}  clamped:\n    source: ./clamped\n{BENCH}"
    )
    return root


def cli(project: Path, *args: str) -> tuple[int, str, str]:
    done = run_cli(project, *args, env={"MODELMORA_HOME": str(project / "home")})
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def test_a_failed_benchmark_is_failed_everywhere(project: Path) -> None:
    code, out, _ = cli(project, "install", "--json")
    assert code == 1
    models = {m["name"]: m for m in json.loads(out)["models"]}
    assert models["long"]["stages"]["benchmark"] == "failed"
    assert "benchmark failed on cpu" in models["long"]["error"]
    assert "broadcast" in models["long"]["error"]  # ONNX Runtime's own words
    assert models["clamped"]["stages"]["benchmark"] == "ok"
    assert models["clamped"]["error"] is None

    code, out, _ = cli(project, "list", "--json")
    assert code == 0
    listed = {m["name"]: m for m in json.loads(out)}
    assert listed["long"]["stages"]["benchmark"] == "failed"
    assert listed["long"]["installed"] is False
    (row,) = listed["long"]["artifacts"][0]["benchmarks"]
    assert row["status"] == "failed" and "batch 1" in row["reason"]

    code, out, _ = cli(project, "list")
    line = next(line for line in out.splitlines() if " long " in line)
    assert "✗" in line and "✓" in line  # download/convert/validate ok, benchmark failed

    code, out, _ = cli(project, "show", "long")
    assert "✗ failed: batch 1" in out

    code, out, _ = cli(project, "bench", "long")
    assert code == 1
    assert "failed: batch 1" in out


def test_input_length_is_clamped_to_what_the_model_declares(project: Path) -> None:
    code, out, _ = cli(project, "bench", "clamped", "--json")
    assert code == 0
    (result,) = json.loads(out)["clamped"]
    assert result["status"] == "ok"
    assert [b["seq_len"] for b in result["batches"]] == [64, 64]
    assert result["notes"] == ["seq_len 128 clamped to the model's maximum input length 64"]
    code, out, _ = cli(project, "show", "clamped")
    assert "note: seq_len 128 clamped" in out


def test_the_time_budget_cuts_iterations_and_says_so(project: Path) -> None:
    result = benchmark(
        project / "clamped",
        backend="cpu",
        batch_sizes=[1, 2],
        seq_len=8,
        warmup=0,
        iterations=1000,
        max_seconds=1e-6,
    )
    assert result.status == "ok"
    assert [b.iterations for b in result.batches] == [MIN_ITERATIONS, MIN_ITERATIONS]
    assert "time budget of 1e-06 s spent: batch 1, 2" in result.notes[0]
