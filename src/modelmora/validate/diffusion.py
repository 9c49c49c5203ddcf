"""The validation gate for text-to-image pipelines: the ONNX pipeline against diffusers'.

Fixed prompts are generated at the pipeline's native size with the same initial noise and
step count by :mod:`modelmora.diffusion` (the three ONNX graphs and our numpy scheduler) and
by the diffusers PyTorch pipeline of the snapshot. The final latents must keep cosine ≥
``min_cosine`` and every decoded image must reach ``min_psnr_db`` against diffusers'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.diffusion import DiffusionConfig, generate, open_sessions
from modelmora.manifest.model import ValidateSpec
from modelmora.records.validation import OutputComparison

__all__ = ["PROMPTS", "DiffusionVerdict", "check_diffusion"]

PROMPTS = ("a red bicycle leaning on a stone wall", "a lighthouse at night")
GUIDANCE = 7.5
"""diffusers' default guidance scale, also :func:`modelmora.diffusion.generate`'s."""


@dataclass(frozen=True)
class DiffusionVerdict:
    outputs: list[OutputComparison]
    psnr_db: float


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of images in [0, 1] (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(1.0 / mse))


def _pipeline(snapshot: Path) -> Any:
    import importlib

    diffusers: Any = importlib.import_module("diffusers")  # untyped to mypy (decorators)
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(snapshot), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    diffusers.utils.logging.disable_progress_bar()  # "Loading pipeline components" bars
    return pipe


def _reference(pipe: Any, prompt: str, noise: np.ndarray, steps: int, size: int) -> Any:
    import torch

    final: dict[str, Any] = {}

    def keep(_pipe: Any, _i: int, _t: Any, values: dict[str, Any]) -> dict[str, Any]:
        final["latents"] = values["latents"].detach().numpy().copy()
        return values

    with torch.no_grad():
        images = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            height=size,
            width=size,
            latents=torch.from_numpy(noise),
            output_type="np",
            callback_on_step_end=keep,
        ).images
    return final["latents"], np.asarray(images, dtype=np.float32)


def check_diffusion(snapshot: Path, artifact: Path, *, spec: ValidateSpec) -> DiffusionVerdict:
    config = DiffusionConfig.read(artifact)
    sessions = open_sessions(artifact, ["CPUExecutionProvider"])
    steps, size = spec.diffusion_steps, config.native_size
    side = size // config.vae_scale
    rng = np.random.default_rng(0)
    pipe = _pipeline(snapshot)
    outputs, worst = [], float("inf")
    for i, prompt in enumerate(PROMPTS):
        noise = rng.standard_normal((1, config.latent_channels, side, side)).astype(np.float32)
        latents, images = generate(
            artifact, sessions, prompt, noise, steps=steps, guidance=GUIDANCE
        )
        ref_latents, ref_images = _reference(pipe, prompt, noise, steps, size)
        outputs.append(_latents(f"latents[{i}]", latents, ref_latents, spec))
        quality = psnr(images, ref_images)
        worst = min(worst, quality)
        outputs.append(_image(f"image[{i}]", images, ref_images, quality, spec))
    return DiffusionVerdict(outputs, worst)


def _latents(
    name: str, actual: np.ndarray, expected: np.ndarray, spec: ValidateSpec
) -> OutputComparison:
    a, b = actual.reshape(-1).astype(np.float64), expected.reshape(-1).astype(np.float64)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b) / max(norms, 1e-24)
    diff = np.abs(a - b)
    ok = bool(np.isfinite(a).all()) and cosine >= spec.min_cosine
    return OutputComparison(
        name=name,
        shape=list(actual.shape),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float((diff / np.maximum(np.abs(b), spec.atol)).max()),
        mismatched_fraction=float((diff > spec.atol + spec.rtol * np.abs(b)).mean()),
        min_cosine=cosine,
        passed=ok,
        reason=None if ok else f"cosine {cosine:.6f} < min_cosine {spec.min_cosine}",
    )


def _image(
    name: str, actual: np.ndarray, expected: np.ndarray, quality: float, spec: ValidateSpec
) -> OutputComparison:
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    ok = quality >= spec.psnr_limit
    return OutputComparison(
        name=name,
        shape=list(actual.shape),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float(diff.max()),
        mismatched_fraction=float((diff > 1 / 255).mean()),
        min_cosine=None,
        passed=ok,
        reason=None if ok else f"PSNR {quality:.1f} dB < min_psnr_db {spec.psnr_limit:g}",
    )
