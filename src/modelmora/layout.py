"""Which model names and file paths can be laid out on disk — one rule for lock, pull and serve.

Model names become directory names and URL segments; locked file paths become files in a
snapshot. Both come from input we do not control (a registry's listing, a hand-edited
lock), so they are checked where they are read, not where they are first written to disk:
a name the lock step refuses never reaches ``pull`` half laid out. Standard library only.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterable

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""A model's name (a key under ``models:``, a lock entry, a served model)."""

MAX_COMPONENT_BYTES = 255
"""The longest file or directory name ext4, XFS, APFS and NTFS all accept (UTF-8 bytes)."""

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model, or None."""
    if _MODEL_NAME.match(name) and name not in (".", ".."):
        return None
    return (
        f"model name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a file of a model, or None when it is a clean relative path.

    Clean means: relative, POSIX separators, already normal (no ``.``, ``..`` or empty
    segments, so ``./x`` cannot sit next to ``x``), no control characters, every segment
    at most :data:`MAX_COMPONENT_BYTES` bytes.
    """
    if not path:
        return "an empty path"
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        return "absolute paths are not allowed"
    if "\\" in path:
        return "backslashes are not allowed"
    if _CONTROL.search(path):
        return "control characters (newline, escape, NUL …) are not allowed"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode text (a lone surrogate)"
    parts = path.split("/")
    if any(part in ("..", ".", "") for part in parts):
        return "'.', '..' or empty path segments are not allowed"
    long = next((p for p in parts if len(p.encode("utf-8")) > MAX_COMPONENT_BYTES), None)
    if long is not None:
        return f"a path segment is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def layout_problem(paths: Iterable[str]) -> str | None:
    """Why these paths cannot all be files of one directory tree, or None.

    Two paths equal after Unicode NFC normalisation would be one file on macOS; a path
    that is both a file and a directory (``a`` and ``a/b``) cannot exist anywhere.
    """
    seen: dict[str, str] = {}
    files = set()
    for path in paths:
        key = unicodedata.normalize("NFC", path)
        if key in seen:
            return f"{path!r} and {seen[key]!r} are the same file name"
        seen[key] = path
        files.add(key)
    for key in files:
        parent = posixpath.dirname(key)
        while parent:
            if parent in files:
                return f"{seen[parent]!r} is a file and also the directory of {seen[key]!r}"
            parent = posixpath.dirname(parent)
    return None
