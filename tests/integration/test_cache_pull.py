"""``modelmora pull`` against the real hub emulator, through the real CLI and HfSource."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cache_helpers import CliRunner, write_hub_project

from modelmora.cache import Store, pull
from modelmora.project import Project
from modelmora.testing.hub_emulator import HubEmulator


def test_pull_stores_verified_blobs_and_a_loadable_snapshot(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    weights = os.urandom(3 * 1024 * 1024)
    project = write_hub_project(
        hub,
        tmp_path / "proj",
        {
            "enc": (
                "org/enc",
                {
                    "config.json": b'{"k": 1}',
                    "model.safetensors": weights,
                    "sub/vocab.txt": b"a\nb\n",
                },
            )
        },
    )
    result = run_cli(project.dir, "pull", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["blobs_fetched"] == 3
    assert report["bytes_fetched"] == sum(len(b) for b in project.contents["enc"].values())

    store = Store(home)
    snapshot = Path(report["models"][0]["snapshot"])
    assert snapshot == store.snapshot_dir("enc", project.lock.models["enc"].content_digest())
    for rel, data in project.contents["enc"].items():
        assert (snapshot / rel).read_bytes() == data
        blob = store.blob_path(hashlib.sha256(data).hexdigest())
        assert blob.read_bytes() == data
    assert list(store.partial_dir.iterdir()) == []

    # Second pull: nothing fetched, the hub sees no file request.
    served = hub.bytes_served("org/enc", "model.safetensors")
    again = run_cli(project.dir, "pull", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["blobs_present"] == 3
    assert hub.bytes_served("org/enc", "model.safetensors") == served == len(weights)


def test_files_shared_between_models_are_fetched_and_stored_once(
    hub: HubEmulator, home: Path, tmp_path: Path
) -> None:
    shared = os.urandom(2 * 1024 * 1024)
    project = write_hub_project(
        hub,
        tmp_path / "proj",
        {
            "a": ("org/a", {"model.safetensors": shared, "config.json": b'{"a": 1}'}),
            "b": ("org/b", {"model.safetensors": shared, "config.json": b'{"b": 2}'}),
        },
    )
    report = pull(Project(project.dir), store=Store(home), mirror=None, jobs=4)
    assert report.blobs_fetched == 3
    served = hub.bytes_served("org/a", "model.safetensors") + hub.bytes_served(
        "org/b", "model.safetensors"
    )
    assert served == len(shared)
    assert len(list(Store(home).iter_blobs())) == 3


def test_snapshot_loads_with_transformers_as_a_plain_directory(
    hub: HubEmulator, home: Path, tmp_path: Path
) -> None:
    """The acceptance criterion "loads as a normal directory", with the real library."""
    from transformers import AutoConfig, AutoTokenizer

    from modelmora.testing.tiny_models import make_tiny_bert

    model_dir = make_tiny_bert(tmp_path / "tiny")
    files = {
        p.relative_to(model_dir).as_posix(): p.read_bytes()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    }
    project = write_hub_project(hub, tmp_path / "proj", {"tiny": ("org/tiny", files)})
    report = pull(Project(project.dir), store=Store(home), mirror=None)
    snapshot = report.models[0].snapshot
    assert snapshot is not None
    config = AutoConfig.from_pretrained(snapshot)
    assert config.hidden_size == json.loads(files["config.json"])["hidden_size"]
    tokenizer = AutoTokenizer.from_pretrained(snapshot)  # type: ignore[no-untyped-call]
    assert tokenizer("the quick brown fox")["input_ids"][0] == tokenizer.cls_token_id


def test_offline_works_from_cache_and_names_what_is_missing(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = write_hub_project(
        hub,
        tmp_path / "proj",
        {
            "small": ("org/small", {"config.json": b"{}"}),
            "big": ("org/big", {"model.safetensors": os.urandom(100_000), "config.json": b"[]"}),
        },
    )
    assert run_cli(project.dir, "pull", "small").returncode == 0
    before = len(hub.requests)

    ok = run_cli(project.dir, "pull", "small", env={"HF_HUB_OFFLINE": "1"})
    assert ok.returncode == 0, ok.stderr

    missing = run_cli(project.dir, "pull", "--offline")
    assert missing.returncode == 1
    assert "2 locked file(s)" in missing.stderr
    for f in project.lock.models["big"].files:
        assert f"big: {f.path}" in missing.stderr and f.sha256 in missing.stderr
    assert "Traceback" not in missing.stderr
    assert len(hub.requests) == before  # offline means no request at all
    # The model that was complete is still materialized and usable.
    store = Store(home)
    assert store.read_snapshot("small", project.lock.models["small"].content_digest())


def test_unknown_model_name_is_a_user_error(
    hub: HubEmulator, home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = write_hub_project(hub, tmp_path / "proj", {"a": ("org/a", {"c.json": b"{}"})})
    result = run_cli(project.dir, "pull", "nope")
    assert result.returncode == 2
    assert "not in modelmora.lock: nope (locked models: a)" in result.stderr


def test_offline_pull_reads_local_sources_as_install_does(
    home: Path, tmp_path: Path, run_cli: CliRunner
) -> None:
    project = tmp_path / "proj"
    (project / "m").mkdir(parents=True)
    (project / "m" / "config.json").write_text('{"hidden_size": 8}')
    (project / "modelmora.yml").write_text("models:\n  m:\n    source: ./m\n")
    assert run_cli(project, "lock").returncode == 0
    pulled = run_cli(project, "pull", "--offline", "--json")
    assert pulled.returncode == 0, pulled.stderr
    snapshot = Path(json.loads(pulled.stdout)["models"][0]["snapshot"])
    assert (snapshot / "config.json").read_text() == '{"hidden_size": 8}'
