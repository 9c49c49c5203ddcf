"""Snapshot → ONNX artifacts: format/task detection, export, variants, artifact keys.

Heavy libraries (torch, transformers, optimum, TensorFlow) are imported only inside the
functions that need them; importing this package is cheap. What a conversion produced is
recorded as :class:`modelmora.records.conversion.ConversionResult`.
"""

from modelmora.convert.api import convert
from modelmora.convert.detect import detect_format, detect_task, normalize_task
from modelmora.convert.keys import artifact_key, conversion_recipe, tool_versions
from modelmora.convert.torch_export import export_torch_module
from modelmora.convert.variants import make_variant, make_variants, planned_variants

__all__ = [
    "artifact_key",
    "conversion_recipe",
    "convert",
    "detect_format",
    "detect_task",
    "export_torch_module",
    "make_variant",
    "make_variants",
    "normalize_task",
    "planned_variants",
    "tool_versions",
]
