"""``tfhub://HANDLE``: TensorFlow Hub / Kaggle Models, pinned to a version number.

tfhub.dev now redirects to Kaggle Models, and both publish a model version as one
``tar.gz`` archive (a SavedModel for TensorFlow frameworks). Two handle forms are accepted:

* Kaggle: ``OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION]``. Without a version, ``lock`` asks
  ``GET {endpoint}/api/v1/models/OWNER/MODEL/FRAMEWORK/VARIATION/get`` for the instance's
  ``versionNumber`` (the latest version, as ``kagglehub`` does) and pins it; the archive is
  ``GET …/VARIATION/VERSION/download``.
* tfhub.dev: ``PUBLISHER/NAME…/VERSION`` (the version is part of every tfhub.dev handle);
  the archive is ``GET {endpoint}/HANDLE?tf-hub-format=compressed``, the protocol of the
  ``tensorflow_hub`` library (tfhub.dev answers with a redirect to Kaggle).

Registries publish no per-file digests, so ``lock`` downloads the archive once into
``$MODELMORA_HOME/tfhub/`` (a cache, safe to delete), hashes every regular member and
records the members as the model's files: the snapshot is the unpacked SavedModel
directory, which the TensorFlow converter takes as is. ``fetch`` streams one member out of
the cached archive, downloading the archive again when the cache is gone or yields other
bytes than the lock's; ``pull`` verifies each member against the lock, so an archive that
changed on the registry since ``lock`` is refused, naming the member whose bytes differ.
The archive's own sha256 and size are kept as lock metadata only: its compressed bytes may
legitimately differ (re-gzipped) while the members do not.

Members are only ever *read* (``TarFile.extractfile`` on regular files): nothing is
extracted to disk by ``tarfile``, so links, devices and absolute or ``..`` names can never
write outside the store; such names are refused and links/devices are skipped.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import logging
import os
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelmora.errors import (
    SourceError,
    SourceNotFoundError,
    UserInputError,
)
from modelmora.fsutil import sha256_file
from modelmora.home import modelmora_home
from modelmora.sources.base import (
    PULL_HINT,
    Credentials,
    ProgressCallback,
    RegistryConfig,
    RemoteFile,
    Resolution,
    Source,
    safe_relpath,
)
from modelmora.sources.caches import using
from modelmora.sources.http import (
    HttpStatusError,
    raise_if_transient,
    retrying,
    shared_client,
    stream_to_file,
    transient_failures,
)

__all__ = ["DEFAULT_KAGGLE_ENDPOINT", "DEFAULT_TFHUB_ENDPOINT", "TfHubSource", "parse_handle"]

log = logging.getLogger(__name__)

DEFAULT_KAGGLE_ENDPOINT = "https://www.kaggle.com"
DEFAULT_TFHUB_ENDPOINT = "https://tfhub.dev"
USERNAME_ENV = "KAGGLE_USERNAME"
KEY_ENV = "KAGGLE_KEY"
_CHUNK = 1 << 20
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")
# Framework slugs of Kaggle model handles (compared case-insensitively): they tell a Kaggle
# handle (3rd segment) from a tfhub.dev one, whose segments are free-form.
_FRAMEWORKS = frozenset(
    (
        "tensorflow1",
        "tensorflow2",
        "tflite",
        "tfjs",
        "pytorch",
        "jax",
        "flax",
        "keras",
        "transformers",
        "onnx",
        "coral",
        "scikitlearn",
        "mxnet",
        "xgboost",
        "gemmacpp",
        "ggml",
        "gguf",
        "maxtext",
        "paxml",
        "tensorrtllm",
        "triton",
        "api",
        "other",
    )
)
_FORMS = (
    "expected tfhub://OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION] (a Kaggle model, e.g. "
    "google/mobilenet-v2/tensorFlow2/100-224-feature-vector/2) or "
    "tfhub://PUBLISHER/NAME/…/VERSION (a tfhub.dev handle, e.g. "
    "google/imagenet/mobilenet_v2_100_224/feature_vector/5)"
)


@dataclass(frozen=True)
class Handle:
    kind: Literal["kaggle", "tfhub"]
    path: str
    """The handle without its version: ``OWNER/MODEL/FRAMEWORK/VARIATION`` or tfhub.dev's
    ``PUBLISHER/NAME…``."""
    version: int | None


def parse_handle(location: str) -> Handle:
    """Tell the Kaggle form (3rd segment is a framework) from the tfhub.dev form."""
    text = location.strip().strip("/")
    parts = text.split("/")
    if not text or not all(_SEGMENT.match(p) for p in parts):
        raise UserInputError(f"invalid tfhub source 'tfhub://{location}': {_FORMS}")
    has_version = bool(_VERSION.match(parts[-1]))
    if len(parts) in (4, 5) and parts[2].lower() in _FRAMEWORKS:
        if len(parts) == 4:
            return Handle("kaggle", text, None)
        if has_version:
            return Handle("kaggle", "/".join(parts[:4]), int(parts[4]))
    elif len(parts) >= 3 and has_version:
        return Handle("tfhub", "/".join(parts[:-1]), int(parts[-1]))
    raise UserInputError(f"invalid tfhub source 'tfhub://{location}': {_FORMS}")


class _ModelInstance(BaseModel):
    """The part of Kaggle's ``GetModelInstance`` answer we rely on."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version_number: int = Field(alias="versionNumber", ge=1)
    """The instance's current (latest) version."""


