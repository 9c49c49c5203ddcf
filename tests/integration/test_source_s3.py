"""``s3://`` against moto's standalone S3 server, started as a real process on 127.0.0.1.

The server runs with IAM authentication on (``INITIAL_NO_AUTH_ACTION_COUNT=3``: the fixture's
first three IAM calls create a user, its access key and an allow-all policy; every later
request must be signed with a key moto knows). So the credential tests are real: a wrong
secret gets ``SignatureDoesNotMatch``, an unknown key ``InvalidAccessKeyId``, and a user
without a policy ``AccessDenied``. Not covered: anonymous requests (no credentials at all
go out unsigned), because moto's auth mode answers unsigned requests with HTTP 500.

Each test gets its own bucket holding ``models/tiny/model.onnx`` (uploaded without a SHA-256
checksum, so ``lock`` hashes it) and ``models/tiny/config.json`` (uploaded with one, so
``lock`` takes S3's digest). The CLI runs as a child process with test AWS_* variables; the
machine's ~/.aws files and instance metadata are switched off. Tests that count S3 requests
pull in process, with a botocore ``before-parameter-build`` hook on the source's client.

"Old-style" locks are locks without the per-file ``etag`` field (written before it
existed): pulls from them must still work, through the listing fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelmora.cache import Store, pull
from modelmora.errors import SourceError
from modelmora.lock import LockFile, read_lock, write_lock
from modelmora.project import Project
from modelmora.sources import SourceContext, make_source
from modelmora.sources.base import RegistryConfig
from modelmora.sources.s3 import S3Source
from modelmora.testing.cli import run_cli
from modelmora.testing.source_contract import ContractRegistry, RemoteSourceContract
from modelmora.testing.tiny_models import LINEAR_W, check_linear_install, linear_onnx

boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.timeout(300)

MOTO_SERVER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "moto_server"
CONFIG = b'{"labels": ["a", "b", "c"]}\n'
ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


@dataclass(frozen=True)
class Moto:
    url: str
    key_id: str
    secret: str
    denied_key_id: str
    denied_secret: str

    def client(self, key_id: str | None = None, secret: str | None = None) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    if not MOTO_SERVER.exists():
        pytest.skip("moto[server] is not installed in .venv")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url}") from None
                time.sleep(0.05)
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="admin")
        admin = iam.create_access_key(UserName="admin")["AccessKey"]
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=ALLOW_ALL)
        # From here on moto checks signatures and policies.
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=admin["AccessKeyId"],
            aws_secret_access_key=admin["SecretAccessKey"],
        )
        iam.create_user(UserName="nobody")
        nobody = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield Moto(
            url,
            admin["AccessKeyId"],
            admin["SecretAccessKey"],
            nobody["AccessKeyId"],
            nobody["SecretAccessKey"],
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def aws_env(moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Test credentials in the environment the CLI children inherit; returns MODELMORA_HOME."""
    for var in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_DEFAULT_REGION",
        "HF_HUB_OFFLINE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("S3_ENDPOINT", moto.url)
    home = tmp_path / "home"
    monkeypatch.setenv("MODELMORA_HOME", str(home))
    return home


@pytest.fixture
def bucket(moto: Moto, aws_env: Path) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3 = moto.client()
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="models/tiny/model.onnx", Body=linear_onnx())
    s3.put_object(
        Bucket=name, Key="models/tiny/config.json", Body=CONFIG, ChecksumAlgorithm="SHA256"
    )
    s3.put_object(Bucket=name, Key="models/tiny-other/README.md", Body=b"not in the prefix\n")
    return name


