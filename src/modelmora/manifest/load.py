"""Read ``modelmora.yml``: parse, interpolate, validate, and point at the line of any mistake.

The YAML is parsed with ruamel.yaml's round-trip loader because it keeps the line and column
of every key, value and list item. While converting to plain Python we interpolate strings
and remember where each field came from, so that a pydantic error such as
``('models', 'minilm', 'validate', 'atol')`` becomes ``modelmora.yml:7:13
models.minilm.validate.atol: …`` and other stages (``lock --check``) can point at a model.

All problems found are reported at once, one per line, sorted by position. Tokens are
secrets: their values never reach an error message or a ``repr``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.reader import ReaderError

from modelmora.errors import ManifestError, UserInputError
from modelmora.manifest.interpolate import InterpolationError, interpolate
from modelmora.manifest.model import Manifest
from modelmora.sources import parse_source, source_schemes
from modelmora.sources.base import RegistryConfig

__all__ = [
    "FieldPath",
    "LoadedManifest",
    "display_path",
    "dotted_path",
    "load_manifest",
    "load_manifest_text",
    "parse_manifest_yaml",
    "read_manifest_text",
]

FieldPath = tuple[str | int, ...]
"""Keys and list indices from the document root, e.g. ``("models", "minilm", "source")``."""

_Pos = tuple[int, int]
_SECRET_MIN_LEN = 8


class _Problem(NamedTuple):
    pos: _Pos
    path: FieldPath
    message: str


@dataclass(frozen=True)
class LoadedManifest:
    """A validated manifest plus what only the file knows: positions and env provenance."""

    path: Path
    manifest: Manifest
    registries: dict[str, RegistryConfig]
    _keys: Mapping[FieldPath, _Pos] = field(default_factory=dict, repr=False, compare=False)
    _values: Mapping[FieldPath, _Pos] = field(default_factory=dict, repr=False, compare=False)

    def location(self, field_path: FieldPath, *, value: bool = False) -> _Pos | None:
        """1-based ``(line, column)`` of a field's key (or list item), ``None`` if not in the file.

        With ``value=True`` the position of the value instead (where a type error points).
        Fields that only exist through defaults have no location.
        """
        path = tuple("validate" if p == "validate_" else p for p in field_path)
        if value:
            return self._values.get(path) or self._keys.get(path)
        return self._keys.get(path) or self._values.get(path)

    def describe(self, field_path: FieldPath) -> str:
        """``modelmora.yml:5:3 models.minilm`` — the prefix other stages put on their messages."""
        pos = self.location(field_path) or self._nearest(field_path)
        where = display_path(self.path) + (f":{pos[0]}:{pos[1]}" if pos else "")
        dotted = dotted_path(field_path)
        return f"{where} {dotted}" if dotted else where

    def _nearest(self, field_path: FieldPath) -> _Pos | None:
        for n in range(len(field_path) - 1, -1, -1):
            pos = self.location(field_path[:n])
            if pos:
                return pos
        return None


MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The largest ``modelmora.yml`` read (thousands of models fit in far less)."""


def load_manifest(path: Path, env: Mapping[str, str] | None = None) -> LoadedManifest:
    """Load and validate ``path``; every failure is a :class:`ManifestError` (exit code 2)."""
    return load_manifest_text(read_manifest_text(path), path, env)


def read_manifest_text(path: Path) -> str:
    """The manifest's text; a missing, unreadable or non-UTF-8 file is a ManifestError."""
    shown = display_path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(
            f"{shown}: file not found", hint="run `modelmora init` to create one"
        ) from None
    except IsADirectoryError:
        raise ManifestError(f"{shown}: is a directory, expected a YAML file") from None
    except OSError as exc:
        raise ManifestError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{shown}: larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB; a manifest "
            "lists models, it does not hold them"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ManifestError(
            f"{shown}:{line}:{col}: not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            hint="save the file as UTF-8",
        ) from None


