"""Helpers for the cache integration tests: hub-backed projects and CLI child processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelmora.lock import LockedFile, LockedModel, LockFile, write_lock
from modelmora.manifest import ModelSpec
from modelmora.testing.hub_emulator import HubEmulator

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HubProject:
    """A project directory whose modelmora.lock pins repos served by the emulator."""

    dir: Path
    lock: LockFile
    contents: dict[str, dict[str, bytes]]
    """model name → repo path → bytes, as published."""

    def file(self, model: str, path: str) -> LockedFile:
        return next(f for f in self.lock.models[model].files if f.path == path)


def write_hub_project(
    hub: HubEmulator,
    project_dir: Path,
    models: Mapping[str, tuple[str, Mapping[str, bytes]]],
) -> HubProject:
    """Publish each ``name: (repo_id, files)`` on the hub, write manifest + lock for them.

    The lock is built from the bytes we published (sha256 computed here), not by the code
    under test, so a pull that stores other bytes cannot agree with it by accident.
    """
    project_dir.mkdir(parents=True, exist_ok=True)
    lines = ["registries:", "  hf:", f"    endpoint: {hub.url}", "models:"]
    entries: dict[str, LockedModel] = {}
    for name, (repo_id, files) in models.items():
        try:
            commit = hub.create_repo(repo_id, dict(files))
        except ValueError:  # the same repo under a second name
            commit = hub.resolve(repo_id)
        source = f"hf://{repo_id}"
        lines += [f"  {name}:", f"    source: {source}"]
        entries[name] = LockedModel(
            name=name,
            source=source,
            revision=commit,
            spec=ModelSpec(source=source).normalized(),
            files=tuple(
                LockedFile(path=p, size=len(b), sha256=hashlib.sha256(b).hexdigest())
                for p, b in sorted(files.items())
            ),
        )
    (project_dir / "modelmora.yml").write_text("\n".join(lines) + "\n")
    lock = LockFile(models=entries)
    write_lock(project_dir / "modelmora.lock", lock)
    return HubProject(project_dir, lock, {n: dict(files) for n, (_, files) in models.items()})


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def cli_command(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "modelmora", "-C", str(project), *args]
