"""Latency/throughput of an ONNX artifact on one ONNX Runtime execution provider.

A provider that is not really active is recorded as ``unavailable: <reason>``, never as a
measurement. ``onnxruntime-gpu`` lists CUDA/TensorRT as available on machines without a GPU
and silently falls back to CPU when they fail to load, so the only trusted signal is
``session.get_providers()`` *after* creating the session with an explicit provider list.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelmora.backends import PROVIDERS
from modelmora.errors import UserInputError
from modelmora.manifest.model import DEFAULT_BENCHMARK_SECONDS
from modelmora.records.benchmark import BackendBenchmark, BatchResult
from modelmora.validate.inputs import (
    image_input_size,
    max_input_length,
    synthetic_inputs,
    vocab_size,
)

# Nodes TensorRT cannot take run on CUDA (never on CPU silently: CUDA must be there too).
_CHAINS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider")
}
_GPU_BACKENDS = ("cuda", "tensorrt", "rocm")
MIN_ITERATIONS = 3
"""Timed runs per batch size even when the time budget is spent (p50 needs a few)."""


def ort_version() -> str:
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def provider_chain(backend: str) -> tuple[str, ...]:
    if backend not in PROVIDERS:
        raise UserInputError(
            f"unknown backend '{backend}'", hint=f"use one of: {', '.join(PROVIDERS)}"
        )
    return _CHAINS.get(backend, (PROVIDERS[backend],))


def resolve_model(path: Path) -> Path:
    model = path / "model.onnx" if path.is_dir() else path
    if not model.is_file():
        raise UserInputError(f"no ONNX model at {model}")
    return model


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM, giving a per-batch peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def latency_row(
    ms: np.ndarray,
    *,
    batch_size: int,
    seq_len: int,
    load_ms: float,
    warmup_ms: float,
    items_per_run: float,
    scope: str,
    iterations: int | None = None,
    **extra: Any,
) -> BatchResult:
    """One measured row from the runs' latencies in ms: percentiles, mean, throughput over
    the time spent running (``items_per_run`` per run) and this process's peak RSS, so every
    kind of benchmark reports them the same way. ``iterations`` defaults to the runs made."""
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    total_s = float(ms.sum()) / 1000
    return BatchResult(
        batch_size=batch_size,
        seq_len=seq_len,
        iterations=len(ms) if iterations is None else iterations,
        load_time_ms=round(load_ms, 3),
        warmup_ms=round(warmup_ms, 3),
        p50_ms=round(float(p50), 4),
        p95_ms=round(float(p95), 4),
        p99_ms=round(float(p99), 4),
        mean_ms=round(float(ms.mean()), 4),
        throughput_items_per_s=round(items_per_run * len(ms) / total_s, 4) if total_s else 0.0,
        peak_rss_mb=round(_peak_rss_mb(), 1),
        peak_rss_scope=scope,
        **extra,
    )


def _gpu_memory_mb() -> float | None:
    """This process's GPU memory from nvidia-smi (no torch, no pynvml dependency)."""
    import os

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            try:
                return float(used.strip())
            except ValueError:
                return None
    return None


def _session(model: Path, chain: tuple[str, ...], threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors reach the record through the exception instead
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=list(chain))


def active_provider_problem(chain: Sequence[str], active: Sequence[str]) -> str | None:
    """Why a session is not really running on the requested provider chain, if it is not.

    The requested provider must come first; for chains (TensorRT → CUDA) every member must
    be active, so a TensorRT session that lost CUDA is not passed off as a GPU measurement.
    """
    if not active or active[0] != chain[0]:
        return f"requested {chain[0]}, session runs on {active[0] if active else 'nothing'}"
    missing = [p for p in chain if p not in active]
    if missing:
        return f"requested {', '.join(chain)}, but {', '.join(missing)} did not load"
    return None


