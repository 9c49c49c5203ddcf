"""install's no-op check answers for the store it checked and for untouched artifacts only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from modelmora.pipeline.fastpath import is_installed, write_state

pytestmark = pytest.mark.torch_free


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path, Path]:
    project, store = tmp_path / "proj", tmp_path / "home"
    project.mkdir()
    (project / "modelmora.yml").write_text("models: {}\n")
    (project / "modelmora.lock").write_text("version = 1\n")
    artifact = store / "artifacts" / "k1"
    artifact.mkdir(parents=True)
    (artifact / "model.onnx").write_bytes(b"onnx")
    record = {"conversion": {"files": [{"path": "model.onnx", "size": 4, "sha256": "0" * 64}]}}
    (artifact / "artifact.json").write_text(json.dumps(record))
    write_state(
        project,
        project / "modelmora.yml",
        project / "modelmora.lock",
        store,
        [],
        {"m": [artifact / "artifact.json"]},
    )
    return project, store, artifact


def check(project: Path, store: Path) -> bool:
    return is_installed(
        project, project / "modelmora.yml", project / "modelmora.lock", store, [], []
    )


def test_same_store_and_untouched_files_is_a_no_op(installed: tuple[Path, Path, Path]) -> None:
    project, store, _ = installed
    assert check(project, store)


def test_another_store_is_not_installed(installed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    project, _, _ = installed
    assert not check(project, tmp_path / "empty-home")


def test_a_rewritten_artifact_file_makes_install_look_again(
    installed: tuple[Path, Path, Path],
) -> None:
    project, store, artifact = installed
    st = (artifact / "model.onnx").stat()
    (artifact / "model.onnx").write_bytes(b"0nnx")  # same size
    os.utime(artifact / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not check(project, store)
