"""ONNX snapshots pass through unchanged: the graph and its external data, nothing else.

External data is resolved against the snapshot and refused when it points outside it
(an ``.onnx`` file could otherwise make us read ``/etc/shadow`` into an artifact).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modelmora.convert._files import (
    MODEL_FILE,
    checked_external_paths,
    copy_sidecars,
    describe,
    onnx_graphs,
    staged,
)
from modelmora.convert.job import ExportJob
from modelmora.errors import UserInputError
from modelmora.records.conversion import ConversionResult


def main_onnx_file(model_dir: Path, *, name: str) -> Path:
    """``model.onnx``, else ``onnx/model.onnx``, else the only ``.onnx`` file."""
    for candidate in (model_dir / MODEL_FILE, model_dir / "onnx" / MODEL_FILE):
        if candidate.is_file():
            return candidate
    graphs = onnx_graphs(model_dir)
    if len(graphs) == 1:
        return graphs[0]
    listed = ", ".join(p.relative_to(model_dir).as_posix() for p in graphs[:8])
    raise UserInputError(
        f"model '{name}': {len(graphs)} ONNX files and none named model.onnx ({listed})",
        hint=f"keep one with models.{name}.files.include",
    )


def external_data_files(model_path: Path, model_dir: Path) -> list[Path]:
    """The external-data files a graph references, checked to lie inside ``model_dir``."""
    _, _, _, locations = describe(model_path)
    return checked_external_paths(model_path, model_dir, locations)


def passthrough_onnx(job: ExportJob) -> ConversionResult:
    model_dir, name = job.snapshot, job.name
    source = main_onnx_file(model_dir, name=name)
    externals = external_data_files(source, model_dir)
    base = source.parent.resolve()
    for path in externals:
        if not path.is_relative_to(base):
            raise UserInputError(
                f"model '{name}': external data {path.name} lies outside the directory of "
                f"{source.relative_to(model_dir).as_posix()}; the artifact would not be "
                "self-contained",
                hint="keep the graph and its external data in one directory",
            )
    with staged(job.out_dir) as tmp:
        shutil.copyfile(source, tmp / MODEL_FILE)
        for path in externals:
            target = tmp / path.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        copy_sidecars(model_dir, tmp)
    return job.result("onnx")
