"""Token generation speed of a decoder artifact, through ONNX Runtime GenAI.

Per backend and per number of concurrent sequences (decoded together as one batch): load
time, time to first token (prompt processing), prompt tokens/s, aggregate decode tokens/s,
time per decode step (p50/p95/p99), peak RSS. Prompts are seeded token ids of a fixed
length; generation runs for a fixed number of new tokens (no stop token), so every run does
the same work.

GenAI runs the artifact's ``genai_config.json`` (written at conversion). Only the CPU is
measured: GenAI picks providers from its config and gives no ``get_providers()`` to check
that another one really ran, so other backends are recorded as ``unavailable`` with that
reason rather than passed off as measured.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.bench.core import _peak_rss_mb, _reset_peak_rss, ort_version, provider_chain
from modelmora.bench.report import BackendBenchmark, BatchResult
from modelmora.convert.genai_config import GENAI_CONFIG
from modelmora.errors import UserInputError
from modelmora.manifest.model import BenchmarkSpec

__all__ = ["benchmark_generation", "genai_version"]


def genai_version() -> str | None:
    try:
        return metadata.version("onnxruntime-genai")
    except metadata.PackageNotFoundError:
        return None


def _measure(
    model_dir: Path, sequences: int, prompt_tokens: int, new_tokens: int, vocab: int
) -> BatchResult:
    import onnxruntime_genai as og

    scope = "batch" if _reset_peak_rss() else "process"
    t0 = time.perf_counter()
    model = og.Model(str(model_dir))
    load_ms = (time.perf_counter() - t0) * 1000
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, vocab, size=(sequences, prompt_tokens)).astype(np.int32)
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=prompt_tokens + new_tokens, do_sample=False, batch_size=sequences
    )
    generator = og.Generator(model, params)
    started = time.perf_counter()
    generator.append_tokens(prompts)
    generator.generate_next_token()
    ttft = time.perf_counter() - started
    steps = np.empty(new_tokens - 1, dtype=np.float64)
    for i in range(new_tokens - 1):
        t = time.perf_counter()
        generator.generate_next_token()
        steps[i] = time.perf_counter() - t
    decode_s = float(steps.sum())
    p50, p95, p99 = np.percentile(steps * 1000, [50, 95, 99])
    del generator, model
    return BatchResult(
        batch_size=sequences,
        seq_len=prompt_tokens,
        iterations=new_tokens,
        load_time_ms=round(load_ms, 3),
        warmup_ms=0.0,
        p50_ms=round(float(p50), 4),
        p95_ms=round(float(p95), 4),
        p99_ms=round(float(p99), 4),
        mean_ms=round(float(steps.mean() * 1000), 4),
        throughput_items_per_s=round(sequences * (new_tokens - 1) / decode_s, 3),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        peak_rss_scope=scope,
        ttft_ms=round(ttft * 1000, 3),
        prompt_tokens_per_s=round(sequences * prompt_tokens / ttft, 1),
    )


def benchmark_generation(artifact: Path, *, backend: str, spec: BenchmarkSpec) -> BackendBenchmark:
    """Measure token generation of the decoder artifact in ``artifact`` on ``backend``."""
    chain = provider_chain(backend)
    version = genai_version()
    record: dict[str, Any] = {
        "backend": backend,
        "provider": chain[0],
        "onnxruntime_version": ort_version(),
        "kind": "generation",
        "runtime": f"onnxruntime-genai {version}" if version else None,
    }
    if version is None:
        return BackendBenchmark(
            status="unavailable", reason="onnxruntime-genai is not installed", **record
        )
    if backend != "cpu":
        return BackendBenchmark(
            status="unavailable",
            reason="generation is benchmarked on the CPU only: ONNX Runtime GenAI cannot "
            f"confirm that {chain[0]} really ran",
            **record,
        )
    if not (artifact / GENAI_CONFIG).is_file():
        raise UserInputError(
            f"{artifact} has no {GENAI_CONFIG}: convert the model again (modelmora install)"
        )
    import json

    vocab = int(json.loads((artifact / GENAI_CONFIG).read_text())["model"]["vocab_size"])
    prompt_tokens, new_tokens, sequences = spec.generation
    rows: list[BatchResult] = []
    for count in sequences:
        try:
            rows.append(_measure(artifact, count, prompt_tokens, new_tokens, vocab))
        except Exception as exc:  # GenAI raises RuntimeError for what it cannot run
            return BackendBenchmark(
                status="failed",
                reason=f"{count} sequences: {type(exc).__name__}: {exc}",
                session_providers=["CPUExecutionProvider"],
                batches=rows,
                **record,
            )
    return BackendBenchmark(
        status="ok", session_providers=["CPUExecutionProvider"], batches=rows, **record
    )
