"""Token generation speed of a decoder artifact on one execution provider.

The same runtime serving uses (``modelmora.decoding``: an ONNX Runtime session and our own
KV-cache loop; docs/architecture.md says why it was chosen over ONNX Runtime GenAI). Per
number of concurrent sequences (decoded together as one batch): session load time, time to
first token (prompt processing), prompt tokens/s, aggregate decode tokens/s, time per
decode step (p50/p95/p99) and peak RSS. Prompts are seeded token ids of a fixed length;
every run generates a fixed number of tokens (no stop id), so runs do the same work. As for
every benchmark, a provider that is not really active (``session.get_providers()``) is
recorded as unavailable, never measured.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelmora.bench.core import latency_row, measure_each, open_session, prepare
from modelmora.decoding import Decoder
from modelmora.manifest.model import BenchmarkSpec
from modelmora.records.benchmark import BackendBenchmark, BatchResult
from modelmora.validate.inputs import vocab_size

__all__ = ["benchmark_generation"]


def _measure(
    model: Path, chain: tuple[str, ...], sequences: int, prompt_tokens: int, new_tokens: int
) -> tuple[BatchResult | None, list[str], str | None]:
    scope, session, load_ms, active, problem = open_session(model, chain, None)
    if problem is not None:
        return None, active, problem
    decoder = Decoder(session)
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, vocab_size(model.parent) or 2, size=(sequences, prompt_tokens))
    decoder.greedy_batch(prompts, 2)  # warm-up: first-call allocations and kernels
    run = decoder.greedy_batch(prompts, new_tokens)
    result = latency_row(
        run.step_s * 1000,
        batch_size=sequences,
        seq_len=prompt_tokens,
        load_ms=load_ms,
        warmup_ms=0.0,
        items_per_run=sequences,
        scope=scope,
        iterations=new_tokens,
        ttft_ms=round(run.prompt_s * 1000, 3),
        prompt_tokens_per_s=round(sequences * prompt_tokens / run.prompt_s, 1),
    )
    return result, active, None


def benchmark_generation(
    artifact: Path,
    *,
    backend: str,
    spec: BenchmarkSpec,
    on_row: Callable[[BatchResult], None] | None = None,
) -> BackendBenchmark:
    """Measure token generation of the decoder artifact in ``artifact`` on ``backend``."""
    model, chain, record, unavailable = prepare(artifact, backend, kind="generation")
    if unavailable is not None:
        return unavailable
    prompt_tokens, new_tokens, sequences = spec.generation
    return measure_each(
        sequences,
        lambda count: _measure(model, chain, count, prompt_tokens, new_tokens),
        record,
        label="sequences",
        on_row=on_row,
    )
