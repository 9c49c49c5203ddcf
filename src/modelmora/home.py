"""Where the store lives: ``MODELMORA_HOME``, else the platform's per-user cache directory.

The store is a cache in the OS sense (safe to delete, rebuilt by ``pull``), so it goes where
each platform keeps caches rather than next to the user's documents.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "MODELMORA_HOME"


def default_home(platform: str | None = None) -> Path:
    """The platform default when ``MODELMORA_HOME`` is unset.

    Linux/BSD: ``$XDG_CACHE_HOME/modelmora`` or ``~/.cache/modelmora``; macOS:
    ``~/Library/Caches/modelmora``; Windows: ``%LOCALAPPDATA%\\modelmora``.
    """
    plat = platform or sys.platform
    if plat.startswith("win"):
        base = os.environ.get("LOCALAPPDATA")
        return Path(base) / "modelmora" if base else Path.home() / "AppData" / "Local" / "modelmora"
    if plat == "darwin":
        return Path.home() / "Library" / "Caches" / "modelmora"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "modelmora"
    return Path.home() / ".cache" / "modelmora"


def modelmora_home() -> Path:
    """``MODELMORA_HOME`` (``~`` expanded, made absolute) if set and non-empty, else the default."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return Path(value).expanduser().absolute()
    return default_home()
