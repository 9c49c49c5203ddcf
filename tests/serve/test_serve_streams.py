"""Streamed worker replies: one request, many messages, an end marker, cancellation.

A real worker process runs ``modelmora.testing.runners.CountingRunner`` (a stepping runner
that needs no model file) behind the router's real ``WorkerHandle`` and pipe.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelmora.serve.config import ServedModel
from modelmora.serve.errors import ModelUnavailable
from modelmora.serve.ipc import Chunk, Output
from modelmora.serve.pool import WorkerFailure, WorkerHandle, worker_spec

pytestmark = pytest.mark.torch_free


def _run(tmp_path: Path, body: Callable[[WorkerHandle], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        model = ServedModel(name="count", artifact_dir=tmp_path, task="tensor")
        spec = worker_spec(model)
        spec = type(spec)(**{**spec.__dict__, "runner": "modelmora.testing.runners:CountingRunner"})
        handle = WorkerHandle(model, lambda h: None, spec=spec)
        await handle.start(60)
        try:
            return await body(handle)
        finally:
            await handle.stop()

    return asyncio.run(main())


async def _collect(stream: AsyncIterator[Chunk | Output]) -> list[Chunk | Output]:
    return [reply async for reply in stream]


def test_a_stream_yields_every_chunk_then_its_final_output(tmp_path: Path) -> None:
    replies = _run(tmp_path, lambda h: _collect(h.stream({"count": 4})))
    assert [r["i"] for r in replies[:-1] if isinstance(r, dict)] == [0, 1, 2, 3]
    assert isinstance(replies[-1], Output) and replies[-1].arrays["count"].tolist() == [4]


def test_concurrent_streams_share_the_workers_steps(tmp_path: Path) -> None:
    async def body(h: WorkerHandle) -> list[Chunk | Output]:
        endless = h.stream({"count": 10**9})  # runs until we leave it
        assert isinstance(await anext(endless), dict)
        short = await _collect(h.stream({"count": 3}))
        await endless.aclose()
        return short

    short = _run(tmp_path, body)
    assert len(short) == 4 and isinstance(short[-1], Output)
    # The short request joined the running one: every step carried both.
    assert [r["running"] for r in short if isinstance(r, dict)] == [2, 2, 2]


def test_leaving_a_stream_cancels_it_in_the_worker(tmp_path: Path) -> None:
    async def body(h: WorkerHandle) -> list[Chunk | Output]:
        endless = h.stream({"count": 10**9})
        async for reply in endless:
            assert isinstance(reply, dict)
            if reply["i"] == 2:
                break
        await endless.aclose()  # what a client disconnect does to the route's generator
        # Cancel reached the worker before this request: it runs alone.
        return await _collect(h.stream({"count": 2}))

    after = _run(tmp_path, body)
    assert [r["running"] for r in after if isinstance(r, dict)] == [1, 1]


def test_a_refused_request_fails_alone_and_one_shot_runs_still_work(tmp_path: Path) -> None:
    async def body(h: WorkerHandle) -> np.ndarray:
        with pytest.raises(WorkerFailure, match="count must be"):
            await _collect(h.stream({"count": 0}))
        output = await h.run({"count": 1})  # a one-shot caller sees only the final answer
        return output.arrays["count"]

    assert _run(tmp_path, body).tolist() == [1]


def test_a_dead_worker_fails_its_open_streams(tmp_path: Path) -> None:
    async def body(h: WorkerHandle) -> None:
        stream = h.stream({"count": 10**9})
        first = await anext(stream)
        assert isinstance(first, dict)
        assert h.pid is not None
        os.kill(h.pid, signal.SIGKILL)
        with pytest.raises(ModelUnavailable, match="SIGKILL"):
            async for _ in stream:
                pass

    _run(tmp_path, body)
