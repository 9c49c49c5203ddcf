"""Conversion of real (tiny) models to ONNX: detection, exporters, variants, refusals."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import stat
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from modelmora.convert import (
    artifact_key,
    conversion_recipe,
    convert,
    detect_format,
    detect_task,
    export_torch_module,
    make_variants,
    tool_versions,
)
from modelmora.errors import UserInputError
from modelmora.manifest.model import ConvertSpec, ValidateSpec
from modelmora.testing.tiny_models import linear_onnx, make_tiny_bert, make_tiny_classifier
from modelmora.validate import validate

torch = pytest.importorskip("torch", reason="conversion needs the [convert] extra")

SPEC = ConvertSpec()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("snap") / "tiny-bert")


@pytest.fixture(scope="module")
def tiny_artifact(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("art") / "base"
    convert(tiny_bert, out, name="tiny", task=None, spec=SPEC)
    return out


def _ort_run(model: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return list(session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()}))


def _token_feeds() -> dict[str, np.ndarray]:
    ids = np.array([[2, 50, 60, 70, 3], [2, 80, 90, 3, 0]], dtype=np.int64)
    return {
        "input_ids": ids,
        "attention_mask": (ids != 0).astype(np.int64),
        "token_type_ids": np.zeros_like(ids),
    }


# --- task and format detection -------------------------------------------------------------


def test_task_precedence_declared_then_pipeline_tag_then_architectures(tmp_path: Path) -> None:
    clf = make_tiny_classifier(tmp_path / "clf")
    assert detect_task(clf, declared=None, metadata={}) == "text-classification"
    assert (
        detect_task(clf, declared=None, metadata={"pipeline_tag": "sentence-similarity"})
        == "feature-extraction"
    )
    assert (
        detect_task(clf, declared="token-classification", metadata={"pipeline_tag": "x"})
        == "token-classification"
    )


def test_task_never_comes_from_the_name(tmp_path: Path) -> None:
    # A directory (and model name) that screams "classifier" holding a bare BertModel.
    snap = make_tiny_bert(tmp_path / "bert-sentiment-classifier", sentence_transformers=False)
    task = detect_task(snap, declared=None, metadata={}, name="sentiment-classifier")
    assert task == "feature-extraction"


def test_unknown_architecture_names_the_model_and_the_field(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FooBarWidget"]}))
    with pytest.raises(UserInputError) as err:
        detect_task(tmp_path, declared=None, metadata={}, name="widget")
    text = str(err.value)
    assert "model 'widget'" in text and "FooBarWidget" in text and "models.widget.task" in text


def test_no_task_information_at_all(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match=r"models\.m\.task"):
        detect_task(tmp_path, declared=None, metadata={}, name="m")


def test_detect_format(tmp_path: Path, tiny_bert: Path, tiny_artifact: Path) -> None:
    assert detect_format(tiny_bert) == "transformers"
    assert detect_format(tiny_artifact) == "onnx"
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert detect_format(tmp_path / "sm") == "tf-savedmodel"
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "m.keras").write_bytes(b"")
    assert detect_format(tmp_path / "k") == "keras"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("hi")
    with pytest.raises(UserInputError, match=r"README\.md"):
        detect_format(tmp_path / "empty", name="e")


# --- transformers export -------------------------------------------------------------------


def test_optimum_export_is_a_self_contained_artifact(
    tiny_bert: Path, tiny_artifact: Path, tmp_path: Path
) -> None:
    result = convert(tiny_bert, tmp_path / "again", name="tiny", task=None, spec=SPEC, metadata={})
    assert result.exporter == "optimum"
    assert result.exporter_label.startswith("optimum-onnx ")  # whose version it is
    assert result.exporter_version == metadata.version("optimum-onnx")
    assert result.task == "feature-extraction" and result.opset == SPEC.opset
    assert [i.name for i in result.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert result.outputs[0].name == "last_hidden_state"
    assert result.outputs[0].shape == ["batch_size", "sequence_length", 32]
    model = tmp_path / "again" / "model.onnx"
    assert result.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    paths = {f.path for f in result.files}
    assert {"model.onnx", "tokenizer.json", "config.json", "1_Pooling/config.json"} <= paths
    assert "model.safetensors" not in paths
    assert result.recipe == conversion_recipe(
        SPEC, source_format="transformers", task="feature-extraction"
    )
    for p in (tmp_path / "again").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644
    # Serving loads the artifact directory alone: move it away from the snapshot.
    moved = shutil.copytree(tmp_path / "again", tmp_path / "elsewhere")
    (out,) = _ort_run(moved / "model.onnx", _token_feeds())
    assert out.shape == (2, 5, 32)
    # Export is deterministic for the same inputs.
    assert result.sha256 == hashlib.sha256((tiny_artifact / "model.onnx").read_bytes()).hexdigest()


def test_legacy_torch_exporter_is_recorded_and_validates(tmp_path: Path) -> None:
    snap = make_tiny_classifier(tmp_path / "clf")
    result = convert(
        snap, tmp_path / "out", name="clf", task=None, spec=ConvertSpec(exporter="torch")
    )
    assert result.exporter == "torch.onnx" and result.torch_exporter == "legacy"
    assert result.exporter_version == metadata.version("torch")
    assert [o.name for o in result.outputs] == ["logits"]
    report = validate(snap, tmp_path / "out" / "model.onnx", task=result.task, spec=ValidateSpec())
    assert report.passed, report.summary


def test_dynamo_exporter_on_an_in_memory_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(4, 6)
    result = export_torch_module(
        module,
        (x,),
        tmp_path / "out",
        name="mlp",
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=True,
    )
    assert result.torch_exporter == "dynamo" and result.source_format == "torch"
    assert result.inputs[0].shape[0] == "batch"
    # A batch size the exporter never saw proves the batch axis is really dynamic.
    x7 = torch.randn(7, 6)
    (y,) = _ort_run(tmp_path / "out" / "model.onnx", {"x": x7.numpy()})
    np.testing.assert_allclose(y, module(x7).detach().numpy(), atol=1e-5)


def test_unsupported_task_for_architecture(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as err:
        convert(tiny_bert, tmp_path / "out", name="tiny", task="text-generation", spec=SPEC)
    text = str(err.value)
    assert "model 'tiny'" in text and "text-generation" in text
    assert "feature-extraction" in text and "models.tiny.task" in text
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_suggests_torch_exporter(tmp_path: Path) -> None:
    snap = make_tiny_bert(tmp_path / "snap", sentence_transformers=False)
    config = json.loads((snap / "config.json").read_text())
    config["model_type"] = "frobnicator"
    (snap / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError) as err:
        convert(snap, tmp_path / "out", name="frob", task="feature-extraction", spec=SPEC)
    assert "frobnicator" in str(err.value) and "models.frob.convert.exporter: torch" in str(
        err.value
    )


def test_remote_code_is_not_run_by_default(tmp_path: Path) -> None:
    snap = make_tiny_bert(tmp_path / "snap", sentence_transformers=False)
    marker = tmp_path / "remote-code-ran"
    (snap / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n"
        "from transformers import BertModel as EvilModel\n"
    )
    config = json.loads((snap / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (snap / "config.json").write_text(json.dumps(config))
    result = convert(snap, tmp_path / "out", name="evil", task=None, spec=SPEC)
    assert result.outputs[0].name == "last_hidden_state"
    assert not marker.exists()


# --- refusals --------------------------------------------------------------------------------


def test_pickle_weights_are_refused_unless_opted_in(tmp_path: Path) -> None:
    snap = make_tiny_bert(tmp_path / "snap")
    (snap / "training_args.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(UserInputError) as err:
        convert(snap, tmp_path / "out", name="tiny", task=None, spec=SPEC)
    text = str(err.value)
    assert "training_args.bin" in text and "models.tiny.allow_pickle: true" in text
    assert not (tmp_path / "out").exists()
    result = convert(snap, tmp_path / "out", name="tiny", task=None, spec=SPEC, allow_pickle=True)
    assert result.exporter == "optimum"


def test_output_dir_must_be_empty(tiny_bert: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty"):
        convert(tiny_bert, tmp_path / "out", name="tiny", task=None, spec=SPEC)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_wrong_exporter_for_format(tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"models\.x\.convert\.exporter"):
        convert(
            tiny_artifact, tmp_path / "o", name="x", task=None, spec=ConvertSpec(exporter="tf2onnx")
        )


# --- plain PyTorch directory (TorchScript + descriptor) -----------------------------------


def _torchscript_snapshot(dest: Path) -> Path:
    dest.mkdir(parents=True)
    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh())
    torch.jit.save(torch.jit.trace(module, torch.randn(2, 5)), str(dest / "model.pt"))
    (dest / "modelmora_torch.json").write_text(
        json.dumps(
            {
                "file": "model.pt",
                "inputs": [{"name": "x", "shape": ["batch", 5], "dtype": "float32"}],
                "outputs": ["y"],
            }
        )
    )
    return dest


def test_torchscript_directory_needs_allow_pickle_then_validates(tmp_path: Path) -> None:
    snap = _torchscript_snapshot(tmp_path / "ts")
    assert detect_format(snap) == "torch"
    with pytest.raises(UserInputError, match=r"model\.pt"):
        convert(snap, tmp_path / "out", name="ts", task=None, spec=SPEC)
    result = convert(snap, tmp_path / "out", name="ts", task=None, spec=SPEC, allow_pickle=True)
    assert result.torch_exporter == "legacy" and result.inputs[0].shape == ["batch", 5]
    report = validate(
        snap, tmp_path / "out" / "model.onnx", task=None, spec=ValidateSpec(), allow_pickle=True
    )
    assert report.passed and report.inputs == "seeded", report.summary


# --- ONNX pass-through ---------------------------------------------------------------------


def _external_copy(artifact: Path, dest: Path, location: str) -> Path:
    dest.mkdir(parents=True)
    model = onnx.load(str(artifact / "model.onnx"))
    onnx.save_model(
        model,
        str(dest / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return dest


def test_onnx_passthrough_keeps_external_data(tiny_artifact: Path, tmp_path: Path) -> None:
    snap = _external_copy(tiny_artifact, tmp_path / "snap", "weights.bin")
    shutil.copy(tiny_artifact / "tokenizer.json", snap / "tokenizer.json")
    result = convert(snap, tmp_path / "out", name="ext", task=None, spec=SPEC)
    assert result.exporter == "onnx" and result.external_data
    assert {f.path for f in result.files} == {"model.onnx", "weights.bin", "tokenizer.json"}
    (expected,) = _ort_run(tiny_artifact / "model.onnx", _token_feeds())
    (actual,) = _ort_run(tmp_path / "out" / "model.onnx", _token_feeds())
    np.testing.assert_array_equal(actual, expected)


def test_onnx_external_data_may_not_escape_the_snapshot(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    snap = _external_copy(tiny_artifact, tmp_path / "work" / "snap", "weights.data")
    (snap / "weights.data").rename(tmp_path / "work" / "outside.data")
    model = onnx.load(str(snap / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    onnx.save_model(model, str(snap / "model.onnx"))
    with pytest.raises(UserInputError, match="outside the model snapshot"):
        convert(snap, tmp_path / "out", name="esc", task=None, spec=SPEC)
    assert not (tmp_path / "out").exists()


# --- variants ------------------------------------------------------------------------------


def test_int8_quantization_advice_goes_to_its_logger_not_the_terminal(tmp_path: Path) -> None:
    """onnxruntime.quantization logs "consider pre-processing" on the root logger, which gives
    the root a stderr handler on first use: the line reached every int8 install's terminal.
    A fresh interpreter, as the CLI is: nothing on stderr, the record under `onnxruntime`, the
    root logger left without handlers."""
    import subprocess
    import sys

    base = tmp_path / "base"
    base.mkdir()
    (base / "model.onnx").write_bytes(linear_onnx())
    script = f"""
