"""``wandb://ENTITY/PROJECT/ARTIFACT[:ALIAS]``: a Weights & Biases artifact version.

An alias (``latest``, ``production``, …) is a pointer that W&B users move; a version
(``v3``) is not. The lock therefore pins the version the alias pointed to (``revision =
"v3"``) plus the artifact's id and manifest digest (metadata); ``lock`` keeps that version
until ``--upgrade``, and asks W&B for ``v3`` itself (not the alias) when only the file
selection changed.

Everything goes through the W&B public GraphQL API (``{endpoint}/graphql``, HTTP basic auth
``api:<key>``) with two queries taken from the ``wandb`` client
(``wandb/apis/public/artifacts.py``, ``wandb/sdk/artifacts/artifact.py``), cut down to the
fields we use. The ``wandb`` package itself is not used: it is heavy, starts background
services and keeps its own cache, while we only need a file list and a byte pump.

W&B publishes an md5 (base64) per file, not a sha256, so :meth:`WandbSource.resolve`
returns ``sha256=None`` and the lock step downloads and hashes each file; that first
download is also checked against the published md5, so the digest in the lock is known to be
of the bytes W&B recorded. Later pulls are verified against the lock's sha256.

Files are fetched from their ``directUrl`` (a signed storage URL, usually on another host:
it gets *no* API key) or, when the server gives none, from ``url`` on the API host (with
the key). Offline mode and error mapping follow :mod:`modelmora.sources.hf`; retries are
the shared policy of :mod:`modelmora.sources.http`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from modelmora.errors import (
    IntegrityError,
    SourceError,
    SourceNotFoundError,
    UserInputError,
)
from modelmora.sources.base import (
    OFFLINE_HINT,
    Credentials,
    ProgressCallback,
    RemoteFile,
    Resolution,
    Source,
    safe_relpath,
)
from modelmora.sources.http import (
    HttpStatusError,
    Transient,
    raise_if_transient,
    retrying,
    shared_client,
    transient_failures,
)

__all__ = ["DEFAULT_ENDPOINT", "TOKEN_ENV", "WandbLocation", "WandbSource", "parse_location"]

DEFAULT_ENDPOINT = "https://api.wandb.ai"
TOKEN_ENV = "WANDB_API_KEY"
PAGE_SIZE = 1000
"""Files per ``ArtifactFiles`` page (the wandb client asks for up to 5000)."""

EXPECTED_FORM = "wandb://ENTITY/PROJECT/ARTIFACT[:ALIAS]"
_NAME = r"[A-Za-z0-9][\w.-]*"
_LOCATION_RE = re.compile(
    rf"^(?P<entity>{_NAME})/(?P<project>{_NAME})/(?P<artifact>{_NAME})(?::(?P<alias>[\w.-]+))?$"
)
_VERSION_RE = re.compile(r"^v(\d+)$")
_T = TypeVar("_T", bound=BaseModel)

# What the wandb client asks to turn ``NAME:ALIAS`` into a version: the collection's
# membership for the alias. Its ``versionIndex`` counts within *this* collection, which
# matters for registry (portfolio) collections, where ``artifact(name: "NAME:ALIAS")`` gives
# the linked artifact with its index in the collection it was logged to. The aliases let a
# missing alias be told apart from a missing artifact.
ARTIFACT_QUERY = """
query ArtifactCollectionMembership(
    $entityName: String!,
    $projectName: String!,
    $artifactName: String!,
    $alias: String!
) {
    project(name: $projectName, entityName: $entityName) {
        artifactCollection(name: $artifactName) {
            id
            name
            aliases(first: 100) {
                edges {
                    node {
                        alias
                    }
                }
            }
            artifactMembership(aliasName: $alias) {
                versionIndex
                artifact {
                    id
                    digest
                    state
                }
            }
        }
    }
}
"""

# The wandb client's ``ArtifactFileURLs``, with size and digest added from its files fragment.
FILES_QUERY = """
query ArtifactFiles($id: ID!, $cursor: String, $perPage: Int) {
    artifact(id: $id) {
        files(after: $cursor, first: $perPage) {
            pageInfo {
                hasNextPage
                endCursor
            }
            edges {
                node {
                    name
                    sizeBytes
                    digest
                    directUrl
                    url
                }
            }
        }
    }
}
"""


# -- GraphQL answers ----------------------------------------------------------------------
class _Gql(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class _GqlError(_Gql):
    message: str = ""


class _Answer(_Gql):
    data: dict[str, Any] | None = None
    errors: list[_GqlError] | None = None


class _AliasNode(_Gql):
    alias: str


class _AliasEdge(_Gql):
    node: _AliasNode


class _AliasConnection(_Gql):
    edges: list[_AliasEdge] = []


class _Artifact(_Gql):
    id: str
    digest: str | None = None
    state: str | None = None


class _Membership(_Gql):
    version_index: int | None = None
    artifact: _Artifact | None = None


class _Collection(_Gql):
    id: str
    name: str
    aliases: _AliasConnection | None = None
    artifact_membership: _Membership | None = None


class _Project(_Gql):
    artifact_collection: _Collection | None = None


class _ArtifactData(_Gql):
    project: _Project | None = None


class _FileNode(_Gql):
    name: str
    size_bytes: int
    digest: str | None = None
    """base64 of the file's md5, as in the artifact manifest."""
    direct_url: str | None = None
    url: str | None = None


