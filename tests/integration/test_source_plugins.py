"""Third-party registries are discovered through the ``modelmora.sources`` entry-point group.

A real (tiny) distribution is laid out on disk — a module plus a ``.dist-info`` with
``entry_points.txt`` — and put on ``PYTHONPATH`` of a real ``modelmora`` process, exactly
how an installed plugin is seen by ``importlib.metadata``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelmora.lock import read_lock
from modelmora.testing.cli import run_cli

pytestmark = pytest.mark.torch_free

PLUGIN = """
from modelmora.sources import RemoteFile, Resolution, Source

PAYLOAD = b"weights from the acme registry"


class AcmeSource(Source):
    scheme = "acme"

    def resolve(self, pinned_revision=None):
        import hashlib
        sha = hashlib.sha256(PAYLOAD).hexdigest()
        files = (RemoteFile(path=f"{self.location}.onnx", size=len(PAYLOAD), sha256=sha),)
        return Resolution(revision="v7", files=files, metadata={"registry": "acme"})

    def fetch(self, revision, file, dest, *, offset=0, progress=None):
        dest.write_bytes(PAYLOAD)


class Broken(Source):
    scheme = "broken"

    def resolve(self, pinned_revision=None):
        raise RuntimeError("the acme API changed")

    def fetch(self, revision, file, dest, *, offset=0, progress=None):
        raise RuntimeError("unreachable")


class Picky(Broken):
    scheme = "picky"

    def configure(self):
        raise ValueError(f"cannot parse {self.location!r}")
"""


def make_plugin(root: Path) -> Path:
    site = root / "site"
    (site / "acme_models").mkdir(parents=True)
    (site / "acme_models" / "__init__.py").write_text(PLUGIN)
    info = site / "acme_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [modelmora.sources]
            acme = acme_models:AcmeSource
            broken = acme_models:Broken
            picky = acme_models:Picky
            missing = acme_models.nowhere:Nothing
            """
        )
    )
    return site


def modelmora(project: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(project, *args, env={"PYTHONPATH": os.pathsep.join([str(site), *sys.path])})


def test_plugin_source_locks(tmp_path: Path) -> None:
    site = make_plugin(tmp_path)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "modelmora.yml").write_text("models:\n  rocket:\n    source: acme://rocket\n")
    proc = modelmora(project, site, "lock")
    assert proc.returncode == 0, proc.stderr
    entry = read_lock(project / "modelmora.lock").models["rocket"]
    assert entry.revision == "v7" and entry.metadata == {"registry": "acme"}
    digest = hashlib.sha256(b"weights from the acme registry").hexdigest()
    assert [(f.path, f.sha256) for f in entry.files] == [("rocket.onnx", digest)]


def test_failing_plugins_are_named(tmp_path: Path) -> None:
    site = make_plugin(tmp_path)
    project = tmp_path / "proj"
    project.mkdir()
    (project / "modelmora.yml").write_text("models:\n  m:\n    source: broken://x\n")
    raised = modelmora(project, site, "lock")
    assert raised.returncode == 1
    assert "source plugin 'broken'" in raised.stderr and "the acme API changed" in raised.stderr
    assert "Traceback" not in raised.stderr

    (project / "modelmora.yml").write_text("models:\n  m:\n    source: picky://x\n")
    refused = modelmora(project, site, "lock")
    assert refused.returncode == 1
    assert "models.m: source plugin 'picky' failed: cannot parse 'x'" in refused.stderr
    assert "Traceback" not in refused.stderr

    (project / "modelmora.yml").write_text("models:\n  m:\n    source: missing://x\n")
    unloadable = modelmora(project, site, "lock")
    assert unloadable.returncode == 1
    assert "source plugin 'missing' (acme_models.nowhere:Nothing) failed to load" in (
        unloadable.stderr
    )
