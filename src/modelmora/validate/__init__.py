"""The validation gate: an ONNX artifact must reproduce its reference model's outputs.

No torch at import time: the PyTorch reference is imported only when it runs. Attributes
load on first use. The verdict's schema is :mod:`modelmora.records.validation`.
"""

from __future__ import annotations

from modelmora._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_SENTENCES": "modelmora.validate.core",
    "SENTENCE_EMBEDDING": "modelmora.validate.core",
    "compare": "modelmora.validate.core",
    "validate": "modelmora.validate.core",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(_EXPORTS)
