"""diffusers text-to-image pipelines (Stable Diffusion 1.x/2.x style) → three ONNX graphs.

optimum-onnx exports the pipeline's components (``library_name="diffusers"``); the artifact
keeps what generation needs — ``text_encoder``, ``unet`` and ``vae_decoder`` graphs, the
tokenizer (with a ``tokenizer.json`` written from the slow tokenizer when the checkpoint has
none, so serving needs only ``tokenizers``) and the scheduler configuration — and is run by
:mod:`modelmora.diffusion`. The checkpoint's scheduler must be one that module implements;
anything else is refused before exporting, naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from modelmora.convert._files import staged
from modelmora.convert.hf import import_transformers
from modelmora.convert.job import ExportJob
from modelmora.diffusion import COMPONENTS, DiffusionConfig, DiffusionError
from modelmora.errors import UserInputError
from modelmora.records.conversion import ConversionResult

MODEL_INDEX = "model_index.json"
PIPELINES = ("StableDiffusionPipeline",)
"""Pipelines with one CLIP text encoder, a UNet and a VAE (SDXL's two encoders are not)."""
_DROPPED = ("vae_encoder",)
"""Exported by optimum for image-to-image; text-to-image never runs it."""


def pipeline_class(model_dir: Path) -> str | None:
    try:
        data = json.loads((model_dir / MODEL_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = data.get("_class_name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def export_diffusers(job: ExportJob) -> ConversionResult:
    model_dir, name, task = job.snapshot, job.name, job.known_task
    kind = pipeline_class(model_dir)
    if kind not in PIPELINES:
        raise UserInputError(
            f"model '{name}': diffusers pipeline {kind or '(unknown)'} is not supported; "
            f"supported: {', '.join(PIPELINES)}"
        )
    if task != "text-to-image":
        raise UserInputError(
            f"model '{name}' is a {kind}: its task is text-to-image, not {task}",
            hint=f"set models.{name}.task: text-to-image (or leave it out)",
        )
    import_transformers()
    import diffusers
    from optimum.exporters.onnx import main_export

    diffusers.utils.logging.disable_progress_bar()  # "Loading pipeline components" bars

    with staged(job.out_dir) as tmp:
        try:
            main_export(
                str(model_dir),
                output=tmp,
                task="text-to-image",
                opset=job.opset,
                device="cpu",
                library_name="diffusers",
                do_validation=False,
                local_files_only=True,
            )
        except Exception as exc:
            raise UserInputError(
                f"model '{name}': optimum export of the pipeline failed: {exc}"
            ) from exc
        for dropped in _DROPPED:
            shutil.rmtree(tmp / dropped, ignore_errors=True)
        _ensure_fast_tokenizer(tmp / "tokenizer")
        try:
            DiffusionConfig.read(tmp)
        except DiffusionError as exc:
            raise UserInputError(f"model '{name}': {exc}") from None
    components = {c: f"{c}/model.onnx" for c in COMPONENTS}
    return job.result("optimum", components=components, model_file=components["unet"])


def _ensure_fast_tokenizer(directory: Path) -> None:
    """Write ``tokenizer.json`` (the fast tokenizer) when the pipeline ships only a slow one."""
    if (directory / "tokenizer.json").is_file():
        return
    tokenizer: Any = import_transformers().AutoTokenizer.from_pretrained(
        str(directory), local_files_only=True, use_fast=True
    )
    tokenizer.save_pretrained(str(directory))
    if not (directory / "tokenizer.json").is_file():
        raise UserInputError(f"{directory}: no fast tokenizer could be made from the slow one")
