"""``wandb://`` against an *emulation* of the W&B HTTP contract, not a real W&B server.

No W&B server can run here, so these tests check our resolver against
:class:`~modelmora.testing.wandb_emulator.WandbEmulator`: the GraphQL subset and download
routes the ``wandb`` client uses, written from its source (see the emulator's docstring).
They prove that locking pins an alias to a version, that downloads are verified and never
leak the API key to the storage host, and that every failure has one clear message; they
cannot prove that W&B answers exactly like the emulator.

The artifact holds a tiny ONNX graph (``onnx.helper``), which ``install`` passes through
unchanged and validates.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr

from modelmora.cli import main
from modelmora.errors import AuthenticationError
from modelmora.lock import read_lock
from modelmora.sources.base import RegistryConfig, RemoteFile, SourceContext
from modelmora.sources.wandb import WandbSource
from modelmora.testing.cli import run_cli
from modelmora.testing.source_contract import AuthSourceContract, ContractRegistry, WandbRegistry
from modelmora.testing.tiny_models import LINEAR_W, check_linear_install, linear_onnx
from modelmora.testing.wandb_emulator import PublishedVersion, WandbEmulator

pytestmark = [pytest.mark.torch_free, pytest.mark.timeout(120)]

KEY = "0123456789abcdef0123456789abcdef01234567"
LABELS = b"negative\nneutral\npositive\n"
SOURCE = "wandb://acme/vision/tiny-linear"


@pytest.fixture
def wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WandbEmulator]:
    """An emulator requiring ``KEY``; one file per GraphQL page, so listings paginate."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELMORA_HOME", str(tmp_path / "home"))
    with WandbEmulator(api_key=KEY, page_size=1) as emulator:
        yield emulator


@pytest.fixture
def v0(wandb: WandbEmulator) -> PublishedVersion:
    """``tiny-linear`` v0 (aliases latest, production)."""
    files = {"model.onnx": linear_onnx(), "labels.txt": LABELS}
    return wandb.publish("acme", "vision", "tiny-linear", files, aliases=["production"])