import logging
from pathlib import Path
from modelmora.convert.variants import make_variant
from modelmora.manifest.model import ConvertSpec

seen = []
class Keep(logging.Handler):
    def emit(self, record):
        seen.append(record.getMessage())
logging.getLogger("onnxruntime").addHandler(Keep())
spec = ConvertSpec(quantize="dynamic-int8")
make_variant("int8", Path({str(base)!r}), Path({str(tmp_path / "int8")!r}), name="lin",
             spec=spec, source_format="onnx", task=None)
assert not logging.getLogger().handlers, logging.getLogger().handlers
print(sum("pre-processing" in m for m in seen))
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "pre-processing" not in run.stderr
    assert run.stdout.strip() == "1"
    assert (tmp_path / "int8" / "model.onnx").is_file()


def test_variants_are_separate_validated_artifacts(
    tiny_bert: Path, tiny_artifact: Path, tmp_path: Path
) -> None:
    spec = ConvertSpec(optimize="extended", quantize="dynamic-int8")
    base = convert(tiny_bert, tmp_path / "base", name="tiny", task=None, spec=spec)
    variants = make_variants(base, tmp_path / "base", tmp_path / "variants", spec=spec)
    assert [v.variant for v in variants] == ["optimized", "int8"]
    digests = {base.sha256}
    for v in variants:
        out = tmp_path / "variants" / v.variant
        assert v.base_sha256 == base.sha256 and v.exporter == "onnxruntime"
        assert v.recipe["variant"] == v.variant and (out / "tokenizer.json").is_file()
        digests.add(v.sha256)
        report = validate(
            tiny_bert,
            out / "model.onnx",
            task=base.task,
            spec=ValidateSpec(),
            quantized=v.variant == "int8",
        )
        assert report.passed, report.summary
    assert len(digests) == 3
    int8 = onnx.load(str(tmp_path / "variants" / "int8" / "model.onnx"))
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in int8.graph.node)


