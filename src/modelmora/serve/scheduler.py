"""Per-model scheduling: a bounded priority queue, dynamic batching and deadlines.

A request becomes a work item of ``rows`` rows (sentences or tensor rows) carrying its task's
payload; the task's :class:`~modelmora.serve.batching.BatchPolicy` says how payloads combine
into one worker request and how the answer splits back. One
batcher task per model pops the most urgent item (oldest, where each priority level counts
as ``priority_aging_ms`` of waiting — see :meth:`_Item.key`), then
keeps adding compatible items in that order until the batch holds ``max_batch_size``
rows or ``max_queue_delay_ms`` has passed since that first item *arrived* (so an item that
already waited behind a busy worker does not wait again). A worker runs one batch at a
time; whatever arrives meanwhile forms the next batch, so batches grow with load without
any tuning. An item whose deadline passes while queued is dropped and answered 504 without
ever reaching the model; a queue at ``max_queue_size`` answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

from modelmora.serve.batching import BatchPolicy, ItemResult
from modelmora.serve.config import ServedModel
from modelmora.serve.errors import DeadlineExceeded, QueueFull, ServeError
from modelmora.serve.metrics import ServeMetrics
from modelmora.serve.pool import WorkerFailure, WorkerPool

__all__ = ["ItemResult", "ModelScheduler"]

TEXT_SIGNATURE: Hashable = ("text",)


@dataclass(eq=False)
class _Item:
    rows: int
    priority: int
    deadline: float | None
    signature: Hashable
    future: asyncio.Future[ItemResult]
    seq: int
    enqueued: float
    payload: Any
    state: Literal["queued", "batched", "sent", "done"] = field(default="queued")

    aging_s: float = 1.0

    def key(self) -> tuple[float, int]:
        """Earliest first, where each priority level counts as ``aging_s`` of waiting.

        A priority-5 request that arrives now goes ahead of priority-0 requests that have
        waited under 5 s, but not of older ones: higher priorities come first, and a lower
        one waits at most (difference × ``aging_s``) behind later arrivals, never forever.
        """
        return (self.enqueued - self.priority * self.aging_s, self.seq)


class ModelScheduler:
    """The queue and batcher of one model."""

    def __init__(
        self, model: ServedModel, pool: WorkerPool, metrics: ServeMetrics, policy: BatchPolicy
    ) -> None:
        self.model = model
        self.policy = policy
        self.name = model.name
        self.pool = pool
        self.metrics = metrics
        self._heap: list[tuple[tuple[float, int], _Item]] = []
        self._live = 0
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batch_seconds = 0.05  # running estimate, for Retry-After
        self._depth = metrics.queue_depth.labels(self.name)
        self._batch_rows = metrics.batch_size.labels(self.name)

    @property
    def depth(self) -> int:
        return self._live

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"modelmora-batcher-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(
        self,
        *,
        rows: int,
        payload: Any,
        signature: Hashable = TEXT_SIGNATURE,
        priority: int | None = None,
        timeout_s: float | None = None,
        splittable: bool = True,
    ) -> ItemResult:
        """Queue one request and wait for its share of a batch's output.

        A request of more rows than ``max_batch_size`` is queued one batch-sized part at a
        time, each part after the previous one ran: requests that arrive meanwhile are
        served between the parts, so nobody waits behind more than one batch of it.
        """
        limit = self.model.serve.max_batch_size
        if rows <= limit or not splittable:
            return await self._submit(rows, payload, signature, priority, timeout_s)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        parts = []
        for start in range(0, rows, limit):
            stop = min(start + limit, rows)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            part = self.policy.part(payload, start, stop)
            parts.append(await self._submit(stop - start, part, signature, priority, left))
        return self.policy.merge(parts)

    async def _submit(
        self,
        rows: int,
        payload: Any,
        signature: Hashable,
        priority: int | None,
        timeout_s: float | None,
    ) -> ItemResult:
        spec = self.model.serve
        if self._live >= spec.max_queue_size:
            self.metrics.dropped.labels(self.name, "queue_full").inc()
            wait = (self._live / spec.max_batch_size + 1) * self._batch_seconds
            raise QueueFull(
                f"the queue of model {self.name!r} is full ({spec.max_queue_size} requests); "
                "retry later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        now = time.monotonic()
        item = _Item(
            rows=rows,
            priority=spec.priority if priority is None else priority,
            deadline=None if timeout_s is None else now + timeout_s,
            signature=signature,
            future=asyncio.get_running_loop().create_future(),
            seq=next(self._seq),
            enqueued=now,
            payload=payload,
            aging_s=spec.priority_aging_seconds,
        )
        heapq.heappush(self._heap, (item.key(), item))
        self._live += 1
        self._depth.set(self._live)
        self._wakeup.set()
        try:
            if timeout_s is None:
                return await asyncio.shield(item.future)
            return await asyncio.wait_for(asyncio.shield(item.future), timeout_s)
        except asyncio.TimeoutError:
            self._abandon(item, "deadline")
            raise DeadlineExceeded(
                f"no result from model {self.name!r} within the {(timeout_s or 0) * 1000:g} ms "
                "deadline"
            ) from None
        except asyncio.CancelledError:
            self._abandon(item, "cancelled")
            raise

    # -- batcher ---------------------------------------------------------------------------

    def _abandon(self, item: _Item, reason: str) -> None:
        """The client stopped waiting; an item not yet sent to the worker is never computed."""
        self._drop(item, reason)
        if not item.future.done():
            item.future.cancel()

    def _drop(self, item: _Item, reason: str) -> None:
        if item.state == "queued":
            self._live -= 1
            self._depth.set(self._live)
        if item.state in ("queued", "batched"):
            self.metrics.dropped.labels(self.name, reason).inc()
        item.state = "done"

    def _expired(self, item: _Item, now: float) -> bool:
        """Answer 504 for an item whose deadline passed before it reached the worker."""
        if item.deadline is None or now < item.deadline:
            return False
        self._drop(item, "deadline")
        if not item.future.done():
            item.future.set_exception(
                DeadlineExceeded(f"the deadline passed before model {self.name!r} ran the request")
            )
        return True

    def _pop(self) -> _Item | None:
        now = time.monotonic()
        while self._heap:
            _, item = heapq.heappop(self._heap)
            if item.state == "queued" and not self._expired(item, now):
                return item
        return None

    def _take_compatible(self, batch: list[_Item], rows: int) -> int:
        limit = self.model.serve.max_batch_size
        signature = batch[0].signature
        keep: list[tuple[tuple[float, int], _Item]] = []
        now = time.monotonic()
        for entry in sorted(self._heap):
            item = entry[1]
            if item.state != "queued" or self._expired(item, now):
                continue
            if item.signature == signature and rows + item.rows <= limit:
                batch.append(item)
                rows += item.rows
            else:
                keep.append(entry)
        self._heap = keep  # sorted, hence a valid heap
        return rows

    async def _gather(self, first: _Item) -> list[_Item]:
        spec = self.model.serve
        batch, rows = [first], first.rows
        until = first.enqueued + spec.max_queue_delay_ms / 1000.0
        while rows < spec.max_batch_size:
            rows = self._take_compatible(batch, rows)
            remaining = until - time.monotonic()
            if rows >= spec.max_batch_size or remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            # asyncio's, not the builtin: they are one class only from Python 3.11 on, and on
            # 3.10 the builtin lets a timeout escape and end this model's batching loop.
            except asyncio.TimeoutError:
                rows = self._take_compatible(batch, rows)
                break
        return batch

    async def _run(self) -> None:
        while True:
            first = self._pop()
            if first is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = await self._gather(first)
            for item in batch:
                item.state = "batched"
            self._live -= len(batch)
            self._depth.set(self._live)
            await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Item]) -> None:
        try:
            async with self.pool.lease(self.name) as worker:
                # Loading may have taken a while: drop what expired meanwhile.
                now = time.monotonic()
                live = [i for i in batch if i.state == "batched" and not self._expired(i, now)]
                if not live:
                    return
                for item in live:
                    item.state = "sent"
                started = time.perf_counter()
                rows = sum(i.rows for i in live)
                self._batch_rows.observe(rows)
                output = await worker.run(self.policy.combine([i.payload for i in live]))
                elapsed = time.perf_counter() - started
                self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
        except WorkerFailure as exc:
            live = [i for i in batch if not i.future.done()]
            if len(live) > 1:  # find the request the model rejected; run the rest
                for item in live:
                    item.state = "batched"
                    await self._dispatch([item])
                return
            self._fail(live, exc)
            return
        except ServeError as exc:
            live = [i for i in batch if not i.future.done()]
            self.metrics.dropped.labels(self.name, "unavailable").inc(len(live))
            self._fail(live, exc)
            return
        self._split(live, output)

    @staticmethod
    def _fail(items: list[_Item], exc: ServeError) -> None:
        for item in items:
            item.state = "done"
            if not item.future.done():
                item.future.set_exception(exc)

    def _split(self, items: list[_Item], output: Any) -> None:
        for item, result in zip(
            items, self.policy.split(output, [i.rows for i in items]), strict=True
        ):
            item.state = "done"
            if not item.future.done():
                item.future.set_result(result)
