"""The validation gate: the ONNX artifact must reproduce its reference model.

Steps: ``onnx.checker`` (path-based, so >2 GB graphs work); the same fixed inputs through
the reference (PyTorch / TensorFlow / the source ONNX graph) and through ONNX Runtime on the
CPU provider; per output max abs / rel diff and row-wise cosine similarity; thresholds from
``ValidateSpec``.

Gates (documented in docs/convert.md):

* float artifacts: every element within ``atol + rtol·|ref|`` and every row's cosine ≥
  ``min_cosine``;
* int8 artifacts (``quantized=True``): quantization noise makes element-wise tolerances
  meaningless, so rows must keep cosine ≥ ``int8_min_cosine``; outputs without rows
  (scalars, 1-D) must stay within ``int8_atol``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelmora import tasks
from modelmora.errors import ModelMoraError
from modelmora.imaging import PREPROCESSOR_CONFIG, ImagePreprocessor, test_images
from modelmora.manifest.model import ValidateSpec
from modelmora.records.validation import OutputComparison, ValidationReport
from modelmora.validate.inputs import (
    has_tokenizer,
    image_input_size,
    is_image_input,
    synthetic_inputs,
    tokenize,
    vocab_size,
)

DEFAULT_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Where is the nearest train station?",
    "I love this movie, it was great!",
    "A model is only as good as the data it was trained on, and this one was trained on "
    "very little data indeed.",
)

SENTENCE_EMBEDDING = "sentence_embedding"
PREPROCESSING = "preprocessing"
"""The comparison of the artifact's image preprocessing with transformers' own."""
_SEEDED_BATCH, _SEEDED_SEQ = 2, 16


def _check(onnx_path: Path) -> str | None:
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path))
    except (onnx.checker.ValidationError, ValueError, OSError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _session(onnx_path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _feeds(
    session: Any, onnx_path: Path, reference_dir: Path, sentences: Sequence[str]
) -> tuple[dict[str, np.ndarray], str]:
    specs = session.get_inputs()
    names = {s.name for s in specs}
    images = [s for s in specs if is_image_input(s)]
    if len(images) == len(specs) == 1 and (onnx_path.parent / PREPROCESSOR_CONFIG).is_file():
        # What serving will feed: the test images through the artifact's own preprocessing.
        return {images[0].name: ImagePreprocessor.read(onnx_path.parent)(test_images())}, "images"
    tok_dir = next(
        (d for d in (reference_dir, onnx_path.parent) if (d / "tokenizer.json").is_file()), None
    )
    if "input_ids" in names and tok_dir is not None:
        encoded = tokenize(tok_dir, sentences)
        feeds = {s.name: encoded[s.name] for s in specs if s.name in encoded}
        missing = [s for s in specs if s.name not in feeds]
        if not missing:
            return feeds, "tokenizer"
    elif "input_ids" in names and has_tokenizer(reference_dir):
        raise ModelMoraError(
            f"{reference_dir} has a tokenizer but no tokenizer.json; cannot build fixed inputs"
        )
    feeds = synthetic_inputs(
        specs,
        batch_size=_SEEDED_BATCH,
        seq_len=_SEEDED_SEQ,
        vocab=vocab_size(reference_dir, onnx_path.parent),
        image_size=image_input_size(onnx_path.parent) or image_input_size(reference_dir),
    )
    return feeds, "seeded"


def _reference_outputs(
    reference_dir: Path,
    fmt: str,
    task: str | None,
    feeds: Mapping[str, np.ndarray],
    *,
    trust_remote_code: bool = False,
) -> dict[str, np.ndarray]:
    if fmt == "transformers":
        from modelmora.validate.torch_ref import run_transformers

        return run_transformers(
            reference_dir, task or "feature-extraction", feeds, trust_remote_code=trust_remote_code
        )
    if fmt == "torch":
        from modelmora.convert import torchhub
        from modelmora.validate.torch_ref import run_torchscript

        if torchhub.is_torchhub(reference_dir):
            return torchhub.run_reference(reference_dir, feeds, trust_remote_code=trust_remote_code)

        return run_torchscript(reference_dir, feeds)
    if fmt in ("tf-savedmodel", "keras"):
        from modelmora.convert.tf import run_reference

        return run_reference(reference_dir, fmt, feeds)  # type: ignore[arg-type]
    from modelmora.convert.onnx_source import main_onnx_file

    source = main_onnx_file(reference_dir, name=reference_dir.name)
    session = _session(source)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def _pooling(directory: Path) -> tuple[str, bool] | None:
    """(mode, normalize) from a sentence-transformers layout, if there is one."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except ValueError:
        return None
    mode, normalize = None, False
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            cfg_path = directory / str(module.get("path", "")) / "config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                mode = "max"
            else:
                mode = "mean"
        elif kind.endswith("Normalize"):
            normalize = True
    return (mode, normalize) if mode else None


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str, normalize: bool) -> np.ndarray:
    """sentence-transformers pooling over token embeddings (what serving will compute)."""
    m = mask[..., None].astype(hidden.dtype)
    if mode == "cls":
        out = hidden[:, 0]
    elif mode == "max":
        out = np.where(m > 0, hidden, -np.inf).max(axis=1)
    else:
        out = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    if normalize:
        out = out / np.clip(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12, None)
    return np.asarray(out)


