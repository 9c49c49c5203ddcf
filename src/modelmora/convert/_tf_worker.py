"""Runs TensorFlow work in a child process (``python -m modelmora.convert._tf_worker``).

TensorFlow costs seconds to import, a gigabyte of address space and a process-wide thread
pool; keeping it in a child keeps it out of every other code path (and out of serving).

Commands::

    convert MODEL (saved-model dir or .keras file) OUT.onnx OPSET
    run MODEL (saved-model dir or .keras file) INPUTS.npz OUTPUTS.npz
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load_keras(path: str) -> Any:
    import keras  # type: ignore[import-untyped]

    # safe_mode refuses Lambda layers and other serialized Python code.
    return keras.models.load_model(path, safe_mode=True, compile=False)


def to_onnx(model: str, output: str, opset: str) -> None:
    """Keras → SavedModel (if needed) → tf2onnx, in this one process (one TF import)."""
    import tempfile

    from tf2onnx import convert

    with tempfile.TemporaryDirectory(prefix="modelmora-tf-") as work:
        saved_model = model
        if Path(model).suffix == ".keras":
            saved_model = str(Path(work) / "saved_model")
            _load_keras(model).export(saved_model, format="tf_saved_model", verbose=False)
        sys.argv = ["tf2onnx.convert", "--saved-model", saved_model, "--output", output]
        sys.argv += ["--opset", opset]
        convert.main()


def run(model: str, inputs_path: str, outputs_path: str) -> None:
    import numpy as np

    with np.load(inputs_path) as data:
        order = json.loads(str(data["__order__"]))
        inputs = {k: data[k] for k in order}
    if Path(model).suffix == ".keras":
        keras_model = _load_keras(model)
        values = keras_model([inputs[k] for k in order] if len(order) > 1 else inputs[order[0]])
        values = values if isinstance(values, list | tuple) else [values]
        outputs = {f"output_{i}": np.asarray(v) for i, v in enumerate(values)}
    else:
        import tensorflow as tf

        loaded = tf.saved_model.load(model)
        fn = loaded.signatures["serving_default"]
        result = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        outputs = {k: v.numpy() for k, v in result.items()}
    np.savez(outputs_path, **outputs)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "convert":
        to_onnx(*args)
    elif command == "run":
        run(*args)
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
