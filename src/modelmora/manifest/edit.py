"""Edit ``modelmora.yml`` the way a careful human would: touch only the lines that change.

ruamel.yaml's round-trip mode parses the file (giving the line of every key) and renders
the new entry, but the edit itself is a splice of lines rather than a re-dump of the whole
document. Two reasons: a re-dump normalizes spacing and quoting elsewhere in the file, and
ruamel attaches a comment that sits *between* two entries to the entry above it, so deleting
a model through the round-trip tree would also delete the comment that introduces the next
model. Splicing keeps every other byte of the file as it was. Only the unusual shapes that
cannot be spliced (``models: {…}`` in flow style, ``models: null``) fall back to a
round-trip dump.

Every edit is validated with the loader before anything is written, and written atomically:
on any failure the file is untouched.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from modelmora.errors import ManifestError, UserInputError
from modelmora.fsutil import atomic_write_bytes
from modelmora.layout import MODEL_NAME_PATTERN
from modelmora.manifest.load import (
    display_path,
    dotted_path,
    load_manifest_text,
    parse_manifest_yaml,
    read_manifest_text,
)
from modelmora.manifest.model import ModelSpec

__all__ = ["add_model", "init_manifest", "remove_model", "suggest_name"]

_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_MODELS_LINE = re.compile(r"^\s*models\s*:\s*(#.*)?$")


# --- init -----------------------------------------------------------------------------

_HEADER = """\
# modelmora.yml — the models this project needs (reference: docs/manifest.md).
#
#   modelmora lock      pin every model to exact bytes in modelmora.lock
#   modelmora install   download → convert to ONNX → validate → benchmark
#   modelmora serve     serve the installed models over HTTP
#
# Any string may use environment variables: ${VAR} (must be set), ${VAR:-default},
# ${VAR:?message} (fail with message when unset or empty); write $$ for a literal '$'.

# Registry connection settings, keyed by registry name (the source scheme by default).
# registries:
#   hf:
#     endpoint: ${HF_ENDPOINT:-https://huggingface.co}
#     token: ${HF_TOKEN:-}          # never write a token itself into this file

"""

_MODELS_EMPTY = """\
# Models, keyed by a name of your choice (letters, digits, '.', '_', '-').
# Add one with: modelmora add hf://sentence-transformers/all-MiniLM-L6-v2
models:
"""

_EXAMPLE = """\
  # minilm:
  #   source: hf://sentence-transformers/all-MiniLM-L6-v2   # required; hf://org/name[@rev]
  #   task: feature-extraction                # export task; default: from the model config
  #   files:                                  # which files of the repository to fetch
  #     include: ["*.json", "*.safetensors", "*.txt"]
  #     exclude: []
  #   backends: [cpu]                         # cpu cuda tensorrt openvino coreml directml rocm
  #   convert: {opset: 18, optimize: none, quantize: none}  # quantize: dynamic-int8
  #   validate: {atol: 1.0e-4, rtol: 1.0e-3, min_cosine: 0.999}
  #   benchmark: {batch_sizes: [1, 8, 32], seq_len: 128, warmup: 3, iterations: 20}
  #   serve: {max_batch_size: 32, max_queue_delay_ms: 5, priority: 0, keep_alive: 10m}
  #   trust_remote_code: false
  #   allow_pickle: false                     # *.bin/*.pt/*.pkl weights run code on load
"""


def manifest_template(*, example: bool = True) -> str:
    """The text ``modelmora init`` writes: empty ``models:``, fields documented in comments."""
    return _HEADER + _MODELS_EMPTY + (_EXAMPLE if example else "")


def init_manifest(path: Path, *, example: bool = True) -> None:
    """Create a commented ``modelmora.yml``; never overwrite an existing file."""
    if path.exists():
        raise UserInputError(
            f"{display_path(path)} already exists; not overwriting it",
            hint="edit it, or add models with `modelmora add SOURCE`",
        )
    text = manifest_template(example=example)
    load_manifest_text(text, path, env={})  # the template must itself be a valid manifest
    atomic_write_bytes(path, text.encode("utf-8"))


# --- add / remove ---------------------------------------------------------------------


def add_model(
    path: Path, name: str, spec: Mapping[str, Any], *, env: Mapping[str, str] | None = None
) -> None:
    """Append ``name: spec`` at the end of ``models:``, leaving the rest of the file as is.

    ``spec`` is written as given (defaults are not filled in), so the manifest stays short.
    """
    shown = display_path(path)
    if not _NAME_RE.match(name):
        raise UserInputError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', starting "
            "with a letter or digit (at most 128 characters)",
            hint="pick another name with --name",
        )
    _check_spec(name, spec)
    text = read_manifest_text(path)
    try:
        before = load_manifest_text(text, path, env)
    except ManifestError as exc:
        raise ManifestError(exc.message, hint=f"fix {shown} before adding models") from None
    if name in before.manifest.models:
        raise UserInputError(
            f"model {name!r} already exists in {shown}",
            hint=f"pick another name with --name, or run `modelmora remove {name}` first",
        )
    doc = _Doc(text, shown)
    new_text = doc.add(name, dict(spec))
    _validate_and_write(path, new_text, env, f"adding model {name!r}")


def remove_model(path: Path, name: str, *, env: Mapping[str, str] | None = None) -> None:
    """Delete a model's lines (its inline and nested comments too) from ``models:``."""
    shown = display_path(path)
    text = read_manifest_text(path)
    doc = _Doc(text, shown)
    models = doc.models()
    if name not in models:
        known = ", ".join(str(k) for k in models) or "none"
        raise UserInputError(f"no model named {name!r} in {shown} (models: {known})")
    new_text = doc.remove(name)
    _validate_and_write(path, new_text, env, f"removing model {name!r}")


