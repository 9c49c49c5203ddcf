"""Validation results: what the index stores and Dagster shows as check metadata."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class OutputComparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    max_abs_diff: float
    max_rel_diff: float
    """max |onnx − ref| / max(|ref|, atol): relative error where the reference is not ~0."""
    mismatched_fraction: float
    """Share of elements outside ``atol + rtol·|ref|`` (numpy ``allclose`` semantics)."""
    min_cosine: float | None
    """Smallest cosine similarity over rows (last axis); ``None`` for outputs without rows."""
    passed: bool
    reason: str | None = None


class ValidationReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool
    summary: str
    """One line naming the failing output and its numbers (or the worst numbers on success)."""
    checker_ok: bool
    checker_error: str | None = None
    reference: Literal["transformers", "torch", "tf-savedmodel", "keras", "onnx"]
    inputs: Literal["tokenizer", "seeded"]
    input_shapes: dict[str, list[int]]
    quantized: bool
    atol: float
    rtol: float
    min_cosine: float
    outputs: list[OutputComparison]
    wall_time_s: float
