"""torch.hub snapshots (``torchhub://`` sources) → ONNX through plain ``torch.onnx.export``.

The snapshot is the repository tree at the locked commit plus ``modelmora_torchhub.json``
(written by the source) naming the entry. Loading it runs ``hubconf.py``, i.e. code from the
repository, so every function here refuses unless the manifest set ``trust_remote_code``.

Convention, because ``torch.onnx.export`` needs example inputs and torch.hub has no way to
declare them: ``hubconf.py`` defines, next to ``ENTRY(**kwargs) -> nn.Module``, a function
``ENTRY_example_inputs()`` returning a ``dict`` of name → tensor (ordered like ``forward``'s
positional arguments; the names become the ONNX input names) or a tuple of tensors (named
``input_0``, ``input_1``…). Dimension 0 of every input is the dynamic ``batch`` axis. Outputs
are named ``output`` (one tensor) or ``output_0``, ``output_1``… (a tuple).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from modelmora.convert._files import read_descriptor_file
from modelmora.convert.job import ExportJob
from modelmora.convert.torch_export import export_module
from modelmora.errors import ModelMoraError, UserInputError
from modelmora.names import TORCHHUB_DESCRIPTOR
from modelmora.records.conversion import ConversionResult

EXAMPLE_SUFFIX = "_example_inputs"


class TorchHubDescriptor(BaseModel):
    """Schema of ``modelmora_torchhub.json``."""

    model_config = ConfigDict(extra="forbid")

    entry: str
    repo: str
    commit: str
    format: Literal[1] = 1


def is_torchhub(model_dir: Path) -> bool:
    return (model_dir / TORCHHUB_DESCRIPTOR).is_file()


def read_hub_descriptor(model_dir: Path) -> TorchHubDescriptor:
    path = model_dir / TORCHHUB_DESCRIPTOR
    return read_descriptor_file(path, TorchHubDescriptor, "torchhub descriptor")


@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    """Importing hubconf.py must not write ``__pycache__`` into a store snapshot."""
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = previous


def _hub_call(model_dir: Path, function: str, *, name: str) -> Any:
    import torch

    try:
        with _no_bytecode():
            hub: Any = torch.hub  # torch.hub.load is untyped
            return hub.load(str(model_dir), function, source="local", verbose=False)
    except Exception as exc:
        if isinstance(exc, RuntimeError) and f"Cannot find callable {function}" in str(exc):
            raise UserInputError(
                f"model '{name}': hubconf.py defines no callable {function!r}",
                hint=f"define {function}() in hubconf.py (see docs/sources.md, torchhub://)",
            ) from exc
        raise UserInputError(f"model '{name}': hubconf.py {function}() failed: {exc}") from exc


def load_entry(
    model_dir: Path, *, name: str, trust_remote_code: bool
) -> tuple[Any, dict[str, Any]]:
    """``(module in eval mode, ordered example inputs)`` of the snapshot's entry."""
    import torch

    if not trust_remote_code:
        raise UserInputError(
            f"model '{name}': loading a torch.hub model runs the repository's hubconf.py",
            hint=f"set models.{name}.trust_remote_code: true if you trust the repository",
        )
    entry = read_hub_descriptor(model_dir).entry
    module = _hub_call(model_dir, entry, name=name)
    if not isinstance(module, torch.nn.Module):
        raise UserInputError(
            f"model '{name}': hubconf.py {entry}() returned {type(module).__name__}, "
            "not a torch.nn.Module"
        )
    examples = _hub_call(model_dir, entry + EXAMPLE_SUFFIX, name=name)
    if isinstance(examples, torch.Tensor):
        examples = (examples,)
    if isinstance(examples, tuple | list):
        examples = {f"input_{i}": t for i, t in enumerate(examples)}
    if (
        not isinstance(examples, dict)
        or not examples
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in examples.items())
    ):
        raise UserInputError(
            f"model '{name}': {entry}{EXAMPLE_SUFFIX}() must return a non-empty dict of "
            "name → tensor (or a tuple of tensors)"
        )
    return module.eval(), dict(examples)


def _outputs(value: Any, *, name: str) -> tuple[Any, ...]:
    import torch

    values = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not values or not all(isinstance(v, torch.Tensor) for v in values):
        raise UserInputError(
            f"model '{name}': forward() must return a tensor or a tuple of tensors to be "
            f"exported, got {type(value).__name__}"
        )
    return values


def output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def export_torchhub(job: ExportJob) -> ConversionResult:
    """Load the entry, run it once on its example inputs, export with a dynamic batch axis."""
    import torch

    module, inputs = load_entry(
        job.snapshot, name=job.name, trust_remote_code=job.trust_remote_code
    )
    tensors = tuple(inputs.values())
    with torch.no_grad():
        outputs = _outputs(module(*tensors), name=job.name)
    names = output_names(len(outputs))
    batch = tensors[0].shape[0] if tensors[0].ndim else None
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n, t in inputs.items() if t.ndim}
    axes.update(
        {
            n: {0: "batch"}
            for n, t in zip(names, outputs, strict=True)
            if t.ndim and t.shape[0] == batch
        }
    )
    return export_module(
        module, tensors, job, input_names=list(inputs), output_names=names, dynamic_axes=axes
    )


def run_reference(
    model_dir: Path, feeds: Mapping[str, np.ndarray], *, trust_remote_code: bool
) -> dict[str, np.ndarray]:
    """The entry's eager PyTorch outputs on the validation inputs (the gate's reference)."""
    import torch

    name = model_dir.name
    module, inputs = load_entry(model_dir, name=name, trust_remote_code=trust_remote_code)
    missing = [n for n in inputs if n not in feeds]
    if missing:
        raise ModelMoraError(
            f"model '{name}': the ONNX graph lacks input(s) {', '.join(missing)} that "
            "hubconf.py's example inputs declare"
        )
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in inputs]
    with torch.no_grad():
        outputs = _outputs(module(*args), name=name)
    return {
        n: v.detach().cpu().numpy()
        for n, v in zip(output_names(len(outputs)), outputs, strict=True)
    }