# --- artifact keys -------------------------------------------------------------------------


def test_artifact_key_is_canonical_and_sensitive() -> None:
    inputs = {"model.safetensors": "a" * 64, "config.json": "b" * 64}
    recipe = conversion_recipe(SPEC, source_format="transformers", task="feature-extraction")
    tools = tool_versions("transformers")
    key = artifact_key(inputs, recipe, tools)
    assert key == artifact_key(dict(reversed(list(inputs.items()))), dict(recipe), dict(tools))
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != artifact_key(inputs, {**recipe, "opset": 17}, tools)
    assert key != artifact_key(inputs, recipe, {**tools, "onnxruntime": "0.0.0"})
    assert key != artifact_key({**inputs, "config.json": "c" * 64}, recipe, tools)


def test_tool_versions_are_the_installed_ones_and_scoped_by_format() -> None:
    tools = tool_versions("transformers")
    assert tools["onnxruntime"] == metadata.version("onnxruntime")
    assert tools["optimum-onnx"] == metadata.version("optimum-onnx")
    assert tools["torch"] == metadata.version("torch")
    assert "tf2onnx" not in tools
    assert "torch" not in tool_versions("onnx")


# --- TensorFlow (optional [tf] extra) ------------------------------------------------------


def _keras_model(dest: Path) -> Path:
    keras = pytest.importorskip("keras")
    dest.mkdir(parents=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,), name="features"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    model.save(str(dest / "model.keras"))
    return dest


