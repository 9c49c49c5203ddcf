"""A real HTTP server that speaks the Hugging Face Hub protocol, for tests and demos.

Why not mock ``huggingface_hub``? Because the bugs we care about live below that line:
headers, status codes, Range requests, retries, auth. The emulator is a
:class:`~http.server.ThreadingHTTPServer` on ``127.0.0.1`` serving repos with git-like
history (branches, tags, commits) from an on-disk blob store, and it implements what
``huggingface_hub`` 0.36 and ``transformers`` call:

* ``GET /api/models?search=&pipeline_tag=&author=&filter=&limit=`` (model search)
* ``GET /api/models/{repo}[/revision/{rev}][?blobs=True]`` (model info)
* ``GET /api/models/{repo}/tree/{rev}[/{path}][?recursive=true&expand=true]``
* ``POST /api/models/{repo}/paths-info/{rev}``, ``GET /api/models/{repo}/refs``,
  ``GET /api/models/{repo}/commits/{rev}``
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``Range`` support

Fault injection (``require_token``, ``corrupt``, ``fail_next``, ``delay_s``,
``throttle_bytes_per_s``) lets tests provoke every failure a real hub can produce.
Run standalone with ``python -m modelmora.testing.hub_emulator --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, overload
from urllib.parse import parse_qs, unquote, urlsplit

from modelmora.testing._hub_store import (
    Blob,
    BlobStore,
    Commit,
    FileContent,
    Repo,
    check_repo_path,
    files_from_dir,
    make_commit,
    utcnow,
)
from modelmora.testing.servers import BackgroundServer, Emulator, EmulatorServer

__all__ = ["HubEmulator", "RequestLog", "RequestRecord", "files_from_dir"]

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CORRUPT = bytes(b ^ 0xFF for b in range(256))
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator answered it."""

    method: str
    path: str
    """URL path without the query string, percent-decoding left as sent."""
    range: str | None
    """The ``Range`` request header, if any."""
    status: int
    query: str = ""
    at: float = 0.0
    """``time.monotonic()`` when the answer started."""


class RequestLog(Sequence[RequestRecord]):
    """Thread-safe, append-only (plus :meth:`clear`) log of answered requests."""

    def __init__(self) -> None:
        self._items: list[RequestRecord] = []
        self._lock = threading.Lock()

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._items.append(record)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._items)

    @overload
    def __getitem__(self, index: int) -> RequestRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RequestRecord]: ...
    def __getitem__(self, index: int | slice) -> RequestRecord | Sequence[RequestRecord]:
        return self.snapshot()[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.snapshot())


class _HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        commit: str | None = None,
        *,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.extra = dict(extra or {})


