"""``hf://org/name[@revision]``: models on the Hugging Face Hub (or any hub-compatible server).

Resolution goes through ``huggingface_hub`` (``model_info`` with ``files_metadata``: one
request gives the commit sha and every file's size and LFS sha256). Downloads do *not* go
through ``hf_hub_download``: that function owns a cache layout, its own retries and its own
timeouts (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``), while ModelMora needs a
plain resumable byte pump into its content-addressed store. So :meth:`HfSource.fetch`
streams ``/{repo}/resolve/{sha}/{path}`` with HTTP Range (``sources.http``).

Both paths share one policy: ``context.timeout_s`` per request, ``1 + context.max_retries``
attempts with capped exponential backoff on connection errors, timeouts, 429 and 5xx, and a
status-code based mapping to ModelMora errors that never mentions the token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote

from modelmora.errors import SourceError, SourceNotFoundError, UserInputError
from modelmora.settings import offline_from_env
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
    Transient,
    raise_if_transient,
    retrying,
    short_reason,
)

if TYPE_CHECKING:
    from modelmora.sources.search import SearchHit

__all__ = ["DEFAULT_ENDPOINT", "HfSource", "hub_connection"]

DEFAULT_ENDPOINT = "https://huggingface.co"
_CHUNK = 1024 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def parse_location(location: str) -> tuple[str, str]:
    """``org/name@rev`` → ``("org/name", "rev")``; the revision defaults to ``main``."""
    repo_id, sep, revision = location.strip().partition("@")
    repo_id = repo_id.strip("/")
    if not _REPO_RE.match(repo_id) or ".." in repo_id:
        raise UserInputError(
            f"invalid hf source 'hf://{location}': expected hf://ORG/NAME[@REVISION]"
        )
    if sep and not revision:
        raise UserInputError(f"invalid hf source 'hf://{location}': empty revision after '@'")
    return repo_id, revision or "main"


def hub_connection(context: SourceContext, registry: str) -> tuple[str, str | None, str]:
    """``(endpoint, token, token env var name)`` of a hub registry block (``HF_*`` env)."""
    return context.connection(
        registry,
        endpoint_env="HF_ENDPOINT",
        default_endpoint=DEFAULT_ENDPOINT,
        token_env="HF_TOKEN",
    )


class HfSource(Source):
    """Hugging Face Hub repositories, pinned to a commit sha.

    ``default_include`` pulls configs, safetensors weights, tokenizer files and vocabularies;
    pickle weights (``*.bin``, ``*.pt``) and pre-exported ONNX variants are only pulled when
    the manifest includes them, because they are unsafe or redundant with our conversion.
    """

    scheme = "hf"
    default_include: ClassVar[tuple[str, ...]] = (
        "*.json",
        "*.safetensors",
        "*.txt",
        "*.model",
        "*.tiktoken",
        "*.jinja",  # chat templates (transformers ≥ 4.43 writes chat_template.jinja)
    )

    def configure(self) -> None:
        self.repo_id, self.revision = parse_location(self.location)
        registry = self.registry_name
        self.endpoint, self._token, self.token_env = hub_connection(self.context, registry)

    @classmethod
    def search(
        cls, query: str, *, task: str | None, limit: int, context: SourceContext, registry: str
    ) -> list[SearchHit]:
        """Models on the hub whose id matches ``query`` (``GET /api/models?search=``)."""
        from modelmora.sources.search import search_hub

        to_source = "hf://{}".format
        return search_hub(context, registry, registry, query, task, limit, None, to_source)

    @property
    def origin(self) -> str:
        return f"hf://{self.repo_id}"

    @property
    def offline(self) -> bool:
        return self.context.offline or offline_from_env()

    # -- resolve -----------------------------------------------------------------------
    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        revision = pinned_revision or self.revision
        if self.offline:
            raise self.offline_error(
                f"resolve @{revision}", "the file list of a revision is only known to the hub"
            )
        # Imported here: huggingface_hub costs ~0.7 s and only resolution needs it.
        import requests
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        api = HfApi(endpoint=self.endpoint, token=self._token or False, library_name="modelmora")

        def call() -> object:
            try:
                return api.model_info(
                    self.repo_id,
                    revision=revision,
                    files_metadata=True,
                    timeout=self.context.timeout_s,
                )
            except requests.Timeout:
                raise Transient(f"timed out after {self.context.timeout_s:g} s") from None
            except requests.ConnectionError as exc:
                raise Transient(short_reason(exc)) from None
            except HfHubHTTPError as exc:
                response = exc.response
                if response is None:
                    raise
                raise_if_transient(response.status_code, response.headers)
                raise self._status_error(
                    response.status_code, response.headers.get("X-Error-Code"), revision, None
                ) from None

        info = retrying(call, retries=self.context.max_retries, unreachable=self._unreachable)
        sha = getattr(info, "sha", None)
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise SourceError(f"{self.origin}@{revision}: hub returned no valid commit sha")
        if pinned_revision and _SHA_RE.match(pinned_revision) and sha != pinned_revision:
            raise SourceError(
                f"{self.origin}: asked for pinned commit {pinned_revision}, hub answered {sha}"
            )
        return Resolution(
            revision=sha,
            files=self._files(getattr(info, "siblings", None) or [], revision),
            metadata=self._metadata(info),
        )

    def _files(self, siblings: list[object], revision: str) -> tuple[RemoteFile, ...]:
        by_name = {str(getattr(s, "rfilename", "")): s for s in siblings}
        chosen = self.select_some(by_name, where=f"{self.origin}@{revision}")
        files = []
        for name in chosen:
            sibling = by_name[name]
            path = safe_relpath(name, origin=f"{self.origin}@{revision}")
            size = getattr(sibling, "size", None)
            if not isinstance(size, int):
                raise SourceError(f"{self.origin}@{revision}: hub gave no size for {name!r}")
            lfs = getattr(sibling, "lfs", None)
            sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
            files.append(RemoteFile(path=path, size=size, sha256=sha256))
        return tuple(files)

    @staticmethod
    def _metadata(info: object) -> dict[str, str]:
        found = {}
        for key in ("pipeline_tag", "library_name"):
            value = getattr(info, key, None)
            if isinstance(value, str) and value:
                found[key] = value
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
        """Stream one file; on a retry, resume from what is already in ``dest``.

        ``progress`` receives the bytes written by this call. If the hub ignores the Range
        request (answers 200), ``dest`` is truncated and rewritten from byte 0.
        """
        if self.offline:
            raise self.offline_error(f"download {file.path} @{revision}", hint=PULL_HINT)
        path = safe_relpath(file.path, origin=f"{self.origin}@{revision}")
        url = (
            f"{self.endpoint}/{self.repo_id}/resolve/{quote(revision, safe='')}/"
            f"{quote(path, safe='/')}"
        )
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self.download(
            lambda: (url, headers),
            dest,
            file,
            offset=offset,
            progress=progress,
            refused=lambda exc: self._status_error(
                exc.status, exc.headers.get("X-Error-Code"), revision, path
            ),
            unreachable=self._unreachable,
        )

    # -- failures ----------------------------------------------------------------------
    def _unreachable(self, attempts: int, reason: str) -> SourceError:
        return SourceError(
            f"hf hub unreachable at {self.endpoint} after {attempts} attempts: {reason}"
        )

    def _status_error(
        self, status: int, code: str | None, revision: str, path: str | None
    ) -> SourceError:
        """A final (not 429/5xx) answer, naming the repo, revision or file (the hub says
        which one was missing in ``X-Error-Code``)."""
        where = f"{self.origin}@{revision}"
        not_found: SourceError
        if code == "RevisionNotFound":
            not_found = SourceNotFoundError(
                f"{self.origin}: revision {revision!r} not found at {self.endpoint}",
                hint="use a branch, a tag or a full 40-hex commit sha",
            )
        elif path is not None and code != "RepoNotFound":
            not_found = SourceNotFoundError(f"{where}: file {path!r} not found at {self.endpoint}")
        else:
            not_found = SourceNotFoundError(
                f"{self.origin}: repository not found at {self.endpoint}",
                hint=f"check the name; private repos need {self.token_env}",
            )
        return self.answer_error(
            status,
            endpoint=self.endpoint,
            credentials=self._credentials,
            not_found=not_found,
            where=where,
        )

    @property
    def _credentials(self) -> Credentials:
        env = f"${self.token_env}"
        return Credentials(
            sent=bool(self._token),
            named=env,
            set_hint=f"set {env} to a token with read access to {self.repo_id}",
            check_hint=f"check that {env} holds a valid token with read access to "
            f"{self.repo_id} (and that gated access was granted)",
            anonymous_note="the repository is private, gated, or does not exist",
        )