def _check_spec(name: str, spec: Mapping[str, Any]) -> None:
    try:
        ModelSpec.model_validate(dict(spec), by_alias=True, by_name=False)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = dotted_path(tuple(err["loc"])) or "(spec)"
            lines.append(f"{where}: {err['msg']}")
        raise UserInputError(f"invalid spec for model {name!r}: " + "; ".join(lines)) from None


def _validate_and_write(path: Path, text: str, env: Mapping[str, str] | None, action: str) -> None:
    try:
        load_manifest_text(text, path, env)
    except ManifestError as exc:
        raise ManifestError(
            f"{action} would leave {display_path(path)} invalid, so nothing was written:\n"
            f"{exc.message}"
        ) from None
    atomic_write_bytes(path, text.encode("utf-8"))


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long strings
    return yaml


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blank(line: str) -> bool:
    return not line.strip()


class _Doc:
    """The manifest's lines plus the round-trip tree that says where things are."""

    def __init__(self, text: str, shown: str) -> None:
        self.text = text
        self.shown = shown
        self.lines = text.splitlines(keepends=True)
        self.nl = "\r\n" if self.lines and self.lines[0].endswith("\r\n") else "\n"
        self.root = parse_manifest_yaml(text, shown)
        if self.root is not None and not isinstance(self.root, CommentedMap):
            raise ManifestError(f"cannot edit {shown}: its top level is not a mapping")

    def models(self) -> CommentedMap:
        value = self.root.get("models") if self.root is not None else None
        if value is None:
            return CommentedMap()
        if not isinstance(value, CommentedMap):
            raise ManifestError(f"cannot edit {self.shown}: 'models:' is not a mapping")
        return value

    # positions ---------------------------------------------------------------------

    def _next_top_level_line(self, key: str) -> int:
        """First line of the top-level entry after ``key`` (or the end of the file)."""
        keys = list(self.root)
        i = keys.index(key)
        if i + 1 < len(keys):
            return int(self.root.lc.key(keys[i + 1])[0])
        return len(self.lines)

    def _last_owned(self, start: int, stop: int, col: int) -> int:
        """Last line in ``[start, stop)`` that belongs to the entry whose key is at ``start``.

        Lines indented deeper than the key (content and comments) belong to it; a comment at
        the key's own indentation or less introduces what follows, so it stays.
        """
        last = start
        for i in range(start + 1, min(stop, len(self.lines))):
            line = self.lines[i]
            if not _blank(line) and _indent(line) > col:
                last = i
        return last

    def _unit(self) -> int:
        """The file's indentation step, so that a new entry looks like its neighbours."""
        nodes: list[CommentedMap] = [self.root] if self.root is not None else []
        while nodes:
            node = nodes.pop(0)
            for key, value in node.items():
                if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
                    try:
                        first = next(iter(value))
                        step = int(value.lc.key(first)[1]) - int(node.lc.key(key)[1])
                    except (KeyError, StopIteration):
                        continue
                    if step > 0:
                        return step
                    nodes.append(value)
        return 2

    # rendering -----------------------------------------------------------------------

    def _render(self, name: str, spec: Mapping[str, Any], col: int) -> list[str]:
        unit = self._unit()
        yaml = _yaml()
        yaml.indent(mapping=unit, sequence=unit + 2, offset=2)
        out = io.StringIO()
        yaml.dump(CommentedMap([(name, _to_yaml(spec))]), out)
        pad = " " * col
        return [pad + line + self.nl for line in out.getvalue().splitlines()]

    # edits ---------------------------------------------------------------------------

    def add(self, name: str, spec: Mapping[str, Any]) -> str:
        lines = list(self.lines)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += self.nl
        if self.root is not None and self.root.fa.flow_style():
            return self._redump(lambda m: m.__setitem__(name, _to_yaml(spec)))
        if self.root is None or "models" not in self.root:
            col = int(self.root.lc.col) if self.root is not None else 0
            block = [" " * col + "models:" + self.nl, *self._render(name, spec, col + self._unit())]
            return "".join(lines + block)
        models = self.root["models"]
        key_line = int(self.root.lc.key("models")[0])
        models_col = int(self.root.lc.key("models")[1])
        stop = self._next_top_level_line("models")
        if isinstance(models, CommentedMap) and models and not models.fa.flow_style():
            last = list(models)[-1]
            col = int(models.lc.key(next(iter(models)))[1])
            at = self._last_owned(int(models.lc.key(last)[0]), stop, col) + 1
        elif models is None and _MODELS_LINE.match(self.lines[key_line]):
            col = models_col + self._unit()
            at = self._last_owned(key_line, stop, models_col) + 1
        else:
            return self._redump(lambda m: m.__setitem__(name, _to_yaml(spec)))
        return "".join(lines[:at] + self._render(name, spec, col) + lines[at:])

    def remove(self, name: str) -> str:
        models = self.root["models"]
        if models.fa.flow_style():
            return self._redump(lambda m: m.__delitem__(name))
        keys = list(models)
        start, col = (int(v) for v in models.lc.key(name))
        i = keys.index(name)
        stop = (
            int(models.lc.key(keys[i + 1])[0])
            if i + 1 < len(keys)
            else self._next_top_level_line("models")
        )
        end = self._last_owned(start, stop, col)
        # Comments above the key stay: whether they describe this model, the section or a
        # commented-out example cannot be known, and losing a user's text is worse than
        # leaving a stale comment behind.
        head = start
        lines = list(self.lines)
        # Keep one blank line between neighbours, not two.
        if (
            end + 1 < len(lines)
            and _blank(lines[end + 1])
            and (head == 0 or _blank(lines[head - 1]))
        ):
            end += 1
        return "".join(lines[:head] + lines[end + 1 :])

    def _redump(self, change: Callable[[CommentedMap], None]) -> str:
        """Fallback for shapes a line splice cannot handle; formatting may be normalized."""
        yaml = _yaml()
        root = yaml.load(self.text)
        models = root.get("models")
        if not isinstance(models, CommentedMap):
            models = CommentedMap()
            root["models"] = models
        change(models)
        models.fa.set_block_style()
        out = io.StringIO()
        unit = self._unit()
        yaml.indent(mapping=unit, sequence=unit + 2, offset=2)
        yaml.dump(root, out)
        return out.getvalue()