@dataclass(frozen=True)
class _Member:
    size: int
    sha256: str


def _credentials(block: RegistryConfig, name: str) -> tuple[dict[str, str], str | None]:
    """Basic-auth header and where it came from (for error messages; never the secret).

    The registry token (``USERNAME:KEY``) wins, else ``KAGGLE_USERNAME``/``KAGGLE_KEY``
    like kagglehub. ``~/.kaggle/kaggle.json`` is deliberately not read: a lock must not
    depend on whoever is logged in on this machine.
    """
    pair = block.token.get_secret_value() if block.token is not None else ""
    if pair:
        if ":" not in pair:
            raise UserInputError(
                f"registries.{name}.token must be USERNAME:KEY (Kaggle API credentials)",
                hint=f"or leave it out and set ${USERNAME_ENV} and ${KEY_ENV}",
            )
        source = f"${block.token_env}" if block.token_env else f"registries.{name}.token"
    else:
        user, key = os.environ.get(USERNAME_ENV, ""), os.environ.get(KEY_ENV, "")
        if not (user and key):
            return {}, None
        pair, source = f"{user}:{key}", f"${USERNAME_ENV}/${KEY_ENV}"
    encoded = base64.b64encode(pair.encode()).decode()
    return {"Authorization": f"Basic {encoded}"}, source


