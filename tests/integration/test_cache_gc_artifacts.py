"""``cache gc`` and converted artifacts: what an install of a kept lock entry uses stays.

Real CLI processes, a real store and index, ``path:`` sources serving a tiny ONNX model
(passed through by the convert step, so installs take seconds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelmora.cache import Store
from modelmora.testing.cli import run_cli
from modelmora.testing.tiny_models import LINEAR_W, linear_onnx

pytestmark = pytest.mark.torch_free

FAST = "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"


def project(root: Path, name: str, onnx: bytes) -> Path:
    (root / "m").mkdir(parents=True, exist_ok=True)
    (root / "m" / "model.onnx").write_bytes(onnx)
    (root / "modelmora.yml").write_text(f"models:\n  {name}:\n    source: ./m\n{FAST}")
    return root


def cli(root: Path, home: Path, *args: str) -> str:
    proc = run_cli(root, *args, env={"MODELMORA_HOME": str(home)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def installed_key(root: Path, home: Path) -> str:
    model = json.loads(cli(root, home, "install", "--json"))["models"][0]
    return Path(model["artifacts"][0]["path"]).name


def listed(root: Path, home: Path) -> dict[str, object]:
    (model,) = json.loads(cli(root, home, "list", "--json"))
    return dict(model)


def gc(home: Path, root: Path) -> dict[str, list[dict[str, object]]]:
    return dict(json.loads(cli(root, home, "cache", "gc", "--json")))


def test_gc_keeps_artifacts_kept_entries_use_even_when_shared_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    a = project(tmp_path / "a", "lin", linear_onnx())
    old = installed_key(a, home)
    # Another project, another name, the same bytes: the artifact is reused, not rebuilt,
    # and only B's links file says B uses it.
    b = project(tmp_path / "b", "twin", linear_onnx())
    assert installed_key(b, home) == old

    # A moves on to new weights: its old entry (the artifact's builder) is gone from every lock.
    (a / "m" / "model.onnx").write_bytes(linear_onnx(LINEAR_W * 2))
    cli(a, home, "lock")
    new = installed_key(a, home)
    assert new != old
    first = gc(home, a)
    assert first["artifacts"] == []  # old: B uses it; new: A uses it
    assert (home / "artifacts" / old).is_dir()

    # The links live in the store: a rebuilt index still knows that B uses the artifact.
    (home / "index.duckdb").unlink()
    cli(a, home, "cache", "reindex")
    twin = listed(b, home)
    assert twin["installed"] is True and [x["key"] for x in twin["artifacts"]] == [old]

    # B is deleted: its artifact goes (not while an install holds it), A's stays usable.
    shutil.rmtree(b)
    store = Store(home)
    with store.artifact_lock(old):
        busy = gc(home, a)
    assert busy["skipped_busy"] == [old] and (home / "artifacts" / old).is_dir()
    done = gc(home, a)
    assert [(x["key"], x["model"]) for x in done["artifacts"]] == [(old, "lin")]
    assert int(str(done["freed_bytes"])) >= len(linear_onnx())
    assert not (home / "artifacts" / old).exists()
    assert [links.name for links in store.artifact_links()] == ["lin"]  # B's links went too
    mine = listed(a, home)
    assert mine["installed"] is True and [x["key"] for x in mine["artifacts"]] == [new]
    cli(a, home, "install")  # still installed: nothing to redo
    assert (home / "artifacts" / new / "model.onnx").read_bytes() == linear_onnx(LINEAR_W * 2)
