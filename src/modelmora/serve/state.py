"""The server's moving parts (pool, schedulers, metrics) and what every route shares."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping

from modelmora.serve.admission import SequenceAdmission
from modelmora.serve.config import ServedModel, ServerSettings
from modelmora.serve.errors import BadRequest, ModelNotFound, ServeError
from modelmora.serve.metrics import ServeMetrics
from modelmora.serve.pool import WorkerPool
from modelmora.serve.scheduler import ModelScheduler

__all__ = ["ServeState"]


class ServeState:
    def __init__(self, settings: ServerSettings, models: Mapping[str, ServedModel]) -> None:
        self.settings = settings
        self.models = dict(models)
        self.metrics = ServeMetrics()
        self.pool = WorkerPool(
            self.models, settings, self.metrics, is_idle=lambda name: self.depth(name) == 0
        )
        self.schedulers: dict[str, ModelScheduler] = {}
        self.admissions: dict[str, SequenceAdmission] = {}
        for name, m in self.models.items():
            policy = m.serve_task.batching
            if policy is None:
                limit = m.serve_task.admission_limit
                self.admissions[name] = SequenceAdmission(m, self.metrics, limit)
            else:
                self.schedulers[name] = ModelScheduler(m, self.pool, self.metrics, policy)
        self.ready = False
        self.started_at = int(time.time())
        for name in self.models:
            self.metrics.queue_depth.labels(name).set(0)
            self.metrics.model_loaded.labels(name).set(0)
            self.metrics.worker_restarts.labels(name)

    def model(self, name: str) -> ServedModel:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model {name!r} is not served here (served: {known})") from None

    def depth(self, name: str) -> int:
        """Requests of the model still queued (batch tasks) or queued and running (streams)."""
        if name in self.schedulers:
            return self.schedulers[name].depth
        return self.admissions[name].depth

    def require_task(self, name: str, task: str) -> ServedModel:
        """The model, if it serves ``task``; else 400 saying where its requests go."""
        served = self.model(name)
        if served.task != task:
            raise BadRequest(
                f"model {name!r} serves {served.task}; use {served.serve_task.endpoint}"
            )
        return served

    async def start(self) -> None:
        await self.pool.start()
        for scheduler in self.schedulers.values():
            scheduler.start()
        for name in self.settings.preload:
            await self.pool.load(name)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await asyncio.gather(*(s.close() for s in self.schedulers.values()))
        await self.pool.close()

    @contextlib.contextmanager
    def observe(self, model: str, endpoint: str) -> Iterator[None]:
        """Record the request's latency under its model and final status."""
        started = time.perf_counter()
        status = "200"
        try:
            yield
        except ServeError as exc:
            status = str(exc.status)
            raise
        except BaseException:
            status = "500"
            raise
        finally:
            label = model if model in self.models else "_unknown"
            self.metrics.request_seconds.labels(label, endpoint, status).observe(
                time.perf_counter() - started
            )