def write_project(
    root: Path, source: str, registry: str = "{endpoint: '${WB_URL}'}", block: str = "wandb"
) -> Path:
    """A one-model project; a ``block`` other than ``wandb`` is chosen with ``registry:``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelmora.yml").write_text(
        f"registries:\n  {block}: {registry}\nmodels:\n  linear:\n    source: {source}\n"
        + (f"    registry: {block}\n" if block != "wandb" else "")
        + "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
    )
    return root


def lock(root: Path, wandb: WandbEmulator, *args: str, key: str | None = KEY) -> Result:
    env = {"WB_URL": wandb.url, "WANDB_API_KEY": key}
    return CliRunner(env=env).invoke(main, ["-C", str(root), "lock", *args])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lock_pins_the_alias_to_a_version_until_upgrade(
    wandb: WandbEmulator, v0: PublishedVersion, tmp_path: Path
) -> None:
    v1 = wandb.publish(
        "acme",
        "vision",
        "tiny-linear",
        {"model.onnx": linear_onnx(LINEAR_W * 2), "labels.txt": LABELS},
    )  # latest → v1; production stays on v0
    root = write_project(tmp_path / "proj", f"{SOURCE}:production")

    result = lock(root, wandb)
    assert result.exit_code == 0, result.output
    entry = read_lock(root / "modelmora.lock").models["linear"]
    assert entry.revision == "v0"
    assert entry.metadata == {"wandb_artifact_id": v0.id, "wandb_digest": v0.digest}
    files = {f.path: (f.size, f.sha256) for f in entry.files}
    assert files == {
        "labels.txt": (len(LABELS), sha256(LABELS)),
        "model.onnx": (len(linear_onnx()), sha256(linear_onnx())),
    }
    text = (root / "modelmora.lock").read_text()
    assert KEY not in text and "Signature" not in text and wandb.url not in text

    # The alias moves: the lock keeps v0 and does not even ask W&B.
    wandb.set_alias("acme", "vision", "tiny-linear", "production", "v1")
    wandb.requests.clear()
    assert lock(root, wandb).exit_code == 0
    assert read_lock(root / "modelmora.lock").models["linear"].revision == "v0"
    assert len(wandb.requests) == 0

    # A new file selection re-resolves the *locked* version by name, not the alias.
    manifest = root / "modelmora.yml"
    manifest.write_text(manifest.read_text() + "    files: {include: ['*.onnx']}\n")
    assert lock(root, wandb).exit_code == 0
    entry = read_lock(root / "modelmora.lock").models["linear"]
    assert entry.revision == "v0" and entry.metadata["wandb_artifact_id"] == v0.id
    assert [(f.path, f.sha256) for f in entry.files] == [("model.onnx", sha256(linear_onnx()))]

    upgraded = lock(root, wandb, "--upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    entry = read_lock(root / "modelmora.lock").models["linear"]
    assert (entry.revision, entry.metadata["wandb_artifact_id"]) == ("v1", v1.id)
    assert [f.sha256 for f in entry.files] == [sha256(linear_onnx(LINEAR_W * 2))]


def test_install_passes_the_onnx_graph_through_and_validates_it(
    wandb: WandbEmulator, v0: PublishedVersion, tmp_path: Path
) -> None:
    """Lock, download (from the storage host, which refuses any API key) and validate."""
    root = write_project(tmp_path / "proj", SOURCE)  # no alias: latest
    proc = run_cli(
        root,
        "install",
        "--json",
        env={"WB_URL": wandb.url, "WANDB_API_KEY": KEY},
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_lock(root / "modelmora.lock").models["linear"].revision == "v0"
    check_linear_install(proc.stdout)
    downloads = [r for r in wandb.requests if r.path.startswith("/wandb-artifacts/")]
    assert downloads and all(r.status == 200 for r in downloads)


def test_pull_refuses_bytes_changed_since_lock(
    wandb: WandbEmulator, v0: PublishedVersion, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "proj", f"{SOURCE}:v0")
    assert lock(root, wandb).exit_code == 0
    wandb.tamper("acme", "vision", "tiny-linear", "v0", "model.onnx", linear_onnx(LINEAR_W * 3))
    proc = run_cli(root, "pull", env={"WB_URL": wandb.url, "WANDB_API_KEY": KEY}, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "linear/model.onnx: downloaded bytes do not match the lock" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lock_checks_the_published_md5_of_what_it_hashes(
    wandb: WandbEmulator, v0: PublishedVersion, tmp_path: Path
) -> None:
    wandb.tamper("acme", "vision", "tiny-linear", "v0", "labels.txt", b"negative\nneutral\n!!!\n")
    root = write_project(tmp_path / "proj", SOURCE)
    result = lock(root, wandb)
    assert result.exit_code == 1, result.output
    assert "labels.txt: downloaded bytes do not match the md5 W&B published" in result.output
    assert not (root / "modelmora.lock").exists()


def test_url_fallback_sends_the_key_to_the_api_host_and_resumes_with_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``directUrl`` files come from ``url`` on the API host, which needs the key."""
    with WandbEmulator(api_key=KEY, direct_urls=False) as wandb:
        wandb.publish("acme", "vision", "tiny-linear", {"model.onnx": linear_onnx()})
        context = SourceContext(
            project_dir=tmp_path,
            registries={"wandb": RegistryConfig(endpoint=wandb.url, token=SecretStr(KEY))},
        )
        source = WandbSource("acme/vision/tiny-linear", context)
        resolution = source.resolve()
        (file,) = resolution.files
        data = linear_onnx()
        dest = tmp_path / "partial"
        dest.write_bytes(data[:100])
        wandb.requests.clear()
        source.fetch(resolution.revision, file, dest, offset=100)
        assert dest.read_bytes() == data
        (download,) = wandb.requests
        assert download.path.startswith("/artifactsV2/default/acme/")
        assert (download.range, download.status) == ("bytes=100-", 206)

        # No registry block and no key: WANDB_BASE_URL names the endpoint.
        monkeypatch.setenv("WANDB_BASE_URL", wandb.url)
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        anonymous = WandbSource("acme/vision/tiny-linear", SourceContext(project_dir=tmp_path))
        with pytest.raises(AuthenticationError, match=r"requires an API key") as failure:
            anonymous.fetch(
                resolution.revision, RemoteFile(path="model.onnx", size=len(data)), dest
            )
        assert failure.value.hint == "set $WANDB_API_KEY to a W&B API key (wandb.ai/authorize)"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("wandb://acme/nope/tiny-linear", "project acme/nope not found at"),
        ("wandb://acme/vision/missing:latest", "no artifact 'missing' in project acme/vision"),
        ("wandb://acme/vision/tiny-linear:staging", "alias 'staging' not found at"),
        ("wandb://acme/vision/tiny-linear:v7", "alias 'v7' not found at"),
        ("wandb://acme/tiny-linear", "expected wandb://ENTITY/PROJECT/ARTIFACT[:ALIAS]"),
        ("wandb://acme/vision/tiny-linear:a:b", "expected wandb://ENTITY/PROJECT/ARTIFACT"),
    ],
)
def test_bad_specs_fail_clearly_and_write_no_lock(
    wandb: WandbEmulator, v0: PublishedVersion, tmp_path: Path, source: str, message: str
) -> None:
    root = write_project(tmp_path / "proj", source)
    result = lock(root, wandb)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    if "staging" in source:
        assert "aliases of tiny-linear: latest, production" in result.output
    assert not (root / "modelmora.lock").exists()


