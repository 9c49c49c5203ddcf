"""``install``'s no-op check, cheap enough to run before importing Dagster or torch.

After a successful install the runner writes ``.modelmora/install-state.json``: digests of
the manifest and lock bytes, the tool versions, the store it installed into
(``MODELMORA_HOME``), for every model the artifact records it produced, and the stat
(device, inode, size, mtime) of every artifact file. If all of that still holds — same
bytes, same tools, same store, records there, files untouched — the index would answer
"everything installed", so ``install`` exits at once; anything else runs the pipeline,
which re-checks (and if need be rebuilds) the artifacts. This module and what it imports
use only the standard library.
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
FORMAT = 3
"""2: installs also record their artifacts in the store's ``links/`` (for gc and reindex);
3: the state names its store and the artifact files' stats. An older install-state makes
the next install run the pipeline once."""


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


def _file_stats(records: Iterable[str]) -> dict[str, list[int]]:
    """``path → [dev, ino, size, mtime_ns]`` of every file the artifact records list."""
    stats: dict[str, list[int]] = {}
    for record in records:
        directory = Path(record).parent
        try:
            files = json.loads(Path(record).read_bytes())["conversion"]["files"]
            for f in files:
                path = directory / str(f["path"])
                st = path.stat()
                stats[str(path)] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        except (OSError, ValueError, KeyError, TypeError):
            stats[record] = []  # never matches: the pipeline runs and finds out why
    return stats


def write_state(
    project_dir: Path,
    manifest: Path,
    lock: Path,
    store_root: Path,
    backends: Iterable[str],
    models: Mapping[str, Iterable[Path]],
) -> None:
    """Record a fully successful install (``models``: name → record files it relies on)."""
    records = {name: sorted(str(p) for p in paths) for name, paths in sorted(models.items())}
    state = {
        "format": FORMAT,
        "manifest": _digest(manifest),
        "lock": _digest(lock),
        "store": str(store_root),
        "tools": tool_fingerprint(),
        "backends": sorted(backends),
        "models": records,
        "files": _file_stats(p for paths in records.values() for p in paths),
    }
    path = _state_path(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def clear_state(project_dir: Path) -> None:
    _state_path(project_dir).unlink(missing_ok=True)


def is_installed(
    project_dir: Path,
    manifest: Path,
    lock: Path,
    store_root: Path,
    names: Iterable[str],
    backends: Iterable[str],
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
    if state.get("store") != str(store_root):
        return False
    wanted_backends = sorted(backends)
    if wanted_backends and wanted_backends != state.get("backends"):
        return False
    if state.get("tools") != tool_fingerprint():
        return False
    models: dict[str, list[str]] = state.get("models", {})
    wanted = list(names) or list(models)
    if not all(name in models for name in wanted):
        return False
    records = [p for name in wanted for p in models[name]]
    recorded: dict[str, list[int]] = state.get("files", {})
    now = _file_stats(records)
    return all(recorded.get(path) == key and key for path, key in now.items())
