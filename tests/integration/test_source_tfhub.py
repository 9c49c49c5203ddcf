"""``tfhub://`` against an emulator of the TF Hub / Kaggle Models HTTP contract.

No real TF Hub or Kaggle can run here, so the test starts a threaded stdlib HTTP server on
127.0.0.1 that emulates the subset of the contract the source uses (the answers kagglehub
and tensorflow_hub rely on):

* ``GET /api/v1/models/OWNER/MODEL/FRAMEWORK/VARIATION/get`` → ``{"versionNumber": N, …}``
  (the latest version), 404 for an unknown instance, 401 without the required basic auth;
* ``GET /api/v1/models/…/VARIATION/VERSION/download`` → a redirect to the ``tar.gz``
  archive of that version (as Kaggle redirects to its storage), 404 for a missing version;
* ``GET /HANDLE/VERSION?tf-hub-format=compressed`` → the archive (tfhub.dev's protocol).

Published versions are plain files under the server's directory, so a test publishes a
new version or swaps an archive's bytes with a file write. Archives are built the way
``tar -C savedmodel -cz .`` builds them (``./`` names, directory entries). Only the
end-to-end install needs TensorFlow: it builds a real tiny SavedModel once per session.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from click.testing import CliRunner, Result

from modelmora.cache import Store, verify_store
from modelmora.cli import main
from modelmora.lock import read_lock
from modelmora.sources import RegistryConfig, SourceContext, make_source
from modelmora.sources.caches import using
from modelmora.testing.servers import BackgroundServer
from modelmora.testing.source_contract import ContractRegistry, RemoteSourceContract

pytestmark = pytest.mark.timeout(300)

KAGGLE = "acme/tiny/tensorFlow2/default"
TFHUB = "acme/imagenet/tiny/feature_vector"


# -- the emulator ------------------------------------------------------------------------


class _Hub(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    credentials: str | None = None
    """``USERNAME:KEY`` the Kaggle API requires (``None``: public)."""
    log: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: _Hub

    def log_message(self, format: str, *args: object) -> None:  # silence stderr
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", **hdrs: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in hdrs.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"code": status, "message": message}).encode())

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.server.log.append(url.path)
        if url.path.startswith("/api/v1/"):
            self._kaggle(url.path)
        elif url.path.startswith("/blobs/"):
            self._blob(self.server.root / url.path.removeprefix("/blobs/"))
        elif parse_qs(url.query).get("tf-hub-format") == ["compressed"]:
            self._blob(self.server.root / "tfhub" / f"{url.path.strip('/')}.tar.gz")
        else:
            self._error(404, "not found")

    def _kaggle(self, path: str) -> None:
        wanted = self.server.credentials
        if wanted is not None:
            expected = "Basic " + base64.b64encode(wanted.encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._error(401, "Unauthenticated")
                return
        if m := re.fullmatch(r"/api/v1/models/((?:[\w.-]+/){3}[\w.-]+)/get", path):
            versions = sorted(
                int(p.name.removesuffix(".tar.gz"))
                for p in (self.server.root / "kaggle" / m[1]).glob("*.tar.gz")
            )
            if not versions:
                self._error(404, "Not found")
                return
            answer = {
                "id": 7,
                "slug": m[1].rsplit("/", 1)[1],
                "framework": "tensorFlow2",
                "versionNumber": versions[-1],
                "licenseName": "Apache 2.0",
            }
            self._send(200, json.dumps(answer).encode())
        elif m := re.fullmatch(r"/api/v1/models/((?:[\w.-]+/){4}\d+)/download", path):
            if (self.server.root / "kaggle" / f"{m[1]}.tar.gz").is_file():
                self._send(302, b"", Location=f"/blobs/kaggle/{m[1]}.tar.gz")
            else:
                self._error(404, "Not found")
        else:
            self._error(404, "Not found")

    def _blob(self, path: Path) -> None:
        if path.is_file():
            self._send(200, path.read_bytes(), "application/x-gzip")
        else:
            self._error(404, "Not found")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Hub]:
    monkeypatch.setenv("MODELMORA_HOME", str(tmp_path / "home"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    server = _Hub(("127.0.0.1", 0), _Handler)  # bound and listening: ready at once
    server.root, server.log = tmp_path / "hub", []
    with BackgroundServer(server, "tfhub"):
        yield server


def endpoint(server: _Hub) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def targz(files: Mapping[str, bytes], *, extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    """A ``tar -C dir -cz .`` style archive: ``./`` names, directory entries, fixed mtimes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        dirs = {"."} | {f"./{p.rsplit('/', 1)[0]}" for p in files if "/" in p}
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(f"./{path}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buf.getvalue()


def model_files(tag: str) -> dict[str, bytes]:
    return {
        "saved_model.pb": f"graph {tag}".encode(),
        "fingerprint.pb": f"fp {tag}".encode(),
        "variables/variables.index": f"index {tag}".encode(),
        "variables/variables.data-00000-of-00001": (tag.encode() * 20_000)[:40_000],
    }


def publish(server: _Hub, where: str, version: int, archive: bytes) -> Path:
    """``kaggle/OWNER/MODEL/FRAMEWORK/VARIATION`` or ``tfhub/HANDLE``, version ``version``."""
    path = server.root / where / f"{version}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    return path


def project(tmp_path: Path, ep: str, source: str, *, registry: str = "") -> Path:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "modelmora.yml").write_text(
        f"registries:\n  tfhub: {{endpoint: '{ep}'{registry}}}\n"
        f"models:\n  tiny:\n    source: {source}\n"
        "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
    )
    return root


