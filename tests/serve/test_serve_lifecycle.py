"""Worker lifecycle on a real server: crash → 503 → restart, LRU budget, idle unload,
preload, failed loads, graceful shutdown."""

from __future__ import annotations

import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from serve_support import Artifacts, rss_kb, run_server, wait_until, worker_pids


def _embed(client: httpx.Client, model: str, text: str = "hello") -> httpx.Response:
    return client.post("/v1/embeddings", json={"model": model, "input": text})


def test_killed_worker_fails_its_request_then_restarts(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    with run_server({"emb": artifacts.emb}, gate=tmp_path / "gate") as server:
        server.hold("emb")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                _embed, httpx.Client(base_url=server.url, timeout=60), "emb", "doomed"
            )
            pid = server.wait_held("emb", "doomed")["pid"]
            os.kill(pid, signal.SIGKILL)
            failed = pending.result()
        assert failed.status_code == 503
        assert "SIGKILL" in failed.json()["error"]["message"]
        server.release("emb")
        ok = _embed(server.http, "emb", "next")
        assert ok.status_code == 200
        assert server.metric("modelmora_worker_restarts_total", model="emb") == 1
        (new_pid,) = worker_pids(server.proc.pid)
        assert new_pid != pid


def test_budget_of_one_model_swaps_with_flat_router_memory(artifacts: Artifacts) -> None:
    models = {"a": artifacts.emb, "b": artifacts.emb_b}
    with run_server(models, "--max-loaded-models", "1") as server:
        for _ in range(3):  # warm up allocator, caches and metric label sets
            for name in models:
                assert _embed(server.http, name).status_code == 200
        before = rss_kb(server.proc.pid)
        evictions_before = server.metric("modelmora_evictions_total", reason="budget")
        for _ in range(10):  # 20 swaps
            for name in models:
                assert _embed(server.http, name).status_code == 200
                assert len(worker_pids(server.proc.pid)) == 1
                assert server.metric("modelmora_loaded_models") == 1
        after = rss_kb(server.proc.pid)
        assert server.metric("modelmora_evictions_total", reason="budget") - evictions_before == 20
        assert abs(after - before) < 6 * 1024, f"router RSS {before} kB → {after} kB"


def test_memory_budget_evicts_least_recently_used(artifacts: Artifacts) -> None:
    models = {"a": artifacts.emb, "b": artifacts.emb_b}
    with run_server(models, "--memory-budget", "1") as server:  # 1 MB: never two at once
        assert _embed(server.http, "a").status_code == 200
        assert _embed(server.http, "b").status_code == 200
        assert server.metric("modelmora_evictions_total", model="a", reason="budget") == 1
        assert server.metric("modelmora_model_loaded", model="b") == 1
        assert server.metric("modelmora_worker_rss_bytes", model="b") > 1 << 20


def test_idle_model_is_unloaded_after_keep_alive(artifacts: Artifacts) -> None:
    with run_server({"emb": artifacts.emb}, "--set", "emb.keep_alive=1s") as server:
        assert _embed(server.http, "emb").status_code == 200
        wait_until(
            lambda: server.metric("modelmora_evictions_total", model="emb", reason="idle") == 1,
            "idle unload",
        )
        assert server.metric("modelmora_model_loaded", model="emb") == 0
        wait_until(lambda: not worker_pids(server.proc.pid), "the worker to exit")
        assert _embed(server.http, "emb").status_code == 200  # lazy reload


def test_preload_loads_before_ready(artifacts: Artifacts) -> None:
    with run_server({"emb": artifacts.emb, "lin": artifacts.lin}, "--preload", "lin") as server:
        assert server.http.get("/v2/models/lin/ready").status_code == 200
        assert server.http.get("/v2/models/emb/ready").status_code == 503
        assert len(worker_pids(server.proc.pid)) == 1


def test_model_that_cannot_load_answers_503_with_the_reason(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    with run_server({"broken": broken, "lin": artifacts.lin}) as server:
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]}
        for _ in range(2):
            r = server.http.post("/v2/models/broken/infer", json=body)
            assert r.status_code == 503
            assert "failed to load" in r.json()["error"]
        assert server.metric("modelmora_worker_restarts_total", model="broken") == 1
        assert server.http.post("/v2/models/lin/infer", json=body).status_code == 200


def test_sigterm_drains_in_flight_requests_then_stops_workers(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    with run_server({"emb": artifacts.emb}, gate=tmp_path / "gate") as server:
        assert _embed(server.http, "emb").status_code == 200
        (worker,) = worker_pids(server.proc.pid)
        server.hold("emb")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                _embed, httpx.Client(base_url=server.url, timeout=60), "emb", "in flight"
            )
            server.wait_held("emb", "in flight")
            server.proc.send_signal(signal.SIGTERM)
            address = urlsplit(server.url)

            def refused() -> bool:
                try:
                    socket.create_connection((address.hostname, address.port), timeout=1).close()
                except OSError:
                    return True
                return False

            wait_until(refused, "the server to stop accepting connections")
            server.release("emb")
            drained = pending.result()
        assert drained.status_code == 200
        # uvicorn re-raises the captured SIGTERM once shutdown is complete.
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.stderr()
        assert not Path(f"/proc/{worker}").exists()
