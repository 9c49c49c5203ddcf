"""TensorFlow SavedModel / Keras → ONNX with tf2onnx (the optional ``[tf]`` extra).

All TensorFlow work happens in child processes (see ``_tf_worker``); this module only checks
that the extra is installed and drives the children.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from modelmora.convert._files import MODEL_FILE, copy_sidecars, staged
from modelmora.convert.job import ExportJob
from modelmora.errors import ModelMoraError, UserInputError
from modelmora.records.conversion import ConversionResult, SourceFormat


def tf_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf2onnx"))


def require_tf(name: str) -> None:
    if not tf_available():
        raise UserInputError(
            f"model '{name}' is a TensorFlow model, but TensorFlow/tf2onnx are not installed",
            hint="install the extra: pip install 'modelmora[tf]'",
        )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["USE_TF"] = "0"  # irrelevant to TF itself; keeps transformers from touching Keras
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def _run(args: list[str], *, what: str, name: str) -> None:
    proc = subprocess.run(
        [sys.executable, *args], env=_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise UserInputError(f"model '{name}': {what} failed:\n{tail}")


def keras_file(model_dir: Path, *, name: str) -> Path:
    files = sorted(model_dir.glob("*.keras"))
    if len(files) != 1:
        raise UserInputError(
            f"model '{name}': expected one .keras file, found {len(files)}",
            hint=f"keep one with models.{name}.files.include",
        )
    return files[0]


def export_tf(job: ExportJob) -> ConversionResult:
    model_dir, name = job.snapshot, job.name
    require_tf(name)
    target = keras_file(model_dir, name=name) if job.source_format == "keras" else model_dir
    with staged(job.out_dir) as tmp:
        _run(
            [
                "-m",
                "modelmora.convert._tf_worker",
                "convert",
                str(target),
                str(tmp / MODEL_FILE),
                str(job.opset),
            ],
            what="tf2onnx conversion",
            name=name,
        )
        copy_sidecars(model_dir, tmp)
    return job.result("tf2onnx")


def run_reference(
    model_dir: Path, source_format: SourceFormat, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run the TF model on ``inputs`` in a child process; outputs keyed like tf2onnx names them."""
    if not tf_available():
        raise ModelMoraError("TensorFlow is not installed: cannot run the reference model")
    target = keras_file(model_dir, name=model_dir.name) if source_format == "keras" else model_dir
    with tempfile.TemporaryDirectory(prefix="modelmora-tf-") as work:
        in_path, out_path = Path(work) / "in.npz", Path(work) / "out.npz"
        order = np.array(json.dumps(list(inputs)))
        np.savez(in_path, __order__=order, **dict(inputs))  # type: ignore[arg-type]
        _run(
            ["-m", "modelmora.convert._tf_worker", "run", str(target), str(in_path), str(out_path)],
            what="running the TensorFlow reference",
            name=model_dir.name,
        )
        with np.load(out_path) as data:
            return {k: data[k] for k in data.files}