class HubEmulator(Emulator):
    """An in-process HF Hub on an ephemeral port; use as a context manager.

    ``lfs_threshold``: files at least this big (and weight formats) are advertised as
    git-LFS files, with sha256 metadata; smaller ones only carry a git blob sha1.
    """

    def __init__(
        self,
        root: Path,
        *,
        lfs_threshold: int = 1024 * 1024,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.root = Path(root)
        self._store = BlobStore(self.root, lfs_threshold)
        self._host, self._port = host, port
        self._repos: dict[str, Repo] = {}
        self._lock = threading.RLock()
        self._token: str | None = None
        self._corrupted: set[tuple[str, str]] = set()
        self._failures: list[tuple[int, str | None]] = []
        self._endless: set[tuple[str, str]] = set()
        self._served: dict[tuple[str, str], int] = {}
        self._closing = threading.Event()
        self._running: BackgroundServer | None = None
        self.listing_hook: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
        """A hostile registry: rewrites each file's entry in listings (``name, item →
        item``), e.g. a negative size or a sha256 that is not hex."""
        self.delay_s: float = 0.0
        self.throttle_bytes_per_s: int | None = None
        self.requests = RequestLog()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> HubEmulator:
        if self._running is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.emulator = self
        self._running = BackgroundServer(server, "hub-emulator")
        return self

    def close(self) -> None:
        """Stop serving; in-flight delayed or throttled responses are cut short."""
        self._closing.set()
        if self._running is not None:
            self._running.stop()
        self._running = None

    @property
    def url(self) -> str:
        if self._running is None:
            raise RuntimeError("HubEmulator is not started (use it as a context manager)")
        return self._running.url()

    # -- content -----------------------------------------------------------------------
    def create_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileContent] | Path,
        *,
        metadata: Mapping[str, object] | None = None,
        message: str = "initial commit",
        unsafe_paths_ok: bool = False,
    ) -> str:
        """Create ``repo_id`` with one commit on ``main``; return its 40-hex sha.

        ``files`` maps repo paths to bytes or to a file on disk, or is a directory to
        upload whole. ``metadata`` adds model-info fields (``pipeline_tag``,
        ``library_name``, ``tags``, ``downloads``, ``likes`` …). ``unsafe_paths_ok`` lets a
        test publish names like ``../evil`` that a malicious registry could list.
        """
        if not _REPO_ID_RE.match(repo_id):
            raise ValueError(f"invalid repo id {repo_id!r}")
        with self._lock:
            if repo_id in self._repos:
                raise ValueError(f"repo {repo_id!r} already exists")
            repo = Repo(repo_id=repo_id, metadata=dict(metadata or {}), created=utcnow())
            blobs = self._add_files(files, unsafe_paths_ok)
            commit = make_commit(repo, None, blobs, (), message)
            repo.commits[commit.sha] = commit
            repo.branches["main"] = commit.sha
            self._repos[repo_id] = repo
            return commit.sha

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, FileContent] | Path,
        *,
        branch: str = "main",
        delete: Iterable[str] = (),
        message: str | None = None,
        unsafe_paths_ok: bool = False,
    ) -> str:
        """Add a commit on ``branch`` (files carried over from its head); return its sha."""
        with self._lock:
            repo = self._repo(repo_id)
            if branch not in repo.branches:
                raise ValueError(f"{repo_id}: no branch {branch!r}")
            parent = repo.commits[repo.branches[branch]]
            blobs = self._add_files(files, unsafe_paths_ok)
            deleted = tuple(delete)
            title = message or f"update {', '.join(sorted(blobs) + list(deleted))}"
            commit = make_commit(repo, parent, blobs, deleted, title)
            repo.commits[commit.sha] = commit
            repo.branches[branch] = commit.sha
            return commit.sha

    def create_branch(self, repo_id: str, branch: str, revision: str | None = None) -> str:
        """Create (or move) ``branch`` to ``revision`` (default: head of main)."""
        with self._lock:
            repo = self._repo(repo_id)
            sha = self._commit(repo, revision or "main").sha
            repo.branches[branch] = sha
            return sha

    def create_tag(self, repo_id: str, tag: str, revision: str | None = None) -> str:
        """Tag ``revision`` (default: head of main); tags never move."""
        with self._lock:
            repo = self._repo(repo_id)
            if tag in repo.tags:
                raise ValueError(f"{repo_id}: tag {tag!r} already exists")
            sha = self._commit(repo, revision or "main").sha
            repo.tags[tag] = sha
            return sha

    def resolve(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha a branch, tag or sha currently points to."""
        with self._lock:
            return self._commit(self._repo(repo_id), revision).sha

    # -- fault injection ---------------------------------------------------------------
    def require_token(self, token: str | None) -> None:
        """Require ``Authorization: Bearer <token>`` on every request (None: open again)."""
        self._token = token

    def corrupt(self, repo_id: str, path: str, enabled: bool = True) -> None:
        """Serve flipped bytes for ``path`` (same size, same advertised hashes)."""
        with self._lock:
            if enabled:
                self._corrupted.add((repo_id, path))
            else:
                self._corrupted.discard((repo_id, path))

    def fail_next(self, count: int, status: int = 503, *, retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests (any endpoint) with ``status`` (and that
        ``Retry-After`` header)."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * count)

    def endless(self, repo_id: str, path: str, enabled: bool = True) -> None:
        """A hostile server: send ``path``'s bytes, then keep sending more until the client
        hangs up — no ``Content-Length``, the body ends only when the connection closes."""
        with self._lock:
            if enabled:
                self._endless.add((repo_id, path))
            else:
                self._endless.discard((repo_id, path))

    def bytes_served(self, repo_id: str, path: str) -> int:
        """Body bytes handed to the socket for that file, over all requests."""
        with self._lock:
            return self._served.get((repo_id, path), 0)

    # -- internals used by the handler -------------------------------------------------
    def _add_files(
        self, files: Mapping[str, FileContent] | Path, unsafe_paths_ok: bool
    ) -> dict[str, Blob]:
        mapping = files_from_dir(files) if isinstance(files, Path) else files
        blobs = {}
        for name, content in mapping.items():
            if not unsafe_paths_ok:
                check_repo_path(name)
            blobs[name] = self._store.add(name, content)
        return blobs

    def _repo(self, repo_id: str) -> Repo:
        repo = self._repos.get(repo_id)
        if repo is None:
            raise ValueError(f"no repo {repo_id!r}")
        return repo

    @staticmethod
    def _commit(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise ValueError(f"{repo.repo_id}: no revision {revision!r}")
        return commit

    def _lookup(self, segments: list[str]) -> tuple[Repo, list[str]]:
        """Split ``org/name/rest…`` (or legacy ``name/rest…``) into repo and rest."""
        with self._lock:
            for n in (2, 1):
                repo = self._repos.get("/".join(segments[:n])) if len(segments) >= n else None
                if repo is not None:
                    return repo, segments[n:]
        name = "/".join(segments[:2])
        raise _HttpError(404, f"Repository {name} not found", "RepoNotFound")

    def _at(self, repo: Repo, revision: str) -> Commit:
        with self._lock:
            commit = repo.resolve(revision)
        if commit is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _take_failure(self) -> tuple[int, str | None] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _is_endless(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._endless

    def _count(self, key: tuple[str, str], n: int) -> None:
        with self._lock:
            self._served[key] = self._served.get(key, 0) + n

    def _is_corrupt(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._corrupted

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._closing.wait(seconds)

    def _model_info(self, repo: Repo, commit: Commit, blobs: bool) -> dict[str, Any]:
        info = self._summary(repo, commit)
        info["siblings"] = [
            self._listed(name, _sibling(name, entry.blob, blobs))
            for name, entry in sorted(commit.files.items())
        ]
        return info

    def _listed(self, name: str, item: dict[str, Any]) -> dict[str, Any]:
        hook = self.listing_hook
        return hook(name, item) if hook is not None else item

    def _summary(self, repo: Repo, commit: Commit) -> dict[str, Any]:
        info: dict[str, Any] = {
            "_id": repo.repo_id,
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": _iso(repo.created),
            "lastModified": _iso(commit.date),
        }
        info.update(repo.metadata)
        return info

    def _search(self, query: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        text = (query.get("search") or [""])[0].lower()
        pipeline = (query.get("pipeline_tag") or [""])[0]
        author = (query.get("author") or [""])[0]
        wanted_tags = set(query.get("filter", []))
        limit = int((query.get("limit") or ["1000"])[0])
        with self._lock:
            repos = [(r, r.commits[r.branches["main"]]) for r in self._repos.values()]
        found = []
        for repo, head in repos:
            info = self._summary(repo, head)
            if text and text not in repo.repo_id.lower():
                continue
            if pipeline and info.get("pipeline_tag") != pipeline:
                continue
            if author and info.get("author") != author:
                continue
            if not wanted_tags <= set(info.get("tags") or []):
                continue
            found.append(info)
        found.sort(key=lambda i: (-int(i.get("downloads") or 0), str(i["id"])))
        return found[: max(limit, 0)]


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _sibling(name: str, blob: Blob, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": name}
    item: dict[str, Any] = {"rfilename": name, "size": blob.size, "blobId": blob.oid}
    if blob.lfs:
        item["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
    return item


def _tree_file(name: str, blob: Blob) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": blob.size, "path": name}
    if blob.lfs:
        item["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
    return item


def _tree_dir(name: str, commit: Commit) -> dict[str, Any]:
    oid = hashlib.sha1(f"{commit.sha}:{name}".encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": name}


def _tree(commit: Commit, base: str, recursive: bool) -> list[tuple[str, Blob | None]]:
    """Entries below ``base`` as (path, blob) pairs; ``None`` blob marks a directory."""
    prefix = f"{base}/" if base else ""
    files: dict[str, Blob | None] = {}
    for name, entry in commit.files.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :].split("/")
        depth = len(rest) if recursive else 1
        for i in range(1, min(depth, len(rest) - 1) + 1):
            files.setdefault(prefix + "/".join(rest[:i]), None)
        if recursive or len(rest) == 1:
            files[name] = entry.blob
    return sorted(files.items())


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` inclusive, ``None`` to serve everything, ``"416"`` if unsatisfiable."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multi-range or malformed: a server may ignore Range (RFC 9110)
    first, last = m.groups()
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "416"
        return max(size - n, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return "416"
    return start, end


class _Server(EmulatorServer):
    emulator: HubEmulator


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    protocol_version = "HTTP/1.1"
    server_version = "ModelMoraHubEmulator/1"

    @property
    def hub(self) -> HubEmulator:
        return self.server.emulator

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request stderr logging; ``hub.requests`` is the log."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing ----------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self._record_path, self._query = split.path, split.query
        body = b""
        if method == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hub = self.hub
        hub._wait(hub.delay_s)
        try:
            failure = hub._take_failure()
            if failure is not None:
                status, retry_after = failure
                extra = {"Retry-After": retry_after} if retry_after is not None else {}
                raise _HttpError(status, f"injected failure {status}", extra=extra)
            self._check_auth()
            segments = [unquote(s) for s in split.path.split("/")[1:]]
            self._route(method, segments, parse_qs(split.query), body)
        except _HttpError as err:
            self._send_error(err, head=method == "HEAD", extra=err.extra)
        except OSError:  # the client went away (killed mid-file, timed out): not our error
            self.close_connection = True

    def _check_auth(self) -> None:
        token = self.hub._token
        if token is None:
            return
        given = self.headers.get("Authorization")
        if given is None:
            raise _HttpError(401, "Repository not found", "RepoNotFound")
        if given != f"Bearer {token}":
            raise _HttpError(401, "Invalid credentials in Authorization header")

    def _route(
        self, method: str, seg: list[str], query: Mapping[str, list[str]], body: bytes
    ) -> None:
        hub = self.hub
        if seg[:2] == ["api", "models"]:
            if len(seg) == 2 or seg[2:] == [""]:
                return self._json(hub._search(query), head=method == "HEAD")
            repo, rest = hub._lookup(seg[2:])
            return self._api(method, repo, rest, query, body)
        for n in (2, 1):
            if len(seg) > n + 2 and seg[n] == "resolve" and method in ("GET", "HEAD"):
                repo, _ = hub._lookup(seg[:n])
                commit = hub._at(repo, seg[n + 1])
                return self._file(repo, commit, "/".join(seg[n + 2 :]), head=method == "HEAD")
        raise _HttpError(404, f"no route for {method} {self._record_path}")

    def _api(
        self,
        method: str,
        repo: Repo,
        rest: list[str],
        query: Mapping[str, list[str]],
        body: bytes,
    ) -> None:
        hub, head = self.hub, method == "HEAD"
        flag = {k: (v[0].lower() in ("1", "true")) for k, v in query.items() if v}
        kind = rest[0] if rest else ""
        if kind == "" and not rest[1:]:
            commit = hub._at(repo, "main")
            return self._json(hub._model_info(repo, commit, flag.get("blobs", False)), head)
        if kind == "revision" and len(rest) >= 2:
            commit = hub._at(repo, "/".join(rest[1:]))
            return self._json(hub._model_info(repo, commit, flag.get("blobs", False)), head)
        if kind == "tree" and len(rest) >= 2:
            commit = hub._at(repo, rest[1])
            return self._json(self._tree_listing(repo, commit, "/".join(rest[2:]), flag), head)
        if kind == "paths-info" and len(rest) >= 2 and method == "POST":
            commit = hub._at(repo, rest[1])
            return self._json(self._paths_info(commit, body), head)
        if kind == "refs" and len(rest) == 1:
            return self._json(self._refs(repo), head)
        if kind == "commits" and len(rest) >= 1:
            commit = hub._at(repo, rest[1] if len(rest) > 1 else "main")
            return self._json(self._history(repo, commit), head)
        raise _HttpError(404, f"no route for {method} {self._record_path}")

    # -- endpoints ---------------------------------------------------------------------
    def _tree_listing(
        self, repo: Repo, commit: Commit, base: str, flag: Mapping[str, bool]
    ) -> list[dict[str, Any]]:
        entries = _tree(commit, base.strip("/"), flag.get("recursive", False))
        if base and not entries and base not in commit.files:
            raise _HttpError(404, f"Entry not found: {base}", "EntryNotFound", commit.sha)
        out = []
        for name, blob in entries:
            item = (
                _tree_dir(name, commit)
                if blob is None
                else self.hub._listed(name, _tree_file(name, blob))
            )
            if flag.get("expand") and blob is not None:
                with self.hub._lock:
                    last = repo.commits[commit.files[name].last_commit]
                item["lastCommit"] = {"id": last.sha, "title": last.title, "date": _iso(last.date)}
            out.append(item)
        return out

    def _paths_info(self, commit: Commit, body: bytes) -> list[dict[str, Any]]:
        form = parse_qs(body.decode())
        out = []
        for name in form.get("paths", []):
            if name in commit.files:
                out.append(self.hub._listed(name, _tree_file(name, commit.files[name].blob)))
            elif any(f.startswith(name.rstrip("/") + "/") for f in commit.files):
                out.append(_tree_dir(name, commit))
        return out

    def _refs(self, repo: Repo) -> dict[str, Any]:
        with self.hub._lock:
            branches, tags = dict(repo.branches), dict(repo.tags)

        def refs(kind: str, items: dict[str, str]) -> list[dict[str, str]]:
            return [
                {"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha}
                for n, sha in sorted(items.items())
            ]

        return {"branches": refs("heads", branches), "tags": refs("tags", tags), "converts": []}

    def _history(self, repo: Repo, commit: Commit) -> list[dict[str, Any]]:
        out = []
        current: Commit | None = commit
        while current is not None:
            out.append(
                {
                    "id": current.sha,
                    "title": current.title,
                    "message": "",
                    "authors": [{"user": "emulator"}],
                    "date": _iso(current.date),
                }
            )
            with self.hub._lock:
                current = repo.commits.get(current.parent) if current.parent else None
        return out

    def _file(self, repo: Repo, commit: Commit, path: str, head: bool) -> None:
        entry = commit.files.get(path)
        if entry is None:
            raise _HttpError(404, f"Entry not found: {path}", "EntryNotFound", commit.sha)
        blob = entry.blob
        etag = blob.sha256 if blob.lfs else blob.git_sha1
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        wanted = _parse_range(self.headers.get("Range"), blob.size)
        if wanted == "416":
            headers["Content-Range"] = f"bytes */{blob.size}"
            self._send_error(_HttpError(416, "Requested Range Not Satisfiable"), head, headers)
            return
        status, start, end = 200, 0, blob.size - 1
        if isinstance(wanted, tuple):
            status, (start, end) = 206, wanted
            headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        key = (repo.repo_id, path)
        if self.hub._is_endless(key):
            self._start(status, {**headers, "Connection": "close"})
            self.close_connection = True
            if not head:
                self._stream(blob, start, end + 1 - start, key)
                self._garbage_until_hangup(key)
            return
        headers["Content-Length"] = str(max(end - start + 1, 0))
        self._start(status, headers)
        if not head:
            self._stream(blob, start, end + 1 - start, key)

    def _garbage_until_hangup(self, key: tuple[str, str]) -> None:
        chunk = b"\xff" * _CHUNK
        while not self.hub._closing.is_set():
            try:
                self.wfile.write(chunk)
            except OSError:
                return
            self.hub._count(key, len(chunk))

    def _stream(self, blob: Blob, start: int, length: int, key: tuple[str, str]) -> None:
        hub = self.hub
        corrupt = hub._is_corrupt(key)
        began, sent = time.monotonic(), 0
        with blob.path.open("rb") as fh:
            fh.seek(start)
            while sent < length and not hub._closing.is_set():
                rate = hub.throttle_bytes_per_s
                size = min(_CHUNK, length - sent, max(rate // 20, 1) if rate else _CHUNK)
                chunk = fh.read(size)
                if not chunk:
                    break
                if corrupt:
                    chunk = chunk.translate(_CORRUPT)
                hub._count(key, len(chunk))
                self.wfile.write(chunk)
                sent += len(chunk)
                if rate:
                    hub._wait(began + sent / rate - time.monotonic())
        if sent < length:
            self.close_connection = True

    # -- responses ---------------------------------------------------------------------
    def _start(self, status: int, headers: Mapping[str, str]) -> None:
        self.hub.requests.append(
            RequestRecord(
                method=self.command,
                path=self._record_path,
                range=self.headers.get("Range"),
                status=status,
                query=self._query,
                at=time.monotonic(),
            )
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _json(self, payload: object, head: bool) -> None:
        data = json.dumps(payload).encode()
        self._start(200, {"Content-Type": "application/json", "Content-Length": str(len(data))})
        if not head:
            self.wfile.write(data)

    def _send_error(
        self, err: _HttpError, head: bool, extra: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps({"error": err.message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        headers["X-Error-Message"] = err.message
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        headers.update(extra or {})
        self._start(err.status, headers)
        if not head:
            self.wfile.write(data)


# -- standalone ------------------------------------------------------------------------
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m modelmora.testing.hub_emulator",
        description="Serve local directories as Hugging Face Hub repos on 127.0.0.1.",
    )
    p.add_argument("--root", type=Path, required=True, help="blob store directory")
    p.add_argument("--repo", action="append", default=[], metavar="ORG/NAME=DIR", help="repeatable")
    p.add_argument("--tag", action="append", default=[], metavar="ORG/NAME:TAG", help="tag main")
    p.add_argument("--port", type=int, default=0, help="0 = ephemeral (default)")
    p.add_argument("--token", default=None, help="require this bearer token")
    p.add_argument("--lfs-threshold", type=int, default=1024 * 1024)
    p.add_argument(
        "--throttle-mb-s",
        type=float,
        default=None,
        help="send each file body at most this fast (MB/s), like a network link",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print ``READY <url>`` once listening."""
    args = _parse_args(argv)
    # Block the signals before any thread exists so that every thread inherits the mask
    # and sigwait() in the main thread is the only place they are delivered.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    hub = HubEmulator(args.root, lfs_threshold=args.lfs_threshold, port=args.port)
    try:
        for spec in args.repo:
            repo_id, sep, src = spec.partition("=")
            if not sep or not Path(src).is_dir():
                print(f"error: --repo {spec!r}: expected ORG/NAME=DIR", file=sys.stderr)
                return 2
            hub.create_repo(repo_id, Path(src))
        for spec in args.tag:
            repo_id, sep, tag = spec.rpartition(":")
            if not sep:
                print(f"error: --tag {spec!r}: expected ORG/NAME:TAG", file=sys.stderr)
                return 2
            hub.create_tag(repo_id, tag)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hub.require_token(args.token)
    if args.throttle_mb_s:
        hub.throttle_bytes_per_s = int(args.throttle_mb_s * 1_000_000)
    with hub:
        print(f"READY {hub.url}", flush=True)
        signal.sigwait(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
