"""``mlflow://`` against a real ``mlflow server`` (SQLite backend, proxied artifacts) on 127.0.0.1.

One server per session (it takes seconds to start). A child process registers, with the
MLflow client library, ``tiny-linear`` version 1 (a run's artifacts, ``runs:/`` source, aliases
``champion`` and ``moving``) and version 2 (``mlflow.onnx.log_model``: an MLflow 3 logged model,
``models:/m-…`` source), plus ``tamper-me`` version 1 whose bytes one test overwrites on
the server's disk. The registration runs in a child so that the client's global state (it
exports ``MLFLOW_TRACKING_URI``) never leaks into the source under test.

``mlflow server --app-name basic-auth`` needs Flask-WTF, which the dev environment does not
install, so the 401 mapping is tested against a stdlib HTTP server that refuses everything.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from click.testing import CliRunner, Result

from modelmora.cli import main
from modelmora.errors import SourceError
from modelmora.lock import read_lock
from modelmora.sources import RegistryConfig, RemoteFile, SourceContext, make_source
from modelmora.testing.servers import BackgroundServer, CountingProxy
from modelmora.testing.source_contract import ContractRegistry, RemoteSourceContract
from modelmora.testing.tiny_models import LINEAR_W, check_linear_install, linear_onnx

MLFLOW_BIN = Path(sys.executable).parent / "mlflow"
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        importlib.util.find_spec("mlflow") is None or not MLFLOW_BIN.exists(),
        reason="needs the mlflow dev dependency (server CLI)",
    ),
]

LABELS = b"a\nb\nc\n"
CLEAN_ENV: dict[str, str | None] = {
    "MLFLOW_TRACKING_URI": None,
    "MLFLOW_TRACKING_TOKEN": None,
    "MLFLOW_TRACKING_USERNAME": None,
    "MLFLOW_TRACKING_PASSWORD": None,
}

REGISTER = """
import json, sys, time, urllib.request
import mlflow, onnx
from mlflow import MlflowClient

url, v1_dir, v2_onnx = sys.argv[1:4]
deadline = time.monotonic() + 120  # imports overlapped the server's start-up; now wait for it
while True:
    try:
        urllib.request.urlopen(url + "/health", timeout=2).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
mlflow.set_tracking_uri(url)
client = MlflowClient()
exp = client.create_experiment("modelmora")

def logged_run(directory):
    run_id = client.create_run(exp).info.run_id
    client.log_artifacts(run_id, directory, "model")
    client.set_terminated(run_id)
    return run_id

out = {}
client.create_registered_model("tiny-linear", tags={"task": "image-classification"})
run1 = logged_run(v1_dir)
v1 = client.create_model_version("tiny-linear", f"runs:/{run1}/model", run_id=run1)
client.set_registered_model_alias("tiny-linear", "champion", v1.version)
client.set_registered_model_alias("tiny-linear", "moving", v1.version)
out["v1"] = {"version": v1.version, "run_id": run1}
with mlflow.start_run(experiment_id=exp) as run:
    info = mlflow.onnx.log_model(
        onnx.load(v2_onnx), name="model", registered_model_name="tiny-linear",
        pip_requirements=["onnx"],
    )
out["v2"] = {"version": str(info.registered_model_version), "run_id": run.info.run_id,
             "model_id": info.model_id}
client.create_registered_model("tamper-me")
run3 = logged_run(v1_dir)
v3 = client.create_model_version("tamper-me", f"runs:/{run3}/model", run_id=run3)
out["tamper"] = {"version": v3.version, "run_id": run3}
print(json.dumps(out))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Registry:
    url: str
    artifacts: Path
    versions: dict[str, dict[str, str]]

    def set_alias(self, alias: str, version: str) -> None:
        resp = httpx.post(
            f"{self.url}/api/2.0/mlflow/registered-models/alias",
            json={"name": "tiny-linear", "alias": alias, "version": version},
            timeout=30,
        )
        resp.raise_for_status()


