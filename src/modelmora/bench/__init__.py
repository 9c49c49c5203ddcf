"""Benchmark ONNX artifacts per execution provider (no torch at import time)."""

from modelmora.bench.core import PROVIDERS, availability, benchmark, provider_chain
from modelmora.bench.report import BackendBenchmark, BatchResult

__all__ = [
    "PROVIDERS",
    "BackendBenchmark",
    "BatchResult",
    "availability",
    "benchmark",
    "provider_chain",
]
