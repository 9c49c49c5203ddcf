"""In-memory git-like history over an on-disk blob store, for the hub emulator.

The HTTP layer (:mod:`modelmora.testing.hub_emulator`) only reads snapshots from here.
Blobs live on disk under ``root/blobs`` keyed by sha256, so a 300 MB weight file is
streamed from disk, and every hash (sha256 and git blob sha1) is computed exactly once,
when the file is added — the real hub never re-hashes per request either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

LFS_EXTENSIONS = (".safetensors", ".bin", ".onnx", ".pt", ".h5", ".msgpack", ".ot", ".onnx_data")
"""Weight formats the real hub always stores through git-LFS, whatever their size."""

FileContent = bytes | Path
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Blob:
    """One stored file content and the hashes the hub advertises for it."""

    path: Path
    size: int
    sha256: str
    git_sha1: str
    """Git blob id of the content itself (what the hub shows for non-LFS files)."""
    lfs: bool

    @property
    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {self.size}\n"
        ).encode()

    @property
    def oid(self) -> str:
        """Git blob id in the tree: of the LFS pointer for LFS files, like on the hub."""
        if not self.lfs:
            return self.git_sha1
        pointer = self.pointer
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()


@dataclass(frozen=True)
class Entry:
    blob: Blob
    last_commit: str
    """Commit that last changed this path (for ``expand=true`` tree listings)."""


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    date: datetime
    files: Mapping[str, Entry]


@dataclass
class Repo:
    repo_id: str
    metadata: dict[str, object]
    created: datetime
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        """Branch first, then tag, then full commit sha (the hub's order)."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision in self.commits:
            sha = revision
        return self.commits.get(sha) if sha else None


def check_repo_path(path: str) -> str:
    """Refuse paths a real git tree could not hold (absolute, ``..``, empty segments)."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid repo file path {path!r} (pass unsafe_paths_ok=True to force)")
    return path


def files_from_dir(directory: Path) -> dict[str, FileContent]:
    """Map every regular file below ``directory`` to its POSIX relative path."""
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    found: dict[str, FileContent] = {}
    for item in sorted(directory.rglob("*")):
        if item.is_file() and ".git" not in item.relative_to(directory).parts:
            found[item.relative_to(directory).as_posix()] = item
    return found


# Hashing a 90 MB fixture once per test session instead of once per test: keyed by the
# source file's identity and stat, shared by every emulator in the process.
_HASH_CACHE: dict[tuple[str, int, int, int], tuple[str, str]] = {}
_HASH_CACHE_LOCK = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


class BlobStore:
    """Content-addressed files under ``root/blobs/<sha256>``."""

    def __init__(self, root: Path, lfs_threshold: int) -> None:
        self.root = root
        self.lfs_threshold = lfs_threshold
        self._dir = root / "blobs"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def add(self, name: str, content: FileContent) -> Blob:
        if isinstance(content, bytes):
            sha256, sha1, tmp = self._write_hashing(content)
        elif isinstance(content, Path):
            sha256, sha1, tmp = self._copy_path(content)
        else:
            raise TypeError(f"file {name!r}: content must be bytes or Path, not {type(content)}")
        size = tmp.stat().st_size
        final = self._dir / sha256
        with self._lock:
            if final.exists():
                tmp.unlink()
            else:
                tmp.replace(final)
        lfs = size >= self.lfs_threshold or PurePosixPath(name).suffix in LFS_EXTENSIONS
        return Blob(path=final, size=size, sha256=sha256, git_sha1=sha1, lfs=lfs)

    def _tmp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self._dir, prefix=".incoming-")
        os.close(fd)
        return Path(name)

    def _write_hashing(self, data: bytes) -> tuple[str, str, Path]:
        tmp = self._tmp()
        tmp.write_bytes(data)
        sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return hashlib.sha256(data).hexdigest(), sha1, tmp

    def _copy_path(self, src: Path) -> tuple[str, str, Path]:
        if not src.is_file():
            raise ValueError(f"{src} is not a file")
        key = _stat_key(src)
        tmp = self._tmp()
        with _HASH_CACHE_LOCK:
            cached = _HASH_CACHE.get(key)
        if cached is not None:
            shutil.copyfile(src, tmp)
            if _stat_key(src) == key:
                return cached[0], cached[1], tmp
            key = _stat_key(src)  # changed meanwhile: hash what we copy now
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(b"blob %d\0" % key[2])
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(_CHUNK):
                sha256.update(chunk)
                sha1.update(chunk)
                fout.write(chunk)
        digests = (sha256.hexdigest(), sha1.hexdigest())
        if tmp.stat().st_size != key[2]:
            raise ValueError(f"{src} changed while it was being added")
        with _HASH_CACHE_LOCK:
            _HASH_CACHE[key] = digests
        return digests[0], digests[1], tmp


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def make_commit(
    repo: Repo,
    parent: Commit | None,
    added: Mapping[str, Blob],
    deleted: tuple[str, ...],
    title: str,
) -> Commit:
    """Build a commit whose sha depends on repo, parent, tree and a sequence number."""
    files = dict(parent.files) if parent else {}
    for name in deleted:
        if name not in files:
            raise ValueError(f"{repo.repo_id}: cannot delete {name!r}: not in the parent commit")
        del files[name]
    seed = hashlib.sha1()
    seed.update(f"{repo.repo_id}\n{parent.sha if parent else '-'}\n{len(repo.commits)}\n".encode())
    for name in sorted(set(files) | set(added)):
        blob = added[name] if name in added else files[name].blob
        seed.update(f"{name}\0{blob.git_sha1}\n".encode())
    sha = seed.hexdigest()
    for name, blob in added.items():
        old = files.get(name)
        if old is None or old.blob.sha256 != blob.sha256:
            files[name] = Entry(blob=blob, last_commit=sha)
    return Commit(
        sha=sha, parent=parent.sha if parent else None, title=title, date=utcnow(), files=files
    )