def _min_cosine(actual: np.ndarray, expected: np.ndarray) -> float | None:
    if actual.ndim < 2 or actual.shape[-1] < 2:
        return None
    a = actual.reshape(-1, actual.shape[-1]).astype(np.float64)
    b = expected.reshape(-1, expected.shape[-1]).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na < 1e-12) & (nb < 1e-12)
    cos = (a * b).sum(axis=1) / np.clip(na * nb, 1e-24, None)
    cos = np.where(both_zero, 1.0, cos)
    return float(cos.min()) if cos.size else None


def compare(
    name: str,
    actual: np.ndarray,
    expected: np.ndarray,
    *,
    spec: ValidateSpec,
    quantized: bool,
) -> OutputComparison:
    """One output against its reference, with the gate applied."""
    if actual.shape != expected.shape:
        return OutputComparison(
            name=name,
            shape=list(actual.shape),
            max_abs_diff=float("inf"),
            max_rel_diff=float("inf"),
            mismatched_fraction=1.0,
            min_cosine=None,
            passed=False,
            reason=f"shape {list(actual.shape)} != reference {list(expected.shape)}",
        )
    a, b = actual.astype(np.float64), expected.astype(np.float64)
    diff = np.abs(a - b)
    finite = bool(np.isfinite(a).all())
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / np.maximum(np.abs(b), spec.atol)).max()) if diff.size else 0.0
    mismatched = float((diff > spec.atol + spec.rtol * np.abs(b)).mean()) if diff.size else 0.0
    cosine = _min_cosine(a, b)
    reason = None
    if not finite:
        reason = "non-finite values (NaN/inf) in the ONNX output"
    elif quantized:
        if cosine is not None and cosine < spec.int8_min_cosine:
            reason = f"min cosine {cosine:.6f} < int8_min_cosine {spec.int8_min_cosine}"
        elif cosine is None and max_abs > spec.int8_atol:
            reason = f"max abs diff {max_abs:.3e} > int8_atol {spec.int8_atol:g}"
    else:
        if mismatched > 0:
            reason = (
                f"max abs diff {max_abs:.3e} > atol {spec.atol:g} + rtol {spec.rtol:g}·|ref| "
                f"({mismatched:.1%} of elements)"
            )
        elif cosine is not None and cosine < spec.min_cosine:
            reason = f"min cosine {cosine:.6f} < min_cosine {spec.min_cosine}"
    return OutputComparison(
        name=name,
        shape=list(actual.shape),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        mismatched_fraction=mismatched,
        min_cosine=cosine,
        passed=reason is None,
        reason=reason,
    )


