"""``https://…`` single-file sources, pinned by the sha256 the manifest must carry.

A URL alone pins nothing (the server may change the bytes), so the spec's ``sha256`` *is*
the revision; ``lock`` asks the server for the size and ``pull`` verifies the bytes.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from modelmora.errors import SourceError, SourceNotFoundError, UserInputError
from modelmora.sources.base import (
    ProgressCallback,
    RemoteFile,
    Resolution,
    Source,
    safe_relpath,
)
from modelmora.sources.http import (
    raise_if_transient,
    retrying,
    shared_client,
    transient_failures,
)


class HttpsSource(Source):
    scheme = "https"

    @property
    def url(self) -> str:
        return f"https://{self.location}"

    def _expected_sha256(self) -> str:
        sha = self.options.get("sha256")
        if not isinstance(sha, str):
            raise UserInputError(
                f"{self.url}: https sources need a sha256",
                hint="add `sha256: <64 hex>` to the model (e.g. from `sha256sum FILE`)",
            )
        return sha

    def file_name(self) -> str:
        name = posixpath.basename(unquote(urlsplit(self.url).path))
        return safe_relpath(name or "model.onnx", origin=self.url)

    def resolve(self, pinned_revision: str | None = None) -> Resolution:
        sha = self._expected_sha256()
        [name] = self.select_some([self.file_name()], where=self.url)
        self.require_online("resolve", "no lock entry to reuse")
        size = self._request_size()
        return Resolution(
            revision=f"sha256:{sha}", files=(RemoteFile(path=name, size=size, sha256=sha),)
        )

    def _request_size(self) -> int:
        return retrying(
            self._size_once, retries=self.context.max_retries, unreachable=self._unreachable
        )

    def _unreachable(self, attempts: int, reason: str) -> SourceError:
        return SourceError(f"{self.url}: unreachable after {attempts} attempts: {reason}")

    def _refused(self, status: int) -> SourceError:
        return self.answer_error(
            status,
            endpoint=urlsplit(self.url).netloc,
            not_found=SourceNotFoundError(f"{self.url}: not found (HTTP 404)"),
            where=self.url,
        )

    def _size_once(self) -> int:
        client = shared_client()
        with transient_failures(self.context.timeout_s):
            resp = client.head(self.url, timeout=self.context.timeout_s)
            self._check(resp)
            length = resp.headers.get("content-length")
            if length is not None:
                return int(length)
            # No length on HEAD: count the body once (the lock needs a size).
            total = 0
            with client.stream("GET", self.url, timeout=self.context.timeout_s) as body:
                self._check(body)
                for chunk in body.iter_bytes():
                    total += len(chunk)
            return total

    def _check(self, resp: httpx.Response) -> None:
        """429/5xx are tried again; other failures end at once."""
        raise_if_transient(resp.status_code, resp.headers)
        if not resp.is_success:
            raise self._refused(resp.status_code)

    def fetch(
        self,
        revision: str,
        file: RemoteFile,
        dest: Path,
        *,
        offset: int = 0,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Under the shared retry policy: a dropped connection resumes with Range."""
        self.download(
            lambda: (self.url, {}),
            dest,
            file,
            offset=offset,
            progress=progress,
            refused=lambda exc: self._refused(exc.status),
            unreachable=self._unreachable,
        )
