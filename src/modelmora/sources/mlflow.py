"""``mlflow://models:/NAME/VERSION`` and ``mlflow://models:/NAME@ALIAS``: the MLflow Model Registry.

Everything goes through the tracking server's REST API with the shared HTTP client; the
``mlflow`` package is not imported (it is a heavy dependency, and its client reads
artifact stores directly with credentials ModelMora should not need). The server must proxy
artifacts (``mlflow server --serve-artifacts``, the default since MLflow 2): files are listed
and downloaded through ``/api/2.0/mlflow-artifacts/artifacts``, which supports HTTP Range, so
interrupted downloads resume.

A version's artifacts are found through ``model-versions/get-download-uri``; its answer is an
``mlflow-artifacts:/…`` location, or (depending on the server and how the version was
created) a ``runs:/RUN/PATH`` or MLflow 3 logged-model ``models:/m-ID`` reference, which is
followed through ``runs/get`` or ``logged-models/get`` to the proxied location.

MLflow publishes file sizes but no digests, so every file is ``sha256=None`` and ``lock``
downloads and hashes it once. The revision is ``VERSION:RUN_ID``: version numbers alone can
be reused after a version is deleted, the run id makes a re-created version visible.
"""

from __future__ import annotations

import base64
import os
import posixpath
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from modelmora.errors import SourceError, SourceNotFoundError, UserInputError
from modelmora.sources.base import (
    PULL_HINT,
    Credentials,
    ProgressCallback,
    RemoteFile,
    Resolution,
    Source,
    SourceContext,
    safe_relpath,
)
from modelmora.sources.http import (
    HttpStatusError,
    raise_if_transient,
    retrying,
    shared_client,
    transient_failures,
)

if TYPE_CHECKING:
    from modelmora.sources.search import SearchHit

__all__ = ["MlflowSource", "ModelRef", "parse_location"]

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
SEARCH_ALIAS = "champion"
"""Search hits point at this alias when a model has it (MLflow's documented convention)."""
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
BASIC_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
MAX_FILES = 10_000
MAX_SEARCH = 1000
_NAME_RE = re.compile(r"^[^/:@\s][^/:]*$")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_REVISION_RE = re.compile(r"^(\d+)(?::([0-9A-Za-z_-]+))?$")
_T = TypeVar("_T")


# -- wire schemas ------------------------------------------------------------------------
class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _ModelVersion(_Wire):
    name: str
    version: str
    source: str = ""
    run_id: str = ""
    status: str = "READY"


class _VersionAnswer(_Wire):
    model_version: _ModelVersion


class _Alias(_Wire):
    alias: str
    version: str


class _Tag(_Wire):
    key: str
    value: str = ""


class _RegisteredModel(_Wire):
    name: str
    last_updated_timestamp: int | None = None
    latest_versions: list[_ModelVersion] = []
    aliases: list[_Alias] = []
    tags: list[_Tag] = []

    def latest(self) -> str | None:
        versions = [int(v.version) for v in self.latest_versions if v.version.isdigit()]
        return str(max(versions)) if versions else None


class _ModelAnswer(_Wire):
    registered_model: _RegisteredModel


class _SearchAnswer(_Wire):
    registered_models: list[_RegisteredModel] = []


class _DownloadUri(_Wire):
    artifact_uri: str


class _Info(_Wire):
    artifact_uri: str


class _Run(_Wire):
    info: _Info


class _RunAnswer(_Wire):
    run: _Run


class _LoggedModelAnswer(_Wire):
    model: _Run


class _FileInfo(_Wire):
    path: str
    is_dir: bool = False
    file_size: int | None = None


class _Listing(_Wire):
    files: list[_FileInfo] = []


# -- the spec ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/…`` location; exactly one of ``version``/``alias`` is set."""

    name: str
    version: str | None = None
    """Digits, or ``latest`` (the highest version at lock time)."""
    alias: str | None = None

    def __str__(self) -> str:
        suffix = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"mlflow://models:/{self.name}{suffix}"