def _to_yaml(value: Any) -> Any:
    """Plain data → round-trip nodes: mappings in block style, lists of scalars in flow style."""
    if isinstance(value, Mapping):
        node = CommentedMap()
        for key, item in value.items():
            node[str(key)] = _to_yaml(item)
        return node
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_to_yaml(v) for v in value)
        if all(not isinstance(v, Mapping | list | tuple) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


# --- names ----------------------------------------------------------------------------

_GENERIC = {"model", "models", "onnx", "weights", "snapshot", "main", "files", "export"}
_EXTENSIONS = (".tar.gz", ".tgz", ".zip", ".onnx", ".safetensors", ".bin", ".pt", ".pth", ".gguf")


def suggest_name(source: str, existing: Iterable[str]) -> str:
    """A model name derived from a source: ``hf://org/All-MiniLM-L6-v2@v1`` → ``all-minilm-l6-v2``.

    Lower-case, only characters the manifest allows, and ``-2``, ``-3``… appended when the
    name is taken (compared case-insensitively, so ``MiniLM`` and ``minilm`` never coexist).
    """
    text = re.sub(r"^[a-z][a-z0-9+.-]*:(//)?", "", source.strip())
    text = re.split(r"[?#]", text, maxsplit=1)[0]
    at = text.find("@", text.find("/") + 1)  # `org/name@rev`, not `user@host/…`
    if at >= 0:
        text = text[:at]
    stems = [_strip_extension(p.lower()) for p in re.split(r"[/\\]", text)]
    stems = [s for s in stems if s not in ("", ".", "..", "~")]
    specific = [s for s in stems if s not in _GENERIC]
    base = specific[-1] if specific else (stems[-1] if stems else "")
    base = re.sub(r"[^a-z0-9._-]+", "-", base)
    base = re.sub(r"-{2,}", "-", base).strip("-._")[:120] or "model"
    taken = {e.casefold() for e in existing}
    name, n = base, 1
    while name.casefold() in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def _strip_extension(name: str) -> str:
    for ext in _EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name
