"""PyTorch reference runs for validation (imported only when a torch reference is needed)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def run_transformers(
    model_dir: Path, task: str, feeds: Mapping[str, np.ndarray], *, trust_remote_code: bool = False
) -> dict[str, np.ndarray]:
    """The task's PyTorch model (as optimum would load it) on the same inputs, eval mode.

    ``trust_remote_code`` is the manifest's flag: a model that needs its own modelling code
    can only be validated when the manifest allowed running it for the export too."""
    import torch

    from modelmora.convert.hf import load_task_model

    model = load_task_model(model_dir, task=task, trust_remote_code=trust_remote_code)
    params = inspect.signature(model.forward).parameters
    kwargs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items() if k in params}
    with torch.no_grad():
        out = model(**kwargs, return_dict=True)
    return {k: v.detach().cpu().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}


def transformers_pixel_values(model_dir: Path, images: list[Any]) -> np.ndarray:
    """What transformers' own image processor for the checkpoint makes of ``images``."""
    from modelmora.convert.hf import import_transformers

    processor = import_transformers().AutoImageProcessor.from_pretrained(
        str(model_dir), local_files_only=True, use_fast=False
    )
    return np.asarray(processor(images, return_tensors="np")["pixel_values"], dtype=np.float32)


def run_torchscript(model_dir: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    from modelmora.convert.torch_export import load_torchscript, read_descriptor

    descriptor = read_descriptor(model_dir)
    module: Any = load_torchscript(model_dir, descriptor)
    args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in descriptor.inputs]
    with torch.no_grad():
        out = module(*args)
    values = out if isinstance(out, list | tuple) else (out,)
    return {
        name: value.detach().cpu().numpy()
        for name, value in zip(descriptor.outputs, values, strict=False)
    }
