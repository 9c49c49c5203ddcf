"""The contract every source keeps, as pytest tests that a source's test module inherits.

Built-in sources run it against their registry emulators; a plugin author runs it against
theirs. Subclass the contract that fits and give the class a ``registry`` fixture returning
a :class:`ContractRegistry` (an adapter over the registry the tests publish models to)::

    from modelmora.testing.source_contract import ContractRegistry, RemoteSourceContract

    class MyRegistry(ContractRegistry):
        ...  # publish, context, change (and require_token for AuthSourceContract)

    class TestMySourceContract(RemoteSourceContract):
        @pytest.fixture
        def registry(self, my_emulator) -> ContractRegistry:
            return MyRegistry(my_emulator)

* :class:`SourceContract` — every source: resolve lists the files with their sizes (and
  digests where the registry publishes them), fetch writes exactly the bytes and counts
  them, a fetch from an offset appends only the rest, include patterns that match nothing
  are refused naming them, and bytes changed since the lock never reach the store.
* :class:`RemoteSourceContract` — adds: offline, resolve and fetch are refused by name.
* :class:`AuthSourceContract` — adds: a missing or rejected credential is an
  :class:`~modelmora.errors.AuthenticationError` naming where the credential comes from
  (the env var), never the credential itself.
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelmora.errors import AuthenticationError, IntegrityError, SourceError
from modelmora.lock import LockedFile
from modelmora.sources import Source, SourceContext, make_source
from modelmora.sources.base import RegistryConfig, RemoteFile, Resolution
from modelmora.testing.hub_emulator import HubEmulator
from modelmora.testing.wandb_emulator import WandbEmulator

__all__ = [
    "AuthSourceContract",
    "ContractRegistry",
    "HubRegistry",
    "RemoteSourceContract",
    "SourceContract",
    "WandbRegistry",
]

_PAYLOAD = bytes(range(256)) * 1200  # 300 kB: resumes and progress cross read boundaries


class ContractRegistry(abc.ABC):
    """A registry the contract tests publish to (usually an emulator on 127.0.0.1)."""

    extra_files: ClassVar[frozenset[str]] = frozenset()
    """Files a resolution lists besides the published ones (a generated descriptor)."""
    keeps_locked_bytes: ClassVar[bool] = False
    """Whether the locked revision still serves its own bytes after :meth:`change` (a git
    commit cannot change); otherwise the source must refuse the changed bytes."""
    token_env: ClassVar[str] = ""
    """For :class:`AuthSourceContract`: the env var holding the credential."""

    def files_for(self, tag: str) -> dict[str, bytes]:
        """What a test publishes: a small JSON file and a larger binary in a subdirectory
        (a single-file registry overrides this)."""
        return {
            "config.json": f'{{"model": "{tag}"}}'.encode(),
            "weights/model.safetensors": tag.encode() + _PAYLOAD,
        }

    @abc.abstractmethod
    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        """Publish a new model called ``name`` (unique per test); return its manifest spec
        (``{"source": ...}`` plus any options such as ``sha256``)."""

    @abc.abstractmethod
    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        """The source context a project using this registry would have."""

    @abc.abstractmethod
    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        """Make the registry serve ``data`` for ``path`` where the lock already pins other
        bytes (a registry that rewrote history, a mirror that lies)."""

    def require_token(self, token: str) -> None:
        """For :class:`AuthSourceContract`: refuse requests without ``token`` from now on."""
        raise NotImplementedError

    def requests_served(self) -> int:
        """For :class:`RemoteSourceContract`: how many requests the registry has answered."""
        raise NotImplementedError


class HubRegistry(ContractRegistry):
    """The HF Hub emulator as a contract registry, for ``hf://`` or ``onnx-zoo://`` (the
    zoo's repositories live under ``onnxmodelzoo/``). ``change`` makes it serve flipped
    bytes under the same commit and the same advertised hashes (a mirror that lies)."""

    token_env = "HF_TOKEN"

    def __init__(self, hub: HubEmulator, scheme: str) -> None:
        self.hub, self.scheme = hub, scheme
        self.owner = "onnxmodelzoo/" if scheme == "onnx-zoo" else "acme/"

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        self.hub.create_repo(self.owner + name, dict(files))
        location = name if self.scheme == "onnx-zoo" else self.owner + name
        return {"source": f"{self.scheme}://{location}", "files": {"include": ["*"]}}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        hub = RegistryConfig(endpoint=self.hub.url)
        return SourceContext(project_dir, {"hf": hub, "onnx-zoo": hub}, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        name = str(spec["source"]).rsplit("/", 1)[-1]
        self.hub.corrupt(self.owner + name, path)

    def require_token(self, token: str) -> None:
        self.hub.require_token(token)

    def requests_served(self) -> int:
        return len(self.hub.requests)


class WandbRegistry(ContractRegistry):
    """The W&B emulator as a contract registry (artifacts of ``acme/contract``); ``change``
    serves other bytes while GraphQL keeps the published size and md5."""

    token_env = "WANDB_API_KEY"

    def __init__(self, wandb: WandbEmulator) -> None:
        self.wandb = wandb

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        self.wandb.publish("acme", "contract", name, files)
        return {"source": f"wandb://acme/contract/{name}"}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        wandb = RegistryConfig(endpoint=self.wandb.url)
        return SourceContext(project_dir, {"wandb": wandb}, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        name = str(spec["source"]).rsplit("/", 1)[-1]
        self.wandb.tamper("acme", "contract", name, "v0", path, data)

    def require_token(self, token: str) -> None:
        self.wandb.api_key = token

    def requests_served(self) -> int:
        return len(self.wandb.requests)


@dataclass(frozen=True)
class Published:
    """A model a contract test published: its spec and files, and the registry it is on."""

    registry: ContractRegistry
    spec: dict[str, Any]
    files: dict[str, bytes]
    project_dir: Path

    def source(self, spec: Mapping[str, Any] | None = None, *, offline: bool = False) -> Source:
        """A fresh source for the model (or for ``spec``), as a new ``lock``/``pull`` makes."""
        context = self.registry.context(self.project_dir, offline=offline)
        return make_source(spec or self.spec, context)

    def resolved(self, source: Source | None = None) -> tuple[Resolution, dict[str, RemoteFile]]:
        resolution = (source or self.source()).resolve()
        return resolution, {f.path: f for f in resolution.files}

    @property
    def biggest(self) -> str:
        return max(self.files, key=lambda path: len(self.files[path]))


class SourceContract:
    """Tests every source passes. Subclasses provide the ``registry`` fixture."""

    @pytest.fixture
    def registry(self) -> ContractRegistry:
        raise NotImplementedError("give the contract class a `registry` fixture")

    @pytest.fixture
    def model(
        self, registry: ContractRegistry, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Published:
        name = "m" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
        files = registry.files_for(name)
        return Published(registry, registry.publish(name, files), files, tmp_path)

    def test_resolve_lists_every_published_file_with_its_size(self, model: Published) -> None:
        resolution, listed = model.resolved()
        assert resolution.revision
        assert set(listed) - model.registry.extra_files == set(model.files)
        for path, data in model.files.items():
            assert listed[path].size == len(data), path
            assert listed[path].sha256 in (None, hashlib.sha256(data).hexdigest()), path
        # The same revision resolves to the same files when pinned (what `lock` keeps).
        again = model.source().resolve(resolution.revision)
        assert again.revision == resolution.revision and again.files == resolution.files

    def test_fetch_writes_the_published_bytes_and_counts_them(
        self, model: Published, tmp_path: Path
    ) -> None:
        source = model.source()
        resolution, listed = model.resolved(source)
        for path, data in model.files.items():
            dest = tmp_path / "out" / path.replace("/", "_")
            dest.parent.mkdir(exist_ok=True)
            seen: list[int] = []
            source.fetch(resolution.revision, listed[path], dest, progress=seen.append)
            assert dest.read_bytes() == data, path
            assert sum(seen) == len(data), path

    def test_fetch_from_an_offset_appends_only_the_rest(
        self, model: Published, tmp_path: Path
    ) -> None:
        source = model.source()
        resolution, listed = model.resolved(source)
        data = model.files[model.biggest]
        offset = len(data) // 3 + 7
        dest = tmp_path / "partial"
        dest.write_bytes(data[:offset])
        seen: list[int] = []
        source.fetch(
            resolution.revision, listed[model.biggest], dest, offset=offset, progress=seen.append
        )
        assert dest.read_bytes() == data
        assert sum(seen) == len(data) - offset  # only the rest was written

    def test_include_patterns_that_match_nothing_are_refused_naming_them(
        self, model: Published
    ) -> None:
        narrowed = {**model.spec, "files": {"include": ["*.no-such-suffix"]}}
        with pytest.raises(SourceError, match="include patterns matched no files") as err:
            model.source(narrowed).resolve()
        assert "*.no-such-suffix" in str(err.value)

    def test_bytes_changed_since_the_lock_never_reach_the_store(
        self, model: Published, tmp_path: Path
    ) -> None:
        from modelmora.cache import Store, ensure_blob

        resolution, listed = model.resolved()
        data = model.files[model.biggest]
        locked = LockedFile(
            path=model.biggest,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            etag=listed[model.biggest].etag,  # a lock keeps what the registry tagged
        )
        model.registry.change(model.spec, locked.path, bytes(len(data)))  # other bytes
        store = Store(tmp_path / "home")
        store.ensure_layout()
        blob = store.blob_path(locked.sha256)
        if model.registry.keeps_locked_bytes:
            ensure_blob(model.source(), resolution.revision, locked, store)
            assert blob.read_bytes() == data
        else:
            with pytest.raises((IntegrityError, SourceError)) as refused:
                ensure_blob(model.source(), resolution.revision, locked, store)
            assert locked.path in str(refused.value) and not blob.exists()


class RemoteSourceContract(SourceContract):
    """A source that talks to a registry: offline, it refuses by name."""

    def test_offline_nothing_reaches_the_registry(self, model: Published, tmp_path: Path) -> None:
        """Offline, resolving is refused by name; a fetch is refused too, or served from
        what the source already keeps locally (an archive fetched at lock time) — either
        way without a request to the registry."""
        resolution, listed = model.resolved()
        offline = model.source(offline=True)
        before = model.registry.requests_served()
        with pytest.raises(SourceError, match="offline mode"):
            offline.resolve()
        path = min(model.files)
        dest = tmp_path / "offline-fetch"
        try:
            offline.fetch(resolution.revision, listed[path], dest)
        except SourceError as exc:
            assert "offline mode" in exc.message
        else:
            assert dest.read_bytes() == model.files[path]
        assert model.registry.requests_served() == before


class AuthSourceContract(RemoteSourceContract):
    """A registry with credentials: refusals name where they come from, never the secret."""

    @pytest.fixture
    def credential(self, registry: ContractRegistry) -> Iterator[str]:
        """The env var of the registry's credential, restored afterwards."""
        env = registry.token_env
        assert env, "set ContractRegistry.token_env for AuthSourceContract"
        saved = os.environ.get(env)
        yield env
        if saved is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = saved

    def test_missing_and_rejected_credentials_name_the_env_var_never_the_secret(
        self, model: Published, credential: str
    ) -> None:
        model.registry.require_token("right-token")
        os.environ.pop(credential, None)
        with pytest.raises(AuthenticationError) as missing:
            model.source().resolve()
        assert f"${credential}" in str(missing.value)
        os.environ[credential] = "wrong-SECRET-token"
        with pytest.raises(AuthenticationError) as rejected:
            model.source().resolve()
        assert f"${credential}" in str(rejected.value) and "SECRET" not in str(rejected.value)
        os.environ[credential] = "right-token"
        assert model.source().resolve().files
