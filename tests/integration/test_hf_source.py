"""HfSource against the hub emulator: real HTTP, the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from modelmora.errors import (
    AuthenticationError,
    SourceError,
    SourceNotFoundError,
    UserInputError,
)
from modelmora.sources import RegistryConfig, RemoteFile, SourceContext, make_source
from modelmora.sources.hf import HfSource
from modelmora.testing.hub_emulator import HubEmulator
from modelmora.testing.source_contract import (
    AuthSourceContract,
    ContractRegistry,
    HubRegistry,
)

CONFIG_V1 = json.dumps({"model_type": "bert", "hidden_size": 32}).encode()
CONFIG_V2 = json.dumps({"model_type": "bert", "hidden_size": 64}).encode()
WEIGHTS = bytes(range(256)) * 40
BIG = hashlib.sha256(b"big").digest() * (2_500_000 // 32)
SECRET = "hf_SECRETTOKEN123"


@dataclass(frozen=True)
class Hub:
    emulator: HubEmulator
    v1: str
    v2: str
    dev: str
    big: str


@pytest.fixture(autouse=True)
def _clean_hf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "MY_HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repos(hub: HubEmulator) -> Hub:
    """Three repos; ``acme/bert-tiny`` has a tag, a branch and two commits on main."""
    v1 = hub.create_repo(
        "acme/bert-tiny",
        {
            "config.json": CONFIG_V1,
            "model.safetensors": WEIGHTS,
            "tokenizer.json": b"{}",
            "vocab.txt": b"[PAD]\n[UNK]\n",
            "pytorch_model.bin": WEIGHTS,
            "onnx/model.onnx": WEIGHTS[:100],
            "README.md": b"# tiny",
        },
        metadata={"pipeline_tag": "feature-extraction", "library_name": "transformers"},
    )
    hub.create_tag("acme/bert-tiny", "v1.0", revision=v1)
    hub.create_branch("acme/bert-tiny", "dev", revision=v1)
    dev = hub.commit("acme/bert-tiny", {"dev-notes.txt": b"wip"}, branch="dev")
    v2 = hub.commit("acme/bert-tiny", {"config.json": CONFIG_V2}, delete=("vocab.txt",))
    big = hub.create_repo("acme/big", {"config.json": CONFIG_V1, "model.safetensors": BIG})
    hub.create_repo("solo-model", {"config.json": CONFIG_V1})
    return Hub(hub, v1=v1, v2=v2, dev=dev, big=big)


def context(
    tmp_path: Path,
    endpoint: str | None,
    *,
    timeout_s: float = 5.0,
    max_retries: int = 2,
    offline: bool = False,
    **registry: object,
) -> SourceContext:
    reg = RegistryConfig(endpoint=endpoint, **registry)
    return SourceContext(
        project_dir=tmp_path,
        registries={"hf": reg},
        timeout_s=timeout_s,
        max_retries=max_retries,
        offline=offline,
    )


def source(location: str, ctx: SourceContext, **kwargs: object) -> HfSource:
    return HfSource(location, ctx, **kwargs)  # type: ignore[arg-type]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_resolve_main_with_default_includes(repos: Hub, tmp_path: Path) -> None:
    res = source("acme/bert-tiny", context(tmp_path, repos.emulator.url)).resolve()
    assert res.revision == repos.v2
    assert res.metadata == {"pipeline_tag": "feature-extraction", "library_name": "transformers"}
    assert res.files == (
        RemoteFile(path="config.json", size=len(CONFIG_V2), sha256=None),
        RemoteFile(path="model.safetensors", size=len(WEIGHTS), sha256=sha256(WEIGHTS)),
        RemoteFile(path="tokenizer.json", size=2, sha256=None),
    )


def test_tag_branch_and_sha_resolve_to_their_commits(repos: Hub, tmp_path: Path) -> None:
    ctx = context(tmp_path, repos.emulator.url)
    tagged = source("acme/bert-tiny@v1.0", ctx).resolve()
    assert tagged.revision == repos.v1
    assert {f.path: f.size for f in tagged.files}["config.json"] == len(CONFIG_V1)
    assert "vocab.txt" in {f.path for f in tagged.files}
    branch = source("acme/bert-tiny@dev", ctx).resolve()
    assert branch.revision == repos.dev
    assert "dev-notes.txt" in {f.path for f in branch.files}
    by_sha = source(f"acme/bert-tiny@{repos.v1}", ctx).resolve()
    assert by_sha.revision == repos.v1 and by_sha.files == tagged.files
    solo = source("solo-model", ctx).resolve()
    assert [f.path for f in solo.files] == ["config.json"]


def test_pinned_revision_stays_pinned_when_branch_moves(repos: Hub, tmp_path: Path) -> None:
    src = source("acme/big", context(tmp_path, repos.emulator.url))
    first = src.resolve()
    moved = repos.emulator.commit("acme/big", {"config.json": CONFIG_V2})
    pinned = src.resolve(pinned_revision=first.revision)
    assert pinned == first
    assert src.resolve().revision == moved != first.revision


def test_include_and_exclude(repos: Hub, tmp_path: Path) -> None:
    src = source(
        "acme/bert-tiny@v1.0",
        context(tmp_path, repos.emulator.url),
        include=["*.json", "onnx/*", "*.bin"],
        exclude=["tokenizer*"],
    )
    assert [f.path for f in src.resolve().files] == [
        "config.json",
        "onnx/model.onnx",
        "pytorch_model.bin",
    ]


def test_include_matching_nothing_lists_available_files(repos: Hub, tmp_path: Path) -> None:
    src = source("acme/bert-tiny", context(tmp_path, repos.emulator.url), include=["*.gguf"])
    with pytest.raises(SourceError, match="include patterns matched no files") as err:
        src.resolve()
    assert "config.json" in str(err.value) and "*.gguf" in str(err.value)


def test_repo_and_revision_not_found(repos: Hub, tmp_path: Path) -> None:
    ctx = context(tmp_path, repos.emulator.url)
    with pytest.raises(SourceNotFoundError, match="repository not found at") as repo_err:
        source("acme/nope", ctx).resolve()
    assert repo_err.value.exit_code == 2
    assert repos.emulator.url in str(repo_err.value)
    with pytest.raises(SourceNotFoundError, match="revision 'v9' not found") as rev_err:
        source("acme/bert-tiny@v9", ctx).resolve()
    assert rev_err.value.exit_code == 2


def test_bad_location_is_user_input_error(tmp_path: Path) -> None:
    ctx = context(tmp_path, "http://127.0.0.1:9")
    for bad in ("not a repo", "org/name@", "a/b/c", "../x"):
        with pytest.raises(UserInputError, match="invalid hf source"):
            source(bad, ctx)


def _chain(exc: BaseException) -> str:
    """Every message in the exception chain, so a token cannot hide in a cause."""
    parts = []
    current: BaseException | None = exc
    while current is not None:
        parts.append(f"{current!s} {current!r}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def test_missing_token_names_the_env_var(repos: Hub, tmp_path: Path) -> None:
    repos.emulator.require_token(SECRET)
    ctx = context(tmp_path, repos.emulator.url, token_env="MY_HF_TOKEN")
    with pytest.raises(AuthenticationError) as err:
        source("acme/bert-tiny", ctx).resolve()
    assert err.value.exit_code == 2
    assert "$MY_HF_TOKEN" in str(err.value) and "requires authentication" in str(err.value)


def test_wrong_token_is_named_by_env_var_never_shown(
    repos: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repos.emulator.require_token("hf_the_right_one")
    monkeypatch.setenv("HF_TOKEN", SECRET)  # no token in the manifest: HF_TOKEN is used
    src = source("acme/bert-tiny", context(tmp_path, repos.emulator.url))
    with pytest.raises(AuthenticationError) as err:
        src.resolve()
    assert "rejected the token from $HF_TOKEN" in str(err.value)
    assert SECRET not in _chain(err.value)
    file = RemoteFile(path="config.json", size=len(CONFIG_V2))
    with pytest.raises(AuthenticationError) as fetch_err:
        src.fetch(repos.v2, file, tmp_path / "out")
    assert SECRET not in _chain(fetch_err.value)
    assert "$HF_TOKEN" in str(fetch_err.value)


def test_registry_token_is_sent(repos: Hub, tmp_path: Path) -> None:
    repos.emulator.require_token(SECRET)
    ctx = context(tmp_path, repos.emulator.url, token=SecretStr(SECRET), token_env="MY_HF_TOKEN")
    src = source("acme/bert-tiny", ctx)
    res = src.resolve()
    dest = tmp_path / "config.json"
    src.fetch(res.revision, res.files[0], dest)
    assert dest.read_bytes() == CONFIG_V2


@pytest.mark.timeout(30)
def test_unreachable_hub_fails_after_bounded_retries(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    src = source("acme/bert-tiny", context(tmp_path, endpoint, timeout_s=1, max_retries=2))
    with pytest.raises(SourceError, match=r"unreachable at .* after 3 attempts") as err:
        src.resolve()
    assert endpoint in str(err.value) and "refused" in str(err.value).lower()
    with pytest.raises(SourceError, match="after 3 attempts"):
        src.fetch("a" * 40, RemoteFile(path="config.json", size=3), tmp_path / "out")


@pytest.mark.timeout(30)
def test_slow_hub_times_out_with_clear_error(repos: Hub, tmp_path: Path) -> None:
    repos.emulator.delay_s = 30.0
    src = source("acme/big", context(tmp_path, repos.emulator.url, timeout_s=0.3, max_retries=1))
    with pytest.raises(SourceError, match=r"after 2 attempts: timed out after 0\.3 s"):
        src.resolve()
    with pytest.raises(SourceError, match="timed out"):
        src.fetch(repos.big, RemoteFile(path="config.json", size=1), tmp_path / "out")


def test_transient_5xx_is_retried(repos: Hub, tmp_path: Path) -> None:
    hub = repos.emulator
    src = source("acme/big", context(tmp_path, hub.url, max_retries=2))
    hub.requests.clear()
    hub.fail_next(2, status=503)
    assert src.resolve().revision == repos.big
    assert [r.status for r in hub.requests] == [503, 503, 200]
    hub.fail_next(3, status=502)
    with pytest.raises(SourceError, match="after 3 attempts: HTTP 502"):
        src.resolve()


@pytest.mark.parametrize("evil", ["../escape.json", "/etc/evil.json", "a/../../b.json"])
def test_malicious_file_names_are_refused(hub: HubEmulator, tmp_path: Path, evil: str) -> None:
    hub.create_repo("evil/model", {"config.json": b"{}", evil: b"{}"}, unsafe_paths_ok=True)
    with pytest.raises(SourceError, match="refusing file") as err:
        source("evil/model", context(tmp_path, hub.url)).resolve()
    assert evil in str(err.value)


def test_fetch_streams_bytes_and_reports_progress(repos: Hub, tmp_path: Path) -> None:
    src = source("acme/big", context(tmp_path, repos.emulator.url))
    res = src.resolve()
    weights = {f.path: f for f in res.files}["model.safetensors"]
    assert weights.sha256 == sha256(BIG)
    seen: list[int] = []
    dest = tmp_path / "model.safetensors"
    src.fetch(res.revision, weights, dest, progress=seen.append)
    assert dest.read_bytes() == BIG
    assert sum(seen) == len(BIG) == weights.size


def test_fetch_retries_a_5xx_and_uses_the_pinned_commit(repos: Hub, tmp_path: Path) -> None:
    hub = repos.emulator
    src = source("acme/bert-tiny", context(tmp_path, hub.url))
    hub.fail_next(1, status=500)
    dest = tmp_path / "config.json"
    src.fetch(repos.v1, RemoteFile(path="config.json", size=len(CONFIG_V1)), dest)
    assert dest.read_bytes() == CONFIG_V1  # main moved on, the pin did not
    assert [r.status for r in hub.requests][-2:] == [500, 200]


def test_fetch_missing_file(repos: Hub, tmp_path: Path) -> None:
    src = source("acme/bert-tiny", context(tmp_path, repos.emulator.url))
    with pytest.raises(SourceNotFoundError, match=r"file 'gone\.json' not found"):
        src.fetch(repos.v2, RemoteFile(path="gone.json", size=1), tmp_path / "gone")


def test_fetch_is_a_pure_byte_pump(repos: Hub, tmp_path: Path) -> None:
    """Corrupted bytes come through unverified: verification is the caller's job."""
    repos.emulator.corrupt("acme/big", "model.safetensors")
    src = source("acme/big", context(tmp_path, repos.emulator.url))
    dest = tmp_path / "bad"
    src.fetch(repos.big, RemoteFile(path="model.safetensors", size=len(BIG)), dest)
    assert dest.stat().st_size == len(BIG)
    assert sha256(dest.read_bytes()) != sha256(BIG)


def test_offline_refuses_to_resolve(
    repos: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repos.emulator.requests.clear()
    ctx = context(tmp_path, repos.emulator.url, offline=True)
    with pytest.raises(SourceError, match="offline mode") as err:
        source("acme/big", ctx).resolve(pinned_revision=repos.big)
    assert "existing lock" in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError, match="offline"):
        source("acme/big", context(tmp_path, repos.emulator.url)).resolve()
    assert len(repos.emulator.requests) == 0


def test_hf_endpoint_env_and_make_source(
    repos: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", repos.emulator.url)
    ctx = SourceContext(project_dir=tmp_path)
    src = make_source(
        {"source": "hf://acme/bert-tiny@v1.0", "files": {"include": ["vocab.txt"]}}, ctx
    )
    assert isinstance(src, HfSource)
    res = src.resolve()
    assert (res.revision, [f.path for f in res.files]) == (repos.v1, ["vocab.txt"])


# -- the source contract (modelmora.testing.source_contract) ---------------------------
class TestHfSourceContract(AuthSourceContract):
    @pytest.fixture
    def registry(self, hub: HubEmulator) -> ContractRegistry:
        return HubRegistry(hub, "hf")