def parse_location(location: str) -> ModelRef:
    """``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS``."""
    text = location.strip()
    syntax = "expected mlflow://models:/NAME/VERSION or mlflow://models:/NAME@ALIAS"
    if not text.startswith("models:/"):
        raise UserInputError(f"invalid mlflow source 'mlflow://{location}': {syntax}")
    rest = text.removeprefix("models:/").strip("/")
    if "/" in rest:
        name, _, suffix = rest.partition("/")
        if suffix.lower() == "latest":
            ref = ModelRef(name, version="latest")
        elif suffix.isdigit() and int(suffix) > 0:
            ref = ModelRef(name, version=str(int(suffix)))
        elif "/" in suffix or not suffix:
            raise UserInputError(f"invalid mlflow source 'mlflow://{location}': {syntax}")
        else:
            raise UserInputError(
                f"invalid mlflow source 'mlflow://{location}': {suffix!r} is not a version "
                "number (stages are deprecated in MLflow and not supported)",
                hint=f"give the version an alias and write mlflow://models:/{name}@ALIAS",
            )
    elif "@" in rest:
        name, _, alias = rest.rpartition("@")
        if not _ALIAS_RE.match(alias):
            raise UserInputError(
                f"invalid mlflow source 'mlflow://{location}': bad alias {alias!r}", hint=syntax
            )
        ref = ModelRef(name, alias=alias)
    else:
        raise UserInputError(
            f"invalid mlflow source 'mlflow://{location}': no version or alias",
            hint=f"write mlflow://models:/{rest or 'NAME'}/VERSION, "
            f"mlflow://models:/{rest or 'NAME'}@ALIAS, or …/latest to pin the newest version "
            "at lock time",
        )
    if not _NAME_RE.match(ref.name):
        raise UserInputError(f"invalid mlflow source 'mlflow://{location}': bad model name")
    return ref


# -- connection and REST calls -----------------------------------------------------------
@dataclass(frozen=True)
class _Connection:
    endpoint: str
    headers: Mapping[str, str] = field(repr=False)
    credential_env: str
    """Env var(s) named in auth errors, ``$``-prefixed (the credentials themselves never are)."""
    has_credentials: bool


def _connection(context: SourceContext, registry: str, origin: str) -> _Connection:
    endpoint, token, token_env = context.connection(
        registry, endpoint_env="MLFLOW_TRACKING_URI", default_endpoint="", token_env=TOKEN_ENV
    )
    endpoint = endpoint.strip()
    if not endpoint:
        raise UserInputError(
            f"{origin}: no MLflow tracking server configured",
            hint=f"set $MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000) or add "
            f"`registries: {{{registry}: {{endpoint: …}}}}` to modelmora.yml",
        )
    if urlsplit(endpoint).password is not None:
        raise UserInputError(
            f"{origin}: the MLflow endpoint of registry {registry!r} embeds a password",
            hint="keep the URL plain and set $MLFLOW_TRACKING_TOKEN, or "
            "$MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD",
        )
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise UserInputError(
            f"{origin}: MLflow endpoint {endpoint!r} is not an http(s) URL",
            hint="mlflow:// sources talk to a tracking server (`mlflow server`), not to a "
            "local mlruns directory or database",
        )
    if token:
        return _Connection(endpoint, {"Authorization": f"Bearer {token}"}, f"${token_env}", True)
    user, password = (os.environ.get(name, "") for name in BASIC_ENV)
    if user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        named = " and ".join(f"${name}" for name in BASIC_ENV)
        return _Connection(endpoint, {"Authorization": f"Basic {basic}"}, named, True)
    return _Connection(endpoint, {}, f"${token_env}", False)