def write_project(root: Path, source: str, *, extra: str = "", registry: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    registries = "registries:\n  s3: {endpoint: '${S3_ENDPOINT}'}\n" if registry else ""
    (root / "modelmora.yml").write_text(
        f"{registries}models:\n  tiny:\n    source: {source}\n{extra}"
        "    benchmark: {batch_sizes: [1], seq_len: 8, warmup: 1, iterations: 2}\n"
    )
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def blobs(home: Path) -> list[Path]:
    return [p for p in (home / "blobs").rglob("*") if p.is_file()] if home.exists() else []


def strip_etags(lock_path: Path) -> None:
    """Rewrite the lock as modelmora wrote it before files carried an ``etag``."""
    lock = read_lock(lock_path)
    models = {
        name: entry.model_copy(
            update={"files": tuple(f.model_copy(update={"etag": None}) for f in entry.files)}
        )
        for name, entry in lock.models.items()
    }
    write_lock(lock_path, LockFile(models=models))
    assert "etag" not in lock_path.read_text()


@pytest.fixture
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(operation, key or prefix) of every S3 request in-process sources make from now on."""
    calls: list[tuple[str, str]] = []
    make_client = S3Source._make_client

    def counting(self: S3Source) -> Any:
        client = make_client(self)

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            calls.append((model.name, str(params.get("Key", params.get("Prefix", "")))))

        client.meta.events.register("before-parameter-build.s3", record)
        return client

    monkeypatch.setattr(S3Source, "_make_client", counting)
    return calls


def lists(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [c for c in calls if c[0].startswith("ListObjects")]


def test_lock_pins_listing_etags_sizes_and_sha256_and_keeps_the_pin(
    moto: Moto, bucket: str, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "proj", f"s3://{bucket}/models/tiny")
    proc = run_cli(root, "lock")
    assert proc.returncode == 0, output(proc)
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert entry.revision.startswith("s3-listing:") and len(entry.revision) == 11 + 64
    files = {f.path: (f.size, f.sha256, f.etag) for f in entry.files}
    onnx = linear_onnx()
    # moto's ETag of a single-part upload is the MD5 of the bytes, as on AWS.
    assert files == {
        "config.json": (len(CONFIG), sha256(CONFIG), hashlib.md5(CONFIG).hexdigest()),
        "model.onnx": (len(onnx), sha256(onnx), hashlib.md5(onnx).hexdigest()),
    }
    assert entry.metadata == {}
    text = (root / "modelmora.lock").read_text()
    assert f'etag = "{hashlib.md5(CONFIG).hexdigest()}"' in text
    assert moto.secret not in text and moto.key_id not in text and moto.url not in text

    # The bucket moves: the pin holds until --upgrade.
    moto.client().put_object(Bucket=bucket, Key="models/tiny/config.json", Body=b"{}\n")
    assert run_cli(root, "lock").returncode == 0
    assert read_lock(root / "modelmora.lock").models["tiny"].revision == entry.revision

    # A new selection re-resolves at the pinned listing, which no longer exists.
    manifest = root / "modelmora.yml"
    manifest.write_text(
        manifest.read_text().replace(
            "    benchmark:", "    files: {exclude: ['*.md']}\n    benchmark:"
        )
    )
    proc = run_cli(root, "lock")
    assert proc.returncode == 1, output(proc)
    assert "models.tiny: s3://" in output(proc) and "objects changed since" in output(proc)
    assert "modelmora lock --upgrade" in output(proc) and "Traceback" not in output(proc)

    proc = run_cli(root, "lock", "--upgrade")
    assert proc.returncode == 0, output(proc)
    upgraded = read_lock(root / "modelmora.lock").models["tiny"]
    assert upgraded.revision != entry.revision
    assert {f.path: f.sha256 for f in upgraded.files}["config.json"] == sha256(b"{}\n")


def test_a_key_is_a_single_file_model(
    bucket: str, aws_env: Path, tmp_path: Path, s3_calls: list[tuple[str, str]]
) -> None:
    root = write_project(tmp_path / "proj", f"s3://{bucket}/models/tiny/config.json")
    proc = run_cli(root, "lock")
    assert proc.returncode == 0, output(proc)
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    assert [(f.path, f.sha256) for f in entry.files] == [("config.json", sha256(CONFIG))]

    snapshot = pull(Project(root), store=Store(aws_env), mirror=None).models[0].snapshot
    assert snapshot is not None and (snapshot / "config.json").read_bytes() == CONFIG
    assert s3_calls == [("GetObject", "models/tiny/config.json")]


def test_a_file_named_like_its_directory_is_fetched_from_inside_it(
    moto: Moto, bucket: str, tmp_path: Path, s3_calls: list[tuple[str, str]]
) -> None:
    """``s3://B/models/dup`` holding ``models/dup/dup``: the locked path is ``dup``, as for
    a single-object model ``models/dup``; with no such object, fetch looks inside."""
    moto.client().put_object(Bucket=bucket, Key="models/dup/dup", Body=CONFIG)
    context = SourceContext(
        project_dir=tmp_path, registries={"s3": RegistryConfig(endpoint=moto.url)}
    )
    (file,) = make_source({"source": f"s3://{bucket}/models/dup"}, context).resolve().files
    assert (file.path, file.etag) == ("dup", hashlib.md5(CONFIG).hexdigest())
    s3_calls.clear()
    fresh = make_source({"source": f"s3://{bucket}/models/dup"}, context)
    fresh.fetch("unused: the etag pins the bytes", file, tmp_path / "dup")
    assert (tmp_path / "dup").read_bytes() == CONFIG
    assert s3_calls == [("GetObject", "models/dup"), ("GetObject", "models/dup/dup")]


def test_install_passes_the_onnx_through_and_pull_fills_a_fresh_home(
    bucket: str, aws_env: Path, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "proj", f"s3://{bucket}/models/tiny")
    proc = run_cli(root, "install", "--json")
    assert proc.returncode == 0, output(proc)
    check_linear_install(proc.stdout)

    fresh = tmp_path / "home2"
    proc = run_cli(root, "pull", "--json", env={"MODELMORA_HOME": str(fresh)})
    assert proc.returncode == 0, output(proc)
    snapshot = Path(json.loads(proc.stdout)["models"][0]["snapshot"])
    assert (snapshot / "model.onnx").read_bytes() == linear_onnx()
    assert (snapshot / "config.json").read_bytes() == CONFIG
    assert len(blobs(fresh)) == 2


@pytest.mark.parametrize("old_style", [False, True], ids=["etag-lock", "old-style-lock"])
def test_pull_lists_the_prefix_only_for_old_style_locks(
    bucket: str, tmp_path: Path, s3_calls: list[tuple[str, str]], old_style: bool
) -> None:
    root = write_project(tmp_path / "proj", f"s3://{bucket}/models/tiny")
    assert run_cli(root, "lock").returncode == 0
    if old_style:
        strip_etags(root / "modelmora.lock")
    digest = read_lock(root / "modelmora.lock").models["tiny"].content_digest()

    snapshot = pull(Project(root), store=Store(tmp_path / "home3"), mirror=None).models[0].snapshot
    assert snapshot is not None
    assert (snapshot / "model.onnx").read_bytes() == linear_onnx()
    assert (snapshot / "config.json").read_bytes() == CONFIG
    assert snapshot.name == digest  # the etag field does not rename the snapshot
    gets = sorted(c for c in s3_calls if c[0] == "GetObject")
    assert gets == [
        ("GetObject", "models/tiny/config.json"),
        ("GetObject", "models/tiny/model.onnx"),
    ]
    assert lists(s3_calls) == ([("ListObjectsV2", "models/tiny/")] if old_style else [])


ETAG_MISMATCH = "changed since modelmora.lock was written (its ETag no longer matches)"


@pytest.mark.parametrize(
    ("key", "new_body", "old_style", "message"),
    [
        # With the lock's etag, If-Match refuses every overwrite before any byte arrives.
        ("model.onnx", linear_onnx(LINEAR_W * 2) + b"\0", False, ETAG_MISMATCH),
        ("model.onnx", linear_onnx(LINEAR_W * 2), False, ETAG_MISMATCH),
        ("config.json", CONFIG.replace(b'"a"', b'"z"'), False, ETAG_MISMATCH),
        # Old-style lock: the listing moved, so only size or S3's checksum can tell ...
        (
            "model.onnx",
            linear_onnx(LINEAR_W * 2) + b"\0",
            True,
            "model.onnx changed since modelmora.lock was written (now",
        ),
        # ... or, with neither, the bytes: the store refuses them.
        ("model.onnx", linear_onnx(LINEAR_W * 2), True, "downloaded bytes do not match the lock"),
        (
            "config.json",
            CONFIG.replace(b'"a"', b'"z"'),
            True,
            "config.json changed since modelmora.lock was written (S3's SHA-256",
        ),
    ],
    ids=[
        "size-changed",
        "same-size",
        "same-size-with-checksum",
        "old-style-size-changed",
        "old-style-same-size",
        "old-style-same-size-with-checksum",
    ],
)
def test_pull_refuses_an_object_overwritten_after_lock(
    moto: Moto,
    bucket: str,
    aws_env: Path,
    tmp_path: Path,
    key: str,
    new_body: bytes,
    old_style: bool,
    message: str,
) -> None:
    root = write_project(tmp_path / "proj", f"s3://{bucket}/models/tiny")
    assert run_cli(root, "lock").returncode == 0
    if old_style:
        strip_etags(root / "modelmora.lock")
    extra = {"ChecksumAlgorithm": "SHA256"} if key == "config.json" else {}
    moto.client().put_object(Bucket=bucket, Key=f"models/tiny/{key}", Body=new_body, **extra)

    proc = run_cli(root, "pull", "tiny")
    assert proc.returncode == 1, output(proc)
    assert message in output(proc) and key in output(proc), output(proc)
    assert "Traceback" not in output(proc)
    stored = {p.name for p in blobs(aws_env)}
    locked = {f.path: f.sha256 for f in read_lock(root / "modelmora.lock").models["tiny"].files}
    assert locked[key] not in stored and sha256(new_body) not in stored


@pytest.mark.parametrize("old_style", [False, True], ids=["etag-lock", "old-style-lock"])
def test_fetch_sends_if_match_and_resumes_with_range(
    moto: Moto, bucket: str, tmp_path: Path, old_style: bool
) -> None:
    """In process: Range resume, and the ETag race (for an old-style lock: the listing still
    matches, but the object is replaced before the GET)."""
    context = SourceContext(
        project_dir=tmp_path, registries={"s3": RegistryConfig(endpoint=moto.url)}
    )
    source = make_source({"source": f"s3://{bucket}/models/tiny"}, context)
    resolution = source.resolve()
    # config.json was uploaded with a SHA-256 checksum: S3's digest is used as is.
    assert {f.path: f.sha256 for f in resolution.files} == {
        "config.json": sha256(CONFIG),
        "model.onnx": None,
    }
    onnx = linear_onnx()
    listed = {f.path: f for f in resolution.files}["model.onnx"]
    assert listed.etag == hashlib.md5(onnx).hexdigest()
    file = listed.model_copy(
        update={"sha256": sha256(onnx), "etag": None if old_style else listed.etag}
    )

    dest = tmp_path / "part"
    dest.write_bytes(onnx[:100])
    seen: list[int] = []
    source.fetch(resolution.revision, file, dest, offset=100, progress=seen.append)
    assert dest.read_bytes() == onnx and sum(seen) == len(onnx) - 100

    moto.client().put_object(Bucket=bucket, Key="models/tiny/model.onnx", Body=b"replaced")
    with pytest.raises(
        SourceError, match=r"model\.onnx changed since .* \(its ETag no longer matches\)"
    ):
        source.fetch(resolution.revision, file, tmp_path / "again")


def test_lock_fails_clearly(moto: Moto, bucket: str, aws_env: Path, tmp_path: Path) -> None:
    """One child process per failure; each must name the cause and never leak a secret."""
    unused = free_port()
    cases: list[tuple[str, dict[str, str], bool, int, str]] = [
        # The endpoint from AWS_ENDPOINT_URL when the manifest has no `s3` registry block.
        (
            "s3://no-such-bucket/models",
            {"AWS_ENDPOINT_URL": moto.url},
            False,
            2,
            "bucket 'no-such-bucket' does not exist",
        ),
        (f"s3://{bucket}/models/nothing-here", {}, True, 2, "no objects under"),
        (
            f"s3://{bucket}/models/tiny",
            {"AWS_SECRET_ACCESS_KEY": "wrong-secret"},
            True,
            2,
            "rejected the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "(SignatureDoesNotMatch)",
        ),
        (
            f"s3://{bucket}/models/tiny",
            {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000"},
            True,
            2,
            "(InvalidAccessKeyId)",
        ),
        (
            f"s3://{bucket}/models/tiny",
            {"AWS_ACCESS_KEY_ID": moto.denied_key_id, "AWS_SECRET_ACCESS_KEY": moto.denied_secret},
            True,
            2,
            f"access to bucket '{bucket}' denied",
        ),
        (
            f"s3://{bucket}/models/tiny",
            {"S3_ENDPOINT": f"http://127.0.0.1:{unused}"},
            True,
            1,
            f"S3 endpoint http://127.0.0.1:{unused} unreachable after 3 attempts: "
            "could not connect",
        ),
        (f"s3://{bucket}/models/tiny", {"HF_HUB_OFFLINE": "1"}, True, 1, "offline mode"),
        ("s3://Bad_Bucket/x", {}, True, 2, "expected s3://BUCKET[/PREFIX]"),
    ]
    for i, (source, env, registry, code, message) in enumerate(cases):
        root = write_project(tmp_path / f"p{i}", source, registry=registry)
        started = time.monotonic()
        proc = run_cli(root, "lock", env=env)
        text = output(proc)
        assert (proc.returncode, message in text) == (code, True), (source, env, text)
        assert "Traceback" not in text
        # The lock step names the model; a malformed source string fails earlier, in parsing.
        assert "models.tiny:" in text or "invalid s3 source" in text
        assert moto.secret not in text and moto.denied_secret not in text
        assert "wrong-secret" not in text
        assert time.monotonic() - started < 20
        assert not (root / "modelmora.lock").exists()
    auth = run_cli(
        write_project(tmp_path / "hint", f"s3://{bucket}/x"),
        "lock",
        env={"AWS_SECRET_ACCESS_KEY": "wrong-secret"},
    )
    assert "AWS_PROFILE" in output(auth)


def test_missing_boto3_names_the_extra(bucket: str, tmp_path: Path) -> None:
    """``sys.modules['boto3'] = None`` makes ``import boto3`` fail as if it were absent."""
    import sys

    root = write_project(tmp_path / "proj", f"s3://{bucket}/models/tiny")
    code = "import sys; sys.modules['boto3'] = None; from modelmora.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "-C", str(root), "lock"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2, output(proc)
    assert "s3 sources need boto3" in output(proc)
    assert "pip install 'modelmora[s3]'" in output(proc)
    assert "Traceback" not in output(proc)


# -- versioned buckets -------------------------------------------------------------------


@pytest.fixture
def versioned(moto: Moto, bucket: str) -> str:
    """``bucket`` with versioning on, its two model objects uploaded again as versions."""
    s3 = moto.client()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="models/tiny/model.onnx", Body=linear_onnx())
    s3.put_object(
        Bucket=bucket, Key="models/tiny/config.json", Body=CONFIG, ChecksumAlgorithm="SHA256"
    )
    return bucket


def reader(moto: Moto, actions: list[str]) -> dict[str, str]:
    """AWS_* variables of a new IAM user allowed only ``actions``."""
    iam = boto3.client(
        "iam",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id=moto.key_id,
        aws_secret_access_key=moto.secret,
    )
    name = f"reader-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def latest_versions(moto: Moto, bucket: str) -> dict[str, str]:
    listing = moto.client().list_object_versions(Bucket=bucket, Prefix="models/tiny/")
    return {v["Key"]: v["VersionId"] for v in listing["Versions"] if v["IsLatest"]}


def test_a_versioned_bucket_pins_version_ids_and_an_overwrite_loses_nothing(
    moto: Moto, versioned: str, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "proj", f"s3://{versioned}/models/tiny")
    proc = run_cli(root, "lock")
    assert proc.returncode == 0, output(proc)
    entry = read_lock(root / "modelmora.lock").models["tiny"]
    ids = latest_versions(moto, versioned)
    assert {f.path: f.version_id for f in entry.files} == {
        "config.json": ids["models/tiny/config.json"],
        "model.onnx": ids["models/tiny/model.onnx"],
    }
    digest = entry.content_digest()

    moto.client().put_object(Bucket=versioned, Key="models/tiny/model.onnx", Body=b"retrained")
    proc = run_cli(root, "pull", "--json", env={"MODELMORA_HOME": str(tmp_path / "home2")})
    assert proc.returncode == 0, output(proc)
    pulled = json.loads(proc.stdout)["models"][0]
    assert (Path(pulled["snapshot"]) / "model.onnx").read_bytes() == linear_onnx()
    assert pulled["content_digest"] == digest  # version ids are not part of the identity

    moto.client().delete_object(
        Bucket=versioned, Key="models/tiny/model.onnx", VersionId=ids["models/tiny/model.onnx"]
    )
    proc = run_cli(root, "pull", env={"MODELMORA_HOME": str(tmp_path / "home3")})
    assert proc.returncode == 1, output(proc)
    assert "model.onnx changed since modelmora.lock was written" in output(proc)
    assert "its locked version was deleted" in output(proc) and "Traceback" not in output(proc)


def test_read_only_credentials_without_version_rights_still_lock_and_pull(
    moto: Moto, versioned: str, tmp_path: Path
) -> None:
    """``s3:GetObject`` + ``s3:ListBucket`` only: no ids at lock, the ETag guard at pull."""
    minimal = reader(moto, ["s3:GetObject", "s3:ListBucket"])
    mine = write_project(tmp_path / "mine", f"s3://{versioned}/models/tiny")
    proc = run_cli(mine, "lock", env=minimal)
    assert proc.returncode == 0, output(proc)
    assert "version_id" not in (mine / "modelmora.lock").read_text()

    # A lock with version ids (written by a user who may list them), pulled by this one.
    theirs = write_project(tmp_path / "theirs", f"s3://{versioned}/models/tiny")
    assert run_cli(theirs, "lock").returncode == 0
    assert "version_id" in (theirs / "modelmora.lock").read_text()
    proc = run_cli(
        theirs, "pull", "--json", env={**minimal, "MODELMORA_HOME": str(tmp_path / "h2")}
    )
    assert proc.returncode == 0, output(proc)
    assert "s3:GetObjectVersion" in proc.stderr
    snapshot = Path(json.loads(proc.stdout)["models"][0]["snapshot"])
    assert (snapshot / "model.onnx").read_bytes() == linear_onnx()

    # Without version rights an overwrite is refused by name, never downloaded.
    moto.client().put_object(Bucket=versioned, Key="models/tiny/model.onnx", Body=b"retrained")
    proc = run_cli(theirs, "pull", env={**minimal, "MODELMORA_HOME": str(tmp_path / "h3")})
    assert proc.returncode == 1, output(proc)
    assert "model.onnx changed since modelmora.lock was written" in output(proc)
    assert all(b.read_bytes() != b"retrained" for b in blobs(tmp_path / "h3"))


class S3Registry(ContractRegistry):
    """moto's S3 server as a contract registry: one prefix per model in a fresh bucket;
    ``change`` overwrites the object (a new ETag). Requests are counted in process (a proxy
    would break the request signatures)."""

    def __init__(self, moto: Moto, bucket: str, calls: list[tuple[str, str]]) -> None:
        self.moto, self.bucket, self.calls = moto, bucket, calls

    def publish(self, name: str, files: Mapping[str, bytes]) -> dict[str, Any]:
        s3 = self.moto.client()
        for path, data in files.items():
            s3.put_object(Bucket=self.bucket, Key=f"{name}/{path}", Body=data)
        return {"source": f"s3://{self.bucket}/{name}"}

    def context(self, project_dir: Path, *, offline: bool = False) -> SourceContext:
        s3 = RegistryConfig(endpoint=self.moto.url)
        return SourceContext(project_dir, {"s3": s3}, offline=offline)

    def change(self, spec: Mapping[str, Any], path: str, data: bytes) -> None:
        name = str(spec["source"]).rsplit("/", 1)[-1]
        self.moto.client().put_object(Bucket=self.bucket, Key=f"{name}/{path}", Body=data)

    def requests_served(self) -> int:
        return len(self.calls)


class TestS3SourceContract(RemoteSourceContract):
    @pytest.fixture
    def registry(
        self, moto: Moto, bucket: str, s3_calls: list[tuple[str, str]]
    ) -> ContractRegistry:
        return S3Registry(moto, bucket, s3_calls)
