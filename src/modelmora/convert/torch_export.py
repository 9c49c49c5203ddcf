"""Plain PyTorch → ONNX with ``torch.onnx.export`` (legacy TorchScript tracer or dynamo).

Two entry points:

* :func:`export_module` takes an ``nn.Module`` already in memory with example inputs and
  the :class:`~modelmora.convert.job.ExportJob` (the transformers, torch.hub and TorchScript
  exporters end in it); :func:`export_torch_module` is the same for a module with no
  snapshot behind it.
* A snapshot directory holding ``modelmora_torch.json`` and a TorchScript archive::

      {"file": "model.pt",
       "inputs": [{"name": "x", "shape": ["batch", 3, 32, 32], "dtype": "float32"}],
       "outputs": ["logits"]}

  String dimensions are dynamic (named axes, example size 2). TorchScript archives are
  pickle-based, so they need ``allow_pickle: true`` in the manifest.

torch is imported lazily: nothing here may be imported by serving code paths.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelmora.convert._files import MODEL_FILE, copy_sidecars, read_descriptor_file, staged
from modelmora.convert.detect import TORCH_DESCRIPTOR
from modelmora.convert.job import ExportJob
from modelmora.convert.keys import conversion_recipe
from modelmora.errors import UserInputError
from modelmora.manifest.model import ConvertSpec
from modelmora.records.conversion import ConversionResult

# Above this many parameter bytes the graph cannot be one protobuf (2 GB limit).
_EXTERNAL_DATA_BYTES = 1_800_000_000


class TorchInputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int | str] = Field(min_length=0)
    dtype: str = "float32"


class TorchDescriptor(BaseModel):
    """Schema of ``modelmora_torch.json``."""

    model_config = ConfigDict(extra="forbid")

    file: str = "model.pt"
    inputs: list[TorchInputSpec] = Field(min_length=1)
    outputs: list[str] = Field(min_length=1)


def read_descriptor(model_dir: Path) -> TorchDescriptor:
    return read_descriptor_file(model_dir / TORCH_DESCRIPTOR, TorchDescriptor, "torch descriptor")


def example_tensors(specs: Sequence[TorchInputSpec], *, seed: int = 0) -> tuple[Any, ...]:
    """Seeded example inputs for a descriptor (dynamic dims = 2)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in specs:
        shape = [d if isinstance(d, int) else 2 for d in spec.shape]
        dtype = getattr(torch, spec.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise UserInputError(f"{TORCH_DESCRIPTOR}: unknown dtype {spec.dtype!r}")
        if dtype.is_floating_point:
            tensors.append(torch.randn(*shape, generator=gen).to(dtype))
        else:
            tensors.append(torch.randint(0, 2, shape, generator=gen).to(dtype))
    return tuple(tensors)


def _dynamic_axes(specs: Sequence[TorchInputSpec]) -> dict[str, dict[int, str]]:
    return {
        s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
        for s in specs
        if any(isinstance(d, str) for d in s.shape)
    }


def torch_onnx_export(
    module: Any,
    example_inputs: tuple[Any, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    dynamo: bool,
    opset: int,
) -> None:
    """Run one ``torch.onnx.export`` into ``path`` (external data beside it when huge)."""
    import torch

    params = getattr(module, "parameters", None)
    size = sum(p.numel() * p.element_size() for p in params()) if callable(params) else 0
    axes = {k: dict(v) for k, v in (dynamic_axes or {}).items()}
    dynamic: dict[str, Any] = {"dynamic_axes": axes or None}
    if dynamo and axes:
        # The dynamo exporter cannot always translate dynamic_axes; give it named Dims,
        # one object per axis name so that equal names are constrained to be equal.
        dims: dict[str, Any] = {}
        shapes: tuple[Any, ...] = tuple(
            {i: dims.setdefault(n, torch.export.Dim(n)) for i, n in axes.get(name, {}).items()}
            or None
            for name in input_names
        )
        params = list(inspect.signature(module.forward).parameters.values())
        if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
            shapes = (shapes,)  # torch.export matches the structure of forward(*inputs)
        dynamic = {"dynamic_shapes": shapes}
    with torch.no_grad():
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            **dynamic,
            opset_version=opset,
            dynamo=dynamo,
            external_data=size > _EXTERNAL_DATA_BYTES,
            do_constant_folding=True,
        )


def export_module(
    module: Any,
    example_inputs: tuple[Any, ...],
    job: ExportJob,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> ConversionResult:
    """Export an in-memory ``nn.Module`` to ``model.onnx`` in the job's ``out_dir``.

    ``job.dynamo`` picks the exporter (recorded as ``torch_exporter``): the legacy
    TorchScript tracer is faster and handles more models today; dynamo is where PyTorch is
    heading.
    """
    module.eval()
    with staged(job.out_dir) as tmp:
        try:
            torch_onnx_export(
                module,
                example_inputs,
                tmp / MODEL_FILE,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                dynamo=job.dynamo,
                opset=job.opset,
            )
        except Exception as exc:
            mode = "dynamo" if job.dynamo else "legacy"
            other = "torch" if job.dynamo else "torch-dynamo"
            raise UserInputError(
                f"model '{job.name}': torch.onnx.export ({mode}) failed: {exc}",
                hint=f"try models.{job.name}.convert.exporter: {other}",
            ) from exc
        if job.model_dir is not None:
            copy_sidecars(job.model_dir, tmp)
    return job.result("torch.onnx", torch_exporter="dynamo" if job.dynamo else "legacy")


def export_torch_module(
    module: Any,
    example_inputs: tuple[Any, ...],
    out_dir: Path,
    *,
    name: str,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    dynamo: bool = False,
    opset: int = 18,
    task: str | None = None,
) -> ConversionResult:
    """Export a module built in memory (no snapshot) to ``out_dir/model.onnx`` and describe
    the result, recorded with the recipe of a plain ``torch`` export."""
    exporter = "torch-dynamo" if dynamo else "torch"
    spec = ConvertSpec(exporter=exporter, opset=opset)
    job = ExportJob(
        model_dir=None,
        out_dir=out_dir,
        name=name,
        source_format="torch",
        task=task,
        recipe=conversion_recipe(spec, source_format="torch", task=task),
        opset=opset,
        dynamo=dynamo,
    )
    return export_module(
        module,
        example_inputs,
        job,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
    )


def load_torchscript(model_dir: Path, descriptor: TorchDescriptor) -> Any:
    import torch

    path = (model_dir / descriptor.file).resolve()
    if not path.is_relative_to(model_dir.resolve()) or not path.is_file():
        raise UserInputError(f"{TORCH_DESCRIPTOR}: file {descriptor.file!r} is not in the snapshot")
    jit: Any = torch.jit
    return jit.load(str(path), map_location="cpu").eval()


def export_torch_dir(job: ExportJob) -> ConversionResult:
    """Export a ``modelmora_torch.json`` snapshot (TorchScript archive)."""
    descriptor = read_descriptor(job.snapshot)
    return export_module(
        load_torchscript(job.snapshot, descriptor),
        example_tensors(descriptor.inputs),
        job,
        input_names=[s.name for s in descriptor.inputs],
        output_names=descriptor.outputs,
        dynamic_axes=_dynamic_axes(descriptor.inputs),
    )
