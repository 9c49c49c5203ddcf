"""The validation gate: an ONNX artifact must reproduce its reference model's outputs.

No torch at import time: the PyTorch reference is imported only when it runs.
"""

from modelmora.validate.core import DEFAULT_SENTENCES, SENTENCE_EMBEDDING, compare, validate
from modelmora.validate.report import OutputComparison, ValidationReport

__all__ = [
    "DEFAULT_SENTENCES",
    "SENTENCE_EMBEDDING",
    "OutputComparison",
    "ValidationReport",
    "compare",
    "validate",
]
