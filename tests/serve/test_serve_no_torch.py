"""Serving must never import torch: not in the router, not in a worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from serve_support import Artifacts

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    import modelmora.cli.serve, modelmora.serve.server, modelmora.serve.worker
    from modelmora.serve.app import create_app
    from modelmora.serve.config import ServedModel, ServerSettings

    model = ServedModel(name="emb", artifact_dir=Path(sys.argv[1]), task="feature-extraction")
    app = create_app(ServerSettings(port=0), {"emb": model})
    with TestClient(app) as client:
        r = client.post("/v1/embeddings", json={"model": "emb", "input": "hi"})
        assert r.status_code == 200, r.text
        pid = app.state.serve.pool.handles["emb"].pid
        maps = Path(f"/proc/{pid}/maps").read_text()
        modules = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("router-torch:", modules)
        print("worker-libtorch:", "libtorch" in maps)
        print("worker-onnxruntime:", "onnxruntime" in maps)
    """
)


def test_router_and_worker_never_import_torch(artifacts: Artifacts) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(artifacts.emb)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "router-torch: []" in out
    assert "worker-libtorch: False" in out
    assert "worker-onnxruntime: True" in out  # the check above looked at the right process