def run(root: Path, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, ["-C", str(root), *args], catch_exceptions=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- lock / pull -------------------------------------------------------------------------


def test_lock_pins_the_latest_version_until_upgrade(hub: _Hub, tmp_path: Path) -> None:
    link = tarfile.TarInfo("./variables/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    v1 = targz(model_files("v1"), extra=(link,))
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(model_files("v0")))
    publish(hub, f"kaggle/{KAGGLE}", 2, v1)
    root = project(tmp_path, endpoint(hub), f"tfhub://{KAGGLE}")

    result = run(root, "lock")
    assert result.exit_code == 0, result.output
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.revision == "2"  # the instance's versionNumber, not the first version
    files = {f.path: f for f in entry.files}
    expected = model_files("v1")
    assert sorted(files) == sorted(expected)  # regular members only (no link), './' stripped
    for path, data in expected.items():
        assert (files[path].size, files[path].sha256) == (len(data), sha256(data))
    assert entry.metadata == {
        "tfhub_archive_sha256": sha256(v1),
        "tfhub_archive_size": str(len(v1)),
    }
    assert endpoint(hub) not in (root / "modelmora.lock").read_text()

    publish(hub, f"kaggle/{KAGGLE}", 3, targz(model_files("v3")))
    assert run(root, "lock").exit_code == 0
    assert read_lock(root / "modelmora.lock").models["tiny"].revision == "2"

    # A changed selection re-resolves at the locked version, not at the newest one.
    manifest = root / "modelmora.yml"
    manifest.write_text(manifest.read_text() + "    files: {exclude: ['fingerprint.pb']}\n")
    assert run(root, "lock").exit_code == 0
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.revision == "2" and "fingerprint.pb" not in {f.path for f in entry.files}

    upgraded = run(root, "lock", "--upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.revision == "3"
    pb = {f.path: f for f in entry.files}["saved_model.pb"]
    assert pb.sha256 == sha256(model_files("v3")["saved_model.pb"])


def test_pull_into_a_fresh_cache_downloads_and_verifies_members(hub: _Hub, tmp_path: Path) -> None:
    publish(hub, f"tfhub/{TFHUB}", 5, targz(model_files("hub")))
    root = project(tmp_path, endpoint(hub), f"tfhub://{TFHUB}/5")
    assert run(root, "lock").exit_code == 0
    assert read_lock(root / "modelmora.lock").models["tiny"].revision == "5"
    assert f"/{TFHUB}/5" in hub.log  # tfhub.dev protocol: HANDLE?tf-hub-format=compressed

    hub.log.clear()
    home = tmp_path / "home2"  # another machine: no archive cache, no blobs
    result = run(root, "pull", "--json", env={"MODELMORA_HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert hub.log == [f"/{TFHUB}/5"]  # the archive once, for all four members
    snapshot = Path(json.loads(result.output)["models"][0]["snapshot"])
    for path, data in model_files("hub").items():
        assert (snapshot / path).read_bytes() == data
    assert sorted(p.name for p in (snapshot / "variables").iterdir()) == [
        "variables.data-00000-of-00001",
        "variables.index",
    ]


def test_cache_gc_deletes_the_archive_only_when_every_member_is_stored_and_none_reads_it(
    hub: _Hub, tmp_path: Path
) -> None:
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(model_files("v1")))
    root = project(tmp_path, endpoint(hub), f"tfhub://{KAGGLE}")
    assert run(root, "lock").exit_code == 0
    assert run(root, "pull").exit_code == 0
    home = tmp_path / "home"
    (archive,) = (home / "tfhub").rglob("1.tar.gz")
    relpath = archive.relative_to(home).as_posix()

    # A member missing from the store (an interrupted pull): its next pull needs the archive.
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    store = Store(home)
    store.discard_blob(entry.files[0].sha256)
    kept = json.loads(run(root, "cache", "gc", "--json").output)
    assert kept["kept_source_caches"] == [{"cache": "tfhub", "needed_by": "tiny"}]
    assert kept["source_caches"] == [] and archive.is_file()
    hub.log.clear()
    assert run(root, "pull").exit_code == 0
    assert hub.log == []  # the member came out of the cached archive

    # A source reading the archive holds its use claim: gc skips it, without waiting.
    with using(archive):
        busy = json.loads(run(root, "cache", "gc", "--json").output)
    assert busy["skipped_busy"] == [relpath] and busy["source_caches"] == []
    assert archive.is_file()

    dry = run(root, "cache", "gc", "--dry-run")
    assert f"would remove source cache {relpath}" in dry.output and archive.is_file()
    done = json.loads(run(root, "cache", "gc", "--json").output)
    assert done["source_caches"] == [{"path": relpath, "size": len(targz(model_files("v1")))}]
    assert done["freed_bytes"] == done["source_caches"][0]["size"]
    assert not archive.exists()

    # Nothing a locked project needs went with it: lock and pull work without the registry.
    hub.log.clear()
    assert run(root, "lock").exit_code == 0
    assert run(root, "pull", "--offline").exit_code == 0
    assert hub.log == [] and verify_store(store).ok


def test_fetch_resumes_a_member_at_an_offset(hub: _Hub, tmp_path: Path) -> None:
    """A gzip stream cannot seek: the first ``offset`` bytes are decompressed and dropped."""
    publish(hub, f"kaggle/{KAGGLE}", 4, targz(model_files("v4")))
    context = SourceContext(
        project_dir=tmp_path, registries={"tfhub": RegistryConfig(endpoint=endpoint(hub))}
    )
    source = make_source({"source": f"tfhub://{KAGGLE}"}, context)
    resolution = source.resolve()
    assert resolution.revision == "4"
    big = next(f for f in resolution.files if f.path.endswith("00001"))
    data = model_files("v4")[big.path]
    dest = tmp_path / "partial"
    dest.write_bytes(data[:12_345])
    written: list[int] = []
    source.fetch("4", big, dest, offset=12_345, progress=written.append)
    assert dest.read_bytes() == data and sum(written) == len(data) - 12_345


def test_a_cached_archive_that_does_not_match_the_lock_is_downloaded_again(
    hub: _Hub, tmp_path: Path
) -> None:
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(model_files("v1")))
    root = project(tmp_path, endpoint(hub), f"tfhub://{KAGGLE}")
    assert run(root, "lock").exit_code == 0
    (cached,) = (tmp_path / "home" / "tfhub").rglob("1.tar.gz")
    cached.write_bytes(targz({**model_files("v1"), "saved_model.pb": b"bit rot"}))

    hub.log.clear()
    result = run(root, "pull", "--json")
    assert result.exit_code == 0, result.output
    assert hub.log.count(f"/api/v1/models/{KAGGLE}/1/download") == 1
    snapshot = Path(json.loads(result.output)["models"][0]["snapshot"])
    assert (snapshot / "saved_model.pb").read_bytes() == model_files("v1")["saved_model.pb"]


def test_a_fetch_still_reading_a_bad_copy_is_not_fooled_by_a_parallel_redownload(
    hub: _Hub, tmp_path: Path
) -> None:
    """The race behind a flaky pull: fetch A is reading a corrupt cached archive when fetch
    B (another member, another thread) finds it bad, deletes it and downloads a good one to
    the same path. A must judge the copy it read, not the path: retry, not accept."""
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(model_files("v1")))
    context = SourceContext(
        project_dir=tmp_path, registries={"tfhub": RegistryConfig(endpoint=endpoint(hub))}
    )
    files = {
        f.path: f for f in make_source({"source": f"tfhub://{KAGGLE}"}, context).resolve().files
    }
    (cached,) = (tmp_path / "home" / "tfhub").rglob("1.tar.gz")
    cached.write_bytes(targz({p: b"bit rot " + data for p, data in model_files("v1").items()}))
    source = make_source({"source": f"tfhub://{KAGGLE}"}, context)  # a later pull's source

    def meanwhile_fetch_b(_: int) -> None:
        if not (tmp_path / "b").exists():  # once, while A's stream is open
            source.fetch("1", files["fingerprint.pb"], tmp_path / "b")

    source.fetch("1", files["saved_model.pb"], tmp_path / "a", progress=meanwhile_fetch_b)
    assert (tmp_path / "b").read_bytes() == model_files("v1")["fingerprint.pb"]
    assert (tmp_path / "a").read_bytes() == model_files("v1")["saved_model.pb"]
    assert hub.log.count(f"/api/v1/models/{KAGGLE}/1/download") == 2  # lock, then B's


def test_archive_changed_since_lock_is_refused_naming_the_file(hub: _Hub, tmp_path: Path) -> None:
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(model_files("v1")))
    root = project(tmp_path, endpoint(hub), f"tfhub://{KAGGLE}/1")
    assert run(root, "lock").exit_code == 0

    changed = {**model_files("v1"), "saved_model.pb": b"graph tampered"}
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(changed))
    result = run(root, "pull", env={"MODELMORA_HOME": str(tmp_path / "home2")})
    assert result.exit_code == 1, result.output
    assert "tiny/saved_model.pb: downloaded bytes do not match the lock" in result.output
    assert "Traceback" not in result.output
    assert not list((tmp_path / "home2").glob("snapshots/**/saved_model.pb"))


