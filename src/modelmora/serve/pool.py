"""Worker lifecycle: spawn, lease, LRU eviction under a budget, idle unload, crash handling.

One process per loaded model gives what users of shared-process servers keep asking for:
unloading frees *all* of a model's memory (the process exits), and a crash (segfault, OOM
kill) takes down only that model's in-flight batch. The router talks to a worker over a
pipe it watches with the event loop (``add_reader``), so a dead worker is noticed the moment
its end of the pipe closes, whether or not a request is waiting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import time
import types
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Literal

from modelmora.serve.config import ServedModel, ServerSettings
from modelmora.serve.errors import ModelNotFound, ModelUnavailable, ServeError
from modelmora.serve.ipc import (
    Cancel,
    Chunk,
    Failed,
    Message,
    ModelInfo,
    Output,
    Ready,
    Replies,
    Reply,
    Request,
    StepStats,
    Stop,
    WorkerSpec,
    recv_msg,
    send_msg,
)
from modelmora.serve.metrics import ServeMetrics

__all__ = ["WorkerFailure", "WorkerHandle", "WorkerPool", "worker_spec"]

log = logging.getLogger("modelmora.serve")

_REAP_INTERVAL_S = 0.25
_MAX_BACKOFF_S = 30.0


class WorkerFailure(ServeError):
    """The worker rejected one batch (an ORT error on these inputs); it is still alive."""

    status = 422
    code = "inference_failed"


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Start a spawned worker without re-importing our ``__main__`` in it.

    ``spawn`` re-runs the parent's main module in the child (as ``__mp_main__``); for the
    ``modelmora`` console script that is the whole CLI, ~0.6 s per model load for nothing the
    worker uses. The worker's target is importable by name, so the child is told there is no
    main module to restore. Runs on the event-loop thread, where nothing else reads it.
    """
    real = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real


def worker_spec(model: ServedModel) -> WorkerSpec:
    """What the worker process is told about its model (plain data, cheap to pickle)."""
    from modelmora.serve.tasks import serve_task

    return WorkerSpec(
        name=model.name,
        artifact_dir=str(model.artifact_dir),
        onnx_file=model.model_file,
        task=model.task,
        provider=model.provider,
        threads=model.threads,
        spin=model.spin,
        prefill_chunk=model.serve.prefill_chunk_tokens,
        max_batch_tokens=model.serve.batch_tokens_limit,
        runner=serve_task(model.task).runner,
        files=model.files,
        store_root=str(model.store_root) if model.store_root else None,
        verify_full=model.serve.verify == "full",
        max_image_pixels=model.serve.image_pixels_limit,
    )


_Answer = Output | Chunk | Failed | ServeError
"""One reply's body as the reader delivers it, or the error that ends the request (the
worker's death, an unload)."""

_Sink = Callable[[_Answer, bool], None]
"""Where the reader delivers one request's replies: ``(answer, last)``."""


