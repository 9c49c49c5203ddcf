"""Shared pytest fixtures. Keep each fixture small; domain-specific ones live near their tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelmora.testing.hub_emulator import HubEmulator


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubEmulator]:
    """A running Hugging Face Hub emulator on 127.0.0.1 with no repos yet."""
    with HubEmulator(root=tmp_path / "hub") as emulator:
        yield emulator