def test_credentials_are_sent_and_rejections_name_the_variables(hub: _Hub, tmp_path: Path) -> None:
    hub.credentials = "alice:s3cret-key-123"
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(model_files("v1")))
    root = project(tmp_path, endpoint(hub), f"tfhub://{KAGGLE}")

    anonymous = run(root, "lock")
    assert anonymous.exit_code == 2, anonymous.output
    assert "requires authentication (HTTP 401)" in anonymous.output
    assert "KAGGLE_USERNAME and $KAGGLE_KEY" in anonymous.output

    wrong = run(root, "lock", env={"KAGGLE_USERNAME": "alice", "KAGGLE_KEY": "nope-nope-nope"})
    assert wrong.exit_code == 2, wrong.output
    assert "rejected the credentials from $KAGGLE_USERNAME/$KAGGLE_KEY" in wrong.output
    assert "nope-nope-nope" not in wrong.output

    ok = run(root, "lock", env={"KAGGLE_USERNAME": "alice", "KAGGLE_KEY": "s3cret-key-123"})
    assert ok.exit_code == 0, ok.output

    # The registry token (USERNAME:KEY from an env var) wins over the env pair.
    root = project(tmp_path, endpoint(hub), f"tfhub://{KAGGLE}", registry=", token: '${KCREDS}'")
    (root / "modelmora.lock").unlink()
    bad = run(root, "lock", env={"KCREDS": "alice:wrong-key-456"})
    assert bad.exit_code == 2 and "rejected the credentials from $KCREDS" in bad.output
    assert "wrong-key-456" not in bad.output
    good = run(root, "lock", env={"KCREDS": "alice:s3cret-key-123"})
    assert good.exit_code == 0, good.output
    assert "s3cret" not in (root / "modelmora.lock").read_text()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _evil_member() -> tarfile.TarInfo:
    info = tarfile.TarInfo("../escape.txt")
    info.size = 3
    return info


