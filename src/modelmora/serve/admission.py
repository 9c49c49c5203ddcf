"""Which generation requests run now: the admission queue of one streaming model.

Token generation batches inside its worker (continuous batching), so the router does not
form batches; it decides *admission*. A request runs once fewer than ``max_sequences`` are
running and, with a ``kv_cache_mb`` budget, once the KV cache it may need (prompt +
``max_tokens`` tokens) fits beside the running ones. Otherwise it waits, most urgent first
(highest priority, then oldest); a full waiting queue answers 429 with ``Retry-After``, a
deadline that passes while waiting 504. A finished, failed or disconnected request frees
its slot at once and wakes the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from modelmora.serve.config import ServedModel
from modelmora.serve.errors import BadRequest, DeadlineExceeded, QueueFull
from modelmora.serve.metrics import ServeMetrics

__all__ = ["SequenceAdmission"]


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]
    cost: int = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


class SequenceAdmission:
    def __init__(self, model: ServedModel, metrics: ServeMetrics, limit: int | None = None) -> None:
        self.name = model.name
        self.limit = limit or model.serve.sequences_limit
        budget = model.serve.kv_cache_mb
        self.budget = None if budget is None else int(budget * (1 << 20))
        self.max_waiting = model.serve.max_queue_size
        self.default_priority = model.serve.priority
        self.metrics = metrics
        # The model's gauges, looked up once: each .labels() call takes a lock and a lookup,
        # and these are set at every admission and release.
        self._running_gauge = metrics.running_sequences.labels(self.name)
        self._waiting_gauge = metrics.waiting_sequences.labels(self.name)
        self.running = 0
        self.reserved = 0
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self._seconds_per_request = 1.0  # running estimate, for Retry-After

    @property
    def depth(self) -> int:
        """Requests waiting or running (the pool unloads a model only when this is 0)."""
        return len(self._waiting) + self.running

    def _fits(self, cost: int) -> bool:
        if self.running >= self.limit:
            return False
        return self.budget is None or self.reserved + cost <= self.budget

    def _gauges(self) -> None:
        self._running_gauge.set(self.running)
        self._waiting_gauge.set(len(self._waiting))

    def _take(self, cost: int) -> None:
        self.running += 1
        self.reserved += cost
        self._gauges()

    def _wake(self) -> None:
        while self._waiting:
            head = self._waiting[0]
            if head.future.done():  # gave up waiting
                heapq.heappop(self._waiting)
                continue
            if not self._fits(head.cost):
                break
            heapq.heappop(self._waiting)
            self._take(head.cost)
            head.future.set_result(None)
        self._gauges()

    @contextlib.asynccontextmanager
    async def slot(
        self, *, priority: int | None, cost: int, deadline: float | None
    ) -> AsyncIterator[None]:
        """Hold a running slot for the block; ``deadline`` is a ``time.monotonic()`` value."""
        if self.budget is not None and cost > self.budget:
            raise BadRequest(
                f"this request may need {cost / (1 << 20):.1f} MB of KV cache, more than model "
                f"{self.name!r} allows in total ({self.budget / (1 << 20):.1f} MB, "
                "serve.kv_cache_mb); lower max_tokens or shorten the prompt"
            )
        started = time.monotonic()
        if not self._waiting and self._fits(cost):
            self._take(cost)
        else:
            if len(self._waiting) >= self.max_waiting:
                self.metrics.dropped.labels(self.name, "queue_full").inc()
                wait = len(self._waiting) / self.limit * self._seconds_per_request
                raise QueueFull(
                    f"the queue of model {self.name!r} is full ({self.max_waiting} waiting "
                    "requests); retry later",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            prio = self.default_priority if priority is None else priority
            waiter = _Waiter(
                (-prio, next(self._seq)), cost, asyncio.get_running_loop().create_future()
            )
            heapq.heappush(self._waiting, waiter)
            self._gauges()
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
                if waiter.future.done() and not waiter.future.cancelled():
                    self._release(cost)  # admitted just as we gave up
                else:
                    waiter.future.cancel()
                self._wake()
                if isinstance(exc, asyncio.TimeoutError):
                    self.metrics.dropped.labels(self.name, "deadline").inc()
                    raise DeadlineExceeded(
                        f"the deadline passed while the request waited for model {self.name!r}"
                    ) from None
                raise
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * elapsed
            self._release(cost)
            self._wake()

    def _release(self, cost: int) -> None:
        self.running -= 1
        self.reserved -= cost
        self._gauges()
