"""The repository's own modelmora.yml and committed modelmora.lock stay in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_committed_root_lock_passes_check() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelmora", "-C", str(REPO), "lock", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is up to date" in proc.stdout