@pytest.mark.tf
def test_keras_model_converts_and_validates(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="TensorFlow models need the [tf] extra")
    pytest.importorskip("tf2onnx", reason="TensorFlow models need the [tf] extra")
    snap = _keras_model(tmp_path / "keras")
    result = convert(snap, tmp_path / "out", name="k", task=None, spec=SPEC)
    assert result.source_format == "keras" and result.exporter == "tf2onnx"
    assert result.exporter_version == metadata.version("tf2onnx")
    report = validate(snap, tmp_path / "out" / "model.onnx", task=None, spec=ValidateSpec())
    assert report.passed and report.reference == "keras", report.summary


@pytest.mark.tf
def test_tf_savedmodel_converts_and_validates(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="TensorFlow models need the [tf] extra")
    pytest.importorskip("tf2onnx", reason="TensorFlow models need the [tf] extra")
    keras = pytest.importorskip("keras")
    model = keras.models.load_model(str(_keras_model(tmp_path / "k") / "model.keras"))
    model.export(str(tmp_path / "sm"), format="tf_saved_model", verbose=False)
    result = convert(tmp_path / "sm", tmp_path / "out", name="sm", task=None, spec=SPEC)
    assert result.source_format == "tf-savedmodel" and result.inputs[0].name == "features"
    report = validate(
        tmp_path / "sm", tmp_path / "out" / "model.onnx", task=None, spec=ValidateSpec()
    )
    assert report.passed and report.reference == "tf-savedmodel", report.summary
    assert report.outputs[0].max_abs_diff < 1e-4


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed"
)
def test_tf_model_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UserInputError, match=r"modelmora\[tf\]"):
        convert(tmp_path, tmp_path.parent / "out", name="tfm", task=None, spec=SPEC)
