"""Benchmark records: one per (artifact, backend); one row per batch size."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


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


class BackendBenchmark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str
    provider: str
    status: Literal["ok", "unavailable", "failed"]
    reason: str | None = None
    session_providers: list[str] = []
    """What ``session.get_providers()`` reported: the truth about where it ran."""
    onnxruntime_version: str
    threads: int | None = None
    batches: list[BatchResult] = []

    @property
    def status_line(self) -> str:
        """``ok``, ``unavailable: <reason>`` or ``failed: <reason>``."""
        return self.status if self.status == "ok" else f"{self.status}: {self.reason}"
