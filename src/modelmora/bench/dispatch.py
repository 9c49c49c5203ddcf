"""Which benchmark an artifact gets, by its task: the bench side of the task seam.

Generative tasks (``modelmora.tasks``) are measured in tokens (``bench.generation``);
everything else by forward-pass latency per batch size (``bench.core``).
"""

from __future__ import annotations

from pathlib import Path

from modelmora import tasks
from modelmora.bench.report import BackendBenchmark
from modelmora.manifest.model import BenchmarkSpec

__all__ = ["benchmark_artifact"]


def benchmark_artifact(
    artifact: Path, *, task: str | None, backend: str, spec: BenchmarkSpec
) -> BackendBenchmark:
    info = tasks.known(task) if task else None
    if info is not None and info.generative:
        from modelmora.bench.generation import benchmark_generation

        return benchmark_generation(artifact, backend=backend, spec=spec)
    from modelmora.bench.core import benchmark

    return benchmark(
        artifact,
        backend=backend,
        batch_sizes=spec.batch_sizes,
        seq_len=spec.seq_len,
        warmup=spec.warmup,
        iterations=spec.iterations,
        max_seconds=spec.budget_s,
    )
