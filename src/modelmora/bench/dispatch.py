"""Which benchmark an artifact gets, by its task: the bench side of the task seam.

Generative tasks (``modelmora.tasks``) are measured in tokens (``bench.generation``);
everything else by forward-pass latency per batch size (``bench.core``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from modelmora import tasks
from modelmora.manifest.model import BenchmarkSpec
from modelmora.records.benchmark import BackendBenchmark, BatchResult, BenchmarkKind

__all__ = ["benchmark_artifact", "benchmark_kind", "planned_sizes"]


def _generative(task: str | None) -> bool:
    info = tasks.known(task) if task else None
    return info is not None and info.generative


def benchmark_kind(task: str | None) -> BenchmarkKind:
    """What a task's benchmark rows measure."""
    if task == "text-to-image":
        return "diffusion"
    return "generation" if _generative(task) else "latency"


def planned_sizes(task: str | None, spec: BenchmarkSpec) -> list[int]:
    """The measurements one backend gets: batch sizes, numbers of sequences, step counts."""
    kind = benchmark_kind(task)
    if kind == "diffusion":
        return spec.diffusion_steps
    return spec.generation[2] if kind == "generation" else list(spec.batch_sizes)


def benchmark_artifact(
    artifact: Path,
    *,
    task: str | None,
    backend: str,
    spec: BenchmarkSpec,
    on_row: Callable[[BatchResult], None] | None = None,
    model_file: str = "model.onnx",
) -> BackendBenchmark:
    """``on_row`` is called after each measurement (one per :func:`planned_sizes` entry);
    ``model_file`` is the artifact's graph to measure (an image-text model: its image tower)."""
    kind = benchmark_kind(task)
    if kind == "diffusion":
        from modelmora.bench.diffusion import benchmark_diffusion

        return benchmark_diffusion(artifact, backend=backend, spec=spec, on_row=on_row)
    if kind == "generation":
        from modelmora.bench.generation import benchmark_generation

        return benchmark_generation(
            artifact / model_file, backend=backend, spec=spec, on_row=on_row
        )
    from modelmora.bench.core import benchmark

    return benchmark(
        artifact / model_file,
        backend=backend,
        batch_sizes=spec.batch_sizes,
        seq_len=spec.seq_len,
        warmup=spec.warmup,
        iterations=spec.iterations,
        max_seconds=spec.budget_s,
        on_row=on_row,
    )
