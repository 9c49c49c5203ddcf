"""The manifest and the lock are input: hostile or mangled files give a located error.

Hand-written cases for each defect, then property tests (hypothesis): whatever bytes the
manifest loader or the lock reader get, they answer with a result or a clean
ModelMoraError, never another exception or a hang.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelmora.errors import LockFileError, ManifestError, ModelMoraError
from modelmora.lock import LockedFile, LockedModel, LockFile
from modelmora.lock.io import dumps_lock, loads_lock
from modelmora.manifest import load_manifest
from modelmora.manifest.load import MAX_MANIFEST_BYTES, load_manifest_text

pytestmark = pytest.mark.torch_free

MANIFEST = Path("modelmora.yml")


def _lock(*paths: str, name: str = "m") -> LockFile:
    files = tuple(LockedFile(path=p, size=1, sha256="a" * 64) for p in paths)
    entry = LockedModel(name=name, source=f"hf://o/{name}", revision="r" * 40, spec={}, files=files)
    return LockFile(models={name: entry})


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\nmodels: {}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_bomb(9), "expands to more than 100000 values through aliases"),
        ("a: &a [*a]\nmodels: {}\n", "1:4: an alias refers to a value that contains it"),
        ("models: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels deep"),
        ("models:\n  m: !!python/object:os.system {source: x}\n", "2:6: YAML tags such as"),
        ("models:\n  m:\n    source: !!python/name:os.system ''\n", "3:13: YAML tags such as"),
        ("models: !custom {}\n", "1:9: YAML tags such as !custom"),
        ("x: [" + ", ".join([f"&a{i} 1, *a{i}" for i in range(101)]) + "]\n", "101 aliases"),
    ],
)
def test_hostile_yaml_is_refused_with_its_location(text: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(ManifestError) as info:
        load_manifest_text(text, MANIFEST, env={})
    assert expected in str(info.value)
    assert str(info.value).startswith("modelmora.yml:")
    assert time.monotonic() - started < 30  # a bound, not a benchmark: the bomb is not expanded


def test_merge_keys_still_work() -> None:
    text = "x-base: &b {task: feature-extraction}\nmodels:\n  m:\n    <<: *b\n    source: ./m\n"
    with pytest.raises(ManifestError, match="unknown key 'x-base'"):
        load_manifest_text(text, MANIFEST, env={})  # located complaint, not a TypeError


def test_an_oversized_manifest_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "modelmora.yml"
    path.write_bytes(b"# " + b"x" * MAX_MANIFEST_BYTES + b"\nmodels: {}\n")
    with pytest.raises(ManifestError, match="larger than 4 MiB"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "../../etc"', "model name '../../etc' is not allowed"),
        ('name = "."', "model name '.' is not allowed"),
        ('name = "m"\nfile = [{path = "../x", size = 1, sha256 = "%s"}]', "'..'"),
        ('name = "m"\nfile = [{path = "/etc/x", size = 1, sha256 = "%s"}]', "absolute"),
        ('name = "m"\nfile = [{path = "a\\u0000b", size = 1, sha256 = "%s"}]', "control"),
        ('name = "m"\nfile = []', "no files"),
        (
            'name = "m"\nfile = [{path = "a", size = 1, sha256 = "%s"}, '
            '{path = "a/b", size = 1, sha256 = "%s"}]',
            "'a' is a file and also the directory of 'a/b'",
        ),
    ],
)
def test_a_lock_entry_that_cannot_be_laid_out_is_refused_on_read(text: str, expected: str) -> None:
    body = text.replace("%s", "a" * 64)
    if "file =" not in body:
        body += '\nfile = [{path = "a", size = 1, sha256 = "' + "a" * 64 + '"}]'
    lock = f'version = 1\n[[model]]\nsource = "hf://o/m"\nrevision = "r"\n{body}\n'
    with pytest.raises(LockFileError) as info:
        loads_lock(lock)
    assert expected in str(info.value)


def test_a_truncated_or_edited_lock_is_named_by_its_integrity_digest() -> None:
    text = dumps_lock(
        LockFile(models={**_lock("a.json").models, **_lock("b.json", name="n").models})
    )
    assert loads_lock(text) is not None
    truncated = text[: text.rindex("[[model]]")]  # still valid TOML: one model fewer
    with pytest.raises(LockFileError, match="truncated or edited by hand"):
        loads_lock(truncated)
    edited = text.replace("size = 1", "size = 2", 1)
    with pytest.raises(LockFileError, match="truncated or edited by hand"):
        loads_lock(edited)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_manifest_text_gives_a_manifest_or_a_clean_error(text: str) -> None:
    with contextlib.suppress(ManifestError):
        load_manifest_text(text, MANIFEST, env={})


_yaml_bits = st.sampled_from(
    [
        "models:",
        "\n  m:",
        "\n    source: ./m",
        " &a",
        " *a",
        " [",
        "]",
        " {",
        "}",
        ", ",
        "<<: *a",
        " !!str",
        " !x",
        "\n",
        "  ",
        "- ",
        "'",
        '"',
        "${X}",
        ": ",
        "#",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_yaml_bits, max_size=40).map("".join))
def test_yamlish_fragments_give_a_manifest_or_a_clean_error(text: str) -> None:
    with contextlib.suppress(ManifestError):
        load_manifest_text(text, MANIFEST, env={})


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_lock_text_gives_a_lock_or_a_clean_error(text: str) -> None:
    with contextlib.suppress(ModelMoraError):
        loads_lock("version = 1\n" + text)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_mangled_real_lock_gives_a_lock_or_a_clean_error(data: st.DataObject) -> None:
    text = dumps_lock(_lock("config.json", "onnx/model.onnx"))
    cut = data.draw(st.integers(0, len(text)))
    insert = data.draw(st.text(max_size=20))
    with contextlib.suppress(ModelMoraError):
        loads_lock(text[:cut] + insert + text[cut + data.draw(st.integers(0, 10)) :])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_any_file_list_is_refused_by_name_or_can_be_laid_out(paths: list[str]) -> None:
    """Whatever a registry lists, the lock model either refuses it with a reason or takes a
    list whose files can all be created under one directory, inside it."""
    import tempfile

    from pydantic import ValidationError

    try:
        files = tuple(LockedFile(path=p, size=1, sha256="a" * 64) for p in paths)
        entry = LockedModel(name="m", source="s", revision="r", spec={}, files=files)
    except ValidationError as exc:
        assert exc.errors()[0]["msg"]
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "snapshot"
        for f in entry.files:
            target = root / f.path
            assert target.resolve().is_relative_to(root.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"x")
        assert sum(1 for p in root.rglob("*") if p.is_file()) == len(entry.files)
