"""``onnx-zoo://NAME`` against the HF Hub emulator (the zoo's home is ``onnxmodelzoo/`` there).

The repository holds a small ONNX graph built with ``onnx.helper``; locking pins the commit
and each file's sha256 through the real ``huggingface_hub`` client, and ``install`` passes the
graph through unchanged and validates it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from modelmora.cli import main
from modelmora.lock import read_lock
from modelmora.testing.hub_emulator import HubEmulator
from modelmora.testing.source_contract import AuthSourceContract, ContractRegistry, HubRegistry
from modelmora.testing.tiny_models import LINEAR_W, check_linear_install, linear_onnx

pytestmark = [pytest.mark.torch_free, pytest.mark.timeout(300)]


@pytest.fixture
def zoo(hub: HubEmulator) -> dict[str, str]:
    shas = {}
    shas["c1"] = hub.create_repo(
        "onnxmodelzoo/tiny-linear",
        {"model.onnx": linear_onnx(), "labels.txt": b"a\nb\nc\n", "README.md": b"# tiny\n"},
        metadata={"pipeline_tag": "image-classification"},
    )
    return shas


def write_project(root: Path, source: str, registries: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelmora.yml").write_text(
        f"registries:\n{registries}models:\n  linear:\n    source: {source}\n"
        "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
    )
    return root


def run(root: Path, *args: str, env: dict[str, str]) -> Result:
    return CliRunner(env=env).invoke(main, ["-C", str(root), *args], catch_exceptions=False)


def test_lock_pins_commit_and_onnx_files_from_the_onnx_zoo_block(
    zoo: dict[str, str], hub: HubEmulator, tmp_path: Path
) -> None:
    # `hf` points at a dead address: only the `onnx-zoo` block may be used.
    root = write_project(
        tmp_path / "proj",
        "onnx-zoo://tiny-linear",
        "  hf: {endpoint: 'http://127.0.0.1:9'}\n  onnx-zoo: {endpoint: '${ZOO}'}\n",
    )
    env = {"ZOO": hub.url}
    result = run(root, "lock", env=env)
    assert result.exit_code == 0, result.output
    entry = read_lock(root / "modelmora.lock").models["linear"]
    assert entry.revision == zoo["c1"]
    files = {f.path: f for f in entry.files}
    assert sorted(files) == ["labels.txt", "model.onnx"]  # README.md is not a default include
    assert files["model.onnx"].sha256 == hashlib.sha256(linear_onnx()).hexdigest()
    assert files["labels.txt"].sha256 == hashlib.sha256(b"a\nb\nc\n").hexdigest()
    assert entry.metadata["pipeline_tag"] == "image-classification"

    hub.commit("onnxmodelzoo/tiny-linear", {"model.onnx": linear_onnx(LINEAR_W * 2)})
    assert run(root, "lock", env=env).exit_code == 0
    assert read_lock(root / "modelmora.lock").models["linear"].revision == zoo["c1"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("onnx-zoo://missing-model", "onnx-zoo://missing-model: repository not found at"),
        ("onnx-zoo://tiny-linear@v9", "onnx-zoo://tiny-linear: revision 'v9' not found"),
        ("onnx-zoo://someone/else", "expected onnx-zoo://NAME[@REVISION]"),
    ],
)
def test_bad_zoo_specs_fail_clearly(
    zoo: dict[str, str], hub: HubEmulator, tmp_path: Path, source: str, message: str
) -> None:
    root = write_project(tmp_path / "proj", source, "  hf: {endpoint: '${ZOO}'}\n")
    result = run(root, "lock", env={"ZOO": hub.url})
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (root / "modelmora.lock").exists()


def test_install_passes_the_zoo_graph_through_and_validates_it(
    zoo: dict[str, str], hub: HubEmulator, tmp_path: Path
) -> None:
    """Without an `onnx-zoo` block the `hf` block's endpoint is used."""
    root = write_project(
        tmp_path / "proj", "onnx-zoo://tiny-linear", "  hf: {endpoint: '${ZOO}'}\n"
    )
    home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "modelmora", "-C", str(root), "install", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ZOO": hub.url, "MODELMORA_HOME": str(home)},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_linear_install(proc.stdout)


class TestOnnxZooSourceContract(AuthSourceContract):
    @pytest.fixture
    def registry(self, hub: HubEmulator) -> ContractRegistry:
        return HubRegistry(hub, "onnx-zoo")
