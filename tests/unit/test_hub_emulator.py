"""The hub emulator's HTTP contract, checked over real HTTP with httpx and huggingface_hub."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download

from modelmora.testing.hub_emulator import HubEmulator

pytestmark = pytest.mark.torch_free

CONFIG = json.dumps({"model_type": "bert", "hidden_size": 32}).encode()
SMALL_WEIGHTS = b"\x00\x01" * 500  # small, but LFS because of its extension
BIG = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # > 1 MiB, not 2^n


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.dat"
    path.write_bytes(BIG)
    return path


@pytest.fixture
def repo_sha(hub: HubEmulator, big_file: Path) -> str:
    return hub.create_repo(
        "org/model",
        {
            "config.json": CONFIG,
            "model.safetensors": SMALL_WEIGHTS,
            "data/big.dat": big_file,
            "data/nested/notes.txt": b"hello",
        },
        metadata={"pipeline_tag": "feature-extraction", "library_name": "transformers"},
    )


@pytest.fixture
def client(hub: HubEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hub.url) as c:
        yield c


def test_model_info_advertises_lfs_and_git_hashes(
    hub: HubEmulator, repo_sha: str, client: httpx.Client
) -> None:
    info = client.get("/api/models/org/model/revision/main", params={"blobs": "True"}).json()
    assert info["id"] == "org/model"
    assert info["sha"] == repo_sha and len(repo_sha) == 40
    assert info["pipeline_tag"] == "feature-extraction"
    assert info["library_name"] == "transformers"
    siblings = {s["rfilename"]: s for s in info["siblings"]}
    assert set(siblings) == {
        "config.json",
        "model.safetensors",
        "data/big.dat",
        "data/nested/notes.txt",
    }
    assert siblings["config.json"] == {
        "rfilename": "config.json",
        "size": len(CONFIG),
        "blobId": git_sha1(CONFIG),
    }
    assert (
        siblings["model.safetensors"]["lfs"]["sha256"] == hashlib.sha256(SMALL_WEIGHTS).hexdigest()
    )
    assert siblings["data/big.dat"]["lfs"]["size"] == len(BIG)
    assert siblings["data/big.dat"]["lfs"]["sha256"] == hashlib.sha256(BIG).hexdigest()
    # Blobs live on disk under root, addressed by sha256.
    assert (hub.root / "blobs" / hashlib.sha256(BIG).hexdigest()).stat().st_size == len(BIG)


def test_model_info_without_blobs_lists_names_only(repo_sha: str, client: httpx.Client) -> None:
    info = client.get("/api/models/org/model").json()
    assert info["sha"] == repo_sha
    assert {"rfilename": "config.json"} in info["siblings"]


def test_tree_listing_recursive_flat_and_subpath(repo_sha: str, client: httpx.Client) -> None:
    flat = client.get("/api/models/org/model/tree/main").json()
    assert [(e["type"], e["path"]) for e in flat] == [
        ("file", "config.json"),
        ("directory", "data"),
        ("file", "model.safetensors"),
    ]
    deep = client.get("/api/models/org/model/tree/main", params={"recursive": "true"}).json()
    assert [e["path"] for e in deep if e["type"] == "file"] == [
        "config.json",
        "data/big.dat",
        "data/nested/notes.txt",
        "model.safetensors",
    ]
    sub = client.get(f"/api/models/org/model/tree/{repo_sha}/data").json()
    assert [e["path"] for e in sub] == ["data/big.dat", "data/nested"]
    big = sub[0]
    assert big["lfs"]["oid"] == hashlib.sha256(BIG).hexdigest() and big["size"] == len(BIG)
    missing = client.get("/api/models/org/model/tree/main/nope")
    assert missing.status_code == 404
    assert missing.headers["X-Error-Code"] == "EntryNotFound"


def test_resolve_headers_small_and_lfs(repo_sha: str, client: httpx.Client) -> None:
    small = client.head("/org/model/resolve/main/config.json")
    assert small.status_code == 200
    assert small.headers["X-Repo-Commit"] == repo_sha
    assert small.headers["ETag"] == f'"{git_sha1(CONFIG)}"'
    assert small.headers["Content-Length"] == str(len(CONFIG))
    assert small.headers["Accept-Ranges"] == "bytes"
    assert "X-Linked-Etag" not in small.headers
    lfs = client.head("/org/model/resolve/main/data/big.dat")
    assert lfs.headers["ETag"] == f'"{hashlib.sha256(BIG).hexdigest()}"'
    assert lfs.headers["X-Linked-Etag"] == lfs.headers["ETag"]
    assert lfs.headers["X-Linked-Size"] == str(len(BIG))
    for response in (small, lfs):
        assert not [h for h in response.headers if h.lower().startswith("x-xet")]
    body = client.get("/org/model/resolve/main/data/big.dat")
    assert body.content == BIG


@pytest.mark.parametrize(
    ("header", "expected_range", "sl"),
    [
        ("bytes=2-5", "bytes 2-5/{n}", slice(2, 6)),
        ("bytes=1000-", "bytes 1000-{last}/{n}", slice(1000, None)),
        ("bytes=-3", "bytes {tail}-{last}/{n}", slice(-3, None)),
    ],
)
def test_range_requests_answer_206(
    repo_sha: str, client: httpx.Client, header: str, expected_range: str, sl: slice
) -> None:
    n = len(BIG)
    response = client.get("/org/model/resolve/main/data/big.dat", headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == expected_range.format(n=n, last=n - 1, tail=n - 3)
    assert response.content == BIG[sl]
    assert response.headers["Content-Length"] == str(len(BIG[sl]))


def test_unsatisfiable_range_answers_416(repo_sha: str, client: httpx.Client) -> None:
    response = client.get(
        "/org/model/resolve/main/config.json", headers={"Range": f"bytes={len(CONFIG)}-"}
    )
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(CONFIG)}"


def test_not_found_error_codes(repo_sha: str, client: httpx.Client) -> None:
    repo = client.get("/api/models/org/missing")
    assert (repo.status_code, repo.headers["X-Error-Code"]) == (404, "RepoNotFound")
    rev = client.get("/api/models/org/model/revision/nope")
    assert (rev.status_code, rev.headers["X-Error-Code"]) == (404, "RevisionNotFound")
    entry = client.head("/org/model/resolve/main/added_tokens.json")
    assert (entry.status_code, entry.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert entry.headers["X-Repo-Commit"] == repo_sha
    resolve_rev = client.get("/org/model/resolve/v9/config.json")
    assert resolve_rev.headers["X-Error-Code"] == "RevisionNotFound"


def test_require_token(hub: HubEmulator, repo_sha: str, client: httpx.Client) -> None:
    hub.require_token("s3cret")
    missing = client.get("/api/models/org/model")
    assert missing.status_code == 401
    wrong = client.get("/api/models/org/model", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    good = client.get(
        "/org/model/resolve/main/config.json", headers={"Authorization": "Bearer s3cret"}
    )
    assert (good.status_code, good.content) == (200, CONFIG)
    hub.require_token(None)
    assert client.get("/api/models/org/model").status_code == 200


def test_corrupt_serves_other_bytes_with_same_metadata(
    hub: HubEmulator, repo_sha: str, client: httpx.Client
) -> None:
    before = client.head("/org/model/resolve/main/data/big.dat").headers
    hub.corrupt("org/model", "data/big.dat")
    after = client.get("/org/model/resolve/main/data/big.dat")
    assert len(after.content) == len(BIG) and after.content != BIG
    assert after.headers["ETag"] == before["ETag"]
    assert client.get("/org/model/resolve/main/config.json").content == CONFIG


def test_fail_next_then_recover(hub: HubEmulator, repo_sha: str, client: httpx.Client) -> None:
    hub.requests.clear()
    hub.fail_next(2, status=503)
    statuses = [client.get("/api/models/org/model").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.status for r in hub.requests] == [503, 503, 200]
    assert hub.requests[0].path == "/api/models/org/model"


def test_history_branch_tag_and_sha(hub: HubEmulator, client: httpx.Client) -> None:
    first = hub.create_repo("org/hist", {"a.txt": b"one", "old.txt": b"old"})
    hub.create_tag("org/hist", "v1.0", revision=first)
    hub.create_branch("org/hist", "dev", revision=first)
    second = hub.commit("org/hist", {"a.txt": b"two", "new.txt": b"new"}, delete=("old.txt",))
    dev = hub.commit("org/hist", {"dev.txt": b"dev"}, branch="dev")
    assert len({first, second, dev}) == 3

    def names(rev: str) -> set[str]:
        info = client.get(f"/api/models/org/hist/revision/{rev}").json()
        return {s["rfilename"] for s in info["siblings"]}

    assert names("main") == {"a.txt", "new.txt"}
    assert names("v1.0") == names(first) == {"a.txt", "old.txt"}
    assert names("dev") == {"a.txt", "old.txt", "dev.txt"}
    assert client.get("/org/hist/resolve/v1.0/a.txt").content == b"one"
    assert client.get("/org/hist/resolve/main/a.txt").content == b"two"
    assert client.get(f"/org/hist/resolve/{first}/a.txt").headers["X-Repo-Commit"] == first
    refs = client.get("/api/models/org/hist/refs").json()
    assert {b["name"]: b["targetCommit"] for b in refs["branches"]} == {"main": second, "dev": dev}
    assert refs["tags"][0]["targetCommit"] == first


def test_parallel_downloads(hub: HubEmulator, repo_sha: str) -> None:
    def fetch(_: int) -> bytes:
        with httpx.Client(base_url=hub.url) as c:
            return c.get("/org/model/resolve/main/data/big.dat").content

    with ThreadPoolExecutor(max_workers=6) as pool:
        bodies = list(pool.map(fetch, range(6)))
    assert all(body == BIG for body in bodies)
    assert hub.bytes_served("org/model", "data/big.dat") == 6 * len(BIG)


def test_throttle_limits_what_is_sent(hub: HubEmulator, repo_sha: str) -> None:
    hub.throttle_bytes_per_s = 50_000  # the whole file would take a minute
    with (
        httpx.Client(base_url=hub.url) as c,
        c.stream("GET", "/org/model/resolve/main/data/big.dat") as response,
    ):
        first = next(response.iter_raw())
    assert 0 < len(first) < len(BIG)
    assert hub.bytes_served("org/model", "data/big.dat") < len(BIG)


def test_delay_makes_clients_time_out(hub: HubEmulator, repo_sha: str) -> None:
    hub.delay_s = 30.0  # cut short when the emulator closes
    with httpx.Client(base_url=hub.url, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        c.get("/api/models/org/model")


def test_search_endpoint(hub: HubEmulator, client: httpx.Client) -> None:
    hub.create_repo(
        "a/emb", {"x.txt": b"1"}, metadata={"pipeline_tag": "feature-extraction", "downloads": 5}
    )
    hub.create_repo(
        "b/emb-large",
        {"x.txt": b"1"},
        metadata={"pipeline_tag": "feature-extraction", "downloads": 9},
    )
    hub.create_repo("c/clf", {"x.txt": b"1"}, metadata={"pipeline_tag": "text-classification"})
    found = client.get(
        "/api/models", params={"search": "emb", "pipeline_tag": "feature-extraction"}
    ).json()
    assert [m["id"] for m in found] == ["b/emb-large", "a/emb"]
    assert found[0]["downloads"] == 9
    limited = client.get("/api/models", params={"limit": "1"}).json()
    assert len(limited) == 1


def test_unsafe_paths_need_opt_in(hub: HubEmulator, client: httpx.Client) -> None:
    with pytest.raises(ValueError, match="invalid repo file path"):
        hub.create_repo("org/evil", {"../escape.json": b"{}"})
    hub.create_repo("org/evil", {"../escape.json": b"{}"}, unsafe_paths_ok=True)
    info = client.get("/api/models/org/evil").json()
    assert info["siblings"] == [{"rfilename": "../escape.json"}]


def test_huggingface_hub_client_works(
    hub: HubEmulator, repo_sha: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    api = HfApi(endpoint=hub.url, token=False)
    info = api.model_info("org/model", revision="main", files_metadata=True)
    assert info.sha == repo_sha
    by_name = {s.rfilename: s for s in info.siblings or []}
    lfs = by_name["data/big.dat"].lfs
    assert lfs is not None and lfs.sha256 == hashlib.sha256(BIG).hexdigest()
    tree = {f.path for f in api.list_repo_tree("org/model", recursive=True)}
    assert "data/nested/notes.txt" in tree
    path = hf_hub_download(
        "org/model", "data/big.dat", endpoint=hub.url, cache_dir=tmp_path / "c", token=False
    )
    assert Path(path).read_bytes() == BIG
    assert f"snapshots/{repo_sha}/data/big.dat" in Path(path).as_posix()


def test_transformers_autoconfig_through_emulator(hub: HubEmulator, tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="needs the [convert] extra")
    hub.create_repo("org/tiny", {"config.json": CONFIG})
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }
    env.pop("HF_TOKEN", None)
    code = (
        "from transformers import AutoConfig\n"
        "c = AutoConfig.from_pretrained('org/tiny')\n"
        "print(c.model_type, c.hidden_size)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["bert", "32"]
    assert ("HEAD", "/org/tiny/resolve/main/config.json") in [
        (r.method, r.path) for r in hub.requests
    ]


def test_standalone_server(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_bytes(CONFIG)
    (src / "sub" / "vocab.txt").write_bytes(b"a\nb\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelmora.testing.hub_emulator",
            "--root",
            str(tmp_path / "root"),
            "--repo",
            f"org/cli={src}",
            "--tag",
            "org/cli:v1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        info = httpx.get(f"{url}/api/models/org/cli/revision/v1").json()
        assert sorted(s["rfilename"] for s in info["siblings"]) == ["config.json", "sub/vocab.txt"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