class _ApiError(Exception):
    """A final non-success answer, mapped to a user message by the caller."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {error_code}")
        self.status, self.error_code, self.message = status, error_code, message

    def as_error(self, origin: str, endpoint: str) -> SourceError:
        """An answer no caller expected, as MLflow worded it."""
        return SourceError(
            f"{origin}: {endpoint} answered HTTP {self.status} {self.error_code}: {self.message}"
        )


_W = TypeVar("_W", bound=_Wire)


@dataclass
class _Api:
    conn: _Connection
    context: SourceContext
    origin: str
    subject: str
    """What auth errors say access is needed to (a model name, or "the registry")."""

    def with_retries(self, call: Callable[[], _T]) -> _T:
        return retrying(call, retries=self.context.max_retries, unreachable=self.unreachable)

    def unreachable(self, attempts: int, reason: str) -> SourceError:
        return SourceError(
            f"{self.origin}: MLflow tracking server unreachable at {self.conn.endpoint} "
            f"after {attempts} attempts: {reason}",
            hint="check that `mlflow server` runs there (and the endpoint / $MLFLOW_TRACKING_URI)",
        )

    def get(self, path: str, params: Mapping[str, str], schema: type[_W]) -> _W:
        url = f"{self.conn.endpoint}{path}"

        def call() -> httpx.Response:
            with transient_failures(self.context.timeout_s):
                resp = shared_client().get(
                    url, params=params, headers=self.conn.headers, timeout=self.context.timeout_s
                )
            if resp.status_code == 503 and "--serve-artifacts" in resp.text:
                raise SourceError(
                    f"{self.origin}: {self.conn.endpoint} does not serve artifacts",
                    hint="restart it with `mlflow server --serve-artifacts`",
                )
            raise_if_transient(resp.status_code, resp.headers)
            return resp

        resp = self.with_retries(call)
        if resp.status_code in (401, 403):
            raise self.auth_error(resp.status_code)
        try:
            payload: Any = resp.json()
        except ValueError:
            payload = None
        if resp.status_code != 200:
            body = payload if isinstance(payload, dict) else {}
            if not body.get("error_code"):
                raise SourceError(
                    f"{self.origin}: {self.conn.endpoint} answered HTTP {resp.status_code} to "
                    f"{path}, which is not an MLflow REST answer",
                    hint="check the endpoint (with the server's --static-prefix, if any)",
                )
            raise _ApiError(
                resp.status_code, str(body["error_code"]), str(body.get("message") or "")[:300]
            )
        try:
            return schema.model_validate(payload)
        except ValidationError as exc:
            raise SourceError(
                f"{self.origin}: {self.conn.endpoint} sent an unreadable answer to {path}: "
                f"{exc.errors()[0]['msg']}",
                hint="is this an MLflow tracking server?",
            ) from None

    def auth_error(self, status: int) -> SourceError:
        env = self.conn.credential_env
        basic = " and ".join(f"${name}" for name in BASIC_ENV)
        credentials = Credentials(
            sent=self.conn.has_credentials,
            named=env,
            kind="credentials",
            set_hint=f"set {env} (or {basic}) to credentials with read access to {self.subject}",
            check_hint=f"check that {env} grants read access to {self.subject}",
        )
        return credentials.error(self.origin, self.conn.endpoint, status)


# -- the source --------------------------------------------------------------------------
class MlflowSource(Source):
    """A registered model version, pinned to ``VERSION:RUN_ID`` and each file's sha256.

    ``default_include`` takes ONNX graphs and their external data, safetensors, JSON/text
    configs, tokenizer files and the ``MLmodel`` descriptor; pickled flavours
    (``*.pkl``, ``*.pth``) and environment files are only pulled when the manifest includes
    them.
    """

    scheme = "mlflow"
    default_include: ClassVar[tuple[str, ...]] = (
        "MLmodel",
        "*.onnx",
        "*.onnx_data",
        "*.data",
        "*.safetensors",
        "*.json",
        "*.txt",
        "*.model",
        "*.tiktoken",
        "*.jinja",  # chat templates (transformers ≥ 4.43 writes chat_template.jinja)
    )

    def configure(self) -> None:
        self.ref = parse_location(self.location)
        self._api: _Api | None = None
        self._roots: dict[str, str] = {}
        self._roots_lock = threading.Lock()

    @property
    def origin(self) -> str:
        return str(self.ref)

    @property
    def api(self) -> _Api:
        # Built lazily: a lock that reuses every pin must not need the server configured.
        if self._api is None:
            conn = _connection(self.context, self.registry_name, self.origin)
            self._api = _Api(conn, self.context, self.origin, f"model {self.ref.name!r}")
        return self._api

    # -- resolve -----------------------------------------------------------------------
    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        self.require_online("resolve")
        if pinned_revision is not None:
            mv = self._pinned_version(pinned_revision)
        elif self.ref.alias is not None:
            mv = self._by_alias(self.ref.alias)
        elif self.ref.version is None or self.ref.version == "latest":
            mv = self._version(self._latest())
        else:
            mv = self._version(self.ref.version)
        where = f"{self.origin} (version {mv.version})"
        if mv.status != "READY":
            raise SourceError(f"{where}: the model version is {mv.status}, not READY")
        root = self._artifact_root(mv)
        with self._roots_lock:
            self._roots[_revision(mv)] = root
        listed = self._list(root, where)
        chosen = self.select_some(listed, where=where)
        metadata = {"model": mv.name, "version": mv.version}
        if mv.run_id:
            metadata["run_id"] = mv.run_id
        if self.ref.alias:
            metadata["alias"] = self.ref.alias
        if urlsplit(mv.source).scheme in ("runs", "models", "mlflow-artifacts"):
            metadata["source"] = mv.source
        return Resolution(
            revision=_revision(mv),
            files=tuple(RemoteFile(path=p, size=listed[p], sha256=None) for p in chosen),
            metadata=metadata,
        )

    def _version(self, version: str) -> _ModelVersion:
        return self._model_version("model-versions/get", "version", version, f"version {version}")

    def _by_alias(self, alias: str) -> _ModelVersion:
        return self._model_version("registered-models/alias", "alias", alias, f"alias {alias!r}")

    def _model_version(self, endpoint: str, key: str, value: str, what: str) -> _ModelVersion:
        params = {"name": self.ref.name, key: value}
        try:
            return self.api.get(f"{API}/{endpoint}", params, _VersionAnswer).model_version
        except _ApiError as exc:
            raise self._not_found(exc, what) from None

    def _latest(self) -> str:
        model = self._registered_model()
        if model is None:
            raise self._model_missing()
        latest = model.latest()
        if latest is None:
            raise SourceNotFoundError(f"{self.origin}: model {self.ref.name!r} has no versions")
        return latest

    def _pinned_version(self, revision: str) -> _ModelVersion:
        m = _REVISION_RE.match(revision)
        if not m:
            raise SourceError(
                f"{self.origin}: locked revision {revision!r} is not VERSION:RUN_ID",
                hint="run `modelmora lock --upgrade` to re-resolve this model",
            )
        version, run_id = m.groups()
        mv = self._version(version)
        if run_id and mv.run_id != run_id:
            raise SourceError(
                f"{self.origin}: version {version} now belongs to run {mv.run_id or '(none)'}, "
                f"the lock recorded run {run_id}: the version was deleted and re-created",
                hint="run `modelmora lock --upgrade` if the new version is intended",
            )
        return mv

    def _registered_model(self) -> _RegisteredModel | None:
        params = {"name": self.ref.name}
        try:
            answer = self.api.get(f"{API}/registered-models/get", params, _ModelAnswer)
        except _ApiError as exc:
            if exc.status == 404 or exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise exc.as_error(self.origin, self.api.conn.endpoint) from None
        return answer.registered_model

    def _model_missing(self) -> SourceNotFoundError:
        return SourceNotFoundError(
            f"{self.origin}: registered model {self.ref.name!r} not found at "
            f"{self.api.conn.endpoint}",
            hint=f"check the name (`modelmora search {self.ref.name} --registry "
            f"{self.registry_name}`); a private server needs {self.api.conn.credential_env}",
        )

    def _not_found(self, exc: _ApiError, what: str) -> SourceError:
        """Say whether the model or only the version/alias is missing, and what exists."""
        if exc.status not in (400, 404):
            return exc.as_error(self.origin, self.api.conn.endpoint)
        model = self._registered_model()
        if model is None:
            return self._model_missing()
        aliases = ", ".join(f"@{a.alias} → {a.version}" for a in model.aliases) or "none"
        return SourceNotFoundError(
            f"{self.origin}: {what} of model {self.ref.name!r} not found at "
            f"{self.api.conn.endpoint}",
            hint=f"latest version: {model.latest() or 'none'}; aliases: {aliases}",
        )

    # -- where the files are -----------------------------------------------------------
    def _artifact_root(self, mv: _ModelVersion) -> str:
        params = {"name": mv.name, "version": mv.version}
        try:
            uri = self.api.get(
                f"{API}/model-versions/get-download-uri", params, _DownloadUri
            ).artifact_uri
        except _ApiError as exc:
            raise self._not_found(exc, f"version {mv.version}") from None
        return self._proxied_path(uri, mv, follow=True)

    def _proxied_path(self, uri: str, mv: _ModelVersion, *, follow: bool) -> str:
        """The path under ``mlflow-artifacts`` that holds ``uri``'s files."""
        parts = urlsplit(uri)
        if parts.scheme == "mlflow-artifacts":
            return parts.path.strip("/")
        if parts.scheme in ("http", "https") and f"{ARTIFACTS}/" in parts.path:
            return parts.path.split(f"{ARTIFACTS}/", 1)[1].strip("/")
        if follow and parts.scheme == "runs":
            run_id, _, sub = f"{parts.netloc}{parts.path}".lstrip("/").partition("/")
            try:
                run = self.api.get(f"{API}/runs/get", {"run_id": run_id}, _RunAnswer).run
            except _ApiError as exc:
                raise SourceNotFoundError(
                    f"{self.origin}: run {run_id} of version {mv.version} is gone: "
                    f"{exc.message or exc.error_code}"
                ) from None
            base = self._proxied_path(run.info.artifact_uri, mv, follow=False)
            return posixpath.join(base, sub.strip("/")) if sub.strip("/") else base
        if follow and parts.scheme == "models" and parts.path.lstrip("/").startswith("m-"):
            model_id = parts.path.strip("/")
            try:
                logged = self.api.get(
                    f"{API}/logged-models/{quote(model_id, safe='')}", {}, _LoggedModelAnswer
                ).model
            except _ApiError as exc:
                raise SourceNotFoundError(
                    f"{self.origin}: logged model {model_id} of version {mv.version} is gone: "
                    f"{exc.message or exc.error_code}"
                ) from None
            return self._proxied_path(logged.info.artifact_uri, mv, follow=False)
        raise SourceError(
            f"{self.origin}: version {mv.version} stores its artifacts at {uri!r}, which "
            f"{self.api.conn.endpoint} does not serve",
            hint="run `mlflow server --serve-artifacts` so that artifacts live under "
            "mlflow-artifacts:/ (for files in a bucket, an s3:// source reads them directly)",
        )

    def _list(self, root: str, where: str) -> dict[str, int]:
        found: dict[str, int] = {}
        pending = [""]
        while pending:
            sub = pending.pop()
            path = posixpath.join(root, sub) if sub else root
            try:
                listing = self.api.get(ARTIFACTS, {"path": path}, _Listing)
            except _ApiError as exc:
                raise SourceError(
                    f"{where}: listing mlflow-artifacts:/{path} failed: HTTP {exc.status} "
                    f"{exc.error_code}: {exc.message}"
                ) from None
            for info in listing.files:
                rel = safe_relpath(
                    posixpath.join(sub, posixpath.basename(info.path)) if sub else info.path,
                    origin=where,
                )
                if info.is_dir:
                    pending.append(rel)
                elif info.file_size is None:
                    raise SourceError(f"{where}: the server listed {rel!r} without a size")
                else:
                    found[rel] = info.file_size
                if len(found) + len(pending) > MAX_FILES:
                    raise SourceError(f"{where}: more than {MAX_FILES} artifact files")
        if not found:
            raise SourceError(
                f"{where}: the model version has no artifact files under mlflow-artifacts:/{root}"
            )
        return found

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
        """Stream one file; retries resume from what is already in ``dest``."""
        self.require_online(f"download {file.path}", hint=PULL_HINT)  # before any lookup
        path = safe_relpath(file.path, origin=f"{self.origin} ({revision})")
        with self._roots_lock:
            root = self._roots.get(revision)
        if root is None:
            root = self._artifact_root(self._pinned_version(revision))
            with self._roots_lock:
                self._roots[revision] = root
        api = self.api
        url = f"{api.conn.endpoint}{ARTIFACTS}/{quote(posixpath.join(root, path), safe='/')}"

        def refused(exc: HttpStatusError) -> Exception:
            if exc.status in (401, 403):
                return api.auth_error(exc.status)
            return self.answer_error(
                exc.status,
                endpoint=api.conn.endpoint,
                not_found=SourceNotFoundError(
                    f"{self.origin} ({revision}): file {path!r} no longer exists on "
                    f"{api.conn.endpoint}",
                    hint="run `modelmora lock --upgrade` if the model version changed",
                ),
                where=f"{self.origin} ({revision}): downloading {path!r}",
            )

        self.download(
            lambda: (url, api.conn.headers),
            dest,
            file,
            offset=offset,
            progress=progress,
            refused=refused,
            unreachable=api.unreachable,
        )

    # -- search ------------------------------------------------------------------------
    @classmethod
    def search(
        cls, query: str, *, task: str | None, limit: int, context: SourceContext, registry: str
    ) -> list[SearchHit]:
        """Registered models whose name contains ``query`` (case-insensitive).

        ``task`` filters on the registered model's ``task`` tag: MLflow has no task field.
        """
        from modelmora.sources.search import SearchHit

        if context.offline:
            raise SourceError(f"{registry}: cannot search in offline mode")
        for value in (query, task or ""):
            if "'" in value:
                raise UserInputError(f"{registry}: MLflow search text cannot contain a quote")
        api = _Api(_connection(context, registry, registry), context, registry, "the registry")
        filters = [f"name ILIKE '%{query}%'"] if query else []
        if task:
            filters.append(f"tags.task = '{task}'")
        params = {"max_results": str(max(1, min(limit, MAX_SEARCH)))}
        if filters:
            params["filter"] = " AND ".join(filters)
        try:
            answer = api.get(f"{API}/registered-models/search", params, _SearchAnswer)
        except _ApiError as exc:
            raise exc.as_error(registry, api.conn.endpoint) from None
        hits = []
        for model in answer.registered_models:
            tags = {t.key: t.value for t in model.tags}
            if any(a.alias == SEARCH_ALIAS for a in model.aliases):
                source = f"mlflow://models:/{model.name}@{SEARCH_ALIAS}"
            else:
                source = f"mlflow://models:/{model.name}/{model.latest() or 'latest'}"
            updated = None
            if model.last_updated_timestamp is not None:
                stamp = datetime.fromtimestamp(model.last_updated_timestamp / 1000, tz=timezone.utc)
                updated = stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
            hits.append(
                SearchHit(
                    registry=registry,
                    id=model.name,
                    source=source,
                    task=tags.get("task") or None,
                    updated=updated,
                )
            )
        return hits[:limit]


def _revision(mv: _ModelVersion) -> str:
    return f"{mv.version}:{mv.run_id}" if mv.run_id else mv.version
