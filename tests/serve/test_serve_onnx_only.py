"""The torch-free core, end to end: lock → pull → install → serve an ONNX model, with the real
CLI and a real server, importing nothing of the [convert] extra.

CI runs this (with the other ``torch_free`` tests) on Python 3.10 and 3.13 too, in virtual
environments holding only ``pip install .`` and the test tools (scripts/test-pythons.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from serve_support import Server, run_server

from modelmora.testing.tiny_models import LINEAR_B, LINEAR_W, linear_onnx

pytestmark = pytest.mark.torch_free

X = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
EXPECTED = np.tanh(np.array(X, dtype=np.float32) @ LINEAR_W + LINEAR_B)


def cli(project: Path, home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "modelmora", "-C", str(project), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELMORA_HOME": str(home)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def infer(server: Server) -> np.ndarray:
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X}]}
    answer = server.http.post("/v2/models/lin/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def test_lock_pull_install_serve_without_torch(tmp_path: Path) -> None:
    project, home = tmp_path / "proj", tmp_path / "home"
    (project / "lin").mkdir(parents=True)
    (project / "lin" / "model.onnx").write_bytes(linear_onnx())
    (project / "modelmora.yml").write_text(
        "models:\n  lin:\n    source: ./lin\n"
        "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 3}\n"
    )
    cli(project, home, "lock")
    pulled = json.loads(cli(project, home, "pull", "--json"))
    snapshot = Path(pulled["models"][0]["snapshot"])
    assert (snapshot / "model.onnx").read_bytes() == linear_onnx()

    with run_server({"lin": snapshot}) as server:
        np.testing.assert_allclose(infer(server), EXPECTED, rtol=1e-5, atol=1e-6)

    installed = json.loads(cli(project, home, "install", "--json"))
    assert installed["ok"] is True
    with run_server({}, project=project, env={"MODELMORA_HOME": str(home)}) as server:
        np.testing.assert_allclose(infer(server), EXPECTED, rtol=1e-5, atol=1e-6)