def availability(backend: str) -> str | None:
    """``None`` when the backend's providers are in this build, else the reason they are not."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in provider_chain(backend) if p not in available]
    if missing:
        return (
            f"{', '.join(missing)} not in this onnxruntime build "
            f"({ort_version()}; available: {', '.join(available)})"
        )
    return None


def open_session(
    model: Path, chain: tuple[str, ...], threads: int | None
) -> tuple[Literal["batch", "process"], Any, float, list[str], str | None]:
    """A fresh session for one measurement: ``(peak RSS scope, session, load ms, active
    providers, why the requested chain is not active or None)``; the peak RSS is reset first.
    An accelerator provider that raises while starting is "not active" (no session)."""
    scope: Literal["batch", "process"] = "batch" if _reset_peak_rss() else "process"
    t0 = time.perf_counter()
    try:
        session = _session(model, chain, threads)
    except Exception as exc:
        if chain[0] == "CPUExecutionProvider":
            raise  # the model itself does not load: a failure, not a missing backend
        return scope, None, 0.0, [], f"{chain[0]} did not start: {type(exc).__name__}: {exc}"
    load_ms = (time.perf_counter() - t0) * 1000
    active = list(session.get_providers())
    return scope, session, load_ms, active, active_provider_problem(chain, active)


def _measure(
    model: Path,
    chain: tuple[str, ...],
    *,
    batch_size: int,
    seq_len: int,
    warmup: int,
    iterations: int,
    threads: int | None,
    gpu: bool,
    deadline: float,
) -> tuple[BatchResult | None, list[str], str | None]:
    scope, session, load_ms, active, problem = open_session(model, chain, threads)
    if problem is not None:
        return None, active, problem
    feeds = synthetic_inputs(
        session.get_inputs(),
        batch_size=batch_size,
        seq_len=seq_len,
        vocab=vocab_size(model.parent),
        image_size=image_input_size(model.parent),
    )
    t0 = time.perf_counter()
    for _ in range(warmup):
        session.run(None, feeds)
    warmup_ms = (time.perf_counter() - t0) * 1000
    latencies = np.empty(iterations, dtype=np.float64)
    done = 0
    while done < iterations and (done < MIN_ITERATIONS or time.perf_counter() < deadline):
        start = time.perf_counter()
        session.run(None, feeds)
        latencies[done] = (time.perf_counter() - start) * 1000
        done += 1
    result = latency_row(
        latencies[:done],
        batch_size=batch_size,
        seq_len=seq_len,
        load_ms=load_ms,
        warmup_ms=warmup_ms,
        items_per_run=batch_size,
        scope=scope,
        gpu_memory_mb=_gpu_memory_mb() if gpu else None,
    )
    del session
    return result, active, None


def benchmark(
    artifact: Path,
    *,
    backend: str,
    batch_sizes: Sequence[int],
    seq_len: int,
    warmup: int,
    iterations: int,
    threads: int | None = None,
    max_seconds: float = DEFAULT_BENCHMARK_SECONDS,
    on_row: Callable[[BatchResult], None] | None = None,
) -> BackendBenchmark:
    """Measure ``artifact`` (a directory holding ``model.onnx``, or the file) on ``backend``.

    One fresh session per batch size, so load time and peak memory belong to that batch.
    ``seq_len`` is clamped to the model's maximum (a longer input only makes ONNX Runtime
    fail). Once ``max_seconds`` are spent, the batch sizes left get ``MIN_ITERATIONS`` timed
    runs each, so a first install on a small machine stays quick; both are in ``notes``.
    """
    if iterations < 1 or warmup < 0 or seq_len < 1 or any(b < 1 for b in batch_sizes):
        raise UserInputError("benchmark needs iterations ≥ 1, warmup ≥ 0, seq_len ≥ 1, batch ≥ 1")
    model, chain, record, unavailable = prepare(artifact, backend, threads=threads)
    if unavailable is not None:
        return unavailable
    notes = []
    limit = max_input_length(model.parent)
    if limit is not None and seq_len > limit:
        notes.append(f"seq_len {seq_len} clamped to the model's maximum input length {limit}")
        seq_len = limit
    deadline = time.perf_counter() + max_seconds
    result = measure_each(
        batch_sizes,
        lambda batch_size: _measure(
            model,
            chain,
            batch_size=batch_size,
            seq_len=seq_len,
            warmup=warmup,
            iterations=iterations,
            threads=threads,
            gpu=backend in _GPU_BACKENDS,
            deadline=deadline,
        ),
        record,
        label="batch",
        on_row=on_row,
    )
    cut = [b.batch_size for b in result.batches if b.iterations < iterations]
    if cut:
        sizes = ", ".join(map(str, cut))
        notes.append(
            f"time budget of {max_seconds:g} s spent: batch {sizes} measured with fewer than "
            f"{iterations} iterations (benchmark.max_seconds)"
        )
    return result.model_copy(update={"notes": notes})


def prepare(
    artifact: Path, backend: str, **fields: Any
) -> tuple[Path, tuple[str, ...], dict[str, Any], BackendBenchmark | None]:
    """``(model file, provider chain, the record's common fields, an "unavailable" result
    if the backend's providers are not in this build)``: how every benchmark starts."""
    model = resolve_model(artifact)
    chain = provider_chain(backend)
    record: dict[str, Any] = {
        "backend": backend,
        "provider": chain[0],
        "onnxruntime_version": ort_version(),
        **fields,
    }
    reason = availability(backend)
    unavailable = None
    if reason is not None:
        unavailable = BackendBenchmark(status="unavailable", reason=reason, **record)
    return model, chain, record, unavailable


Measurement = tuple[BatchResult | None, list[str], str | None]
"""``(row, session providers, why the provider is not active)``; no row when it is not."""


def measure_each(
    sizes: Sequence[int],
    measure: Callable[[int], Measurement],
    record: dict[str, Any],
    *,
    label: str,
    on_row: Callable[[BatchResult], None] | None = None,
) -> BackendBenchmark:
    """One row per size, stopping at the first size that cannot be measured.

    A provider that is not active gives ``unavailable``; an exception is ``failed``, naming
    the size (the rows measured before it are kept).
    """
    rows: list[BatchResult] = []
    active: list[str] = []
    for size in sizes:
        try:
            result, active, reason = measure(size)
        except Exception as exc:
            return BackendBenchmark(
                status="failed",
                reason=f"{label} {size}: {type(exc).__name__}: {exc}".strip(),
                session_providers=active,
                batches=rows,
                **record,
            )
        if result is None:
            return BackendBenchmark(
                status="unavailable", reason=reason, session_providers=active, **record
            )
        rows.append(result)
        if on_row is not None:
            on_row(result)
    return BackendBenchmark(status="ok", session_providers=active, batches=rows, **record)
