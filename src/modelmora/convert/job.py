"""One conversion as every exporter receives it, and how its finished artifact is described.

The exporters (optimum, ``torch.onnx``, the dual-encoder towers, diffusers pipelines,
torch.hub, tf2onnx, ONNX passthrough) differ in how they make graphs, not in what they are
told: ``convert.api`` picks one by format and calls it with an :class:`ExportJob`, and each
describes its staged artifact with :meth:`ExportJob.result`, naming only what is its own —
the exporter, and the graphs when there are several.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from modelmora.convert._files import MODEL_FILE, describe, list_files
from modelmora.errors import UserInputError
from modelmora.fsutil import sha256_file
from modelmora.records.conversion import EXPORTER_PACKAGES, ConversionResult, SourceFormat

__all__ = ["ExportJob", "Recipe"]

Recipe = Mapping[str, str | int | bool | None]
"""The settings that change an artifact's bytes (``convert.keys.conversion_recipe``)."""


@dataclass(frozen=True)
class ExportJob:
    model_dir: Path | None
    """The snapshot; None for a module built in memory (nothing to copy beside the graph)."""
    out_dir: Path
    name: str
    source_format: SourceFormat
    task: str | None
    recipe: Recipe
    opset: int = 18
    dynamo: bool = False
    """``torch.onnx``'s dynamo exporter instead of the TorchScript tracer."""
    trust_remote_code: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def snapshot(self) -> Path:
        if self.model_dir is None:
            raise ValueError(f"model '{self.name}': this exporter needs a snapshot directory")
        return self.model_dir

    @property
    def known_task(self) -> str:
        """The task, for exporters that cannot work without one."""
        if self.task is None:
            raise UserInputError(
                f"model '{self.name}': no task could be determined for a "
                f"{self.source_format} model",
                hint=f"set models.{self.name}.task",
            )
        return self.task

    def result(
        self,
        exporter: str,
        *,
        torch_exporter: str | None = None,
        components: Mapping[str, str] | None = None,
        model_file: str = MODEL_FILE,
    ) -> ConversionResult:
        """Describe the finished ``out_dir`` (``model_file`` + companions; for several graphs,
        ``components`` names each by its role). The exporter's version is its package's
        (``records.conversion.EXPORTER_PACKAGES``)."""
        model = self.out_dir / model_file
        opset, inputs, outputs, external = describe(model)
        return ConversionResult.model_validate(
            {
                "name": self.name,
                "variant": self.recipe.get("variant", "base"),
                "source_format": self.source_format,
                "task": self.task,
                "exporter": exporter,
                "exporter_version": metadata.version(EXPORTER_PACKAGES[exporter]),
                "torch_exporter": torch_exporter,
                "opset": opset,
                "model_file": model_file,
                "components": dict(components or {}),
                "sha256": sha256_file(model),
                "external_data": bool(external),
                "files": list_files(self.out_dir),
                "inputs": inputs,
                "outputs": outputs,
                "wall_time_s": round(time.perf_counter() - self.started, 3),
                "recipe": dict(self.recipe),
            }
        )
