"""``s3://BUCKET[/PREFIX]``: model files in an S3 bucket (AWS, MinIO, R2, Ceph, moto, …).

A prefix is a directory of model files (``PREFIX/…``); a prefix naming one object is a
single-file model. S3 has no commits, so the revision is a digest of the prefix's listing:
sha256 over the sorted ``(path, ETag, size)`` of *every* object under it (not only the
selected ones, so that changing ``files:`` keeps the revision). Any overwrite, addition or
deletion changes it, which is what lets a pinned re-resolve notice that the bucket moved
under the lock.

On a *versioned* bucket each locked file also carries its VersionId (``version_id`` in the
lock, read with one ListObjectVersions pass at lock time), and ``fetch`` asks for exactly
that version: an object overwritten since lock still yields the locked bytes. Reading a
version needs ``s3:GetObjectVersion`` (and listing them ``s3:ListBucketVersions``), which
minimal read-only policies lack: without the first, fetch falls back to the current object
guarded by its ETag (below); without the second, the lock simply records no ids.

Each locked file also carries the ETag it had at lock time (``etag`` in the lock), and
``fetch`` sends it as ``If-Match`` without listing anything: an object replaced since is
refused with a message naming it instead of being downloaded and rejected by the store.
A locked path maps to ``PREFIX/PATH``, except that a single-object model's only file (the
key's base name) may also be the prefix key itself; that ambiguous case tries the prefix
key first and ``PREFIX/PATH`` on a miss or mismatch, both guarded by the same ETag.

Locks written before the ``etag`` field have no ETag to send, so ``fetch`` lists the
prefix again (once per source): when the listing still hashes to the locked revision, every
ETag is the one seen at lock time and is sent as above. When the listing moved, a file
whose size (or S3 SHA-256 checksum) differs from the lock is refused the same way; one that
still looks the same is downloaded, pinned to its current ETag for resume consistency, and
the store's sha256 check has the last word.

sha256: S3 only knows a file's sha256 when it was uploaded with a *full-object* SHA-256
checksum (``ChecksumSHA256``; composite multipart checksums are a hash of part hashes, not
a file digest). Otherwise the lock step downloads and hashes the file once.

Credentials come from boto3's standard chain and never reach the lock or a message; only
*where* they came from (env vars, a profile) is named when the server rejects them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import posixpath
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelmora.errors import (
    AuthenticationError,
    ModelMoraError,
    SourceError,
    SourceNotFoundError,
    UserInputError,
)
from modelmora.sources.base import (
    PULL_HINT,
    ProgressCallback,
    RemoteFile,
    Resolution,
    Source,
    safe_relpath,
)

__all__ = ["S3Source"]

log = logging.getLogger(__name__)

INSTALL_HINT = "install the extra: pip install 'modelmora[s3]'"
REVISION_PREFIX = "s3-listing:"
MAX_ATTEMPTS = 3
"""Cap on botocore attempts per request: S3 errors worth retrying rarely outlast two retries,
and an unreachable endpoint should fail in seconds."""
_CHUNK = 8 * 1024 * 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_REJECTED_CREDENTIALS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
    }
)
_CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary "
    "credentials), or AWS_PROFILE, to credentials that may list and read {bucket}"
)


class _ObjectChanged(SourceError):
    """A locked object is gone (``missing``) or holds other bytes than at lock time."""

    def __init__(self, message: str, *, hint: str, missing: bool) -> None:
        super().__init__(message, hint=hint)
        self.missing = missing


@dataclass(frozen=True)
class _Object:
    key: str
    etag: str
    """As S3 sends it, quotes included: the form ``If-Match`` compares against."""
    size: int
    has_sha256: bool
    """The listing says the object carries a SHA-256 checksum (maybe a composite one)."""

    @property
    def bare_etag(self) -> str:
        return self.etag.strip('"')


@dataclass(frozen=True)
class _Listing:
    objects: dict[str, _Object]
    """Path relative to the prefix (a single object: its base name) → object."""
    revision: str


class S3Source(Source):
    """Objects under an S3 prefix, pinned by their listing's ETags and sha256 digests."""

    scheme = "s3"

    def configure(self) -> None:
        bucket, _, key = self.location.strip().partition("/")
        self.bucket = bucket
        self.directory_only = key == "" or key.endswith("/")
        self.prefix = key.strip("/")
        if not _BUCKET_RE.match(bucket) or "//" in self.prefix or ".." in self.prefix.split("/"):
            raise UserInputError(
                f"invalid s3 source 's3://{self.location}': expected s3://BUCKET[/PREFIX] "
                "(bucket: 3-63 lowercase letters, digits, '.', '-')"
            )
        block = self.context.registry(self.registry_name)
        if block.token is not None:
            raise UserInputError(
                f"registries.{self.registry_name}.token: s3 sources do not use a token",
                hint="S3 credentials come from the AWS chain: AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or AWS_PROFILE",
            )
        endpoint = (
            block.endpoint
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise UserInputError(
                f"registries.{self.registry_name}.endpoint: expected an http(s):// URL "
                f"for s3 sources, got {_without_userinfo(endpoint)!r}"
            )
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._listing_lock = threading.Lock()
        self._client_cache: Any = None
        self._credentials: str = ""
        self._listing: _Listing | None = None
        self._versions_denied = False

    @property
    def origin(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def attempts(self) -> int:
        return min(1 + max(self.context.max_retries, 0), MAX_ATTEMPTS)

    @property
    def endpoint(self) -> str:
        if self._client_cache is not None:
            return _without_userinfo(str(self._client_cache.meta.endpoint_url))
        return _without_userinfo(self._endpoint) if self._endpoint else "AWS S3"

    # -- resolve -----------------------------------------------------------------------
    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        self.require_online("resolve", "only the bucket knows which objects are under the prefix")
        listing = self._list()
        with self._listing_lock:
            self._listing = listing
        if pinned_revision is not None and pinned_revision != listing.revision:
            raise SourceError(
                f"{self.origin}: objects changed since modelmora.lock was written (locked "
                f"{pinned_revision}, the bucket now lists {listing.revision})",
                hint="run `modelmora lock --upgrade` to lock the objects as they are now",
            )
        chosen = self.select_some(listing.objects, where=self.origin)
        versions = self._version_ids(listing, chosen)
        files = []
        for rel in chosen:
            obj = listing.objects[rel]
            path = safe_relpath(rel, origin=self.origin)
            sha256 = self._published_sha256(obj, path) if obj.has_sha256 else None
            files.append(
                RemoteFile(
                    path=path,
                    size=obj.size,
                    sha256=sha256,
                    etag=obj.bare_etag,
                    version_id=versions.get(obj.key),
                )
            )
        return Resolution(revision=listing.revision, files=tuple(files))

    def _version_ids(self, listing: _Listing, chosen: list[str]) -> dict[str, str]:
        """Key → VersionId of each chosen object as listed, on a versioned bucket.

        Empty for an unversioned bucket (S3 answers the id ``null``) and for credentials
        without ``s3:ListBucketVersions``: the ETags still guard every download.
        """
        client = self._client()
        wanted = {listing.objects[rel].key: listing.objects[rel].etag for rel in chosen}
        pages = client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        try:
            versions = [
                v for page in self._call(lambda: list(pages)) for v in page.get("Versions") or ()
            ]
        except AuthenticationError:
            log.info("%s: may not list object versions; locking without VersionIds", self.origin)
            return {}
        return {
            str(v["Key"]): str(v["VersionId"])
            for v in versions
            if v.get("IsLatest")
            and v.get("VersionId") not in (None, "null")
            and wanted.get(str(v["Key"])) == v.get("ETag")  # the version the listing saw
        }

    def _list(self) -> _Listing:
        client = self._client()
        objects: dict[str, _Object] = {}
        directory = f"{self.prefix}/" if self.prefix else ""
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=directory
        )
        for page in self._call(lambda: list(pages)):
            for item in page.get("Contents") or ():
                key = str(item["Key"])
                if key.endswith("/"):  # a console "folder" marker, not a file
                    continue
                objects[key[len(directory) :]] = _object(item)
        if not objects and not self.directory_only:
            # The prefix may name one object: it sorts first among keys it prefixes.
            page = self._call(
                lambda: client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            )
            first = (page.get("Contents") or [None])[0]
            if first is not None and first["Key"] == self.prefix:
                objects[posixpath.basename(self.prefix)] = _object(first)
        if not objects:
            raise SourceNotFoundError(
                f"{self.origin}: no objects under s3://{self.bucket}/{directory} at "
                f"{self.endpoint}",
                hint="check the prefix (keys are case-sensitive) and that it holds the "
                "model's files",
            )
        rows = sorted((rel, obj.bare_etag, obj.size) for rel, obj in objects.items())
        digest = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()
        return _Listing(objects=objects, revision=REVISION_PREFIX + digest)

    def _published_sha256(self, obj: _Object, path: str) -> str | None:
        """The object's full-object SHA-256 checksum as hex, if S3 has one."""
        head = self._call(
            lambda: self._client().head_object(
                Bucket=self.bucket, Key=obj.key, IfMatch=obj.etag, ChecksumMode="ENABLED"
            ),
            path=path,
        )
        value = head.get("ChecksumSHA256")
        if not isinstance(value, str) or "-" in value or head.get("ChecksumType") == "COMPOSITE":
            return None  # composite multipart checksum: a hash of part hashes
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return raw.hex() if len(raw) == 32 else None

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
        """Stream one object with ``If-Match`` (and ``Range`` from ``offset``) into ``dest``."""
        self.require_online(f"download {file.path}", hint=PULL_HINT)
        if offset and offset >= file.size:
            return
        if file.etag is not None:
            keys, etag = self._keys(file.path), f'"{file.etag}"'
        else:  # a lock from before the etag field: recover it from a listing
            obj = self._locked_object(revision, file)
            keys, etag = (obj.key,), obj.etag
        request: dict[str, Any] = {"Bucket": self.bucket, "IfMatch": etag}
        if offset:
            request["Range"] = f"bytes={offset}-"
        if file.version_id is not None and not self._versions_denied:
            request["VersionId"] = file.version_id
        try:
            response = self._get(keys, request, file.path)
        except AuthenticationError:
            if "VersionId" not in request:
                raise
            # Maybe only s3:GetObjectVersion is missing: the current object, if its ETag is
            # still the locked one.
            del request["VersionId"]
            response = self._get(keys, request, file.path)
            self._versions_denied = True
            log.warning(
                "%s: may not read object versions (s3:GetObjectVersion); downloading the "
                "current objects, guarded by their ETags",
                self.origin,
            )
        if offset and not response.get("ContentRange"):
            offset = 0  # the server ignored Range and sends the whole object
        with dest.open("ab" if offset else "wb") as fh:
            if offset:
                fh.truncate(offset)
            chunks = response["Body"].iter_chunks(_CHUNK)
            while True:
                chunk = self._call(lambda: next(chunks, None), path=file.path, body=True)
                if chunk is None:
                    break
                fh.write(chunk)
                if progress is not None:
                    progress(len(chunk))

    def _keys(self, path: str) -> tuple[str, ...]:
        """The keys a locked path may live at, the likelier first (see the module docstring)."""
        nested = f"{self.prefix}/{path}" if self.prefix else path
        if self.directory_only or path != posixpath.basename(self.prefix):
            return (nested,)
        return (self.prefix, nested)

    def _get(self, keys: tuple[str, ...], request: dict[str, Any], path: str) -> Any:
        """GET the first key that still holds the locked bytes; else say why the first failed."""
        failure: _ObjectChanged | None = None
        for key in keys:
            try:
                return self._call(
                    lambda key=key: self._client().get_object(Key=key, **request), path=path
                )
            except _ObjectChanged as exc:
                if failure is None or failure.missing:
                    failure = exc  # a mismatch says more than a miss
        assert failure is not None
        raise failure

    def _locked_object(self, revision: str, file: RemoteFile) -> _Object:
        """The object to download for ``file``, refusing one provably changed since lock."""
        with self._listing_lock:  # parallel fetches share one listing
            listing = self._listing
            if listing is None:
                listing = self._listing = self._list()
        obj = listing.objects.get(file.path)
        if obj is None:
            raise self._changed(file.path, "deleted from the bucket", missing=True)
        if listing.revision == revision:
            return obj  # same listing digest: this is the ETag seen at lock time
        if obj.size != file.size:
            raise self._changed(file.path, f"now {obj.size} bytes, locked {file.size}")
        if obj.has_sha256 and file.sha256 is not None:
            published = self._published_sha256(obj, file.path)
            if published is not None and published != file.sha256:
                raise self._changed(
                    file.path, "S3's SHA-256 checksum differs from the locked sha256"
                )
        return obj

    def _changed(self, path: str, detail: str, *, missing: bool = False) -> _ObjectChanged:
        return _ObjectChanged(
            f"{self.origin}: {path} changed since modelmora.lock was written ({detail}); "
            "refusing to download bytes other than the locked ones",
            hint="if the new objects are intended, run `modelmora lock --upgrade` and "
            "install again",
            missing=missing,
        )

    # -- client and error mapping ------------------------------------------------------
    def _client(self) -> Any:
        with self._lock:
            if self._client_cache is None:
                self._client_cache = self._make_client()
            return self._client_cache

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, PartialCredentialsError, ProfileNotFound
        except ImportError:
            raise UserInputError(
                f"{self.origin}: s3 sources need boto3, which is not installed",
                hint=INSTALL_HINT,
            ) from None
        profile = os.environ.get("AWS_PROFILE") or "default"
        try:
            session = boto3.session.Session()
            region = (
                os.environ.get("AWS_REGION")
                or os.environ.get("AWS_DEFAULT_REGION")
                or session.region_name
                or "us-east-1"
            )
            credentials = session.get_credentials()
        except ProfileNotFound:
            raise UserInputError(
                f"{self.origin}: AWS profile {profile!r} (from AWS_PROFILE) is not configured",
                hint="fix AWS_PROFILE or add the profile to ~/.aws/config",
            ) from None
        except PartialCredentialsError as exc:  # names the missing variable, not a value
            raise AuthenticationError(
                f"{self.origin}: incomplete AWS credentials: {exc}",
                hint=_CREDENTIALS_HINT.format(bucket=f"s3://{self.bucket}"),
            ) from None
        except BotoCoreError as exc:
            raise AuthenticationError(
                f"{self.origin}: could not load AWS credentials ({type(exc).__name__})",
                hint=_CREDENTIALS_HINT.format(bucket=f"s3://{self.bucket}"),
            ) from None
        if credentials is None:
            self._credentials = "anonymous requests (no AWS credentials found)"
        elif credentials.method == "env":
            self._credentials = "the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        elif credentials.method in ("shared-credentials-file", "config-file"):
            self._credentials = f"the credentials of AWS profile {profile!r} (AWS_PROFILE)"
        else:
            self._credentials = f"the AWS credentials from {credentials.method}"
        config = Config(
            connect_timeout=self.context.timeout_s,
            read_timeout=self.context.timeout_s,
            retries={"total_max_attempts": self.attempts, "mode": "standard"},
            # Public buckets work without credentials; unsigned requests say so honestly.
            signature_version=UNSIGNED if credentials is None else None,
            # S3-compatible servers (MinIO, moto, Ceph) rarely resolve bucket subdomains.
            s3={"addressing_style": "path"} if self._endpoint else None,
            user_agent_extra="modelmora",
        )
        return session.client("s3", endpoint_url=self._endpoint, region_name=region, config=config)

    def _call(self, request: Any, *, path: str | None = None, body: bool = False) -> Any:
        """Run one S3 request (or body read), mapping every failure to one ModelMora error."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            ConnectTimeoutError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        try:
            return request()
        except ClientError as exc:
            raise self._client_error(exc, path) from None
        except (ConnectTimeoutError, ReadTimeoutError):
            reason = f"timed out after {self.context.timeout_s:g} s"
        except ConnectionError:
            reason = "could not connect"
        except NoCredentialsError:
            raise self._auth_error("no AWS credentials were found") from None
        except BotoCoreError as exc:
            reason = type(exc).__name__
        if body:  # botocore retries requests, not reads of a response body
            failure = f"connection to S3 endpoint {self.endpoint} lost while downloading {path}"
        else:
            failure = f"S3 endpoint {self.endpoint} unreachable after {self.attempts} attempts"
        raise SourceError(
            f"{self.origin}: {failure}: {reason}",
            hint=f"check registries.{self.registry_name}.endpoint (or AWS_ENDPOINT_URL) and "
            "that the server is up",
        )

    def _client_error(self, exc: Any, path: str | None) -> ModelMoraError:
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return SourceNotFoundError(
                f"{self.origin}: bucket {self.bucket!r} does not exist at {self.endpoint}",
                hint="check the bucket name, the endpoint and the region (AWS_REGION)",
            )
        if code == "PreconditionFailed" or status == 412:
            return self._changed(path or self.prefix, "its ETag no longer matches")
        if path is not None and code == "NoSuchVersion":
            return self._changed(path, "its locked version was deleted", missing=True)
        if path is not None and (code == "NoSuchKey" or status == 404):
            return self._changed(path, "deleted from the bucket", missing=True)
        if code in _REJECTED_CREDENTIALS:
            return self._auth_error(f"{self.endpoint} rejected {self._credentials} ({code})")
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            return self._auth_error(
                f"access to bucket {self.bucket!r} denied for {self._credentials} "
                f"({code or 'HTTP 403'})"
            )
        answer = f"HTTP {status}" if not code or code.isdigit() else f"{code} (HTTP {status})"
        return SourceError(f"{self.origin}: {self.endpoint} answered {answer}")

    def _auth_error(self, what: str) -> AuthenticationError:
        return AuthenticationError(
            f"{self.origin}: {what}",
            hint=_CREDENTIALS_HINT.format(bucket=f"s3://{self.bucket}"),
        )


def _object(item: dict[str, Any]) -> _Object:
    return _Object(
        key=str(item["Key"]),
        etag=str(item.get("ETag") or ""),
        size=int(item["Size"]),
        has_sha256="SHA256" in (item.get("ChecksumAlgorithm") or ()),
    )


def _without_userinfo(url: str) -> str:
    """Drop ``user:password@`` from an endpoint before it can reach a message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port is not None else "")
    return parts._replace(netloc=netloc).geturl()
