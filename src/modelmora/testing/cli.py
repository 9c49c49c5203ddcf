"""Run the real ``modelmora`` command in a child process, as a user (or CI) would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def cli_command(project: Path, *args: str) -> list[str]:
    """``python -m modelmora -C PROJECT ARGS`` with this interpreter."""
    return [sys.executable, "-m", "modelmora", "-C", str(project), *args]


def run_cli(
    project: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion; ``env`` is added to the current environment. Never raises on exit."""
    return subprocess.run(
        cli_command(project, *args),
        capture_output=True,
        text=True,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", **(env or {})},
        timeout=timeout,
        check=False,
    )
