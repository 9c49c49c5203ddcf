"""Text-to-image speed of a diffusion artifact on one execution provider.

The same runtime serving uses (:mod:`modelmora.diffusion`: the three ONNX graphs and our
numpy scheduler). One row per step count (``benchmark.steps``): seconds per generated image
at the pipeline's native size, one prompt, classifier-free guidance (so two UNet rows per
step, as diffusers runs it). As for every benchmark, a provider that is not really active
(``session.get_providers()`` of every component) is recorded as unavailable, never measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelmora.bench.core import (
    MIN_ITERATIONS,
    Measurement,
    active_provider_problem,
    latency_row,
    measure_each,
    open_session,
    prepare,
)
from modelmora.diffusion import COMPONENTS, DiffusionConfig, generate, open_sessions
from modelmora.manifest.model import BenchmarkSpec
from modelmora.records.benchmark import BackendBenchmark, BatchResult

__all__ = ["BENCH_PROMPT", "benchmark_diffusion"]

BENCH_PROMPT = "a watercolor painting of a harbour at dawn"


def _measure(
    root: Path, chain: tuple[str, ...], steps: int, iterations: int, deadline: float
) -> Measurement:
    scope, unet, _, active, problem = open_session(root / "unet" / "model.onnx", chain, None)
    if problem is not None:
        return None, active, problem
    t0 = time.perf_counter()
    sessions = {**open_sessions(root, list(chain)), "unet": unet}
    load_ms = (time.perf_counter() - t0) * 1000
    for component in COMPONENTS:
        problem = active_provider_problem(chain, sessions[component].get_providers())
        if problem is not None:
            return None, active, f"{component}: {problem}"
    config = DiffusionConfig.read(root)
    side = config.sample_size
    noise = np.random.default_rng(0).standard_normal((1, config.latent_channels, side, side))
    noise = noise.astype(np.float32)
    t0 = time.perf_counter()
    generate(root, sessions, BENCH_PROMPT, noise, steps=1)  # warm-up
    warmup_ms = (time.perf_counter() - t0) * 1000
    seconds: list[float] = []
    while len(seconds) < iterations and (
        len(seconds) < MIN_ITERATIONS or time.perf_counter() < deadline
    ):
        start = time.perf_counter()
        generate(root, sessions, BENCH_PROMPT, noise, steps=steps)
        seconds.append(time.perf_counter() - start)
    row = latency_row(
        np.asarray(seconds) * 1000,
        batch_size=1,
        seq_len=steps,
        load_ms=load_ms,
        warmup_ms=warmup_ms,
        items_per_run=1,
        scope=scope,
    )
    return row, active, None


def benchmark_diffusion(
    artifact: Path,
    *,
    backend: str,
    spec: BenchmarkSpec,
    on_row: Callable[[BatchResult], None] | None = None,
) -> BackendBenchmark:
    """Seconds per image of the pipeline in ``artifact`` at each ``benchmark.steps``."""
    _, chain, record, unavailable = prepare(artifact / "unet", backend, kind="diffusion")
    if unavailable is not None:
        return unavailable
    deadline = time.perf_counter() + spec.budget_s
    return measure_each(
        spec.diffusion_steps,
        lambda steps: _measure(artifact, chain, steps, spec.iterations, deadline),
        record,
        label="steps",
        on_row=on_row,
    )
