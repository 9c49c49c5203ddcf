"""A Triton Inference Server model repository from installed, validated artifacts.

Each exported model is ``OUT_DIR/<model>/config.pbtxt`` plus ``OUT_DIR/<model>/1/`` holding
the artifact's files (``model.onnx``, external data, tokenizer and config sidecars), copied
and checked against the sha256 the install recorded. The artifact is the one ``modelmora
serve`` would load (:func:`modelmora.serve.discovery.choose_artifact`), so the lock means the
same bytes on either server. Tensor names, types and dims come from the ONNX graph itself;
batching, queueing and priority come from the manifest's ``serve:`` block (docs/export.md has
the field-by-field mapping and the reasons).

Nothing is written until every selected model has been checked; each model directory is
built under a temporary name inside ``OUT_DIR`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from modelmora.errors import IntegrityError, ModelMoraError, UserInputError
from modelmora.records import is_record_file

if TYPE_CHECKING:
    from modelmora.cache import Store
    from modelmora.manifest.model import ServeSpec
    from modelmora.records import ArtifactRecord
    from modelmora.records.conversion import ArtifactFile

__all__ = [
    "DynamicBatching",
    "ExportedModel",
    "PriorityMapping",
    "TritonConfig",
    "TritonTensor",
    "export_triton",
    "preferred_batch_sizes",
    "triton_config",
]

VERSION = "1"
CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
_CHUNK = 4 << 20
"""What install writes next to an artifact (modelmora.records), at its top level."""

# onnx.TensorProto.DataType → Triton DataType. Types Triton has no name for (complex,
# float8, int4…) are refused with the tensor's name.
_ONNX_TO_TRITON = {
    1: "TYPE_FP32",  # FLOAT
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",  # DOUBLE
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


class TritonTensor(BaseModel):
    """One ``input``/``output`` entry of a Triton ``ModelConfig``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    data_type: str
    """Triton's enum name: ``TYPE_FP32``, ``TYPE_INT64`` …"""
    dims: list[int]
    """Without the batch dimension when the model batches; ``-1`` = variable."""
    reshape: list[int] | None = None
    """Set for scalars (per batch row): Triton needs at least one dim, the graph has none."""