def load_manifest_text(
    text: str, path: Path, env: Mapping[str, str] | None = None
) -> LoadedManifest:
    """Like :func:`load_manifest` for text already in memory (``path`` names it in errors)."""
    env = os.environ if env is None else env
    shown = display_path(path)
    text = text.removeprefix("\ufeff")
    root = parse_manifest_yaml(text, shown)
    conv = _Converter(env)
    if root is None:
        plain: Any = {}
    elif isinstance(root, CommentedMap):
        conv.values[()] = _start(root)
        plain = conv.convert(root, ())
    else:
        kind = "a list" if isinstance(root, CommentedSeq) else f"the value {_short(root)}"
        start = _start(root) if isinstance(root, CommentedSeq) else (1, 1)
        raise ManifestError(
            f"{shown}:{start[0]}:{start[1]}: the top level must be a mapping with 'models:' "
            f"(and optionally 'registries:'), not {kind}"
        )
    secrets = conv.secrets
    problems = list(conv.problems)
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(plain, by_alias=True, by_name=False)
    except ValidationError as exc:
        # A field that failed to convert (e.g. a missing env var) is already reported; its
        # placeholder would only add a confusing second error at the same place.
        broken = {p.path for p in problems}
        for err in exc.errors():
            problem = _from_pydantic(err, plain, conv)
            if not any(problem.path[: len(b)] == b for b in broken):
                problems.append(problem)
    if manifest is not None and not problems:
        problems = _semantic_problems(manifest, conv)
    if problems or manifest is None:
        raise ManifestError(_render(problems, shown, secrets)) from None
    registries = {
        name: RegistryConfig(
            endpoint=spec.endpoint,
            token=spec.token,
            token_env=_token_env(conv.variables.get(("registries", name, "token"), ()), env),
        )
        for name, spec in manifest.registries.items()
    }
    return LoadedManifest(
        path=path,
        manifest=manifest,
        registries=registries,
        _keys=dict(conv.keys),
        _values=dict(conv.values),
    )


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


_PLAIN_KEY = re.compile(r"^[^\s.\[\]'\"]+$")


def dotted_path(field_path: FieldPath) -> str:
    """``("models", "m", "backends", 1)`` → ``models.m.backends[1]``; odd keys are quoted."""
    out = ""
    for part in field_path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# --- YAML ------------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def parse_manifest_yaml(text: str, shown: str) -> Any:
    """The round-trip tree of ``text``; syntax errors and duplicate keys are located."""
    yaml = _yaml()
    try:
        problem = _event_problem(yaml, text)
        if problem is not None:
            raise ManifestError(f"{shown}:{problem}")
        node = yaml.compose(text)
        problem = _shape_problem(node) if node is not None else None
        if problem is not None:
            raise ManifestError(f"{shown}:{problem}")
        duplicates = sorted(_duplicate_keys(node)) if node is not None else []
        if duplicates:
            raise ManifestError(
                "\n".join(f"{shown}:{ln}:{col}: {msg}" for (ln, col), msg in duplicates)
            )
        return yaml.load(text)
    except MarkedYAMLError as exc:
        raise ManifestError(_yaml_error(exc, shown)) from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1])
        raise ManifestError(
            f"{shown}:{line}:{col}: character U+{char:04X} is not allowed in YAML ({exc.reason})"
        ) from None
    except YAMLError as exc:  # pragma: no cover - ruamel raises the marked kinds above
        raise ManifestError(f"{shown}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ManifestError(
            f"{shown}: nested too deeply to parse (a manifest nests at most {MAX_DEPTH} levels)"
        ) from None


MAX_DEPTH = 64
"""Levels of nesting a manifest may have (a real one has under 10)."""
MAX_ALIASES = 100
"""``*alias`` references a manifest may use."""
MAX_EXPANDED_NODES = 100_000
"""Values the document may hold once every alias is expanded: an alias bomb (a billion
laughs) is a few lines that expand to billions."""


_PLAIN_TAGS = frozenset(
    f"{prefix}{name}"
    for prefix in ("!!", "tag:yaml.org,2002:")
    for name in ("str", "int", "float", "bool", "null", "map", "seq")
)