class TfHubSource(Source):
    """A TF Hub / Kaggle model version; revision = the version number.

    ``default_include`` is every member: a SavedModel needs ``saved_model.pb``, its
    ``variables/`` and ``assets/`` together.
    """

    scheme = "tfhub"
    default_include = ("*",)

    def configure(self) -> None:
        self.handle = parse_handle(self.location)
        block_name = self.registry_name
        block = self.context.registry(block_name)
        default = (
            DEFAULT_KAGGLE_ENDPOINT if self.handle.kind == "kaggle" else DEFAULT_TFHUB_ENDPOINT
        )
        self.endpoint = (block.endpoint or default).rstrip("/")
        # tfhub.dev is public and redirects to another host: credentials go to Kaggle only.
        self._auth, self._auth_source = (
            _credentials(block, block_name) if self.handle.kind == "kaggle" else ({}, None)
        )
        self._fresh: set[int] = set()
        """Inodes of the archives this source downloaded (as opposed to found cached)."""
        """Archives this instance downloaded itself (as opposed to found in the cache)."""

    @property
    def origin(self) -> str:
        return f"tfhub://{self.handle.path}"

    def _where(self, version: int) -> str:
        return f"{self.origin}/{version}"

    # -- resolve -----------------------------------------------------------------------
    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        version = self._version(pinned_revision)
        with using(self._cache_path(version)):
            return self._resolve_version(version)

    def _resolve_version(self, version: int) -> Resolution:
        where = self._where(version)
        archive = self._archive(version)
        members = _list_members(archive, where)
        chosen = self.select_some(members, where=where, listed="the archive has")
        return Resolution(
            revision=str(version),
            files=tuple(
                RemoteFile(path=p, size=members[p].size, sha256=members[p].sha256) for p in chosen
            ),
            metadata={
                "tfhub_archive_sha256": sha256_file(archive),
                "tfhub_archive_size": str(archive.stat().st_size),
            },
        )

    def _version(self, pinned_revision: str | None) -> int:
        if pinned_revision is not None:
            if not _VERSION.match(pinned_revision):
                raise SourceError(
                    f"{self.origin}: locked revision {pinned_revision!r} is not a version number"
                )
            pinned = int(pinned_revision)
            if self.handle.version is not None and pinned != self.handle.version:
                raise SourceError(
                    f"{self.origin}: locked version {pinned} differs from the source's "
                    f"version {self.handle.version}",
                    hint="run `modelmora lock --upgrade` to re-resolve",
                )
            return pinned
        if self.handle.version is not None:
            return self.handle.version
        self.require_online(
            "look up the latest version",
            hint="run `modelmora lock` online once, or pin a version in the source",
        )
        return self._latest_version()

    def _latest_version(self) -> int:
        url = f"{self.endpoint}/api/v1/models/{self.handle.path}/get"

        def call() -> int:
            with transient_failures(self.context.timeout_s):
                resp = shared_client().get(url, headers=self._auth, timeout=self.context.timeout_s)
            raise_if_transient(resp.status_code, resp.headers)
            if resp.status_code != 200:
                raise self._status_error(resp.status_code, None)
            try:
                return _ModelInstance.model_validate_json(resp.content).version_number
            except ValidationError as exc:
                raise SourceError(
                    f"{self.origin}: {self.endpoint} answered an unexpected model instance "
                    f"(no valid versionNumber): {exc.errors()[0]['msg']}"
                ) from None

        return retrying(call, retries=self.context.max_retries, unreachable=self._unreachable)

    # -- the archive cache ---------------------------------------------------------------
    def _cache_path(self, version: int) -> Path:
        key = hashlib.sha256(f"{self.endpoint}\n{self.handle.path}".encode()).hexdigest()[:24]
        return modelmora_home() / "tfhub" / key / f"{version}.tar.gz"

    def _archive(self, version: int) -> Path:
        """The version's archive in the cache, downloaded (atomically, once) when missing.

        A cached archive is trusted as is: a version's content is immutable on TF Hub and
        Kaggle, and ``pull`` verifies every member it takes from it against the lock.
        """
        path = self._cache_path(version)
        if path.is_file():
            return path
        self.require_online(
            f"download version {version}", "its archive is not in the local cache", hint=PULL_HINT
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if not path.is_file():
                self._download(version, path)
                self._fresh.add(path.stat().st_ino)
        return path

    def _discard(self, path: Path, inode: int) -> None:
        """Delete the cached archive if it is still the copy (``inode``) found bad."""
        with FileLock(f"{path}.lock"), contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == inode:  # else another fetch replaced it already
                path.unlink()

    def _archive_url(self, version: int) -> str:
        if self.handle.kind == "kaggle":
            return f"{self.endpoint}/api/v1/models/{self.handle.path}/{version}/download"
        return f"{self.endpoint}/{self.handle.path}/{version}?tf-hub-format=compressed"

    def _download(self, version: int, path: Path) -> None:
        url = self._archive_url(version)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)

        def call() -> None:
            have = tmp.stat().st_size  # a retry resumes what the last attempt wrote
            try:
                with transient_failures(self.context.timeout_s):
                    stream_to_file(
                        url, tmp, headers=self._auth, offset=have, timeout_s=self.context.timeout_s
                    )
            except HttpStatusError as exc:
                raise self._status_error(exc.status, version) from None

        try:
            retrying(call, retries=self.context.max_retries, unreachable=self._unreachable)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

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
        """Stream one member of the cached archive into ``dest``.

        A gzip stream cannot seek, so resuming at ``offset`` decompresses and drops the
        first ``offset`` bytes of the member before appending the rest. When a *cached*
        archive yields other bytes than the lock's sha256 (a corrupt cache, or one filled
        from a different upload of this version), the archive is downloaded once more;
        bytes that still differ are written anyway, for the caller to refuse by name.
        """
        version = self._version(revision)
        where = self._where(version)
        path = safe_relpath(file.path, origin=where)
        with using(self._cache_path(version)):
            while True:
                archive = self._archive(version)
                try:
                    stream = archive.open("rb")
                except FileNotFoundError:
                    continue  # a parallel fetch discarded a bad cached copy: get the new one
                with stream:
                    # Judged by the copy actually read (its inode cannot be reused while open):
                    # a parallel fetch may replace the file at this path meanwhile.
                    inode = os.fstat(stream.fileno()).st_ino
                    digest = _copy_member(
                        stream, path, dest, where, skip=offset, size=file.size, progress=progress
                    )
                    if file.sha256 is None or digest == file.sha256 or inode in self._fresh:
                        return
                log.warning(
                    "%s: cached archive does not match the lock; downloading it again", where
                )
                self._discard(archive, inode)
                os.truncate(dest, offset)

    # -- failures ----------------------------------------------------------------------
    def _unreachable(self, attempts: int, reason: str) -> SourceError:
        return SourceError(
            f"{self.origin}: registry unreachable at {self.endpoint} after {attempts} "
            f"attempts: {reason}",
            hint="check the network and registries.tfhub.endpoint",
        )

    def _status_error(self, status: int, version: int | None) -> SourceError:
        """A final (not 429/5xx) answer as a message naming the model or version."""
        return self.answer_error(
            status,
            endpoint=self.endpoint,
            credentials=Credentials(
                sent=self._auth_source is not None,
                named=self._auth_source or f"${USERNAME_ENV}/${KEY_ENV}",
                kind="credentials",
                set_hint=f"set ${USERNAME_ENV} and ${KEY_ENV} (or registries.tfhub.token: "
                "USERNAME:KEY from an env var)",
                check_hint=f"check that {self._auth_source} hold a valid Kaggle username and "
                "API key with access to this model (and that its license was accepted)",
            ),
            not_found=self._not_found(version) if status == 404 else None,
            where=self._where(version) if version is not None else self.origin,
        )

    def _not_found(self, version: int | None) -> SourceError:
        if self.handle.kind == "tfhub":
            return SourceNotFoundError(
                f"{self._where(version) if version else self.origin}: not found at {self.endpoint}",
                hint="check the handle and its version (tfhub.dev handles end with the "
                "version number)",
            )
        if version is not None:
            # The archive is missing: is it the model or only this version?
            latest = self._latest_version()
            return SourceNotFoundError(
                f"{self.origin}: version {version} does not exist at {self.endpoint} "
                f"(latest version: {latest})",
                hint=f"use tfhub://{self.handle.path} to follow the latest version, or an "
                "existing version number",
            )
        login = "" if self._auth_source else f"; private models need ${USERNAME_ENV} and ${KEY_ENV}"
        return SourceNotFoundError(
            f"{self.origin}: model not found at {self.endpoint}",
            hint="check OWNER/MODEL/FRAMEWORK/VARIATION (as in kaggle.com/models/OWNER/MODEL/"
            f"frameworks/FRAMEWORK/variations/VARIATION){login}",
        )