def test_missing_and_invalid_keys_name_the_env_var(
    wandb: WandbEmulator, v0: PublishedVersion, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "proj", SOURCE)
    missing = lock(root, wandb, key=None)
    assert missing.exit_code == 2, missing.output
    assert "requires an API key (HTTP 401)" in missing.output
    assert "set $WANDB_API_KEY" in missing.output

    # A key from a registry block chosen by `registry:`: errors name its env var, not the key.
    write_project(root, SOURCE, "{endpoint: '${WB_URL}', token: '${TEAM_WB_KEY}'}", "team-wb")
    bad = "f" * 40
    result = CliRunner(env={"WB_URL": wandb.url, "TEAM_WB_KEY": bad}).invoke(
        main, ["-C", str(root), "lock"]
    )
    assert result.exit_code == 2, result.output
    assert "rejected the API key from $TEAM_WB_KEY (HTTP 401)" in result.output
    assert bad not in result.output and not (root / "modelmora.lock").exists()


def test_unreachable_offline_and_pending_fail_with_exit_1(
    wandb: WandbEmulator, v0: PublishedVersion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    root = write_project(tmp_path / "proj", SOURCE, f"{{endpoint: '{dead}'}}")
    result = lock(root, wandb)
    assert result.exit_code == 1, result.output
    assert f"W&B unreachable at {dead} after 4 attempts" in result.output

    wandb.publish("acme", "vision", "tiny-linear", {"model.onnx": b"half"})
    wandb.set_state("acme", "vision", "tiny-linear", "v1", "PENDING")
    root = write_project(tmp_path / "proj2", SOURCE)
    result = lock(root, wandb)
    assert result.exit_code == 1, result.output
    assert "version v1 is pending, not committed" in result.output

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wandb.requests.clear()
    result = lock(write_project(tmp_path / "proj3", SOURCE), wandb)
    assert result.exit_code == 1, result.output
    assert "cannot resolve 'latest' in offline mode" in result.output
    assert len(wandb.requests) == 0


class TestWandbSourceContract(AuthSourceContract):
    @pytest.fixture
    def registry(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[ContractRegistry]:
        for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        with WandbEmulator() as emulator:
            yield WandbRegistry(emulator)
