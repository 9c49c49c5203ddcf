"""``torchhub://owner/repo[:ref]/ENTRY``: a ``torch.hub`` entry point, pinned to a git commit.

A torch.hub model is a git repository with a ``hubconf.py`` whose callables build modules.
The lock pins the repository commit (``ref`` → 40-hex sha via ``git ls-remote``) and every
selected file of the tree at that commit with its sha256, so the weights must live *in the
repository* (e.g. a ``*.safetensors`` file next to ``hubconf.py``): weights that an entry
downloads from elsewhere at call time cannot be pinned and are not supported.

Git is driven through the ``git`` CLI (it already speaks every transport: https, ssh,
``git://``, local paths, and honours the user's credential helpers). Objects go to a bare
mirror under ``$MODELMORA_HOME/git/`` shared by ``lock`` and ``pull``; only the commits the
lock needs are fetched (``--depth=1``). ``hubconf.py`` is never executed here: the entry is
checked statically with :mod:`ast`; running it is the converter's job, and only with
``trust_remote_code: true``.

The snapshot also carries one generated file, ``modelmora_torchhub.json`` (entry, repo,
commit), so that the converter knows which entry point to load from the tree.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from modelmora.errors import SourceError, SourceNotFoundError, UserInputError
from modelmora.home import modelmora_home
from modelmora.names import TORCHHUB_DESCRIPTOR
from modelmora.sources.base import (
    OFFLINE_HINT,
    PULL_HINT,
    ProgressCallback,
    RemoteFile,
    Resolution,
    Source,
    safe_relpath,
)
from modelmora.sources.caches import using

__all__ = ["DEFAULT_ENDPOINT", "TorchHubSource", "descriptor_bytes", "parse_location"]

DEFAULT_ENDPOINT = "https://github.com"
HUBCONF = "hubconf.py"
FETCH_TIMEOUT_FACTOR = 20
"""``git fetch`` moves whole packs: it gets ``timeout_s × 20`` (10 min by default)."""

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_LOCATION_RE = re.compile(
    r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<repo>[A-Za-z0-9][\w.-]*)"
    r"(?::(?P<ref>[^\s:]+))?/(?P<entry>[A-Za-z_][A-Za-z0-9_]*)$"
)
_BAD_REF = re.compile(r"(^[-/.])|\.\.|[~^?*\[\\]|@\{|//|/$|\.lock$|\.$")
_CHUNK = 1 << 20
_NOT_FOUND = (
    "does not appear to be a git repository",
    "repository not found",
    "no such repository",
    "repository not exported",
    "not found",
    "not our ref",
    "couldn't find remote ref",
)


@dataclass(frozen=True)
class HubLocation:
    owner: str
    repo: str
    ref: str | None
    entry: str

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"


@dataclass(frozen=True)
class _TreeEntry:
    oid: str
    size: int


def parse_location(location: str) -> HubLocation:
    """``owner/repo:v1.2/resnet18`` → owner, repo, ref (``None``: default branch), entry."""
    text = location.strip()
    m = _LOCATION_RE.match(text)
    if not m or ".." in (m["owner"], m["repo"]):
        raise UserInputError(
            f"invalid torchhub source 'torchhub://{location}': expected "
            "torchhub://OWNER/REPO[:REF]/ENTRY (ENTRY is a hubconf.py function name)"
        )
    ref = m["ref"]
    if ref is not None and _BAD_REF.search(ref):
        raise UserInputError(f"invalid torchhub source 'torchhub://{location}': bad ref {ref!r}")
    return HubLocation(m["owner"], m["repo"], ref, m["entry"])


def descriptor_bytes(entry: str, repo_id: str, commit: str) -> bytes:
    """The generated ``modelmora_torchhub.json``: deterministic, so its sha256 can be locked."""
    payload = {"commit": commit, "entry": entry, "format": 1, "repo": repo_id}
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def _redact(text: str) -> str:
    """Drop ``user:password@`` from any URL in ``text`` (endpoints may embed credentials)."""
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", r"\1", text)


def _repo_url(endpoint: str, owner: str, repo: str, project_dir: Path) -> str:
    """``https://github.com`` + owner/repo; a plain directory becomes a ``file://`` URL."""
    base = endpoint.strip().rstrip("/")
    if re.match(r"^[a-z][a-z0-9+.-]*://", base):
        return f"{base}/{owner}/{repo}"
    path = Path(os.path.expanduser(base))
    if not path.is_absolute():
        path = project_dir / path
    # file:// (not a bare path) so that git uses its pack protocol, where --depth works.
    return (path.resolve() / owner / repo).as_uri()


