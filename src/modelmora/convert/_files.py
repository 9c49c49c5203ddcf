"""Shared helpers: ONNX graph description, external data, staging, sidecar files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from modelmora.errors import UserInputError
from modelmora.fsutil import sha256_file
from modelmora.records.conversion import ArtifactFile, TensorInfo

MODEL_FILE = "model.onnx"

# Files serving needs next to the graph (tokenizer, labels, pooling). Never weights.
SIDECAR_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "preprocessor_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def list_files(root: Path) -> list[ArtifactFile]:
    return [
        ArtifactFile(
            path=p.relative_to(root).as_posix(), size=p.stat().st_size, sha256=sha256_file(p)
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]


def _tensor_info(value: Any) -> TensorInfo:
    import onnx

    ttype = value.type.tensor_type
    shape: list[int | str] = []
    for dim in ttype.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or "?")
    try:
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    except (KeyError, ValueError):
        dtype = onnx.TensorProto.DataType.Name(ttype.elem_type).lower()
    return TensorInfo(name=value.name, shape=shape, dtype=dtype)


def _all_tensors(graph: Any) -> Iterator[Any]:
    """Initializers and constant tensors of a graph and all its subgraphs."""
    import onnx

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_tensors(g)


def describe(path: Path) -> tuple[int, list[TensorInfo], list[TensorInfo], list[str]]:
    """opset, inputs (without initializers), outputs, external data locations."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor_info(v) for v in model.graph.output]
    locations: set[str] = set()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return opset, inputs, outputs, sorted(locations)


def checked_external_paths(model_path: Path, root: Path, locations: list[str]) -> list[Path]:
    """Resolve external-data locations, refusing any that leave ``root`` (path traversal)."""
    base = model_path.parent
    root_resolved = root.resolve()
    paths: list[Path] = []
    for loc in locations:
        candidate = (base / loc).resolve()
        if Path(loc).is_absolute() or not candidate.is_relative_to(root_resolved):
            raise UserInputError(
                f"{model_path.name}: external data location {loc!r} points outside the "
                "model snapshot; refusing to read it"
            )
        if not candidate.is_file():
            raise UserInputError(
                f"{model_path.name}: external data file {loc!r} is missing from the snapshot"
            )
        paths.append(candidate)
    return paths


def copy_sidecars(src: Path, dest: Path) -> list[str]:
    """Copy tokenizer/config files (and sentence-transformers module configs) into ``dest``."""
    copied: list[str] = []
    rels = [f for f in SIDECAR_FILES if (src / f).is_file()]
    modules = src / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except ValueError:
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            sub = str(entry.get("path", "")) if isinstance(entry, dict) else ""
            if not sub or ".." in Path(sub).parts or Path(sub).is_absolute():
                continue
            rels += [
                p.relative_to(src).as_posix()
                for p in sorted((src / sub).glob("*.json"))
                if p.is_file()
            ]
    for rel in rels:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)
        copied.append(rel)
    return copied


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """Build an artifact in a sibling temp dir; move it into place only when complete.

    A failed or interrupted conversion leaves nothing at ``out_dir``.
    """
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserInputError(f"output directory {out_dir} already exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        for p in tmp.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def onnx_graphs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.onnx") if p.is_file())


Descriptor = TypeVar("Descriptor", bound=BaseModel)


def read_descriptor_file(path: Path, schema: type[Descriptor], what: str) -> Descriptor:
    """A JSON file a source wrote into the snapshot (``modelmora_torch.json`` …), checked
    against its schema; anything wrong with it is the user's to fix, so a UserInputError."""
    try:
        return schema.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise UserInputError(f"{path} is not a valid {what}: {exc}") from exc