class _FileEdge(_Gql):
    node: _FileNode


class _PageInfo(_Gql):
    has_next_page: bool = False
    end_cursor: str | None = None


class _FileConnection(_Gql):
    page_info: _PageInfo = _PageInfo()
    edges: list[_FileEdge] = []


class _ArtifactFiles(_Gql):
    files: _FileConnection | None = None


class _FilesData(_Gql):
    artifact: _ArtifactFiles | None = None


# -- spec and connection ------------------------------------------------------------------
@dataclass(frozen=True)
class WandbLocation:
    entity: str
    project: str
    artifact: str
    alias: str

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.artifact}"


def parse_location(location: str) -> WandbLocation:
    """``team/proj/classifier:production`` → its parts; the alias defaults to ``latest``."""
    m = _LOCATION_RE.match(location.strip())
    if not m:
        raise UserInputError(
            f"invalid wandb source 'wandb://{location}': expected {EXPECTED_FORM}",
            hint="e.g. wandb://my-team/my-project/my-model:production (ALIAS is an alias such "
            "as latest, or a version such as v3)",
        )
    return WandbLocation(m["entity"], m["project"], m["artifact"], m["alias"] or "latest")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _md5_b64(path: Path) -> str:
    """The file digest W&B publishes: base64 of the raw md5."""
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode()


