"""`modelmora lock` against the HF Hub emulator (real HTTP, the real huggingface_hub client).

Covers the issue's "done when": ≥ 3 repos locked together, pinned by a tag, a branch and a
sha; byte-identical re-locks; branch pins kept until --upgrade; tokens never in the lock.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from modelmora.cli import main
from modelmora.lock import read_lock
from modelmora.testing.hub_emulator import HubEmulator

pytestmark = pytest.mark.torch_free

TOKEN = "hf_SECRETTOKEN123456"


def run(project: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, ["-C", str(project), *args], catch_exceptions=False)


def weights(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest() * 64


@pytest.fixture
def three_repos(hub: HubEmulator, tmp_path: Path) -> dict[str, str]:
    """Three repos; returns the commit shas tests pin to."""
    shas = {}
    shas["a1"] = hub.create_repo(
        "org/alpha",
        {"config.json": b'{"v": 1}', "model.safetensors": weights("a1"), "README.md": b"#"},
        metadata={"pipeline_tag": "feature-extraction"},
    )
    hub.create_tag("org/alpha", "v1.0", revision=shas["a1"])
    shas["a2"] = hub.commit("org/alpha", {"config.json": b'{"v": 2}'})
    shas["b1"] = hub.create_repo("org/beta", {"config.json": b"{}", "model.safetensors": b"b"})
    hub.create_branch("org/beta", "dev", revision=shas["b1"])
    shas["c1"] = hub.create_repo("org/gamma", {"vocab.txt": b"[PAD]\n", "config.json": b"{}"})
    shas["c2"] = hub.commit("org/gamma", {"vocab.txt": b"[PAD]\n[UNK]\n"})
    project = tmp_path / "proj"
    project.mkdir()
    (project / "modelmora.yml").write_text(
        "registries:\n"
        "  hf: {endpoint: '${TEST_HUB}', token: '${TEST_HF_TOKEN:-}'}\n"
        "models:\n"
        "  alpha:\n    source: hf://org/alpha@v1.0\n"
        "  beta:\n    source: hf://org/beta@dev\n"
        f"  gamma:\n    source: hf://org/gamma@{shas['c1']}\n"
    )
    return shas


@pytest.fixture
def env(hub: HubEmulator) -> dict[str, str]:
    return {"TEST_HUB": hub.url}


def test_lock_pins_tag_branch_and_sha(
    three_repos: dict[str, str], tmp_path: Path, env: dict[str, str], hub: HubEmulator
) -> None:
    project = tmp_path / "proj"
    result = run(project, "lock", env=env)
    assert result.exit_code == 0, result.output
    lock = read_lock(project / "modelmora.lock")
    assert lock.models["alpha"].revision == three_repos["a1"]
    assert lock.models["beta"].revision == three_repos["b1"]
    assert lock.models["gamma"].revision == three_repos["c1"]
    alpha = {f.path: f for f in lock.models["alpha"].files}
    # README.md is outside the default include; config.json had no sha256 in the registry
    # metadata (not LFS) and was fetched and hashed during lock.
    assert sorted(alpha) == ["config.json", "model.safetensors"]
    assert alpha["config.json"].sha256 == hashlib.sha256(b'{"v": 1}').hexdigest()
    assert alpha["model.safetensors"].sha256 == hashlib.sha256(weights("a1")).hexdigest()
    assert lock.models["alpha"].metadata["pipeline_tag"] == "feature-extraction"
    text = (project / "modelmora.lock").read_text()
    assert hub.url not in text and str(tmp_path) not in text

    first = (project / "modelmora.lock").read_bytes()
    hub.requests.clear()
    assert run(project, "lock", env=env).exit_code == 0
    assert (project / "modelmora.lock").read_bytes() == first
    assert list(hub.requests) == []  # every pin reused: no network at all
    assert run(project, "lock", "--check", env=env).exit_code == 0


def test_branch_stays_pinned_until_upgrade_of_that_model(
    three_repos: dict[str, str], tmp_path: Path, env: dict[str, str], hub: HubEmulator
) -> None:
    project = tmp_path / "proj"
    run(project, "lock", env=env)
    moved = hub.commit("org/beta", {"config.json": b'{"moved": true}'}, branch="dev")

    assert run(project, "lock", env=env).exit_code == 0
    assert read_lock(project / "modelmora.lock").models["beta"].revision == three_repos["b1"]

    result = run(project, "lock", "--upgrade", "beta", "--json", env=env)
    assert result.exit_code == 0, result.output
    changes = {c["name"]: c for c in json.loads(result.output)["models"]}
    assert changes["beta"]["action"] == "updated" and changes["beta"]["revision"] == moved
    assert changes["alpha"]["action"] == "unchanged"
    lock = read_lock(project / "modelmora.lock")
    assert lock.models["beta"].revision == moved
    assert lock.models["alpha"].revision == three_repos["a1"]


def test_changing_include_keeps_the_locked_commit(
    three_repos: dict[str, str], tmp_path: Path, env: dict[str, str], hub: HubEmulator
) -> None:
    project = tmp_path / "proj"
    run(project, "lock", env=env)
    hub.commit("org/beta", {"extra.json": b"{}"}, branch="dev")
    manifest = project / "modelmora.yml"
    manifest.write_text(
        manifest.read_text().replace(
            "source: hf://org/beta@dev\n",
            "source: hf://org/beta@dev\n    files: {include: ['*.json']}\n",
        )
    )
    check = run(project, "lock", "--check", env=env)
    assert check.exit_code == 1
    assert "models.beta.files.include: lock has (unset), now ['*.json']" in check.output
    assert run(project, "lock", env=env).exit_code == 0
    beta = read_lock(project / "modelmora.lock").models["beta"]
    assert beta.revision == three_repos["b1"]
    assert [f.path for f in beta.files] == ["config.json"]


def test_token_is_used_but_never_written_or_printed(
    three_repos: dict[str, str], tmp_path: Path, env: dict[str, str], hub: HubEmulator
) -> None:
    project = tmp_path / "proj"
    hub.require_token(TOKEN)
    denied = run(project, "lock", env=env)
    assert denied.exit_code == 2
    assert "TEST_HF_TOKEN" in denied.output
    assert not (project / "modelmora.lock").exists()

    wrong = run(project, "lock", env={**env, "TEST_HF_TOKEN": "hf_WRONGTOKEN999"})
    assert wrong.exit_code == 2 and "hf_WRONGTOKEN999" not in wrong.output

    ok = run(project, "lock", env={**env, "TEST_HF_TOKEN": TOKEN})
    assert ok.exit_code == 0, ok.output
    assert TOKEN not in (project / "modelmora.lock").read_text()
    assert TOKEN not in ok.output


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf://org/nope", "repository not found"),
        ("hf://org/alpha@no-such-branch", "revision 'no-such-branch' not found"),
    ],
)
def test_not_found_names_the_model(
    three_repos: dict[str, str],
    tmp_path: Path,
    env: dict[str, str],
    source: str,
    message: str,
) -> None:
    project = tmp_path / "proj"
    (project / "modelmora.yml").write_text(
        f"registries:\n  hf: {{endpoint: '${{TEST_HUB}}'}}\nmodels:\n  m:\n    source: {source}\n"
    )
    result = run(project, "lock", env=env)
    assert result.exit_code == 2
    assert "models.m:" in result.output and message in result.output


def test_add_then_remove_edit_manifest_and_lock(
    three_repos: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "proj"
    manifest = project / "modelmora.yml"
    manifest.write_text("# my models\n" + manifest.read_text())
    added = run(project, "add", "hf://org/gamma", "--task", "feature-extraction", env=env)
    assert added.exit_code == 0, added.output
    text = manifest.read_text()
    assert text.startswith("# my models\n")
    assert "gamma-2:" in text  # `gamma` exists: a fresh name was derived
    lock = read_lock(project / "modelmora.lock")
    assert lock.models["gamma-2"].revision == three_repos["c2"]
    assert lock.models["gamma-2"].spec["task"] == "feature-extraction"

    removed = run(project, "remove", "gamma-2", env=env)
    assert removed.exit_code == 0, removed.output
    assert "gamma-2" not in manifest.read_text()
    assert "gamma-2" not in read_lock(project / "modelmora.lock").models


def test_failed_add_restores_the_manifest(
    three_repos: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    project = tmp_path / "proj"
    before = (project / "modelmora.yml").read_bytes()
    result = run(project, "add", "hf://org/typo-repo", env=env)
    assert result.exit_code == 2
    assert "repository not found" in result.output and "restored" in result.output
    assert "Added" not in result.output  # it was not
    assert (project / "modelmora.yml").read_bytes() == before
    assert not (project / "modelmora.lock").exists()
