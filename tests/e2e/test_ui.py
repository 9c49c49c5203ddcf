"""``modelmora ui``: a real Dagster webserver on this project's instance.

The runs that ``modelmora install`` made must be visible there (same ``DAGSTER_HOME``) and
re-executable with the mutation the UI's "Re-execute" buttons send, both all steps and from
the failed step; the lineage page must render in a real browser; the UI must stop cleanly on
SIGTERM, leaving nothing listening. One webserver serves all the tests of this module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelmora.testing.tiny_models import make_tiny_bert

pytestmark = pytest.mark.timeout(900)

BENCH = "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
RUNS = """
{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }
"""
ASSETS = "{ assetNodes { assetKey { path } } }"
REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
RUN = """
query Run($id: ID!) {
  runOrError(runId: $id) { ... on Run { status stepStats { stepKey status } } }
}
"""
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class UI:
    url: str
    project: Path
    cli: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        ).json()
        assert "errors" not in answer, answer
        return dict(answer["data"])

    def cli_runs(self) -> dict[str, dict[str, Any]]:
        """partition → the run ``modelmora install`` made for it (runs without a parent)."""
        found = {}
        for run in self.query(RUNS)["runsOrError"]["results"]:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if "dagster/parent_run_id" not in tags:
                found[tags["dagster/partition"]] = run
        return found

    def wait_for_run(self, run_id: str, deadline_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            run = self.query(RUN, id=run_id)["runOrError"]
            if run["status"] in FINISHED:
                return dict(run)
            time.sleep(1)  # polling interval while the run works, not synchronisation
        raise AssertionError(f"run {run_id} not finished after {deadline_s} s")


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


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """Two models installed by the CLI, ``tiny`` (succeeded) and ``broken`` (its download
    failed: a file was away, and is back now), and the UI on their project."""
    root = tmp_path_factory.mktemp("ui")
    project = root / "proj"
    make_tiny_bert(project / "models" / "tiny")
    make_tiny_bert(project / "models" / "broken", seed=1)
    (project / "modelmora.yml").write_text(
        "models:\n"
        f"  tiny:\n    source: ./models/tiny\n    task: feature-extraction\n{BENCH}"
        f"  broken:\n    source: ./models/broken\n    task: feature-extraction\n{BENCH}"
    )
    env = {**os.environ, "MODELMORA_HOME": str(root / "home")}
    cli = [sys.executable, "-m", "modelmora", "-C", str(project)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True)

    locked = run("lock")
    assert locked.returncode == 0, locked.stderr
    installed = run("install", "tiny")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    weights = project / "models" / "broken" / "model.safetensors"
    weights.rename(root / "away")
    failed = run("install", "--frozen", "broken")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "model.safetensors" in failed.stdout
    (root / "away").rename(weights)

    port = free_port()
    process = subprocess.Popen(
        [*cli, "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/server_info", process, deadline_s=180)
        yield UI(url=url, project=project, cli=cli, env=env, process=process)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        assert code == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the webserver is still listening"


def test_ui_shows_assets_and_install_runs(ui: UI) -> None:
    keys = {tuple(node["assetKey"]["path"]) for node in ui.query(ASSETS)["assetNodes"]}
    assert {("download",), ("convert",), ("benchmark",)} <= keys
    runs = ui.cli_runs()
    assert set(runs) == {"tiny", "broken"}
    assert runs["tiny"]["status"] == "SUCCESS"
    assert runs["broken"]["status"] == "FAILURE"


@pytest.mark.parametrize(
    ("partition", "strategy"), [("tiny", "ALL_STEPS"), ("broken", "FROM_FAILURE")]
)
def test_ui_reexecutes_a_cli_run(ui: UI, partition: str, strategy: str) -> None:
    parent = ui.cli_runs()[partition]["runId"]
    launched = ui.query(REEXECUTE, params={"parentRunId": parent, "strategy": strategy})
    answer = launched["launchRunReexecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    run = ui.wait_for_run(answer["run"]["runId"], deadline_s=300)
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert run["status"] == "SUCCESS", steps
    assert steps == {
        "download": "SUCCESS",
        "convert": "SUCCESS",
        "convert_validate": "SUCCESS",
        "benchmark": "SUCCESS",
    }
    # What the UI's run installed is what the CLI sees.
    listed = subprocess.run(
        [*ui.cli, "list", "--json"], env=ui.env, capture_output=True, text=True, check=True
    )
    status = {m["name"]: m for m in json.loads(listed.stdout)}[partition]
    assert status["stages"] == dict.fromkeys(("download", "convert", "validate", "benchmark"), "ok")


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--virtual-time-budget=20000",
)


def test_lineage_page_renders_in_a_browser(ui: UI, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed (scripts/test.sh installs Debian's `chromium`)")
    page = f"{ui.url}/locations/modelmora.pipeline.location/asset-groups/modelmora/lineage"
    browser = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*browser, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # The graph's nodes are drawn by the UI's JavaScript: only a rendered page names them.
    for asset in ("download", "convert", "benchmark"):
        assert f">{asset}<" in dom, f"asset {asset!r} not on the rendered lineage page"
    shot = tmp_path / "lineage.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", page], capture_output=True, timeout=120, check=True
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000, "a blank page compresses to a few kB"