def hubconf_names(source: str) -> tuple[set[str], list[str]] | None:
    """Top-level names ``hubconf.py`` defines and its public functions, without running it.

    ``None`` when static analysis cannot tell (star imports, conditional definitions).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: set[str] = set()
    functions: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            if not isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                functions.append(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif not isinstance(node, ast.Expr):
            return None  # conditional definitions (if/try): cannot tell statically
    return names, functions


class TorchHubSource(Source):
    """A torch.hub entry point in a git repository; revision = the commit sha.

    ``default_include`` is every file of the tree: a hub repository is code plus its weights,
    and ``hubconf.py`` may import any module beside it.
    """

    scheme = "torchhub"
    default_include = ("*",)

    def configure(self) -> None:
        self.hub = parse_location(self.location)
        registry = self.context.registry(self.registry_name)
        self.endpoint = (registry.endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.url = _repo_url(self.endpoint, self.hub.owner, self.hub.repo, self.context.project_dir)

    @property
    def origin(self) -> str:
        return f"torchhub://{self.hub.repo_id}"

    @property
    def shown_url(self) -> str:
        return _redact(self.url)

    # -- resolve -----------------------------------------------------------------------
    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        if not self.options.get("trust_remote_code"):
            raise UserInputError(
                f"{self.origin}/{self.hub.entry}: torch.hub models are built by running the "
                "repository's hubconf.py (remote code)",
                hint="set trust_remote_code: true on this model in modelmora.yml if you trust "
                f"{self.hub.repo_id}",
            )
        wanted = pinned_revision or self._resolve_ref()
        if not _SHA_RE.match(wanted):
            raise SourceError(f"{self.origin}: locked revision {wanted!r} is not a commit sha")
        with using(self.mirror):
            return self._resolve_commit(wanted, pinned_revision)

    def _resolve_commit(self, wanted: str, pinned_revision: str | None) -> Resolution:
        self._ensure_commit(wanted)
        # A tag object names its commit only once peeled; the lock records the commit.
        commit = self._git_local(["rev-parse", "--verify", f"{wanted}^{{commit}}"]).decode().strip()
        if pinned_revision and commit != pinned_revision:
            raise SourceError(f"{self.origin}: locked revision {wanted} is not a commit")
        tree = self._tree(commit)
        where = f"{self.origin}@{commit[:12]}"
        if HUBCONF not in tree:
            raise SourceError(f"{where}: no {HUBCONF} at the repository root")
        if TORCHHUB_DESCRIPTOR in tree:
            raise SourceError(
                f"{where}: the repository ships {TORCHHUB_DESCRIPTOR}, a name ModelMora "
                "generates for torchhub snapshots"
            )
        self._check_entry(commit, tree[HUBCONF], where)
        chosen = self.select_some(tree, where=where, listed="in the commit")
        if HUBCONF not in chosen:
            raise UserInputError(
                f"{where}: files.include/exclude leave out {HUBCONF}, which defines the entry"
            )
        digests = self._sha256s([tree[p].oid for p in chosen])
        files = [
            RemoteFile(
                path=safe_relpath(p, origin=where), size=tree[p].size, sha256=digests[tree[p].oid]
            )
            for p in chosen
        ]
        descriptor = descriptor_bytes(self.hub.entry, self.hub.repo_id, commit)
        files.append(
            RemoteFile(
                path=TORCHHUB_DESCRIPTOR,
                size=len(descriptor),
                sha256=hashlib.sha256(descriptor).hexdigest(),
            )
        )
        return Resolution(
            revision=commit,
            files=tuple(sorted(files, key=lambda f: f.path)),
            metadata={"torchhub_entry": self.hub.entry},
        )

    def _resolve_ref(self) -> str:
        ref = self.hub.ref
        if ref is not None and _SHA_RE.match(ref):
            return ref
        self.require_online(
            f"resolve {ref or 'the default branch'}",
            hint=OFFLINE_HINT + " once the commit is in the cache",
        )
        patterns = [ref, f"{ref}^{{}}"] if ref else ["HEAD"]  # ^{} lists peeled tags
        out = self._git_remote(["ls-remote", "--", self.url, *patterns])
        refs: dict[str, str] = {}
        for line in out.decode(errors="replace").splitlines():
            sha, _, name = line.partition("\t")
            refs[name.strip()] = sha.strip()
        if ref is None:
            if "HEAD" in refs:
                return refs["HEAD"]
            raise SourceNotFoundError(f"{self.origin}: {self.shown_url} has no default branch")
        # A peeled annotated tag (^{}) names the commit; the plain tag ref names the tag object.
        for name in (f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", ref):
            if name in refs:
                return refs[name]
        raise SourceNotFoundError(
            f"{self.origin}: ref {ref!r} not found at {self.shown_url}",
            hint="use a branch, a tag or a full 40-hex commit sha",
        )

    def _check_entry(self, commit: str, hubconf: _TreeEntry, where: str) -> None:
        text = self._git_local(["cat-file", "blob", hubconf.oid]).decode("utf-8", "replace")
        found = hubconf_names(text)
        if found is not None and self.hub.entry not in found[0]:
            functions = ", ".join(found[1]) or "none"
            raise SourceNotFoundError(
                f"{where}: {HUBCONF} defines no entry {self.hub.entry!r} (functions: {functions})"
            )

    def _tree(self, commit: str) -> dict[str, _TreeEntry]:
        """Regular files of the commit's tree (symlinks and submodules are skipped)."""
        out = self._git_local(["ls-tree", "-r", "-l", "-z", "--full-tree", commit])
        tree: dict[str, _TreeEntry] = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, kind, oid, size = meta.decode().split()
            if kind != "blob" or mode == "120000":
                continue
            tree[raw_path.decode("utf-8", "surrogateescape")] = _TreeEntry(oid, int(size))
        return tree

    def _sha256s(self, oids: Sequence[str]) -> dict[str, str]:
        """sha256 of each blob, streamed through one ``git cat-file --batch`` process."""
        unique = list(dict.fromkeys(oids))
        digests: dict[str, str] = {}
        if not unique:
            return digests
        proc = subprocess.Popen(
            ["git", f"--git-dir={self.mirror}", "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_git_env(),
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for oid in unique:  # one request at a time: no pipe can fill up and deadlock
                proc.stdin.write(f"{oid}\n".encode())
                proc.stdin.flush()
                header = proc.stdout.readline().decode().split()
                if len(header) != 3 or header[1] != "blob":
                    raise SourceError(f"{self.origin}: git object {oid} is missing from the mirror")
                remaining, h = int(header[2]), hashlib.sha256()
                while remaining:
                    chunk = proc.stdout.read(min(_CHUNK, remaining))
                    if not chunk:
                        raise SourceError(f"{self.origin}: git cat-file ended early on {oid}")
                    h.update(chunk)
                    remaining -= len(chunk)
                proc.stdout.read(1)  # the newline after each object
                digests[oid] = h.hexdigest()
        finally:
            proc.stdin.close()
            proc.stdout.close()
            proc.wait()
        return digests

    # -- fetch -------------------------------------------------------------------------
    def fetch(
        self,
        revision: str,
        file: RemoteFile,
        dest: Path,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Write a file of the locked commit from the mirror (fetching the commit if needed)."""
        path = safe_relpath(file.path, origin=f"{self.origin}@{revision}")
        if path == TORCHHUB_DESCRIPTOR:
            data = descriptor_bytes(self.hub.entry, self.hub.repo_id, revision)[offset:]
            with dest.open("ab" if offset else "wb") as fh:
                fh.write(data)
            if progress is not None:
                progress(len(data))
            return
        if not _SHA_RE.match(revision):
            raise SourceError(f"{self.origin}: locked revision {revision!r} is not a commit sha")
        with using(self.mirror):
            self._ensure_commit(revision)
            self._cat_file(revision, path, dest, offset, progress)

    def _cat_file(
        self,
        revision: str,
        path: str,
        dest: Path,
        offset: int,
        progress: ProgressCallback | None,
    ) -> None:
        proc = subprocess.Popen(
            ["git", f"--git-dir={self.mirror}", "cat-file", "blob", f"{revision}:{path}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_git_env(),
        )
        assert proc.stdout is not None and proc.stderr is not None
        skip = offset
        with dest.open("ab" if offset else "wb") as fh:
            while chunk := proc.stdout.read(_CHUNK):
                if skip:
                    drop = min(skip, len(chunk))
                    chunk, skip = chunk[drop:], skip - drop
                    if not chunk:
                        continue
                fh.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stdout.close()
        proc.stderr.close()
        if proc.wait() != 0:
            raise SourceNotFoundError(
                f"{self.origin}@{revision}: file {path!r} not in the commit: {_last_line(err)}"
            )

    # -- git plumbing ------------------------------------------------------------------
    @property
    def mirror(self) -> Path:
        """One bare repository per remote URL, shared by every project on this machine."""
        key = hashlib.sha256(self.url.encode()).hexdigest()[:24]
        return modelmora_home() / "git" / f"{key}.git"

    def _has_commit(self, commit: str) -> bool:
        if not (self.mirror / "HEAD").is_file():
            return False
        probe = subprocess.run(
            ["git", f"--git-dir={self.mirror}", "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
            env=_git_env(),
            check=False,
        )
        return probe.returncode == 0

    def _ensure_commit(self, commit: str) -> None:
        if self._has_commit(commit):
            return
        self.require_online(
            f"fetch commit {commit[:12]}", "it is not in the local git cache", hint=PULL_HINT
        )
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.mirror) + ".lock"):
            if self._has_commit(commit):
                return
            if not (self.mirror / "HEAD").is_file():
                _run(["git", "init", "--quiet", "--bare", str(self.mirror)], timeout=60)
            self._git_remote(
                ["fetch", "--quiet", "--depth=1", "--no-tags", "--", self.url, commit],
                fetch=True,
            )
            if not self._has_commit(commit):
                raise SourceNotFoundError(f"{self.origin}: commit {commit} not found")
            # A ref keeps the fetched commit safe from `git gc`.
            self._git_local(["update-ref", f"refs/modelmora/{commit}", commit])

    def _git_local(self, args: Sequence[str]) -> bytes:
        proc = _run(["git", f"--git-dir={self.mirror}", *args], timeout=self.context.timeout_s)
        if proc.returncode != 0:
            detail = _last_line(proc.stderr.decode(errors="replace"))
            raise SourceError(f"{self.origin}: git {args[0]} failed: {_redact(detail)}")
        return proc.stdout

    def _git_remote(self, args: Sequence[str], *, fetch: bool = False) -> bytes:
        """Run a git command that talks to the remote, retrying transient failures."""
        # Imported here: sources.http loads httpx (~70 ms), which git-only work never needs.
        from modelmora.sources.http import Transient, retrying

        timeout = self.context.timeout_s * (FETCH_TIMEOUT_FACTOR if fetch else 1)
        command = ["git", *([f"--git-dir={self.mirror}"] if fetch else []), *args]

        def call() -> bytes:
            try:
                proc = _run(command, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise Transient(f"timed out after {timeout:g} s") from None
            if proc.returncode == 0:
                return proc.stdout
            stderr = proc.stderr.decode(errors="replace")
            reason = _redact(_last_line(stderr))
            if any(marker in stderr.lower() for marker in _NOT_FOUND):
                if fetch:
                    raise SourceNotFoundError(
                        f"{self.origin}: cannot fetch {args[-1]} from {self.shown_url}: {reason}"
                    )
                raise SourceNotFoundError(
                    f"{self.origin}: repository not found at {self.shown_url}",
                    hint="check OWNER/REPO and registries.torchhub.endpoint",
                )
            raise Transient(reason)

        def unreachable(attempts: int, reason: str) -> SourceError:
            return SourceError(
                f"git remote {self.shown_url} unreachable after {attempts} attempts: {reason}"
            )

        return retrying(call, retries=self.context.max_retries, unreachable=unreachable)


def _git_env() -> dict[str, str]:
    """Never prompt (a hung prompt would hang `lock`); stable, parseable messages."""
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", "LC_ALL": "C"})
    return env


def _run(command: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(command), capture_output=True, timeout=timeout, env=_git_env(), check=False
        )
    except FileNotFoundError as exc:
        raise SourceError(
            "torchhub sources need the `git` command, which is not installed",
            hint="install git (e.g. apt-get install git) and retry",
        ) from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    meaningful = [line for line in lines if line.lower().startswith(("fatal", "error"))]
    return (meaningful or lines or ["no output"])[-1][:300]