def _event_problem(yaml: YAML, text: str) -> str | None:
    """``LINE:COL: what`` for nesting, aliases or tags the manifest does not allow, found in
    the parser's event stream before anything is built (the composer recurses per level, so
    a deeply nested document must be refused before it runs)."""
    depth = aliases = 0
    for event in yaml.parse(text):
        where = f"{event.start_mark.line + 1}:{event.start_mark.column + 1}"
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _PLAIN_TAGS and tag != "!":
            return f"{where}: YAML tags such as {tag} are not supported here"
        if isinstance(event, MappingStartEvent | SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return f"{where}: nested more than {MAX_DEPTH} levels deep"
        elif isinstance(event, MappingEndEvent | SequenceEndEvent):
            depth -= 1
        elif isinstance(event, AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                return f"{where}: {aliases} aliases (at most {MAX_ALIASES} are allowed)"
    return None


def _shape_problem(root: Node) -> str | None:
    """``LINE:COL: what`` when the composed document is too deep, too aliased or too big
    once expanded; None otherwise. Computed over the node graph (aliases are shared nodes),
    iteratively, so the check costs the document's size, not its expansion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    seen: set[int] = {id(root)}
    aliases = 0
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if depth[key] > MAX_DEPTH:
                return f"{_at(node)}: nested more than {MAX_DEPTH} levels deep"
            if size[key] > MAX_EXPANDED_NODES:
                return (
                    f"{_at(node)}: expands to more than {MAX_EXPANDED_NODES} values through "
                    "aliases (an alias bomb?)"
                )
            continue
        if key in size:  # reached again through an alias and finished meanwhile
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            ckey = id(child)
            if ckey in on_path:
                return f"{_at(child)}: an alias refers to a value that contains it"
            if ckey in seen:
                aliases += 1
                if aliases > MAX_ALIASES:
                    return f"{_at(child)}: more than {MAX_ALIASES} aliases"
            seen.add(ckey)
            if ckey not in size:
                stack.append((child, False))
    return None


def _at(node: Node) -> str:
    mark = node.start_mark
    return f"{mark.line + 1}:{mark.column + 1}"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _duplicate_keys(root: Node) -> Iterator[tuple[_Pos, str]]:
    """Find duplicate mapping keys ourselves: ruamel's own error echoes both *values*."""
    seen_nodes: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                stack.append(value)
                if not isinstance(key.value, str) or key.value == "<<":
                    continue
                if key.value in first:
                    yield (
                        (key.start_mark.line + 1, key.start_mark.column + 1),
                        f"duplicate key {key.value!r} (first defined on line {first[key.value]})",
                    )
                else:
                    first[key.value] = key.start_mark.line + 1
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


def _yaml_error(exc: MarkedYAMLError, shown: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
    problem = str(exc.problem or exc.context or "invalid YAML")
    if problem.startswith("found duplicate key"):  # e.g. `1:` and `0x1:`; values not echoed
        return f"{where}: duplicate key"
    message = f"{where}: {problem}"
    ctx_mark = exc.context_mark
    if exc.problem and exc.context:
        message += f" ({exc.context}"
        if ctx_mark is not None and mark is not None and ctx_mark.line != mark.line:
            message += f" that starts on line {ctx_mark.line + 1}"
        message += ")"
    return message


def _start(node: CommentedMap | CommentedSeq) -> _Pos:
    return (node.lc.line + 1, node.lc.col + 1)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- conversion with positions --------------------------------------------------------


class _Converter:
    """Turn the round-trip tree into plain data, interpolating strings and noting positions."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.keys: dict[FieldPath, _Pos] = {}
        self.values: dict[FieldPath, _Pos] = {}
        self.variables: dict[FieldPath, tuple[str, ...]] = {}
        self.problems: list[_Problem] = []
        self.secrets: list[str] = []

    def convert(self, node: Any, path: FieldPath) -> Any:
        if isinstance(node, CommentedMap):
            return self._mapping(node, path)
        if isinstance(node, CommentedSeq):
            items = []
            for i, item in enumerate(node):
                self.values[(*path, i)] = (node.lc.item(i)[0] + 1, node.lc.item(i)[1] + 1)
                items.append(self.convert(item, (*path, i)))
            return items
        if isinstance(node, TaggedScalar):
            self._problem(path, f"YAML tags such as {node.tag!s} are not supported here")
            return None
        if isinstance(node, str):
            return self._string(str(node), path)
        if isinstance(node, bool):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    def _mapping(self, node: CommentedMap, path: FieldPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        parent = self.keys.get(path) or self.values.get(path) or (1, 1)
        for raw_key, value in node.items():
            try:
                kl, kc, vl, vc = (node.lc.data or {})[raw_key]
                key_pos, value_pos = (kl + 1, kc + 1), (vl + 1, vc + 1)
            except KeyError:  # merged in through `<<:`; point at the mapping that merges
                key_pos = value_pos = parent
            if isinstance(raw_key, str):
                key = str(raw_key)
            elif isinstance(raw_key, int) and not isinstance(raw_key, bool):
                key = str(int(raw_key))
            else:
                self.problems.append(
                    _Problem(key_pos, path, f"keys must be strings, got {_short(raw_key)}")
                )
                continue
            if value is None and value_pos[0] != key_pos[0]:
                value_pos = key_pos  # `key:` with nothing after it: ruamel points past it
            child = (*path, key)
            self.keys[child] = key_pos
            self.values[child] = value_pos
            out[key] = self.convert(value, child)
        return out

    def _string(self, text: str, path: FieldPath) -> str | None:
        try:
            value, used = interpolate(text, self.env)
        except InterpolationError as exc:
            message = exc.message + (f" ({exc.hint})" if exc.hint else "")
            self._problem(path, message)
            return None
        if used:
            self.variables[path] = used
        if _is_secret(path) and len(value) >= _SECRET_MIN_LEN:
            self.secrets.append(value)
        return value

    def _problem(self, path: FieldPath, message: str) -> None:
        pos = self.values.get(path) or self.keys.get(path) or (1, 1)
        self.problems.append(_Problem(pos, path, message))


def _is_secret(path: FieldPath) -> bool:
    return len(path) == 3 and path[0] == "registries" and path[2] == "token"


def _token_env(used: Sequence[str], env: Mapping[str, str]) -> str | None:
    if len(used) == 1:
        return used[0]
    # `${A:-${B}}`: name the variable that actually supplied the value.
    return next((name for name in used if env.get(name)), used[0] if used else None)


# --- pydantic errors → located problems -----------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


def _from_pydantic(err: ErrorDetails, data: Any, conv: _Converter) -> _Problem:
    kind = err["type"]
    path: list[str | int] = []
    node = data
    on_key = False
    loc = err["loc"]
    for i, part in enumerate(loc):
        if part == "[key]":
            on_key = True
            break
        is_key = isinstance(node, dict) and isinstance(part, str) and part in node
        is_item = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if is_key or is_item:
            node = node[part]
        elif i == len(loc) - 1 and kind == "missing":
            path.append(part)
            break
        else:
            continue  # a union member or validator name in the loc, not a data key
        path.append(part)
    fpath = tuple(path)

    if kind == "missing":
        parent = fpath[:-1]
        pos = conv.keys.get(parent) or conv.values.get(parent) or (1, 1)
        hint = ""
        if len(fpath) == 3 and fpath[0] == "models" and fpath[2] == "source":
            hint = " (every model needs a source, e.g. `source: hf://org/name`)"
        return _Problem(pos, fpath, "required key is missing" + hint)
    if kind == "extra_forbidden":
        pos = conv.keys.get(fpath, (1, 1))
        name = str(fpath[-1]) if fpath else "?"
        return _Problem(pos, fpath, f"unknown key {name!r}" + _allowed_hint(fpath[:-1], name))
    if on_key:
        pos = conv.keys.get(fpath, (1, 1))
        if fpath[:1] == ("models",) and kind == "string_pattern_mismatch":
            message = (
                f"invalid model name {str(fpath[-1])!r}: use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit (at most 128 characters)"
            )
        else:
            message = f"invalid key: {_clean(err['msg'])}"
        return _Problem(pos, fpath, message)

    pos = conv.values.get(fpath) or conv.keys.get(fpath) or (1, 1)
    message = _clean(err["msg"])
    value = err.get("input")
    if value is None:
        message += " (got an empty value)"
    elif not _is_secret(fpath) and isinstance(value, _SCALARS) and repr(value) not in message:
        message += f" (got {_short(value)})"
    return _Problem(pos, fpath, message)


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def _allowed_hint(parent: FieldPath, unknown: str) -> str:
    model = _model_at(parent)
    if model is None:
        return ""
    allowed = [info.alias or name for name, info in model.model_fields.items()]
    close = difflib.get_close_matches(unknown, allowed, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f" ({guess}allowed keys: {', '.join(allowed)})"


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(path: FieldPath) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``path`` (for allowed-key hints)."""
    tp: Any = Manifest
    for part in path:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(info.alias or name): info for name, info in tp.model_fields.items()}
            if part not in fields:
                return None
            tp = fields[str(part)].annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


# --- checks that need more than one field ---------------------------------------------


def _semantic_problems(manifest: Manifest, conv: _Converter) -> list[_Problem]:
    """Mistakes pydantic cannot see: unparseable sources, unknown schemes and registries."""
    problems: list[_Problem] = []
    schemes = source_schemes()
    for name, spec in manifest.models.items():
        src_path: FieldPath = ("models", name, "source")
        src_pos = conv.values.get(src_path, (1, 1))
        try:
            scheme, _ = parse_source(spec.source)
        except UserInputError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            problems.append(_Problem(src_pos, src_path, exc.message + hint))
            continue
        if scheme not in schemes:
            problems.append(
                _Problem(
                    src_pos,
                    src_path,
                    f"unknown source scheme {scheme!r} (known: {', '.join(schemes)}; "
                    "plugins add more through the 'modelmora.sources' entry-point group)",
                )
            )
        if spec.registry is not None and spec.registry not in manifest.registries:
            reg_path: FieldPath = ("models", name, "registry")
            declared = ", ".join(sorted(manifest.registries)) or "none"
            problems.append(
                _Problem(
                    conv.values.get(reg_path, (1, 1)),
                    reg_path,
                    f"unknown registry {spec.registry!r} (declared under 'registries:': "
                    f"{declared})",
                )
            )
    return problems


def _render(problems: list[_Problem], shown: str, secrets: list[str]) -> str:
    lines = []
    for (line, col), path, message in sorted(problems, key=lambda p: (p.pos, str(p.path))):
        dotted = dotted_path(path)
        lines.append(f"{shown}:{line}:{col}" + (f" {dotted}" if dotted else "") + f": {message}")
    text = "\n".join(lines) or f"{shown}: invalid manifest"
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
