"""Loading ``modelmora.yml``: interpolation, defaults, and errors that point at file:line:col.

Expected positions are computed from the test's own YAML text (``at(text, needle)``), so a
test states *which* token an error must point at, not a magic number.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from modelmora.errors import ManifestError
from modelmora.manifest import LoadedManifest, ModelSpec, load_manifest
from modelmora.manifest.model import BenchmarkSpec, ConvertSpec, ServeSpec, ValidateSpec

pytestmark = pytest.mark.torch_free

SECRET = "hf_Sup3rS3cretTokenValue"

EXAMPLE = """\
registries:
  hf: {endpoint: "${HF_ENDPOINT:-https://huggingface.co}", token: "${HF_TOKEN:-}"}
models:
  minilm:
    source: hf://sentence-transformers/all-MiniLM-L6-v2   # optional @rev
    task: feature-extraction
    files: {include: ["*.json", "*.safetensors", "*.txt"], exclude: []}
    backends: [cpu, cuda]
    convert: {opset: 18, optimize: none, quantize: none}
    validate: {atol: 1.0e-4}
    benchmark: {batch_sizes: [1, 8, 32], seq_len: 128}
    serve: {max_batch_size: 32, max_queue_delay_ms: 5, priority: 0, keep_alive: 10m}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # so that errors name the file `modelmora.yml`


def write(text: str, name: str = "modelmora.yml") -> Path:
    path = Path(name)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def at(text: str, needle: str, nth: int = 0) -> str:
    """``line:col`` (1-based) of the ``nth`` occurrence of ``needle`` in ``text``."""
    text = textwrap.dedent(text)
    idx = -1
    for _ in range(nth + 1):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return f"{line}:{col}"


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    path = write(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, env or {})
    assert info.value.exit_code == 2
    return str(info.value)


# --- happy paths ----------------------------------------------------------------------


def test_full_example_loads_with_env_defaults() -> None:
    loaded = load_manifest(write(EXAMPLE), {})
    spec = loaded.manifest.models["minilm"]
    assert spec.source == "hf://sentence-transformers/all-MiniLM-L6-v2"
    assert spec.backends == ["cpu", "cuda"]
    assert spec.files.include == ["*.json", "*.safetensors", "*.txt"]
    assert spec.validate_.atol == pytest.approx(1e-4)
    assert spec.serve.keep_alive == "10m"
    hf = loaded.registries["hf"]
    assert hf.endpoint == "https://huggingface.co"
    assert hf.token is None  # "${HF_TOKEN:-}" with HF_TOKEN unset → empty → no token
    assert hf.token_env == "HF_TOKEN"


def test_env_values_are_used_and_token_provenance_recorded() -> None:
    env = {"HF_ENDPOINT": "http://127.0.0.1:9999", "HF_TOKEN": SECRET}
    loaded = load_manifest(write(EXAMPLE), env)
    hf = loaded.registries["hf"]
    assert hf.endpoint == "http://127.0.0.1:9999"
    assert hf.token is not None and hf.token.get_secret_value() == SECRET
    assert hf.token_env == "HF_TOKEN"
    assert SECRET not in repr(loaded)
    assert SECRET not in str(loaded)


def test_token_env_names_the_variable_that_supplied_the_value() -> None:
    text = 'registries:\n  hf: {token: "${MY_TOKEN:-${HF_TOKEN}}"}\n'
    loaded = load_manifest(write(text), {"HF_TOKEN": SECRET})
    assert loaded.registries["hf"].token_env == "HF_TOKEN"
    literal = load_manifest(write("registries:\n  hf: {endpoint: http://x}\n"), {})
    assert literal.registries["hf"].token_env is None


def test_only_source_gets_every_default() -> None:
    loaded = load_manifest(write("models:\n  m:\n    source: hf://org/name\n"), {})
    spec = loaded.manifest.models["m"]
    assert spec.backends == ["cpu"]
    assert spec.validate_.atol == 1.0e-4
    assert spec.validate_.rtol == 1.0e-3
    assert spec.convert == ConvertSpec(opset=18, optimize="none", quantize="none")
    assert spec.benchmark == BenchmarkSpec(batch_sizes=[1, 8, 32], seq_len=128)
    assert spec.serve == ServeSpec(max_batch_size=32, keep_alive="10m")
    assert spec.validate_ == ValidateSpec()
    assert spec.files.include is None and spec.files.exclude == []
    assert spec.task is None and not spec.trust_remote_code and not spec.allow_pickle
    assert spec == ModelSpec(source="hf://org/name")