@pytest.mark.parametrize(
    ("source", "code", "messages"),
    [
        (
            "tfhub://acme/nope/tensorFlow2/default",
            2,
            ["tfhub://acme/nope/tensorFlow2/default: model not found at"],
        ),
        (
            f"tfhub://{KAGGLE}/9",
            2,
            [f"tfhub://{KAGGLE}: version 9 does not exist", "(latest version: 1)"],
        ),
        ("tfhub://acme/imagenet/tiny/feature_vector/7", 2, ["/feature_vector/7: not found at"]),
        (
            "tfhub://acme/tiny/tensorFlow2",
            2,
            ["expected tfhub://OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION]", "PUBLISHER/NAME"],
        ),
        ("unreachable", 1, ["registry unreachable at", "after 4 attempts"]),
        ("evil", 1, ["refusing file '../escape.txt'"]),
    ],
)
def test_bad_sources_fail_clearly_and_write_no_lock(
    hub: _Hub, tmp_path: Path, source: str, code: int, messages: list[str]
) -> None:
    publish(hub, f"kaggle/{KAGGLE}", 1, targz(model_files("v1")))
    ep = endpoint(hub)
    if source == "unreachable":
        ep, source = f"http://127.0.0.1:{_closed_port()}", f"tfhub://{KAGGLE}"
    elif source == "evil":
        publish(hub, f"kaggle/{KAGGLE}", 2, targz(model_files("v2"), extra=(_evil_member(),)))
        source = f"tfhub://{KAGGLE}"
    root = project(tmp_path, ep, source)
    result = run(root, "lock")
    assert result.exit_code == code, result.output
    for message in messages:
        assert message in result.output
    assert "Traceback" not in result.output
    assert not (root / "modelmora.lock").exists()
    assert not list((tmp_path / "home").rglob("*.tmp"))  # no half-written archive left


