"""Fixtures for serve tests: tiny ONNX artifact directories and a real server subprocess.

The server is started exactly as a user starts it (the ``modelmora`` console script,
``serve --port 0``) and found through the line it prints when ready. Nothing is mocked:
workers are real spawned processes running real ONNX Runtime sessions.
"""

from __future__ import annotations

import numpy as np
import pytest
from serve_support import LABELS, Artifacts, export_text_model, make_linear_model

from modelmora.testing.tiny_models import make_tiny_bert, make_tiny_classifier


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    root = tmp_path_factory.mktemp("serve-artifacts")
    rng = np.random.default_rng(7)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    return Artifacts(
        emb=export_text_model(make_tiny_bert(root / "emb", seed=0)),
        emb_b=export_text_model(make_tiny_bert(root / "emb_b", seed=1)),
        cls=export_text_model(make_tiny_classifier(root / "cls", labels=LABELS), classifier=True),
        lin=make_linear_model(root / "lin", weight, bias),
        weight=weight,
        bias=bias,
    )