@pytest.mark.parametrize(("env", "expected"), [({}, 32), ({"BATCH": "8"}, 8)])
def test_interpolated_numbers_are_coerced(env: dict[str, str], expected: int) -> None:
    text = 'models:\n  m:\n    source: hf://o/n\n    serve: {max_batch_size: "${BATCH:-32}"}\n'
    loaded = load_manifest(write(text), env)
    assert loaded.manifest.models["m"].serve.max_batch_size == expected


def test_dollar_escape_and_lone_dollar() -> None:
    text = "models:\n  m:\n    source: hf://o/n\n    task: a$$b-$HOME-c$\n"
    loaded = load_manifest(write(text), {"HOME": "/root"})
    assert loaded.manifest.models["m"].task == "a$b-$HOME-c$"


def test_keys_are_not_interpolated() -> None:
    text = "models:\n  m:\n    source: hf://o/n\n    ${KEY}: 1\n"
    err = error_of(text, {"KEY": "task"})
    assert f"modelmora.yml:{at(text, '${KEY}')} models.m.${{KEY}}: unknown key" in err


@pytest.mark.parametrize("text", ["", "# only a comment\n", "models:\n", "registries:\nmodels:\n"])
def test_empty_manifest_is_fine(text: str) -> None:
    loaded = load_manifest(write(text), {})
    assert loaded.manifest.models == {} and loaded.registries == {}


def test_utf8_bom_is_accepted() -> None:
    path = Path("modelmora.yml")
    path.write_bytes(b"\xef\xbb\xbfmodels:\n  m: {source: hf://o/n}\n")
    assert list(load_manifest(path, {}).manifest.models) == ["m"]


def test_anchors_and_merge_keys_share_settings() -> None:
    text = """\
    models:
      a: &base
        source: hf://o/a
        backends: [cpu, cuda]
      b:
        <<: *base
        source: hf://o/b
    """
    models = load_manifest(write(text), {}).manifest.models
    assert models["b"].source == "hf://o/b"
    assert models["b"].backends == ["cpu", "cuda"]


# --- locations ------------------------------------------------------------------------


def test_location_of_fields() -> None:
    loaded = load_manifest(write(EXAMPLE), {})
    assert loaded.location(("models", "minilm")) == tuple(
        map(int, at(EXAMPLE, "minilm:").split(":"))
    )
    assert loaded.location(("models", "minilm", "validate", "atol")) == tuple(
        map(int, at(EXAMPLE, "atol").split(":"))
    )
    # `validate_` (the Python attribute) is accepted for the `validate` key
    assert loaded.location(("models", "minilm", "validate_")) == loaded.location(
        ("models", "minilm", "validate")
    )
    assert loaded.location(("models", "minilm", "backends", 1)) == tuple(
        map(int, at(EXAMPLE, "cuda").split(":"))
    )
    assert loaded.location(("models", "minilm", "source"), value=True) == tuple(
        map(int, at(EXAMPLE, "hf://sentence").split(":"))
    )
    assert loaded.location(("models", "nope")) is None
    assert loaded.location(("models", "minilm", "serve", "max_queue_size")) is None
    described = loaded.describe(("models", "minilm"))
    assert described == f"modelmora.yml:{at(EXAMPLE, 'minilm:')} models.minilm"


def test_describe_falls_back_to_the_nearest_located_parent() -> None:
    loaded = load_manifest(write(EXAMPLE), {})
    described = loaded.describe(("models", "minilm", "serve", "max_queue_size"))
    assert described == f"modelmora.yml:{at(EXAMPLE, 'serve:')} models.minilm.serve.max_queue_size"


def test_loaded_manifest_is_a_frozen_value() -> None:
    loaded = load_manifest(write(EXAMPLE), {})
    assert isinstance(loaded, LoadedManifest)
    with pytest.raises(AttributeError):
        loaded.path = Path("other.yml")  # type: ignore[misc]


# --- errors with locations ------------------------------------------------------------


def test_wrong_type_points_at_the_value() -> None:
    text = "models:\n  minilm:\n    source: hf://o/n\n    validate: {atol: abc}\n"
    assert error_of(text) == (
        f"modelmora.yml:{at(text, 'abc')} models.minilm.validate.atol: Input should be a "
        "valid number, unable to parse string as a number (got 'abc')"
    )


