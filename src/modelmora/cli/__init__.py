"""The ``modelmora`` command: a thin click shell over the library packages."""

from __future__ import annotations

from modelmora.cli.app import main

__all__ = ["main"]
