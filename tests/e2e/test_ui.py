"""``modelmora ui``: a real Dagster webserver on this project's instance, queried over GraphQL.

The run that ``modelmora install`` made must be visible there (same ``DAGSTER_HOME``), and
the UI must stop cleanly on SIGTERM, leaving nothing listening.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from modelmora.testing.tiny_models import make_tiny_bert

pytestmark = pytest.mark.timeout(600)

QUERY = """
{
  assetNodes { assetKey { path } }
  runsOrError { ... on Runs { results { runId status tags { key value } } } }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"modelmora ui exited early with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # polling interval while the server boots, not synchronisation
    raise AssertionError(f"{url} not up after {deadline_s} s")


def test_ui_shows_assets_and_install_runs(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    make_tiny_bert(project / "models" / "tiny")
    (project / "modelmora.yml").write_text(
        "models:\n  tiny:\n    source: ./models/tiny\n    task: feature-extraction\n"
        "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
    )
    env = {**os.environ, "MODELMORA_HOME": str(tmp_path / "home")}
    cli = [sys.executable, "-m", "modelmora", "-C", str(project)]
    installed = subprocess.run([*cli, "install"], env=env, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    port = free_port()
    ui = subprocess.Popen(
        [*cli, "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/server_info", ui, deadline_s=180)
        data = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=60
        ).json()["data"]
        keys = {tuple(node["assetKey"]["path"]) for node in data["assetNodes"]}
        assert {("download",), ("onnx",), ("benchmark",)} <= keys
        runs = data["runsOrError"]["results"]
        partitions = [
            {t["key"]: t["value"] for t in run["tags"]}.get("dagster/partition") for run in runs
        ]
        assert partitions == ["tiny"]
        assert runs[0]["status"] == "SUCCESS"
    finally:
        ui.send_signal(signal.SIGTERM)
        code = ui.wait(timeout=60)
    assert code == 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the webserver is still listening"
