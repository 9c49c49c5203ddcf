"""Benchmark ONNX artifacts per execution provider (no torch at import time).

Attributes load on first use, so importing ``modelmora.bench.report`` (the record schema,
needed by the index) does not pay for numpy and the measuring code.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PROVIDERS": "modelmora.backends",
    "BackendBenchmark": "modelmora.bench.report",
    "BatchResult": "modelmora.bench.report",
    "availability": "modelmora.bench.core",
    "benchmark": "modelmora.bench.core",
    "provider_chain": "modelmora.bench.core",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
