"""``modelmora search`` against HF Hub emulators (real HTTP on 127.0.0.1).

Registries come from the manifest's blocks; those whose source cannot search are listed as
unsupported; one failing registry does not hide the others' results.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from modelmora.cli import main
from modelmora.testing.hub_emulator import HubEmulator

pytestmark = pytest.mark.torch_free

TOKEN = "hf_SEARCHSECRET42"


@pytest.fixture
def catalog(hub: HubEmulator) -> HubEmulator:
    hub.create_repo(
        "org/tiny-bert",
        {"config.json": b"{}"},
        metadata={"pipeline_tag": "feature-extraction", "downloads": 30},
    )
    hub.create_repo(
        "org/tiny-classifier",
        {"config.json": b"{}"},
        metadata={"pipeline_tag": "text-classification", "downloads": 20},
    )
    hub.create_repo(
        "onnxmodelzoo/tiny-linear",
        {"model.onnx": b"onnx"},
        metadata={"pipeline_tag": "image-classification", "downloads": 10},
    )
    hub.create_repo("org/huge-model", {"config.json": b"{}"}, metadata={"downloads": 99})
    return hub


@pytest.fixture
def private_hub(tmp_path: Path) -> Iterator[HubEmulator]:
    with HubEmulator(root=tmp_path / "private") as emulator:
        emulator.create_repo("acme/tiny-secret", {"config.json": b"{}"})
        emulator.require_token(TOKEN)
        yield emulator


def search(root: Path, *args: str, env: dict[str, str]) -> Result:
    return CliRunner(env=env).invoke(
        main, ["-C", str(root), "search", *args], catch_exceptions=False
    )


def registries(result: Result) -> dict[str, dict[str, Any]]:
    return {r["registry"]: r for r in json.loads(result.output)["registries"]}


def test_without_a_manifest_searches_the_hf_hub(catalog: HubEmulator, tmp_path: Path) -> None:
    env = {"HF_ENDPOINT": catalog.url}
    result = search(tmp_path, "tiny", "--json", env=env)
    assert result.exit_code == 0, result.output
    hf = registries(result)["hf"]
    assert hf["supported"] is True
    # Sorted by downloads, as the hub answers; huge-model does not match "tiny".
    assert [h["source"] for h in hf["results"]] == [
        "hf://org/tiny-bert",
        "hf://org/tiny-classifier",
        "hf://onnxmodelzoo/tiny-linear",
    ]
    assert hf["results"][0]["task"] == "feature-extraction"
    assert hf["results"][0]["downloads"] == 30

    only = registries(search(tmp_path, "tiny", "--task", "text-classification", "--json", env=env))
    assert [h["id"] for h in only["hf"]["results"]] == ["org/tiny-classifier"]
    limited = registries(search(tmp_path, "tiny", "--limit", "1", "--json", env=env))
    assert [h["id"] for h in limited["hf"]["results"]] == ["org/tiny-bert"]
    query = [r.query for r in catalog.requests if r.path == "/api/models"][-1]
    assert "search=tiny" in query and "limit=1" in query


def test_manifest_blocks_zoo_scope_and_unsupported_registries(
    catalog: HubEmulator, tmp_path: Path
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "modelmora.yml").write_text(
        "registries:\n"
        "  hf: {endpoint: '${HUB}'}\n"
        "  onnx-zoo: {endpoint: '${HUB}'}\n"
        "  torchhub: {endpoint: /srv/git}\n"
        "  mystery: {endpoint: 'https://example.invalid'}\n"
        "models: {}\n"
    )
    env = {"HUB": catalog.url}
    result = search(root, "tiny", "--json", env=env)
    assert result.exit_code == 0, result.output
    found = registries(result)
    assert list(found) == ["hf", "onnx-zoo", "torchhub", "mystery"]
    assert len(found["hf"]["results"]) == 3
    assert [h["source"] for h in found["onnx-zoo"]["results"]] == ["onnx-zoo://tiny-linear"]
    assert found["torchhub"] == {
        "registry": "torchhub",
        "scheme": "torchhub",
        "supported": False,
        "reason": "torchhub:// sources have no search API",
    }
    assert found["mystery"]["supported"] is False and found["mystery"]["scheme"] is None

    text = search(root, "tiny", env=env)
    assert text.exit_code == 0
    assert "torchhub: search not supported" in text.output
    assert "onnx-zoo: 1 result(s)\n  onnx-zoo://tiny-linear  image-classification" in text.output

    zoo_only = registries(search(root, "tiny", "--registry", "onnx-zoo", "--json", env=env))
    assert list(zoo_only) == ["onnx-zoo"]

    unknown = search(root, "tiny", "--registry", "nope", env=env)
    assert unknown.exit_code == 2
    assert "unknown registry 'nope'" in unknown.output and "hf, onnx-zoo" in unknown.output


def test_a_failing_registry_is_reported_without_hiding_the_others(
    catalog: HubEmulator, private_hub: HubEmulator, tmp_path: Path
) -> None:
    """A block used by an hf:// model gets its scheme from that model."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "modelmora.yml").write_text(
        "registries:\n"
        "  hf: {endpoint: '${HUB}'}\n"
        "  acme: {endpoint: '${ACME}', token: '${ACME_TOKEN:-}'}\n"
        "models:\n  secret:\n    source: hf://acme/tiny-secret\n    registry: acme\n"
    )
    env = {"HUB": catalog.url, "ACME": private_hub.url, "ACME_TOKEN": "hf_WRONG0000"}
    result = search(root, "tiny", "--json", env=env)
    assert result.exit_code == 2  # authentication
    found = registries(result)
    assert len(found["hf"]["results"]) == 3
    assert found["acme"]["scheme"] == "hf" and "ACME_TOKEN" in found["acme"]["error"]
    assert "hf_WRONG0000" not in result.output
    text = search(root, "tiny", env=env)
    assert text.exit_code == 2
    assert "acme (hf://): search failed" in text.stdout
    assert "rejected the token from $ACME_TOKEN (HTTP 401)" in text.stderr
    assert "hf: 3 result(s)\n  hf://org/tiny-bert" in text.stdout

    ok = search(root, "tiny", "--registry", "acme", "--json", env={**env, "ACME_TOKEN": TOKEN})
    assert ok.exit_code == 0, ok.output
    assert [h["source"] for h in registries(ok)["acme"]["results"]] == ["hf://acme/tiny-secret"]
    assert TOKEN not in ok.output