# -- end to end: a real SavedModel, tf2onnx, the validation gate ---------------------------

_BUILD = """
import sys
import numpy as np
import tensorflow as tf

rng = np.random.default_rng(0)
w = rng.standard_normal((4, 3)).astype(np.float32)
b = rng.standard_normal(3).astype(np.float32)


class Tiny(tf.Module):
    def __init__(self):
        super().__init__()
        self.w, self.b = tf.Variable(w), tf.Variable(b)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": tf.tanh(tf.matmul(x, self.w) + self.b)}


tiny = Tiny()
tf.saved_model.save(tiny, sys.argv[1], signatures={"serving_default": tiny.__call__})
np.savez(sys.argv[2], w=w, b=b)
"""


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A tiny SavedModel (dense layer on float32 [None, 4]) as a tar.gz, plus its weights.

    Built in a child process so that TensorFlow is never imported into the test runner.
    """
    pytest.importorskip("tensorflow", reason="TensorFlow models need the [tf] extra")
    pytest.importorskip("tf2onnx", reason="TensorFlow models need the [tf] extra")
    work = tmp_path_factory.mktemp("savedmodel")
    model_dir, weights = work / "model", work / "weights.npz"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD, str(model_dir), str(weights)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(model_dir, arcname=".")  # what `tar -C model -cz .` produces
    shutil.rmtree(model_dir)
    with np.load(weights) as data:
        return buf.getvalue(), data["w"], data["b"]


@pytest.mark.tf
def test_install_converts_the_savedmodel_with_tf2onnx_and_passes_the_gate(
    hub: _Hub, tmp_path: Path, saved_model: tuple[bytes, np.ndarray, np.ndarray]
) -> None:
    archive, w, b = saved_model
    publish(hub, f"kaggle/{KAGGLE}", 1, archive)
    root = project(tmp_path, endpoint(hub), f"tfhub://{KAGGLE}")
    proc = subprocess.run(
        [sys.executable, "-m", "modelmora", "-C", str(root), "install", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert read_lock(root / "modelmora.lock").models["tiny"].revision == "1"
    model = json.loads(proc.stdout)["models"][0]
    assert model["stages"]["validate"] == "ok", model
    artifact = model["artifacts"][0]
    assert artifact["validated"] is True and artifact["max_abs_diff"] < 1e-5
    # The snapshot is the unpacked SavedModel directory the TF converter took as is.
    (pb,) = (tmp_path / "home" / "snapshots").rglob("saved_model.pb")
    assert (pb.parent / "variables" / "variables.index").is_file()

    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(artifact["path"]) / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x"]
    x = np.arange(20, dtype=np.float32).reshape(5, 4) / 10  # batch 5: the axis is dynamic
    (got,) = session.run(None, {"x": x})
    np.testing.assert_allclose(got, np.tanh(x @ w + b), atol=1e-5)


class TfHubRegistry(ContractRegistry):
    """The Kaggle Models emulation above as a contract registry. ``change`` republishes the
    version's archive with other bytes and drops the archive the source keeps from lock
    time, so the next fetch downloads the changed one. Its two-variable credentials are
    tested above."""

    def __init__(self, hub: _Hub) -> None:
        self.hub = hub

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        publish(self.hub, f"kaggle/acme/{name}/tensorFlow2/default", 1, targz(files))
        return {"source": f"tfhub://acme/{name}/tensorFlow2/default"}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        tfhub = RegistryConfig(endpoint=endpoint(self.hub))
        return SourceContext(project_dir, {"tfhub": tfhub}, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        where = str(spec["source"]).removeprefix("tfhub://")
        archive = self.hub.root / "kaggle" / where / "1.tar.gz"
        with tarfile.open(archive) as tar:
            members = {
                m.name.removeprefix("./"): tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isreg()
            }
        publish(self.hub, f"kaggle/{where}", 1, targz({**members, path: data}))
        shutil.rmtree(Path(os.environ["MODELMORA_HOME"]) / "tfhub")

    def requests_served(self) -> int:
        return len(self.hub.log)


class TestTfHubSourceContract(RemoteSourceContract):
    @pytest.fixture
    def registry(self, hub: _Hub) -> ContractRegistry:
        return TfHubRegistry(hub)
