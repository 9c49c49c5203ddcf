"""A worker runner for tests of the streaming IPC: it counts, one number per step.

``CountingRunner`` is a real :class:`~modelmora.serve.runners.base.SteppingRunner` run in a
real worker process; it needs no model file, so tests of streamed replies, interleaving and
cancellation do not depend on any task's numerics. A request body is ``{"count": n}``; each
step sends every running request a ``Chunk`` ``{"i": k, "running": r}`` (``r`` = requests
in that step) and, after ``n`` chunks, an ``Output`` with ``count = [n]`` as the last reply.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelmora.serve.ipc import ModelInfo, Output, Replies, WorkerSpec
from modelmora.serve.runners.base import SteppingRunner, rss_bytes

__all__ = ["CountingRunner"]


class CountingRunner(SteppingRunner):
    def __init__(self, spec: WorkerSpec) -> None:  # no session: nothing to load
        self.spec = spec
        self._todo: dict[int, list[int]] = {}

    def info(self) -> ModelInfo:
        return ModelInfo(
            inputs=(), outputs=(), providers=(), batchable=False, pid=os.getpid(),
            rss_bytes=rss_bytes(),
        )  # fmt: skip

    def warm_up(self) -> None:
        return None

    def admit(self, request_id: int, body: Any) -> None:
        count = int(body["count"])
        if count < 1:
            raise ValueError("count must be ≥ 1")
        self._todo[request_id] = [0, count]

    def cancel(self, request_id: int) -> None:
        self._todo.pop(request_id, None)

    def running(self) -> int:
        return len(self._todo)

    def step(self) -> Replies:
        replies, running = Replies(), len(self._todo)
        for request_id, state in list(self._todo.items()):
            replies.add(request_id, {"i": state[0], "running": running}, last=False)
            state[0] += 1
            if state[0] == state[1]:
                del self._todo[request_id]
                replies.add(request_id, Output({"count": np.array([state[1]])}), last=True)
        return replies
