"""An emulation of the Weights & Biases HTTP contract that ``wandb://`` sources rely on.

This is **not** a W&B server and it was not checked against one: no W&B server can run in
our test environment. Tests that use it test ModelMora's resolver against an *emulation* of
the W&B HTTP contract, written from the public ``wandb`` client
(``wandb/apis/public/artifacts.py``, ``wandb/sdk/artifacts/artifact.py``). What it serves:

* ``POST /graphql`` — only the two operations ``WandbSource`` sends, recognised by their
  operation name (``ArtifactCollectionMembership``: project → artifactCollection(name) →
  aliases + artifactMembership(aliasName); ``ArtifactFiles``: artifact(id) → files
  connection, paginated) and answered from the variables;
  it is not a GraphQL engine, but a query asking for a field outside the emulated schema is
  refused with HTTP 400 ``Cannot query field …``, as a real GraphQL server would. Unknown
  projects, collections and aliases come back as ``null``, like W&B does.
* HTTP basic auth ``api:<key>`` on the API host: no or a wrong key → 401.
* ``GET /artifactsV2/default/{entity}/{artifact id}/{md5 hex}/{name}`` on the API host —
  a file's ``url``; needs the key.
* ``GET /wandb-artifacts/{md5 hex}?X-Goog-Signature=…`` on a *second* port standing for the
  storage bucket — a file's ``directUrl``. Like a signed cloud-storage URL it takes no API
  key: a request that carries ``Authorization`` is refused (400), so a leaked key fails the
  download instead of passing unnoticed.

Both download routes answer single ``Range: bytes=N-`` requests with 206. Helpers publish
artifact versions (``latest`` moves to each new version, like W&B), move aliases and change
stored bytes behind W&B's back (``tamper``). Not emulated: registry (portfolio)
collections of linked artifacts, reference (external) files, mutations, rate limits.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

from modelmora.testing.hub_emulator import RequestLog, RequestRecord, _parse_range
from modelmora.testing.servers import BackgroundServer, Emulator, EmulatorServer

__all__ = ["PublishedVersion", "RequestLog", "RequestRecord", "WandbEmulator"]

_OPERATION_RE = re.compile(r"^\s*query\s+([A-Za-z_]\w*)")
_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\$?[A-Za-z_]\w*')
_SCHEMA_WORDS = frozenset(
    # operations, argument names, types and fields of the emulated schema subset
    {
        *("query", "ArtifactCollectionMembership", "ArtifactFiles", "String", "ID", "Int"),
        *("artifactMembership", "aliasName"),
        *("project", "name", "entityName", "artifactCollection", "id", "aliases", "first"),
        *("after", "edges", "node", "alias", "artifact", "digest", "state", "versionIndex"),
        *("files", "pageInfo", "hasNextPage", "endCursor", "sizeBytes", "directUrl", "url"),
    }
)
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class PublishedVersion:
    """What :meth:`WandbEmulator.publish` created."""

    version: str
    """``vN``"""
    id: str
    """The artifact id (base64 of ``Artifact:<n>``, like W&B's)."""
    digest: str


@dataclass
class _Version:
    index: int
    id: str
    files: dict[str, tuple[str, int]]
    """path → (md5 hex, size) of the bytes at publish time: what GraphQL reports."""
    digest: str
    state: str = "COMMITTED"


@dataclass
class _Collection:
    id: str
    versions: list[_Version] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)