@pytest.fixture(scope="session")
def mlflow_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("wb")
    # A new session: `mlflow server` starts uvicorn as a child, and teardown ends the group.
    proc = subprocess.Popen(
        [
            str(MLFLOW_BIN),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    try:
        v1_dir = root / "v1"
        v1_dir.mkdir()
        (v1_dir / "model.onnx").write_bytes(linear_onnx())
        (v1_dir / "labels.txt").write_bytes(LABELS)
        (root / "v2.onnx").write_bytes(linear_onnx(LINEAR_W * 2))
        register = subprocess.Popen(
            [sys.executable, "-c", REGISTER, url, str(v1_dir), str(root / "v2.onnx")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        )
        try:
            _wait_healthy(url, proc, root / "server.log")
            out, err = register.communicate(timeout=180)
        finally:
            if register.poll() is None:
                register.kill()
                register.wait()
        assert register.returncode == 0, err[-3000:]
        versions = json.loads(out.strip().splitlines()[-1])
        yield Registry(url, root / "artifacts", versions)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:  # uvicorn waits for idle keep-alive connections; no need to be patient
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"mlflow server not healthy after 120 s:\n{log.read_text()[-3000:]}")


def write_project(
    root: Path, models: dict[str, str], registries: str = "", extra: str = ""
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"registries:\n{registries}"] if registries else []
    lines.append("models:")
    for name, source in models.items():
        lines.append(f"  {name}:\n    source: {source}\n{extra}")
    (root / "modelmora.yml").write_text("\n".join(lines) + "\n")
    return root


def run(root: Path, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
    runner = CliRunner(env={**CLEAN_ENV, **(env or {})})
    return runner.invoke(main, ["-C", str(root), *args], catch_exceptions=False)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lock_by_version_and_by_alias_pins_version_and_run(
    mlflow_registry: Registry, tmp_path: Path
) -> None:
    """Files come with sizes only: the lock step downloads and hashes each one."""
    v1, v2 = mlflow_registry.versions["v1"], mlflow_registry.versions["v2"]
    root = write_project(
        tmp_path / "proj",
        {
            "by_alias": "mlflow://models:/tiny-linear@champion",
            "by_version": f"mlflow://models:/tiny-linear/{v2['version']}",
        },
        "  mlflow: {endpoint: '${MLF}'}\n",
    )
    result = run(root, "lock", env={"MLF": mlflow_registry.url})
    assert result.exit_code == 0, result.output
    lock = read_lock(root / "modelmora.lock").models

    alias = lock["by_alias"]
    assert alias.revision == f"{v1['version']}:{v1['run_id']}"
    assert alias.metadata == {
        "alias": "champion",
        "model": "tiny-linear",
        "run_id": v1["run_id"],
        "source": f"runs:/{v1['run_id']}/model",
        "version": v1["version"],
    }
    files = {f.path: f for f in alias.files}
    assert sorted(files) == ["labels.txt", "model.onnx"]
    assert files["model.onnx"].sha256 == sha(linear_onnx())
    assert files["model.onnx"].size == len(linear_onnx())
    assert files["labels.txt"].sha256 == sha(LABELS)

    logged = lock["by_version"]  # an MLflow 3 logged model (models:/m-… source)
    assert logged.revision == f"{v2['version']}:{v2['run_id']}"
    assert logged.metadata["source"] == f"models:/{v2['model_id']}"
    assert "alias" not in logged.metadata
    # Default includes: the graph, MLmodel and requirements.txt, not the conda/venv yaml.
    assert sorted(f.path for f in logged.files) == ["MLmodel", "model.onnx", "requirements.txt"]
    served = next(mlflow_registry.artifacts.rglob(f"{v2['model_id']}/artifacts/model.onnx"))
    onnx_file = next(f for f in logged.files if f.path == "model.onnx")
    assert onnx_file.sha256 == sha(served.read_bytes())


def test_a_moved_alias_keeps_the_pin_until_upgrade(
    mlflow_registry: Registry, tmp_path: Path
) -> None:
    """The endpoint comes from $MLFLOW_TRACKING_URI here (no registry block)."""
    v1, v2 = mlflow_registry.versions["v1"], mlflow_registry.versions["v2"]
    mlflow_registry.set_alias("moving", v1["version"])
    env: dict[str, str | None] = {"MLFLOW_TRACKING_URI": mlflow_registry.url}
    root = write_project(tmp_path / "proj", {"m": "mlflow://models:/tiny-linear@moving"})
    assert run(root, "lock", env=env).exit_code == 0
    pinned = f"{v1['version']}:{v1['run_id']}"
    assert read_lock(root / "modelmora.lock").models["m"].revision == pinned

    mlflow_registry.set_alias("moving", v2["version"])
    assert run(root, "lock", env=env).exit_code == 0
    assert read_lock(root / "modelmora.lock").models["m"].revision == pinned

    # A changed file selection re-resolves at the locked version, not where the alias is now.
    write_project(
        root,
        {"m": "mlflow://models:/tiny-linear@moving"},
        extra="    files: {include: ['*.onnx']}\n",
    )
    result = run(root, "lock", env=env)
    assert result.exit_code == 0, result.output
    entry = read_lock(root / "modelmora.lock").models["m"]
    assert entry.revision == pinned
    assert [f.path for f in entry.files] == ["model.onnx"]
    assert entry.files[0].sha256 == sha(linear_onnx())

    result = run(root, "lock", "--upgrade", env=env)
    assert result.exit_code == 0, result.output
    entry = read_lock(root / "modelmora.lock").models["m"]
    assert entry.revision == f"{v2['version']}:{v2['run_id']}"
    assert entry.metadata["version"] == v2["version"]


def test_install_passes_the_registered_onnx_through_and_validates_it(
    mlflow_registry: Registry, tmp_path: Path, home: Path
) -> None:
    root = write_project(
        tmp_path / "proj",
        {"linear": "mlflow://models:/tiny-linear@champion"},
        "  mlflow: {endpoint: '${MLF}'}\n",
        extra="    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "modelmora", "-C", str(root), "install", "--json"],
        capture_output=True,
        text=True,
        env={**env, "MLF": mlflow_registry.url, "MODELMORA_HOME": str(home)},
        check=False,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_linear_install(proc.stdout)


def test_search_lists_registered_models_and_filters_on_the_task_tag(
    mlflow_registry: Registry, tmp_path: Path
) -> None:
    """No manifest: `--registry mlflow` picks the scheme, the endpoint comes from the env."""
    env: dict[str, str | None] = {"MLFLOW_TRACKING_URI": mlflow_registry.url}
    tmp_path.mkdir(exist_ok=True)

    def hits(*args: str) -> list[dict[str, Any]]:
        result = run(tmp_path, "search", *args, "--registry", "mlflow", "--json", env=env)
        assert result.exit_code == 0, result.output
        (outcome,) = json.loads(result.output)["registries"]
        assert outcome["scheme"] == "mlflow" and outcome["supported"] is True, outcome
        results: list[dict[str, Any]] = outcome["results"]
        return results

    (hit,) = hits("LINEAR")  # ILIKE: case-insensitive substring
    assert hit["id"] == "tiny-linear"
    assert hit["source"] == "mlflow://models:/tiny-linear@champion"
    assert hit["task"] == "image-classification"
    assert hit["updated"].endswith("Z")

    (other,) = hits("tamper")
    version = mlflow_registry.versions["tamper"]["version"]
    assert other["source"] == f"mlflow://models:/tamper-me/{version}"  # no champion alias
    assert other["task"] is None

    assert [h["id"] for h in hits("", "--task", "image-classification")] == ["tiny-linear"]
    assert hits("linear", "--task", "fill-mask") == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "mlflow://models:/no-such-model/1",
            "mlflow://models:/no-such-model/1: registered model 'no-such-model' not found at",
        ),
        (
            "mlflow://models:/tiny-linear@nope",
            "alias 'nope' of model 'tiny-linear' not found at",
        ),
        ("mlflow://models:/tiny-linear/99", "version 99 of model 'tiny-linear' not found at"),
        ("mlflow://models:/tiny-linear", "no version or alias"),
        ("mlflow://models:/tiny-linear/Production", "stages are deprecated"),
        ("mlflow://tiny-linear/1", "expected mlflow://models:/NAME/VERSION"),
    ],
)
def test_bad_specs_fail_with_one_clear_message(
    mlflow_registry: Registry, tmp_path: Path, source: str, message: str
) -> None:
    root = write_project(tmp_path / "proj", {"m": source}, "  mlflow: {endpoint: '${MLF}'}\n")
    result = run(root, "lock", env={"MLF": mlflow_registry.url})
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    if "not found" in message:  # resolution errors name the model entry
        assert "models.m: mlflow://models:/" in result.output
    assert not (root / "modelmora.lock").exists()


def test_not_found_hint_lists_what_exists(mlflow_registry: Registry, tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        {"m": "mlflow://models:/tiny-linear/99"},
        "  mlflow: {endpoint: '${MLF}'}\n",
    )
    result = run(root, "lock", env={"MLF": mlflow_registry.url})
    assert f"latest version: {mlflow_registry.versions['v2']['version']}" in result.output
    assert f"@champion → {mlflow_registry.versions['v1']['version']}" in result.output


def test_unreachable_server_and_missing_endpoint(tmp_path: Path) -> None:
    port = free_port()  # closed again: nothing listens there
    root = write_project(tmp_path / "a", {"m": "mlflow://models:/tiny-linear/1"})
    result = run(root, "lock", env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 1, result.output
    assert f"MLflow tracking server unreachable at http://127.0.0.1:{port} after" in result.output
    assert "Traceback" not in result.output

    result = run(root, "lock")
    assert result.exit_code == 2, result.output
    assert "no MLflow tracking server configured" in result.output
    assert "$MLFLOW_TRACKING_URI" in result.output


class _Refuser(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``status`` (401 unless a test says otherwise), remembering
    the Authorization headers it saw."""

    seen: ClassVar[list[str]] = []
    status: ClassVar[int] = 401

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization") or "")
        if self.status == 401:
            body = b'{"error_code": "UNAUTHENTICATED", "message": "You are not authenticated."}'
        else:
            body = b"<html>not here</html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refuser() -> Iterator[str]:
    _Refuser.seen = []
    _Refuser.status = 401
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    with BackgroundServer(server, "refuser") as running:
        yield running.url()


def test_auth_failures_name_the_env_var_and_never_the_secret(refuser: str, tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", {"m": "mlflow://models:/tiny-linear/1"})
    base: dict[str, str | None] = {"MLFLOW_TRACKING_URI": refuser}

    result = run(root, "lock", env=base)
    assert result.exit_code == 2, result.output
    assert f"{refuser} requires authentication (HTTP 401)" in result.output
    assert "$MLFLOW_TRACKING_TOKEN" in result.output
    assert _Refuser.seen == [""]  # no retries on 401

    result = run(root, "lock", env={**base, "MLFLOW_TRACKING_TOKEN": "tok-SECRET-42"})
    assert result.exit_code == 2, result.output
    assert "rejected the credentials from $MLFLOW_TRACKING_TOKEN" in result.output
    assert "SECRET" not in result.output
    assert _Refuser.seen[-1] == "Bearer tok-SECRET-42"

    basic = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "pw-SECRET"}
    result = run(root, "lock", env={**base, **basic})
    assert result.exit_code == 2, result.output
    assert "$MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD" in result.output
    assert "SECRET" not in result.output
    assert _Refuser.seen[-1].startswith("Basic ")

    # A registry block's token wins, and its ${VAR} is the one named.
    write_project(
        root,
        {"m": "mlflow://models:/tiny-linear/1"},
        "  mlflow: {endpoint: '${MLF}', token: '${TEAM_MLFLOW_TOKEN}'}\n",
    )
    env = {"MLF": refuser, "TEAM_MLFLOW_TOKEN": "team-SECRET", "MLFLOW_TRACKING_TOKEN": "other"}
    result = run(root, "lock", env=env)
    assert result.exit_code == 2, result.output
    assert "rejected the credentials from $TEAM_MLFLOW_TOKEN" in result.output
    assert _Refuser.seen[-1] == "Bearer team-SECRET"

    result = run(root, "search", "x", "--registry", "mlflow", "--json", env=env)
    assert result.exit_code == 2, result.output
    (outcome,) = json.loads(result.output)["registries"]
    assert "$TEAM_MLFLOW_TOKEN" in outcome["error"] and "SECRET" not in result.output


def test_pull_refuses_an_artifact_changed_since_lock(
    mlflow_registry: Registry, tmp_path: Path, home: Path
) -> None:
    tamper = mlflow_registry.versions["tamper"]
    root = write_project(
        tmp_path / "proj",
        {"tampered": f"mlflow://models:/tamper-me/{tamper['version']}"},
        "  mlflow: {endpoint: '${MLF}'}\n",
    )
    env: dict[str, str | None] = {"MLF": mlflow_registry.url}
    assert run(root, "lock", env=env).exit_code == 0
    locked = {f.path: f.sha256 for f in read_lock(root / "modelmora.lock").models["tampered"].files}
    assert locked["model.onnx"] == sha(linear_onnx())

    served = next(mlflow_registry.artifacts.rglob(f"{tamper['run_id']}/artifacts/model/model.onnx"))
    served.write_bytes(linear_onnx(LINEAR_W * 3))  # same size, other weights
    result = run(root, "pull", env=env)
    assert result.exit_code == 1, result.output
    assert "tampered/model.onnx: downloaded bytes do not match the lock" in result.output
    assert "Traceback" not in result.output


def test_an_endpoint_that_is_not_mlflow_is_named_as_such(refuser: str, tmp_path: Path) -> None:
    _Refuser.status = 404
    root = write_project(tmp_path / "p", {"m": "mlflow://models:/tiny-linear/1"})
    result = run(root, "lock", env={"MLFLOW_TRACKING_URI": refuser})
    assert result.exit_code == 1, result.output
    assert "which is not an MLflow REST answer" in result.output
    assert "--static-prefix" in result.output


def test_fetch_from_a_lock_resumes_with_range_and_checks_the_run(
    mlflow_registry: Registry, tmp_path: Path
) -> None:
    """What `pull` does: a fresh source, only the locked revision; no resolve first."""
    v1 = mlflow_registry.versions["v1"]
    context = SourceContext(
        project_dir=tmp_path,
        registries={"mlflow": RegistryConfig(endpoint=mlflow_registry.url)},
    )
    source = make_source({"source": "mlflow://models:/tiny-linear@champion"}, context)
    data = linear_onnx()
    dest = tmp_path / "partial"
    dest.write_bytes(data[:100])
    written: list[int] = []
    remote = RemoteFile(path="model.onnx", size=len(data))
    revision = f"{v1['version']}:{v1['run_id']}"
    source.fetch(revision, remote, dest, offset=100, progress=written.append)
    assert dest.read_bytes() == data
    assert sum(written) == len(data) - 100  # the server answered the Range request

    with pytest.raises(SourceError, match="the lock recorded run 0123abc"):
        source.fetch(f"{v1['version']}:0123abc", remote, tmp_path / "other")


class MlflowRegistry(ContractRegistry):
    """The real ``mlflow server`` above as a contract registry: ``publish`` logs a run's
    artifacts through the server's artifact proxy and registers a model version over REST;
    ``change`` rewrites the stored artifact. Auth needs a server with an auth app, so the
    refusals are tested above against a refusing endpoint instead."""

    def __init__(self, registry: Registry, proxy: CountingProxy) -> None:
        self.registry, self.proxy = registry, proxy
        self.http = httpx.Client(base_url=f"{registry.url}/api/2.0", timeout=30)
        self.runs: dict[str, str] = {}

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        resp = self.http.post(path, json=body)
        resp.raise_for_status()
        return resp.json()

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        run_id = self._post("/mlflow/runs/create", {"experiment_id": "0"})["run"]["info"]["run_id"]
        for path, data in files.items():
            put = f"/mlflow-artifacts/artifacts/0/{run_id}/artifacts/model/{path}"
            self.http.put(put, content=data).raise_for_status()
        self._post("/mlflow/registered-models/create", {"name": name})
        version = self._post(
            "/mlflow/model-versions/create",
            {"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )["model_version"]["version"]
        self.runs[name] = run_id
        return {"source": f"mlflow://models:/{name}/{version}"}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        mlflow = RegistryConfig(endpoint=self.proxy.url)  # what the source asks is counted
        return SourceContext(project_dir, {"mlflow": mlflow}, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        name = str(spec["source"]).split("/")[-2]
        stored = self.registry.artifacts / "0" / self.runs[name] / "artifacts" / "model" / path
        stored.write_bytes(data)

    def requests_served(self) -> int:
        return self.proxy.count


class TestMlflowSourceContract(RemoteSourceContract):
    @pytest.fixture
    def registry(self, mlflow_registry: Registry) -> Iterator[ContractRegistry]:
        proxy = CountingProxy(mlflow_registry.url)
        try:
            yield MlflowRegistry(mlflow_registry, proxy)
        finally:
            proxy.close()
