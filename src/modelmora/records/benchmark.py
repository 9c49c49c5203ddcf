"""Benchmark records: one per (artifact, backend); one row per batch size."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

BenchmarkKind = Literal["latency", "generation", "diffusion"]


class BatchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int
    seq_len: int
    iterations: int
    load_time_ms: float
    """Creating the InferenceSession (graph load + provider optimizations)."""
    warmup_ms: float
    """Total time of the untimed warm-up runs."""
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput_items_per_s: float
    peak_rss_mb: float
    peak_rss_scope: Literal["batch", "process"]
    """``batch``: the peak was reset before this batch's session; ``process``: lifetime peak."""
    gpu_memory_mb: float | None = None
    # Text generation rows: ``batch_size`` = concurrent sequences decoded together,
    # ``seq_len`` = prompt tokens, ``iterations`` = new tokens per sequence, ``p50_ms`` etc. =
    # time per decode step, ``throughput_items_per_s`` = generated tokens/s over all sequences.
    ttft_ms: float | None = None
    """Prompt processing up to the first new token (time to first token), all sequences."""
    prompt_tokens_per_s: float | None = None

    def summary(self, kind: BenchmarkKind) -> str:
        """The row as one line (install progress, ``modelmora bench``)."""
        if kind == "generation":
            return (
                f"{self.batch_size} sequences, TTFT {self.ttft_ms or 0:.2f} ms, "
                f"p50 {self.p50_ms:.2f} ms/token, {self.throughput_items_per_s:.1f} tokens/s"
            )
        if kind == "diffusion":
            return f"{self.seq_len} steps, p50 {self.p50_ms / 1000:.3f} s/image"
        return (
            f"batch {self.batch_size}, p50 {self.p50_ms:.2f} ms, p95 {self.p95_ms:.2f} ms, "
            f"{self.throughput_items_per_s:.1f} items/s"
        )


class BackendBenchmark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str
    provider: str
    status: Literal["ok", "unavailable", "failed"]
    """``unavailable``: the backend is not active here (not in this build, or its provider did
    not start); ``failed``: it is, and measuring raised (the reason says what)."""
    reason: str | None = None
    session_providers: list[str] = []
    """What ``session.get_providers()`` reported: the truth about where it ran."""
    onnxruntime_version: str
    threads: int | None = None
    kind: BenchmarkKind = "latency"
    """``generation``: rows measure token generation; ``diffusion``: image generation, one
    row per step count (``seq_len``), ``p50_ms`` per image (see :class:`BatchResult`)."""
    batches: list[BatchResult] = []
    notes: list[str] = []
    """What was measured differently from the spec, and why (a clamped length, the budget)."""

    @property
    def status_line(self) -> str:
        """``ok``, ``unavailable: <reason>`` or ``failed: <reason>``."""
        return self.status if self.status == "ok" else f"{self.status}: {self.reason}"
