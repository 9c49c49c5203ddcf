"""Filesystem helpers shared by every stage that writes user-visible files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write to a temp file in the same directory, fsync, rename: readers never see half.

    ``durable=False`` skips the fsync, for files that can be rebuilt when a crash leaves
    them empty: an fsync commits the filesystem journal, which after a large download (or
    with online discard) can cost a tenth of a second or more.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file: one reusable 1 MiB buffer, constant memory for multi-GB weights."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def copy_range(
    src: Path, dest: Path, *, offset: int = 0, progress: Callable[[int], None] | None = None
) -> None:
    """Copy ``src[offset:]`` onto the end of ``dest`` (truncating ``dest`` when offset is 0)."""
    with open(src, "rb") as fin, open(dest, "ab" if offset else "wb") as fout:
        fin.seek(offset)
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            if progress:
                progress(len(chunk))


def disk_size(path: Path) -> int:
    """Bytes of a file, or of the regular files under a directory (symlinks not followed)."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class JsonObjectError(ValueError):
    """A JSON file a model needs that is missing, unreadable or not an object."""


def read_json_object(path: Path) -> dict[str, Any]:
    """A model's JSON config (``config.json``, ``preprocessor_config.json`` …) as a dict.

    One message for each way it can be unusable, naming the file, so callers can re-raise
    it as their own error type instead of each writing the same three checks.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JsonObjectError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise JsonObjectError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JsonObjectError(f"{path} does not hold a JSON object")
    return data