def test_missing_env_var_points_at_the_value_and_suggests_a_default() -> None:
    text = "models:\n  m:\n    source: hf://${ORG}/name\n"
    assert error_of(text) == (
        f"modelmora.yml:{at(text, 'hf://')} models.m.source: environment variable ORG is not "
        "set (set ORG or use ${ORG:-default})"
    )


def test_required_env_var_message() -> None:
    text = "registries:\n  hf:\n    token: ${HF_TOKEN:?create one at hf.co/settings/tokens}\n"
    assert error_of(text) == (
        f"modelmora.yml:{at(text, '${HF')} registries.hf.token: environment variable HF_TOKEN "
        "is not set: create one at hf.co/settings/tokens (set HF_TOKEN)"
    )


def test_unknown_key_points_at_the_key_with_did_you_mean() -> None:
    text = "models:\n  m:\n    source: hf://o/n\n    validate:\n      atoll: 0.1\n"
    err = error_of(text)
    assert err.startswith(f"modelmora.yml:{at(text, 'atoll')} models.m.validate.atoll: ")
    assert "unknown key 'atoll' (did you mean 'atol'? allowed keys: atol, rtol," in err


def test_unknown_top_level_key() -> None:
    text = "model:\n  m: {source: hf://o/n}\n"
    assert error_of(text) == (
        "modelmora.yml:1:1 model: unknown key 'model' (did you mean 'models'? "
        "allowed keys: registries, models)"
    )


def test_python_attribute_name_is_not_a_key() -> None:
    text = "models:\n  m:\n    source: hf://o/n\n    validate_: {atol: 1}\n"
    err = error_of(text)
    assert err.startswith(
        f"modelmora.yml:{at(text, 'validate_')} models.m.validate_: unknown key 'validate_' "
        "(did you mean 'validate'?"
    )


def test_missing_source_points_at_the_model() -> None:
    text = "models:\n  m:\n    task: feature-extraction\n"
    assert error_of(text) == (
        f"modelmora.yml:{at(text, 'm:')} models.m.source: required key is missing "
        "(every model needs a source, e.g. `source: hf://org/name`)"
    )


def test_empty_model_points_at_its_key() -> None:
    text = "models:\n  m:\n  n: {source: hf://o/n}\n"
    assert error_of(text) == (
        f"modelmora.yml:{at(text, 'm:')} models.m: Input should be a valid dictionary or "
        "instance of ModelSpec (got an empty value)"
    )


def test_invalid_model_name() -> None:
    text = "models:\n  bad name: {source: hf://o/n}\n"
    err = error_of(text)
    assert err.startswith(f"modelmora.yml:{at(text, 'bad name')} models['bad name']: invalid ")


def test_list_item_error_and_literal_choices() -> None:
    text = "models:\n  m:\n    source: hf://o/n\n    backends: [cpu, gpu]\n"
    err = error_of(text)
    assert err.startswith(f"modelmora.yml:{at(text, 'gpu')} models.m.backends[1]: Input should")
    assert "'cuda'" in err and "(got 'gpu')" in err


def test_all_errors_are_reported_sorted_by_position() -> None:
    text = """\
    models:
      b:
        source: hf://o/b
        serve: {keep_alive: soon}
      a:
        source: hf://${MISSING}/a
        convert: {opset: 99}
    """
    lines = error_of(text).splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [
        f"modelmora.yml:{at(text, 'soon')}",
        f"modelmora.yml:{at(text, 'hf://$')}",
        f"modelmora.yml:{at(text, '99')}",
    ]
    assert "invalid duration 'soon'" in lines[0]
    assert "MISSING" in lines[1]
    assert "less than or equal to 23" in lines[2]


def test_unknown_scheme_and_registry_are_located() -> None:
    text = "models:\n  a: {source: 'gs://bucket/x'}\n  b: {source: hf://o/n, registry: corp}\n"
    lines = error_of(text).splitlines()
    source = at(text, "'gs://")
    assert lines[0].startswith(f"modelmora.yml:{source} models.a.source: unknown ")
    assert "'gs'" in lines[0] and "hf" in lines[0]
    assert lines[1].startswith(f"modelmora.yml:{at(text, 'corp')} models.b.registry: unknown ")


def test_unparseable_source() -> None:
    text = "models:\n  a: {source: sentence-transformers/all-MiniLM-L6-v2}\n"
    err = error_of(text)
    assert err.startswith(f"modelmora.yml:{at(text, 'sentence')} models.a.source: cannot parse")
    assert "hf://org/name" in err


