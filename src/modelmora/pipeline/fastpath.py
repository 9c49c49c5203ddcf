"""``install``'s no-op check, cheap enough to run before importing Dagster or torch.

After a successful install the runner writes ``.modelmora/install-state.json``: digests of
the manifest and lock bytes, the tool versions, and for every model the artifact records it
produced. If all of that still holds — same bytes, same tools, records still in the store —
the index would answer "everything installed", so ``install`` exits at once. This module
and what it imports use only the standard library.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from modelmora.names import STATE_DIR
from modelmora.tools import tool_versions

STATE_FILE = "install-state.json"
FORMAT = 2
"""2: installs also record their artifacts in the store's ``links/`` (for gc and reindex);
an install-state of format 1 makes the next install run the pipeline once to write them."""


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def tool_fingerprint() -> dict[str, str]:
    """Every tool an artifact key depends on, plus Dagster (it runs the pipeline)."""
    found = tool_versions()
    with contextlib.suppress(metadata.PackageNotFoundError):
        found["dagster"] = metadata.version("dagster")
    return found


def _state_path(project_dir: Path) -> Path:
    return project_dir / STATE_DIR / STATE_FILE


def write_state(
    project_dir: Path,
    manifest: Path,
    lock: Path,
    backends: Iterable[str],
    models: Mapping[str, Iterable[Path]],
) -> None:
    """Record a fully successful install (``models``: name → record files it relies on)."""
    state = {
        "format": FORMAT,
        "manifest": _digest(manifest),
        "lock": _digest(lock),
        "tools": tool_fingerprint(),
        "backends": sorted(backends),
        "models": {name: sorted(str(p) for p in paths) for name, paths in sorted(models.items())},
    }
    path = _state_path(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def clear_state(project_dir: Path) -> None:
    _state_path(project_dir).unlink(missing_ok=True)


def is_installed(
    project_dir: Path, manifest: Path, lock: Path, names: Iterable[str], backends: Iterable[str]
) -> bool:
    """True when the last successful install covers exactly this input and still exists."""
    try:
        state = json.loads(_state_path(project_dir).read_text())
    except (OSError, ValueError):
        return False
    if state.get("format") != FORMAT:
        return False
    if state.get("manifest") != _digest(manifest) or state.get("lock") != _digest(lock):
        return False
    wanted_backends = sorted(backends)
    if wanted_backends and wanted_backends != state.get("backends"):
        return False
    if state.get("tools") != tool_fingerprint():
        return False
    models: dict[str, list[str]] = state.get("models", {})
    wanted = list(names) or list(models)
    return all(name in models and all(Path(p).is_file() for p in models[name]) for name in wanted)