# -- tar reading -------------------------------------------------------------------------


@contextmanager
def _open_stream(archive: Path | IO[bytes], where: str) -> Iterator[tarfile.TarFile]:
    """The archive as a forward-only stream: one decompression pass, never a seek back."""
    try:
        name, fileobj = (archive, None) if isinstance(archive, Path) else (None, archive)
        with tarfile.open(name=name, fileobj=fileobj, mode="r|*") as tar:
            yield tar
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise SourceError(f"{where}: the downloaded archive is not a valid tar.gz: {exc}") from exc


def _member_path(name: str, where: str) -> str:
    """``./variables/x`` → ``variables/x``; absolute and ``..`` names are refused."""
    while name.startswith("./"):
        name = name[2:]
    return safe_relpath(name.rstrip("/"), origin=f"{where}: archive member")


def _list_members(archive: Path, where: str) -> dict[str, _Member]:
    """Every regular member with its size and sha256, in one pass over the archive."""
    members: dict[str, _Member] = {}
    with _open_stream(archive, where) as tar:
        for info in tar:
            if info.name.strip("/") in ("", "."):
                continue
            path = _member_path(info.name, where)
            if info.isdir():
                continue
            if not info.isreg():
                log.warning("%s: skipping archive member %r (not a regular file)", where, path)
                continue
            if path in members:
                raise SourceError(f"{where}: the archive lists {path!r} twice")
            reader = tar.extractfile(info)
            digest, size = hashlib.sha256(), 0
            if reader is not None:
                while chunk := reader.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            members[path] = _Member(size, digest.hexdigest())
    return members


def _copy_member(
    archive: IO[bytes],
    path: str,
    dest: Path,
    where: str,
    *,
    skip: int,
    size: int,
    progress: ProgressCallback | None,
) -> str:
    """Write member ``path`` (minus its first ``skip`` bytes, and never past ``size``, the
    locked size) to ``dest``; the sha256 of the whole member."""
    with _open_stream(archive, where) as tar:
        for info in tar:
            if not info.isreg() or _member_path(info.name, where) != path:
                continue
            reader = tar.extractfile(info)
            if reader is None:  # pragma: no cover (isreg() members always have data)
                break
            return _copy(reader, dest, skip=skip, size=size, progress=progress)
    raise SourceNotFoundError(f"{where}: the archive has no file {path!r}")


def _copy(
    reader: IO[bytes], dest: Path, *, skip: int, size: int, progress: ProgressCallback | None
) -> str:
    digest = hashlib.sha256()
    room = size - skip
    with dest.open("ab" if skip else "wb") as fh:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            if skip:
                drop = min(skip, len(chunk))
                chunk, skip = chunk[drop:], skip - drop
            chunk = chunk[: max(room, 0)]  # a bigger member still hashes wrong: no more disk
            if not chunk:
                continue
            room -= len(chunk)
            fh.write(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()
