"""Benchmark ONNX artifacts per execution provider (no torch at import time).

Attributes load on first use. The record schema is :mod:`modelmora.records.benchmark`.
"""

from __future__ import annotations

from modelmora._lazy import lazy_exports

_EXPORTS = {
    "PROVIDERS": "modelmora.backends",
    "availability": "modelmora.bench.core",
    "benchmark": "modelmora.bench.core",
    "benchmark_artifact": "modelmora.bench.dispatch",
    "provider_chain": "modelmora.bench.core",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(_EXPORTS)
