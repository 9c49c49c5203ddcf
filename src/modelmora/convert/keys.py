"""Content-addressed artifact keys.

An artifact is identified by what went in (input file digests), how it was made (the recipe)
and with which tools (exact versions): change any of them and the key changes, so a cached
artifact is never reused for a different recipe or a different exporter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from modelmora.manifest.model import ConvertSpec

_CORE = ("modelmora", "onnx", "onnxruntime", "onnxruntime-gpu")
_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "transformers": ("torch", "transformers", "optimum", "optimum-onnx", "tokenizers"),
    "torch": ("torch", "onnxscript"),
    "tf-savedmodel": ("tensorflow-cpu", "tensorflow", "tf2onnx"),
    "keras": ("tensorflow-cpu", "tensorflow", "tf2onnx", "keras"),
    "onnx": (),
}


def tool_versions(source_format: str | None = None) -> dict[str, str]:
    """Installed versions of the tools that shape an artifact (read from metadata, no imports).

    With ``source_format`` only the tools that format's conversion uses are listed, so that
    installing TensorFlow does not invalidate every transformers artifact.
    """
    if source_format is None:
        names: tuple[str, ...] = _CORE + tuple(n for v in _BY_FORMAT.values() for n in v)
    else:
        names = _CORE + _BY_FORMAT.get(source_format, ())
    found: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return dict(sorted(found.items()))


def conversion_recipe(
    spec: ConvertSpec, *, source_format: str, task: str | None, variant: str = "base"
) -> dict[str, str | int | bool | None]:
    """The recipe of one artifact: only the settings that change its bytes."""
    recipe: dict[str, str | int | bool | None] = {
        "kind": "onnx",
        "variant": variant,
        "source_format": source_format,
        "task": task,
        "exporter": spec.exporter,
        "opset": spec.opset,
    }
    if variant == "optimized":
        recipe["optimize"] = spec.optimize
    if variant == "int8":
        recipe["quantize"] = spec.quantize
    return recipe


def artifact_key(
    input_digests: Mapping[str, str],
    recipe: Mapping[str, Any],
    tool_versions: Mapping[str, str],
) -> str:
    """sha256 of the canonical JSON of inputs + recipe + tool versions."""
    payload = json.dumps(
        {
            "inputs": dict(input_digests),
            "recipe": dict(recipe),
            "tools": dict(tool_versions),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()
