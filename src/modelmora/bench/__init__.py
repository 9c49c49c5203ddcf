"""Benchmark ONNX artifacts per execution provider (no torch at import time)."""

from modelmora.backends import PROVIDERS
from modelmora.bench.core import availability, benchmark, provider_chain
from modelmora.bench.report import BackendBenchmark, BatchResult

__all__ = [
    "PROVIDERS",
    "BackendBenchmark",
    "BatchResult",
    "availability",
    "benchmark",
    "provider_chain",
]
