"""Batching, priority, queue bounds and deadlines, observed on a real server.

Requests are held inside the worker with the documented test gate
(``MODELMORA_SERVE_TEST_GATE``, see ``modelmora.serve.worker``) so that queues build up
deterministically; every wait polls observable state (gate log, ``/metrics``) with a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_support import Artifacts, Server, run_server, wait_until


@pytest.fixture(scope="module")
def server(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    gate = tmp_path_factory.mktemp("gate")
    models = {"batchy": artifacts.emb, "one": artifacts.emb, "tight": artifacts.emb_b}
    with run_server(
        models,
        "--set", "batchy.max_batch_size=8",
        "--set", "batchy.max_queue_delay_ms=0",
        "--set", "one.max_batch_size=1",
        "--set", "tight.max_batch_size=1",
        "--set", "tight.max_queue_size=2",
        "--preload", "batchy,one,tight",
        gate=gate,
    ) as s:  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(16) as executor:
        yield executor


def _post(url: str, model: str, text: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as c:
        return c.post("/v1/embeddings", json={"model": model, "input": text}, headers=headers)


def _submit(
    pool: ThreadPoolExecutor, server: Server, model: str, text: str, **headers: str
) -> Future[httpx.Response]:
    h = {k.replace("_", "-"): v for k, v in headers.items()}
    return pool.submit(_post, server.url, model, text, h)


def _wait_depth(server: Server, model: str, depth: int) -> None:
    wait_until(
        lambda: server.metric("modelmora_queue_depth", model=model) == depth,
        f"queue depth {depth} in {model}",
    )


def _runs(server: Server, model: str) -> list[list[str]]:
    return [e["inputs"] for e in server.events(model) if e["event"] == "run"]


def test_concurrent_requests_are_batched(server: Server, pool: ThreadPoolExecutor) -> None:
    server.hold("batchy")
    first = _submit(pool, server, "batchy", "first")
    server.wait_held("batchy", "first")
    rest = [_submit(pool, server, "batchy", f"queued {i}") for i in range(5)]
    _wait_depth(server, "batchy", 5)
    server.release("batchy")
    assert all(f.result().status_code == 200 for f in [first, *rest])
    runs = _runs(server, "batchy")
    assert runs[0] == ["first"]
    assert sorted(runs[1]) == sorted(f"queued {i}" for i in range(5))  # one batch of 5
    singles = server.metric("modelmora_batch_size_bucket", model="batchy", le="1.0")
    batches = server.metric("modelmora_batch_size_count", model="batchy")
    assert batches - singles >= 1  # /metrics shows a batch larger than 1


def test_high_priority_overtakes_queued_low_priority(
    server: Server, pool: ThreadPoolExecutor
) -> None:
    server.hold("one")
    blocker = _submit(pool, server, "one", "blocker")
    server.wait_held("one", "blocker")
    lows = []
    for i in range(3):
        lows.append(_submit(pool, server, "one", f"low {i}", X_Priority="0"))
        _wait_depth(server, "one", i + 1)
    high = _submit(pool, server, "one", "urgent", X_Priority="10")
    _wait_depth(server, "one", 4)
    server.release("one")
    assert all(f.result().status_code == 200 for f in [blocker, high, *lows])
    order = [inputs[0] for inputs in _runs(server, "one")][-5:]
    assert order == ["blocker", "urgent", "low 0", "low 1", "low 2"]


def test_full_queue_answers_429_with_retry_after(server: Server, pool: ThreadPoolExecutor) -> None:
    server.hold("tight")
    running = _submit(pool, server, "tight", "running")
    server.wait_held("tight", "running")
    queued = [_submit(pool, server, "tight", f"q{i}") for i in range(2)]
    _wait_depth(server, "tight", 2)
    rejected = server.http.post("/v1/embeddings", json={"model": "tight", "input": "one more"})
    server.release("tight")
    assert rejected.status_code == 429
    assert int(rejected.headers["Retry-After"]) >= 1
    assert "queue" in rejected.json()["error"]["message"]
    assert all(f.result().status_code == 200 for f in [running, *queued])
    assert (
        server.metric("modelmora_requests_dropped_total", model="tight", reason="queue_full") == 1
    )
    assert ["one more"] not in _runs(server, "tight")


def test_expired_deadline_is_504_and_never_runs(server: Server, pool: ThreadPoolExecutor) -> None:
    server.hold("one")
    blocker = _submit(pool, server, "one", "holding")
    server.wait_held("one", "holding")
    late = server.http.post(
        "/v1/embeddings",
        json={"model": "one", "input": "too late"},
        headers={"X-Timeout-Ms": "150"},
    )
    assert late.status_code == 504
    assert "deadline" in late.json()["error"]["message"]
    late_v2 = server.http.post(
        "/v2/models/one/infer",
        json={
            "parameters": {"timeout": 150_000},  # microseconds, as Triton
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["late v2"]}],
        },
    )
    assert late_v2.status_code == 504
    assert "deadline" in late_v2.json()["error"]
    server.release("one")
    assert blocker.result().status_code == 200
    # A request queued after the expired ones runs, so the batcher has passed them by.
    assert _post(server.url, "one", "after").status_code == 200
    runs = [inputs[0] for inputs in _runs(server, "one")]
    assert "after" in runs
    assert "too late" not in runs and "late v2" not in runs
    assert server.metric("modelmora_requests_dropped_total", model="one", reason="deadline") == 2


def test_gate_is_inactive_without_hold_file(server: Server, tmp_path: Path) -> None:
    assert server.gate is not None and not (server.gate / "one.hold").exists()
    assert _post(server.url, "one", "free").status_code == 200


def test_a_big_request_runs_in_batch_sized_parts_and_others_get_in_between(
    server: Server, pool: ThreadPoolExecutor
) -> None:
    texts = [f"big {i}" for i in range(20)]  # batchy: max_batch_size 8 → parts 8, 8, 4

    def post_big() -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/v1/embeddings", json={"model": "batchy", "input": texts})

    server.hold("batchy")
    big = pool.submit(post_big)
    server.wait_held("batchy", "big 0")
    small = _submit(pool, server, "batchy", "small")
    _wait_depth(server, "batchy", 1)  # only the small one: the next part is not queued yet
    server.release("batchy")
    assert big.result().status_code == 200 and small.result().status_code == 200
    assert _runs(server, "batchy")[-4:] == [texts[:8], ["small"], texts[8:16], texts[16:]]
    vectors = [d["embedding"] for d in big.result().json()["data"]]
    assert [d["index"] for d in big.result().json()["data"]] == list(range(20))
    alone = _post(server.url, "batchy", "big 13").json()["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(vectors[13], alone, strict=True)) < 1e-5
