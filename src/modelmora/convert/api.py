"""``convert``: one snapshot directory in, one ONNX artifact directory out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from modelmora.convert.detect import detect_format, detect_task, normalize_task, refuse_pickle
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

    if fmt == "transformers":
        from modelmora.convert import hf

        assert resolved_task is not None
        if resolved_task == "zero-shot-image-classification" or exporter == "optimum":
            from modelmora.convert.towers import export_dual_encoder

            towers = resolved_task == "zero-shot-image-classification"
            return (export_dual_encoder if towers else hf.export_optimum)(
                model_dir,
                out_dir,
                name=name,
                task=resolved_task,
                opset=spec.opset,
                trust_remote_code=trust_remote_code,
                recipe=recipe,
            )
        return hf.export_torch_hf(
            model_dir,
            out_dir,
            name=name,
            task=resolved_task,
            opset=spec.opset,
            dynamo=exporter == "torch-dynamo",
            trust_remote_code=trust_remote_code,
            recipe=recipe,
        )
    if fmt == "diffusers":
        from modelmora.convert.diffusers import export_diffusers

        assert resolved_task is not None
        return export_diffusers(
            model_dir, out_dir, name=name, task=resolved_task, opset=spec.opset, recipe=recipe
        )
    if fmt == "torch":
        from modelmora.convert.torch_export import export_torch_dir
        from modelmora.convert.torchhub import export_torchhub, is_torchhub

        if is_torchhub(model_dir):
            return export_torchhub(
                model_dir,
                out_dir,
                name=name,
                task=resolved_task,
                dynamo=exporter == "torch-dynamo",
                opset=spec.opset,
                trust_remote_code=trust_remote_code,
                recipe=recipe,
            )

        return export_torch_dir(
            model_dir,
            out_dir,
            name=name,
            task=resolved_task,
            dynamo=exporter == "torch-dynamo",
            opset=spec.opset,
            recipe=recipe,
        )
    if fmt in ("tf-savedmodel", "keras"):
        from modelmora.convert.tf import export_tf

        return export_tf(
            model_dir,
            out_dir,
            name=name,
            source_format=fmt,
            task=resolved_task,
            opset=spec.opset,
            recipe=recipe,
        )
    from modelmora.convert.onnx_source import passthrough_onnx

    return passthrough_onnx(model_dir, out_dir, name=name, task=resolved_task, recipe=recipe)


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