class WandbEmulator(Emulator):
    """In-process W&B API + storage on two ephemeral ports; use as a context manager.

    ``api_key=None`` serves anonymous requests (a public project); with a key, every API
    request must carry ``Authorization: Basic base64(api:<key>)``. ``direct_urls=False``
    omits ``directUrl`` so that clients must download from ``url`` on the API host.
    ``page_size`` caps files per ``ArtifactFiles`` page (to exercise pagination).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        direct_urls: bool = True,
        page_size: int = 1000,
    ) -> None:
        self.api_key = api_key
        self.direct_urls = direct_urls
        self.page_size = page_size
        self.requests = RequestLog()
        self._projects: dict[tuple[str, str], dict[str, _Collection]] = {}
        self._blobs: dict[str, bytes] = {}
        self._ids = 0
        self._lock = threading.RLock()
        self._servers: dict[str, BackgroundServer] = {}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> WandbEmulator:
        if self._servers:
            return self
        roles: tuple[Literal["api", "storage"], ...] = ("api", "storage")
        for role in roles:
            server = _Server(("127.0.0.1", 0), _Handler)
            server.emulator, server.role = self, role
            self._servers[role] = BackgroundServer(server, f"wandb-{role}")
        return self

    def close(self) -> None:
        for running in self._servers.values():
            running.stop()
        self._servers = {}

    @property
    def url(self) -> str:
        """The API endpoint (what ``WANDB_BASE_URL`` or ``registries.wandb.endpoint`` holds)."""
        return self._base("api")

    @property
    def storage_url(self) -> str:
        return self._base("storage")

    def _base(self, role: str) -> str:
        running = self._servers.get(role)
        if running is None:
            raise RuntimeError("WandbEmulator is not started (use it as a context manager)")
        return running.url()

    # -- content -----------------------------------------------------------------------
    def publish(
        self,
        entity: str,
        project: str,
        artifact: str,
        files: Mapping[str, bytes],
        *,
        aliases: Iterable[str] = (),
    ) -> PublishedVersion:
        """Log a new version of ``artifact`` (created if new); ``latest`` moves to it."""
        with self._lock:
            collections = self._projects.setdefault((entity, project), {})
            if artifact not in collections:
                collections[artifact] = _Collection(id=self._new_id("ArtifactCollection"))
            coll = collections[artifact]
            digests = {}
            for name, data in files.items():
                md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
                self._blobs[md5] = bytes(data)
                digests[name] = (md5, len(data))
            manifest = "\n".join(f"{n}:{_b64(digests[n][0])}" for n in sorted(digests))
            version = _Version(
                index=len(coll.versions),
                id=self._new_id("Artifact"),
                files=digests,
                digest=hashlib.md5(manifest.encode(), usedforsecurity=False).hexdigest(),
            )
            coll.versions.append(version)
            for alias in ("latest", *aliases):
                coll.aliases[alias] = version.index
            return PublishedVersion(f"v{version.index}", version.id, version.digest)

    def set_alias(self, entity: str, project: str, artifact: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (``vN``), moving it from wherever it was."""
        with self._lock:
            coll = self._projects[(entity, project)][artifact]
            index = int(version.removeprefix("v"))
            if index >= len(coll.versions):
                raise ValueError(f"{artifact} has no version {version}")
            coll.aliases[alias] = index

    def tamper(
        self, entity: str, project: str, artifact: str, version: str, path: str, data: bytes
    ) -> None:
        """Serve ``data`` for ``path`` while GraphQL keeps the published size and md5."""
        with self._lock:
            coll = self._projects[(entity, project)][artifact]
            md5, _ = coll.versions[int(version.removeprefix("v"))].files[path]
            self._blobs[md5] = bytes(data)

    def set_state(self, entity: str, project: str, artifact: str, version: str, state: str) -> None:
        """E.g. ``PENDING`` (upload not finished) or ``DELETED``."""
        with self._lock:
            coll = self._projects[(entity, project)][artifact]
            coll.versions[int(version.removeprefix("v"))].state = state

    def _new_id(self, kind: str) -> str:
        self._ids += 1
        return base64.b64encode(f"{kind}:{1000 + self._ids}".encode()).decode()

    # -- GraphQL -----------------------------------------------------------------------
    def _graphql(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body)
            query, variables = request["query"], request.get("variables") or {}
            assert isinstance(query, str) and isinstance(variables, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return 400, {"errors": [{"message": "Must provide query string."}]}
        for token in _TOKEN_RE.findall(query):
            if token[0] not in '"$' and token not in _SCHEMA_WORDS:
                return 400, {"errors": [{"message": f'Cannot query field "{token}".'}]}
        m = _OPERATION_RE.match(query)
        operation = m.group(1) if m else None
        with self._lock:
            if operation == "ArtifactCollectionMembership":
                return 200, {"data": self._membership(variables)}
            if operation == "ArtifactFiles":
                return 200, {"data": self._artifact_files(variables)}
        return 400, {"errors": [{"message": f"operation {operation!r} is not emulated"}]}

    def _membership(self, v: Mapping[str, Any]) -> dict[str, Any]:
        collections = self._projects.get((v["entityName"], v["projectName"]))
        if collections is None:
            return {"project": None}
        coll = collections.get(v["artifactName"])
        if coll is None:
            return {"project": {"artifactCollection": None}}
        alias = str(v["alias"])
        m = re.fullmatch(r"v(\d+)", alias)
        index = int(m.group(1)) if m else coll.aliases.get(alias)
        version = None
        if index is not None and index < len(coll.versions):
            version = coll.versions[index]
            if version.state == "DELETED":
                version = None
        membership = None
        if version is not None:
            membership = {
                "versionIndex": version.index,
                "artifact": {"id": version.id, "digest": version.digest, "state": version.state},
            }
        return {
            "project": {
                "artifactCollection": {
                    "id": coll.id,
                    "name": v["artifactName"],
                    "aliases": {"edges": [{"node": {"alias": a}} for a in sorted(coll.aliases)]},
                    "artifactMembership": membership,
                }
            }
        }

    def _artifact_files(self, v: Mapping[str, Any]) -> dict[str, Any]:
        found = self._version_by_id(str(v["id"]))
        if found is None:
            return {"artifact": None}
        entity, version = found
        names = sorted(version.files)
        start = int(base64.b64decode(v["cursor"]).decode()) if v.get("cursor") else 0
        count = min(int(v.get("perPage") or 50), self.page_size)
        page = names[start : start + count]
        edges = []
        for name in page:
            md5, size = version.files[name]
            path = quote(name, safe="/")
            url = f"{self.url}/artifactsV2/default/{entity}/{quote(version.id)}/{md5}/{path}"
            direct = f"{self.storage_url}/wandb-artifacts/{md5}?X-Goog-Signature=emulated"
            edges.append(
                {
                    "node": {
                        "name": name,
                        "sizeBytes": size,
                        "digest": _b64(md5),
                        "directUrl": direct if self.direct_urls else None,
                        "url": url,
                    }
                }
            )
        end = start + len(page)
        return {
            "artifact": {
                "files": {
                    "pageInfo": {
                        "hasNextPage": end < len(names),
                        "endCursor": base64.b64encode(str(end).encode()).decode(),
                    },
                    "edges": edges,
                }
            }
        }

    def _version_by_id(self, artifact_id: str) -> tuple[str, _Version] | None:
        for (entity, _), collections in self._projects.items():
            for coll in collections.values():
                for version in coll.versions:
                    if version.id == artifact_id:
                        return entity, version
        return None

    def _authorized(self, header: str | None) -> bool:
        if self.api_key is None:
            return True
        expected = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        return header == f"Basic {expected}"


def _b64(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


class _Server(EmulatorServer):
    emulator: WandbEmulator
    role: Literal["api", "storage"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "ModelMoraWandbEmulator/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        emulator, role = self.server.emulator, self.server.role
        parts = urlsplit(self.path)
        self._record = (unquote(parts.path), parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization")
        if role == "storage":
            m = re.fullmatch(r"/wandb-artifacts/([0-9a-f]{32})", parts.path)
            if self.command != "GET" or m is None or "X-Goog-Signature=" not in parts.query:
                return self._json(404, {"error": "NoSuchKey"})
            if auth is not None:  # signed URLs carry their credential; a key is a leak
                return self._json(400, {"error": "signed URL requests take no Authorization"})
            return self._blob(m.group(1))
        if not emulator._authorized(auth):
            return self._json(401, {"errors": [{"message": "user is not logged in"}]})
        if self.command == "POST" and parts.path == "/graphql":
            status, payload = emulator._graphql(body)
            return self._json(status, payload)
        m = re.fullmatch(r"/artifactsV2/default/[^/]+/[^/]+/([0-9a-f]{32})/.+", parts.path)
        if self.command == "GET" and m is not None:
            return self._blob(m.group(1))
        return self._json(404, {"error": "not found"})

    def _blob(self, md5: str) -> None:
        with self.server.emulator._lock:
            data = self.server.emulator._blobs.get(md5)
        if data is None:
            return self._json(404, {"error": "NoSuchKey"})
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        wanted = _parse_range(self.headers.get("Range"), len(data))
        if wanted == "416":
            headers["Content-Range"] = f"bytes */{len(data)}"
            return self._send(416, b"", headers)
        status, start, end = 200, 0, len(data) - 1
        if isinstance(wanted, tuple):
            status, (start, end) = 206, wanted
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, data[start : end + 1], headers)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        path, query = self._record
        self.server.emulator.requests.append(
            RequestRecord(
                method=self.command,
                path=path,
                range=self.headers.get("Range"),
                status=status,
                query=query,
            )
        )
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), _CHUNK):
            self.wfile.write(body[i : i + _CHUNK])
