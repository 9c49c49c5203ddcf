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


class PromptCheck(BaseModel):
    """Greedy decoding of one fixed prompt: ONNX against the PyTorch reference."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    onnx_ids: list[int]
    reference_ids: list[int]
    first_mismatch: int | None = None
    """Index of the first new token where the ids differ (``None``: identical)."""


class ValidationReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool
    summary: str
    """One line naming the failing output and its numbers (or the worst numbers on success)."""
    checker_ok: bool
    checker_error: str | None = None
    reference: Literal["transformers", "diffusers", "torch", "tf-savedmodel", "keras", "onnx"]
    inputs: Literal["tokenizer", "seeded", "images"]
    """``images``: fixed test images through the artifact's preprocessing (and, for the
    reference, through transformers' image processor; their difference is the
    ``preprocessing`` output)."""
    input_shapes: dict[str, list[int]]
    quantized: bool
    atol: float
    rtol: float
    min_cosine: float
    outputs: list[OutputComparison]
    wall_time_s: float
    generation: list[PromptCheck] | None = None
    """Text generation: one greedy run per fixed prompt."""
    top1_agreement: float | None = None
    """Quantized decoders: teacher-forced top-1 agreement with the reference; image
    classifiers: the share of test images whose top-1 class matches."""
    psnr_db: float | None = None
    """Text-to-image: the lowest PSNR of the generated images against the reference's."""
    perplexity_ratio: float | None = None
    """Quantized decoders: perplexity on a fixed text over the reference's."""
