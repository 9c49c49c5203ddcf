"""What a conversion produced, in a form the index (DuckDB) and Dagster metadata can hold.

Paths inside a result are relative to the artifact directory: the store moves artifacts, so
an absolute path would go stale.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

EXPORTER_PACKAGES = {
    "optimum": "optimum-onnx",
    "torch.onnx": "torch",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
}
"""Each exporter's Python distribution: where its recorded version comes from."""

SourceFormat = Literal["transformers", "diffusers", "onnx", "torch", "tf-savedmodel", "keras"]
Variant = Literal["base", "optimized", "int8", "int4"]


class TensorInfo(BaseModel):
    """One graph input or output: symbolic dimensions stay names (``batch_size``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    shape: list[int | str]
    dtype: str


class ArtifactFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int
    sha256: str


class ConversionResult(BaseModel):
    """One ONNX artifact: the base export or one of its variants."""

    model_config = ConfigDict(extra="forbid")

    name: str
    variant: Variant = "base"
    source_format: SourceFormat
    task: str | None
    exporter: str
    """``optimum``, ``torch.onnx``, ``tf2onnx``, ``onnx`` (pass-through), ``onnxruntime``."""
    exporter_version: str
    """The version of the package that exported (for ``optimum``: of ``optimum-onnx``)."""
    torch_exporter: Literal["dynamo", "legacy"] | None = None
    """Which ``torch.onnx.export`` path produced the graph, when torch did."""
    opset: int
    model_file: str = "model.onnx"
    sha256: str
    """sha256 of ``model_file``."""

    external_data: bool = False
    files: list[ArtifactFile]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    wall_time_s: float
    recipe: dict[str, str | int | bool | None]
    """What was asked for (format, task, exporter, opset, variant…); part of the artifact key."""
    components: dict[str, str] = {}
    """Artifacts of several graphs (an image-text model's towers, a diffusion pipeline):
    role → graph file. ``model_file`` is one of them; ``inputs``/``outputs`` are its own."""
    base_sha256: str | None = None
    """For variants: sha256 of the base ``model.onnx`` this variant was derived from."""

    @property
    def exporter_label(self) -> str:
        """``PACKAGE VERSION`` of the exporter, as a person reads it."""
        return f"{EXPORTER_PACKAGES.get(self.exporter, self.exporter)} {self.exporter_version}"