# --- YAML-level errors ----------------------------------------------------------------


def test_yaml_syntax_error_is_located() -> None:
    text = "models:\n  m:\n    source: a: b\n"
    assert error_of(text) == (
        f"modelmora.yml:{at(text, ': b')}: mapping values are not allowed here"
    )


def test_unclosed_flow_sequence() -> None:
    text = "models:\n  m: {source: hf://o/n, backends: [cpu}\n"
    err = error_of(text)
    assert err.startswith(f"modelmora.yml:{at(text, '}')}: ")
    assert "while parsing a flow sequence" in err


def test_tab_indentation() -> None:
    text = "models:\n\tm: {source: hf://o/n}\n"
    err = error_of(text)
    assert err.startswith(f"modelmora.yml:{at(text, chr(9))}: ")
    assert "cannot start any token" in err


def test_duplicate_key_names_the_first_definition() -> None:
    text = "models:\n  m: {source: hf://o/a}\n  x: {source: hf://o/x}\n  m: {source: hf://o/b}\n"
    assert error_of(text) == (
        f"modelmora.yml:{at(text, 'm:', 1)}: duplicate key 'm' (first defined on line 2)"
    )


def test_duplicate_token_does_not_echo_values() -> None:
    text = f"registries:\n  hf:\n    token: {SECRET}\n    token: {SECRET}x\n"
    err = error_of(text)
    assert SECRET not in err
    second = at(text, "token", 1)
    assert err == f"modelmora.yml:{second}: duplicate key 'token' (first defined on line 3)"


@pytest.mark.parametrize(
    ("text", "what"), [("- a\n- b\n", "a list"), ("hello\n", "the value 'hello'")]
)
def test_top_level_must_be_a_mapping(text: str, what: str) -> None:
    assert error_of(text) == (
        "modelmora.yml:1:1: the top level must be a mapping with 'models:' (and optionally "
        f"'registries:'), not {what}"
    )


def test_multiple_documents_are_rejected() -> None:
    text = "models: {}\n---\nmodels: {}\n"
    err = error_of(text)
    assert err.startswith(f"modelmora.yml:{at(text, '---')}: ")
    assert "single document" in err


def test_non_utf8_file() -> None:
    path = Path("modelmora.yml")
    path.write_bytes(b"models:\n  m: {source: hf://o/caf\xe9}\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {})
    col = len(b"  m: {source: hf://o/caf") + 1
    assert info.value.message == f"modelmora.yml:2:{col}: not valid UTF-8 (byte 0xe9)"
    assert info.value.hint == "save the file as UTF-8"


def test_missing_file() -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(Path("modelmora.yml"), {})
    assert info.value.message == "modelmora.yml: file not found"
    assert info.value.exit_code == 2
    assert "modelmora init" in (info.value.hint or "")


def test_directory_instead_of_file() -> None:
    Path("modelmora.yml").mkdir()
    with pytest.raises(ManifestError, match="is a directory"):
        load_manifest(Path("modelmora.yml"), {})


def test_path_outside_cwd_is_shown_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("models: [\n")
    absolute = tmp_path / "modelmora.yml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ManifestError) as info:
        load_manifest(absolute, {})
    assert str(info.value).startswith(f"{absolute}:2:1: ")


# --- secrets --------------------------------------------------------------------------


def test_token_value_never_in_errors() -> None:
    text = """\
    registries:
      hf: {token: "${HF_TOKEN}"}
      other: {token: 123456789012345}
    models:
      m:
        source: hf://o/n
        backends: ["${HF_TOKEN}"]
    """
    err = error_of(text, {"HF_TOKEN": SECRET})
    assert SECRET not in err
    assert "123456789012345" not in err
    lines = err.splitlines()
    assert lines[0].startswith(
        f"modelmora.yml:{at(text, '123')} registries.other.token: Input should be a valid string"
    )
    # defence in depth: a token interpolated into another field is masked if echoed
    item = at(text, '"${HF_TOKEN}"]')
    assert lines[1].startswith(f"modelmora.yml:{item} models.m.backends[0]")
    assert "(got '***')" in lines[1]


def test_errors_do_not_chain_the_validation_error() -> None:
    text = "registries:\n  hf: {token: 123456789012345}\n"
    path = write(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path, {})
    assert info.value.__suppress_context__ and info.value.__cause__ is None
