"""Optional variants of a base artifact: ORT offline graph optimization, dynamic int8, 4-bit
weights (MatMulNBits).

Each variant is its own artifact directory (own key, own validation, own benchmark), built
from the *base* ``model.onnx`` so that variants never stack silently.

Offline-optimized graphs at ``extended``/``all`` may contain fused contrib ops that only the
CPU provider implements and layouts tuned to this machine's CPU; ORT documents them as
"not portable". ``basic`` only does provider-independent rewrites.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from modelmora.convert._files import MODEL_FILE, describe, staged
from modelmora.convert.job import ExportJob
from modelmora.convert.keys import conversion_recipe
from modelmora.errors import ModelMoraError
from modelmora.fsutil import sha256_file
from modelmora.manifest.model import ConvertSpec
from modelmora.records import is_record_file
from modelmora.records.conversion import ConversionResult, SourceFormat

_EXTERNAL_FILE = "model.onnx_data"


def planned_variants(spec: ConvertSpec) -> list[str]:
    """Variant names the manifest asks for, in build order."""
    out: list[str] = []
    if spec.optimize != "none":
        out.append("optimized")
    if spec.quantize == "dynamic-int8":
        out.append("int8")
    elif spec.quantize == "weight-int4":
        out.append("int4")
    return out


def _copy_companions(base_dir: Path, dest: Path, skip: set[str]) -> None:
    """Everything but the graph and its weights: tokenizer, config, pooling…"""
    for path in sorted(base_dir.rglob("*")):
        rel = path.relative_to(base_dir).as_posix()
        if (
            path.is_file()
            and rel not in skip
            and path.suffix != ".onnx"
            and not is_record_file(rel)
        ):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _optimize(base: Path, target: Path, level: str, external: bool) -> None:
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.optimized_model_filepath = str(target)
    if external:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", _EXTERNAL_FILE
        )
    ort.InferenceSession(str(base), options, providers=["CPUExecutionProvider"])


class _RootRecordsTo(logging.Filter):
    """A root-logger filter that re-logs records made on the root logger itself under
    another logger's name, and drops them from the root."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def filter(self, record: logging.LogRecord) -> bool:
        self.target.log(record.levelno, "%s", record.getMessage())
        return False


@contextmanager
def _root_records_as(name: str) -> Iterator[None]:
    """onnxruntime.quantization logs its advice ("consider pre-processing") with
    ``logging.warning``, i.e. on the root logger, which also gives the root logger a stderr
    handler on first use: the line reached the terminal of every int8 install. Within the
    block such records go to the logger ``name`` (the pipeline sends ``onnxruntime`` to the
    run log), and a placeholder handler keeps ``logging.warning`` from configuring the root
    logger. Records of named loggers that propagate to the root are not touched."""
    root = logging.getLogger()
    placeholder, redirect = logging.NullHandler(), _RootRecordsTo(logging.getLogger(name))
    root.addHandler(placeholder)
    root.addFilter(redirect)
    try:
        yield
    finally:
        root.removeFilter(redirect)
        root.removeHandler(placeholder)


def _quantize(base: Path, target: Path, external: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _root_records_as("onnxruntime.quantization"):
        quantize_dynamic(
            base, target, weight_type=QuantType.QInt8, use_external_data_format=external
        )


def _quantize_int4(base: Path, target: Path, external: bool) -> None:
    """Weight-only 4-bit blocks (MatMulNBits): what decoders on CPUs are usually run with."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(base)), block_size=32, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=external)


def make_variant(
    variant: str,
    base_dir: Path,
    out_dir: Path,
    *,
    name: str,
    spec: ConvertSpec,
    source_format: SourceFormat,
    task: str | None,
) -> ConversionResult:
    """Build one variant (``optimized``, ``int8`` or ``int4``) of the artifact in ``base_dir``."""
    job = ExportJob(
        model_dir=base_dir,
        out_dir=out_dir,
        name=name,
        source_format=source_format,
        task=task,
        recipe=conversion_recipe(spec, source_format=source_format, task=task, variant=variant),
    )
    base = base_dir / MODEL_FILE
    _, _, _, locations = describe(base)
    external = bool(locations)
    with staged(out_dir) as tmp:
        try:
            if variant == "optimized":
                _optimize(base, tmp / MODEL_FILE, spec.optimize, external)
            elif variant == "int8":
                _quantize(base, tmp / MODEL_FILE, external)
            elif variant == "int4":
                _quantize_int4(base, tmp / MODEL_FILE, external)
            else:
                raise ValueError(f"unknown variant {variant!r}")
        except ValueError:
            raise
        except Exception as exc:
            raise ModelMoraError(
                f"model '{name}': building the {variant} variant failed: {exc}"
            ) from exc
        _copy_companions(base_dir, tmp, skip=set(locations))
    result = job.result("onnxruntime")
    result.base_sha256 = sha256_file(base)
    return result


def make_variants(
    base: ConversionResult, base_dir: Path, out_root: Path, *, spec: ConvertSpec
) -> list[ConversionResult]:
    """Every variant the spec asks for, each in ``out_root/<variant>``."""
    return [
        make_variant(
            v,
            base_dir,
            out_root / v,
            name=base.name,
            spec=spec,
            source_format=base.source_format,
            task=base.task,
        )
        for v in planned_variants(spec)
    ]