class WorkerHandle:
    """The router's side of one worker process."""

    def __init__(
        self,
        model: ServedModel,
        on_death: Callable[[WorkerHandle], None],
        *,
        spec: WorkerSpec | None = None,
        on_step: Callable[[StepStats], None] | None = None,
    ) -> None:
        self.model = model
        self.spec = spec or worker_spec(model)
        self.state: Literal["starting", "ready", "stopping", "dead"] = "starting"
        self.leases = 0
        self.last_used = time.monotonic()
        self.info: ModelInfo | None = None
        self.rss_bytes = 0
        self._on_death = on_death
        self._on_step = on_step
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._loading: asyncio.Future[Message] | None = None
        self._open: dict[int, _Sink] = {}
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, timeout_s: float) -> ModelInfo:
        from modelmora.serve import worker

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=worker.main,
            args=(child, self.spec),
            name=f"modelmora-worker-{self.model.name}",
            daemon=True,
        )
        with _bare_main():
            proc.start()
        child.close()  # else the parent would never see EOF when the worker dies
        self._proc, self._conn = proc, parent
        self._loading = self._loop.create_future()
        self._loop.add_reader(parent.fileno(), self._on_readable)
        # uvloop (libuv) switches a watched fd to non-blocking; our reads and writes are whole
        # framed messages the worker sends back to back, so they must block until complete.
        os.set_blocking(parent.fileno(), True)
        try:
            msg = await asyncio.wait_for(asyncio.shield(self._loading), timeout_s)
        except asyncio.TimeoutError:
            await self.stop()
            raise ModelUnavailable(
                f"model {self.model.name!r} did not load within {timeout_s:g} s"
            ) from None
        if isinstance(msg, Failed):
            await self.stop()
            raise ModelUnavailable(f"model {self.model.name!r} failed to load: {msg.message}")
        assert isinstance(msg, Ready)
        self.info = msg.info
        self.rss_bytes = msg.info.rss_bytes
        self.state = "ready"
        return msg.info

    def _on_readable(self) -> None:
        assert self._conn is not None
        try:
            msg = recv_msg(self._conn)
        except (EOFError, OSError):
            self._loop.remove_reader(self._conn.fileno())
            if self.state not in ("stopping", "dead"):
                self.state = "dead"
                self._loop.create_task(self._report_death())
            return
        if isinstance(msg, Replies):
            if msg.stats is not None:
                self.rss_bytes = msg.stats.rss_bytes or self.rss_bytes
                if self._on_step is not None:
                    self._on_step(msg.stats)
            for request_id, body, last in zip(msg.ids, msg.bodies, msg.last, strict=True):
                self._deliver(request_id, body, last)
            return
        if isinstance(msg, Reply):
            self._deliver(msg.id, msg.body, msg.last)
            return
        loading, self._loading = self._loading, None
        if loading is not None and not loading.done():
            loading.set_result(msg)

    def _deliver(self, request_id: int, body: Output | Chunk | Failed, last: bool) -> None:
        """Hand one reply to its request's sink; the end marker closes the request."""
        sink = self._open.pop(request_id, None) if last else self._open.get(request_id)
        if sink is not None:
            sink(body, last)

    def _fail_open(self, error: ServeError) -> None:
        """Every request still in the worker learns why it will get no answer."""
        loading, self._loading = self._loading, None
        if loading is not None and not loading.done():
            loading.set_exception(error)
        sinks, self._open = list(self._open.values()), {}
        for sink in sinks:
            sink(error, True)

    async def _report_death(self) -> None:
        proc = self._proc
        assert proc is not None
        await asyncio.to_thread(proc.join, 2.0)
        reason = (
            f"the worker for model {self.model.name!r} (pid {proc.pid}) "
            f"{_exit_reason(proc.exitcode)}"
        )
        log.error("%s", reason)
        self._fail_open(ModelUnavailable(reason))
        self._close_conn()
        self._on_death(self)

    def _send(self, body: object, sink: _Sink) -> int:
        if self.state != "ready" or self._conn is None:
            raise ModelUnavailable(f"the worker for model {self.model.name!r} is not running")
        request_id = next(self._ids)
        self._open[request_id] = sink
        # On a broken pipe the reader sees EOF and fails the sink with the exit reason.
        with contextlib.suppress(OSError):
            send_msg(self._conn, Request(request_id, body))
        return request_id

    def _body(self, answer: _Answer) -> Output | Chunk:
        """A reply's body, or the error it stands for (the worker's death, a refusal)."""
        if isinstance(answer, ServeError):
            raise answer
        if isinstance(answer, Failed):
            raise WorkerFailure(f"model {self.model.name!r} could not run: {answer.message}")
        if isinstance(answer, Output):
            self.rss_bytes = answer.rss_bytes or self.rss_bytes
        return answer

    async def run(self, body: object) -> Output:
        """Send one request and wait for its final answer (batch tasks; chunks are skipped)."""
        fut: asyncio.Future[_Answer] = self._loop.create_future()

        def deliver(answer: _Answer, last: bool) -> None:
            if last and not fut.done():
                fut.set_result(answer)

        self._send(body, deliver)
        answer = self._body(await fut)
        if not isinstance(answer, Output):
            raise ModelUnavailable(f"model {self.model.name!r} answered {type(answer).__name__}")
        return answer

    async def stream(self, body: object) -> AsyncGenerator[Chunk | Output, None]:
        """Send one request and yield its answers as they come (streaming tasks).

        Leaving the loop early (the client went away, a deadline) sends ``Cancel``, so the
        worker drops the request at its next step instead of computing for nobody.
        """
        queue: asyncio.Queue[tuple[_Answer, bool]] = asyncio.Queue()
        request_id = self._send(body, lambda answer, last: queue.put_nowait((answer, last)))
        try:
            while True:
                answer, last = await queue.get()
                yield self._body(answer)
                if last:
                    return
        finally:
            # Still open: neither its last reply nor the worker's death has come.
            if self._conn is not None and request_id in self._open:
                with contextlib.suppress(OSError):
                    send_msg(self._conn, Cancel(request_id))

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None

    async def stop(self, grace_s: float = 5.0) -> None:
        """Ask the worker to exit; terminate, then kill, if it does not."""
        if self.state == "dead":
            return
        self.state = "stopping"
        proc = self._proc
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(self._conn.fileno())
            with contextlib.suppress(OSError):
                send_msg(self._conn, Stop())
        if proc is not None:
            await asyncio.to_thread(proc.join, grace_s)
            if proc.exitcode is None:
                proc.terminate()
                await asyncio.to_thread(proc.join, 2.0)
            if proc.exitcode is None:
                proc.kill()
                await asyncio.to_thread(proc.join, 2.0)
        self._fail_open(ModelUnavailable(f"model {self.model.name!r} was unloaded while running"))
        self._close_conn()
        self.state = "dead"


