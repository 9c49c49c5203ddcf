"""Content-addressed artifact keys.

An artifact is identified by what went in (input file digests), how it was made (the recipe)
and with which tools (exact versions): change any of them and the key changes, so a cached
artifact is never reused for a different recipe or a different exporter.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modelmora.manifest.model import ConvertSpec
from modelmora.tools import tool_versions

__all__ = ["QUANTIZED_VARIANTS", "artifact_key", "conversion_recipe", "tool_versions"]

QUANTIZED_VARIANTS = ("int8", "int4")
"""Variants judged by the quantized (looser) validation gate."""


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
    if variant in QUANTIZED_VARIANTS:
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