class WandbSource(Source):
    """A W&B artifact version; revision = ``vN``. Every file of the artifact by default."""

    scheme = "wandb"

    def configure(self) -> None:
        self.where = parse_location(self.location)
        registry = self.registry_name
        self.endpoint, self._key, self.token_env = self.context.connection(
            registry,
            endpoint_env="WANDB_BASE_URL",
            default_endpoint=DEFAULT_ENDPOINT,
            token_env=TOKEN_ENV,
        )
        self._listings: dict[str, dict[str, _FileNode]] = {}
        self._listings_lock = threading.Lock()

    @property
    def origin(self) -> str:
        return f"wandb://{self.where.path}"

    # -- resolve -----------------------------------------------------------------------
    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        alias = pinned_revision or self.where.alias
        if pinned_revision is not None and not _VERSION_RE.match(pinned_revision):
            raise SourceError(
                f"{self.origin}: locked revision {pinned_revision!r} is not a W&B version (vN)",
                hint="run `modelmora lock --upgrade` to resolve the alias again",
            )
        self._refuse_offline(f"resolve {alias!r}")
        version, artifact = self._member(alias, pinned=pinned_revision is not None)
        if pinned_revision is not None and version != pinned_revision:
            raise SourceError(
                f"{self.origin}: asked for locked version {pinned_revision}, W&B answered {version}"
            )
        listing = self._listing(version, artifact.id)
        where = f"{self.origin}:{version}"
        chosen = self.select_some(listing, where=where)
        files = tuple(
            RemoteFile(path=safe_relpath(name, origin=where), size=listing[name].size_bytes)
            for name in chosen
        )
        metadata = {"wandb_artifact_id": artifact.id}
        if artifact.digest:
            metadata["wandb_digest"] = artifact.digest
        return Resolution(revision=version, files=files, metadata=metadata)

    def _member(self, alias: str, *, pinned: bool) -> tuple[str, _Artifact]:
        """``(vN, artifact)`` that ``alias`` (or version) names in the collection."""
        loc = self.where
        data = self._graphql(
            ARTIFACT_QUERY,
            {
                "entityName": loc.entity,
                "projectName": loc.project,
                "artifactName": loc.artifact,
                "alias": alias,
            },
            _ArtifactData,
        )
        project = data.project
        if project is None:
            env = self.token_env
            private = (
                f"(and that the key in ${env} can read it)"
                if self._key
                else f"(a private project needs ${env})"
            )
            raise SourceNotFoundError(
                f"{self.origin}: project {loc.entity}/{loc.project} not found at {self.endpoint}",
                hint=f"check ENTITY/PROJECT {private}",
            )
        collection = project.artifact_collection
        if collection is None:
            raise SourceNotFoundError(
                f"{self.origin}: no artifact {loc.artifact!r} in project "
                f"{loc.entity}/{loc.project} at {self.endpoint}",
                hint="check the artifact name (the part before ':' in the W&B UI)",
            )
        member = collection.artifact_membership
        if member is None or member.artifact is None:
            if pinned:
                raise SourceNotFoundError(
                    f"{self.origin}: locked version {alias} no longer exists at {self.endpoint}",
                    hint="it was deleted; run `modelmora lock --upgrade` to pin what "
                    f"{loc.alias!r} points to now",
                )
            known = sorted(e.node.alias for e in (collection.aliases or _AliasConnection()).edges)
            raise SourceNotFoundError(
                f"{self.origin}: alias {alias!r} not found at {self.endpoint}",
                hint=f"aliases of {loc.artifact}: {', '.join(known) or 'none'}; "
                "a version such as v0 works too",
            )
        if member.version_index is None:
            raise SourceError(f"{self.origin}:{alias}: W&B gave no version index")
        version, artifact = f"v{member.version_index}", member.artifact
        if artifact.state and artifact.state.upper() != "COMMITTED":
            raise SourceError(
                f"{self.origin}:{alias}: version {version} is {artifact.state.lower()}, "
                "not committed",
                hint="wait for the upload to finish (or pick another version)",
            )
        return version, artifact

    def _listing(self, version: str, artifact_id: str | None = None) -> dict[str, _FileNode]:
        """Every file of ``version`` by name (cached: ``fetch`` needs the URLs per file)."""
        with self._listings_lock:
            cached = self._listings.get(version)
        if cached is not None:
            return cached
        if artifact_id is None:
            artifact_id = self._member(version, pinned=True)[1].id
        listing: dict[str, _FileNode] = {}
        cursor: str | None = None
        while True:
            data = self._graphql(
                FILES_QUERY, {"id": artifact_id, "cursor": cursor, "perPage": PAGE_SIZE}, _FilesData
            )
            files = data.artifact.files if data.artifact is not None else None
            if files is None:
                raise SourceNotFoundError(f"{self.origin}:{version}: W&B lists no files")
            for edge in files.edges:
                listing[edge.node.name] = edge.node
            if not files.page_info.has_next_page or not files.edges:
                break
            cursor = files.page_info.end_cursor
        with self._listings_lock:
            self._listings[version] = listing
        return listing

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
        """Stream one file; retries resume from what is already in ``dest``.

        When ``file.sha256`` is unknown (the lock step hashing a fresh resolution), the
        bytes are also checked against the md5 W&B published for them.
        """
        self._refuse_offline(f"download {file.path}")
        where = f"{self.origin}:{revision}"
        path = safe_relpath(file.path, origin=where)
        node_box: list[_FileNode] = []
        same_host = [False]

        def target() -> tuple[str, Mapping[str, str]]:
            node = self._listing(revision).get(path)
            if node is None:
                raise SourceNotFoundError(f"{where}: W&B lists no file {path!r}")
            node_box[:] = [node]
            url = node.direct_url or node.url
            if not url:
                raise SourceError(
                    f"{where}: {path!r} has no download URL (a reference to external "
                    "storage?); only files stored in W&B are supported"
                )
            same_host[0] = _origin(url) == _origin(self.endpoint)
            return url, self._auth_headers() if same_host[0] else {}

        def refused(exc: HttpStatusError) -> Exception:
            status = exc.status
            if status in (400, 401, 403) and not same_host[0]:
                # A signed storage URL expired: ask W&B for fresh ones and try again.
                with self._listings_lock:
                    self._listings.pop(revision, None)
                return Transient(f"storage refused the signed URL (HTTP {status})")
            return self.answer_error(
                status,
                endpoint=self.endpoint,
                credentials=self._credentials,
                not_found=SourceNotFoundError(f"{where}: file {path!r} not found"),
                where=f"{where}: downloading {path!r}",
            )

        self.download(
            target,
            dest,
            file,
            offset=offset,
            progress=progress,
            refused=refused,
            unreachable=self._unreachable,
        )
        node = node_box[0] if node_box else None
        if file.sha256 is None and node is not None and node.digest:
            actual = _md5_b64(dest)
            if actual != node.digest:
                raise IntegrityError(
                    f"{where}: {path}: downloaded bytes do not match the md5 W&B published "
                    f"(expected {node.digest}, got {actual})",
                    hint="nothing was locked; retry, and report it to the artifact's owner "
                    "if it persists",
                )

    # -- HTTP --------------------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        if not self._key:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(f"api:{self._key}".encode()).decode()}

    def _graphql(self, query: str, variables: dict[str, Any], model: type[_T]) -> _T:
        url = f"{self.endpoint}/graphql"

        def call() -> _T:
            with transient_failures(self.context.timeout_s):
                resp = shared_client().post(
                    url,
                    json={"query": query, "variables": variables},
                    headers={"User-Agent": "modelmora", **self._auth_headers()},
                    timeout=self.context.timeout_s,
                )
            status = resp.status_code
            raise_if_transient(status, resp.headers)
            if status in (401, 403):
                raise self.answer_error(
                    status, endpoint=self.endpoint, credentials=self._credentials
                )
            try:
                answer = _Answer.model_validate_json(resp.content)
                data = model.model_validate(answer.data) if answer.data is not None else None
            except ValidationError:
                if status != 200:
                    raise SourceError(f"{self.origin}: {url} answered HTTP {status}") from None
                raise SourceError(
                    f"{self.origin}: {url} did not answer like the W&B GraphQL API",
                    hint="check registries.wandb.endpoint (the API host, e.g. "
                    f"{DEFAULT_ENDPOINT}, not the web UI)",
                ) from None
            if data is None or status != 200:
                detail = "; ".join(e.message for e in answer.errors or [])[:300]
                raise SourceError(
                    f"{self.origin}: W&B GraphQL error (HTTP {status}): {detail or 'no data'}"
                )
            return data

        return retrying(call, retries=self.context.max_retries, unreachable=self._unreachable)

    def _unreachable(self, attempts: int, reason: str) -> SourceError:
        return SourceError(
            f"{self.origin}: W&B unreachable at {self.endpoint} after {attempts} attempts: {reason}"
        )

    @property
    def _credentials(self) -> Credentials:
        env = f"${self.token_env}"
        return Credentials(
            sent=bool(self._key),
            named=env,
            kind="API key",
            needed="an API key",
            set_hint=f"set {env} to a W&B API key (wandb.ai/authorize)",
            check_hint=f"check that {env} holds a valid W&B API key (wandb.ai/authorize) that "
            f"can read {self.where.entity}/{self.where.project}",
        )

    def _refuse_offline(self, action: str) -> None:
        self.require_online(action, hint=OFFLINE_HINT + " once the files are in the cache")
