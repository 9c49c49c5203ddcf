"""Vision models through convert → validate → benchmark, called as plain functions.

Tiny random models built in the test (ViT, ConvNeXt and ResNet classifiers, CLIP and SigLIP
dual encoders, Stable-Diffusion-style pipelines with three schedulers) against the real
references: transformers' image processors and models, the diffusers PyTorch pipeline.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelmora.bench.dispatch import benchmark_artifact
from modelmora.convert import convert
from modelmora.diffusion import DiffusionConfig, DiffusionError, PromptTokenizer
from modelmora.errors import UserInputError
from modelmora.imaging import ImagePreprocessor, test_images
from modelmora.manifest.model import BenchmarkSpec, ConvertSpec, ValidateSpec
from modelmora.serve.ipc import WorkerSpec
from modelmora.serve.runners.text import GROWN_TOKENS
from modelmora.serve.runners.vision import DualEncoderRunner
from modelmora.testing.tiny_models import (
    DIFFUSION_SCHEDULERS,
    make_tiny_clip,
    make_tiny_diffusion,
    make_tiny_image_classifier,
    make_tiny_siglip,
)
from modelmora.validate import validate
from modelmora.validate.torch_ref import transformers_pixel_values

pytestmark = pytest.mark.timeout(600)

FAST = BenchmarkSpec(batch_sizes=[1, 4], warmup=1, iterations=2, steps=[2])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vision")


@pytest.mark.parametrize("family", ["vit", "convnext", "resnet"])
def test_image_classifiers_convert_validate_and_benchmark(root: Path, family: str) -> None:
    """The benchmark feeds images of the model's own size (it used to feed [2, 16, 16, 16]
    and fail with "Input channels C is not equal to kernel channels")."""
    snapshot = make_tiny_image_classifier(root / family, family=family)
    artifact = root / f"{family}-artifact"
    result = convert(snapshot, artifact, name=family, task=None, spec=ConvertSpec())
    assert result.task == "image-classification"
    assert (artifact / "preprocessor_config.json").is_file()
    report = validate(snapshot, artifact / "model.onnx", task=result.task, spec=ValidateSpec())
    assert report.passed, report.summary
    assert report.inputs == "images" and report.top1_agreement == 1.0
    names = [o.name for o in report.outputs]
    assert names == ["preprocessing", "logits"]
    bench = benchmark_artifact(artifact, task=result.task, backend="cpu", spec=FAST)
    assert bench.status == "ok", bench.reason
    assert [b.batch_size for b in bench.batches] == [1, 4]


def test_a_wrong_preprocessing_setting_fails_the_gate_by_name(root: Path) -> None:
    """The artifact's preprocessing (what serving runs) differs from transformers': nearest
    instead of bilinear resampling. The gate says so, apart from the logits."""
    snapshot = make_tiny_image_classifier(root / "vit-pre", family="vit")
    artifact = root / "vit-pre-artifact"
    convert(snapshot, artifact, name="vit", task=None, spec=ConvertSpec())
    config_file = artifact / "preprocessor_config.json"
    config = json.loads(config_file.read_text())
    config["resample"] = 0  # PIL NEAREST
    config_file.write_text(json.dumps(config))
    report = validate(
        snapshot, artifact / "model.onnx", task="image-classification", spec=ValidateSpec()
    )
    assert not report.passed
    failed = [o.name for o in report.outputs if not o.passed]
    assert failed[0] == "preprocessing"
    assert "preprocessing:" in report.summary


@pytest.mark.parametrize(
    "processor",
    [
        ("ViTImageProcessor", {"size": {"height": 24, "width": 20}, "resample": 3}),
        ("ConvNextImageProcessor", {"size": {"shortest_edge": 32}, "crop_pct": 0.9}),
        ("ConvNextImageProcessor", {"size": {"shortest_edge": 400}}),
        ("CLIPImageProcessor", {"size": {"shortest_edge": 30}, "crop_size": 26}),
        ("SiglipImageProcessor", {"size": {"height": 24, "width": 24}}),
    ],
    ids=["vit", "convnext-crop", "convnext-square", "clip", "siglip"],
)
def test_our_preprocessing_equals_transformers(
    tmp_path: Path, processor: tuple[str, dict[str, object]]
) -> None:
    from modelmora.convert.hf import import_transformers

    kind, settings = processor
    getattr(import_transformers(), kind)(**settings).save_pretrained(str(tmp_path))
    images = test_images(4)
    ours = ImagePreprocessor.read(tmp_path)(images)
    theirs = transformers_pixel_values(tmp_path, images)
    assert ours.shape == theirs.shape
    assert float(np.abs(ours - theirs).max()) < 1e-5


@pytest.mark.parametrize(
    ("kind", "make", "padding"),
    [("clip", make_tiny_clip, True), ("siglip", make_tiny_siglip, "max_length")],
)
def test_dual_encoder_towers_convert_and_serve_like_pytorch(
    root: Path, kind: str, make: Callable[[Path], Path], padding: bool | str
) -> None:
    """Both towers convert, pass the gate and benchmark; the worker's runner embeds a text
    the same alone and in a batch, as ``get_text_features`` does with the padding the model
    was trained with (SigLIP pools the last position, padding included: a text padded to the
    batch's longest got another vector in each batch)."""
    import torch
    import transformers

    snapshot = make(root / kind)
    artifact = root / f"{kind}-artifact"
    result = convert(snapshot, artifact, name=kind, task=None, spec=ConvertSpec())
    assert result.task == "zero-shot-image-classification"
    assert result.components == {"text": "text_model.onnx", "image": "vision_model.onnx"}
    report = validate(snapshot, artifact / result.model_file, task=result.task, spec=ValidateSpec())
    assert report.passed, report.summary
    assert [o.name for o in report.outputs] == ["preprocessing", "text_embeds", "image_embeds"]
    assert all(o.min_cosine is not None and o.min_cosine > 0.9999 for o in report.outputs[1:])
    bench = benchmark_artifact(
        artifact, task=result.task, backend="cpu", spec=FAST, model_file=result.model_file
    )
    assert bench.status == "ok", bench.reason

    spec = WorkerSpec(
        name=kind,
        artifact_dir=str(artifact),
        onnx_file=result.model_file,
        task=result.task,
        provider="CPUExecutionProvider",
    )
    runner = DualEncoderRunner(spec)
    short, long = "a cat", "two dogs running after a red ball on a long sandy beach"
    alone = runner.embed([short]).arrays["embedding"][0]
    batched = runner.embed([long, short]).arrays["embedding"]
    model = transformers.AutoModel.from_pretrained(str(snapshot)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(snapshot))
    encoded = tokenizer([long, short], padding=padding, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.get_text_features(**encoded).numpy()
    assert _cosine(alone, batched[1]) > 0.9999
    assert min(_cosine(a, b) for a, b in zip(batched, expected, strict=True)) > 0.9999
    # A token budget short of two padded rows: each text-tower call within it (one row
    # each), the same vectors.
    width = runner.text.encode([long, short])[1].shape[1]
    small = DualEncoderRunner(replace(spec, max_batch_tokens=2 * width - 1))
    calls = _RecordedSession(small.text_session)
    small.text_session = calls
    split = small.embed([long, short]).arrays["embedding"]
    assert calls.sizes == [width, width]
    np.testing.assert_allclose(split, batched, rtol=1e-5, atol=1e-6)
    # Texts of GROWN_TOKENS or more mark the worker grown, as a text encoder's do: it gives
    # the memory back once idle.
    assert not runner.grown
    runner.embed([long] * -(-GROWN_TOKENS // width))
    assert runner.grown


class _RecordedSession:
    """The real ONNX Runtime session, recording rows × tokens of every call it runs."""

    def __init__(self, session: Any) -> None:
        self.session, self.sizes = session, []

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        self.sizes.append(int(feed["input_ids"].size))
        return self.session.run(names, feed)


def test_a_dual_encoder_without_a_fast_tokenizer_is_refused_by_name(root: Path) -> None:
    snapshot = make_tiny_siglip(root / "siglip-slow")
    (snapshot / "tokenizer.json").unlink()
    out = root / "siglip-slow-artifact"
    with pytest.raises(UserInputError, match=r"'siglip-slow' has no tokenizer\.json"):
        convert(snapshot, out, name="siglip-slow", task=None, spec=ConvertSpec())
    assert not out.exists()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("scheduler", DIFFUSION_SCHEDULERS)
def test_diffusion_pipelines_match_diffusers(root: Path, scheduler: str) -> None:
    snapshot = make_tiny_diffusion(root / f"sd-{scheduler}", scheduler=scheduler)
    artifact = root / f"sd-{scheduler}-artifact"
    result = convert(snapshot, artifact, name="sd", task=None, spec=ConvertSpec())
    assert result.task == "text-to-image" and result.source_format == "diffusers"
    assert sorted(result.components) == ["text_encoder", "unet", "vae_decoder"]
    assert not (artifact / "vae_encoder").exists()
    spec = ValidateSpec(steps=3)
    report = validate(snapshot, artifact / result.model_file, task=result.task, spec=spec)
    assert report.passed, report.summary
    assert report.psnr_db is not None and report.psnr_db > 60
    strict = validate(
        snapshot,
        artifact / result.model_file,
        task=result.task,
        spec=spec.model_copy(update={"min_psnr_db": 500.0}),
    )
    assert not strict.passed and "min_psnr_db 500" in strict.summary
    bench = benchmark_artifact(artifact, task=result.task, backend="cpu", spec=FAST)
    assert bench.status == "ok" and bench.kind == "diffusion", bench.reason
    assert [(b.seq_len, b.batch_size) for b in bench.batches] == [(2, 1)]


def test_an_unsupported_scheduler_is_refused_at_convert_naming_it(root: Path) -> None:
    snapshot = make_tiny_diffusion(root / "sd-lms", scheduler="ddim")
    index = json.loads((snapshot / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "LMSDiscreteScheduler"]  # the class diffusers loads
    (snapshot / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UserInputError, match="scheduler LMSDiscreteScheduler is not supported"):
        convert(snapshot, root / "sd-lms-artifact", name="sd", task=None, spec=ConvertSpec())
    assert not (root / "sd-lms-artifact").exists()  # nothing half-written


def test_a_prompt_past_the_text_encoder_is_refused_with_both_lengths(root: Path) -> None:
    snapshot = make_tiny_diffusion(root / "sd-prompt", scheduler="ddim")
    artifact = root / "sd-prompt-artifact"
    convert(snapshot, artifact, name="sd", task=None, spec=ConvertSpec())
    config = DiffusionConfig.read(artifact)
    tokenizer = PromptTokenizer(artifact, config.max_tokens)
    assert tokenizer.encode("a cat").shape == (config.max_tokens,)
    with pytest.raises(
        DiffusionError, match=r"prompt has \d+ tokens; the text encoder takes at most 32"
    ):
        tokenizer.encode("a cat " * 40)
    shutil.rmtree(artifact)