class WorkerPool:
    """Loaded workers by model name, within ``max_loaded_models`` and ``memory_budget_mb``."""

    def __init__(
        self,
        models: Mapping[str, ServedModel],
        settings: ServerSettings,
        metrics: ServeMetrics,
        *,
        is_idle: Callable[[str], bool] = lambda name: True,
    ) -> None:
        self.models = dict(models)
        self.settings = settings
        self.metrics = metrics
        self.handles: dict[str, WorkerHandle] = {}
        self._model_locks = {name: asyncio.Lock() for name in self.models}
        self._budget_lock = asyncio.Lock()
        self._released = asyncio.Condition()
        self._failures: dict[str, int] = dict.fromkeys(self.models, 0)
        self._info: dict[str, ModelInfo] = {}
        self._last_rss: dict[str, int] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self.is_idle = is_idle
        """False while the model still has queued requests (the app's queues know)."""

    # -- public API -------------------------------------------------------------------------

    def model(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(f"model {name!r} is not served here") from None

    def is_loaded(self, name: str) -> bool:
        handle = self.handles.get(name)
        return handle is not None and handle.state == "ready"

    def cached_info(self, name: str) -> ModelInfo | None:
        return self._info.get(name)

    async def info(self, name: str) -> ModelInfo:
        """The model's I/O description; loads the model once if it was never loaded."""
        cached = self._info.get(name)
        if cached is not None:
            return cached
        async with self.lease(name):
            return self._info[name]

    @contextlib.asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[WorkerHandle]:
        """A loaded worker that cannot be evicted until the block ends."""
        handle = await self.acquire(name)
        ok = False
        try:
            yield handle
            ok = True
        finally:
            await self.release(handle, ok=ok)

    async def acquire(self, name: str) -> WorkerHandle:
        self.model(name)
        handle = self.handles.get(name)
        if handle is None or handle.state != "ready":
            handle = await self._load(name)
        handle.leases += 1
        handle.last_used = time.monotonic()
        return handle

    async def release(self, handle: WorkerHandle, *, ok: bool) -> None:
        handle.leases -= 1
        handle.last_used = time.monotonic()
        if ok:
            self._failures[handle.model.name] = 0
        self.metrics.worker_rss.labels(handle.model.name).set(handle.rss_bytes)
        async with self._released:
            self._released.notify_all()

    async def load(self, name: str) -> ModelInfo:
        """Explicit load (``/v2/repository/models/{m}/load``)."""
        async with self.lease(name):
            return self._info[name]

    async def unload(self, name: str, reason: str = "explicit") -> bool:
        """Stop the model's worker once its in-flight batch is done; False if not loaded."""
        self.model(name)
        async with self._model_locks[name]:
            handle = self.handles.get(name)
            if handle is None:
                return False
            async with self._released:
                await self._released.wait_for(lambda: handle.leases == 0)
            await self._stop(handle, reason)
            return True

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle(), name="modelmora-idle-reaper")

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self._stop(h, None) for h in list(self.handles.values())))

    # -- internals --------------------------------------------------------------------------

    def _refresh_gauges(self) -> None:
        self.metrics.loaded_models.set(len(self.handles))
        for name in self.models:
            self.metrics.model_loaded.labels(name).set(1 if name in self.handles else 0)
            if name not in self.handles:  # what a stopped or dead worker held is gone with it
                self.metrics.kv_cache_bytes.labels(name).set(0)

    def _step_metrics(self, name: str) -> Callable[[StepStats], None]:
        """Observes a stepping worker's steps (tokens, batch sizes, KV cache, time, memory):
        once per step, with the label lookups done once per worker."""
        tokens = self.metrics.generated_tokens.labels(name)
        batch = self.metrics.decode_batch.labels(name)
        kv_bytes = self.metrics.kv_cache_bytes.labels(name)
        in_calls = self.metrics.worker_step_seconds.labels(name, "model_calls")
        between_calls = self.metrics.worker_step_seconds.labels(name, "between_calls")
        rss = self.metrics.worker_rss.labels(name)

        def observe(stats: StepStats) -> None:
            if stats.tokens:
                tokens.inc(stats.tokens)
            for sequences in stats.batches:
                batch.observe(sequences)
            kv_bytes.set(stats.kv_bytes)
            if stats.step_seconds:
                in_calls.inc(stats.model_seconds)
                between_calls.inc(max(0.0, stats.step_seconds - stats.model_seconds))
            if stats.rss_bytes:
                rss.set(stats.rss_bytes)

        return observe

    def _on_death(self, handle: WorkerHandle) -> None:
        name = handle.model.name
        if self.handles.get(name) is handle:
            del self.handles[name]
        if handle.info is not None:  # a death while loading is counted by ``_load``
            self._failures[name] += 1
        self._refresh_gauges()

    async def _stop(self, handle: WorkerHandle, reason: str | None) -> None:
        name = handle.model.name
        if self.handles.get(name) is handle:
            del self.handles[name]
        if handle.rss_bytes:
            self._last_rss[name] = handle.rss_bytes
        self._refresh_gauges()
        if reason is not None:
            self.metrics.evictions.labels(name, reason).inc()
            log.info("unloading model %s (%s)", name, reason)
        await handle.stop()
        self.metrics.worker_rss.labels(name).set(0)

    def _estimate_bytes(self, name: str) -> int:
        known = self._last_rss.get(name)
        if known:
            return known
        onnx = self.models[name].onnx_path
        return int(onnx.stat().st_size * 2) + (64 << 20) if onnx.exists() else 64 << 20

    def _over_budget(self, name: str) -> bool:
        others = [h for h in self.handles.values() if h.model.name != name]
        if not others:
            return False  # a model that alone exceeds the budget still gets to run
        limit = self.settings.max_loaded_models
        if limit is not None and len(others) + 1 > limit:
            return True
        budget_mb = self.settings.memory_budget_mb
        if budget_mb is not None:
            used = sum(h.rss_bytes for h in others) + self._estimate_bytes(name)
            return used > budget_mb * (1 << 20)
        return False

    async def _make_room(self, name: str) -> None:
        while self._over_budget(name):
            idle = [
                h
                for h in self.handles.values()
                if h.model.name != name and h.leases == 0 and h.state == "ready"
            ]
            if idle:
                await self._stop(min(idle, key=lambda h: h.last_used), "budget")
                continue
            async with self._released:  # every candidate is busy: wait for a batch to end
                await self._released.wait()

    async def _load(self, name: str) -> WorkerHandle:
        async with self._model_locks[name]:
            handle = self.handles.get(name)
            if handle is not None and handle.state == "ready":
                return handle
            if self._closed:
                raise ModelUnavailable("the server is shutting down")
            failures = self._failures[name]
            if failures:
                delay = 0.0 if failures == 1 else min(0.5 * 2 ** (failures - 2), _MAX_BACKOFF_S)
                if delay:
                    log.warning("restarting model %s in %.1f s (failure %d)", name, delay, failures)
                    await asyncio.sleep(delay)
                self.metrics.worker_restarts.labels(name).inc()
            async with self._budget_lock:
                await self._make_room(name)
                handle = WorkerHandle(
                    self.models[name], self._on_death, on_step=self._step_metrics(name)
                )
                self.handles[name] = handle
                self._refresh_gauges()
            started = time.perf_counter()
            try:
                info = await handle.start(self.settings.load_timeout_s)
            except BaseException:
                if self.handles.get(name) is handle:
                    del self.handles[name]
                self._failures[name] += 1
                self._refresh_gauges()
                raise
            self.metrics.load_seconds.labels(name).observe(time.perf_counter() - started)
            self.metrics.worker_rss.labels(name).set(handle.rss_bytes)
            self._info[name] = info
            log.info("loaded model %s (pid %s, %s)", name, handle.pid, ", ".join(info.providers))
            return handle

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(_REAP_INTERVAL_S)
            now = time.monotonic()
            for handle in list(self.handles.values()):
                keep = handle.model.keep_alive_s
                if (
                    keep >= 0
                    and handle.state == "ready"
                    and handle.leases == 0
                    and now - handle.last_used >= keep
                    and self.is_idle(handle.model.name)
                    and not self._model_locks[handle.model.name].locked()
                ):
                    await self._stop(handle, "idle")