class DynamicBatching(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queue_delay_microseconds: int
    preferred_batch_size: list[int]
    priority_levels: int
    default_priority_level: int
    max_queue_size: int


class TritonConfig(BaseModel):
    """The fields of Triton's ``ModelConfig`` that an export sets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    platform: Literal["onnxruntime_onnx"] = "onnxruntime_onnx"
    max_batch_size: int
    """0 when the graph has a fixed leading dimension: Triton then passes shapes as they are."""
    inputs: list[TritonTensor]
    outputs: list[TritonTensor]
    dynamic_batching: DynamicBatching | None

    def to_pbtxt(self, comments: Sequence[str] = ()) -> str:
        """Protobuf text format, as Triton reads ``config.pbtxt``."""
        lines = [f"# {c}" for c in comments]
        lines += [
            f"name: {_quote(self.name)}",
            f"platform: {_quote(self.platform)}",
            f"max_batch_size: {self.max_batch_size}",
        ]
        for field, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                lines += [
                    f"{field} {{",
                    f"  name: {_quote(t.name)}",
                    f"  data_type: {t.data_type}",
                    f"  dims: [ {', '.join(map(str, t.dims))} ]",
                ]
                if t.reshape is not None:
                    lines.append(f"  reshape {{ shape: [ {', '.join(map(str, t.reshape))} ] }}")
                lines.append("}")
        batching = self.dynamic_batching
        if batching is not None:
            lines.append("dynamic_batching {")
            if batching.preferred_batch_size:
                sizes = ", ".join(map(str, batching.preferred_batch_size))
                lines.append(f"  preferred_batch_size: [ {sizes} ]")
            lines += [
                f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}",
                f"  priority_levels: {batching.priority_levels}",
                f"  default_priority_level: {batching.default_priority_level}",
                "  default_queue_policy {",
                f"    max_queue_size: {batching.max_queue_size}",
                "    allow_timeout_override: true",
                "  }",
                "}",
            ]
        return "\n".join(lines) + "\n"


class PriorityMapping(BaseModel):
    """ModelMora priorities (larger = sooner, any int) → Triton levels (1 = soonest, 1..N).

    ``declared`` are the distinct ``serve.priority`` values of every model in the lock, so
    exporting a subset maps priorities exactly as exporting all of them. Level 1 is kept for
    requests above the highest declared priority and level N for those below the lowest, so
    per-request overrides (ModelMora's ``X-Priority``) keep a place on both sides.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    declared: list[int]
    """Highest first."""

    @classmethod
    def from_priorities(cls, priorities: Iterable[int]) -> PriorityMapping:
        return cls(declared=sorted(set(priorities), reverse=True) or [0])

    @property
    def levels(self) -> int:
        return len(self.declared) + 2

    def level(self, priority: int) -> int:
        """The level of the largest declared priority ≤ ``priority`` (1 above them all)."""
        if priority > self.declared[0]:
            return 1
        return 2 + sum(1 for d in self.declared if d > priority)


class ExportedModel(BaseModel):
    """One model written to the repository (what ``--json`` prints)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    directory: Path
    artifact_key: str
    variant: str
    backend: str
    """The backend ``serve`` would use for this artifact (from the install's benchmarks)."""
    onnx_sha256: str
    files: list[str]
    """Relative to the version directory ``<model>/1/``."""
    priority: int
    """The model's ``serve.priority``; ``config.dynamic_batching`` holds its Triton level."""
    priority_mapping: PriorityMapping
    config: TritonConfig
    notes: list[str] = []


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """Powers of two from 2 up to ``max_batch_size``, plus ``max_batch_size`` itself.

    1 is left out on purpose: Triton sends a batch as soon as it reaches a preferred size, so
    a preferred size of 1 would dispatch every request alone and never wait the queue delay.
    """
    sizes = {1 << k for k in range(1, max_batch_size.bit_length()) if 1 << k <= max_batch_size}
    if max_batch_size >= 2:
        sizes.add(max_batch_size)
    return sorted(sizes)


def triton_config(
    name: str, onnx_path: Path, serve: ServeSpec, priorities: PriorityMapping
) -> tuple[TritonConfig, list[str]]:
    """The config for one ONNX graph, and notes on what could not be mapped."""
    graph_inputs, graph_outputs = _graph_tensors(onnx_path)
    notes: list[str] = []
    fixed = [t for t, dims, _ in (*graph_inputs, *graph_outputs) if not dims or dims[0] != -1]
    batching = not fixed
    if fixed:
        notes.append(
            f"tensor {fixed[0]!r} has no variable leading (batch) dimension: exported with "
            "max_batch_size 0 and no dynamic batching; Triton passes full shapes"
        )

    def tensors(items: list[tuple[str, list[int], str]]) -> list[TritonTensor]:
        out = []
        for tensor_name, dims, dtype in items:
            kept = dims[1:] if batching else dims
            out.append(
                TritonTensor(
                    name=tensor_name,
                    data_type=dtype,
                    dims=kept or [1],
                    reshape=None if kept else [],
                )
            )
        return out

    dynamic = None
    if batching:
        dynamic = DynamicBatching(
            max_queue_delay_microseconds=round(serve.max_queue_delay_ms * 1000),
            preferred_batch_size=preferred_batch_sizes(serve.max_batch_size),
            priority_levels=priorities.levels,
            default_priority_level=priorities.level(serve.priority),
            max_queue_size=serve.max_queue_size,
        )
    config = TritonConfig(
        name=name,
        max_batch_size=serve.max_batch_size if batching else 0,
        inputs=tensors(graph_inputs),
        outputs=tensors(graph_outputs),
        dynamic_batching=dynamic,
    )
    return config, notes


def export_triton(
    project_dir: Path,
    out_dir: Path,
    names: Sequence[str] = (),
    *,
    store: Store | None = None,
    force: bool = False,
) -> list[ExportedModel]:
    """Write a Triton model repository for the locked models ``names`` (default: all).

    Raises :class:`UserInputError` (exit 2) before writing anything when a name is not in
    the lock, a model has no validated artifact for its current lock entry, or a model
    directory already exists and ``force`` is off.
    """
    from modelmora.cache import Store
    from modelmora.index import Index
    from modelmora.project import Project
    from modelmora.records import read_artifact
    from modelmora.serve.discovery import choose_artifact

    lock = Project(project_dir).read_lock()
    if not lock.models:
        raise UserInputError("modelmora.lock has no models", hint="run `modelmora add`")
    selected = [entry.name for entry in lock.select(names)]
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"{out_dir} exists and is not a directory")
    existing = [str(out_dir / n) for n in selected if (out_dir / n).exists()]
    if existing and not force:
        raise UserInputError(
            f"model directory already exists, not overwritten: {', '.join(existing)}",
            hint="pass --force to replace, or export to another directory",
        )

    serve_specs = {n: e.model_spec.serve for n, e in lock.models.items()}
    priorities = PriorityMapping.from_priorities(s.priority for s in serve_specs.values())
    statuses = Index(store or Store()).statuses([lock.models[n] for n in selected])
    chosen = {s.name: choose_artifact(s, lock.models[s.name].model_spec.backends) for s in statuses}
    missing = [name for name, choice in chosen.items() if choice is None]
    if missing:
        raise UserInputError(
            f"not installed or not validated: {', '.join(missing)}; nothing was exported",
            hint=f"run `modelmora install {' '.join(missing)}` first",
        )
    plans: list[tuple[ExportedModel, Path, ArtifactRecord]] = []
    for status in statuses:
        choice = chosen[status.name]
        assert choice is not None
        backend, row = choice
        artifact_dir = Path(row.path)
        record = read_artifact(artifact_dir)
        if record is None:
            raise ModelMoraError(
                f"model '{status.name}': {artifact_dir} has no artifact record",
                hint="run `modelmora cache verify`, then `modelmora install`",
            )
        serve = serve_specs[status.name]
        config, notes = triton_config(
            status.name, artifact_dir / record.conversion.model_file, serve, priorities
        )
        exported = ExportedModel(
            name=status.name,
            directory=out_dir / status.name,
            artifact_key=record.key,
            variant=record.variant,
            backend=backend,
            onnx_sha256=record.conversion.sha256,
            files=sorted(_version_path(f.path, record) for f in _model_files(record)),
            priority=serve.priority,
            priority_mapping=priorities,
            config=config,
            notes=notes,
        )
        plans.append((exported, artifact_dir, record))

    out_dir.mkdir(parents=True, exist_ok=True)
    for exported, artifact_dir, record in plans:
        _write_model(exported, artifact_dir, record)
    return [exported for exported, _, _ in plans]


def _model_files(record: ArtifactRecord) -> list[ArtifactFile]:
    """The artifact's files without install's own records.

    Variants built by older versions listed a copy of their base's ``artifact.json`` among
    their files; records never belong in a repository.
    """
    return [f for f in record.conversion.files if not is_record_file(f.path)]


def _version_path(path: str, record: ArtifactRecord) -> str:
    """Where an artifact file goes in ``<model>/1/``: the graph is always ``model.onnx``."""
    return MODEL_FILE if path == record.conversion.model_file else path


def _write_model(exported: ExportedModel, artifact_dir: Path, record: ArtifactRecord) -> None:
    from modelmora.sources.base import safe_relpath

    out_dir = exported.directory.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{exported.name}.", suffix=".partial", dir=out_dir))
    try:
        version_dir = staging / VERSION
        for f in _model_files(record):
            rel = safe_relpath(_version_path(f.path, record), origin=str(artifact_dir))
            _copy_verified(artifact_dir / f.path, version_dir / rel, f.sha256)
        comments = [
            "Generated by `modelmora export triton` from modelmora.lock; --force overwrites it.",
            f"artifact {record.key} ({record.variant})",
            f"model.onnx sha256 {record.conversion.sha256}",
            f"chosen for backend '{exported.backend}' by the install's validation and benchmarks",
        ]
        batching = exported.config.dynamic_batching
        if batching is not None:
            comments.append(
                f"serve.priority {exported.priority} -> priority level "
                f"{batching.default_priority_level} of {batching.priority_levels} (1 = first); "
                f"declared priorities {exported.priority_mapping.declared} -> levels "
                f"2..{batching.priority_levels - 1}"
            )
        comments += exported.notes
        (staging / CONFIG_FILE).write_text(exported.config.to_pbtxt(comments), encoding="utf-8")
        os.chmod(staging, 0o755)
        old = None
        if exported.directory.exists():
            old = out_dir / f".{exported.name}.{uuid.uuid4().hex[:8]}.old"
            exported.directory.rename(old)
        try:
            staging.rename(exported.directory)
        except BaseException:
            if old is not None:
                old.rename(exported.directory)
            raise
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _copy_verified(src: Path, dest: Path, sha256: str) -> None:
    """Copy and hash in one pass: the repository gets exactly the bytes install validated."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
    except FileNotFoundError:
        raise IntegrityError(
            f"{src} is missing from the store",
            hint="run `modelmora cache verify`, then `modelmora install`",
        ) from None
    if digest.hexdigest() != sha256:
        raise IntegrityError(
            f"{src}: sha256 {digest.hexdigest()} differs from the recorded {sha256}",
            hint="the store was modified; run `modelmora cache verify`, then `modelmora install`",
        )


def _graph_tensors(
    onnx_path: Path,
) -> tuple[list[tuple[str, list[int], str]], list[tuple[str, list[int], str]]]:
    """(name, dims with -1 for symbolic/unknown, Triton type) of the graph's inputs/outputs."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except (OSError, ValueError) as exc:
        raise ModelMoraError(f"{onnx_path}: cannot read the ONNX graph ({exc})") from exc
    initializers = {t.name for t in model.graph.initializer}

    def describe(value: Any) -> tuple[str, list[int], str]:
        where = f"{onnx_path}: tensor {value.name!r}"
        if not value.type.HasField("tensor_type"):
            raise ModelMoraError(f"{where} is not a tensor; Triton's ONNX backend needs tensors")
        tensor_type = value.type.tensor_type
        dtype = _ONNX_TO_TRITON.get(tensor_type.elem_type)
        if dtype is None:
            type_name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            raise ModelMoraError(f"{where} has element type {type_name}, which Triton lacks")
        if not tensor_type.HasField("shape"):
            raise ModelMoraError(f"{where} has no rank; Triton needs one")
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
            for d in tensor_type.shape.dim
        ]
        return value.name, dims, dtype

    inputs = [describe(v) for v in model.graph.input if v.name not in initializers]
    outputs = [describe(v) for v in model.graph.output]
    return inputs, outputs


def _quote(text: str) -> str:
    """A protobuf text-format string literal (UTF-8 bytes, octal escapes for the rest)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\':
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'
