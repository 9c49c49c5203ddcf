"""The interface every model registry implements.

A source does two things: *resolve* a spec to an immutable revision and a file list
(each file with size and sha256), and *fetch* one file of a resolved revision. Resolution
is what ``modelmora lock`` records; fetching is what ``modelmora pull`` verifies against
that record. Keeping the surface this small is what lets third parties add registries
through the ``modelmora.sources`` entry-point group.
"""

from __future__ import annotations

import abc
import fnmatch
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from modelmora.errors import AuthenticationError, SourceError, SourceNotFoundError
from modelmora.layout import path_problem

if TYPE_CHECKING:
    from modelmora.sources.http import HttpStatusError

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes just written (an increment, not a total)."""


class RemoteFile(BaseModel):
    """One file of a resolved revision, as the lock records it."""

    model_config = ConfigDict(frozen=True)

    path: str
    """POSIX path relative to the model root; never absolute, never containing ``..``."""
    size: int
    sha256: str | None = None
    """Hex digest. ``None`` only when the registry does not publish one; the lock step then
    fetches and hashes the file so that the lock always carries a digest."""
    etag: str | None = None
    """The version tag the registry gave these bytes at lock time (bare, without quotes); a
    source may send it as ``If-Match`` so that replaced bytes are refused, not downloaded.
    ``None`` for registries without one and in locks written before the field existed."""
    version_id: str | None = None
    """The registry's id of this object version (S3 VersionId on a versioned bucket); a
    source asks for exactly this version, so an overwrite does not lose the locked bytes."""


class Resolution(BaseModel):
    """What a source resolved a spec to."""

    model_config = ConfigDict(frozen=True)

    revision: str
    """Immutable identifier: a 40-hex commit (hf), a distribution version (pkg), a content
    digest (path, https)."""
    files: tuple[RemoteFile, ...]
    metadata: dict[str, str] = {}
    """Registry facts worth keeping (e.g. ``pipeline_tag``), recorded in the lock."""


class RegistryConfig(BaseModel):
    """Connection settings of one registry block in the manifest (already interpolated)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None
    token: SecretStr | None = None
    token_env: str | None = None
    """The env var the token came from, named in auth errors (never the token itself)."""


@dataclass(frozen=True)
class SourceContext:
    """Everything a source may need besides its own spec."""

    project_dir: Path
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict)
    offline: bool = False
    timeout_s: float = 30.0
    max_retries: int = 3

    def registry(self, name: str) -> RegistryConfig:
        return self.registries.get(name) or RegistryConfig()

    def connection(
        self, registry: str, *, endpoint_env: str, default_endpoint: str, token_env: str
    ) -> tuple[str, str | None, str]:
        """``(endpoint, token, env var named in auth errors)`` of a registry block.

        The manifest's block wins, then the registry's conventional env vars. Login files
        of the registry's own CLI (``hf auth login``, ``wandb login``, ``~/.netrc``) are
        deliberately not read: a lock must not depend on whoever is logged in here.
        """
        block = self.registry(registry)
        endpoint = block.endpoint or os.environ.get(endpoint_env) or default_endpoint
        secret = block.token.get_secret_value() if block.token is not None else None
        token = secret or os.environ.get(token_env) or None
        return endpoint.rstrip("/"), token, block.token_env or token_env


@dataclass(frozen=True)
class Credentials:
    """What a registry's authentication errors say about its credentials (never the
    credentials themselves): where they come from and what to do about a refusal."""

    sent: bool
    """Whether the refused request carried credentials."""
    named: str
    """Where they come from, as the user set them (``$HF_TOKEN``, ``$KAGGLE_KEY``…)."""
    set_hint: str
    """What to do when none were sent."""
    check_hint: str
    """What to do when the ones sent were refused."""
    kind: str = "token"
    """What a refusal calls them: ``token``, ``credentials``, ``API key``."""
    needed: str = "authentication"
    """What an anonymous request lacks: ``authentication``, ``an API key``."""
    anonymous_note: str = ""
    """Why an anonymous refusal may happen anyway (a private repository looks absent)."""

    def error(self, origin: str, endpoint: str, status: int) -> AuthenticationError:
        if self.sent:
            return AuthenticationError(
                f"{origin}: {endpoint} rejected the {self.kind} from {self.named} (HTTP {status})",
                hint=self.check_hint,
            )
        note = f"; {self.anonymous_note}" if self.anonymous_note else ""
        return AuthenticationError(
            f"{origin}: {endpoint} requires {self.needed} (HTTP {status}){note}",
            hint=self.set_hint,
        )


def answer_error(
    status: int,
    *,
    origin: str,
    endpoint: str,
    credentials: Credentials | None = None,
    not_found: SourceError | None = None,
    where: str | None = None,
) -> SourceError:
    """The one table from a registry's final HTTP answer to the error a user reads (in the
    spirit of huggingface_hub's ``hf_raise_for_status``): 401/403 → which credentials to set
    or check, 404 → what was not found (``not_found``, else ``where``), anything else → the
    status. 429 and 5xx never get here: they are retried
    (:func:`~modelmora.sources.http.raise_if_transient`)."""
    where = where or origin
    if status in (401, 403) and credentials is not None:
        return credentials.error(origin, endpoint, status)
    if status == 404:
        return not_found or SourceNotFoundError(f"{where}: not found at {endpoint}")
    return SourceError(f"{where}: {endpoint} answered HTTP {status}")


OFFLINE_HINT = "run `modelmora lock` online once; installs from an existing lock work offline"
PULL_HINT = "run `modelmora pull` with network access (unset HF_HUB_OFFLINE, drop --offline)"


