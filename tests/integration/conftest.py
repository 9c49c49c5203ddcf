"""Fixtures for the cache integration tests (helpers live in cache_helpers.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from cache_helpers import REPO_ROOT, CliRunner, cli_command


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty MODELMORA_HOME for this test (also inherited by CLI subprocesses)."""
    path = tmp_path / "mmhome"
    monkeypatch.setenv("MODELMORA_HOME", str(path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MODELMORA_LINK_MODE", raising=False)
    return path


@pytest.fixture
def run_cli() -> CliRunner:
    """Run the real CLI in a child process (environment inherited, output captured)."""

    def run(
        project: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_command(project, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
        )

    return run
