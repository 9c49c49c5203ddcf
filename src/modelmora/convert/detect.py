"""What a snapshot is (its format) and what it is for (its export task).

The task is never guessed from the model's name: it comes from the manifest, else from the
registry's ``pipeline_tag``, else from ``config.json`` ``architectures``; anything else is an
error that says which manifest field to set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from modelmora import tasks
from modelmora.errors import UserInputError
from modelmora.names import TORCHHUB_DESCRIPTOR
from modelmora.records.conversion import SourceFormat

TORCH_DESCRIPTOR = "modelmora_torch.json"
"""Marks a directory as a plain PyTorch model; see :mod:`modelmora.convert.torch_export`.
(``names.TORCHHUB_DESCRIPTOR``, written by the ``torchhub://`` source, is format ``torch``
too; see :mod:`modelmora.convert.torchhub`.)"""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")

_TRANSFORMERS_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

TASK_HINT = "e.g. feature-extraction, text-classification, token-classification, fill-mask"


def _label(name: str | None) -> str:
    return f"model '{name}'" if name else "the model"


def _field(name: str | None, field: str) -> str:
    return f"models.{name or '<name>'}.{field}"


def normalize_task(task: str) -> str:
    """Map registry/pipeline synonyms onto the exporter's task names (``modelmora.tasks``)."""
    return tasks.normalize(task)


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def detect_task(
    model_dir: Path,
    *,
    declared: str | None,
    metadata: Mapping[str, str] | None = None,
    name: str | None = None,
) -> str:
    """The export task: declared > registry ``pipeline_tag`` > ``config.json`` architectures."""
    if declared:
        return normalize_task(declared)
    tag = (metadata or {}).get("pipeline_tag")
    if tag:
        return normalize_task(tag)
    config = read_config(model_dir)
    architectures = config.get("architectures") or []
    if isinstance(architectures, list) and architectures:
        task = tasks.task_from_architectures(str(a) for a in architectures)
        if task:
            return task
        raise UserInputError(
            f"cannot tell the export task of {_label(name)} from its architecture "
            f"{', '.join(map(str, architectures))}",
            hint=f"set {_field(name, 'task')} ({TASK_HINT})",
        )
    if (model_dir / "modules.json").is_file():
        return "feature-extraction"  # a sentence-transformers model: embeddings
    raise UserInputError(
        f"cannot tell the export task of {_label(name)}: no task in the manifest, no "
        "pipeline_tag from the registry and no architectures in config.json",
        hint=f"set {_field(name, 'task')} ({TASK_HINT})",
    )


def onnx_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*.onnx") if p.is_file())


def detect_format(model_dir: Path, *, name: str | None = None) -> SourceFormat:
    """Which converter applies to a snapshot directory.

    A transformers checkpoint wins over ONNX files shipped beside it (exporting ourselves is
    the reproducible path); set ``convert.exporter: onnx`` to use the shipped graph instead.
    """
    if not model_dir.is_dir():
        raise UserInputError(f"{_label(name)}: {model_dir} is not a directory")
    if (model_dir / "model_index.json").is_file():
        return "diffusers"  # a diffusers pipeline: one directory per component
    config = read_config(model_dir)
    has_weights = any((model_dir / f).is_file() for f in _TRANSFORMERS_WEIGHTS) or any(
        model_dir.glob("model-*.safetensors")
    )
    if config and has_weights:
        return "transformers"
    if (model_dir / TORCH_DESCRIPTOR).is_file() or (model_dir / TORCHHUB_DESCRIPTOR).is_file():
        return "torch"
    if (model_dir / "saved_model.pb").is_file():
        return "tf-savedmodel"
    if any(model_dir.glob("*.keras")):
        return "keras"
    if onnx_files(model_dir):
        return "onnx"
    found = sorted(p.name for p in model_dir.iterdir())[:12]
    detail = (
        "a config.json without PyTorch weights (model.safetensors)"
        if config
        else f"files: {', '.join(found) or 'none'}"
    )
    raise UserInputError(
        f"{_label(name)}: no convertible model in the snapshot ({detail})",
        hint="expected a transformers checkpoint (config.json + model.safetensors), an .onnx "
        f"file, a TF SavedModel, a .keras file or a {TORCH_DESCRIPTOR} descriptor; "
        f"adjust {_field(name, 'files')} if the lock left files out",
    )


def pickle_files(model_dir: Path, *, ignore: Iterable[Path] = ()) -> list[Path]:
    skip = {p.resolve() for p in ignore}
    return sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES and p.resolve() not in skip
    )


def refuse_pickle(
    model_dir: Path, *, name: str | None, allow_pickle: bool, ignore: Iterable[Path] = ()
) -> None:
    """Loading a pickle runs arbitrary code: refuse unless the manifest opted in."""
    if allow_pickle:
        return
    found = pickle_files(model_dir, ignore=ignore)
    if found:
        rel = ", ".join(p.relative_to(model_dir).as_posix() for p in found[:5])
        raise UserInputError(
            f"{_label(name)} contains pickle-based files ({rel}); loading them can run "
            "arbitrary code",
            hint=f"exclude them with {_field(name, 'files')}.exclude if safetensors weights "
            f"exist, or set {_field(name, 'allow_pickle')}: true if you trust the source",
        )
