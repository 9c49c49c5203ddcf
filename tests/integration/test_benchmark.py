"""Benchmarks on real ONNX Runtime sessions; honest "unavailable" records for absent EPs.

This machine (and CI) has no GPU: the CUDA/TensorRT tests here check that a request for
them is recorded as unavailable, never as a measurement. The tests marked "GPU" run only
where onnxruntime-gpu has a working CUDA provider and skip with a reason elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from modelmora.bench import PROVIDERS, benchmark
from modelmora.bench.core import active_provider_problem
from modelmora.errors import UserInputError
from modelmora.testing.tiny_models import make_tiny_bert

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch", reason="building the artifact needs the [convert] extra")
    from modelmora.convert import convert
    from modelmora.manifest.model import ConvertSpec

    root = tmp_path_factory.mktemp("bench")
    snap = make_tiny_bert(root / "snap")
    convert(snap, root / "art", name="tiny", task=None, spec=ConvertSpec())
    return root / "art"


def test_cpu_benchmark_measures_every_batch_size(artifact: Path) -> None:
    result = benchmark(
        artifact, backend="cpu", batch_sizes=[1, 4], seq_len=16, warmup=1, iterations=5, threads=1
    )
    assert result.status == "ok" and result.status_line == "ok"
    assert result.session_providers[0] == "CPUExecutionProvider"
    assert [b.batch_size for b in result.batches] == [1, 4]
    for b in result.batches:
        assert b.iterations == 5 and b.seq_len == 16
        assert 0 < b.p50_ms <= b.p95_ms <= b.p99_ms
        assert b.load_time_ms > 0 and b.peak_rss_mb > 0
        assert b.throughput_items_per_s > 0
        assert b.gpu_memory_mb is None
    # The record is JSON-serializable for the index and Dagster metadata.
    assert result.model_dump(mode="json")["batches"][1]["batch_size"] == 4


def test_benchmark_accepts_the_model_file(artifact: Path) -> None:
    result = benchmark(
        artifact / "model.onnx", backend="cpu", batch_sizes=[2], seq_len=8, warmup=0, iterations=2
    )
    assert result.status == "ok" and len(result.batches) == 1


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA: see the GPU tests")
@pytest.mark.parametrize("backend", ["cuda", "tensorrt", "openvino", "rocm"])
def test_absent_provider_is_unavailable_not_measured(artifact: Path, backend: str) -> None:
    result = benchmark(
        artifact, backend=backend, batch_sizes=[1], seq_len=8, warmup=1, iterations=2
    )
    assert result.status == "unavailable" and result.batches == []
    assert result.provider == PROVIDERS[backend]
    assert result.reason and PROVIDERS[backend] in result.reason
    assert result.status_line.startswith("unavailable: ")


def test_silent_cpu_fallback_is_detected() -> None:
    """What onnxruntime-gpu does on a machine without a usable GPU: the session runs on CPU."""
    problem = active_provider_problem(("CUDAExecutionProvider",), ["CPUExecutionProvider"])
    assert problem == "requested CUDAExecutionProvider, session runs on CPUExecutionProvider"
    chain = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert active_provider_problem(chain, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert (
        active_provider_problem(
            chain, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        is None
    )


@pytest.mark.skipif(not HAS_CUDA, reason="GPU test: onnxruntime has no CUDAExecutionProvider")
def test_gpu_cuda_is_measured_or_honestly_unavailable(artifact: Path) -> None:
    """GPU: with onnxruntime-gpu, CUDA either really runs (and reports GPU memory) or is
    recorded unavailable because the session fell back to CPU."""
    result = benchmark(artifact, backend="cuda", batch_sizes=[1], seq_len=8, warmup=1, iterations=3)
    if result.status == "ok":
        assert result.session_providers[0] == "CUDAExecutionProvider"
    else:
        assert result.status == "unavailable" and result.batches == []
        assert result.reason


def test_bad_arguments(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="unknown backend 'tpu'"):
        benchmark(artifact, backend="tpu", batch_sizes=[1], seq_len=8, warmup=0, iterations=1)
    with pytest.raises(UserInputError, match="no ONNX model"):
        benchmark(tmp_path, backend="cpu", batch_sizes=[1], seq_len=8, warmup=0, iterations=1)


def test_serving_side_imports_do_not_pull_torch() -> None:
    code = (
        "import sys, modelmora.bench, modelmora.validate, modelmora.convert;"
        "bad = [m for m in ('torch', 'transformers', 'tensorflow') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_torch_reference_latency(artifact: Path) -> None:
    from modelmora.bench.torch_ref import torch_reference_latency

    snap = artifact.parent / "snap"
    assert torch_reference_latency(snap, batch_size=2, seq_len=8, iterations=3) > 0
