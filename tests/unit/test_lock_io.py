"""The lock file format: deterministic bytes, atomic writes, strict and helpful reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelmora.errors import LockFileError
from modelmora.lock import LockedFile, LockedModel, LockFile, read_lock, write_lock
from modelmora.lock.io import dumps_lock, loads_lock
from modelmora.lock.resolve import lock_spec
from modelmora.manifest.model import ModelSpec

pytestmark = pytest.mark.torch_free

SHA_A = "a" * 64
SHA_B = "b" * 64


def _entry(name: str, *paths: str) -> LockedModel:
    return LockedModel(
        name=name,
        source=f"hf://org/{name}",
        revision="0123456789abcdef0123456789abcdef01234567",
        spec=lock_spec(ModelSpec(source=f"hf://org/{name}").normalized()),
        metadata={"pipeline_tag": "feature-extraction"},
        files=tuple(LockedFile(path=p, size=len(p), sha256=SHA_A) for p in paths),
    )


def test_same_content_in_any_order_gives_identical_bytes() -> None:
    one = LockFile(models={"b": _entry("b", "z.json", "a.json"), "a": _entry("a", "x")})
    two = LockFile(models={"a": _entry("a", "x"), "b": _entry("b", "a.json", "z.json")})
    assert dumps_lock(one) == dumps_lock(two)
    text = dumps_lock(one)
    assert text.index('name = "a"') < text.index('name = "b"')
    assert text.index('"a.json"') < text.index('"z.json"')


def test_round_trip_preserves_every_field() -> None:
    lock = LockFile(models={"a": _entry("a", "config.json", "model.safetensors")})
    again = loads_lock(dumps_lock(lock))
    assert again == lock
    assert dumps_lock(again) == dumps_lock(lock)


def test_write_is_atomic_and_reports_change(tmp_path: Path) -> None:
    path = tmp_path / "modelmora.lock"
    lock = LockFile(models={"a": _entry("a", "x")})
    assert write_lock(path, lock) is True
    assert write_lock(path, lock) is False
    assert [p.name for p in tmp_path.iterdir()] == ["modelmora.lock"]
    assert read_lock(path) == lock


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = 1\n[[model]\n", "not valid TOML"),
        ("version = 99\n", "unsupported lock format version 99"),
        ('version = 1\n[[model]]\nname = "m"\nsource = "hf://o/m"\n', "model 'm' is malformed"),
        (
            'version = 1\n[[model]]\nname = "m"\nsource = "s"\nrevision = "r"\n'
            'file = [{path = "a", size = 1, sha256 = "nothex"}]\n',
            "files.0.sha256",
        ),
        ("version = 1\nsurprise = true\n", "unknown top-level keys ['surprise']"),
    ],
)
def test_corrupt_or_hand_edited_lock_is_a_clear_error(text: str, expected: str) -> None:
    with pytest.raises(LockFileError) as info:
        loads_lock(text)
    assert expected in str(info.value)
    assert info.value.exit_code == 2


def test_duplicate_model_is_refused() -> None:
    text = dumps_lock(LockFile(models={"a": _entry("a", "x")}))
    body = text.split("[[model]]", 1)[1]
    with pytest.raises(LockFileError, match="'a' appears twice"):
        loads_lock(text + "\n[[model]]" + body)


def test_missing_lock_says_what_to_run(tmp_path: Path) -> None:
    """``lock`` where a manifest exists; ``init`` where there is not even that."""
    with pytest.raises(LockFileError) as nothing:
        read_lock(tmp_path / "modelmora.lock")
    assert "modelmora init" in str(nothing.value.hint)
    (tmp_path / "modelmora.yml").write_text("models: {}\n")
    with pytest.raises(LockFileError) as no_lock:
        read_lock(tmp_path / "modelmora.lock")
    assert "run `modelmora lock` first" in str(no_lock.value.hint)


def test_etag_is_written_only_when_known_and_stays_out_of_the_digests() -> None:
    """Locks of sources without ETags keep their bytes; an etag never renames a snapshot."""
    plain = _entry("a", "config.json", "model.onnx")
    assert "etag" not in dumps_lock(LockFile(models={"a": plain}))
    tagged = plain.model_copy(
        update={"files": tuple(f.model_copy(update={"etag": f"md5-{f.path}"}) for f in plain.files)}
    )
    text = dumps_lock(LockFile(models={"a": tagged}))
    assert 'etag = "md5-config.json"' in text
    assert loads_lock(text).models["a"] == tagged
    assert tagged != plain
    assert tagged.content_digest() == plain.content_digest()
    assert tagged.entry_digest() == plain.entry_digest()


def test_content_digest_formula_is_unchanged_by_the_etag_field() -> None:
    """Snapshot directories and artifact keys of existing stores are named by this formula."""
    entry = _entry("a", "model.onnx")
    tagged = entry.model_copy(
        update={"files": tuple(f.model_copy(update={"etag": "x"}) for f in entry.files)}
    )
    files = [{"path": "model.onnx", "size": len("model.onnx"), "sha256": SHA_A}]
    payload = json.dumps(
        {"revision": entry.revision, "files": files}, sort_keys=True, separators=(",", ":")
    )
    assert tagged.content_digest() == hashlib.sha256(payload.encode()).hexdigest()
