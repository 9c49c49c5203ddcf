"""``torchhub://`` against real git servers: ``git daemon`` on 127.0.0.1 and a local directory.

The hub repository is a real git repository built by the test: ``hubconf.py`` with a tiny
``nn.Module`` entry whose weights live in the repository as safetensors (pickle-free), plus
the ``ENTRY_example_inputs()`` convention. Locking pins the commit and every file's sha256;
moving the branch keeps the pin; ``install`` runs hubconf.py (trusted), exports with
``torch.onnx`` and passes the validation gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import socketserver
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from modelmora.cli import main
from modelmora.convert import convert
from modelmora.errors import UserInputError
from modelmora.lock import read_lock
from modelmora.manifest.model import ConvertSpec
from modelmora.sources import RegistryConfig, SourceContext
from modelmora.testing.servers import BackgroundServer
from modelmora.testing.source_contract import ContractRegistry, RemoteSourceContract

pytestmark = pytest.mark.timeout(300)

HUBCONF = '''\
"""A torch.hub repo: one entry, weights in the repo as safetensors."""
import os

import torch
from safetensors.torch import load_file

dependencies = ["torch", "safetensors"]


def _ran() -> None:
    marker = os.environ.get("HUBCONF_RAN")
    if marker:
        open(marker, "a").close()


_ran()


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.tanh(self.fc(x))


def tiny(pretrained: bool = True) -> torch.nn.Module:
    model = Tiny()
    if pretrained:
        here = os.path.dirname(__file__)
        model.load_state_dict(load_file(os.path.join(here, "weights.safetensors")))
    return model


def tiny_example_inputs():
    return {"x": torch.zeros(2, 4)}
'''


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.strip()


def weights(seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """safetensors bytes of a Linear(4, 3) plus its weight and bias as numpy."""
    import torch
    from safetensors.torch import save

    gen = torch.Generator().manual_seed(seed)
    w, b = torch.randn(3, 4, generator=gen), torch.randn(3, generator=gen)
    return save({"fc.weight": w, "fc.bias": b}), w.numpy(), b.numpy()


@pytest.fixture
def repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``repos/acme/tinyhub``: commit c1 (tagged v1, annotated) on main."""
    monkeypatch.setenv("MODELMORA_HOME", str(tmp_path / "home"))
    repo = tmp_path / "repos" / "acme" / "tinyhub"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "hubconf.py").write_text(HUBCONF)
    (repo / "weights.safetensors").write_bytes(weights(0)[0])
    (repo / "README.md").write_text("# tiny hub\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "c1")
    git(repo, "tag", "-a", "v1", "-m", "release 1")
    return tmp_path / "repos"


class _Daemon(socketserver.ThreadingTCPServer):
    daemon_threads = True
    base: Path


class _Inetd(socketserver.BaseRequestHandler):
    """Each connection is served by a real ``git daemon --inetd`` process."""

    server: _Daemon

    def handle(self) -> None:
        base = str(self.server.base)
        subprocess.run(
            ["git", "daemon", "--inetd", "--export-all", f"--base-path={base}", base],
            stdin=self.request.fileno(),
            stdout=self.request.fileno(),
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )


@pytest.fixture
def git_daemon(repos: Path) -> Iterator[str]:
    """``git://127.0.0.1:PORT`` serving ``repos/`` (ephemeral port, no port race)."""
    server = _Daemon(("127.0.0.1", 0), _Inetd)
    server.base = repos
    with BackgroundServer(server, "git-daemon") as running:
        yield running.url("git")


def project(tmp_path: Path, endpoint: str, source: str, *, trust: bool = True) -> Path:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "modelmora.yml").write_text(
        f"registries:\n  torchhub: {{endpoint: '{endpoint}'}}\n"
        f"models:\n  tiny:\n    source: {source}\n"
        + ("    trust_remote_code: true\n" if trust else "")
        + "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
    )
    return root


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-C", str(root), *args], catch_exceptions=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lock_pins_commit_and_files_and_keeps_the_pin_when_main_moves(
    repos: Path, git_daemon: str, tmp_path: Path
) -> None:
    repo = repos / "acme" / "tinyhub"
    c1 = git(repo, "rev-parse", "HEAD")
    root = project(tmp_path, git_daemon, "torchhub://acme/tinyhub:main/tiny")

    result = run(root, "lock")
    assert result.exit_code == 0, result.output
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.revision == c1
    files = {f.path: f for f in entry.files}
    assert sorted(files) == [
        "README.md",
        "hubconf.py",
        "modelmora_torchhub.json",
        "weights.safetensors",
    ]
    for name in ("README.md", "hubconf.py", "weights.safetensors"):
        data = (repo / name).read_bytes()
        assert (files[name].size, files[name].sha256) == (len(data), sha256(data))
    assert entry.metadata == {"torchhub_entry": "tiny"}
    assert git_daemon not in (root / "modelmora.lock").read_text()

    (repo / "weights.safetensors").write_bytes(weights(1)[0])
    git(repo, "commit", "-q", "-am", "c2: retrained")
    c2 = git(repo, "rev-parse", "HEAD")
    assert run(root, "lock").exit_code == 0
    assert read_lock(root / "modelmora.lock").models["tiny"].revision == c1

    # A changed selection re-resolves at the *locked* commit, not at the moved branch.
    manifest = root / "modelmora.yml"
    manifest.write_text(
        manifest.read_text().replace(
            "    trust_remote_code: true\n",
            "    trust_remote_code: true\n    files: {exclude: ['*.md']}\n",
        )
    )
    assert run(root, "lock").exit_code == 0
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.revision == c1 and "README.md" not in {f.path for f in entry.files}
    weights_c1 = {f.path: f for f in entry.files}["weights.safetensors"]
    assert weights_c1.sha256 == sha256(weights(0)[0])

    upgraded = run(root, "lock", "--upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.revision == c2
    assert {f.path: f for f in entry.files}["weights.safetensors"].sha256 == sha256(weights(1)[0])


def test_annotated_tag_resolves_to_its_commit_and_pull_fetches_verified_bytes(
    repos: Path, git_daemon: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repos / "acme" / "tinyhub"
    c1 = git(repo, "rev-parse", "HEAD")
    git(repo, "commit", "-q", "--allow-empty", "-m", "after the tag")
    root = project(tmp_path, git_daemon, "torchhub://acme/tinyhub:v1/tiny")
    assert run(root, "lock").exit_code == 0
    assert read_lock(root / "modelmora.lock").models["tiny"].revision == c1

    # A fresh cache must fetch the commit again from the server, then verify every byte.
    home = tmp_path / "home2"
    result = CliRunner(env={"MODELMORA_HOME": str(home)}).invoke(
        main, ["-C", str(root), "pull", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    snapshot = Path(json.loads(result.output)["models"][0]["snapshot"])
    assert (snapshot / "hubconf.py").read_text() == HUBCONF
    descriptor = json.loads((snapshot / "modelmora_torchhub.json").read_text())
    assert descriptor == {"commit": c1, "entry": "tiny", "format": 1, "repo": "acme/tinyhub"}

    # Locking and pulling never ran hubconf.py; converting without trust refuses to.
    marker = tmp_path / "hubconf-ran"
    monkeypatch.setenv("HUBCONF_RAN", str(marker))
    with pytest.raises(UserInputError, match="trust_remote_code: true"):
        convert(snapshot, tmp_path / "out", name="tiny", task=None, spec=ConvertSpec())
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cache_gc_deletes_the_git_mirror_once_the_pull_is_complete(
    repos: Path, git_daemon: str, tmp_path: Path
) -> None:
    root = project(tmp_path, git_daemon, "torchhub://acme/tinyhub/tiny")
    assert run(root, "lock").exit_code == 0
    assert run(root, "pull").exit_code == 0
    home = Path(os.environ["MODELMORA_HOME"])
    (mirror,) = (home / "git").glob("*.git")

    result = run(root, "cache", "gc", "--json")
    assert result.exit_code == 0, result.output
    removed = json.loads(result.output)["source_caches"]
    assert [r["path"] for r in removed] == [f"git/{mirror.name}"] and removed[0]["size"] > 0
    assert not mirror.exists()
    assert run(root, "pull", "--offline").exit_code == 0  # the snapshot needs only blobs


@pytest.mark.parametrize(
    ("source", "trust", "code", "message"),
    [
        ("torchhub://acme/tinyhub/tiny", False, 2, "trust_remote_code: true"),
        ("torchhub://acme/tinyhub:nope/tiny", True, 2, "ref 'nope' not found"),
        (
            "torchhub://acme/tinyhub/resnet",
            True,
            2,
            "defines no entry 'resnet' (functions: tiny, tiny_example_inputs)",
        ),
        ("torchhub://acme/missing/tiny", True, 2, "torchhub://acme/missing: repository not found"),
        ("torchhub://acme/tinyhub", True, 2, "expected torchhub://OWNER/REPO[:REF]/ENTRY"),
    ],
)
def test_bad_specs_fail_clearly_and_write_no_lock(
    repos: Path, git_daemon: str, tmp_path: Path, source: str, trust: bool, code: int, message: str
) -> None:
    root = project(tmp_path, git_daemon, source, trust=trust)
    result = run(root, "lock")
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (root / "modelmora.lock").exists()


def test_add_sets_trust_remote_code_and_registry_then_locks(
    repos: Path, git_daemon: str, tmp_path: Path
) -> None:
    """`modelmora add` can write the two fields a torchhub model needs, then lock it."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "modelmora.yml").write_text(
        f"registries:\n  mirror: {{endpoint: '{git_daemon}'}}\nmodels: {{}}\n"
    )
    refused = run(root, "add", "torchhub://acme/tinyhub/tiny", "--registry", "mirror")
    assert refused.exit_code == 2 and "trust_remote_code: true" in refused.output
    assert "tinyhub" not in (root / "modelmora.yml").read_text()  # restored

    added = run(
        root, "add", "torchhub://acme/tinyhub:v1/tiny", "--name", "tiny",
        "--registry", "mirror", "--trust-remote-code",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    spec = yaml.safe_load((root / "modelmora.yml").read_text())["models"]["tiny"]
    assert spec == {
        "source": "torchhub://acme/tinyhub:v1/tiny",
        "registry": "mirror",
        "trust_remote_code": True,
    }
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.spec["trust_remote_code"] is True and len(entry.revision) == 40


def test_install_runs_hubconf_exports_with_torch_and_passes_the_gate(
    repos: Path, tmp_path: Path
) -> None:
    """A plain directory of repositories as the endpoint; install in a real CLI process."""
    root = project(tmp_path, str(repos), "torchhub://acme/tinyhub/tiny")
    home = os.environ["MODELMORA_HOME"]
    proc = subprocess.run(
        [sys.executable, "-m", "modelmora", "-C", str(root), "install", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "MODELMORA_HOME": home, "HUBCONF_RAN": str(tmp_path / "ran")},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    model = json.loads(proc.stdout)["models"][0]
    assert model["stages"]["validate"] == "ok", model
    assert (tmp_path / "ran").exists()  # trusted: hubconf.py really built the module
    artifact = model["artifacts"][0]
    assert artifact["validated"] is True and artifact["max_abs_diff"] < 1e-5

    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(artifact["path"]) / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert session.get_inputs()[0].shape[0] == "batch"
    x = np.arange(20, dtype=np.float32).reshape(5, 4) / 10  # batch 5: the axis is dynamic
    (got,) = session.run(None, {"x": x})
    _, w, b = weights(0)  # the repository's weights, not a random init
    np.testing.assert_allclose(got, np.tanh(x @ w.T + b), atol=1e-5)

    snapshots = list((Path(home) / "snapshots").rglob("hubconf.py"))
    assert snapshots and not any(p.parent.joinpath("__pycache__").exists() for p in snapshots)


class TorchHubRegistry(ContractRegistry):
    """A git repository per model behind the ``git daemon`` above. A commit's bytes cannot
    change: ``change`` rewrites the branch instead (amend + move), and the locked commit
    must still give the locked bytes."""

    extra_files = frozenset({"hubconf.py", "modelmora_torchhub.json"})
    keeps_locked_bytes = True

    def __init__(self, repos: Path, endpoint: str, connections: list[int]) -> None:
        self.repos, self.endpoint, self.connections = repos, endpoint, connections

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        repo = self.repos / "acme" / name
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / "hubconf.py").write_text(HUBCONF)
        for path, data in files.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(data)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "c1")
        return {"source": f"torchhub://acme/{name}:main/tiny", "trust_remote_code": True}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        hub = RegistryConfig(endpoint=self.endpoint)
        return SourceContext(project_dir, {"torchhub": hub}, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        repo = self.repos / "acme" / str(spec["source"]).split("/")[3].split(":")[0]
        (repo / path).write_bytes(data)
        git(repo, "commit", "-q", "--amend", "-am", "c1, rewritten")

    def requests_served(self) -> int:
        return len(self.connections)


class TestTorchHubSourceContract(RemoteSourceContract):
    @pytest.fixture
    def registry(self, repos: Path, tmp_path: Path) -> Iterator[ContractRegistry]:
        connections: list[int] = []

        class Counting(_Inetd):
            def handle(self) -> None:
                connections.append(1)
                super().handle()

        server = _Daemon(("127.0.0.1", 0), Counting)
        server.base = repos
        with BackgroundServer(server, "git-daemon") as running:
            yield TorchHubRegistry(repos, running.url("git"), connections)