class Source(abc.ABC):
    """Base class of a registry adapter. One instance per model spec.

    Subclasses set ``scheme`` and implement :meth:`resolve` and :meth:`fetch`.
    ``location`` is the part of the source string after ``scheme://`` (for ``path`` sources
    the path itself).
    """

    scheme: ClassVar[str]
    default_include: ClassVar[tuple[str, ...]] = ("*",)
    default_exclude: ClassVar[tuple[str, ...]] = ()
    """Left out when the spec does not say which files to take (no ``files.include``)."""
    local: ClassVar[bool] = False
    """Local sources (directories, installed packages) are re-resolved on every ``lock``:
    it is cheap and their bytes can change under the same name. Remote sources keep the
    locked revision until ``--upgrade``."""

    def __init__(
        self,
        location: str,
        context: SourceContext,
        *,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        options: Mapping[str, object] | None = None,
    ) -> None:
        self.location = location
        self.context = context
        self.include = tuple(include) if include is not None else self.default_include
        self.exclude = tuple(exclude) + (self.default_exclude if include is None else ())
        self.options = dict(options or {})
        self.configure()

    @property
    def origin(self) -> str:
        """How errors name this source (``scheme://location``; sources refine it)."""
        return f"{self.scheme}://{self.location}"

    def answer_error(
        self,
        status: int,
        *,
        endpoint: str,
        credentials: Credentials | None = None,
        not_found: SourceError | None = None,
        where: str | None = None,
    ) -> SourceError:
        """:func:`answer_error` for this source."""
        return answer_error(
            status,
            origin=self.origin,
            endpoint=endpoint,
            credentials=credentials,
            not_found=not_found,
            where=where,
        )

    def download(
        self,
        target: Callable[[], tuple[str, Mapping[str, str]]],
        dest: Path,
        file: RemoteFile,
        *,
        offset: int,
        progress: ProgressCallback | None,
        refused: Callable[[HttpStatusError], Exception],
        unreachable: Callable[[int, str], Exception],
    ) -> None:
        """Fetch one file over HTTP under the shared policy
        (:func:`~modelmora.sources.http.download_resuming`: retries, ``Range`` resumes, never
        past ``file.size``) with this source's timeout and retry count; refused offline."""
        from modelmora.sources.http import download_resuming

        self.require_online(f"download {file.path}", hint=PULL_HINT)
        download_resuming(
            target,
            dest,
            size=file.size,
            offset=offset,
            timeout_s=self.context.timeout_s,
            retries=self.context.max_retries,
            refused=refused,
            unreachable=unreachable,
            progress=progress,
        )

    def require_online(self, action: str, why: str = "", *, hint: str | None = None) -> None:
        """Refuse ``action`` while offline, with :meth:`offline_error`."""
        if self.context.offline:
            raise self.offline_error(action, why, hint=hint)

    def offline_error(self, action: str, why: str = "", *, hint: str | None = None) -> SourceError:
        """The one refusal of work that needs the registry while offline."""
        return SourceError(
            f"{self.origin}: cannot {action} in offline mode" + (f": {why}" if why else ""),
            hint=hint or OFFLINE_HINT,
        )

    @property
    def registry_name(self) -> str:
        """The manifest's ``registries:`` block this source connects through: the spec's
        ``registry``, else the one named like the scheme."""
        return str(self.options.get("registry") or self.default_registry())

    def default_registry(self) -> str:
        """The block used when the spec names none (a source may choose by context)."""
        return self.scheme

    def configure(self) -> None:  # noqa: B027 (optional hook, deliberately empty)
        """Parse ``location`` and options; subclasses override this, not ``__init__``."""

    @abc.abstractmethod
    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        """Resolve to an immutable revision and the selected files.

        With ``pinned_revision`` (from an existing lock) the source must resolve exactly that
        revision instead of following a branch or tag; this is how ``lock`` keeps pins.
        """

    @abc.abstractmethod
    def fetch(
        self,
        revision: str,
        file: RemoteFile,
        dest: Path,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Write the bytes of ``file`` at ``revision`` to ``dest``.

        With ``offset > 0`` the first ``offset`` bytes are already in ``dest``: append the
        rest (HTTP Range for remote sources). Verification is the caller's job.
        """

    def select_some(
        self, paths: Iterable[str], *, where: str, listed: str = "available"
    ) -> list[str]:
        """:meth:`select`, refusing an empty choice with the one message every source gives:
        the patterns and (some of) what there was to choose from."""
        paths = list(paths)
        chosen = self.select(paths)
        if not chosen:
            some = ", ".join(sorted(paths)[:8]) or "none"
            raise SourceError(
                f"{where}: include patterns matched no files (include={list(self.include)}, "
                f"exclude={list(self.exclude)}); {listed}: {some}{', …' if len(paths) > 8 else ''}"
            )
        return chosen

    def select(self, paths: Iterable[str]) -> list[str]:
        """Apply include/exclude glob patterns (fnmatch; ``*`` also crosses ``/``)."""
        chosen = []
        for p in paths:
            if not any(fnmatch.fnmatchcase(p, pat) for pat in self.include):
                continue
            if any(fnmatch.fnmatchcase(p, pat) for pat in self.exclude):
                continue
            chosen.append(p)
        return sorted(chosen)


def safe_relpath(path: str, *, origin: str) -> str:
    """Return ``path`` when it is a clean relative path (:func:`modelmora.layout.path_problem`).

    A registry that lists ``../../etc/passwd`` must not make us write outside the store.
    """
    problem = path_problem(path)
    if problem is not None:
        raise SourceError(f"{origin}: refusing file {path!r}: {problem}")
    return path