def _summary(outputs: list[OutputComparison]) -> str:
    failed = [o for o in outputs if not o.passed]
    if failed:
        parts = []
        for o in failed:
            cos = f", min cosine {o.min_cosine:.6f}" if o.min_cosine is not None else ""
            parts.append(
                f"{o.name}: {o.reason} (max abs diff {o.max_abs_diff:.3e}, "
                f"max rel diff {o.max_rel_diff:.3e}{cos})"
            )
        return "validation failed: " + "; ".join(parts)
    worst = max(o.max_abs_diff for o in outputs)
    cosines = [o.min_cosine for o in outputs if o.min_cosine is not None]
    cos = f", min cosine {min(cosines):.6f}" if cosines else ""
    return f"{len(outputs)} output(s) match the reference: max abs diff {worst:.3e}{cos}"


def validate(
    reference_dir: Path,
    onnx_path: Path,
    *,
    task: str | None,
    spec: ValidateSpec,
    quantized: bool = False,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> ValidationReport:
    """Compare ``onnx_path`` with the model in ``reference_dir`` (the source snapshot).

    Returns a report whose ``passed`` is the gate; raises only when the *reference* cannot
    be run (a setup problem, not a property of the artifact).
    """
    from modelmora.convert.api import resolve_format
    from modelmora.convert.detect import refuse_pickle

    started = time.perf_counter()
    fmt = resolve_format(reference_dir, name=reference_dir.name, exporter="auto")
    if fmt in ("transformers", "torch"):
        refuse_pickle(reference_dir, name=reference_dir.name, allow_pickle=allow_pickle)
    thresholds = {
        "atol": spec.int8_atol if quantized else spec.atol,
        "rtol": spec.rtol,
        "min_cosine": spec.int8_min_cosine if quantized else spec.min_cosine,
    }

    def report(
        outputs: list[OutputComparison],
        summary: str,
        *,
        checker_error: str | None = None,
        inputs: str = "seeded",
        shapes: dict[str, list[int]] | None = None,
    ) -> ValidationReport:
        return ValidationReport.model_validate(
            {
                "passed": checker_error is None
                and bool(outputs)
                and all(o.passed for o in outputs),
                "summary": summary,
                "checker_ok": checker_error is None,
                "checker_error": checker_error,
                "reference": fmt,
                "inputs": inputs,
                "input_shapes": shapes or {},
                "quantized": quantized,
                "outputs": outputs,
                "wall_time_s": round(time.perf_counter() - started, 3),
                **thresholds,
            }
        )

    checker_error = _check(onnx_path)
    if checker_error is not None:
        return report(
            [],
            f"onnx.checker rejected {onnx_path.name}: {checker_error}",
            checker_error=checker_error,
        )
    if fmt == "diffusers":
        from modelmora.diffusion import DiffusionError
        from modelmora.validate.diffusion import check_diffusion

        try:
            pipeline = check_diffusion(reference_dir, onnx_path.parents[1], spec=spec)
        except DiffusionError as exc:
            return report([], f"{onnx_path.parents[1].name}: {exc}")
        result = report(pipeline.outputs, _summary(pipeline.outputs), inputs="seeded")
        return result.model_copy(update={"psnr_db": pipeline.psnr_db})
    if task == "zero-shot-image-classification" and fmt == "transformers":
        from modelmora.validate.towers import check_dual_encoder

        towers = check_dual_encoder(
            reference_dir,
            onnx_path.parent,
            sentences=sentences,
            compare=lambda n, a, b: compare(
                n, a, b, spec=spec, quantized=quantized and n != PREPROCESSING
            ),
            session=_session,
            trust_remote_code=trust_remote_code,
        )
        return report(towers, _summary(towers), inputs="images")
    info = tasks.known(task) if task else None
    if info is not None and info.generative and fmt == "transformers":
        from modelmora.validate.generation import check_generation

        try:
            verdict = check_generation(
                reference_dir,
                onnx_path,
                spec=spec,
                quantized=quantized,
                trust_remote_code=trust_remote_code,
            )
        except ModelMoraError:
            raise
        except ValueError as exc:  # not a decoder graph with a KV cache
            return report([], f"{onnx_path.name}: {exc}")
        result = report(verdict.outputs, verdict.summary, inputs="tokenizer")
        return result.model_copy(
            update={
                "passed": result.passed and verdict.passed,
                "generation": verdict.checks,
                "top1_agreement": verdict.top1_agreement,
                "perplexity_ratio": verdict.perplexity_ratio,
            }
        )
    try:
        session = _session(onnx_path)
        feeds, kind = _feeds(session, onnx_path, reference_dir, sentences)
        names = [o.name for o in session.get_outputs()]
        actual = dict(zip(names, session.run(names, feeds), strict=True))
    except ModelMoraError:
        raise
    except Exception as exc:
        return report([], f"onnxruntime could not run {onnx_path.name}: {exc}")
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    outputs: list[OutputComparison] = []
    reference_feeds = dict(feeds)
    if kind == "images" and fmt == "transformers":
        from modelmora.validate.torch_ref import transformers_pixel_values

        # The reference sees transformers' preprocessing; the difference is checked apart, so
        # that a resize or normalization mismatch is named as such.
        [(image_input, ours)] = feeds.items()
        theirs = transformers_pixel_values(reference_dir, test_images())
        reference_feeds[image_input] = theirs
        outputs.append(compare(PREPROCESSING, ours, theirs, spec=spec, quantized=False))
    expected = _reference_outputs(
        reference_dir, fmt, task, reference_feeds, trust_remote_code=trust_remote_code
    )
    outputs += [
        compare(n, actual[n], expected[n], spec=spec, quantized=quantized)
        for n in names
        if n in expected and np.issubdtype(np.asarray(actual[n]).dtype, np.number)
    ]
    pooling = _pooling(reference_dir)
    hidden = next((n for n in ("last_hidden_state", "token_embeddings") if n in actual), None)
    if pooling and hidden and hidden in expected and "attention_mask" in feeds:
        mode, normalize = pooling
        outputs.append(
            compare(
                SENTENCE_EMBEDDING,
                pool(actual[hidden], feeds["attention_mask"], mode, normalize),
                pool(expected[hidden], feeds["attention_mask"], mode, normalize),
                spec=spec,
                quantized=quantized,
            )
        )
    if not [o for o in outputs if o.name != PREPROCESSING]:
        return report(
            [],
            f"no ONNX output ({', '.join(names)}) matches a reference output "
            f"({', '.join(expected)})",
            inputs=kind,
            shapes=shapes,
        )
    result = report(outputs, _summary(outputs), inputs=kind, shapes=shapes)
    if kind == "images" and "logits" in actual and "logits" in expected:
        return _with_top1(result, actual["logits"], expected["logits"], spec, quantized)
    return result


def _with_top1(
    result: ValidationReport,
    logits: np.ndarray,
    reference: np.ndarray,
    spec: ValidateSpec,
    quantized: bool,
) -> ValidationReport:
    """Image classifiers: the predicted class must be the reference's on every test image
    (a quantized variant on at least ``quantized_min_top1`` of them)."""
    agreement = float((logits.argmax(axis=-1) == reference.argmax(axis=-1)).mean())
    needed = spec.min_top1 if quantized else 1.0
    update: dict[str, Any] = {"top1_agreement": agreement}
    if agreement < needed:
        update["passed"] = False
        update["summary"] = (
            f"validation failed: top-1 class differs from the reference on "
            f"{1 - agreement:.0%} of the test images (needed ≥ {needed:.0%} agreement); "
            + result.summary
        )
    return result.model_copy(update=update)
