"""``convert``: one snapshot directory in, one ONNX artifact directory out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from modelmora.convert.detect import detect_format, detect_task, normalize_task, refuse_pickle
from modelmora.convert.job import ExportJob
from modelmora.convert.keys import conversion_recipe
from modelmora.errors import UserInputError
from modelmora.manifest.model import ConvertSpec
from modelmora.records.conversion import ConversionResult, SourceFormat

# Which exporters can handle which source format ("auto" = the first).
_EXPORTERS: dict[SourceFormat, tuple[str, ...]] = {
    "transformers": ("optimum", "torch", "torch-dynamo"),
    "diffusers": ("optimum",),
    "torch": ("torch", "torch-dynamo"),
    "tf-savedmodel": ("tf2onnx",),
    "keras": ("tf2onnx",),
    "onnx": ("onnx",),
}


def resolve_format(model_dir: Path, *, name: str, exporter: str) -> SourceFormat:
    """The source format, honouring ``exporter: onnx`` for repos shipping both."""
    from modelmora.convert.detect import onnx_files

    if exporter == "onnx" and onnx_files(model_dir):
        return "onnx"
    return detect_format(model_dir, name=name)


def resolve_exporter(source_format: SourceFormat, exporter: str, *, name: str) -> str:
    allowed = _EXPORTERS[source_format]
    if exporter == "auto":
        return allowed[0]
    if exporter not in allowed:
        raise UserInputError(
            f"model '{name}': exporter '{exporter}' cannot convert a {source_format} model",
            hint=f"set models.{name}.convert.exporter to auto or one of: {', '.join(allowed)}",
        )
    return exporter


def convert(
    model_dir: Path,
    out_dir: Path,
    *,
    name: str,
    task: str | None,
    spec: ConvertSpec,
    metadata: Mapping[str, str] | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> ConversionResult:
    """Convert the snapshot in ``model_dir`` into ``out_dir`` (``model.onnx`` + companions).

    ``out_dir`` must not exist (or be empty); it appears only once the artifact is complete.
    The result's ``recipe`` equals :func:`~modelmora.convert.keys.conversion_recipe` for the
    same arguments, so callers can compute the artifact key before converting.
    """
    fmt = resolve_format(model_dir, name=name, exporter=spec.exporter)
    exporter = resolve_exporter(fmt, spec.exporter, name=name)
    if fmt == "onnx":
        from modelmora.convert.onnx_source import external_data_files, main_onnx_file

        main = main_onnx_file(model_dir, name=name)
        refuse_pickle(
            model_dir,
            name=name,
            allow_pickle=allow_pickle,
            ignore=external_data_files(main, model_dir),
        )
    else:
        refuse_pickle(model_dir, name=name, allow_pickle=allow_pickle)
    resolved_task = resolve_task(model_dir, fmt, declared=task, metadata=metadata, name=name)
    recipe = conversion_recipe(spec, source_format=fmt, task=resolved_task)

    job = ExportJob(
        model_dir=model_dir,
        out_dir=out_dir,
        name=name,
        source_format=fmt,
        task=resolved_task,
        recipe=recipe,
        opset=spec.opset,
        dynamo=exporter == "torch-dynamo",
        trust_remote_code=trust_remote_code,
    )
    return exporter_function(job, exporter)(job)


def exporter_function(job: ExportJob, exporter: str) -> Callable[[ExportJob], ConversionResult]:
    """Which function exports this job: by source format, then task or exporter. Each is
    imported only when chosen (they pull in torch, optimum or TensorFlow)."""
    fmt = job.source_format
    if fmt == "transformers" and job.task == "zero-shot-image-classification":
        from modelmora.convert.towers import export_dual_encoder

        return export_dual_encoder
    if fmt == "transformers":
        from modelmora.convert.hf import export_optimum, export_torch_hf

        return export_optimum if exporter == "optimum" else export_torch_hf
    if fmt == "diffusers":
        from modelmora.convert.diffusers import export_diffusers

        return export_diffusers
    if fmt == "torch":
        from modelmora.convert.torch_export import export_torch_dir
        from modelmora.convert.torchhub import export_torchhub, is_torchhub

        return export_torchhub if is_torchhub(job.snapshot) else export_torch_dir
    if fmt in ("tf-savedmodel", "keras"):
        from modelmora.convert.tf import export_tf

        return export_tf
    from modelmora.convert.onnx_source import passthrough_onnx

    return passthrough_onnx


def resolve_task(
    model_dir: Path,
    fmt: SourceFormat,
    *,
    declared: str | None,
    metadata: Mapping[str, str] | None,
    name: str,
) -> str | None:
    """transformers models need a task to export; other formats carry it as a label only."""
    if fmt == "transformers":
        return detect_task(model_dir, declared=declared, metadata=metadata, name=name)
    if fmt == "diffusers":
        return normalize_task(declared or "text-to-image")
    if declared:
        return normalize_task(declared)
    tag = (metadata or {}).get("pipeline_tag")
    return normalize_task(tag) if tag else None
